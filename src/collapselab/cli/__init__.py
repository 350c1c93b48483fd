"""The ``collapselab`` command line (Typer). Commands stay thin: parse, call the library, print.

``collapselab --help`` lists them. Every failure ends in one ``error: ...`` line on stderr and a
documented exit code (:mod:`._errors`: 1 bad input, data, files or failed claims; 2 usage;
70 internal error; 130 interrupted); ``collapselab --debug COMMAND ...`` (or
``COLLAPSELAB_DEBUG=1``) adds the traceback.

Start-up does not import torch: the command modules import torch, scipy and the
experiments inside the commands that need them, and ``list`` reads the experiments' catalogue
(:mod:`collapselab.experiments._catalogue`) without importing them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from .. import __version__
from ._command import Command, flags_without_metavar
from ._errors import cli_errors, click_exceptions, handle, set_debug, usage_error
from ._experiments import list_experiments, reproduce, report, run
from .construct import construct
from .metrics import metrics
from .train import TrainCommand, train

__all__ = ["app", "main"]


class _Boundary(TyperGroup):
    """The app's command group: usage errors, interrupts and anything that escapes a command end
    in one ``error:`` line (:mod:`._errors`), for the console script and Typer's CliRunner alike."""

    def get_params(self, ctx: Any) -> list[Any]:
        return flags_without_metavar(super().get_params(ctx))

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        set_debug(False)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            code = 0 if code is None else int(code)
        except click_exceptions.ClickException as exc:
            code = usage_error(exc)
        except typer.Abort:
            code = handle(KeyboardInterrupt())
        except KeyboardInterrupt as exc:
            code = handle(exc)
        except Exception as exc:  # noqa: BLE001 (the boundary: a failure outside a command, e.g. while parsing)
            code = handle(exc)
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    name="collapselab",
    help="Geometry of training deep classifiers: explicit minimizers, adapted flows, effective dynamics, neural collapse.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_Boundary,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"collapselab {__version__}")
        raise typer.Exit(0)


@app.callback()
def _options(
    debug: Annotated[bool, typer.Option("--debug", help="Print the traceback of an error (also: COLLAPSELAB_DEBUG=1).")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Geometry of training deep classifiers: explicit minimizers, adapted flows, effective dynamics, neural collapse.

    Exit codes: 0 success; 1 bad input, data or files, or a failed claim; 2 usage error;
    70 internal error (a bug); 130 interrupted.
    """
    set_debug(debug)


app.command("list", cls=Command)(cli_errors(list_experiments))
app.command("run", cls=Command)(cli_errors(run))
app.command("reproduce", cls=Command)(cli_errors(reproduce))
app.command("report", cls=Command)(cli_errors(report))
app.command("metrics", cls=Command)(cli_errors(metrics))
app.command("construct", cls=Command)(cli_errors(construct))
app.command("train", cls=TrainCommand)(cli_errors(train))


def main() -> None:
    """Console-script entry point."""
    app()
