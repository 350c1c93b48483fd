"""The papers' deep ReLU network and its flat parameter vector (Chen 2025; docs/theory/notation.md).

Hidden layers ``x^(l) = relu(W_l x^(l-1) + b_l)`` for ``l = 1..L``, affine output
``x^(L+1) = W_{L+1} x^(L) + b_{L+1}``; widths ``d_0 = M, d_1, ..., d_L, d_{L+1} = Q``.
The flat parameter vector ``theta`` in ``R^K``, ``K = sum_l d_l (d_{l-1} + 1)``, lists
layer by layer ``vec(W_l)`` (row-major, PyTorch's layout) followed by ``b_l``. The
stacked outputs ``x[theta]`` in ``R^{QN}`` list sample by sample the ``Q`` outputs
(row-major flattening of the ``(N, Q)`` output matrix).

Rows are samples here (``X`` is ``(N, M)``), so a layer acts as ``X W^T + b``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call

from .errors import ParameterError, ShapeError
from .validation import Interval, check_param

__all__ = [
    "ReLUNet",
    "num_parameters",
    "layer_shapes",
    "flatten_params",
    "unflatten_params",
    "forward",
    "hidden_layers",
    "stacked_outputs",
    "functional",
    "from_layers",
]


def _check_widths(widths: Sequence[int], where: str) -> list[int]:
    widths = list(widths)
    if len(widths) < 2:
        raise ParameterError(f"{where}: widths must list at least input and output sizes, got {widths}")
    for i, w in enumerate(widths):
        check_param(f"widths[{i}]", w, Interval(int, 1), where)
    return [int(w) for w in widths]


def layer_shapes(widths: Sequence[int]) -> list[tuple[int, int]]:
    """``[(d_1, d_0), ..., (d_{L+1}, d_L)]``: the shape of every ``W_l``."""
    w = _check_widths(widths, "layer_shapes")
    return [(w[i + 1], w[i]) for i in range(len(w) - 1)]


def num_parameters(widths: Sequence[int]) -> int:
    """``K = sum_{l=1}^{L+1} d_l (d_{l-1} + 1)`` (weights and biases of every layer)."""
    return sum(o * (i + 1) for o, i in layer_shapes(widths))


class ReLUNet(nn.Module):
    """Deep ReLU network with ``L = len(widths) - 2`` hidden layers and an affine output.

    ``widths = [M, d_1, ..., d_L, Q]``. ``forward(X)`` takes ``(N, M)`` and returns
    ``(N, Q)``. Parameters are ordinary ``nn.Linear`` layers (``layers[l-1]`` holds
    ``W_l, b_l``), so any PyTorch optimizer or hook works on it.
    """

    def __init__(self, widths: Sequence[int], *, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> None:
        super().__init__()
        self.widths = _check_widths(widths, "ReLUNet")
        self.layers = nn.ModuleList(nn.Linear(i, o, dtype=dtype, device=device) for o, i in layer_shapes(self.widths))

    @property
    def depth(self) -> int:
        """``L``, the number of hidden (ReLU) layers."""
        return len(self.layers) - 1

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            X = torch.relu(layer(X))
        return self.layers[-1](X)

    def weights(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``[(W_1, b_1), ..., (W_{L+1}, b_{L+1})]`` (the live parameters, not copies)."""
        return [(lay.weight, lay.bias) for lay in self.layers]

    def extra_repr(self) -> str:
        return f"widths={self.widths}"


