"""Neural collapse in PyTorch Lightning: :class:`NeuralCollapseCallback`.

Example (runs as written)::

    import lightning as L
    import torch
    from torch import nn
    from collapselab.integrations.lightning import NeuralCollapseCallback

    class Classifier(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(4, 16), nn.ReLU())
            self.head = nn.Linear(16, 3)
        def forward(self, x):
            return self.head(self.body(x))
        def training_step(self, batch, _):
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)
        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    x = torch.randn(60, 4); y = torch.arange(60) % 3; x[:, 0] += 2 * y
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=20, shuffle=True)
    nc = NeuralCollapseCallback(num_classes=3, every=1)
    L.Trainer(max_epochs=3, callbacks=[nc], logger=False, enable_checkpointing=False,
              enable_progress_bar=False).fit(Classifier(), loader)
    print(nc.history[-1]["layers"]["head"]["nc1"])

The callback measures at the end of the chosen training epochs (``on_train_epoch_end``, after
validation), on every rank, each rank on its share of the data (see
docs/integrations.md for the default loader and what "without
augmentation" means); the statistics are all-reduced over the strategy's processes
(DDP: the default process group) before the report, so every rank holds the metrics of the
whole data set. Every metric goes through ``LightningModule.log`` (``on_epoch=True``, float64,
with ``sync_dist=True`` on several processes: the mean of values that are already equal on
every rank, which is exact), hence
to every logger of the trainer (TensorBoard, CSV, MLflow, W&B) and to
``trainer.callback_metrics`` (usable by ``ModelCheckpoint(monitor=...)``), and into
``history``, which Lightning's checkpoints save (``state_dict``) and restore on resume.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.errors import ParameterError
from . import require
from ._monitor import CollapseMonitor

_lightning = require("lightning", "lightning", "collapselab.integrations.lightning")

__all__ = ["NeuralCollapseCallback"]


class NeuralCollapseCallback(_lightning.pytorch.Callback):
    """Exact, distributed neural-collapse metrics of chosen layers during ``Trainer.fit``.

    ``NeuralCollapseCallback(num_classes, **options)``; options as in
    :class:`~collapselab.integrations.CollapseMonitor` (``layers``, ``loader``, ``every`` /
    ``epochs`` / ``count``, ``feature_fn``, ``prefix``, ...). The default loader is
    ``trainer.train_dataloader``'s dataset, in order, in batches of its batch size.
    Metrics are logged as ``f"{prefix}/{layer}/{metric}"``; :attr:`history` holds one row
    ``{"epoch", "step", "layers": {layer: {metric: value}}}`` per measurement and
    :attr:`reports` the latest :class:`~collapselab.collapse.CollapseReport` per layer.
    """

    def __init__(self, num_classes: int, **options: Any) -> None:
        super().__init__()
        self.monitor = CollapseMonitor(num_classes, **options)

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.monitor.history

    @property
    def reports(self) -> dict[str, Any]:
        return self.monitor.reports

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self.monitor.check(pl_module, trainer.max_epochs)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        epoch = trainer.current_epoch + 1
        if not self.monitor.due(epoch, trainer.max_epochs):
            return
        default = None if self.monitor.loader is not None else trainer.train_dataloader
        if default is not None and not isinstance(default, torch.utils.data.DataLoader):
            raise ParameterError(
                f"NeuralCollapseCallback: the training loader is a {type(default).__name__}, not one DataLoader; pass loader= (the data to measure on)"
            )
        metrics = self.monitor.measure(
            pl_module, default, epoch=epoch, step=trainer.global_step, device=pl_module.device,
            rank=trainer.global_rank, world=trainer.world_size,
        )
        for name, value in metrics.items():
            pl_module.log(name, torch.tensor(value, dtype=torch.float64), on_step=False, on_epoch=True, sync_dist=trainer.world_size > 1)

    def state_dict(self) -> dict[str, Any]:
        return self.monitor.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.monitor.load_state_dict(state_dict)
