"""Image tensors for training from flat :class:`~collapselab.core.data.ClassificationData`.

Loaders return ``X (N, M)`` rows (docs/datasets.md); convolutional models want ``(N, c, H, W)``.
:func:`as_images` reshapes, optionally zero-pads to a larger square and normalises as the
protocols do: ``"standardise"`` subtracts the training set's global mean and divides by its
global standard deviation (PHD 2020 preprocessing), ``"unit_norm"`` rescales every input to
Euclidean norm 1 (Rangamani et al. 2021, "every input to the network is scaled such that it has norm <= 1").
:func:`randomise_labels` replaces a fraction of the labels by uniformly drawn ones (Rangamani et al. 2021
appendix, random-label experiments).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..core.data import ClassificationData
from ..core.errors import ParameterError, ShapeError
from ..core.validation import Interval, OneOf, check_param

__all__ = ["as_images", "randomise_labels", "NORMALISATIONS"]

NORMALISATIONS = ("none", "standardise", "unit_norm")


def as_images(
    data: ClassificationData,
    *,
    channels: int = 1,
    pad_to: int | None = None,
    normalise: str = "none",
    stats: tuple[float, float] | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor, tuple[float, float]]:
    """``(images (N, channels, S, S), labels (N,), (mean, std))`` from square images stored as rows.

    ``M = channels * side^2`` must hold. ``pad_to`` zero-pads symmetrically to ``pad_to x pad_to``
    (e.g. 28 -> 32). ``normalise``: see the module docstring; ``stats`` reuses the training set's
    ``(mean, std)`` for a test set (returned either way; ``(0, 1)`` unless standardising).
    Padding comes before unit-norm scaling and after standardisation (zeros stay zeros).
    """
    where = "as_images"
    check_param("channels", channels, Interval(int, 1), where)
    check_param("normalise", normalise, OneOf(NORMALISATIONS), where)
    N, M = data.X.shape
    side = math.isqrt(M // channels)
    if channels * side * side != M:
        raise ShapeError(f"{where}: rows of length {M} are not {channels} square channel(s); pass channels= so that M = channels * side^2")
    X = data.X.to(dtype).reshape(N, channels, side, side)
    mean, std = (0.0, 1.0) if stats is None else stats
    if normalise == "standardise":
        if stats is None:
            mean, std = float(X.mean()), float(X.std())
        if std <= 0:
            raise ParameterError(f"{where}: the inputs are constant (std 0); cannot standardise")
        X = (X - mean) / std
    if pad_to is not None:
        check_param("pad_to", pad_to, Interval(int, side), where)
        lo = (pad_to - side) // 2
        X = F.pad(X, (lo, pad_to - side - lo, lo, pad_to - side - lo))
    if normalise == "unit_norm":
        norms = torch.linalg.vector_norm(X.flatten(1), dim=1).clamp(min=torch.finfo(dtype).tiny)
        X = X / norms.reshape(N, 1, 1, 1)
    return X, data.labels.clone(), (mean, std)


def randomise_labels(labels: torch.Tensor, fraction: float, num_classes: int, *, generator: torch.Generator) -> torch.Tensor:
    """A copy of ``labels (N,)`` where ``round(fraction N)`` samples, chosen at random, get a label
    drawn uniformly from ``[0, num_classes)`` (it may equal the old one, as in the Rangamani et al. 2021
    random-label experiments: with ``fraction = 1`` the labels carry no information).
    ``generator`` is a CPU generator (the draws do not depend on the labels' device)."""
    where = "randomise_labels"
    check_param("fraction", fraction, Interval(float, 0.0, 1.0), where)
    check_param("num_classes", num_classes, Interval(int, 1), where)
    out = labels.clone()
    k = round(fraction * labels.shape[0])
    idx = torch.randperm(labels.shape[0], generator=generator)[:k]
    out[idx.to(out.device)] = torch.randint(0, num_classes, (k,), generator=generator).to(out)
    return out
