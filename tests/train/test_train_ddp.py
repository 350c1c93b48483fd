"""Two gloo processes on CPU give the single-process losses and NC metrics (float64)."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

SCRIPT = Path(__file__).with_name("train_ddp_worker.py")


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
@pytest.mark.timeout(180)
def test_two_process_ddp_matches_one_process(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=False)
    single = torch.load(tmp_path / "single.pt", weights_only=False)
    assert len(ddp) == len(single) == 4
    keys = [k for k in single[0] if k in ("train_loss", "train_error", "eval_loss", "eval_error", "cdnv", "accuracy", "ncc_accuracy") or k.startswith("nc")]
    assert {"nc1", "nc2_etf_error_means", "nc3", "nc4", "train_loss"} <= set(keys)
    for a, b in zip(ddp, single):
        assert a["epoch"] == b["epoch"]
        for k in keys:
            x, y = float(a[k]), float(b[k])
            assert (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12), (k, a["epoch"], x, y)
