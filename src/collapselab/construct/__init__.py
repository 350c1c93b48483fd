"""Explicit zero-loss minimizers of ReLU networks, with an explanation of every layer.

* :func:`construct_clustered`: CE23 Thm 2.3 (clustered data, ``M = Q``, ``L >= Q``) and the
  local-minimum families of Thms 2.4/2.5 (docs/theory/minimizers.md).
* :func:`construct_sequential`: CE24 Thm 5.2 (sequentially linearly separable data, ``M >= Q``).
* :func:`construct_clustered_wide`: CE24 Prop 4.1 at constant width ``M`` (erratum E6).
* :func:`construct_shallow`: one hidden layer with the ``delta_P`` bound (docs/theory/minimizers.md).
* :func:`barycentric_lsq`, :func:`delta_p`: CE23's least-squares identity (2.4) and ``delta_P``.

Each returns a :class:`ConstructedNetwork` (a ``torch.nn.Module`` plus the explanation);
:func:`save_network` writes it as a plain dict that ``torch.load(path, weights_only=True)``
reads, and :func:`load_network` rebuilds the module from such a file.
:data:`CONSTRUCTIONS` maps the CLI kinds to them; :func:`get_construction` resolves a kind by name
and :func:`construct` runs it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..core.errors import UnknownNameError
from ._io import load_network, save_network
from ._result import ConstructedNetwork, LayerExplanation, ce23_cost, ce24_cost
from .clustered import ClusterGeometry, admissible_mu, cluster_geometry, construct_clustered
from .sequential import SequentialStep, construct_clustered_wide, construct_sequential, max_margin_hyperplane
from .shallow import BarycentricLSQ, barycentric_lsq, barycentric_noise, construct_shallow, delta_p

__all__ = [
    "CONSTRUCTIONS",
    "BarycentricLSQ",
    "ClusterGeometry",
    "ConstructedNetwork",
    "LayerExplanation",
    "SequentialStep",
    "admissible_mu",
    "barycentric_lsq",
    "barycentric_noise",
    "ce23_cost",
    "ce24_cost",
    "cluster_geometry",
    "construct",
    "construct_clustered",
    "construct_clustered_wide",
    "construct_sequential",
    "construct_shallow",
    "delta_p",
    "get_construction",
    "load_network",
    "max_margin_hyperplane",
    "save_network",
]

CONSTRUCTIONS: dict[str, Callable[..., ConstructedNetwork]] = {
    "clustered": construct_clustered,
    "clustered-wide": construct_clustered_wide,
    "sequential": construct_sequential,
    "shallow": construct_shallow,
}
"""The constructions by their CLI names."""


def get_construction(kind: str) -> Callable[..., ConstructedNetwork]:
    """The construction called ``kind`` (a key of :data:`CONSTRUCTIONS`); UnknownNameError listing the kinds otherwise."""
    if kind not in CONSTRUCTIONS:
        raise UnknownNameError(f"construct: unknown kind {kind!r}; known kinds: {', '.join(CONSTRUCTIONS)}")
    return CONSTRUCTIONS[kind]


def construct(kind: str, X: Any, labels: Any, Y: Any | None = None, **options: Any) -> ConstructedNetwork:
    """Run the construction called ``kind`` (a key of :data:`CONSTRUCTIONS`) on ``X``, ``labels``, ``Y``."""
    return get_construction(kind)(X, labels, Y, **options)
