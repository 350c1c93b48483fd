"""The CLI's one error boundary: every user-caused failure is one ``error:`` line and a documented
exit code (1 input/data/files, 2 usage, 70 internal error, 130 interrupted), never a traceback
unless ``--debug`` asks for it."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from collapselab.cli import app
from collapselab.core.data import gaussian_clusters
from collapselab.core.errors import ParameterError
from collapselab.core.runtime import SEED_MAX, check_seed, resolve_device

runner = CliRunner()
TINY = ["--epochs", "2", "--hidden", "4", "--batch-size", "10", "--nc-points", "1", "--dtype", "float64", "--threads", "1"]


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def one_error(res, code: int, contains: str = "") -> str:
    """The result exited with ``code`` and wrote exactly one line, ``error: ...``, on stderr."""
    assert res.exit_code == code, (res.exit_code, res.output)
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "Traceback" not in res.output
    assert contains in lines[0], lines[0]
    return lines[0]


# -- usage errors: exit 2 -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, contains",
    [
        (("train", "digits", "--threads", "0"), "Invalid value for '--threads'"),
        (("run", "truncation-geometry", "--threads", "0"), "Invalid value for '--threads'"),
        (("train", "digits", "--no-such-option"), "No such option: --no-such-option"),
        (("run",), "Missing argument 'name'"),
        (("construct", "clustered"), "Missing argument 'file'"),
        (("train", "digits", "--epochs", "many"), "Invalid value for '--epochs'"),
        (("runn",), "No such command 'runn'"),
    ],
)
def test_usage_errors_are_one_line_exit_2(args, contains):
    line = one_error(invoke(*args), 2, contains)
    assert "--help" in line  # and where to look


def test_version_and_flags_in_help():
    res = invoke("--version")
    assert res.exit_code == 0 and res.stdout.startswith("collapselab ")
    res = invoke("train", "--help")
    assert res.exit_code == 0 and "--test" in res.stdout and "--json" in res.stdout
    assert "<bool>" not in res.stdout  # boolean flags take no value


# -- bad values refused before anything runs: exit 1 ----------------------------------------------


@pytest.mark.parametrize(
    "args, contains",
    [
        (("--seed", "-1"), "seed must be an integer in [0, 2^63 - 1], got -1"),
        (("--seed", str(2**63)), "seed must be an integer in [0, 2^63 - 1]"),
        (("--device", "tpu"), "--device 'tpu' is not a device this library runs on; use cpu, cuda or cuda:N"),
        (("--epochs", "1000000000"), "epochs must be int in [1, 100000]"),
        (("--lr", "inf"), "lr must be float in (0, inf)"),
    ],
)
def test_train_refuses_bad_values_before_writing(npz, tmp_path, args, contains):
    res = invoke("train", npz, *TINY, "--out", tmp_path, *args)
    one_error(res, 1, contains)
    assert not (tmp_path / "train").exists()


def test_resolve_device_and_check_seed():
    assert resolve_device(None) == torch.device("cpu") and resolve_device(" CPU ") == torch.device("cpu")
    for bad in ("tpu", "cuda:x", "cpu:0:1", "", "gpu"):
        with pytest.raises(ParameterError, match="use cpu, cuda or cuda:N"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ParameterError, match=r"torch.cuda.is_available\(\) is False"):
            resolve_device("cuda:0")
    else:
        with pytest.raises(ParameterError, match="CUDA device"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    assert check_seed(0) == 0 and check_seed(np.int64(SEED_MAX)) == SEED_MAX
    for bad in (-1, SEED_MAX + 1, 1.0, True, "3"):
        with pytest.raises(ParameterError, match=r"seed must be an integer in \[0, 2\^63 - 1\]"):
            check_seed(bad)


# -- data files ---------------------------------------------------------------------------------


def _bad_crc(path: Path) -> Path:
    """``path`` with one byte of array data flipped: the zip headers are intact, the CRC is not."""
    data = gaussian_clusters(3, 200, dim=8, delta=0.5, seed=0)
    np.savez(path, X=data.X.numpy(), labels=data.labels.numpy())
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 3] ^= 0xFF  # inside X's 12.8 kB of float64 data
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("command", [("metrics",), ("construct", "clustered"), ("train",)])
def test_npz_with_a_wrong_crc_is_a_data_error(tmp_path, command):
    bad = _bad_crc(tmp_path / "bad.npz")
    extra = ("--out", tmp_path / "runs") if command == ("train",) else ()
    one_error(invoke(*command, bad, *extra), 1, "is a damaged .npz archive (BadZipFile: Bad CRC-32")


@pytest.mark.parametrize(
    "labels, contains",
    [
        ([-1, 0, 1, 2] * 3, "labels must be integers in [0, 3), found -1 among the values {-1, 0, 1, 2}; remap them"),
        ([0, 1, 2, 100] * 3, "class 3 has no samples (label values {0, 1, 2, 100}); remap them to 0..C-1"),
        ([3, 7, 9, 3] * 3, "class 0 has no samples (label values {3, 7, 9})"),
    ],
)
@pytest.mark.parametrize("command", ["metrics", "construct", "train"])
def test_labels_outside_the_contract_are_refused_by_every_command(tmp_path, labels, contains, command):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((len(labels), 3))
    path = tmp_path / "d.npz"
    np.savez(path, features=X, labels=np.array(labels))  # `features` is an alias of `X` for every command
    args = {"metrics": ("metrics", path), "construct": ("construct", "clustered", path), "train": ("train", path, *TINY, "--out", tmp_path / "runs")}[command]
    one_error(invoke(*args), 1, contains)


def test_metrics_labels_are_checked_against_the_weights(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "f.npz"
    np.savez(path, X=rng.standard_normal((12, 4)), labels=np.arange(12) % 3, weights=rng.standard_normal((2, 4)))
    one_error(invoke("metrics", path), 1, "labels must be integers in [0, 2) (C = 2 classes given), found 2")
    np.savez(path, X=rng.standard_normal((12, 4)), features=rng.standard_normal((12, 4)), labels=np.arange(12) % 3)
    one_error(invoke("metrics", path), 1, "holds both 'features' and 'X'; keep one of them")


# -- files and the machine: OSError, interrupts, internal errors -----------------------------------


def test_out_is_a_file(npz, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    line = one_error(invoke("train", npz, *TINY, "--out", blocker), 1)
    assert str(blocker) in line and ("not a folder" in line or "exists already" in line)


@pytest.mark.parametrize(
    "code, contains",
    [
        (errno.ENOSPC, "no space left on the device"),
        (errno.EFBIG, "file-size limit"),
        (errno.EROFS, "read-only"),
        (errno.EACCES, "permission denied"),
    ],
)
def test_os_errors_while_writing_are_one_line(npz, tmp_path, monkeypatch, code, contains):
    from collapselab.core.store import RunFolder

    def fail(self, state):
        raise OSError(code, "simulated", str(self.path / "checkpoint.pt"))

    monkeypatch.setattr(RunFolder, "save_checkpoint", fail)
    line = one_error(invoke("train", npz, *TINY, "--out", tmp_path), 1, contains)
    assert "checkpoint.pt" in line and "--out" in line


def test_torch_writer_failure_is_a_file_error(npz, tmp_path, monkeypatch):
    from collapselab.core.store import RunFolder

    def fail(self, state):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(RunFolder, "save_checkpoint", fail)
    one_error(invoke("train", npz, *TINY, "--out", tmp_path), 1, "the disk may be full or a file-size limit reached")


def test_interrupt_internal_error_and_debug(npz, tmp_path, monkeypatch):
    from collapselab.train import Trainer

    def interrupt(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "iterate", interrupt)
    one_error(invoke("train", npz, *TINY, "--out", tmp_path / "a"), 130, "interrupted")

    def bug(self):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(Trainer, "iterate", bug)
    one_error(invoke("train", npz, *TINY, "--out", tmp_path / "b"), 70, "internal error (ZeroDivisionError: boom); this is a bug")
    res = invoke("--debug", "train", npz, *TINY, "--out", tmp_path / "c")
    assert res.exit_code == 70 and "Traceback" in res.stderr and res.stderr.rstrip().splitlines()[-1].startswith("error: internal error")
    monkeypatch.setenv("COLLAPSELAB_DEBUG", "1")
    res = invoke("metrics", tmp_path / "missing.npz")
    assert res.exit_code == 1 and "Traceback" in res.stderr and "error: metrics: file" in res.stderr


def test_file_size_limit_in_a_subprocess(tmp_path):
    """RLIMIT_FSIZE below the network's size: EFBIG becomes one error line, no partial file."""
    resource = pytest.importorskip("resource")
    data = gaussian_clusters(3, 6, delta=0.02, seed=2)
    np.savez(tmp_path / "d.npz", **data.to_numpy())
    out = tmp_path / "net.pt"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (256, 256))

    cmd = [sys.executable, "-B", "-m", "collapselab.cli", "construct", "clustered", str(tmp_path / "d.npz"), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, preexec_fn=limit)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "file-size limit" in lines[0], proc.stderr
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".net.pt")]


