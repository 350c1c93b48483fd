"""The Rangamani et al. 2021 training protocol pieces shared by the square-loss experiments.

docs/theory/square-loss.md, "Experiments (authors' protocol, completed from their code)":
two classes of an image data set (here Fashion-MNIST, padded 28 -> 32, one channel), every
input rescaled to unit L2 norm, the "3 conv + FC" network with BN (affine off), every conv
weight drawn ``N(0, 0.05^2)`` and rescaled to Frobenius norm ``s``, MSE on one-hot targets,
SGD with momentum 0.9, batch 128, lr 0.01; ``rho`` = product of conv norms divided by the
product of the BN running-std norms (``collapselab.toy.rho``); normalised margins
``y_n (out_0 - out_1) / rho`` (``collapselab.toy.margins``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..collapse import margins
from ..core.data import load_fashion_mnist
from ..core.errors import ParameterError
from ..toy import rho
from .data import as_images
from .models import SquareLossConvNet, scale_conv_init

__all__ = ["BinaryImages", "binary_fashion_mnist", "seed002_model", "rho_metrics", "normalised_margins", "bn_settled_epoch", "exempt_from_weight_decay"]


@dataclass(frozen=True)
class BinaryImages:
    """Train and test images ``(N, 1, 32, 32)`` (unit norm) with labels in {0, 1}."""

    X: torch.Tensor
    labels: torch.Tensor
    X_test: torch.Tensor
    labels_test: torch.Tensor


def binary_fashion_mnist(classes: Sequence[int], per_class: int, test_per_class: int, *, dtype: torch.dtype = torch.float32, root: str | None = None) -> BinaryImages:
    """Two Fashion-MNIST classes (relabelled 0, 1), the first ``per_class`` / ``test_per_class``
    images of each, zero-padded to 32x32 and scaled to unit norm (Rangamani et al. 2021 protocol)."""
    train = load_fashion_mnist("train", classes=list(classes), limit_per_class=per_class, root=root, dtype=torch.float64)
    test = load_fashion_mnist("test", classes=list(classes), limit_per_class=test_per_class, root=root, dtype=torch.float64)
    X, y, _ = as_images(train, pad_to=32, normalise="unit_norm", dtype=dtype)
    Xt, yt, _ = as_images(test, pad_to=32, normalise="unit_norm", dtype=dtype)
    return BinaryImages(X, y, Xt, yt)


def seed002_model(init_scale: float, *, channels: Sequence[int] = (32, 64, 128), seed: int = 0, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> nn.Module:
    """The Rangamani et al. 2021 network for one-channel 32x32 inputs, every conv rescaled to norm
    ``init_scale`` (:func:`.models.scale_conv_init`). Seeds the global torch RNG with ``seed``
    (PyTorch's default bias initialisation draws from it)."""
    torch.manual_seed(seed)
    model = SquareLossConvNet(1, 2, channels=channels)
    scale_conv_init(model, init_scale, generator=torch.Generator().manual_seed(seed))
    return model.to(device=device, dtype=dtype)


def rho_metrics(model: nn.Module) -> dict[str, float]:
    """``{"rho": rho(model)}``: the per-epoch metric of the square-loss experiments."""
    return {"rho": float(rho(model))}


@torch.no_grad()
def normalised_margins(model: nn.Module, X: torch.Tensor, labels: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Margins ``(f_y - f_other) / rho`` of every sample (eval mode), float64 ``(N,)`` on the CPU."""
    was = model.training
    model.eval()
    p0 = next(model.parameters())
    out = torch.cat([model(xb.to(p0.device, p0.dtype)) for xb in X.split(batch_size)])
    model.train(was)
    return margins(out.to(torch.float64), labels.to(p0.device), rho(model)).cpu()


def bn_settled_epoch(num_samples: int, batch_size: int, epochs: int, momentum: float = 0.1, forget: float = 0.01) -> int:
    """First epoch after which the BN running statistics keep less than ``forget`` of their
    initial value (``(1 - momentum)^steps <= forget``). Before it, ``rho`` divides by running
    standard deviations that still remember their initialisation (variance 1), not the network."""
    steps = math.ceil(math.log(forget) / math.log(1.0 - momentum))
    per_epoch = math.ceil(num_samples / batch_size)
    return min(epochs, max(1, math.ceil(steps / per_epoch)))


def exempt_from_weight_decay(optimizer: torch.optim.Optimizer, params: Sequence[nn.Parameter]) -> None:
    """Move ``params`` out of the optimizer's parameter groups into one group of their own
    with ``weight_decay=0`` (same learning rate and momentum): e.g. the last-layer bias, which
    Theorem 3 of Rangamani et al. 2022 (corrected: docs/theory/errata.md) needs unpenalised.
    Call it before the first step (the moved parameters have no optimizer state yet)."""
    ids = {id(p) for p in params}
    found = [p for g in optimizer.param_groups for p in g["params"] if id(p) in ids]
    if len(found) != len(ids):
        raise ParameterError(f"exempt_from_weight_decay: {len(ids) - len(found)} of the {len(ids)} parameters are not in the optimizer; pass parameters of the optimized model")
    if any(p in optimizer.state for p in found):
        raise ParameterError("exempt_from_weight_decay: the parameters already have optimizer state; call it before the first step")
    for g in optimizer.param_groups:
        g["params"] = [p for p in g["params"] if id(p) not in ids]
    base = {k: v for k, v in optimizer.param_groups[0].items() if k != "params"}
    optimizer.add_param_group({**base, "params": found, "weight_decay": 0.0})
