"""Commands ``list``, ``run``, ``reproduce`` and ``report``."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Annotated

import typer

from ..core.errors import CollapseLabError
from ..core.store import RunFolder
from ..experiments import experiments, get_experiment, parse_overrides, run_experiment
from ..report import RunSummary, build_report, collect_runs, format_claims_table, summarise

__all__ = ["list_experiments", "run", "reproduce", "report"]

log = logging.getLogger("collapselab.cli")

Out = Annotated[Path, typer.Option("--out", help="Root folder of the run folders.")]
Threads = Annotated[
    int | None,
    typer.Option("--threads", min=1, help="CPU threads for torch (default: 1 with --quick, whose problems are too small to gain from more; otherwise torch's default)."),
]


def _threads(threads: int | None, quick: bool) -> int | None:
    return 1 if threads is None and quick else threads


def list_experiments() -> None:
    """List the experiments and the claim each one checks."""
    for exp in experiments().values():
        typer.echo(f"{exp.name:28s} {exp.summary}")
        typer.echo(f"{'':28s} source: {exp.source}")


def _finish(runs: list[RunSummary], *, report_path: Path | None = None) -> None:
    """Print the claims table (and the report's path); exit 1 if a claim failed or a run stopped."""
    typer.echo(format_claims_table(runs))
    if report_path is not None:
        typer.echo(f"report: {report_path.resolve()}")
    failed = [r.experiment for r in runs if not r.passed]
    if failed:
        typer.echo(f"error: claims failed or runs stopped in: {', '.join(failed)}", err=True)
        raise typer.Exit(1)


def run(
    name: Annotated[str, typer.Argument(help="Experiment name (see `collapselab list`).")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a configuration key: key=value (repeatable).")] = None,
    out: Out = Path("runs"),
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    quick: Annotated[bool, typer.Option("--quick", help="Run the small variant (about a minute or less on CPU).")] = False,
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue this run folder from its last checkpoint.")] = None,
    threads: Threads = None,
) -> None:
    """Run one experiment into a new run folder and print the verdict of every claim."""
    result = run_experiment(name, parse_overrides(set_ or []), out=out, device=device, quick=quick, resume=resume, threads=_threads(threads, quick))
    typer.echo(f"run folder: {result.path}")
    _finish([summarise(result.path)])


def reproduce(
    quick: Annotated[bool, typer.Option("--quick", help="Run every experiment's quick variant.")] = False,
    only: Annotated[list[str] | None, typer.Option("--only", help="Run only these experiments (repeatable).")] = None,
    out: Out = Path("runs"),
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    threads: Threads = None,
) -> None:
    """Run all experiments (or --only some), then write one HTML report with every claim."""
    names = list(only) if only else list(experiments())
    for n in names:
        get_experiment(n)
    runs: list[RunSummary] = []
    for n in names:
        typer.echo(f"[{len(runs) + 1}/{len(names)}] {n}{' (quick)' if quick else ''}", err=True)
        try:
            result = run_experiment(n, out=out, device=device, quick=quick, threads=_threads(threads, quick))
            runs.append(summarise(result.path))
        except Exception as exc:  # one broken experiment must not lose the others' finished work
            log.debug("experiment %s failed", n, exc_info=True)
            message = f"{type(exc).__name__}: {exc}"
            typer.echo(f"error: {n} stopped: {message}", err=True)
            if not isinstance(exc, CollapseLabError):
                typer.echo(traceback.format_exc(), err=True)
            latest = sorted((Path(out) / n).glob("*/config.json"))
            if latest:
                runs.append(summarise(latest[-1].parent, error=message))
            else:
                runs.append(RunSummary(n, Path(out) / n, {}, [], message))
    _finish(runs, report_path=build_report(runs, Path(out) / "report.html"))


def report(
    folder: Annotated[Path, typer.Argument(help="Folder holding run folders (e.g. runs/).")] = Path("runs"),
    all_runs: Annotated[bool, typer.Option("--all", help="Include every run, not only the newest per experiment.")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Report file (default FOLDER/report.html).")] = None,
) -> None:
    """(Re)build the HTML report from existing run folders."""
    runs = collect_runs(folder, latest_only=not all_runs)
    path = build_report(runs, output or Path(folder) / "report.html")
    typer.echo(format_claims_table(runs))
    typer.echo(f"report: {path.resolve()}")  # rebuilding is not a verdict: exit 0 whatever the claims say
