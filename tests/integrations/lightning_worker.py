"""Script of test_lightning.py: one Lightning fit with NeuralCollapseCallback, on one process
(``single``) or on two CPU processes (``ddp``: DDP on gloo; Lightning launches the second
process by running this script again). Each rank saves the callback's history; rank 0 also
the CSV logger's folder, the final parameters and a measurement with uneven shares.

Float64 model and data; the DDP run uses half the batch size per rank with the samples in
order, so its global batches are the single run's batches and both runs take the same steps.
"""

import sys
from pathlib import Path

import lightning as L
import torch
from torch import nn

from collapselab.core.data import gaussian_clusters
from collapselab.integrations import Layer, measure_layers
from collapselab.integrations._measure import resolve_layers
from collapselab.integrations._monitor import scalars
from collapselab.integrations.lightning import NeuralCollapseCallback


class Classifier(L.LightningModule):
    def __init__(self, batch_size: int):
        super().__init__()
        self.batch_size = batch_size
        self.body = nn.Sequential(nn.Linear(5, 12), nn.ReLU(), nn.Linear(12, 12), nn.ReLU())
        self.head = nn.Linear(12, 3)

    def forward(self, x):
        return self.head(self.body(x))

    def training_step(self, batch, _):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)

    def train_dataloader(self):
        # in order on every rank (Lightning's own DistributedSampler would shuffle training data)
        ds = data()
        sampler = None
        if self.trainer.world_size > 1:
            sampler = torch.utils.data.DistributedSampler(ds, self.trainer.world_size, self.trainer.global_rank, shuffle=False)
        return torch.utils.data.DataLoader(ds, batch_size=self.batch_size, sampler=sampler)


def data():
    d = gaussian_clusters(3, 20, dim=5, delta=0.9, seed=2)  # 60 samples
    return torch.utils.data.TensorDataset(d.X, d.labels)


class UnevenShares(L.Callback):
    """After training, measure with rank 0 holding every sample and rank 1 none (an empty
    share: its layer dimensions come from the other rank), and save rank 0's reports."""

    def __init__(self, out: Path) -> None:
        self.out = out

    def on_train_end(self, trainer, pl_module):
        X, y = data().tensors
        share = [(X[i : i + 7], y[i : i + 7]) for i in range(0, len(y), 7)] if trainer.global_rank == 0 else []
        layers = resolve_layers(pl_module, ["body", Layer("head")], capture="output")
        reports = measure_layers(pl_module, share, 3, layers, device="cpu", distributed=trainer.world_size > 1)
        if trainer.global_rank == 0:
            torch.save({k: scalars(r) for k, r in reports.items()}, self.out / "uneven.pt")


def main(out: Path, mode: str) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    devices, batch = (2, 10) if mode == "ddp" else (1, 20)
    model = Classifier(batch).double()
    nc = NeuralCollapseCallback(3, layers=["body.1", "body", Layer("head")], capture="output", every=2)
    trainer = L.Trainer(
        max_epochs=4, accelerator="cpu", devices=devices, strategy="ddp" if mode == "ddp" else "auto",
        logger=L.pytorch.loggers.CSVLogger(out / mode, name="csv", version=0), callbacks=[nc, UnevenShares(out / mode)],
        enable_checkpointing=False, use_distributed_sampler=False, enable_progress_bar=False, enable_model_summary=False, log_every_n_steps=1,
    )
    trainer.fit(model)
    rank = trainer.global_rank
    torch.save({"history": nc.history, "callback_metrics": {k: float(v) for k, v in trainer.callback_metrics.items()}}, out / mode / f"rank{rank}.pt")
    if rank == 0:
        torch.save(model.state_dict(), out / mode / "params.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
