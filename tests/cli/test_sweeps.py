"""Seed sweeps (``--seeds``, ``--jobs``) and the report's verdicts: nothing hidden, nothing counted twice."""

from __future__ import annotations

import json
import shutil
import statistics

import pytest
from typer.testing import CliRunner

from collapselab.cli import app
from collapselab.core.errors import ConfigError
from collapselab.core.store import RunFolder, read_claims
from collapselab.core.verdicts import claim_statistics, summarise
from collapselab.experiments._sweep import parse_seeds, run_sweep
from collapselab.report import collect_runs, format_text

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_parse_seeds():
    assert parse_seeds("0-4,10") == [0, 1, 2, 3, 4, 10]
    assert parse_seeds("0,3,7") == [0, 3, 7] and parse_seeds(" 5 ") == [5]
    for bad, message in [("4-2", "runs backwards"), ("-1", "not a seed"), ("a", "not a seed"), ("1,1", "twice"), ("0-3,2", "twice"), ("", "not a seed"), ("0-99999", "more than")]:
        with pytest.raises(ConfigError, match=message):
            parse_seeds(bad)


def test_claim_statistics_counts_and_quantiles():
    def c(cid, passed, measured, comparator="close"):
        return {"id": cid, "claim": "", "comparator": comparator, "passed": passed, "measured": measured}

    runs = [
        [c("a", True, 1.0), c("t", True, {"p_value": 1e-4, "statistic": 3}, "test"), c("n", None, None, "not_applicable")],
        [c("a", False, "nan"), c("t", False, {"p_value": 0.5, "statistic": 0}, "test"), c("n", None, None, "not_applicable")],
        [c("a", True, 3.0), c("t", True, {"p_value": 1e-3, "statistic": 2}, "test")],
        None,  # a seed that did not finish
    ]
    a, t, n = claim_statistics(runs)
    assert (a["passed"], a["failed"], a["not_applicable"], a["missing"]) == (2, 1, 0, 1)
    assert (a["min"], a["median"], a["max"], a["nonfinite"]) == (1.0, 2.0, 3.0, 1)
    assert t["values"] == "p_value" and (t["min"], t["median"], t["max"]) == (1e-4, statistics.median([1e-4, 0.5, 1e-3]), 0.5)
    assert (n["not_applicable"], n["missing"], n["min"]) == (2, 2, None)


