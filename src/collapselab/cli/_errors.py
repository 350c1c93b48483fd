"""The CLI's one error boundary: a CollapseLabError becomes ``error: <message>`` and exit 1."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from ..core.errors import CollapseLabError

__all__ = ["cli_errors"]

F = TypeVar("F", bound=Callable[..., Any])


def cli_errors(func: F) -> F:
    """Wrap a command so our exceptions print one line on stderr and exit with status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except CollapseLabError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]
