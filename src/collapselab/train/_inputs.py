"""The trainer's check of model against data, before the first step: one sample through the model.

A model that cannot take the inputs (a conv net given rows ``(N, 784)``, an MLP given images),
or whose outputs do not fit the classes or the MSE targets, fails before training with the
shapes named and the likely fix, instead of a raw torch error deep inside an epoch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..core.errors import ShapeError

__all__ = ["check_model_inputs"]


def _input_hint(model: nn.Module, x: torch.Tensor) -> str:
    """The likely fix when ``model`` refuses ``x`` (one sample): conv nets take images
    ``(N, C, H, W)``, linear layers rows ``(N, M)``."""
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))), None)
    if isinstance(first, nn.Conv2d) and x.ndim == 2:
        c, M = first.in_channels, int(x.shape[1])
        side = math.isqrt(M // c) if M % c == 0 else 0
        if side * side * c == M:
            return f"the model starts with a Conv2d and expects images (N, {c}, H, W), got rows (N, {M}): reshape them, X.reshape(-1, {c}, {side}, {side}) (collapselab.train.as_images(data, channels={c}) does it)"
        return f"the model starts with a Conv2d and expects images (N, {c}, H, W), got rows (N, {M}), which are not {c} square channel(s); reshape them to the images' shape"
    if isinstance(first, nn.Linear):
        values = math.prod(x.shape[1:])
        if x.ndim > 2 and values == first.in_features:
            return f"the model starts with an nn.Linear of {first.in_features} inputs and expects rows (N, {first.in_features}): flatten the inputs, X.reshape(len(X), -1)"
        return f"the model's first nn.Linear takes {first.in_features} inputs per sample but a sample has {values} values; give inputs of that width or change the model"
    return "give inputs of the shape the model expects"


def check_model_inputs(model: nn.Module, source: Any, prepare: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]], num_classes: int, targets: torch.Tensor | None, where: str) -> None:
    """One eval-mode forward pass of the first sample of ``source`` without gradients (eval mode
    and ``no_grad`` leave parameters, buffers and random states as they were); raise
    :class:`ShapeError` if the model refuses the inputs, returns other than ``(B, P)``, has fewer
    than ``num_classes`` outputs (cross-entropy) or not the targets' ``P`` (MSE)."""
    if len(source) == 0:
        raise ShapeError(f"{where}: the training set is empty; give at least one sample per class")
    x, _ = prepare(*next(source.batches([torch.zeros(1, dtype=torch.int64)])))
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ShapeError(f"{where}: the model cannot take the training inputs of shape {(len(source), *x.shape[1:])} ({first}); {_input_hint(model, x)}") from None
    finally:
        for m, training in modes:
            m.training = training
    if out.ndim != 2:
        raise ShapeError(f"{where}: the model must return (B, P) outputs, got shape {tuple(out.shape)} for one sample; end it with an nn.Linear (flatten feature maps first)")
    P = int(out.shape[1])
    if targets is not None and P != targets.shape[1]:
        raise ShapeError(f"{where}: the model has {P} outputs but the MSE targets have {targets.shape[1]} columns; give targets of shape ({num_classes}, {P}) or a model with {targets.shape[1]} outputs")
    if targets is None and P < num_classes:
        raise ShapeError(f"{where}: the model has {P} outputs but the labels have {num_classes} classes; give the model {num_classes} outputs (one logit per class)")
