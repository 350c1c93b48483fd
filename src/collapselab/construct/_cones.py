"""Cone layers shared by the CE23 and CE24 constructions (docs/theory/minimizers.md).

A *cone layer* with apex ``p``, unit axis ``h`` and aperture ``theta`` has cumulative
parameters (CE24 Lemma 3.4 with ``m = n``; CE23 Thm 2.3 step 3)

    W = W_theta R,   b = -W p,   R h = û,   W_theta = lambda 1 + (1 - lambda) û û^T,

so its truncation map is the identity on the forward cone ``p + C_theta[h]`` and maps the
backward cone ``p + C_theta[-h]`` to ``p``. A construction stacks one cone layer per class
and then an affine output layer; :func:`check_sectors` verifies on the actual data, in
one matrix product per class, that every layer does what the proof says (so that data
violating an assumption raise, never yield a network with a wrong cost), and
:func:`assemble` turns the cumulative parameters into a :class:`ReLUNet`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..core.data import ClassificationData
from ..core.errors import AssumptionError
from ..core.geometry import cone_weight, layer_weights, rotation_to
from ..core.network import ReLUNet, from_layers

__all__ = ["cone_layer", "check_sectors", "anchor_cost", "assemble"]

Pair = tuple[torch.Tensor, torch.Tensor]


def cone_layer(p: torch.Tensor, h: torch.Tensor, theta: float) -> Pair:
    """Cumulative ``(W, b)`` of the cone layer with apex ``p`` ``(M,)``, axis ``h`` ``(M,)`` and aperture ``theta``.

    ``W = W_theta R`` with ``R`` in ``SO(M)``, ``R h/|h| = u_M/sqrt(M)`` (two Householder
    reflections) and ``b = -W p`` (CE24 (3.22)-(3.26), (5.17); CE23 (2.63)).
    """
    m = p.shape[0]
    R = rotation_to(h, torch.ones(m, dtype=p.dtype, device=p.device))
    W = cone_weight(theta, m, dtype=p.dtype, device=p.device) @ R
    return W, -(W @ p)


def check_sectors(
    data: ClassificationData,
    radii: torch.Tensor,
    hidden: Sequence[Pair],
    handled_by: Sequence[int | None],
    points: torch.Tensor,
    *,
    where: str,
    forward_condition: str,
    collapse_condition: str,
) -> None:
    """Verify the truncation pattern of a cone construction on the data; raise AssumptionError otherwise.

    data: the training data; radii: ``(Q,)`` ``r_j = max_i |x_{j,i} - x̄_j|``; hidden: the
    cumulative ``(W^(l), b^(l))`` of the cone layers; handled_by[j]: the layer (0-based) that
    collapses class ``j``, or ``None`` (class kept); points: ``(Q, M)`` the collapse points ``p_j``.

    Checked, with ``z = W^(l) x + b^(l)``: the points of class ``j`` have ``z >= 0`` at every
    layer before ``handled_by[j]`` (forward cone: ``tau`` is the identity there) and ``z <= 0`` at
    ``handled_by[j]`` (backward sector: ``tau(x) = p_j``); ``p_j`` has ``z >= 0`` at every later
    layer. This is exactly the pattern that makes ``tau(X_0) = [p_1 u^T ... p_Q u^T]`` (CE23
    (2.59), CE24 (5.14),(5.19)). First a sufficient test on the ball ``B_{r_j}(x̄_j)``
    (``min_x z_a = (W x̄_j + b)_a - r_j |W_a|``; ``O(Q^3)`` work); only the classes failing it are
    checked point by point (one matrix product per class). Messages name the pair and condition.
    """
    m = hidden[0][0].shape[0]
    n_layers = len(hidden)
    W_all = torch.cat([W for W, _ in hidden])  # (n_layers m, M)
    b_all = torch.cat([b for _, b in hidden])
    owner = {k: j for j, k in enumerate(handled_by) if k is not None}
    centre = (data.class_means @ W_all.T + b_all).reshape(len(handled_by), n_layers, m)
    spread = radii[:, None, None] * W_all.norm(dim=1).reshape(1, n_layers, m)
    low, high = (centre - spread).amin(dim=2), (centre + spread).amax(dim=2)  # (Q, layers)

    def who(layer: int) -> str:
        return f"class {owner[layer]}" if layer in owner else "no class"

    def pair(layer: int, j: int) -> str:
        return f"the pair ({owner[layer]}, {j})" if layer in owner else f"class {j}"

    for j, k in enumerate(handled_by):
        n_fwd = n_layers if k is None else k
        if bool((low[j, :n_fwd] < 0).any()) or (k is not None and float(high[j, k]) > 0):
            Z = (data.X[data.class_indices[j]] @ W_all[: (n_fwd + (k is not None)) * m].T + b_all[: (n_fwd + (k is not None)) * m])
            Z = Z.reshape(Z.shape[0], -1, m)
            fwd = Z[:, :n_fwd].amin(dim=(0, 2))
            bad = torch.nonzero(fwd < 0).flatten()
            if bad.numel():
                lay = int(bad[0])
                raise AssumptionError(
                    f"{where}: the data of class {j} leave the forward cone of hidden layer {lay + 1} (which collapses {who(lay)}): "
                    f"a coordinate of W^({lay + 1}) x + b^({lay + 1}) is {float(fwd[lay]):.3g} < 0; {forward_condition} fails for "
                    f"{pair(lay, j)}; make the clusters tighter or better separated"
                )
            if k is not None and float(Z[:, k].amax()) > 0:
                raise AssumptionError(
                    f"{where}: hidden layer {k + 1} does not collapse class {j}: a coordinate of W^({k + 1}) x + b^({k + 1}) is "
                    f"{float(Z[:, k].amax()):.3g} > 0 for a point of class {j}; {collapse_condition} fails for class {j}"
                )
        if k is not None and k + 1 < n_layers:
            zp = (points[j] @ W_all[(k + 1) * m :].T + b_all[(k + 1) * m :]).reshape(-1, m).amin(dim=1)
            bad = torch.nonzero(zp < 0).flatten()
            if bad.numel():
                lay = k + 1 + int(bad[0])
                raise AssumptionError(
                    f"{where}: the collapse point of class {j} leaves the forward cone of hidden layer {lay + 1} "
                    f"(which collapses {who(lay)}): a coordinate is {float(zp[int(bad[0])]):.3g} < 0; {forward_condition} "
                    f"fails for {pair(lay, j)}; make the clusters tighter or better separated"
                )


def anchor_cost(anchors: torch.Tensor, output: Pair, Y: torch.Tensor, weights: torch.Tensor) -> float:
    """``sum_j w_j |W^(L+1) a_j + b^(L+1) - y_j|^2`` for a verified collapse pattern.

    After :func:`check_sectors`, every point of class ``j`` reaches the output as
    ``W^(L+1) p_j + b^(L+1)`` (composition identity, CE23 Prop 2.2), so the cost is a sum
    over the ``Q`` anchors with weights ``w_j`` (``1`` for CE23's ``L2_N``, ``N_j/2`` for
    CE24's ``1/2 |.|_F^2``). The returned module evaluated on the data reproduces it (tests).
    """
    W, b = output
    r = anchors @ W.T + b - Y
    return float((weights * r.pow(2).sum(1)).sum())


def assemble(hidden: Sequence[Pair], output: Pair, extra_identity: int = 0) -> tuple[ReLUNet, list[Pair]]:
    """The :class:`ReLUNet` with cumulative parameters ``hidden`` then ``output``, plus ``extra_identity``
    layers ``W_l = 1, b_l = 0`` inserted after the last cone layer (CE23 step 4, ``L > Q``).

    The extra layers are exactly the identity on the (non-negative) ReLU outputs before them,
    so their cumulative parameters repeat the last cone layer's. Returns ``(module, cumulative)``.
    """
    layers = layer_weights([*hidden, output])
    W_last = hidden[-1][0]
    eye = torch.eye(W_last.shape[0], dtype=W_last.dtype, device=W_last.device)
    ident = [(eye.clone(), torch.zeros_like(hidden[-1][1])) for _ in range(extra_identity)]
    module = from_layers([*layers[:-1], *ident, layers[-1]])
    cumulative = [*hidden, *([hidden[-1]] * extra_identity), output]
    return module, [(W.detach().clone(), b.detach().clone()) for W, b in cumulative]
