"""Normalised parametrisation ``f = rho f_V`` of homogeneous networks.

Rangamani et al. 2021 (CBMM Memo 117), section 3.3: for a bias-free ReLU network
``f_W(x) = W_L relu(W_{L-1} ... relu(W_1 x))``, positive homogeneity gives
``f_W = rho f_V`` with ``V_k = W_k / |W_k|_F``, ``rho_k = |W_k|_F``, ``rho = prod_k rho_k``.
With biases the identity still holds after rescaling the biases,
``c_k = b_k / prod_{j <= k} rho_j`` (:func:`normalise_layers`).

For networks with batch norm the library follows the authors' code
(GraceXu182/binaryclassifiers_squareloss, ``complexity.get_complexities``;
docs/theory/square-loss.md): ``rho = prod_k |W_k|_F * prod_b |sqrt(|gamma_b|)|_2 /
prod_b |sqrt(running_var_b)|_2``; the ``gamma`` factor is 1 for BN with ``affine=False``
(the protocol's setting). The authors take ``sqrt(gamma)``; the absolute value here only
avoids NaN for negative scales. Norms are computed in float64 whatever the model's dtype.

The normalised margins ``m_n = (f_{y_n}(x_n) - max_{c != y_n} f_c(x_n)) / rho`` and their
moments are a measurement: they live in :mod:`collapselab.collapse` (``margins``,
``margin_stats``, ``MarginStats``) and are re-exported by :mod:`collapselab.toy`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..core.errors import ParameterError, ShapeError

__all__ = [
    "WEIGHT_LAYERS",
    "BATCH_NORMS",
    "Normalisation",
    "normalised_parametrisation",
    "rho",
    "NormalisedLayers",
    "normalise_layers",
    "radial_derivatives",
    "scale_invariant_layers",
]

WEIGHT_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
"""Module types whose ``weight`` enters ``rho`` as a factor ``|W_k|_F``."""
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
"""Module types whose running standard deviation divides ``rho``."""


@dataclass(frozen=True)
class Normalisation:
    """The normalised parametrisation of a module (all tensors float64, detached).

    names: names of the weighted layers, in ``model.named_modules()`` order (length L).
    V: ``W_k / |W_k|_F`` for each weighted layer (the layer's own weight shape).
    rho_k: ``(L,)`` Frobenius norms ``|W_k|_F``.
    bn_names: names of the batch-norm layers (length B, possibly 0).
    bn_std_norms: ``(B,)`` ``|sqrt(running_var)|_2`` of each BN layer.
    bn_scale_norms: ``(B,)`` ``|sqrt(|gamma|)|_2`` (1 where ``affine=False``).
    rho: scalar ``prod rho_k * prod bn_scale_norms / prod bn_std_norms``.
    """

    names: tuple[str, ...]
    V: tuple[torch.Tensor, ...]
    rho_k: torch.Tensor
    bn_names: tuple[str, ...]
    bn_std_norms: torch.Tensor
    bn_scale_norms: torch.Tensor
    rho: torch.Tensor


def normalised_parametrisation(model: nn.Module) -> Normalisation:
    """``(V_k, rho_k, rho)`` of any module built of Linear/Conv and BatchNorm layers.

    Rangamani et al. 2021 section 3.3 (``V_k = W_k/|W_k|_F``, ``rho = prod rho_k``); with batch norm
    the authors' ``rho`` divided by the running-std norms (see the module docstring).
    Biases and other parameters do not enter ``rho``. Raises :class:`ParameterError` if
    the model has no weighted layer or a BN layer keeps no running statistics.
    """
    where = "normalised_parametrisation"
    if not isinstance(model, nn.Module):
        raise ParameterError(f"{where}: model must be a torch.nn.Module, got {type(model).__name__}")
    names, V, norms = [], [], []
    bn_names, bn_std, bn_scale = [], [], []
    for name, mod in model.named_modules():
        if isinstance(mod, WEIGHT_LAYERS):
            W = mod.weight.detach().to(torch.float64)
            n = torch.linalg.vector_norm(W)
            names.append(name)
            norms.append(n)
            V.append(W / n)
        elif isinstance(mod, BATCH_NORMS):
            if mod.running_var is None:
                raise ParameterError(f"{where}: batch-norm layer {name!r} has track_running_stats=False; rho needs running variances (build it with track_running_stats=True)")
            bn_names.append(name)
            bn_std.append(torch.linalg.vector_norm(mod.running_var.detach().to(torch.float64).sqrt()))
            gamma = mod.weight
            bn_scale.append(torch.linalg.vector_norm(gamma.detach().to(torch.float64).abs().sqrt()) if gamma is not None else torch.ones((), dtype=torch.float64, device=mod.running_var.device))
    if not names:
        raise ParameterError(f"{where}: the model has no Linear or Conv layer; rho is a product of their weight norms")
    rho_k = torch.stack(norms)
    device = rho_k.device
    std = torch.stack(bn_std).to(device) if bn_std else torch.ones(0, dtype=torch.float64, device=device)
    scale = torch.stack(bn_scale).to(device) if bn_scale else torch.ones(0, dtype=torch.float64, device=device)
    value = rho_k.prod() * scale.prod() / std.prod()
    return Normalisation(tuple(names), tuple(V), rho_k, tuple(bn_names), std, scale, value)


def rho(model: nn.Module) -> torch.Tensor:
    """Scalar float64 ``rho`` of ``model`` (:func:`normalised_parametrisation`; Rangamani et al. 2021 sec. 3.3)."""
    return normalised_parametrisation(model).rho


@dataclass(frozen=True)
class NormalisedLayers:
    """``f_W(x) = rho f_{V,c}(x)`` for a ReLU network given as ``[(W_k, b_k)]``.

    V: ``W_k / rho_k``; c: ``b_k / prod_{j<=k} rho_j`` (``None`` where the layer has no bias);
    rho_k: ``(L,)``; rho: ``prod rho_k``.
    """

    V: tuple[torch.Tensor, ...]
    c: tuple[torch.Tensor | None, ...]
    rho_k: torch.Tensor
    rho: torch.Tensor

    def params(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """``[(V_k, c_k)]``, the parameters of the normalised network ``f_{V,c}``."""
        return list(zip(self.V, self.c))


def normalise_layers(params: Sequence[tuple[torch.Tensor, torch.Tensor | None]]) -> NormalisedLayers:
    """Normalised parametrisation of a (biased or bias-free) ReLU network ``[(W_k, b_k)]``.

    By positive homogeneity of ReLU, ``relu(rho_1 V_1 x + b_1) = rho_1 relu(V_1 x + b_1/rho_1)``
    and inductively ``f_W(x) = rho f_{V,c}(x)`` with ``c_k = b_k / prod_{j<=k} rho_j``
    (Rangamani et al. 2021 sec. 3.3 states the bias-free case). ``W_k``: ``(d_k, d_{k-1})``;
    ``b_k``: ``(d_k,)`` or ``None``. Raises :class:`ParameterError` on a zero layer.
    """
    where = "normalise_layers"
    if not params:
        raise ParameterError(f"{where}: need at least one (W, b) pair")
    V, c, norms = [], [], []
    cum = None
    for k, (W, b) in enumerate(params):
        if W.ndim != 2:
            raise ShapeError(f"{where}: W_{k + 1} must be 2-D, got shape {tuple(W.shape)}")
        n = torch.linalg.vector_norm(W)
        if float(n) == 0.0:
            raise ParameterError(f"{where}: W_{k + 1} is zero; the normalised parametrisation needs |W_k|_F > 0")
        cum = n if cum is None else cum * n
        norms.append(n)
        V.append(W / n)
        c.append(None if b is None else b / cum)
    rho_k = torch.stack(norms)
    return NormalisedLayers(tuple(V), tuple(c), rho_k, rho_k.prod())


def radial_derivatives(model: nn.Module, value: torch.Tensor) -> dict[str, torch.Tensor]:
    """``<W_k, d value / d W_k>`` for every weighted layer (Linear/Conv) of ``model``.

    Structural lemma (Rangamani et al. 2021 Lemma 6, appendix B): for a bias-free ReLU network and
    ``value = f_W(x)`` every entry equals ``f_W(x)``. Batch norm (``affine=False``, train
    mode) makes the loss invariant under ``W_k -> a W_k`` for a layer feeding it, so the
    entry is 0 for such layers (exactly only as ``eps -> 0``). ``value``: a scalar built
    from ``model``'s forward pass (the graph is kept, so it can be reused).
    """
    where = "radial_derivatives"
    if value.numel() != 1:
        raise ShapeError(f"{where}: value must be a scalar, got shape {tuple(value.shape)}")
    layers = [(name, mod.weight) for name, mod in model.named_modules() if isinstance(mod, WEIGHT_LAYERS)]
    if not layers:
        raise ParameterError(f"{where}: the model has no Linear or Conv layer")
    grads = torch.autograd.grad(value.reshape(()), [w for _, w in layers], retain_graph=True, allow_unused=True)
    out = {}
    for (name, w), g in zip(layers, grads):
        out[name] = torch.zeros((), dtype=w.dtype, device=w.device) if g is None else (w.detach() * g).sum()
    return out


def scale_invariant_layers(model: nn.Module) -> list[str]:
    """Names of weighted layers whose output feeds a batch norm directly.

    Determined from registration order: a Linear/Conv whose next leaf module is a
    BatchNorm with matching ``num_features``. Such a layer's weight and bias are
    scale/shift invariant under BN in training mode (docs/theory/square-loss.md: batch
    norm makes each weight below it scale-invariant and its bias gradient vanish).
    """
    leaves = [(n, m) for n, m in model.named_modules() if not list(m.children())]
    found = []
    for (name, mod), (_, nxt) in zip(leaves, leaves[1:]):
        if isinstance(mod, WEIGHT_LAYERS) and isinstance(nxt, BATCH_NORMS) and mod.weight.shape[0] == nxt.num_features:
            found.append(name)
    return found
