"""The command class of every ``collapselab`` command: how its options show in ``--help``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from typer.core import TyperCommand

__all__ = ["Command", "flags_without_metavar"]


def flags_without_metavar(params: list[Any]) -> list[Any]:
    """Boolean flags show as flags in --help (``--test``), not with a ``<bool>`` value placeholder."""
    for p in params:
        if getattr(p, "is_flag", False) and p.metavar is None:
            p.metavar = ""
    return params


class Command(TyperCommand):
    """A command whose boolean flags (``--help`` included) show without a value placeholder.

    ``help_values``, when a subclass sets it, returns the values of ``{name}`` fields in the
    options' help: they are filled in when the command's parameters are first built (its
    ``--help`` or a run), so a registry that needs heavy imports costs nothing to
    ``collapselab --help`` or to other commands.
    """

    help_values: Callable[[], dict[str, str]] | None = None

    def get_params(self, ctx: Any) -> list[Any]:
        params = flags_without_metavar(super().get_params(ctx))
        if self.help_values is not None and not getattr(self, "_help_filled", False):
            values = type(self).help_values()  # type: ignore[misc]
            for p in params:
                if getattr(p, "help", None):
                    p.help = p.help.format(**values)
            self._help_filled = True
        return params
