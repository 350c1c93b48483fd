"""Streaming statistics: batches, merge and a two-process gloo all_reduce equal one pass."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from collapselab.collapse import CollapseStatistics, collapse_report

pytestmark = pytest.mark.numerics  # run again under another CPU kernel path (Makefile: make test)

REPORT_FIELDS = ("nc1", "nc1_trace_ratio", "cdnv", "nc2_etf_error_means", "nc2_equinorm_means", "nc3",
                 "nc3_self_duality_error", "accuracy", "ncc_accuracy", "nc4", "margin_mean", "margin_std",
                 "margin_min", "nc_margin", "ulpm_within_class_variation")


def problem(seed=0, C=5, d=8, N=600, offset=0.0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, N)
    H = offset + rng.standard_normal((C, d))[labels] * 3 + rng.standard_normal((N, d))
    W = rng.standard_normal((C, d))
    b = rng.standard_normal(C)
    return torch.from_numpy(H), torch.from_numpy(labels), torch.from_numpy(W), torch.from_numpy(b)


def assert_reports_close(a, b, rel=1e-12):
    for k in REPORT_FIELDS:
        x, y = getattr(a, k), getattr(b, k)
        if x is None or y is None:
            assert x is y, k
        else:
            assert x == pytest.approx(y, rel=rel, abs=1e-14), k


def assert_moments_close(a, b, rel=1e-12):
    assert torch.equal(a.counts, b.counts)
    torch.testing.assert_close(a.means, b.means, rtol=rel, atol=0)
    torch.testing.assert_close(a.sigma_w, b.sigma_w, rtol=rel, atol=rel * float(b.sigma_w.abs().max()))
    torch.testing.assert_close(a.class_vars, b.class_vars, rtol=rel, atol=0)


def test_small_batches_with_missing_classes_equal_the_exact_two_pass():
    H, y, W, b = problem(offset=50.0)
    one = collapse_report(H, y, W, b)
    st = CollapseStatistics(5, means=one.means, weights=W, bias=b)
    order = torch.argsort(y, stable=True)  # sorted labels: most batches miss most classes
    for idx in order.split(37):
        st.update(H[idx], y[idx])
    assert_reports_close(st.report(), one, rel=1e-11)
    # one pass without reference means: shift = first batch's class means
    plain = CollapseStatistics(5)
    for idx in order.split(37):
        plain.update(H[idx], y[idx])
    rep = plain.report(W, b)
    for k in ("nc1", "nc1_trace_ratio", "cdnv", "nc3", "nc2_etf_error_means"):
        assert getattr(rep, k) == pytest.approx(getattr(one, k), rel=1e-11), k
    assert rep.accuracy is None and rep.nc4 is None


def test_merge_of_two_halves_equals_one_pass():
    H, y, W, b = problem(seed=1, offset=1e3)
    whole = CollapseStatistics(5, weights=W, bias=b).update(H, y)
    a = CollapseStatistics(5, weights=W, bias=b).update(H[:250], y[:250])
    b_ = CollapseStatistics(5, weights=W, bias=b).update(H[250:], y[250:])
    merged = a.merge(b_)
    assert_moments_close(merged.moments(), whole.moments())
    assert_reports_close(merged.report(), whole.report())
    # an empty accumulator is neutral on either side
    e = CollapseStatistics(5, weights=W, bias=b)
    assert_moments_close(e.merge(whole).moments(), whole.moments())
    assert_moments_close(whole.merge(CollapseStatistics(5, weights=W, bias=b)).moments(), e.moments())


def test_merge_refuses_incompatible_accumulators():
    H, y, W, b = problem()
    a = CollapseStatistics(5).update(H, y)
    with pytest.raises(ValueError, match="num_classes differ"):
        a.merge(CollapseStatistics(6).update(H, y))
    with pytest.raises(ValueError, match="different reference means or classifier"):
        a.merge(CollapseStatistics(5, weights=W).update(H, y))
    with pytest.raises(ValueError, match="feature dimensions differ"):
        a.merge(CollapseStatistics(5).update(H[:, :3], y))


def _worker(rank, world, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        H, y, W, b = problem(seed=2, offset=1e4)
        part = slice(0, 200) if rank == 0 else slice(200, None)  # unequal shards
        st = CollapseStatistics(5, weights=W, bias=b).update(H[part], y[part])
        st.all_reduce()
        mom = st.moments()
        # Sigma_W on the span of the class means only (reference means from the whole data)
        span = CollapseStatistics(5, means=collapse_report(H, y).means, weights=W, bias=b, covariance="span").update(H[part], y[part])
        span.all_reduce()
        torch.save({"counts": mom.counts, "means": mom.means, "sigma_w": mom.sigma_w, "class_vars": mom.class_vars,
                    "report": st.report().as_dict(), "span_report": span.report().as_dict()}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.xdist_group("processes")  # starts two processes: with the others, one at a time on one pytest-xdist worker (Makefile: make test)
def test_two_process_gloo_all_reduce_equals_one_pass(tmp_path, monkeypatch):
    # the spawned children unpickle _worker by its module name (tests.collapse.test_streaming
    # under --import-mode=importlib): put the repository root on their sys.path
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    H, y, W, b = problem(seed=2, offset=1e4)
    whole = CollapseStatistics(5, weights=W, bias=b).update(H, y)
    mom = whole.moments()
    rep = whole.report().as_dict()
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert torch.equal(got["counts"], mom.counts)
        torch.testing.assert_close(got["means"], mom.means, rtol=1e-12, atol=0)
        torch.testing.assert_close(got["sigma_w"], mom.sigma_w, rtol=1e-12, atol=1e-12 * float(mom.sigma_w.abs().max()))
        for k in REPORT_FIELDS:
            if rep[k] is None:  # per-sample rules that need reference means
                assert got["report"][k] is None, k
            else:
                assert got["report"][k] == pytest.approx(rep[k], rel=1e-12, abs=1e-14), k
                assert got["span_report"][k] == pytest.approx(rep[k], rel=1e-11, abs=1e-14), k


def test_all_reduce_needs_an_initialised_process_group():
    with pytest.raises(ValueError, match="torch.distributed is not initialised"):
        CollapseStatistics(3).all_reduce()


def test_classes_option_maps_label_values():
    H, y, W, b = problem(seed=3, C=3)
    values = torch.tensor([10, 20, 35])
    st = CollapseStatistics(classes=[35, 10, 20]).update(H, values[y])
    ref = CollapseStatistics(3).update(H, y)
    assert st.classes.tolist() == [10, 20, 35]
    assert st.report().nc1 == pytest.approx(ref.report().nc1, rel=1e-13)
    with pytest.raises(ValueError, match="label 11 is not among the 3 declared classes"):
        st.update(H[:2], torch.tensor([10, 11]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    H, y, W, b = problem(seed=4)
    cpu = collapse_report(H, y, W, b)
    gpu = collapse_report(H.cuda().float(), y.cuda(), W.cuda(), b.cuda())
    for k in ("nc1", "cdnv", "nc3", "nc4", "accuracy"):
        assert getattr(gpu, k) == pytest.approx(getattr(cpu, k), rel=1e-5, abs=1e-7), k


@pytest.mark.parametrize("covariance,per_sample", [(False, False), (False, True), (True, False)])
def test_every_mode_gives_the_same_means(covariance, per_sample):
    H, y, W, b = problem(seed=5, offset=100.0)
    exact = collapse_report(H, y).means
    st = CollapseStatistics(5, means=exact + 0.5, weights=W, covariance=covariance, per_sample=per_sample)
    for idx in torch.arange(len(y)).split(100):
        st.update(H[idx], y[idx])
    torch.testing.assert_close(st.means(), exact, rtol=1e-13, atol=0)
    assert (st.sample_sums() is None) == (not per_sample)