def test_train_resume_with_a_broken_config(npz, tmp_path):
    assert invoke("train", npz, *TINY, "--out", tmp_path).exit_code == 0
    (folder,) = (tmp_path / "train").iterdir()
    config = folder / "config.json"
    doc = json.loads(config.read_text())
    config.write_text(config.read_text()[:40])
    one_error(invoke("train", "--resume", folder), 1, "config.json is not valid JSON")
    del doc["config"]["lr"]
    config.write_text(json.dumps(doc))
    one_error(invoke("train", "--resume", folder), 1, "config.json lacks the recorded option(s) lr")


def test_construct_out_is_a_folder_names_the_target(tmp_path):
    data = gaussian_clusters(3, 6, delta=0.02, seed=2)
    np.savez(tmp_path / "d.npz", **data.to_numpy())
    line = one_error(invoke("construct", "clustered", tmp_path / "d.npz", "--out", tmp_path), 1, "a folder stands where a file is needed")
    assert line.startswith(f"error: cannot write {tmp_path}: ") and ".tmp" not in line  # the path asked for, not the temporary file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz"]


def test_console_entry_point_usage_error():
    """The real entry point (not CliRunner): one line, exit 2."""
    proc = subprocess.run([sys.executable, "-m", "collapselab.cli", "train", "digits", "--threads", "0"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: Invalid value for '--threads'"), proc.stderr


@pytest.mark.parametrize("command", ["metrics", "construct", "train"])
def test_every_command_reads_x_or_features_and_refuses_both(tmp_path, command):
    """One array naming for every command (and the loaders behind ``train``): the inputs may be
    stored as ``X`` or ``features``, with the same result; a file holding both is refused."""
    data = gaussian_clusters(3, 6, delta=0.05, seed=2)
    X, labels = data.X.numpy(), data.labels.numpy()
    outputs = []
    for i, name in enumerate(("X", "features")):
        path = tmp_path / f"{name}.npz"
        np.savez(path, **{name: X, "labels": labels})
        args = {"metrics": ("metrics", path, "--json"), "construct": ("construct", "clustered", path, "--json"),
                "train": ("train", path, *TINY, "--json", "--out", tmp_path / f"runs{i}")}[command]  # fmt: skip
        res = invoke(*args)
        assert res.exit_code == 0, res.output
        doc = json.loads(res.stdout)
        doc.pop("run_folder", None)
        outputs.append(doc)
    assert outputs[0] == outputs[1]
    both = tmp_path / "both.npz"
    np.savez(both, X=X, features=X, labels=labels)
    args = {"metrics": ("metrics", both), "construct": ("construct", "clustered", both), "train": ("train", both, *TINY, "--out", tmp_path / "runs")}[command]
    one_error(invoke(*args), 1, "keep one of them")
