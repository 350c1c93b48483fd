"""The one label and array contract of user data: ``metrics``, ``construct``, ``train``, ``load_dataset``.

Arrays (an ``.npz`` archive, a ``.pt`` dict, or arrays passed in):

* inputs ``X`` ``(N, M)``, one row per sample; ``features`` is accepted for ``X`` and ``X`` for
  ``features`` (:data:`ARRAY_ALIASES`), so one file serves every command;
* ``labels`` ``(N,)``; optional reference outputs ``Y`` ``(Q, P)`` (construct, train, loaders) or
  a classifier ``weights`` ``(C, d)`` and ``bias`` ``(C,)`` (metrics).

Inputs are real, finite numbers (converted to float64; ``train --dtype`` picks float32 or
float64 for training). Labels are integers (an integer array, or floats with integral values;
booleans are refused) in ``[0, C)`` with every class present, where ``C`` is the number of rows
of ``Y`` or ``weights`` when given and ``max(labels) + 1`` otherwise. Other label values (``-1``,
``{3, 7, 9}``, a missing class) are refused, never mapped silently: :func:`check_class_labels`
names the values found and the remapping ``labels = np.unique(labels, return_inverse=True)[1]``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..errors import ShapeError

__all__ = ["ARRAY_ALIASES", "resolve_aliases"]

ARRAY_ALIASES: Mapping[str, tuple[str, ...]] = {"X": ("features",), "features": ("X",)}
"""Other names accepted for an array, tried in order when the array itself is absent."""



def resolve_aliases(keys: Sequence[str], wanted: Sequence[str], where: str, source: str) -> dict[str, str]:
    """``{wanted name: name present in keys}`` for each wanted name that is present itself or
    through :data:`ARRAY_ALIASES`; a file holding both a name and its alias is refused (which is meant?)."""
    found: dict[str, str] = {}
    for name in wanted:
        present = [k for k in (name, *ARRAY_ALIASES.get(name, ())) if k in keys]
        if len(present) > 1:
            raise ShapeError(f"{where}: {source} holds both {present[0]!r} and {present[1]!r}; keep one of them (they name the same array)")
        if present:
            found[name] = present[0]
    return found



