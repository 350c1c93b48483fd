"""Neural collapse in the Hugging Face ``Trainer``: :class:`NeuralCollapseCallback`.

Example (runs as written; a BERT of a few thousand parameters from a config, no download)::

    import torch
    from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments
    from collapselab.integrations.transformers import NeuralCollapseCallback

    class Tokens(torch.utils.data.Dataset):          # class c puts token 3 + c first
        def __init__(self, n):
            self.ids = torch.randint(10, 30, (n, 8)); self.y = torch.arange(n) % 3
            self.ids[:, 1] = 3 + self.y
        def __len__(self):
            return len(self.y)
        def __getitem__(self, i):
            return {"input_ids": self.ids[i], "labels": self.y[i]}

    config = BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, num_labels=3)
    args = TrainingArguments("/tmp/nc-bert", num_train_epochs=2, per_device_train_batch_size=16,
                             use_cpu=True, report_to="none", save_strategy="no", disable_tqdm=True)
    trainer = Trainer(model=BertForSequenceClassification(config), args=args, train_dataset=Tokens(48))
    nc = NeuralCollapseCallback(num_classes=3, every=1).attach(trainer)
    trainer.train()
    print(nc.history[-1]["layers"]["classifier"]["nc1"])

The default layer is the input of the last ``nn.Linear``: for ``*ForSequenceClassification``
and ``ViTForImageClassification`` that is the classifier's input (BERT's pooled output, the
ViT's final CLS token), with the classifier as ``W``, ``b``. Other places: a module name, or
``Layer("bert.encoder", capture="output", feature_fn=lambda out: out.last_hidden_state[:, 0])``
(the CLS token of the encoder output).

The callback measures at the end of the chosen epochs (``on_epoch_end``), on every process,
each on its share of the data (the default loader is the training loader's dataset and
collate function, in order, in batches of ``per_device_eval_batch_size``; see
docs/integrations.md); the statistics are all-reduced over the processes
(accelerate's default process group). The metrics go through ``Trainer.log`` (hence to every
``report_to`` integration: TensorBoard, W&B, MLflow, ... and into ``state.log_history``), which
needs the trainer: :meth:`NeuralCollapseCallback.attach` adds the callback to a trainer and
keeps it. On ``trainer.train(resume_from_checkpoint=...)`` the history is rebuilt from the
checkpoint's ``log_history``.
"""

from __future__ import annotations

import math
from typing import Any

from ..core.errors import ParameterError
from . import require
from ._monitor import CollapseMonitor

_transformers = require("transformers", "transformers", "collapselab.integrations.transformers")

__all__ = ["NeuralCollapseCallback"]


class NeuralCollapseCallback(_transformers.TrainerCallback):
    """Exact, distributed neural-collapse metrics of chosen layers during ``Trainer.train``.

    ``NeuralCollapseCallback(num_classes, **options).attach(trainer)``; options as in
    :class:`~collapselab.integrations.CollapseMonitor` (``layers``, ``loader``, ``every`` /
    ``epochs`` / ``count``, ``feature_fn``, ``prefix``, ...). Metrics are logged as
    ``f"{prefix}/{layer}/{metric}"``; :attr:`history` and :attr:`reports` as in the Lightning
    callback.
    """

    def __init__(self, num_classes: int, **options: Any) -> None:
        self.monitor = CollapseMonitor(num_classes, **options)
        self.trainer: Any = None

    @property
    def history(self) -> list[dict[str, Any]]:
        return self.monitor.history

    @property
    def reports(self) -> dict[str, Any]:
        return self.monitor.reports

    def attach(self, trainer: Any) -> "NeuralCollapseCallback":
        """Add this callback to ``trainer`` and log through it; returns ``self``."""
        if not isinstance(trainer, _transformers.Trainer):
            raise ParameterError(f"NeuralCollapseCallback.attach: expected a transformers.Trainer, got {type(trainer).__name__}")
        self.trainer = trainer
        trainer.add_callback(self)
        return self

    @staticmethod
    def _max_epochs(args: Any) -> int | None:
        return None if args.max_steps is not None and args.max_steps > 0 else math.ceil(args.num_train_epochs)

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        if self.trainer is None:
            raise ParameterError(
                "NeuralCollapseCallback: not attached to a trainer, so it cannot log; add it with NeuralCollapseCallback(...).attach(trainer)"
            )
        self.monitor.check(_unwrap(model), self._max_epochs(args))
        # a resumed run: the checkpoint's log history holds the earlier measurements
        rows = [self.monitor.from_flat(entry, epoch=round(entry.get("epoch", 0)), step=entry.get("step", 0)) for entry in state.log_history]
        self.monitor.load_state_dict({"history": [row for row in rows if row is not None]})

    def on_epoch_end(self, args: Any, state: Any, control: Any, model: Any = None, train_dataloader: Any = None, **kwargs: Any) -> None:
        epoch = round(state.epoch)
        if not self.monitor.due(epoch, self._max_epochs(args)):
            return
        default = None
        if self.monitor.loader is None:
            from torch.utils.data import DataLoader

            if not isinstance(train_dataloader, DataLoader):
                raise ParameterError("NeuralCollapseCallback: the trainer gave no training DataLoader; pass loader= (the data to measure on)")
            # the prepared loader's dataset and collate function, in eval-sized batches
            default = DataLoader(train_dataloader.dataset, batch_size=args.per_device_eval_batch_size, collate_fn=train_dataloader.collate_fn)
        metrics = self.monitor.measure(
            _unwrap(model), default, epoch=epoch, step=state.global_step, device=args.device,
            rank=args.process_index, world=args.world_size,
        )
        self.trainer.log(metrics)

    def state_dict(self) -> dict[str, Any]:
        """The history (as for the Lightning callback)."""
        return self.monitor.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s history."""
        self.monitor.load_state_dict(state)


def _unwrap(model: Any) -> Any:
    """The model inside a ``DistributedDataParallel`` (or similar ``.module``) wrapper."""
    while hasattr(model, "module") and hasattr(model, "no_sync"):
        model = model.module
    return model
