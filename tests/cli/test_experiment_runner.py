"""The experiment runner: claims, checkpoints and --resume continuing where a run stopped."""

from __future__ import annotations

import pytest
import torch

from collapselab.core.errors import ConfigError
from collapselab.core.store import read_claims, read_metrics
from collapselab.experiments import _base
from collapselab.experiments import run_experiment
from collapselab.experiments._base import Experiment, ExperimentConfig


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


def _same_files(a, b):
    for name in ("metrics.csv", "claims.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


def test_status_is_recorded(tmp_path, counting):
    import json

    ok = run_experiment("counting", out=tmp_path)
    assert json.loads((ok.path / "status.json").read_text())["status"] == "finished"
    with pytest.raises(Crash):
        run_experiment("counting", {"crash_at": 2}, out=tmp_path, run_id="crashed")
    doc = json.loads((tmp_path / "counting" / "crashed" / "status.json").read_text())
    assert doc["status"] == "failed" and doc["error"] == "Crash: killed at step 2"


def test_resume_after_a_row_cut_mid_write_continues_exactly(tmp_path, counting):
    reference = run_experiment("counting", out=tmp_path / "ref").path
    with pytest.raises(Crash):
        run_experiment("counting", {"crash_at": 5}, out=tmp_path, run_id="r")  # checkpoint after row 4 of 6, then row 5
    r = tmp_path / "counting" / "r"
    with open(r / "metrics.csv", "a", newline="") as fh:
        fh.write("5,2")  # killed while writing row 6
    log = (r / "log.txt").read_text()
    run_experiment("counting", out=tmp_path, resume=r)
    assert (r / "metrics.csv").read_bytes() == (reference / "metrics.csv").read_bytes()
    assert "from its checkpoint at metrics row 4; dropped 1 metrics row(s) logged after it" in (r / "log.txt").read_text()[len(log):]


def test_resume_without_a_checkpoint_starts_again_and_says_so(tmp_path, tiny, capsys):
    reference = run_experiment("tiny", {"steps": 5}, out=tmp_path / "ref").path
    r = run_experiment("tiny", {"steps": 5}, out=tmp_path).path
    (r / "checkpoint.pt").unlink()
    capsys.readouterr()
    run_experiment("tiny", out=tmp_path, resume=r)
    assert "warning: " in capsys.readouterr().err and "no checkpoint, starting again" in (r / "log.txt").read_text()
    _same_files(r, reference)


def test_resume_keeps_device_and_threads_and_refuses_damage(tmp_path, tiny):
    import json

    from typer.testing import CliRunner

    from collapselab.cli import app

    r = run_experiment("tiny", {"steps": 3}, out=tmp_path, threads=1).path
    with pytest.raises(ConfigError, match="continues a full run; drop --quick"):
        run_experiment("tiny", out=tmp_path, resume=r, quick=True)
    with pytest.raises(ConfigError, match="--threads 2 differs from the recorded 1"):
        run_experiment("tiny", out=tmp_path, resume=r, threads=2)
    doc = json.loads((r / "config.json").read_text())
    (r / "config.json").write_text(json.dumps({**doc, "device": "cuda:0"}))
    with pytest.raises(ConfigError, match="--device cpu differs from the recorded cuda:0; drop --device"):
        run_experiment("tiny", out=tmp_path, resume=r, device="cpu")
    (r / "config.json").write_text(json.dumps(doc))
    cli = CliRunner()
    cut = (r / "metrics.csv").read_bytes()
    (r / "metrics.csv").write_bytes(cut[:-5])  # rows the checkpoint covers are gone
    res = cli.invoke(app, ["run", "tiny", "--resume", str(r)])
    assert res.exit_code == 1 and "rows were lost" in res.output and "Traceback" not in res.output
    (r / "config.json").write_text("{not json")
    res = cli.invoke(app, ["run", "tiny", "--resume", str(r)])
    assert res.exit_code == 1 and "config.json is not valid JSON" in res.output
    assert json.loads((r / "status.json").read_text())["status"] == "finished"  # a refused resume changes nothing


def test_seed_and_device_are_validated():
    from collapselab.core.errors import ParameterError

    with pytest.raises(ConfigError, match="invalid value for 'seed'"):
        _base.resolve_config(Experiment("x", "", "", CountConfig, _count), {"seed": -1}, False)
    for bad in ("tpu", "cuda:x", "meta"):
        with pytest.raises(ParameterError, match="--device"):
            _base.resolve_device(bad)
    assert _base.resolve_device(None) == torch.device("cpu")


def test_a_check_across_fields_names_the_configuration(monkeypatch):
    from pydantic import model_validator

    class Pair(_base.ExperimentConfig):
        lo: float = 0.0
        hi: float = 1.0

        @model_validator(mode="after")
        def ordered(self):
            if self.lo >= self.hi:
                raise ValueError("lo must be below hi")
            return self

    exp = Experiment("pair", "pairs", "test", Pair, lambda ctx: None)
    with pytest.raises(ConfigError, match=r"pair: invalid configuration: Value error, lo must be below hi"):
        _base.resolve_config(exp, {"lo": 2.0}, quick=False)
