"""Two gloo processes on CPU give the single-process losses, NC metrics and parameters
(float64), also when the last global batch leaves a rank with an empty share; SyncBatchNorm
is refused on CPU ranks with the reason."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

SCRIPT = Path(__file__).with_name("train_ddp_worker.py")
# starts two processes: this module (its fixture once) and the other multi-process tests run one at a time on one pytest-xdist worker (Makefile: make test)
pytestmark = pytest.mark.xdist_group("processes")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    out = tmp_path_factory.mktemp("ddp")
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out)], capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return torch.load(out / "ddp.pt", weights_only=False), torch.load(out / "single.pt", weights_only=False)


def assert_same_rows(ddp, single):
    assert len(ddp) == len(single) == 4
    keys = [k for k in single[0] if k in ("train_loss", "train_error", "eval_loss", "eval_error", "cdnv", "accuracy", "ncc_accuracy") or k.startswith("nc")]
    assert {"nc1", "nc2_etf_error_means", "nc3", "nc4", "train_loss"} <= set(keys)
    for a, b in zip(ddp, single):
        assert a["epoch"] == b["epoch"]
        for k in keys:
            x, y = float(a[k]), float(b[k])
            assert math.isfinite(y) or k in ("nc4",), (k, y)
            assert (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12), (k, a["epoch"], x, y)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("case", ["main", "odd", "odd_dataset"])
def test_two_process_ddp_matches_one_process(runs, case):
    # "odd": 21 samples in batches of 10, the last batch has one sample and rank 1 none;
    # the empty share must not give NaN or hang, and the update must be one process's
    ddp, single = runs[0][case], runs[1][case]
    assert_same_rows(ddp["rows"], single["rows"])
    for k, v in single["params"].items():
        torch.testing.assert_close(ddp["params"][k], v, rtol=1e-12, atol=1e-14)


@pytest.mark.timeout(180)
def test_sync_batchnorm_is_refused_on_cpu_ranks(runs):
    assert "Trainer: sync_batchnorm needs GPU ranks" in runs[0]["sync_batchnorm_error"]
    assert "SyncBatchNorm layers only work with GPU modules" in runs[0]["sync_batchnorm_error"]
