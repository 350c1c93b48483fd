"""The scale benchmark at its ``--quick`` size: it runs, agrees with the in-memory numpy
computation it is timed against, and deletes its data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_quick_scale_benchmark_runs_and_agrees_with_the_numpy_baseline(tmp_path):
    data, out = tmp_path / "bench", tmp_path / "out.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(ROOT / "benchmarks" / "nc_scale.py"), "--quick", "--processes", "0", "--dir", str(data), "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not data.exists()
    r = json.loads(out.read_text())
    ours, public = r["ours"]["report"], r["public"]["full"]
    # numpy's pinv of Sigma_B against our span formula: float64 rounding times cond(Sigma_B) (~1e2)
    assert ours["nc1"] == pytest.approx(public["nc1"], rel=1e-9)
    # a fraction of samples; the classes are far apart (separation ~ 3 sqrt(2 d) noise scales), so a
    # decision flips only at a rounding-level tie: allow one sample
    assert abs(ours["ncc_accuracy"] - public["ncc_accuracy"]) <= 1.0 / r["sizes"]["samples"]
    assert ours["num_samples"] == r["sizes"]["samples"]
