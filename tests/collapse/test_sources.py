"""Streaming from disk and from batch iterables: the same report as the in-memory exact
two-pass measurement, memory that does not grow with N, two processes that equal one."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from collapselab.collapse import collapse_report, stream_report
from collapselab.core.errors import MissingFileError, NonFiniteError, ParameterError, ShapeError

from .test_streaming import REPORT_FIELDS, assert_reports_close

pytestmark = pytest.mark.numerics

# stream_report and collapse_report run the same float64 arithmetic on the same (exactly
# upcast) float32 values; only the block boundaries differ, so sums differ in their order:
# relative error <= N eps kappa with N = 3000, eps = 2.2e-16 and kappa (condition of the
# ratios reported) below ~10, about 7e-12; 1e-11 leaves no room for a wrong formula.
REL = 1e-11


def _data(seed=0, C=5, d=8, N=3000, offset=50.0, values=None):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, N)
    H = (offset + rng.standard_normal((C, d))[y] * 3 + rng.standard_normal((N, d))).astype(np.float32)
    W, b = rng.standard_normal((C, d)), rng.standard_normal(C)
    labels = y if values is None else np.asarray(values)[y]
    return H, labels, W, b


def _save(tmp_path, H, y):
    np.save(tmp_path / "h.npy", H)
    np.save(tmp_path / "y.npy", y)
    return tmp_path / "h.npy", tmp_path / "y.npy"


@pytest.mark.parametrize("seed", [0, 1])
def test_npy_file_memmap_array_and_batches_equal_collapse_report(tmp_path, seed):
    H, y, W, b = _data(seed)
    want = collapse_report(torch.from_numpy(H), torch.from_numpy(y), W, b)
    fh, fy = _save(tmp_path, H, y)
    from_file = stream_report(fh, fy, W, b, batch_size=97)
    from_memmap = stream_report(np.load(fh, mmap_mode="r"), np.load(fy, mmap_mode="r"), W, b, batch_size=256)
    batches = [(H[a : a + 113], y[a : a + 113]) for a in range(0, len(y), 113)]
    from_list = stream_report(batches, None, W, b, num_classes=5)
    from_callable = stream_report(lambda: iter(batches), None, W, b, num_classes=5)
    for got in (from_file, from_memmap, from_list, from_callable):
        assert got.num_samples == len(y) and got.counts == want.counts
        assert_reports_close(got, want, rel=REL)


def test_stream_matches_the_independent_numpy_reference(tmp_path, reference):
    H, y, W, b = _data(2, C=4, d=6, N=800, offset=0.0)
    fh, fy = _save(tmp_path, H, y)
    got = stream_report(fh, fy, W, b, batch_size=50)
    ref = reference.metrics(H, y, W, b)
    # the reference's pinv and loops: float64 rounding times cond(Sigma_B) (~1e2 here)
    for k in ("nc1", "nc1_trace_ratio", "cdnv", "nc3", "margin_mean", "margin_std", "ulpm_within_class_variation"):
        assert getattr(got, k) == pytest.approx(ref[k], rel=1e-9), k
    for k in ("ncc_accuracy", "accuracy", "nc4"):  # counts of samples: exact
        assert getattr(got, k) == ref[k], k


def test_label_values_are_mapped_as_collapse_report_does(tmp_path):
    H, y, _, _ = _data(3, C=3, values=[3, 7, 9])
    fh, fy = _save(tmp_path, H, y)
    got = stream_report(fh, fy)
    want = collapse_report(H, y)
    assert got.classes == [3, 7, 9] == want.classes
    assert_reports_close(got, want, rel=REL)


def test_progress_bar_sees_both_passes(tmp_path):
    H, y, _, _ = _data(4, N=1000)
    fh, fy = _save(tmp_path, H, y)
    calls = []

    def progress(iterable, *, desc, total):
        calls.append((desc, total))
        return iterable

    stream_report(fh, fy, batch_size=300, progress=progress)
    assert [t for _, t in calls] == [4, 4] and "1/2" in calls[0][0] and "2/2" in calls[1][0]


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_does_not_grow_with_the_number_of_samples(tmp_path):
    # numpy reports its buffers to tracemalloc: the read blocks and label blocks are seen,
    # a copy of the features would be too (the control below). N and 4N rows of 64 KiB-wide
    # float32 features (16 MiB and 64 MiB): the peak may grow only by the label block
    # (8 bytes per label up to 2^20 labels: 0.5 MiB here), not by the 48 MiB of extra features.
    d, C = 256, 10
    rng = np.random.default_rng(5)
    peaks = []
    for n in (16384, 65536):
        y = rng.integers(0, C, n)
        H = (rng.standard_normal((C, d))[y] + rng.standard_normal((n, d))).astype(np.float32)
        fh, fy = _save(tmp_path, H, y)
        del H
        peaks.append(_peak_bytes(lambda: stream_report(fh, fy, batch_size=1024)))
    control = _peak_bytes(lambda: np.load(fh))  # the whole array: 64 MiB
    assert control >= 65536 * d * 4
    assert peaks[1] - peaks[0] < 2**20, peaks
    assert peaks[1] < control / 8, (peaks, control)


def test_bad_sources_get_clear_errors(tmp_path):
    H, y, _, _ = _data(6, N=200)
    fh, fy = _save(tmp_path, H, y)
    with pytest.raises(ParameterError, match="one-shot iterator"):
        stream_report(iter([(H, y)]), None, num_classes=5)
    with pytest.raises(ParameterError, match="need num_classes"):
        stream_report([(H, y)])
    with pytest.raises(MissingFileError, match="does not exist"):
        stream_report(tmp_path / "missing.npy", fy)
    np.save(tmp_path / "short.npy", y[:-1])
    with pytest.raises(ShapeError, match="labels has 199 rows but features has 200"):
        stream_report(fh, tmp_path / "short.npy")
    H[150, 3] = np.nan
    np.save(fh, H)
    with pytest.raises(NonFiniteError, match=r"batch 1 \(rows 128 to 199\)"):
        stream_report(fh, fy, batch_size=128)


def _rank(rank: int, world: int, init: str, out: str, fh: str, fy: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        n = len(np.load(fy, mmap_mode="r"))
        half = (rank * n // world, (rank + 1) * n // world)
        rep = stream_report(fh, fy, num_classes=5, rows=half, all_reduce=True, batch_size=128)
        torch.save(rep.as_dict(), os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.xdist_group("processes")  # starts two processes: with the others, one at a time on one pytest-xdist worker (Makefile: make test)
def test_two_processes_each_reading_half_equal_one(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))
    H, y, _, _ = _data(7, N=1001, offset=1e3)
    fh, fy = _save(tmp_path, H, y)
    mp.spawn(_rank, args=(2, str(tmp_path / "init"), str(tmp_path), str(fh), str(fy)), nprocs=2, join=True)
    want = stream_report(fh, fy).as_dict()
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got["counts"] == want["counts"]
        for k in REPORT_FIELDS:
            if want[k] is None:
                assert got[k] is None, k
            else:  # the same sums in another order (two partial sums, shifts rebased): N eps kappa
                assert got[k] == pytest.approx(want[k], rel=REL, abs=1e-14), k
