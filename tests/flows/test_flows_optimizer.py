"""AdaptedFlow / fit: convergence, agreement of the three linear-algebra paths, failures."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from collapselab.core.cost import mean_l2
from collapselab.core.errors import LabelError, ParameterError, ShapeError
from collapselab.core.network import ReLUNet
from collapselab.flows import AdaptedFlow, OutputMap, Status, adapted_step, choose_linalg, fit


def _data(n=12, m=4, q=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, m, generator=g, dtype=torch.float64)
    labels = torch.arange(n) % q
    return X, labels, torch.eye(q, dtype=torch.float64)[labels]


@pytest.mark.parametrize("linalg", ["structured", "dense", "matrix_free"])
def test_fit_relu_net_reaches_tolerance(linalg):
    X, labels, targets = _data()
    torch.manual_seed(0)
    net = ReLUNet([4, 32, 3])
    tr = fit(net, X, targets, linalg=linalg, tol=1e-12)
    assert tr.status is Status.CONVERGED, tr.message
    with torch.no_grad():
        final = float(mean_l2(net(X), targets))
    assert final <= 1e-12  # parameters were written back
    assert float(tr.cost[-1]) == pytest.approx(final, rel=1e-6, abs=1e-20)


def _first_step(linalg, **options):
    X, _, targets = _data()
    torch.manual_seed(0)
    opt = AdaptedFlow(ReLUNet([4, 32, 3]), X, targets, linalg=linalg, step=0.5, **options)
    opt.step()
    return opt


def test_linear_algebra_paths_agree_on_first_step():
    firsts = [_first_step(linalg, precision="full").theta for linalg in ("structured", "dense", "matrix_free")]
    assert torch.allclose(firsts[0], firsts[1], atol=1e-10, rtol=0)
    assert torch.allclose(firsts[0], firsts[2], atol=1e-8, rtol=0)


@pytest.mark.parametrize("linalg", ["structured", "dense"])
def test_mixed_precision_step_is_the_full_step_to_its_tolerance(linalg):
    full = _first_step(linalg, precision="full")
    tight = _first_step(linalg, precision="mixed", refine_rtol=1e-14, max_refinements=200)
    # a float32 factorisation refined in float64 gives the float64 minimum-norm step
    assert torch.allclose(tight.theta, full.theta, atol=1e-10, rtol=0)
    default = _first_step(linalg)
    assert default.precision == "mixed" and full.precision == "full"
    row = {k: v[-1] for k, v in default.recorder.rows.items()}
    assert row["rank"] == -1 and full.recorder.rows["rank"][-1] == 36
    # the recorded defect |r - D d| is within refine_rtol (1e-3) of |r| = sqrt(2 N C(0))
    assert row["defect"] <= 1e-3 * math.sqrt(2 * 12 * default.recorder.rows["cost"][0])
    assert row["epsilon"] == pytest.approx(full.recorder.rows["epsilon"][-1], rel=1e-12)


def test_precision_choice_and_errors():
    X, _, targets = _data()
    net = ReLUNet([4, 8, 3])
    assert AdaptedFlow(net, X, targets).precision == "mixed"
    assert AdaptedFlow(net, X, targets, linalg="matrix_free").precision == "full"
    assert AdaptedFlow(net, X, targets, on_rank_loss="stop").precision == "full"
    assert AdaptedFlow(ReLUNet([4, 8, 3], dtype=torch.float32), X.float(), targets.float()).precision == "full"
    with pytest.raises(ParameterError, match="precision='mixed' needs float64 parameters"):
        AdaptedFlow(net, X, targets, precision="mixed", linalg="matrix_free")
    with pytest.raises(ParameterError, match="on_rank_loss='continue'"):
        AdaptedFlow(net, X, targets, precision="mixed", on_rank_loss="stop")
    with pytest.raises(ParameterError, match=r"refine_rtol must be float in \(0, 1\)"):
        AdaptedFlow(net, X, targets, refine_rtol=1.0)


def test_linear_model_one_gauss_newton_step():
    torch.manual_seed(0)
    model = nn.Linear(6, 2).double()  # K = 14 >= QN = 10, affine in theta
    X = torch.randn(5, 6, dtype=torch.float64)
    omap, theta = OutputMap.from_module(model, X)
    y = torch.randn(10, dtype=torch.float64)
    new = adapted_step(omap, theta, y, 1.0)
    assert float((omap.outputs(new) - y).abs().max()) < 1e-12
    half = adapted_step(omap, theta, y, 0.5)  # residual contracts by exactly 1 - h
    assert torch.allclose(omap.outputs(half) - y, 0.5 * (omap.outputs(theta) - y), atol=1e-12)


def test_generic_module_uses_dense_and_labels_with_Y():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 24), nn.Tanh(), nn.Linear(24, 3)).double()
    X, labels, _ = _data()
    Y = 2.0 * torch.eye(3, dtype=torch.float64)
    opt = AdaptedFlow(net, X, labels, Y=Y)
    assert opt.linalg == "dense"
    tr = opt.run()
    assert tr.status is Status.CONVERGED, tr.message
    assert torch.allclose(net(X), Y[labels], atol=1e-4)


def test_choose_linalg_by_memory():
    X, _, _ = _data()
    mlp, _ = OutputMap.from_module(ReLUNet([4, 8, 3]), X)
    other, _ = OutputMap.from_module(nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double(), X)
    assert choose_linalg(mlp, 67, 36, 8, 1e9) == "structured"
    assert choose_linalg(other, 67, 36, 8, 1e9) == "dense"
    assert choose_linalg(other, 67, 36, 8, 1e3) == "matrix_free"


def test_predicted_steps_from_exponential_law():
    assert AdaptedFlow.predicted_steps(math.exp(10), 1.0, 0.5) == math.ceil(10 / (2 * math.log(2)))
    assert AdaptedFlow.predicted_steps(1.0, 1e-10, 1.0) == 1
    assert AdaptedFlow.predicted_steps(1e-12, 1e-10, 0.3) == 0


def _conflicting():
    """Two copies of one input with different labels: zero cost is unreachable."""
    X, labels, targets = _data(n=6)
    X[1] = X[0]  # labels 0 and 1
    return X, targets


def test_rank_loss_stop_and_stall_messages():
    X, targets = _conflicting()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 24), nn.Tanh(), nn.Linear(24, 3)).double()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    tr = fit(net, X, targets, on_rank_loss="stop")
    assert tr.status is Status.RANK_LOSS
    assert "rank D D^T = 15 < 18 at step 0" in tr.message
    net.load_state_dict(state)
    opt = AdaptedFlow(net, X, targets, max_steps=200)
    tr = opt.run()
    assert opt.precision == "full"  # the float32 solve cannot follow an unreachable target: full precision took over
    assert tr.status is Status.STALLED, tr.message
    assert "rank 15" in tr.message
    # best: both copies at (y_0 + y_1)/2, C = (1/2N)(1/2 + 1/2) = 1/12
    assert float(tr.cost[-1]) == pytest.approx(1.0 / 12.0, rel=1e-6)


def test_fit_errors():
    X, labels, targets = _data()
    net = ReLUNet([4, 8, 3])
    with pytest.raises(ParameterError, match=r"step must be float in \(0, 1\]"):
        AdaptedFlow(net, X, targets, step=1.5)
    with pytest.raises(ParameterError, match="linalg='structured' needs a ReLU MLP"):
        AdaptedFlow(nn.Sequential(nn.Linear(4, 3), nn.Tanh()).double(), X, targets, linalg="structured")
    with pytest.raises(ShapeError, match=r"targets must have one row per sample \(12\)"):
        AdaptedFlow(net, X, targets[:5])
    with pytest.raises(LabelError, match=r"labels must lie in \[0, 2\)"):
        AdaptedFlow(net, X, labels, Y=torch.eye(2, dtype=torch.float64))
    with pytest.raises(ParameterError, match="has no parameters"):
        AdaptedFlow(nn.ReLU(), X, targets)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["mixed", "full"])
def test_fit_on_cuda_matches_cpu(precision):
    X, _, targets = _data()
    torch.manual_seed(0)
    cpu_net = ReLUNet([4, 32, 3])
    gpu_net = copy.deepcopy(cpu_net).cuda()
    tr_cpu = fit(cpu_net, X, targets, precision=precision, tol=1e-12)
    tr_gpu = fit(gpu_net, X.cuda(), targets.cuda(), precision=precision, tol=1e-12)
    assert tr_gpu.status is Status.CONVERGED, tr_gpu.message
    assert next(gpu_net.parameters()).device.type == "cuda"
    assert torch.allclose(tr_gpu.cost.cpu()[:3], tr_cpu.cost[:3], rtol=1e-6, atol=1e-14)  # the same first steps


def test_mixed_precision_hands_a_zero_gram_to_full_precision():
    X = torch.zeros(6, 4, dtype=torch.float64)  # no bias and zero inputs: D = 0, G = 0
    targets = torch.eye(3, dtype=torch.float64)[torch.arange(6) % 3]
    net = nn.Sequential(nn.Linear(4, 8, bias=False), nn.Tanh(), nn.Linear(8, 3, bias=False)).double()
    opt = AdaptedFlow(net, X, targets)
    assert opt.precision == "mixed"
    tr = opt.run()  # no float32 factorisation of G + sigma I exists: full precision says why the run stops
    assert opt.precision == "full" and tr.status is Status.STALLED and "(rank 0)" in tr.message
