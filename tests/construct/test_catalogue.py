"""Every construction over the problem catalogue x {float64, float32}.

Independent checks: the returned module is evaluated by plain PyTorch (``module(X)``,
no library code) and must reproduce the reported cost; the composition identity
``x^(L+1) = W^(L+1) tau(x) + b^(L+1)`` (CE23 Prop 2.2) must hold; the metric rule
(2.61) must agree with the nearest reference output.
"""

from __future__ import annotations

import json

import pytest
import torch

from collapselab.construct import CONSTRUCTIONS, ce23_cost, ce24_cost, construct

from .problems import DTYPES, PROBLEMS, Problem

pytestmark = pytest.mark.numerics  # run again under another CPU kernel path (Makefile: make test)


def _cost(kind: str, out: torch.Tensor, labels: torch.Tensor, Y: torch.Tensor) -> float:
    """The papers' costs written out directly (not via the library)."""
    r2 = (out - Y[labels]).pow(2).sum(1)
    if kind in ("sequential", "clustered-wide"):
        return float(0.5 * r2.sum())  # CE24 (2.11)
    counts = torch.bincount(labels).to(out.dtype)
    return float((r2 / counts[labels]).sum().sqrt())  # CE23 (2.35)


@pytest.fixture(scope="module", params=[(p, dt) for p in PROBLEMS for dt in DTYPES], ids=lambda pd: f"{pd[0].name}-{str(pd[1])[6:]}")
def built(request: pytest.FixtureRequest):
    problem, dtype = request.param
    X, labels, Y = problem.make()
    result = construct(problem.kind, X, labels, Y, dtype=dtype, **problem.options)
    Xt = torch.as_tensor(X, dtype=dtype)
    lab = torch.as_tensor(labels)
    Yt = torch.eye(int(lab.max()) + 1, dtype=dtype) if Y is None else torch.as_tensor(Y, dtype=dtype)
    return problem, dtype, result, Xt, lab, Yt


def _tol(dtype: torch.dtype, scale: float = 1.0) -> float:
    return (1e-12 if dtype == torch.float64 else 2e-4) * max(scale, 1.0)


def test_module_reproduces_cost(built) -> None:
    problem, dtype, result, X, labels, Y = built
    with torch.no_grad():
        out = result.module(X)
    assert out.dtype == dtype
    measured = _cost(problem.kind, out, labels, Y)
    assert abs(measured - result.cost) <= _tol(dtype, result.cost)
    library_cost = ce24_cost if problem.kind in ("sequential", "clustered-wide") else ce23_cost
    assert float(library_cost(out, labels, Y)) == pytest.approx(measured, rel=1e-5, abs=_tol(dtype) * 1e-3)
    if problem.exact:
        bound = 1e-20 if problem.kind != "clustered" else 1e-12
        assert result.cost < (bound if dtype == torch.float64 else 1e-3)
        assert measured < (bound if dtype == torch.float64 else 1e-3)


def test_composition_identity(built) -> None:
    _, dtype, result, X, _, _ = built
    W, b = result.cumulative[-1]
    with torch.no_grad():
        out = result.module(X)
    assert torch.allclose(result.truncate(X) @ W.T + b, out, atol=_tol(dtype) * 100, rtol=0)


def test_metric_rule(built) -> None:
    problem, _, result, X, labels, Y = built
    pred = result.classify(X)
    with torch.no_grad():
        nearest = torch.cdist(result.module(X), Y).argmin(1)
    if problem.exact or problem.kind == "shallow":
        assert torch.equal(pred, nearest)
    assert torch.equal(pred, labels)


def test_explanation_and_json(built) -> None:
    problem, _, result, X, labels, _ = built
    doc = json.loads(json.dumps(result.as_dict()))
    for key in ("cost", "layers", "delta_P", "num_parameters", "descriptive_parameters"):
        assert key in doc
    assert len(doc["layers"]) == result.module.depth
    assert doc["num_parameters"] == sum(p.numel() for p in result.module.parameters())
    q, m = int(labels.max()) + 1, X.shape[1]
    if problem.kind != "shallow":
        assert doc["descriptive_parameters"] == q * (m + 2)
    if problem.exact:
        # every collapsed class is mapped to its collapse point (CE23 (2.59), CE24 (5.14))
        tau = result.truncate(X)
        collapsed = [layer for layer in result.layers if layer.collapses_class is not None]
        assert sorted(layer.collapses_class for layer in collapsed) == list(range(q))
        for layer in collapsed:
            rows = tau[labels == layer.collapses_class]
            assert torch.allclose(rows, layer.collapse_point.expand_as(rows), atol=_tol(X.dtype) * 10, rtol=0)


def test_registry_lists_all_kinds() -> None:
    assert {p.kind for p in PROBLEMS} == set(CONSTRUCTIONS)


def test_problem_names_unique() -> None:
    assert len({p.name for p in PROBLEMS}) == len(PROBLEMS)
    assert all(isinstance(p, Problem) for p in PROBLEMS)
