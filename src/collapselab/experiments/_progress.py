"""The one progress-bar helper (tqdm on stderr; silent when stderr is not a terminal)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

__all__ = ["progress"]

T = TypeVar("T")


def progress(iterable: Iterable[T], *, desc: str = "", total: int | None = None, enabled: bool | None = None, **postfix: object) -> Iterator[T]:
    """Wrap ``iterable`` in a progress bar. ``enabled=None`` shows it only on a terminal.

    Returns the tqdm object (iterate it; call ``.set_postfix(loss=...)`` to show values).
    """
    bar = tqdm(iterable, desc=desc, total=total, disable=None if enabled is None else not enabled, leave=False, dynamic_ncols=True)
    if postfix:
        bar.set_postfix(**postfix)
    return bar
