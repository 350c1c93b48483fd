"""Script of test_train_ddp.py: the same training run on two gloo processes (rank 0 saves
the epoch records) and on one process."""

from pathlib import Path

import torch
import torch.distributed as dist

from collapselab.core.data import gaussian_clusters
from collapselab.train import MLP, TrainConfig, Trainer, init_distributed, shutdown_distributed


def train_records(batch_size: int | None) -> list[dict]:
    torch.set_num_threads(1)
    data = gaussian_clusters(3, 40, dim=5, delta=0.9, seed=2)
    torch.manual_seed(0)
    model = MLP([5, 12, 12, 3]).double()
    cfg = TrainConfig(epochs=4, lr=0.05, batch_size=batch_size, nc_points=4, schedule="phd_step")
    return [r.row() for r in Trainer(model, (data.X, data.labels), cfg, measure_batch_size=32).iterate()]


def worker(rank: int, world: int, init_file: str, out: str, batch_size: int | None) -> None:
    init_distributed(backend="gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        rows = train_records(batch_size)
        if rank == 0:
            torch.save(rows, Path(out))
        dist.barrier()
    finally:
        shutdown_distributed()


def main() -> None:
    """``python train_ddp_worker.py OUT_DIR``: two gloo processes, then one, both saved."""
    import sys

    import torch.multiprocessing as mp

    out = Path(sys.argv[1])
    mp.spawn(worker, args=(2, str(out / "init"), str(out / "ddp.pt"), 20), nprocs=2, join=True)
    torch.save(train_records(20), out / "single.pt")


if __name__ == "__main__":
    main()
