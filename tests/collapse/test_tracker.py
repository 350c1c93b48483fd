"""CollapseTracker and measure on real modules, against features computed by hand.

The modules run in float64: the tracker sees the features of 64-row batches, the reference one
300-row pass, and the two GEMMs may round differently (another blocking, another CPU kernel).
In float64 the features then agree to ~ k eps (k <= 16 terms per dot product, ~4e-15 relative),
and the metrics, smooth functions of class means and covariances, to about as much (a random
relative 1e-12 perturbation of these features moves every metric by at most ~3e-12):
``rel=1e-9`` leaves orders of margin and still catches any wrong feature or classifier. Counts
(accuracy, NC4) agree unless a margin is within ~1e-14 of a tie.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from collapselab.collapse import CollapseTracker, collapse_report, last_linear, measure
from collapselab.core.errors import ParameterError, UnknownNameError

pytestmark = pytest.mark.numerics  # run again under another CPU kernel path (Makefile: make test)

FIELDS = ("nc1", "nc1_trace_ratio", "cdnv", "nc2_etf_error_means", "nc2_etf_error_weights", "nc3", "nc4",
          "accuracy", "ncc_accuracy", "bias_collapse", "margin_mean", "nc_margin", "ulpm_within_class_variation")


def setup(C=4, N=300, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(N, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, C, (N,), generator=g)
    X = X + 2.0 * torch.nn.functional.one_hot(y, 6).double()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, C)).double()
    loader = DataLoader(TensorDataset(X, y), batch_size=64, shuffle=False)
    return model, loader, X, y


def close(a, b, fields=FIELDS, rel=1e-9):
    for k in fields:
        x, y = getattr(a, k), getattr(b, k)
        assert x == pytest.approx(y, rel=rel, abs=1e-12), k


def test_measure_defaults_to_the_input_of_the_last_linear():
    model, loader, X, y = setup()
    model.train()
    rep = measure(model, loader, 4)
    assert model.training  # mode restored
    with torch.no_grad():
        feats = model[:4](X)
    ref = collapse_report(feats, y, model[4].weight.detach(), model[4].bias.detach())
    close(rep, ref)
    assert last_linear(model) == "4"
    assert rep.num_samples == 300 and rep.dim == 8


def test_measure_several_layers_in_one_pass():
    model, loader, X, y = setup(seed=1)
    reps = measure(model, loader, 4, module=["2", "4"])
    with torch.no_grad():
        f2, f4 = model[:2](X), model[:4](X)
    close(reps["2"], collapse_report(f2, y), fields=("nc1", "cdnv", "nc2_etf_error_means"))
    assert reps["2"].nc3 is None  # Linear(16, 8) is not a classifier of 4 classes
    close(reps["4"], collapse_report(f4, y, model[4].weight.detach(), model[4].bias.detach()))


@pytest.mark.parametrize("cache_bytes,passes", [(2**28, 1), (0, 2), (300 * 8 * 8 - 1, 2)])
def test_measure_runs_the_model_once_when_the_features_fit(cache_bytes, passes):
    model, loader, X, y = setup(seed=2)
    calls = []
    model[0].register_forward_hook(lambda *_: calls.append(1))
    rep = measure(model, loader, 4, cache_bytes=cache_bytes)  # the last budget misses by one byte
    assert len(calls) == passes * len(loader)
    with torch.no_grad():
        feats = model[:4](X)
    close(rep, collapse_report(feats, y, model[4].weight.detach(), model[4].bias.detach()))


def test_measure_replays_a_one_shot_iterable():
    model, loader, X, y = setup(seed=3)
    rep = measure(model, iter(list(loader)), 4)  # a second pass over an iterator would see nothing
    with torch.no_grad():
        feats = model[:4](X)
    close(rep, collapse_report(feats, y, model[4].weight.detach(), model[4].bias.detach()))
    with pytest.raises(ParameterError, match="cache_bytes must be"):
        measure(model, loader, 4, cache_bytes=-1)


class SmallCNN(nn.Module):
    def __init__(self, C):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(4 * 5 * 5, C)

    def forward(self, x):
        return self.fc(self.conv(x).flatten(1))


@pytest.mark.parametrize("pool", ["flatten", "avg"])
def test_conv_feature_maps_are_pooled(pool):
    torch.manual_seed(2)
    C = 3
    X = torch.randn(120, 1, 5, 5, dtype=torch.float64)
    y = torch.arange(120) % C
    X[:, 0, 0, :] += y.unsqueeze(1).double()
    net = SmallCNN(C).double()
    loader = DataLoader(TensorDataset(X, y), batch_size=50)
    rep = measure(net, loader, C, module="conv", capture="output", pool=pool)
    with torch.no_grad():
        maps = net.conv(X)
    feats = maps.flatten(1) if pool == "flatten" else maps.mean((2, 3))
    close(rep, collapse_report(feats, y), fields=("nc1", "cdnv", "nc2_etf_error_means", "ncc_accuracy"))
    assert rep.dim == (100 if pool == "flatten" else 4)


def test_tracker_during_training_records_only_inside_labels_block():
    model, loader, X, y = setup(seed=3)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # weights fixed: the features are reproducible
    seen = []
    with CollapseTracker(model, 4) as tracker:
        for xb, yb in loader:
            with tracker.labels(yb):
                out = model(xb)
            seen.append(xb)
            nn.functional.cross_entropy(out, yb).backward()
            opt.step()
            model(xb)  # an unlabelled forward is ignored
        rep = tracker.report()["4"]
    with torch.no_grad():
        feats = model[:4](X)
    ref = collapse_report(feats, y, model[4].weight.detach(), model[4].bias.detach())
    close(rep, ref, fields=("nc1", "cdnv", "nc3", "accuracy", "margin_mean", "nc_margin"))
    assert rep.nc4 is None  # no reference means during a one-pass tracking
    assert tracker.statistics["4"].num_samples == 300


def test_tracker_with_previous_means_gives_nc4_in_one_pass():
    model, loader, X, y = setup(seed=4)
    first = measure(model, loader, 4)
    with CollapseTracker(model, 4, means=first.means) as tracker, torch.no_grad():
        for xb, yb in loader:
            with tracker.labels(yb):
                model(xb)
    rep = tracker.report()["4"]
    close(rep, first)


def test_tracker_errors():
    model, loader, X, y = setup()
    with pytest.raises(UnknownNameError, match="model has no module named 'head'"):
        CollapseTracker(model, 4, modules="head")
    with pytest.raises(ParameterError, match="has no nn.Linear layer"):
        CollapseTracker(nn.Sequential(nn.ReLU()), 4)
    with pytest.raises(ParameterError, match="capture must be one of 'input', 'output'"):
        CollapseTracker(model, 4, capture="inputs")
    with pytest.raises(ParameterError, match=r"each batch must be \(inputs, labels, ...\)"):
        measure(model, [X[:10]], 4)
    with CollapseTracker(model, 4) as tracker:
        with pytest.raises(ValueError, match="labels has length 3 but features has 10 rows"):
            with tracker.labels(y[:3]):
                model(X[:10])
