"""Seed sweeps: one experiment at many seeds, every run folder kept, one summary beside them.

::

    runs/<experiment>/sweep-<id>/
      seed-0/ seed-1/ ...   ordinary run folders (``--resume`` works on each)
      sweep.json            {"experiment", "seeds", "quick", "overrides", "status",
                             "runs": [{"seed", "path", "verdict", "error"}],
                             "claims": [per-claim statistics, see :func:`claim_statistics`]}

``--seeds`` takes integers >= 0 as a list and ranges: ``0-9``, ``0,3,7``, ``0-4,10``.
``--jobs N`` runs the seeds in N worker processes (spawned, so CUDA and OpenMP start
clean), each with one torch thread; a seed that fails (an exception or a dead worker) is
recorded as failed and never stops or loses the others. The summary is rebuilt from the
seed folders by the report, so a sweep that was killed still shows what it finished.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core.claims import jsonable
from ..core.errors import ConfigError, ParameterError
from ..core.store import atomic_write_text, new_run_id, storage_errors
from ..core.verdicts import SWEEP_FILE, SweepSummary, summarise_sweep
from ._base import Experiment, get_experiment, resolve_config, resolve_device
from ._runner import run_experiment

__all__ = ["SeedRun", "parse_seeds", "run_sweep", "seed_folder", "worker_pool"]

MAX_SEEDS = 10_000


def parse_seeds(text: str) -> list[int]:
    """``"0-4,10"`` -> ``[0, 1, 2, 3, 4, 10]``: integers >= 0, ranges inclusive, no repeats."""
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        try:
            first, last = (int(lo), int(hi)) if sep else (int(part), int(part))
        except ValueError:
            raise ConfigError(f"--seeds {text!r}: {part!r} is not a seed or a range of seeds; write integers >= 0 such as 0-9, 0,3,7 or 0-4,10") from None
        if first > last:
            raise ConfigError(f"--seeds {text!r}: the range {part!r} runs backwards; write {last}-{first}")
        if len(seeds) + last - first + 1 > MAX_SEEDS:
            raise ConfigError(f"--seeds {text!r} asks for more than {MAX_SEEDS} runs; split the sweep")
        seeds.extend(range(first, last + 1))
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ConfigError(f"--seeds {text!r} names seed {repeated[0]} twice; list every seed once")
    return seeds


def seed_folder(sweep_id: str, seed: int) -> str:
    """The run id of one seed's folder inside a sweep (below ``out/NAME``)."""
    return f"{sweep_id}/seed-{seed}"


@dataclass(frozen=True)
class SeedRun:
    """One seed of a sweep: its run folder and the error that stopped it (None if it finished)."""

    seed: int
    path: Path
    error: str | None


def _one_seed(exp: Experiment, overrides: dict[str, Any], seed: int, out: str, device: str | None, quick: bool, threads: int | None, run_id: str) -> SeedRun:
    """Run one seed; never raises (the sweep records the error and goes on)."""
    path = Path(out) / exp.name / run_id
    try:
        run_experiment(exp, {**overrides, "seed": seed}, out=out, device=device, quick=quick, threads=threads, run_id=run_id, show_progress=False)
        return SeedRun(seed, path, None)
    except Exception as exc:  # one seed's failure must not lose the others
        return SeedRun(seed, path, f"{type(exc).__name__}: {exc}")


def _worker_init() -> None:
    torch.set_num_threads(1)


def worker_pool(jobs: int) -> cf.ProcessPoolExecutor:
    """``jobs`` spawned worker processes (CUDA and OpenMP start clean) of one torch thread each."""
    return cf.ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init)


def run_sweep(
    name: str | Experiment,
    overrides: Mapping[str, Any] | None,
    seeds: Sequence[int],
    *,
    out: Path | str = "runs",
    device: str | None = None,
    quick: bool = False,
    threads: int | None = None,
    jobs: int = 1,
    on_done: Any = None,
) -> SweepSummary:
    """Run ``name`` at every seed into ``out/NAME/sweep-<id>/seed-<k>`` and write sweep.json
    (the per-claim statistics of :func:`collapselab.core.verdicts.summarise_sweep`).

    ``jobs > 1`` runs the seeds in that many single-threaded worker processes (``threads``
    must then be None or 1). ``on_done(seed_run)`` is called as each seed finishes.
    Returns the sweep's summary (its folder, every seed's run, the per-claim statistics).
    """
    exp = name if isinstance(name, Experiment) else get_experiment(name)
    overrides = dict(overrides or {})
    if "seed" in overrides:
        raise ConfigError("--seeds and --set seed= both choose the seed; give one of them")
    if not seeds:
        raise ConfigError("--seeds names no seed; write e.g. 0-9")
    if jobs < 1:
        raise ParameterError(f"--jobs must be >= 1, got {jobs}")
    if jobs > 1 and threads not in (None, 1):
        raise ConfigError(f"--jobs {jobs} runs every seed in its own single-threaded process; drop --threads {threads} or use --jobs 1")
    resolve_device(device)
    resolve_config(exp, {**overrides, "seed": seeds[0]}, quick)  # bad --set fails before any folder exists
    sweep_id = f"sweep-{new_run_id()}"
    root = Path(out) / exp.name / sweep_id
    header = {"experiment": exp.name, "seeds": list(seeds), "quick": quick, "overrides": overrides, "jobs": jobs}
    with storage_errors(root, "create the sweep folder"):
        root.mkdir(parents=True)
    atomic_write_text(root / SWEEP_FILE, _dump({**header, "status": "running"}))
    args = [(exp, overrides, s, str(out), device, quick, 1 if jobs > 1 else threads, seed_folder(sweep_id, s)) for s in seeds]
    done: dict[int, SeedRun] = {}

    def record(run: SeedRun) -> None:
        done[run.seed] = run
        if on_done is not None:
            on_done(run)

    if jobs == 1:
        for a in args:
            record(_one_seed(*a))
    else:
        with worker_pool(min(jobs, len(seeds))) as pool:
            futures = {pool.submit(_one_seed, *a): a for a in args}
            for fut in cf.as_completed(futures):
                a = futures[fut]
                try:
                    record(fut.result())
                except Exception as exc:  # the worker process died (killed, out of memory): this seed failed
                    record(SeedRun(a[2], Path(out) / exp.name / a[-1], f"worker process ended abruptly ({type(exc).__name__}: {exc})"))
    runs = [done[s] for s in seeds]
    summary = summarise_sweep(root, errors={r.seed: r.error for r in runs if r.error})
    atomic_write_text(root / SWEEP_FILE, _dump({**header, "status": "finished", **summary.to_json()}))
    return summary


def _dump(doc: dict[str, Any]) -> str:
    return json.dumps(jsonable(doc), indent=2) + "\n"
