"""The multi-layer measurement behind the callbacks (no framework needed): every layer's
report equals collapse_report on that layer's features extracted by hand; the schedule,
the sharding and the errors at the boundary."""

import math
import sys

import pytest
import torch
from torch import nn

from collapselab.collapse import collapse_report
from collapselab.core.data import gaussian_clusters
from collapselab.core.errors import MissingDependencyError, ParameterError, UnknownNameError
from collapselab.integrations import CollapseMonitor, Layer, measure_layers, require
from collapselab.integrations._measure import resolve_layers
from collapselab.integrations._monitor import scalars, shard

# Tolerance (error model): the callback's features come from mini-batch forwards and the
# reference's from one full-batch forward; float64 GEMMs that sum in another order differ by
# ~ d eps |h| per entry (d <= 16 here), and the report's metrics are smooth functions of the
# class moments with condition numbers well below 1e4 for these separated clusters, so
# relative differences stay below 16 * 2.2e-16 * 1e4 ~ 4e-11; rtol 1e-9 with abs 1e-12 for
# entries near zero (bias collapse, margins).
RTOL, ATOL = 1e-9, 1e-12


def assert_reports_match(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys(), set(got) ^ set(expected)
    for k, v in expected.items():
        assert math.isclose(got[k], v, rel_tol=RTOL, abs_tol=ATOL), (k, got[k], v)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 12), nn.ReLU())
        self.tokens = nn.Linear(12, 12)
        self.head = nn.Linear(12, 3)

    def forward(self, x):
        h = self.body(x)
        return self.head(self.tokens(h.unsqueeze(1).expand(-1, 2, -1)).mean(1))


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(1)
    data = gaussian_clusters(3, 20, dim=6, delta=0.8, seed=4)
    model = Net().double()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data.X, data.labels), batch_size=7)
    return model, data, loader


def hand_reports(model, data):
    with torch.no_grad():
        h1 = model.body[1](model.body[0](data.X))
        h2 = model.body(data.X)
        t = model.tokens(h2.unsqueeze(1).expand(-1, 2, -1))
        pooled = t.mean(1)
    y = data.labels
    return {
        "body.1": scalars(collapse_report(h1, y)),
        "body": scalars(collapse_report(h2, y)),
        "cls": scalars(collapse_report(t[:, 0], y)),
        "head": scalars(collapse_report(pooled, y, model.head.weight.detach(), model.head.bias.detach())),
    }


@pytest.mark.parametrize("cache_bytes", [2**20, 0])  # replayed features (span covariance) / a second forward
def test_several_layers_match_collapse_report_by_hand(setup, cache_bytes):
    model, data, loader = setup
    layers = resolve_layers(model, ["body.1", "body", Layer("tokens", capture="output", feature_fn=lambda out: out[:, 0], name="cls"), Layer("head")], capture="output")
    reports = measure_layers(model, loader, 3, layers, device="cpu", cache_bytes=cache_bytes)
    expected = hand_reports(model, data)
    assert list(reports) == ["body.1", "body", "cls", "head"]
    for key, rep in reports.items():
        assert_reports_match(scalars(rep), expected[key])
    # the classifier metrics exist exactly where the layer is a classifier's input
    assert "nc3" in scalars(reports["head"]) and "accuracy" in scalars(reports["head"])
    assert "nc3" not in scalars(reports["body"]) and "ncc_accuracy" in scalars(reports["body"])


def test_default_layer_is_the_input_of_the_last_linear(setup):
    model, data, loader = setup
    monitor = CollapseMonitor(3, loader=loader, every=1)
    flat = monitor.measure(model, None, epoch=1, step=5, device="cpu")
    assert monitor.history[0]["epoch"] == 1 and list(monitor.history[0]["layers"]) == ["head"]
    assert_reports_match({k.split("/")[-1]: v for k, v in flat.items()}, hand_reports(model, data)["head"])
    assert monitor.from_flat(flat, epoch=1, step=5) == monitor.history[0]
    restored = CollapseMonitor(3, every=1)
    restored.load_state_dict(monitor.state_dict())
    assert restored.history == monitor.history and not restored.due(1, 3) and restored.due(2, 3)


def test_schedules():
    assert CollapseMonitor(3, every=3).schedule(10) == [3, 6, 9, 10]
    assert CollapseMonitor(3, epochs=[5, 1, 50]).schedule(10) == [1, 5]
    log = CollapseMonitor(3, count=4).schedule(100)
    assert log[0] == 1 and log[-1] == 100 and all(b / a > 2 for a, b in zip(log, log[1:]))
    with pytest.raises(ParameterError, match="pass epochs="):
        CollapseMonitor(3).schedule(None)
    with pytest.raises(ParameterError, match="not both"):
        CollapseMonitor(3, every=2, epochs=[1])


def test_shards_are_disjoint_and_cover_every_sample_once():
    data = torch.utils.data.TensorDataset(torch.arange(23.0).unsqueeze(1), torch.arange(23) % 2)
    loader = torch.utils.data.DataLoader(data, batch_size=4, shuffle=True, drop_last=True)
    seen = [torch.cat([x for x, _ in shard(loader, r, 3)]).flatten().tolist() for r in range(3)]
    assert sorted(sum(seen, [])) == list(range(23))
    assert seen[1] == [float(i) for i in range(1, 23, 3)]  # in order: no shuffling


def test_errors_name_the_problem(setup):
    model, _, loader = setup
    with pytest.raises(UnknownNameError, match="no module named 'nope'"):
        resolve_layers(model, "nope")
    with pytest.raises(ParameterError, match="same key"):
        resolve_layers(model, ["body", Layer("head", name="body")])
    bad = resolve_layers(model, Layer("tokens", capture="output", feature_fn=lambda out: out.sum()))
    with pytest.raises(ParameterError, match="feature_fn"):
        measure_layers(model, loader, 3, bad, device="cpu")
    with pytest.raises(ParameterError, match="a batch must be"):
        measure_layers(model, [torch.zeros(2, 6)], 3, resolve_layers(model, None), device="cpu")


def test_missing_framework_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightning", None)  # import lightning now raises ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install 'collapselab\[lightning\]'"):
        require("lightning", "lightning", "collapselab.integrations.lightning")
    monkeypatch.delitem(sys.modules, "collapselab.integrations.lightning", raising=False)
    with pytest.raises(MissingDependencyError, match=r"collapselab\[lightning\]"):
        import collapselab.integrations.lightning  # noqa: F401


@pytest.mark.parametrize("cache_bytes, passes", [(2**20, 1), (0, 2)])
def test_all_layers_come_from_one_forward_per_batch(setup, cache_bytes, passes):
    model, _, loader = setup
    calls = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        layers = resolve_layers(model, ["body.1", "body", "tokens", "head"], capture="output")
        measure_layers(model, loader, 3, layers, device="cpu", cache_bytes=cache_bytes)
    finally:
        handle.remove()
    # four layers; the features are kept (one forward per batch) or recomputed in pass 2
    assert len(calls) == passes * len(loader)
