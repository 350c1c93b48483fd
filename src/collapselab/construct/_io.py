"""Saving and loading a constructed network so that ``torch.load(path, weights_only=True)`` reads it.

The file is a plain dict (tensors, ints, floats, strings, lists), never a pickled module:

* ``format``: ``"collapselab.ReLUNet"``; ``version``: 1;
* ``widths``: ``[M, d_1, ..., d_L, P]`` of the :class:`~collapselab.core.network.ReLUNet`;
* ``state_dict``: its parameters (``layers.{l}.weight`` ``(d_{l+1}, d_l)``, ``layers.{l}.bias``);
* ``kind``, ``cost``, ``anchors`` ``(Q, M)`` and ``metric`` ``(P, M)`` of the construction
  (the decision rule of :meth:`ConstructedNetwork.classify`).

``load_network(path)`` rebuilds the module; ``torch.load(path, weights_only=True)`` gives the dict.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..core.errors import DataFileError, MissingFileError
from ..core.network import ReLUNet
from ..core.store import atomic_write_bytes
from ._result import ConstructedNetwork

__all__ = ["FORMAT", "load_network", "save_network"]

FORMAT = "collapselab.ReLUNet"
VERSION = 1


def save_network(result: ConstructedNetwork | ReLUNet, path: str | Path) -> Path:
    """Write ``result`` (a construction or a bare :class:`ReLUNet`) to ``path`` atomically in the
    format of the module docstring; return the path. The folder must exist."""
    p = Path(path)
    if not p.parent.is_dir():
        raise MissingFileError(f"save_network: folder {p.parent} does not exist; create it first")
    module = result.module if isinstance(result, ConstructedNetwork) else result
    doc: dict[str, Any] = {"format": FORMAT, "version": VERSION, "widths": list(module.widths), "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()}}
    if isinstance(result, ConstructedNetwork):
        doc.update(kind=result.kind, cost=float(result.cost), anchors=result.anchors.detach().cpu(), metric=result.metric.detach().cpu())
    buf = io.BytesIO()
    torch.save(doc, buf)
    atomic_write_bytes(p, buf.getvalue())  # OSError (full disk, permissions) reaches the caller unchanged
    return p


def load_network(path: str | Path, *, device: torch.device | str | None = None) -> ReLUNet:
    """The :class:`ReLUNet` saved by :func:`save_network` (or ``collapselab construct --out``),
    read with ``torch.load(weights_only=True)``, in the saved dtype, on ``device`` (default CPU)."""
    where = "load_network"
    p = Path(path)
    if not p.is_file():
        raise MissingFileError(f"{where}: {p} {'is a folder, not a file' if p.is_dir() else 'does not exist'}; check the path")
    try:
        doc = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or damaged files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise DataFileError(f"{where}: {p} is not a network saved by collapselab construct --out ({type(exc).__name__}: {first}); build it again") from None
    if not isinstance(doc, Mapping) or doc.get("format") != FORMAT:
        raise DataFileError(f"{where}: {p} is not a network saved by collapselab construct --out (no format {FORMAT!r}); build it again")
    if doc.get("version") != VERSION:
        raise DataFileError(f"{where}: {p} has format version {doc.get('version')!r}; this collapselab reads version {VERSION}")
    state = doc["state_dict"]
    net = ReLUNet(doc["widths"], dtype=next(iter(state.values())).dtype)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise DataFileError(f"{where}: {p} holds parameters that do not fit widths {doc['widths']} ({str(exc).splitlines()[0]}); build it again") from None
    return net if device is None else net.to(device)
