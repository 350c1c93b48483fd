"""Subprocess of test_train_resume.py: train a small net into a run folder, optionally SIGKILL
itself at a given forward call (mid-epoch), optionally resume from the folder's checkpoint.

Usage: python train_resume_worker.py FOLDER KILL_AT_CALL(0 = never) RESUME(0/1)
"""

import os
import signal
import sys
from pathlib import Path

import torch
from torch import nn

from collapselab.core.data import gaussian_clusters
from collapselab.core.store import RunFolder
from collapselab.train import Checkpoint, MetricsLogger, TrainConfig, Trainer


class Killer(nn.Module):
    """Runs ``net``; SIGKILLs the process on forward call number ``kill_at`` (training mode)."""

    def __init__(self, net: nn.Module, kill_at: int) -> None:
        super().__init__()
        self.net, self.kill_at, self.calls = net, kill_at, 0
        self.classifier = net[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.calls += 1
            if self.calls == self.kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        return self.net(x)


def main() -> None:
    path, kill_at, resume = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
    torch.set_num_threads(1)
    data = gaussian_clusters(3, 40, dim=6, delta=0.8, seed=1)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3)).double()
    model = Killer(net, kill_at)
    folder = RunFolder.open(path) if resume else RunFolder.create(path.parent.parent, path.parent.name, {}, run_id=path.name)
    cfg = TrainConfig(epochs=8, lr=0.05, batch_size=25, weight_decay=5e-4, schedule="phd_step", nc_points=8)
    trainer = Trainer(model, (data.X, data.labels), cfg, callbacks=[MetricsLogger(folder.log_metrics), Checkpoint(folder.save_checkpoint)])
    if resume:
        trainer.load_state_dict(folder.load_checkpoint())
    trainer.fit()


if __name__ == "__main__":
    main()
