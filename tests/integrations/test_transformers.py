"""NeuralCollapseCallback in the Hugging Face Trainer: tiny BERT and ViT (from configs, no
download) on one process and on two CPU processes (torchrun, accelerate on gloo) log the same
metrics, equal to collapse_report on features extracted by hand; a resumed run rebuilds the
history from the checkpoint."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from collapselab.collapse import collapse_report  # noqa: E402
from collapselab.integrations._monitor import scalars  # noqa: E402

from .compare import close_histories, close_rows  # noqa: E402

SCRIPT = Path(__file__).with_name("hf_worker.py")
# starts two processes: this module (its fixture once) and the other multi-process tests run one at a time on one pytest-xdist worker (Makefile: make test)
pytestmark = pytest.mark.xdist_group("processes")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def worker():
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import hf_worker
    finally:
        sys.path.pop(0)
    return hf_worker


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("hf")
    (out / "single").mkdir()
    (out / "ddp").mkdir()
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out / "single")], capture_output=True, text=True, timeout=240, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    proc = subprocess.run([*torchrun, str(SCRIPT), str(out / "ddp")], capture_output=True, text=True, timeout=300, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def load(out: Path, name: str, rank: int = 0) -> dict:
    return torch.load(out / f"{name}-rank{rank}.pt", weights_only=False)


def hand_features(name: str, model, data) -> dict:
    """The callback's two layers computed directly: the classifier's input, and the first
    token of the last encoder layer's output."""
    model.eval()
    with torch.no_grad():
        if name == "bert":
            out = model.bert(input_ids=data.ids)
            return {"classifier": out.pooler_output, "cls": out.last_hidden_state[:, 0]}  # BERT has no final norm
        out = model.vit(pixel_values=data.x, output_hidden_states=True)
        return {"classifier": out.last_hidden_state[:, 0], "cls": out.hidden_states[-1][:, 0]}  # before / after the final LayerNorm


@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", ["bert", "vit"])
def test_one_and_two_processes_log_collapse_report_of_hand_features(runs, name):
    w = worker()
    single, ddp = load(runs / "single", name), load(runs / "ddp", name)
    assert [r["epoch"] for r in single["history"]] == [1, 2, 3]
    close_histories(ddp["history"], single["history"])
    close_histories(load(runs / "ddp", name, 1)["history"], ddp["history"])
    for run in (single, ddp):
        # what Trainer.log received (state.log_history, which every report_to integration gets)
        logged = [{"epoch": round(e["epoch"]), "layers": {}} | {"_": e} for e in run["log_history"] if any(k.startswith("nc/") for k in e)]
        rows = [{"epoch": r["epoch"], "layers": {}} for r in logged]
        for row, r in zip(rows, logged):
            for k, v in r["_"].items():
                if k.startswith("nc/"):
                    _, layer, metric = k.split("/")
                    row["layers"].setdefault(layer, {})[metric] = v
        close_histories(rows, run["history"])
        make, data, _ = w.models()[name]
        model = make().double()
        model.load_state_dict(run["params"])
        feats, ds = hand_features(name, model, data()), data()
        clf = model.classifier
        expected = {
            "classifier": scalars(collapse_report(feats["classifier"], ds.y, clf.weight.detach(), clf.bias.detach())),
            "cls": scalars(collapse_report(feats["cls"], ds.y)),
        }
        for layer, row in expected.items():
            close_rows(run["history"][-1]["layers"][layer], row)


def test_resumed_run_rebuilds_the_history(tmp_path):
    from transformers import Trainer

    from collapselab.integrations.transformers import NeuralCollapseCallback

    w = worker()
    # BERT: transformers 5.24 saves ViT checkpoints under its old parameter names and loads
    # them back as missing keys (the resumed ViT restarts from random weights)
    make, data, _ = w.models()["bert"]

    def train(**changes):
        torch.manual_seed(0)
        resume = changes.pop("resume", None)
        trainer = Trainer(model=make().double(), args=w.arguments(tmp_path / "out", **changes), train_dataset=data())
        nc = NeuralCollapseCallback(3, every=1).attach(trainer)
        trainer.train(resume_from_checkpoint=resume)
        return nc.history

    straight = train()
    train(num_train_epochs=2, save_strategy="epoch")
    checkpoint = max((tmp_path / "out").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    resumed = train(resume=str(checkpoint))
    assert [r["epoch"] for r in resumed] == [1, 2, 3]  # 1, 2 from the checkpoint's log history
    close_histories(resumed, straight)


def test_unattached_callback_says_how_to_attach(tmp_path):
    from transformers import Trainer

    from collapselab.core.errors import ParameterError
    from collapselab.integrations.transformers import NeuralCollapseCallback

    w = worker()
    make, data, _ = w.models()["vit"]
    trainer = Trainer(model=make().double(), args=w.arguments(tmp_path), train_dataset=data(), callbacks=[NeuralCollapseCallback(3)])
    with pytest.raises(ParameterError, match=r"attach\(trainer\)"):
        trainer.train()