def test_run_seeds_writes_one_folder_per_seed_and_a_summary(tmp_path, tiny):
    res = invoke("run", "tiny", "--seeds", "0-2,5", "--set", "steps=12", "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    (sweep,) = (tmp_path / "tiny").iterdir()
    assert sweep.name.startswith("sweep-") and sorted(p.name for p in sweep.iterdir()) == ["seed-0", "seed-1", "seed-2", "seed-5", "sweep.json"]
    for k in (0, 1, 2, 5):
        cfg = RunFolder.open(sweep / f"seed-{k}").config
        assert cfg["config"]["seed"] == k and cfg["config"]["steps"] == 12 and cfg["seed"] == k
        assert summarise(sweep / f"seed-{k}").verdict == "PASS"
    doc = json.loads((sweep / "sweep.json").read_text())
    assert doc["seeds"] == [0, 1, 2, 5] and doc["status"] == "finished" and [r["verdict"] for r in doc["runs"]] == ["PASS"] * 4
    by_id = {c["id"]: c for c in doc["claims"]}
    assert by_id["seed-ok"]["passed"] == 4 and by_id["never"]["not_applicable"] == 4
    # the p-values of the fixture's test are 1e-4 (1 + seed): min, median and max over seeds 0, 1, 2, 5
    assert by_id["sign"]["values"] == "p_value" and by_id["sign"]["min"] == 1e-4 and by_id["sign"]["max"] == pytest.approx(6e-4, rel=1e-12)
    assert by_id["sign"]["median"] == pytest.approx(2.5e-4, rel=1e-12)
    measured = sorted(read_claims(sweep / f"seed-{k}")[-4]["measured"] for k in (0, 1, 2, 5))  # mean-square
    assert by_id["mean-square"]["median"] == pytest.approx(statistics.median(measured), rel=1e-12)
    assert "sweep tiny over 4 seed(s)" in res.output and "4/4" in res.output


def test_a_failing_seed_fails_the_sweep_but_keeps_the_others(tmp_path, tiny):
    res = invoke("run", "tiny", "--seeds", "0-3", "--set", "steps=5", "--set", "fail_seed=1", "--set", "crash_seed=2", "--out", str(tmp_path))
    assert res.exit_code == 1
    (sweep,) = (tmp_path / "tiny").iterdir()
    verdicts = {k: summarise(sweep / f"seed-{k}").verdict for k in range(4)}
    assert verdicts == {0: "PASS", 1: "FAIL", 2: "ERROR", 3: "PASS"}
    doc = json.loads((sweep / "sweep.json").read_text())
    assert {c["id"]: c["passed"] for c in doc["claims"]}["seed-ok"] == 2 and {c["id"]: c["missing"] for c in doc["claims"]}["seed-ok"] == 1
    assert "crash at seed 2" in res.output and "error:" in res.output
    # the report shows the sweep with its failure, and exits 1
    rep = invoke("report", str(tmp_path))
    assert rep.exit_code == 1 and "2/4" in rep.output and "seed 2: ERROR" in rep.output


@pytest.mark.xdist_group("processes")  # starts two processes: with the others, one at a time on one pytest-xdist worker (Makefile: make test)
def test_jobs_run_seeds_in_worker_processes(tmp_path, tiny):
    summary = run_sweep("tiny", {"steps": 6, "crash_seed": 1}, [0, 1, 2], out=tmp_path, jobs=2)
    assert [r.verdict for _, r in summary.runs] == ["PASS", "ERROR", "PASS"]
    serial = run_sweep("tiny", {"steps": 6, "crash_seed": 1}, [0, 2], out=tmp_path / "serial", threads=1)
    for (k, a), (_, b) in zip([summary.runs[0], summary.runs[2]], serial.runs):
        assert (a.path / "metrics.csv").read_bytes() == (b.path / "metrics.csv").read_bytes(), k  # one thread each: same numbers
        assert RunFolder.open(a.path).config["threads"] == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (("--seeds", "0-2", "--set", "seed=1"), "--seeds and --set seed= both choose the seed"),
        (("--set", "seed=-1"), "invalid value for 'seed'"),
        (("--seeds", "3-1"), "runs backwards"),
        (("--jobs", "2"), "give --seeds too"),
        (("--seeds", "0-1", "--jobs", "2", "--threads", "2"), "drop --threads 2"),
        (("--device", "tpu"), "--device 'tpu' is not"),
    ],
)
def test_sweep_and_seed_errors(tmp_path, tiny, args, message):
    res = invoke("run", "tiny", *args, "--out", str(tmp_path))
    assert res.exit_code == 1 and message in res.output and "Traceback" not in res.output
    assert not (tmp_path / "tiny").exists()


def test_report_shows_every_run_and_counts_incomplete_ones(tmp_path, tiny):
    good = invoke("run", "tiny", "--set", "steps=3", "--out", str(tmp_path))
    assert good.exit_code == 0
    crashed = invoke("run", "tiny", "--set", "steps=3", "--set", "crash_seed=0", "--out", str(tmp_path))
    assert crashed.exit_code != 0  # a RuntimeError: the CLI's code for an internal error
    killed = RunFolder.create(tmp_path, "tiny", {"steps": 3}, extra={"quick": False})
    killed.write_status("running")
    RunFolder.create(tmp_path, "tiny", {"steps": 3})  # no status.json at all
    train = RunFolder.create(tmp_path, "train", {"epochs": 2})
    train.log_metrics({"epoch": 1})
    train.write_status("running")
    col = collect_runs(tmp_path)
    assert [e.verdict for e in col.entries] == ["PASS", "ERROR", "INCOMPLETE", "INCOMPLETE"]
    assert len(col.train) == 1 and len(col.problems) == 4
    text = format_text(col)
    assert "3 of 4 claims passed (0 failed, 1 not applicable) in 4 run(s); 2 run(s) incomplete; 1 run(s) stopped with an error" in text
    assert "1 training run(s): 1 incomplete" in text and "crash at seed 0" in text
    res = invoke("report", str(tmp_path))
    assert res.exit_code == 1 and "error: 4 not passed" in res.output
    html = (tmp_path / "report.html").read_text()
    assert html.count("class='INCOMPLETE'") >= 3 and "Training runs" in html and "crash at seed 0" in html
    train.log_metrics({"epoch": 2})
    train.write_status("finished")
    for e in col.entries[1:]:  # with the failed and incomplete runs gone, the report passes
        shutil.rmtree(e.path)
    res = invoke("report", str(tmp_path))
    assert res.exit_code == 0, res.output
    assert "1 training run(s): 1 finished" in res.output


def test_reproduce_with_seeds_reports_pass_rates(tmp_path, tiny):
    res = invoke("reproduce", "--seeds", "0-1", "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    html = (tmp_path / "report.html").read_text()
    assert "sweep of 2 seeds" in html and "2/2 seeds passed" in html
