"""``collapselab train``: run folder, NC columns, resume after a crash, --json, errors, torchrun.

In-process through Typer's CliRunner (tiny MLP on 30 Gaussian-cluster samples, float64, one
thread); the two-process run goes through torchrun (gloo on CPU) and must give the
single-process metrics.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from collapselab.cli import app
from collapselab.collapse import nc1
from collapselab.core.store import RunFolder, read_metrics
from collapselab.train import MLP, Trainer

runner = CliRunner()
TINY = ["--epochs", "4", "--hidden", "8", "--batch-size", "8", "--nc-points", "2", "--dtype", "float64", "--threads", "1", "--lr", "0.1"]


def invoke(*args: str):
    return runner.invoke(app, ["train", *map(str, args)])


def only_folder(root: Path) -> Path:
    (folder,) = (root / "train").iterdir()
    return folder


def test_run_folder_metrics_and_json(npz, tmp_path):
    res = invoke(npz, *TINY, "--out", tmp_path)
    assert res.exit_code == 0, res.output
    summary = json.loads(invoke(npz, *TINY, "--out", tmp_path / "j", "--json").stdout)  # stdout is exactly one JSON object
    folder = only_folder(tmp_path)
    assert {"config.json", "metrics.csv", "checkpoint.pt", "log.txt"} <= {p.name for p in folder.iterdir()}
    assert (folder / "figures" / "collapse.png").stat().st_size > 0  # NC metrics against epochs
    doc = json.loads((folder / "config.json").read_text())
    assert doc["experiment"] == "train" and doc["config"]["lr"] == 0.1 and doc["config"]["hidden"] == [8] and doc["config"]["batch_norm"] is False
    assert "torch" in doc["versions"] and doc["threads"] == 1
    rows = read_metrics(folder)
    # nc_points=2 over 4 epochs: NC at the first and last epoch only, blank cells between
    assert [r["epoch"] for r in rows] == ["1", "2", "3", "4"]
    assert [r["nc1"] != "" for r in rows] == [True, False, False, True]
    assert summary["epochs"] == 4 and summary["final"]["epoch"] == 4 and summary["run_folder"].startswith(str(tmp_path / "j"))
    assert summary["final"]["train_loss"] == float(rows[-1]["train_loss"]) and summary["final"]["nc1"] == float(rows[-1]["nc1"])
    assert f"run folder: {folder}" in res.stdout and "epoch 4: train_loss" in res.stdout
    # the logged NC1 is that of the checkpointed network's features, computed independently
    state = torch.load(folder / "checkpoint.pt", weights_only=False)
    net = MLP([4, 8, 3]).double()
    net.load_state_dict(state["model"])
    data = np.load(npz)
    X = torch.from_numpy(data["X"])
    X = (X - X.mean()) / X.std()  # --normalise standardise: the training set's global mean and std
    with torch.no_grad():
        assert math.isclose(float(rows[-1]["nc1"]), nc1(net.body(X), torch.from_numpy(data["labels"])), rel_tol=1e-9)


def test_resume_after_a_crash_reproduces_the_metrics(npz, tmp_path, monkeypatch):
    assert invoke(npz, *TINY, "--out", tmp_path / "ref").exit_code == 0
    # crash at step 2 of epoch 3 (30 samples in batches of 8: 4 steps per epoch), after one
    # update of epoch 3 that no checkpoint holds
    check = Trainer._check_divergence
    calls = []

    def crash(self, value, step, lr):
        calls.append(step)
        if len(calls) == 10:
            raise KeyboardInterrupt
        check(self, value, step, lr)

    monkeypatch.setattr(Trainer, "_check_divergence", crash)
    assert invoke(npz, *TINY, "--out", tmp_path / "cut").exit_code != 0
    monkeypatch.undo()
    cut = only_folder(tmp_path / "cut")
    assert [r["epoch"] for r in read_metrics(cut)] == ["1", "2"]
    res = invoke("--resume", cut, "--json")
    assert res.exit_code == 0, res.output
    assert read_metrics(cut) == read_metrics(only_folder(tmp_path / "ref"))  # every value, to the last digit
    assert json.loads(res.stdout)["epochs"] == 4
    assert f"resuming {cut} after epoch 2 of 4" in res.stderr and f"resuming {cut} after epoch 2 of 4" in (cut / "log.txt").read_text()
    (cut / "checkpoint.pt").unlink()  # nothing to continue from: said, and the run starts over
    res = invoke("--resume", cut)
    assert res.exit_code == 0 and f"no checkpoint in {cut}: starting again from epoch 0" in res.stderr
    assert read_metrics(cut) == read_metrics(only_folder(tmp_path / "ref"))
    # options given with --resume must be the recorded ones
    res = invoke("--resume", cut, "--lr", "0.2")
    assert res.exit_code == 1
    assert res.stderr.strip() == f"error: --resume {cut}: --lr 0.2 differs from the recorded 0.1; drop it (a resumed run keeps its recorded options) or start a new run"
    assert invoke("--resume", cut, "--lr", "0.1", "--epochs", "4").exit_code == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (("{npz}", "--model", "mpl"), "error: make_model: unknown model 'mpl'; known: mlp, conv002, vgg11, vgg13, resnet18"),
        (("no_such_data",), "error: load_dataset: unknown data set 'no_such_data'; known: breast_cancer, digits"),
        (("{npz}", "--lr", "-0.1"), r"error: TrainConfig: lr must be float in (0, inf), got -0.1"),
        (("{npz}", "--test"), "error: train: data set '{npz}' has no test split (those with one: fashion_mnist, mnist1d, IDX folders); drop --test"),
        (("{npz}", "--subset", "11"), "error: train: --subset 11 asks for 11 samples of every class but class 0 has 10; lower --subset"),
        (("{npz}", "--dtype", "float16"), "error: train: dtype must be one of 'float32', 'float64', got 'float16'"),
        (("{npz}", "--model", "conv002"), "error: SquareLossConvNet: input_size must be int in [8, inf), got 2"),  # rows of 4 = 2x2 images
        ((), "error: train: give a data set"),
        (("--resume", "{out}"), "error: {out} is not a run folder (no config.json)"),
    ],
)
def test_bad_input_exits_1_with_one_error_line(npz, tmp_path, args, message):
    res = invoke(*(a.format(npz=npz, out=tmp_path) for a in args), "--out", tmp_path, "--epochs", "1")
    assert res.exit_code == 1, res.output
    assert res.stdout == "" and res.stderr.count("\n") == 1 and res.stderr.startswith(message.format(npz=npz, out=tmp_path)), res.stderr
    assert not (tmp_path / "train").exists()  # nothing written on bad input


def test_resume_of_an_experiment_run_is_refused(tmp_path):
    folder = RunFolder.create(tmp_path, "truncation-geometry", {"trials": 1}).path
    res = invoke("--resume", folder)
    assert res.exit_code == 1 and f"--resume {folder} is a run of 'truncation-geometry', not of `collapselab train`" in res.stderr


@pytest.mark.timeout(120)
@pytest.mark.xdist_group("processes")  # starts two processes: with the others, one at a time on one pytest-xdist worker (Makefile: make test)
def test_torchrun_two_processes_give_the_single_process_metrics(npz, tmp_path):
    # 30 samples in batches of 8: the last batch has 6 samples, 3 per rank
    assert invoke(npz, *TINY, "--out", tmp_path / "one").exit_code == 0
    script = Path(sys.executable).with_name("collapselab")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), "train", str(npz), *TINY, "--out", str(tmp_path / "two"), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=110)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)  # rank 0 alone prints
    two, one = read_metrics(Path(summary["run_folder"])), read_metrics(only_folder(tmp_path / "one"))
    assert len(list((tmp_path / "two" / "train").iterdir())) == 1 and len(two) == len(one) == 4
    # What README promises: in float64 the two runs differ only by the order of the sums over
    # ranks. Error model: a reordered sum of n <= 30 terms changes by <= n eps ~ 7e-15 relative per
    # step; over 16 SGD steps (lr 0.1, standardised inputs, a loss Hessian of norm ~1) each step
    # can amplify a perturbation by at most ~(1 + lr |H|) ~ 1.1, so 16 * 7e-15 * 1.1^16 ~ 5e-13;
    # rel_tol 1e-9 leaves a wide margin for other BLAS kernels and still fails on any real
    # difference (a different batch split or update changes the values at the 1e-2 level).
    for a, b in zip(two, one):
        assert a.keys() == b.keys() and a["epoch"] == b["epoch"]
        for k in a:
            if b[k] not in ("", "nan"):
                assert math.isclose(float(a[k]), float(b[k]), rel_tol=1e-9, abs_tol=1e-12), (k, a["epoch"], a[k], b[k])


class FakeWriter:
    """Stands in for torch.utils.tensorboard.SummaryWriter (tensorboard is an optional extra)."""

    scalars: list[tuple[str, float, int]] = []

    def __init__(self, logdir: str) -> None:
        self.logdir = logdir

    def add_scalar(self, key: str, value: float, step: int) -> None:
        self.scalars.append((key, value, step))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_tensorboard_gets_the_metrics_rows_and_is_refused_without_the_package(npz, tmp_path, monkeypatch):
    fake = type(sys)("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    FakeWriter.scalars = []
    assert invoke(npz, *TINY, "--out", tmp_path / "tb", "--tensorboard").exit_code == 0
    rows = read_metrics(only_folder(tmp_path / "tb"))
    logged = {(k, step): v for k, v, step in FakeWriter.scalars}
    assert [logged[("train_loss", e)] for e in (1, 2, 3, 4)] == [float(r["train_loss"]) for r in rows]
    assert logged[("nc1", 4)] == float(rows[-1]["nc1"]) and ("nc1", 2) not in logged
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # "not installed"
    res = invoke(npz, *TINY, "--out", tmp_path / "none", "--tensorboard")
    assert res.exit_code == 1 and res.stderr.startswith("error: TensorBoardLogger: tensorboard is not importable")
    assert not (tmp_path / "none").exists()


def test_resume_keeps_threads_and_world_size(npz, tmp_path):
    assert invoke(npz, *TINY, "--out", tmp_path).exit_code == 0  # recorded with --threads 1
    folder = only_folder(tmp_path)
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # a different default than the recorded count
    try:
        res = invoke("--resume", folder)
    finally:
        torch.set_num_threads(before)
    assert res.exit_code == 0, res.output
    resumed = [line for line in (folder / "log.txt").read_text().splitlines() if "training mlp" in line]
    assert len(resumed) == 2 and resumed[-1].endswith("world size 1, 1 threads)")
    res = invoke("--resume", folder, "--threads", "2")
    assert res.exit_code == 1 and res.stderr.startswith(f"error: --resume {folder}: --threads 2 differs from the recorded 1") and "Traceback" not in res.output
    doc = json.loads((folder / "config.json").read_text())
    doc["world_size"] = 2
    (folder / "config.json").write_text(json.dumps(doc))
    res = invoke("--resume", folder)
    assert res.exit_code == 1 and res.stderr.count("\n") == 1
    assert "recorded with 2 process(es) and would continue with 1" in res.stderr and "torchrun --nproc_per_node=2" in res.stderr
    if not torch.cuda.is_available():
        doc["world_size"], doc["device"] = 1, "cuda:0"
        (folder / "config.json").write_text(json.dumps(doc))
        res = invoke("--resume", folder)
        assert res.exit_code == 1 and res.stderr.count("\n") == 1 and "the run was recorded on cuda:0, which this machine cannot use" in res.stderr


def test_resume_with_metrics_rows_lost_is_refused(npz, tmp_path):
    assert invoke(npz, *TINY, "--out", tmp_path).exit_code == 0
    folder = only_folder(tmp_path)
    metrics = folder / "metrics.csv"
    full = metrics.read_text()
    lines = full.splitlines(keepends=True)
    for cut, lost in ((full[:-7], "holds 3 complete rows but"), ("".join(lines[:3]) + lines[3][:10], "holds 2 complete rows but")):
        metrics.write_text(cut)  # cut mid-row, after the checkpoint of epoch 4 was written
        res = invoke("--resume", folder)
        assert res.exit_code == 1 and res.stderr.count("\n") == 1 and "Traceback" not in res.output
        assert res.stderr.startswith(f"error: {folder / 'metrics.csv'} holds") and lost in res.stderr and "rows were lost" in res.stderr


def test_train_run_records_its_status(tmp_path):
    from collapselab.core.store import RunFolder

    res = runner.invoke(app, ["train", "iris", "--epochs", "2", "--out", str(tmp_path), "--json"])
    assert res.exit_code == 0, res.output
    (run,) = (tmp_path / "train").iterdir()
    assert RunFolder.open(run).status["status"] == "finished"
