"""Run folders (docs/reference/run-folders.md): append-only flushed metrics, a fixed header,
atomic claims and checkpoints, and resume that drops rows logged after the checkpoint."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import torch

from collapselab.core import store
from collapselab.core.errors import ConfigError, DataFileError, MissingFileError
from collapselab.core.store import Claim, RunFolder, atomic_write_text, read_claims, read_metrics


def _rows(path: Path) -> list[list[str]]:
    with open(path / "metrics.csv", newline="") as fh:
        return list(csv.reader(fh))


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp") or p.name.startswith("."))


def _claim(cid: str, passed: bool = True, measured: float = 1.0) -> Claim:
    return Claim(cid, f"claim {cid}", "Chen 2025 Thm 6", comparator="close", expected=1.0, measured=measured, tolerance={"absolute": 1e-12},
                 tolerance_reason="float64 rounding", reference="closed form", passed=passed)


def test_create_writes_config_and_refuses_existing(tmp_path):
    run = RunFolder.create(tmp_path, "demo", {"width": 3, "lr": 0.5}, run_id="r1", extra={"device": "cpu"})
    assert run.path == tmp_path / "demo" / "r1" and run.figures.is_dir()
    cfg = json.loads((run.path / "config.json").read_text())
    assert cfg["experiment"] == "demo" and cfg["config"] == {"width": 3, "lr": 0.5} and cfg["device"] == "cpu"
    assert cfg["versions"]["torch"] == torch.__version__
    assert run.config == cfg
    with pytest.raises(ConfigError, match=r"run folder .*r1 exists already; pick another run id or use --resume"):
        RunFolder.create(tmp_path, "demo", {}, run_id="r1")
    with pytest.raises(MissingFileError, match=r"is not a run folder \(no config.json\)"):
        RunFolder.open(tmp_path / "demo")
    assert store.new_run_id() < store.new_run_id()  # sortable ids


def test_metrics_rows_appended_and_flushed(tmp_path, monkeypatch):
    """Each row reaches the file at once (another reader sees it); the disk sync waits for the next
    checkpoint or the run's end, so a checkpoint never covers rows a system crash could lose."""
    run = RunFolder.create(tmp_path, "demo", {}, run_id="r")
    synced: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(store.os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd))[1])
    for step in range(3):
        run.log_metrics({"step": step, "cost": 0.1 * step + 0.2, "tensor": torch.tensor(float(step))})
        # readable by another reader right away, one row per call
        assert len(_rows(run.path)) == step + 2
    assert not synced
    run.save_checkpoint({"step": 2})
    assert synced and synced[0] == str(run.path / "metrics.csv")
    synced.clear()
    run.write_status("finished")
    assert synced and synced[0] == str(run.path / "metrics.csv")
    rows = _rows(run.path)
    assert rows[0] == ["step", "cost", "tensor"]
    assert rows[2] == ["1", repr(0.1 * 1 + 0.2), "1.0"]
    assert float(rows[2][1]) == 0.1 * 1 + 0.2  # shortest round-trip form, exact
    assert run.num_metric_rows() == 3 and read_metrics(run.path)[0]["step"] == "0"


def test_metrics_header_fixed(tmp_path):
    run = RunFolder.create(tmp_path, "demo", {}, run_id="r")
    run.log_metrics({"step": 0, "cost": 1.0, "acc": 0.5})
    run.log_metrics({"step": 1, "cost": 0.5})  # a missing column is left blank
    with pytest.raises(ConfigError, match=r"metrics row has columns \['extra'\] not in the header \['step', 'cost', 'acc'\]"):
        run.log_metrics({"step": 2, "extra": 3})
    # a reopened folder keeps the header of the file
    again = RunFolder.open(run.path)
    again.log_metrics({"acc": 0.9, "step": 2, "cost": 0.25})
    assert _rows(run.path) == [["step", "cost", "acc"], ["0", "1.0", "0.5"], ["1", "0.5", ""], ["2", "0.25", "0.9"]]


