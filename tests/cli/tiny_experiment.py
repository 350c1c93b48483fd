"""A tiny registered experiment for the runner, sweep and fault tests (not a real experiment).

A random walk x_{k+1} = x_k / 2 + z_k with z_k ~ N(0, 1) from torch's generator: every step
logs a metrics row and saves a checkpoint with the generator's state, so a resumed run
continues the same walk. Its claims are fixtures whose verdicts the configuration decides: the
walk's mean square against the stationary value 4/3 (a tolerance any finite value meets; the
number feeds the sweep statistics), a "test" with p-value 1e-4 (1 + seed), a not-applicable
claim, and one that fails at ``fail_seed`` (for the sweep tests). ``crash_seed`` raises, ``blob`` grows the checkpoint
by ``blob`` float64 numbers per step (for the write-limit test).

Run as a script (``python tiny_experiment.py run tiny ...``) it registers itself and runs the
``collapselab`` command line, printing ``started`` when the run begins (the fault battery
waits for that line before it kills the process).
"""

from __future__ import annotations

import math
import sys

import torch

from collapselab.experiments import _base
from collapselab.experiments._base import Experiment, ExperimentConfig, RunContext


class TinyConfig(ExperimentConfig):
    steps: int = 40
    fail_seed: int = -1
    crash_seed: int = -1
    blob: int = 0
    figure: bool = False
    announce: bool = False


def tiny_run(ctx: RunContext) -> None:
    cfg = ctx.config
    if cfg.announce:
        print("started", flush=True)
    if cfg.seed == cfg.crash_seed:
        raise RuntimeError(f"crash at seed {cfg.seed}")
    state = ctx.checkpoint or {"step": 0, "x": torch.zeros((), dtype=torch.float64), "sq": 0.0}
    if ctx.checkpoint is not None:
        torch.set_rng_state(state["rng"])
    x, sq = state["x"], state["sq"]
    for step in range(state["step"], cfg.steps):
        x = x / 2 + torch.randn((), dtype=torch.float64)
        sq += float(x) ** 2
        ctx.log_metrics(step=step, x=float(x), mean_square=sq / (step + 1))
        if step % 10 == 9:
            ctx.claim_at_least(f"progress-{step // 10}", "the walk moved", "fixture", measured=abs(float(x)), bound=0.0, reason="|x| >= 0 always", reference="zero")
        ctx.save_checkpoint({"step": step + 1, "x": x, "sq": sq, "rng": torch.get_rng_state(), "blob": torch.zeros(cfg.blob * (step + 1), dtype=torch.float64)})
    ctx.claim_close("mean-square", "E x^2 = 4/3", "AR(1) stationary variance", measured=sq / cfg.steps, expected=4 / 3, tolerance=1e6,
                    reason="fixture: any finite value passes", reference="closed form 1/(1 - 1/4)")
    ctx.claim_test("sign", "a sign test", "fixture", test="fixture test", statistic=float(cfg.seed), p_value=1e-4 * (1 + cfg.seed), level=0.5,
                   reason="fixture", reference="fixture")
    ctx.claim_not_applicable("never", "does not apply", "fixture", why="no classifier in this fixture", reference="fixture")
    ctx.claim_true("seed-ok", "fails at fail_seed", "fixture", passed=cfg.seed != cfg.fail_seed, reason="fixture", reference="fixture")
    if cfg.figure:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot([0, 1], [0, math.sqrt(2)])
        ctx.save_figure(fig, "line")


EXPERIMENT = Experiment("tiny", "a fixture", "tests", TinyConfig, tiny_run)


def register(monkeypatch=None) -> Experiment:
    """Make ``tiny`` the only registered experiment (through ``monkeypatch`` in tests)."""
    if monkeypatch is not None:
        monkeypatch.setattr(_base, "_REGISTRY", {"tiny": EXPERIMENT})
    else:
        _base._REGISTRY = {"tiny": EXPERIMENT}
    return EXPERIMENT


if __name__ == "__main__":
    import tiny_experiment  # the importable module (not __main__), so worker processes can unpickle it

    tiny_experiment.register()
    from collapselab.cli import app

    sys.exit(app(sys.argv[1:]))
