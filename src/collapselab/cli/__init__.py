"""The ``collapselab`` command line (Typer). Commands stay thin: parse, call the library, print.

``collapselab --help`` lists them; each exits 1 with one ``error: ...`` line on bad input.
"""

from __future__ import annotations

import typer

from ._errors import cli_errors
from ._experiments import list_experiments, reproduce, report, run
from .construct import construct
from .metrics import metrics
from .train import train

__all__ = ["app", "main"]

app = typer.Typer(
    name="collapselab",
    help="Geometry of training deep classifiers: explicit minimizers, adapted flows, effective dynamics, neural collapse.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("list")(cli_errors(list_experiments))
app.command("run")(cli_errors(run))
app.command("reproduce")(cli_errors(reproduce))
app.command("report")(cli_errors(report))
app.command("metrics")(cli_errors(metrics))
app.command("construct")(cli_errors(construct))
app.command("train")(cli_errors(train))


def main() -> None:
    """Console-script entry point."""
    app()
