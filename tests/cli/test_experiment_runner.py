"""The experiment runner: claims, checkpoints and --resume continuing where a run stopped."""

from __future__ import annotations

import pytest

from collapselab.core.errors import ConfigError
from collapselab.core.store import read_claims, read_metrics
from collapselab.experiments import _base
from collapselab.experiments._base import Experiment, ExperimentConfig, run_experiment


class CountConfig(ExperimentConfig):
    steps: int = 6
    crash_at: int = -1


class Crash(RuntimeError):
    pass


def _count(ctx):
    start = ctx.checkpoint["step"] + 1 if ctx.checkpoint else 0
    for step in range(start, ctx.config.steps):
        if step == ctx.config.crash_at and ctx.checkpoint is None:
            raise Crash(f"killed at step {step}")
        ctx.log_metrics(step=step, value=step**2)
        if step % 2 == 1:
            ctx.save_checkpoint({"step": step})
    ctx.claim_close("sum", "sum of squares", "closed form n(n-1)(2n-1)/6", measured=sum(int(r["value"]) for r in read_metrics(ctx.folder.path)), expected=(ctx.config.steps - 1) * ctx.config.steps * (2 * ctx.config.steps - 1) / 6, tolerance=0,
                    reason="integers: exact", reference="closed form")


@pytest.fixture
def counting(monkeypatch):
    exp = Experiment("counting", "counts", "test", CountConfig, _count)
    monkeypatch.setattr(_base, "_REGISTRY", {"counting": exp})
    return exp


def test_resume_drops_rows_after_the_checkpoint_and_finishes(tmp_path, counting):
    with pytest.raises(Crash):
        run_experiment("counting", {"crash_at": 4}, out=tmp_path)
    (folder,) = (tmp_path / "counting").iterdir()
    assert [r["step"] for r in read_metrics(folder)] == ["0", "1", "2", "3"]
    # a crash after an unsaved row: simulate by appending a row the checkpoint does not cover
    from collapselab.core.store import RunFolder

    RunFolder.open(folder).log_metrics({"step": 4, "value": 16})
    result = run_experiment("counting", out=tmp_path, resume=folder)
    assert [int(r["step"]) for r in read_metrics(folder)] == list(range(6))
    assert result.passed and read_claims(folder)[0]["passed"]


def test_resume_refuses_overrides_and_other_experiments(tmp_path, counting):
    r = run_experiment("counting", out=tmp_path)
    with pytest.raises(ConfigError, match="drop --set"):
        run_experiment("counting", {"steps": 3}, out=tmp_path, resume=r.path)
    with pytest.raises(ConfigError, match="exists already"):
        from collapselab.core.store import RunFolder

        RunFolder.create(tmp_path, "counting", {}, run_id=r.path.name)


def test_claims_can_fail(tmp_path, counting):
    def wrong(ctx):
        ctx.claim_close("x", "1 == 2", "arithmetic", measured=1.0, expected=2.0, tolerance=0.5, reason="integers", reference="arithmetic")
        ctx.claim_at_most("y", "nan is not small", "-", measured=float("nan"), bound=1.0, reason="any finite bound", reference="NaN")

    _base._REGISTRY["wrong"] = Experiment("wrong", "fails", "test", CountConfig, wrong)
    r = run_experiment("wrong", out=tmp_path)
    assert not r.passed and [c.passed for c in r.claims] == [False, False]
