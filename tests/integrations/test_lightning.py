"""NeuralCollapseCallback in PyTorch Lightning: a fit on one process and on two CPU processes
(DDP on gloo) log the same metrics, equal to collapse_report on features extracted by hand;
the history survives a checkpoint and resume."""

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

L = pytest.importorskip("lightning")

from collapselab.collapse import collapse_report  # noqa: E402
from collapselab.integrations._monitor import scalars  # noqa: E402

from .compare import close_histories, close_rows  # noqa: E402

SCRIPT = Path(__file__).with_name("lightning_worker.py")
# starts two processes: this module (its fixture once) and the other multi-process tests run one at a time on one pytest-xdist worker (Makefile: make test)
pytestmark = pytest.mark.xdist_group("processes")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("lightning")
    for mode in ("single", "ddp"):
        proc = subprocess.run([sys.executable, str(SCRIPT), str(out), mode], capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def load(out: Path, mode: str, rank: int = 0) -> dict:
    return torch.load(out / mode / f"rank{rank}.pt", weights_only=False)


def logged(out: Path, mode: str) -> list[dict]:
    """The CSV logger's rows with NC metrics, as history rows."""
    with open(out / mode / "csv" / "version_0" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if any(v for k, v in r.items() if k.startswith("nc/"))]
    history = []
    for r in rows:
        layers: dict = {}
        for k, v in r.items():
            if k.startswith("nc/") and v != "":
                _, layer, metric = k.split("/")
                layers.setdefault(layer, {})[metric] = float(v)
        history.append({"epoch": int(r["epoch"]) + 1, "layers": layers})
    return history


@pytest.mark.timeout(600)
def test_two_processes_log_what_one_process_logs(runs):
    single, ddp = load(runs, "single"), load(runs, "ddp")
    assert [r["epoch"] for r in single["history"]] == [2, 4]
    assert list(single["history"][0]["layers"]) == ["body.1", "body", "head"]
    close_histories(ddp["history"], single["history"])
    close_histories(load(runs, "ddp", 1)["history"], ddp["history"])  # every rank holds the global metrics
    for mode in ("single", "ddp"):
        # what the loggers received is the history (CSV text of float64: round-trip exact)
        close_histories(logged(runs, mode), load(runs, mode)["history"])
        last = load(runs, mode)["history"][-1]["layers"]["head"]
        assert all(math.isclose(load(runs, mode)["callback_metrics"][f"nc/head/{k}"], v, rel_tol=1e-15) for k, v in last.items())


@pytest.mark.timeout(600)
def test_logged_metrics_equal_collapse_report_on_hand_features(runs):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import lightning_worker as worker
    finally:
        sys.path.pop(0)
    ds = worker.data()
    X, y = ds.tensors
    for mode in ("single", "ddp"):
        model = worker.Classifier(20).double()
        model.load_state_dict(torch.load(runs / mode / "params.pt"))
        with torch.no_grad():  # epoch 4 is the end of training: these are the measured parameters
            h1, h2 = model.body[:2](X), model.body(X)
        expected = {
            "body.1": scalars(collapse_report(h1, y)),
            "body": scalars(collapse_report(h2, y)),
            "head": scalars(collapse_report(h2, y, model.head.weight.detach(), model.head.bias.detach())),
        }
        got = load(runs, mode)["history"][-1]["layers"]
        for layer, row in expected.items():
            close_rows(got[layer], row)
        # all samples on rank 0, none on rank 1 (and on one process: all of them)
        uneven = torch.load(runs / mode / "uneven.pt", weights_only=False)
        close_rows(uneven["body"], expected["body"])
        close_rows(uneven["head"], expected["head"])


def test_history_survives_checkpoint_and_resume(tmp_path):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import lightning_worker as worker
    finally:
        sys.path.pop(0)
    from collapselab.integrations.lightning import NeuralCollapseCallback

    def fit(max_epochs, ckpt=None, resume=None):
        torch.manual_seed(0)
        model = worker.Classifier(20).double()
        nc = NeuralCollapseCallback(3, every=1)
        callbacks = [nc] + ([L.pytorch.callbacks.ModelCheckpoint(dirpath=ckpt, save_last=True)] if ckpt else [])
        trainer = L.Trainer(max_epochs=max_epochs, accelerator="cpu", logger=False, callbacks=callbacks, enable_checkpointing=bool(ckpt),
                            enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(model, ckpt_path=resume)
        return nc.history

    straight = fit(4)
    first = fit(2, ckpt=tmp_path)
    resumed = fit(4, ckpt=tmp_path, resume=tmp_path / "last.ckpt")
    assert [r["epoch"] for r in first] == [1, 2]
    assert [r["epoch"] for r in resumed] == [1, 2, 3, 4]  # 1, 2 from the checkpoint, not measured again
    close_histories(resumed[:2], first)
    close_histories(resumed, straight)
