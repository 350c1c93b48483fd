"""The fault battery: SIGKILL at random points of a run then --resume gives the uninterrupted run's
files; a file-size limit, a read-only folder, a full disk and a file in the way give one clear
error with the last checkpoint intact. The runs are of the tiny fixture experiment
(tiny_experiment.py), in a subprocess where a process must die."""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import collapselab
from collapselab.cli import app
from collapselab.core import store
from collapselab.core.store import read_metrics
from collapselab.core.verdicts import summarise
from collapselab.experiments import run_experiment

SCRIPT = Path(__file__).with_name("tiny_experiment.py")
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(collapselab.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
runner = CliRunner()


def _command(out: Path, *sets: str) -> list[str]:
    args = [sys.executable, str(SCRIPT), "run", "tiny", "--threads", "1", "--out", str(out)]
    for s in sets:
        args += ["--set", s]
    return args


def _checkpoint(folder: Path) -> dict:
    return torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=False)


def assert_same_run(a: Path, b: Path) -> None:
    """The files a resumed run must share with an uninterrupted one (config.json differs by its creation time)."""
    assert (a / "metrics.csv").read_bytes() == (b / "metrics.csv").read_bytes()
    assert (a / "claims.json").read_bytes() == (b / "claims.json").read_bytes()
    ca, cb = _checkpoint(a), _checkpoint(b)
    assert ca.keys() == cb.keys()
    for k in ca:  # the same code path and thread count on both sides: equal to the last bit
        assert torch.equal(ca[k], cb[k]) if isinstance(ca[k], torch.Tensor) else ca[k] == cb[k], k
    assert summarise(a).verdict == summarise(b).verdict == "PASS"


def test_sigkill_at_random_points_then_resume_gives_the_uninterrupted_files(tmp_path, tiny):
    sets = ("steps=40", "announce=true")
    t0 = time.perf_counter()
    reference = run_experiment("tiny", dict(s.split("=") for s in sets), out=tmp_path / "reference", threads=1).path
    duration = time.perf_counter() - t0
    rng = np.random.default_rng(15)
    interrupted = 0
    for trial in range(4):
        out = tmp_path / f"killed-{trial}"
        proc = subprocess.Popen(_command(out, *sets), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=ENV)
        try:
            assert proc.stdout.readline() == b"started\n"
            time.sleep(rng.uniform(0.0, 1.2 * duration))  # inside the metrics, checkpoint and claims writes
        finally:
            proc.kill()
            proc.wait()
            proc.stdout.close()
        (folder,) = (out / "tiny").iterdir()
        interrupted += summarise(folder).verdict == "INCOMPLETE"
        run_experiment("tiny", out=out, resume=folder)
        assert_same_run(folder, reference)
        assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []  # no temporary file left
    assert interrupted >= 1  # the battery killed at least one run before it finished


def test_file_size_limit_gives_a_clear_error_and_keeps_the_checkpoint(tmp_path, tiny):
    limit = 48 * 1024  # the checkpoint grows by 800 bytes a step (blob=100): it passes the limit near step 50

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    sets = ("steps=70", "blob=100")
    proc = subprocess.run(_command(tmp_path / "limited", *sets), capture_output=True, text=True, env=ENV, preexec_fn=limited, timeout=300)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot write ") and "file-size limit" in lines[0] and "--resume" in lines[0], proc.stderr
    (folder,) = (tmp_path / "limited" / "tiny").iterdir()
    state = _checkpoint(folder)  # the last checkpoint is intact
    assert 0 < state["step"] < 70 and len(read_metrics(folder)) in (state["_metrics_rows"], state["_metrics_rows"] + 1)
    assert summarise(folder).verdict in ("ERROR", "INCOMPLETE")
    run_experiment("tiny", out=tmp_path, resume=folder)  # without the limit the run finishes as if never stopped
    reference = run_experiment("tiny", dict(s.split("=") for s in sets), out=tmp_path / "reference", threads=1).path
    assert_same_run(folder, reference)


@contextlib.contextmanager
def read_only(path: Path):
    """``path`` read-only for this process: mode 0555, or for root (whom modes do not stop) the immutable flag."""
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root where chattr +i is unavailable: no way to make a folder read-only")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_read_only_output_and_run_folder_give_a_clear_error(tmp_path, tiny):
    ro = tmp_path / "ro"
    ro.mkdir()
    with read_only(ro):
        res = runner.invoke(app, ["run", "tiny", "--out", str(ro / "runs")])
    assert res.exit_code == 1 and "error: cannot create the run folder" in res.output and "choose a folder you may write" in res.output
    assert "Traceback" not in res.output
    done = run_experiment("tiny", {"steps": 4}, out=tmp_path).path
    before = (done / "checkpoint.pt").read_bytes()
    with read_only(done):
        res = runner.invoke(app, ["run", "tiny", "--resume", str(done)])
    assert res.exit_code == 1 and "error: cannot write" in res.output and f"--resume {done}" in res.output
    assert (done / "checkpoint.pt").read_bytes() == before


def test_out_is_a_file(tmp_path, tiny):
    (tmp_path / "file").write_text("x")
    res = runner.invoke(app, ["run", "tiny", "--out", str(tmp_path / "file")])
    assert res.exit_code == 1 and "a part of the path is a file, not a folder" in res.output


def test_full_disk_mid_run_keeps_the_last_checkpoint(tmp_path, tiny, monkeypatch):
    real, calls = os.replace, [0]

    def replace(src, dst):
        calls[0] += 1
        if calls[0] > 12:  # config, status, then a few steps' checkpoints
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(store.os, "replace", replace)
    res = runner.invoke(app, ["run", "tiny", "--set", "steps=30", "--out", str(tmp_path)])
    monkeypatch.setattr(store.os, "replace", real)
    assert res.exit_code == 1 and "No space left on device (the disk is full: free some space)" in res.output and "--resume" in res.output
    (folder,) = (tmp_path / "tiny").iterdir()
    assert 0 < _checkpoint(folder)["step"] < 30
    assert [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] == []
    run_experiment("tiny", out=tmp_path, resume=folder)
    assert_same_run(folder, run_experiment("tiny", {"steps": 30}, out=tmp_path / "reference").path)
