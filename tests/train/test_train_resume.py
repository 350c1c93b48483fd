"""SIGKILL mid-epoch, resume from the run folder: metrics.csv equals the uninterrupted run's."""

import subprocess
import sys
from pathlib import Path

import pytest

from collapselab.core.store import read_metrics

WORKER = Path(__file__).with_name("train_resume_worker.py")


def run(folder: Path, kill_at: int, resume: bool) -> int:
    return subprocess.run([sys.executable, str(WORKER), str(folder), str(kill_at), "1" if resume else "0"], capture_output=True, timeout=120).returncode


@pytest.mark.timeout(300)
def test_resume_after_sigkill_reproduces_metrics_exactly(tmp_path):
    ref, cut = tmp_path / "resume" / "ref", tmp_path / "resume" / "cut"
    assert run(ref, 0, False) == 0
    # 120 samples in batches of 25: 5 steps per epoch; call 18 is step 3 of epoch 4
    assert run(cut, 18, False) == -9
    partial = read_metrics(cut)
    assert [r["epoch"] for r in partial] == ["1", "2", "3"]
    assert run(cut, 0, True) == 0
    full, resumed = read_metrics(ref), read_metrics(cut)
    assert len(full) == 8 and "nc1" in full[0] and full[-1]["nc1"] not in ("", "nan")
    assert resumed == full  # every value, to the last printed digit
