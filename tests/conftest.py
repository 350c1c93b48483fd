"""Suite-wide settings.

One torch thread: the suite's problems are tiny, and on a loaded 2-core machine OpenMP's
thread pool made them up to 100x slower (the CLI's --quick default is one thread too).
Results are bit-reproducible for a fixed thread count, so every test sees the same one.
"""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

torch.set_num_threads(1)

# Property tests (hypothesis): a fixed, bounded search, the same examples on every run and
# machine (derandomize), no example database written into the checkout.
settings.register_profile(
    "collapselab",
    max_examples=40,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
# A longer random search for developers: pytest --hypothesis-profile=thorough tests
settings.register_profile("thorough", parent=settings.get_profile("collapselab"), max_examples=1000, derandomize=False)
settings.load_profile("collapselab")


def mlp_rounding_bound(params, X):
    """Elementwise bound (N, Q) on the difference of two float64 evaluations of the MLP
    ``x -> relu(x W^T + b) ... W^T + b`` of ``params = [(W_l, b_l)]`` that sum in different
    orders (``nn.Linear``'s fused addmm against ``X @ W.T + b``, forward- against reverse-mode,
    another CPU kernel): each affine map is a sum of ``n + 1`` terms, off by at most
    ``(n + 1) eps (|W| |x| + |b|)`` per evaluation (Higham, Accuracy and Stability of Numerical
    Algorithms, 2nd ed., section 3.5), ReLU is 1-Lipschitz and an input error ``e`` goes on as
    ``|W| e``."""
    eps = torch.finfo(torch.float64).eps
    x, err = X, torch.zeros_like(X)
    with torch.no_grad():
        for i, (W, b) in enumerate(params):
            n = W.shape[1]
            err = err @ W.abs().T + 2 * (n + 1) * eps * (x.abs() @ W.abs().T + b.abs())
            x = x @ W.T + b
            if i < len(params) - 1:
                x = torch.relu(x)
    return err


@pytest.fixture
def rounding_bound():
    """:func:`mlp_rounding_bound`: ``rounding_bound(params, X)`` -> (N, Q) elementwise bound."""
    return mlp_rounding_bound


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    """A small clustered data set (3 classes x 10 points in R^4) saved as ``X``/``labels`` in an .npz file."""
    from collapselab.core.data import gaussian_clusters

    data = gaussian_clusters(3, 10, dim=4, delta=0.8, seed=4)
    path = tmp_path_factory.mktemp("data") / "clusters.npz"
    np.savez(path, X=data.X.numpy(), labels=data.labels.numpy())
    return path


@pytest.fixture(scope="session")
def catalogue_module():
    """docs/_tools/catalogue.py, the experiments catalogue of the documentation."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "docs" / "_tools" / "catalogue.py"
    spec = importlib.util.spec_from_file_location("collapselab_docs_catalogue", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def claims_catalogue(catalogue_module):
    """``check(result)``: a quick run's claims (ids, sources, references, tolerance reasons,
    numbers masked) match the experiments catalogue of the docs (docs/reference/experiments.md);
    rerun ``make catalogue`` after changing a claim."""
    module = catalogue_module

    def check(result):
        problems = module.differences(result.experiment, result.claims)
        assert not problems, "\n".join(problems)

    return check
