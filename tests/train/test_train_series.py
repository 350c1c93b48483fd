"""Series resume, data helpers, protocol helpers, optional TensorBoard."""

import math

import pytest
import torch

from collapselab.core.data import check_data, gaussian_clusters
from collapselab.core.errors import ParameterError, ShapeError
from collapselab.train import MLP, Series, TrainConfig, Trainer, as_images, randomise_labels
from collapselab.train.protocols import bn_settled_epoch


class Crash(Exception):
    pass


def test_series_resumes_inside_the_interrupted_run():
    data = gaussian_clusters(3, 10, dim=4, seed=0)

    def build_for(seed):
        def build(callbacks):
            torch.manual_seed(seed)
            return Trainer(MLP([4, 8, 3]).double(), (data.X, data.labels), TrainConfig(epochs=4, lr=0.05, batch_size=10, nc_points=2), callbacks=callbacks)

        return build

    def summarise(trainer, rows):
        return {"losses": [r["train_loss"] for r in rows], "epoch": trainer.epoch}

    def run_all(series):
        return [series.run(name, build_for(i), summarise) for i, name in enumerate(["a", "b"])]

    log_ref = []
    ref = run_all(Series(lambda s: None, log_ref.append))

    saved, log = [], []

    def save(state):
        saved.append(state)
        if state["series_current"] == "b" and state["trainer"]["epoch"] == 2:
            raise Crash

    with pytest.raises(Crash):
        run_all(Series(save, log.append))
    resumed = run_all(Series(lambda s: None, log.append, saved[-1]))
    assert resumed == ref
    assert [r["run"] for r in log_ref] == ["a"] * 4 + ["b"] * 4
    # the crashed epoch-2 row of "b" was logged before the crash and is logged again after resume
    assert [(r["run"], r["epoch"]) for r in log] == [("a", e) for e in range(1, 5)] + [("b", 1), ("b", 2), ("b", 3), ("b", 4)]


def test_as_images_padding_and_normalisations():
    X = torch.rand(5, 16, dtype=torch.float64)
    d = check_data(X, torch.tensor([0, 1, 0, 1, 1]))
    imgs, labels, (m, s) = as_images(d, pad_to=8, normalise="unit_norm", dtype=torch.float64)
    assert imgs.shape == (5, 1, 8, 8) and torch.equal(labels, d.labels) and (m, s) == (0.0, 1.0)
    torch.testing.assert_close(torch.linalg.vector_norm(imgs.flatten(1), dim=1), torch.ones(5, dtype=torch.float64))
    assert float(imgs[:, :, :2].abs().sum()) == 0.0 and float(imgs[:, :, :, -2:].abs().sum()) == 0.0
    torch.testing.assert_close(imgs[:, 0, 2:6, 2:6], X.reshape(5, 4, 4) / torch.linalg.vector_norm(X, dim=1).reshape(5, 1, 1))
    std, _, (m, s) = as_images(d, normalise="standardise", dtype=torch.float64)
    assert math.isclose(m, float(X.mean())) and math.isclose(s, float(X.std()))
    assert abs(float(std.mean())) < 1e-12 and math.isclose(float(std.std()), 1.0, rel_tol=1e-12)
    with pytest.raises(ShapeError, match="rows of length 16 are not 3 square channel"):
        as_images(d, channels=3)


def test_randomise_labels_redraws_the_requested_number():
    labels = torch.zeros(1000, dtype=torch.int64)
    out = randomise_labels(labels, 0.3, 4, generator=torch.Generator().manual_seed(0))
    changed = int((out != 0).sum())
    # 300 redrawn labels, each non-zero with probability 3/4: 225 +- 4 standard deviations
    assert abs(changed - 225) < 4 * math.sqrt(300 * 0.75 * 0.25)
    assert torch.equal(randomise_labels(labels, 0.0, 4, generator=torch.Generator()), labels)
    with pytest.raises(ParameterError, match="fraction must be float in"):
        randomise_labels(labels, 1.5, 4, generator=torch.Generator())


def test_bn_settled_epoch():
    # 0.9^44 = 0.0097 <= 0.01 < 0.9^43: 44 steps; 8 steps per epoch -> epoch 6
    assert bn_settled_epoch(128, 16, 30) == 6
    assert bn_settled_epoch(12000, 128, 1000) == 1
    assert bn_settled_epoch(128, 16, 3) == 3


def test_tensorboard_logger_is_optional(tmp_path):
    from collapselab.train import TensorBoardLogger

    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ParameterError, match="tensorboard is not importable"):
            TensorBoardLogger(tmp_path)
    else:
        TensorBoardLogger(tmp_path).close()


def test_randomise_labels_refuses_no_classes():
    with pytest.raises(ParameterError, match="randomise_labels: num_classes must be int in"):
        randomise_labels(torch.zeros(4, dtype=torch.int64), 0.5, 0, generator=torch.Generator())


def test_normalised_margins_of_a_float64_model_on_float32_images():
    from collapselab.toy import rho
    from collapselab.train import SquareLossConvNet
    from collapselab.train.protocols import normalised_margins

    torch.manual_seed(0)
    model = SquareLossConvNet(1, 2, channels=(3, 4, 5)).double()
    X = torch.rand(6, 1, 32, 32)
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    model.eval()
    with torch.no_grad():
        out = model(X.double())
    own, other = out[torch.arange(6), labels], out[torch.arange(6), 1 - labels]
    torch.testing.assert_close(normalised_margins(model, X, labels), (own - other) / float(rho(model)), rtol=1e-12, atol=1e-15)
