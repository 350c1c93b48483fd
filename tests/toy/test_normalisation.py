"""rho, the normalised parametrisation, margins, the structural lemma and batch-norm invariance."""

import math

import pytest
import torch
from torch import nn

from collapselab.core.errors import LabelError, ParameterError, ShapeError
from collapselab.core.network import forward
from collapselab.toy import (
    margin_stats,
    margins,
    normalise_layers,
    normalised_parametrisation,
    radial_derivatives,
    rho,
    scale_invariant_layers,
)

pytestmark = pytest.mark.numerics  # run again under another CPU kernel path (Makefile: make test)


def _bias_free_net(widths, seed=0):
    torch.manual_seed(seed)
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b, bias=False))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).double()


def test_rho_is_product_of_frobenius_norms_and_f_is_rho_f_v():
    net = _bias_free_net([4, 5, 3, 2])
    X = torch.randn(7, 4, dtype=torch.float64)
    norm = normalised_parametrisation(net)
    expected = math.prod(float(torch.linalg.norm(m.weight.detach())) for m in net if isinstance(m, nn.Linear))
    assert float(norm.rho) == pytest.approx(expected, rel=1e-14)
    assert float(rho(net)) == pytest.approx(expected, rel=1e-14)
    # f_W = rho f_V by positive homogeneity (Rangamani et al. 2021 sec. 3.3)
    normalised = _bias_free_net([4, 5, 3, 2])
    with torch.no_grad():
        for m, V in zip([m for m in normalised if isinstance(m, nn.Linear)], norm.V):
            m.weight.copy_(V)
    torch.testing.assert_close(net(X), norm.rho * normalised(X), rtol=1e-12, atol=1e-14)


def test_biased_network_normalises_with_rescaled_biases():
    g = torch.Generator().manual_seed(1)
    params = [(torch.randn(5, 3, dtype=torch.float64, generator=g) * s, torch.randn(5, dtype=torch.float64, generator=g)) for s in (2.0,)]
    params += [(torch.randn(4, 5, dtype=torch.float64, generator=g) * 0.3, torch.randn(4, dtype=torch.float64, generator=g)), (torch.randn(2, 4, dtype=torch.float64, generator=g) * 5, torch.randn(2, dtype=torch.float64, generator=g))]
    X = torch.randn(9, 3, dtype=torch.float64, generator=g)
    nl = normalise_layers(params)
    torch.testing.assert_close(forward(params, X), nl.rho * forward(nl.params(), X), rtol=1e-12, atol=1e-13)
    for V in nl.V:
        assert float(torch.linalg.norm(V)) == pytest.approx(1.0, abs=1e-14)


def test_structural_lemma_every_layer():
    # Lemma 6 of Rangamani et al. 2021: <W_k, df/dW_k> = f for a bias-free ReLU network
    net = _bias_free_net([3, 6, 6, 1], seed=3)
    X = torch.randn(5, 3, dtype=torch.float64)
    for i in range(X.shape[0]):
        f = net(X[i : i + 1]).reshape(())
        radial = radial_derivatives(net, f)
        assert len(radial) == 3
        for value in radial.values():
            assert abs(float(value) - float(f.detach())) <= 1e-12 * max(1.0, abs(float(f.detach())))


def _bn_net(eps):
    torch.manual_seed(4)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3, affine=False, eps=eps), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2)).double()


def test_batch_norm_makes_the_weight_below_it_scale_invariant():
    net = _bn_net(1e-14)
    x = torch.randn(8, 1, 4, 4, dtype=torch.float64)
    target = torch.randn(8, 2, dtype=torch.float64)
    loss = (net(x) - target).square().mean()
    assert scale_invariant_layers(net) == ["0"]
    conv = net[0]
    gw, gb = torch.autograd.grad(loss, [conv.weight, conv.bias], retain_graph=True)
    radial = radial_derivatives(net, loss)
    assert abs(float(radial["0"])) <= 1e-9 * float(torch.linalg.norm(conv.weight.detach()) * torch.linalg.norm(gw))
    assert float(torch.linalg.norm(gb)) <= 1e-9 * float(torch.linalg.norm(gw))
    with torch.no_grad():
        conv.weight.mul_(3.7)
        conv.bias.add_(0.4)
    with torch.no_grad():
        assert float((net(x) - target).square().mean()) == pytest.approx(float(loss.detach()), rel=1e-9)
    # the last layer is not scale invariant: <W, grad> is far from 0
    assert abs(float(radial["4"])) > 1e-3


