"""Script of test_train_ddp.py: the same training runs on two gloo processes (rank 0 saves
the epoch records and final parameters) and on one process.

Cases: ``main`` (120 samples, batch 20), ``odd`` and ``odd_dataset`` (21 samples in batches
of 10: the last global batch holds one sample, so rank 1 has an empty share; tensors with
cross-entropy, and a generic Dataset with MSE). Rank 0 also records the error that
``sync_batchnorm=True`` raises on CPU ranks.
"""

from pathlib import Path

import torch
import torch.distributed as dist

from collapselab.core.data import gaussian_clusters
from collapselab.core.errors import ParameterError
from collapselab.train import MLP, TrainConfig, Trainer, init_distributed, shutdown_distributed


class Pairs(torch.utils.data.Dataset):
    """A generic map-style data set of ``(x, label)`` pairs (read through a DataLoader)."""

    def __init__(self, X: torch.Tensor, labels: torch.Tensor) -> None:
        self.X, self.labels = X, labels

    def __len__(self) -> int:
        return self.labels.shape[0]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.X[i], self.labels[i]


CASES = {
    "main": dict(per_class=40, batch_size=20, loss="cross_entropy", dataset=False),
    "odd": dict(per_class=7, batch_size=10, loss="cross_entropy", dataset=False),
    "odd_dataset": dict(per_class=7, batch_size=10, loss="mse", dataset=True),
}


def train_case(name: str) -> dict:
    torch.set_num_threads(1)
    case = CASES[name]
    data = gaussian_clusters(3, case["per_class"], dim=5, delta=0.9, seed=2)
    torch.manual_seed(0)
    model = MLP([5, 12, 12, 3]).double()
    cfg = TrainConfig(epochs=4, lr=0.05, loss=case["loss"], batch_size=case["batch_size"], nc_points=4, schedule="phd_step")
    train = Pairs(data.X, data.labels) if case["dataset"] else (data.X, data.labels)
    rows = [r.row() for r in Trainer(model, train, cfg, num_classes=3, measure_batch_size=32).iterate()]
    return {"rows": rows, "params": {k: v.clone() for k, v in model.state_dict().items()}}


def sync_batchnorm_error() -> str:
    model = MLP([5, 4, 3], batch_norm=True).double()
    data = gaussian_clusters(3, 4, dim=5, seed=0)
    try:
        Trainer(model, (data.X, data.labels), TrainConfig(epochs=1), sync_batchnorm=True)
    except ParameterError as exc:
        return str(exc)
    return ""


def worker(rank: int, world: int, init_file: str, out: str) -> None:
    init_distributed(backend="gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        results = {name: train_case(name) for name in CASES}
        results["sync_batchnorm_error"] = sync_batchnorm_error()
        if rank == 0:
            torch.save(results, Path(out))
        dist.barrier()
    finally:
        shutdown_distributed()


def main() -> None:
    """``python train_ddp_worker.py OUT_DIR``: two gloo processes, then one, both saved."""
    import sys

    import torch.multiprocessing as mp

    out = Path(sys.argv[1])
    mp.spawn(worker, args=(2, str(out / "init"), str(out / "ddp.pt")), nprocs=2, join=True)
    torch.save({name: train_case(name) for name in CASES}, out / "single.pt")


if __name__ == "__main__":
    main()
