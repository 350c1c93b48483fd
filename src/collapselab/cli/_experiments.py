"""Commands ``list``, ``run``, ``reproduce`` and ``report``.

``run`` and ``reproduce`` exit 1 when a claim failed, a run stopped or a seed of a sweep did
not pass; ``report`` exits 1 when any run it shows failed, stopped or is incomplete (so a
script can trust its exit status), after writing the report.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..core.errors import CollapseLabError, ConfigError

if TYPE_CHECKING:
    from ..experiments._sweep import SeedRun
    from ..report import Collection, Entry, RunSummary

# The experiments, the run store and the report import torch (seconds): each command imports
# them when it runs, so `collapselab --help` and `list` start without them.

__all__ = ["list_experiments", "run", "reproduce", "report"]

log = logging.getLogger("collapselab.cli")

Out = Annotated[Path, typer.Option("--out", help="Root folder of the run folders.")]
Device = Annotated[str | None, typer.Option("--device", help="cpu (default), cuda or cuda:N; a resumed run keeps its recorded device.")]
Threads = Annotated[
    int | None,
    typer.Option("--threads", min=1, help="CPU threads for torch (default: 1 with --quick, whose problems are too small to gain from more; otherwise torch's default; a resumed run keeps its recorded count)."),
]
Seeds = Annotated[str | None, typer.Option("--seeds", help="Run at each of these seeds (integers >= 0: 0-9, 0,3,7 or 0-4,10) into one sweep folder with a per-claim summary.")]
Jobs = Annotated[int, typer.Option("--jobs", min=1, help="With --seeds: run the seeds in this many processes, one torch thread each.")]
ReproduceJobs = Annotated[int, typer.Option("--jobs", min=1, help="Run the experiments (with --seeds: each experiment's seeds) in this many processes, one torch thread each.")]


def _threads(threads: int | None, quick: bool) -> int | None:
    return 1 if threads is None and quick else threads


def list_experiments() -> None:
    """List the experiments and the claim each one checks."""
    from ..experiments._catalogue import catalogue  # names and summaries without importing torch

    for exp in catalogue().values():
        typer.echo(f"{exp.name:28s} {exp.summary}")
        typer.echo(f"{'':28s} source: {exp.source}")


def _finish(collection: Collection, *, report_path: Path | None = None) -> None:
    """Print the table (and the report's path); exit 1 if anything failed, stopped or is incomplete."""
    from ..report import format_text

    typer.echo(format_text(collection))
    if report_path is not None:
        typer.echo(f"report: {report_path.resolve()}")
    if collection.problems:
        typer.echo(f"error: {len(collection.problems)} not passed: " + "; ".join(collection.problems), err=True)
        raise typer.Exit(1)


def _seed_done(total: int) -> Callable[[SeedRun], None]:
    count = [0]

    def done(run: SeedRun) -> None:
        count[0] += 1
        state = f"stopped: {run.error}" if run.error else "done"
        typer.echo(f"[{count[0]}/{total}] seed {run.seed} {state} ({run.path})", err=True)

    return done


def _sweep(name: str, overrides: dict[str, object], seeds: str, *, out: Path, device: str | None, quick: bool, threads: int | None, jobs: int) -> Entry:
    from ..experiments._sweep import parse_seeds, run_sweep

    chosen = parse_seeds(seeds)
    return run_sweep(name, overrides, chosen, out=out, device=device, quick=quick, threads=threads, jobs=jobs, on_done=_seed_done(len(chosen)))


def run(
    name: Annotated[str, typer.Argument(help="Experiment name (see `collapselab list`).")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a configuration key: key=value (repeatable).")] = None,
    out: Out = Path("runs"),
    device: Device = None,
    quick: Annotated[bool, typer.Option("--quick", help="Run the small variant (about a minute or less on CPU).")] = False,
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue this run folder from its last checkpoint.")] = None,
    threads: Threads = None,
    seeds: Seeds = None,
    jobs: Jobs = 1,
) -> None:
    """Run one experiment (or a seed sweep) into new run folders and print the verdict of every claim."""
    from ..experiments import parse_overrides, run_experiment
    from ..report import Collection, summarise

    overrides = parse_overrides(set_ or [])
    if seeds is not None:
        if resume is not None:
            raise ConfigError("--seeds starts a new sweep; resume one seed with --resume NAME/sweep-<id>/seed-<k> and no --seeds")
        _finish(Collection([_sweep(name, overrides, seeds, out=out, device=device, quick=quick, threads=_threads(threads, quick), jobs=jobs)]))
        return
    if jobs != 1:
        raise ConfigError("--jobs runs the seeds of a sweep in parallel; give --seeds too")
    result = run_experiment(name, overrides, out=out, device=device, quick=quick, resume=resume, threads=threads if resume else _threads(threads, quick))
    typer.echo(f"run folder: {result.path}")
    _finish(Collection([summarise(result.path)]))


def _attempt(name: str, *, out: Path, device: str | None, quick: bool, threads: int | None) -> RunSummary:
    """Run one experiment for ``reproduce``; an error is recorded, never raised (the others go on)."""
    from ..core.store import CONFIG, new_run_id
    from ..experiments import run_experiment
    from ..report import RunSummary, summarise

    run_id = new_run_id()
    try:
        return summarise(run_experiment(name, out=out, device=device, quick=quick, threads=threads, run_id=run_id).path)
    except Exception as exc:  # one broken experiment must not lose the others' finished work
        path = Path(out) / name / run_id
        message = f"{type(exc).__name__}: {exc}"
        where = f" (traceback in {path / 'log.txt'})" if not isinstance(exc, CollapseLabError) and (path / "log.txt").exists() else ""
        typer.echo(f"error: {name} stopped: {message}{where}", err=True)
        return summarise(path, error=message) if (path / CONFIG).is_file() else RunSummary(name, path, {}, [], "failed", message)


def _attempt_all(names: list[str], jobs: int, *, out: Path, device: str | None, quick: bool) -> list[Entry]:
    """:func:`_attempt` for every experiment in ``jobs`` single-threaded processes; results in ``names`` order.

    A worker that dies (killed, out of memory) is recorded as that experiment's error; the others go on.
    """
    from ..experiments._sweep import worker_pool
    from ..report import RunSummary

    done: dict[str, Entry] = {}
    with worker_pool(min(jobs, len(names))) as pool:
        futures = {pool.submit(_attempt, n, out=out, device=device, quick=quick, threads=1): n for n in names}
        for fut in cf.as_completed(futures):
            n = futures[fut]
            try:
                done[n] = fut.result()
            except Exception as exc:  # the worker process itself died
                message = f"worker process ended abruptly ({type(exc).__name__}: {exc})"
                typer.echo(f"error: {n} stopped: {message}", err=True)
                done[n] = RunSummary(n, Path(out) / n, {}, [], "failed", message)
            typer.echo(f"[{len(done)}/{len(names)}] {n}{' (quick)' if quick else ''} done", err=True)
    return [done[n] for n in names]


def reproduce(
    quick: Annotated[bool, typer.Option("--quick", help="Run every experiment's quick variant.")] = False,
    only: Annotated[list[str] | None, typer.Option("--only", help="Run only these experiments (repeatable).")] = None,
    out: Out = Path("runs"),
    device: Device = None,
    threads: Threads = None,
    seeds: Seeds = None,
    jobs: ReproduceJobs = 1,
) -> None:
    """Run all experiments (or --only some), at one seed or a sweep each, then write one HTML report."""
    from ..experiments import experiments, get_experiment
    from ..experiments._sweep import parse_seeds
    from ..report import Collection, build_report

    names = list(only) if only else list(experiments())
    for n in names:
        get_experiment(n)
    if seeds is not None:
        parse_seeds(seeds)
    elif jobs > 1:
        if threads not in (None, 1):
            raise ConfigError(f"--jobs {jobs} runs every experiment in its own single-threaded process; drop --threads {threads} or use --jobs 1")
        collection = Collection(_attempt_all(names, jobs, out=out, device=device, quick=quick))
        _finish(collection, report_path=build_report(collection, Path(out) / "report.html"))
        return
    entries: list[Entry] = []
    for i, n in enumerate(names):
        typer.echo(f"[{i + 1}/{len(names)}] {n}{' (quick)' if quick else ''}", err=True)
        if seeds is None:
            entries.append(_attempt(n, out=out, device=device, quick=quick, threads=_threads(threads, quick)))
        else:
            entries.append(_sweep(n, {}, seeds, out=out, device=device, quick=quick, threads=_threads(threads, quick), jobs=jobs))
    collection = Collection(entries)
    _finish(collection, report_path=build_report(collection, Path(out) / "report.html"))


def report(
    folder: Annotated[Path, typer.Argument(help="Folder holding run folders (e.g. runs/).")] = Path("runs"),
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Report file (default FOLDER/report.html).")] = None,
) -> None:
    """(Re)build the HTML report from every run folder below FOLDER; exit 1 if any run failed or is incomplete."""
    from ..report import build_report, collect_runs

    collection = collect_runs(folder)
    _finish(collection, report_path=build_report(collection, output or Path(folder) / "report.html"))