def test_claims_rewritten_atomically(tmp_path, monkeypatch):
    run = RunFolder.create(tmp_path, "demo", {}, run_id="r")
    run.add_claim(_claim("a"))
    run.add_claim(_claim("b", passed=False, measured=float("nan")))
    run.add_claim(_claim("a", measured=2.0))  # same id: replaced, not duplicated
    claims = read_claims(run.path)
    assert [c["id"] for c in claims] == ["b", "a"]
    assert claims[0]["measured"] == "nan" and claims[0]["passed"] is False and claims[1]["measured"] == 2.0
    assert set(claims[0]) == {"id", "claim", "source", "comparator", "expected", "measured", "tolerance", "tolerance_reason", "reference", "passed", "verdict"}
    assert [c.id for c in RunFolder.open(run.path).claims] == ["b", "a"]
    before = (run.path / "claims.json").read_bytes()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(store.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        run.add_claim(_claim("c"))
    # the old file is intact and the temporary file is gone
    assert (run.path / "claims.json").read_bytes() == before
    assert _leftovers(run.path) == []


def test_atomic_write_leaves_no_temp_files(tmp_path):
    target = tmp_path / "x.txt"
    for i in range(5):
        atomic_write_text(target, f"version {i}\n")
    assert target.read_text() == "version 4\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]
    run = RunFolder.create(tmp_path, "demo", {}, run_id="r")
    run.log_metrics({"step": 0})
    run.add_claim(_claim("a"))
    run.save_checkpoint({"step": 0})
    run.save_checkpoint({"step": 1})
    assert _leftovers(run.path) == []


def test_checkpoint_resume_truncates_later_rows(tmp_path):
    run = RunFolder.create(tmp_path, "demo", {}, run_id="r")
    for step in range(3):
        run.log_metrics({"step": step, "cost": 1.0 / (step + 1)})
    state = {"step": 2, "theta": torch.arange(4, dtype=torch.float64)}
    run.save_checkpoint(state)
    assert "_metrics_rows" not in state  # the caller's dict is not modified
    for step in range(3, 6):
        run.log_metrics({"step": step, "cost": 1.0 / (step + 1)})
    assert run.num_metric_rows() == 6
    # a crash here; the resumed run sees the checkpoint and only the rows it covers
    resumed = RunFolder.open(run.path)
    loaded = resumed.load_checkpoint()
    assert set(loaded) == {"step", "theta"} and loaded["step"] == 2 and torch.equal(loaded["theta"], state["theta"])
    assert [r["step"] for r in read_metrics(run.path)] == ["0", "1", "2"]
    resumed.log_metrics({"step": 3, "cost": 0.25})
    assert _rows(run.path)[0] == ["step", "cost"] and _rows(run.path)[-1] == ["3", "0.25"]
    assert RunFolder.create(tmp_path, "demo", {}, run_id="fresh").load_checkpoint() is None


def test_bad_files_raise(tmp_path):
    run = RunFolder.create(tmp_path, "demo", {}, run_id="r")
    (run.path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataFileError, match=r"checkpoint.pt is not a readable checkpoint"):
        run.load_checkpoint()
    (run.path / "claims.json").write_text("[{")
    with pytest.raises(DataFileError, match=r"claims.json is not valid JSON"):
        read_claims(run.path)
    assert read_claims(tmp_path) == []


def test_claim_requires_reference_reason_and_a_known_comparator():
    from collapselab.core.errors import DataFileError, ParameterError

    with pytest.raises(ParameterError, match="independent reference"):
        Claim("a", "c", "s", comparator="close", expected=1.0, measured=1.0, tolerance=None, tolerance_reason=" ", reference="x", passed=True)
    with pytest.raises(ParameterError, match="comparator"):
        Claim("a", "c", "s", comparator="roughly", expected=1.0, measured=1.0, tolerance=None, tolerance_reason="r", reference="x", passed=True)
    with pytest.raises(ParameterError, match="not_applicable"):
        Claim("a", "c", "s", comparator="close", expected=1.0, measured=1.0, tolerance=None, tolerance_reason="r", reference="x", passed=None)
    na = Claim("a", "c", "s", comparator="not_applicable", expected=None, measured=None, tolerance=None, tolerance_reason="no classifier", reference="x", passed=None)
    assert na.verdict == "N/A" and Claim.from_json(na.to_json()) == na
    with pytest.raises(DataFileError, match="older collapselab"):
        Claim.from_json({"id": "old", "claim": "c", "source": "s", "expected": 1, "measured": 1, "tolerance": 0, "passed": True})


def test_claim_verdict_rules():
    from collapselab.core.claims import verdict_at_least, verdict_at_most, verdict_close, verdict_test

    assert verdict_close(1.05, 1.0, 0.1) and not verdict_close(1.2, 1.0, 0.1) and verdict_close(110.0, 100.0, 0.1, relative=True)
    assert not verdict_close(float("nan"), 1.0, 1e9) and not verdict_at_most(float("nan"), 1.0) and not verdict_at_least(float("inf"), 1.0)
    assert verdict_test(1e-4, 1e-3) and not verdict_test(0.5, 1e-3) and not verdict_test(float("nan"), 0.5)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_atomic_writes_keep_the_umask(tmp_path, mask):
    old = os.umask(mask)
    try:
        run = RunFolder.create(tmp_path, "demo", {}, run_id="r")
        run.add_claim(_claim("a"))
        run.save_checkpoint({"step": 0})
        run.write_status("finished")
    finally:
        os.umask(old)
    for name in ("config.json", "claims.json", "checkpoint.pt", "status.json"):
        assert (run.path / name).stat().st_mode & 0o777 == 0o666 & ~mask, name


def test_a_row_cut_in_the_middle_is_dropped_on_resume(tmp_path):
    run = RunFolder.create(tmp_path, "demo", {}, run_id="r")
    for step in range(3):
        run.log_metrics({"step": step, "cost": 0.5 * step})
    run.save_checkpoint({"step": 2})
    with open(run.path / "metrics.csv", "a") as fh:
        fh.write("3,1.")  # a crash (or a full disk) cut the next row
    again = RunFolder.open(run.path)
    assert again.num_metric_rows() == 3 and [r["step"] for r in read_metrics(run.path)] == ["0", "1", "2"]
    with pytest.raises(DataFileError, match="ends with a row cut in the middle; reopen the run with --resume"):
        again.log_metrics({"step": 3, "cost": 1.5})
    assert again.load_checkpoint() == {"step": 2} and again.resumed_at == 3 and again.dropped_rows == 0
    again.log_metrics({"step": 3, "cost": 1.5})
    assert _rows(run.path)[-2:] == [["2", "1.0"], ["3", "1.5"]]


def test_resume_refuses_lost_rows_and_a_foreign_checkpoint(tmp_path):
    run = RunFolder.create(tmp_path, "demo", {"n": 1}, run_id="r")
    for step in range(4):
        run.log_metrics({"step": step})
    run.save_checkpoint({"step": 3})
    text = (run.path / "metrics.csv").read_bytes()
    (run.path / "metrics.csv").write_bytes(text[: text.index(b"2\r\n")] + b"2")  # cut inside row 3 of 4
    with pytest.raises(DataFileError, match=r"holds 2 complete rows but .*checkpoint.pt covers 4: rows were lost"):
        RunFolder.open(run.path).load_checkpoint()
    (run.path / "metrics.csv").write_bytes(text)
    cfg = json.loads((run.path / "config.json").read_text())
    cfg["config"]["n"] = 2
    (run.path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(DataFileError, match="was written for another configuration"):
        RunFolder.open(run.path).load_checkpoint()
    (run.path / "config.json").write_text('{"experiment": "demo", "config": {')
    with pytest.raises(DataFileError, match=r"config.json is not valid JSON .*start a new run"):
        RunFolder.open(run.path).config


def test_without_a_checkpoint_the_run_starts_over(tmp_path):
    run = RunFolder.create(tmp_path, "demo", {}, run_id="r")
    run.log_metrics({"step": 0})
    run.add_claim(_claim("a"))
    again = RunFolder.open(run.path)
    assert again.load_checkpoint() is None
    assert again.num_metric_rows() == 0 and again.claims == [] and not (run.path / "claims.json").exists()


def test_status_and_storage_errors(tmp_path, monkeypatch):
    import errno

    from collapselab.core.errors import CollapseLabError, StorageError

    run = RunFolder.create(tmp_path, "demo", {}, run_id="r")
    assert run.status is None
    run.write_status("failed", error="RuntimeError: boom")
    assert run.status["status"] == "failed" and run.status["error"] == "RuntimeError: boom"
    (run.path / "status.json").write_text("{")
    assert run.status["status"] == "unreadable"
    with pytest.raises(ConfigError, match="status must be one of"):
        run.write_status("done")

    def denied(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(store.os, "replace", denied)
    with pytest.raises(StorageError, match=r"cannot write .*checkpoint.pt: Permission denied \(choose a folder you may write .*continue it with --resume") as info:
        run.save_checkpoint({"step": 0})
    assert isinstance(info.value, OSError) and isinstance(info.value, CollapseLabError) and info.value.errno == errno.EACCES
    assert not (run.path / "checkpoint.pt").exists() and _leftovers(run.path) == []


def test_resume_removes_temporary_files_of_cut_writes(tmp_path):
    run = RunFolder.create(tmp_path, "demo", {}, run_id="r")
    run.save_checkpoint({"step": 0})
    (run.path / ".checkpoint.pt.abc.tmp").write_bytes(b"half a checkpoint")  # SIGKILL inside atomic_write_bytes
    (run.figures / ".loss.png.abc.tmp").write_bytes(b"half a figure")
    assert RunFolder.open(run.path).load_checkpoint() == {"step": 0}
    assert _leftovers(run.path) == []


def test_claims_render_with_their_comparator():
    from collapselab.core.claims import format_expected, format_measured

    close = _claim("c").to_json()
    assert format_expected(close) == "1 ± 1e-12" and format_measured(close) == "1"
    assert format_expected({"comparator": "at_most", "expected": 1e-8}) == "<= 1e-08"
    assert format_expected({"comparator": "close", "expected": 2.0, "tolerance": {"relative": 0.01}}) == "2 ± 0.01 × |expected|"
    test = {"comparator": "test", "expected": {"p_value_at_most": 1e-3}, "tolerance": {"level": 1e-3},
            "measured": {"test": "sign test", "statistic": 8.0, "p_value": 0.00390625, "median": 0.25}}
    assert format_expected(test) == "p <= 0.001" and format_measured(test) == "p=0.003906, statistic=8, median=0.25"
    assert format_expected({"comparator": "not_applicable"}) == "n/a" and format_measured({"measured": [0.0190130280841, True]}) == "[0.01901, true]"