def from_layers(params: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> ReLUNet:
    """A :class:`ReLUNet` holding copies of the given ``(W_l, b_l)`` (dtype/device of ``W_1``)."""
    if not params:
        raise ParameterError("from_layers: need at least one (W, b) pair")
    widths = [int(params[0][0].shape[1])]
    for i, (W, b) in enumerate(params):
        if W.ndim != 2 or b.ndim != 1 or b.shape[0] != W.shape[0] or W.shape[1] != widths[-1]:
            raise ShapeError(f"from_layers: layer {i + 1} has W {tuple(W.shape)}, b {tuple(b.shape)}; expected W ({b.shape[0] if b.ndim == 1 else '?'}, {widths[-1]}) and matching b")
        widths.append(int(W.shape[0]))
    net = ReLUNet(widths, dtype=params[0][0].dtype, device=params[0][0].device)
    with torch.no_grad():
        for lay, (W, b) in zip(net.layers, params):
            lay.weight.copy_(W)
            lay.bias.copy_(b)
    return net


def flatten_params(params: Sequence[tuple[torch.Tensor, torch.Tensor]] | ReLUNet) -> torch.Tensor:
    """``theta`` in ``R^K``: ``vec(W_1), b_1, vec(W_2), b_2, ...`` (row-major)."""
    pairs = params.weights() if isinstance(params, ReLUNet) else params
    return torch.cat([t.reshape(-1) for W, b in pairs for t in (W, b)])


def unflatten_params(theta: torch.Tensor, widths: Sequence[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Inverse of :func:`flatten_params`: views of ``theta`` as ``[(W_l, b_l)]``."""
    shapes = layer_shapes(widths)
    k = num_parameters(widths)
    if theta.ndim != 1 or theta.shape[0] != k:
        raise ShapeError(f"unflatten_params: theta must have shape ({k},) for widths {list(widths)}, got {tuple(theta.shape)}")
    out, pos = [], 0
    for o, i in shapes:
        W = theta[pos : pos + o * i].reshape(o, i)
        pos += o * i
        b = theta[pos : pos + o]
        pos += o
        out.append((W, b))
    return out


def hidden_layers(params: Sequence[tuple[torch.Tensor, torch.Tensor]], X: torch.Tensor) -> list[torch.Tensor]:
    """``[x^(0), x^(1), ..., x^(L+1)]`` with rows as samples (``x^(0) = X``)."""
    xs = [X]
    for W, b in params[:-1]:
        xs.append(torch.relu(xs[-1] @ W.T + b))
    W, b = params[-1]
    xs.append(xs[-1] @ W.T + b)
    return xs


def forward(params: Sequence[tuple[torch.Tensor, torch.Tensor]], X: torch.Tensor) -> torch.Tensor:
    """Network outputs ``(N, Q)`` from layer parameters (a pure function of its inputs)."""
    for W, b in params[:-1]:
        X = torch.relu(X @ W.T + b)
    W, b = params[-1]
    return X @ W.T + b


def stacked_outputs(theta: torch.Tensor, widths: Sequence[int], X: torch.Tensor) -> torch.Tensor:
    """``x[theta]`` in ``R^{QN}``: outputs of all samples, sample by sample.

    A pure function of ``theta``, so ``torch.func.jacrev(stacked_outputs)(theta, widths, X)``
    is the ``(QN, K)`` Jacobian ``D`` of Chen & Munoz Ewald 2024; docs/theory/adapted-flow.md.
    """
    return forward(unflatten_params(theta, widths), X).reshape(-1)


def functional(module: nn.Module) -> tuple[torch.Tensor, "callable"]:
    """Any module as a pure function of a flat parameter vector.

    Returns ``(theta0, f)`` with ``theta0`` the module's parameters flattened (in
    ``named_parameters`` order, which for :class:`ReLUNet` is the papers' order) and
    ``f(theta, X)`` the outputs computed through :func:`torch.func.functional_call`.
    """
    names, tensors = zip(*[(n, p) for n, p in module.named_parameters()])
    shapes = [t.shape for t in tensors]
    sizes = [t.numel() for t in tensors]
    theta0 = torch.cat([t.detach().reshape(-1) for t in tensors])

    def f(theta: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
        parts = torch.split(theta, sizes)
        params = {n: p.reshape(s) for n, p, s in zip(names, parts, shapes)}
        return functional_call(module, params, (X,))

    return theta0, f