def test_batch_norm_invariance_needs_a_tiny_epsilon():
    net = _bn_net(1e-1)
    x = torch.randn(8, 1, 4, 4, dtype=torch.float64) * 0.1
    loss = (net(x) - 1.0).square().mean()
    gw = torch.autograd.grad(loss, net[0].weight, retain_graph=True)[0]
    radial = radial_derivatives(net, loss)["0"]
    assert abs(float(radial)) > 1e-6 * float(torch.linalg.norm(net[0].weight.detach()) * torch.linalg.norm(gw))


def test_rho_with_batch_norm_follows_the_authors_formula():
    net = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3, affine=False), nn.ReLU(), nn.Conv2d(3, 2, 2), nn.BatchNorm2d(2, affine=True)).double()
    net.train()
    net(torch.randn(6, 1, 5, 5, dtype=torch.float64) * 2)  # updates the running variances
    with torch.no_grad():
        net[4].weight.copy_(torch.tensor([0.25, 4.0], dtype=torch.float64))
    conv = float(torch.linalg.norm(net[0].weight.detach())) * float(torch.linalg.norm(net[3].weight.detach()))
    std = float(torch.linalg.norm(net[1].running_var.sqrt())) * float(torch.linalg.norm(net[4].running_var.sqrt()))
    gamma = math.sqrt(0.25 + 4.0)  # |sqrt(gamma)|_2
    norm = normalised_parametrisation(net)
    assert norm.bn_names == ("1", "4")
    assert float(norm.rho) == pytest.approx(conv * gamma / std, rel=1e-12)


def test_margins_match_a_per_sample_reference_and_the_binary_formula():
    g = torch.Generator().manual_seed(2)
    out = torch.randn(10, 3, dtype=torch.float64, generator=g)
    lab = torch.randint(0, 3, (10,), generator=g)
    m = margins(out, lab, 2.0)
    ref = [(float(out[i, lab[i]]) - max(float(out[i, c]) for c in range(3) if c != lab[i])) / 2.0 for i in range(10)]
    assert m.tolist() == pytest.approx(ref, abs=1e-15)
    out2 = torch.randn(6, 2, dtype=torch.float64, generator=g)
    lab2 = torch.tensor([0, 1, 1, 0, 0, 1])
    y = 1.0 - 2.0 * lab2.double()
    torch.testing.assert_close(margins(out2, lab2, 0.5), y * (out2[:, 0] - out2[:, 1]) / 0.5)
    s = margin_stats(m)
    assert s.mu == pytest.approx(sum(ref) / 10)
    assert s.second_moment == pytest.approx(sum(r * r for r in ref) / 10)
    assert s.sigma == pytest.approx(math.sqrt(s.second_moment - s.mu**2), rel=1e-9)
    assert s.minimum == pytest.approx(min(ref))


def test_margins_and_rho_reject_bad_input():
    out = torch.zeros(3, 2, dtype=torch.float64)
    with pytest.raises(LabelError, match=r"labels must lie in \[0, 2\)"):
        margins(out, torch.tensor([0, 2, 1]))
    with pytest.raises(LabelError, match="must be integers"):
        margins(out, torch.tensor([0.0, 1.0, 1.0]))
    with pytest.raises(ShapeError, match=r"labels must have shape \(3,\)"):
        margins(out, torch.tensor([0, 1]))
    with pytest.raises(ParameterError, match="rho must be a positive scalar"):
        margins(out, torch.tensor([0, 1, 1]), 0.0)
    with pytest.raises(ShapeError, match="Q >= 2"):
        margins(torch.zeros(3, 1), torch.tensor([0, 0, 0]))
    with pytest.raises(ParameterError, match="no Linear or Conv layer"):
        rho(nn.Sequential(nn.ReLU()))
    with pytest.raises(ParameterError, match="track_running_stats=False"):
        rho(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2, track_running_stats=False)))
    with pytest.raises(ParameterError, match="W_1 is zero"):
        normalise_layers([(torch.zeros(2, 2), None)])
