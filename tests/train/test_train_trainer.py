"""Trainer: loss conventions, one optimizer step by hand, schedules, terminal phase,
divergence, batching and state checks (no NC measurement here: nc_points=0)."""

import math

import pytest
import torch
from torch import nn

from collapselab.core.data import gaussian_clusters
from collapselab.core.errors import ConfigError, DivergenceError, EmptyClassError, LabelError, NonFiniteError, ParameterError, ShapeError
from collapselab.train import MLP, Checkpoint, TrainConfig, Trainer, log_spaced_epochs
from collapselab.train._batches import EpochBatches

pytestmark = pytest.mark.numerics  # run again under another CPU kernel path (Makefile: make test)


@pytest.fixture(scope="module")
def data():
    return gaussian_clusters(3, 20, dim=4, delta=0.5, seed=3)


def linear(seed=0, M=4, P=3):
    torch.manual_seed(seed)
    return MLP([M, P]).double()


def test_mse_epoch_loss_is_the_mean_over_batch_and_outputs(data):
    T = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0]], dtype=torch.float64)
    model = linear(P=2)
    with torch.no_grad():
        expected = float(((model(data.X) - T[data.labels]) ** 2).sum() / (data.num_samples * 2))
    rec = Trainer(model, (data.X, data.labels), TrainConfig(epochs=1, loss="mse", batch_size=None, nc_points=0), targets=T).fit()[0]
    assert math.isclose(rec.train_loss, expected, rel_tol=1e-13)


def test_one_full_batch_sgd_step_by_hand(data):
    lr, wd = 0.3, 0.01
    model, ref = linear(), linear()
    W0, b0 = ref.classifier.weight.detach().clone(), ref.classifier.bias.detach().clone()
    # closed-form gradient of the mean cross-entropy of a linear model: G = (softmax - onehot)/N
    G = (torch.softmax(data.X @ W0.T + b0, dim=1) - torch.eye(3, dtype=torch.float64)[data.labels]) / data.num_samples
    W1 = W0 - lr * (G.T @ data.X + wd * W0)
    b1 = b0 - lr * (G.sum(0) + wd * b0)
    Trainer(model, (data.X, data.labels), TrainConfig(epochs=1, lr=lr, weight_decay=wd, batch_size=None, nc_points=0)).fit()
    # autograd sums the N per-sample gradients in its own order (and its softmax may round
    # otherwise): G^T X is off by at most ~ 2 N eps |G|^T |X| (plus a few eps |G| from the softmax),
    # scaled by lr; the update W0 - lr g rounds once more (2 eps relative)
    N, eps = data.num_samples, torch.finfo(torch.float64).eps
    atol_w = lr * 4 * N * eps * (G.abs().T @ data.X.abs() + wd * W0.abs())
    atol_b = lr * 4 * N * eps * (G.abs().sum(0) + wd * b0.abs())
    assert bool(((model.classifier.weight.detach() - W1).abs() <= atol_w + 2 * eps * W1.abs()).all())
    assert bool(((model.classifier.bias.detach() - b1).abs() <= atol_b + 2 * eps * b1.abs()).all())
    assert float((W1 - W0).abs().max()) > 1e4 * float(atol_w.max())  # the step is resolved


def test_schedules(data):
    def lrs(schedule, epochs):
        return [r.lr for r in Trainer(linear(), (data.X, data.labels), TrainConfig(epochs=epochs, lr=1.0, schedule=schedule, batch_size=None, nc_points=0)).fit()]

    step = lrs("phd_step", 9)
    assert step == pytest.approx([1.0] * 3 + [0.1] * 3 + [0.01] * 3, rel=1e-12)
    cos = lrs("cosine", 4)
    assert cos == pytest.approx([0.5 * (1 + math.cos(math.pi * e / 4)) for e in range(4)], rel=1e-12)


def test_terminal_phase_is_the_first_zero_error_epoch(data):
    recs = Trainer(MLP([4, 16, 3]).double(), (data.X, data.labels), TrainConfig(epochs=30, lr=0.1, batch_size=15, nc_points=0)).fit()
    zero = [r.epoch for r in recs if r.train_error == 0.0]
    assert zero, "separable clusters must be fitted in 30 epochs"
    assert all(r.terminal_epoch == (zero[0] if r.epoch >= zero[0] else None) for r in recs)


def test_mse_prediction_is_the_nearest_target(data):
    T = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]], dtype=torch.float64)
    tr = Trainer(linear(P=2), (data.X, data.labels), TrainConfig(epochs=1, loss="mse", nc_points=0), targets=T)
    out = torch.randn(50, 2, dtype=torch.float64)
    assert torch.equal(tr.predict(out), torch.cdist(out, T).argmin(dim=1))


def test_diverging_learning_rate_is_caught_and_the_last_checkpoint_kept(data, tmp_path):
    # full-batch GD on the MSE of a linear model is unstable for lr > 2 / lambda_max(Hessian);
    # at 1.5 x that bound the top mode doubles every step, so the loss blows up after ~10 epochs
    X1 = torch.cat([data.X, torch.ones(data.num_samples, 1, dtype=torch.float64)], dim=1)
    lam = 2 * float(torch.linalg.matrix_norm(X1, ord=2)) ** 2 / (data.num_samples * 3)
    path = tmp_path / "ck.pt"
    cfg = TrainConfig(epochs=60, loss="mse", lr=1.5 * 2 / lam, momentum=0.0, weight_decay=0.0, batch_size=None, nc_points=0)
    trainer = Trainer(linear(), (data.X, data.labels), cfg, callbacks=[Checkpoint(path=path)])
    with pytest.raises(DivergenceError, match=r"diverged at epoch \d+, step 1: the batch loss .* exceeds 1e\+06 x the first batch loss .*lower the learning rate") as err:
        trainer.fit()
    state = torch.load(path, weights_only=False)
    assert 3 <= state["epoch"] < 60
    assert f"end of epoch {state['epoch']}" in str(err.value)
    assert all(bool(torch.isfinite(t).all()) for t in state["model"].values())
    huge = TrainConfig(epochs=50, loss="mse", lr=1e8, momentum=0.0, weight_decay=0.0, batch_size=None, nc_points=0, max_loss_ratio=1e308)
    with pytest.raises(DivergenceError, match=r"the batch loss (inf|nan) is not finite"):
        Trainer(linear(), (data.X, data.labels), huge).fit()
    bad = data.X.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"Trainer: training inputs has 1 non-finite entry, first NaN at index \(0, 0\)"):
        Trainer(linear(), (bad, data.labels), TrainConfig(epochs=1, nc_points=0))
    with pytest.raises(EmptyClassError, match=r"classes must be 0..2 with every class present, but class 1 has no samples"):
        Trainer(linear(), (data.X, data.labels.clamp(max=0) * 2), TrainConfig(epochs=1, nc_points=0), num_classes=3)


def test_state_dict_round_trip_continues_identically(data):
    cfg = TrainConfig(epochs=6, lr=0.05, batch_size=16, schedule="phd_step", nc_points=0)
    torch.manual_seed(0)
    full = [r.train_loss for r in Trainer(MLP([4, 8, 3]).double(), (data.X, data.labels), cfg).fit()]
    torch.manual_seed(0)
    first = Trainer(MLP([4, 8, 3]).double(), (data.X, data.labels), cfg)
    head = [next(first.iterate()).train_loss for _ in range(3)]
    state = first.state_dict()
    second = Trainer(MLP([4, 8, 3]).double(), (data.X, data.labels), cfg)  # different init, overwritten
    second.load_state_dict(state)
    assert head + [r.train_loss for r in second.fit()] == full
    with pytest.raises(ConfigError, match="resume with the recorded configuration"):
        Trainer(MLP([4, 8, 3]).double(), (data.X, data.labels), TrainConfig(epochs=7)).load_state_dict(state)


def test_epoch_batches_shard_the_global_batch():
    single = EpochBatches(23, 6, seed=5)
    ranks = [EpochBatches(23, 6, seed=5, rank=r, world=3) for r in range(3)]
    for _ in range(2):
        glob = single.epoch()
        parts = [rk.epoch() for rk in ranks]
        for k, (idx, size) in enumerate(glob):
            merged = torch.cat([p[k][0] for p in parts])
            assert sorted(merged.tolist()) == sorted(idx.tolist()) and all(p[k][1] == size for p in parts)
    assert sorted(torch.cat([rk.shard() for rk in ranks]).tolist()) == list(range(23))
    # 23 = 3 x 6 + 5: the last batch gives ranks 2, 2, 1 samples; every other step 2 each
    smallest = min(idx.numel() for rk in ranks for idx, _ in rk.epoch())
    assert smallest == ranks[0].smallest_share == 1 and single.smallest_share == 5


def test_batch_norm_needs_two_samples_per_step(data):
    # 60 samples in batches of 59: the last step has one sample, which BatchNorm1d cannot normalise
    bn = MLP([4, 8, 3], batch_norm=True).double()
    with pytest.raises(ParameterError, match="gives a process 1 sample.*BatchNorm1d needs at least 2"):
        Trainer(bn, (data.X, data.labels), TrainConfig(epochs=1, batch_size=59, nc_points=0))
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):  # what torch would say mid-epoch
        bn.train()(data.X[:1])
    Trainer(bn, (data.X, data.labels), TrainConfig(epochs=1, batch_size=58, nc_points=0)).fit()  # last step: 2 samples


def test_log_spaced_epochs_and_config_errors(data):
    pts = log_spaced_epochs(350, 50)
    assert pts[0] == 1 and pts[-1] == 350 and 30 <= len(pts) <= 52 and pts == sorted(set(pts))
    assert log_spaced_epochs(10, 0) == []
    with pytest.raises(ParameterError, match="TrainConfig: loss must be one of 'cross_entropy', 'mse', got 'hinge'"):
        TrainConfig(epochs=1, loss="hinge")
    with pytest.raises(ShapeError, match=r"targets must have shape \(3, P\)"):
        Trainer(linear(), (data.X, data.labels), TrainConfig(epochs=1, loss="mse"), targets=torch.eye(2))
    with pytest.raises(ParameterError, match="batch_size 1 is smaller than the 2 processes"):
        EpochBatches(10, 1, seed=0, world=2)
    with pytest.raises(ParameterError, match="the model has no parameters"):
        Trainer(nn.ReLU(), (data.X, data.labels), TrainConfig(epochs=1))


def test_mse_targets_of_another_width_measure_the_class_level_metrics(data):
    # features of a linear model are its inputs, so NC1 is that of X whatever the weights;
    # a 2-output classifier for 3 classes has no classifier metrics (NaN), the keys stay the same
    from collapselab.collapse import nc1

    T = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0]], dtype=torch.float64)
    cfg = TrainConfig(epochs=1, loss="mse", batch_size=None, nc_points=1)
    narrow = Trainer(linear(P=2), (data.X, data.labels), cfg, targets=T).fit()[0].metrics
    square = Trainer(linear(P=3), (data.X, data.labels), cfg).fit()[0].metrics
    assert narrow.keys() == square.keys()
    assert math.isclose(narrow["nc1"], nc1(data.X, data.labels), rel_tol=1e-10)
    assert math.isclose(narrow["nc1"], square["nc1"], rel_tol=1e-10)
    assert all(math.isnan(narrow[k]) for k in ("nc3", "nc4", "accuracy")) and not math.isnan(square["nc3"])


def test_fractional_labels_and_bad_parameters_are_refused(data, tmp_path):
    with pytest.raises(LabelError, match=r"labels must be integers, got non-integral values such as \d\.5"):
        Trainer(linear(), (data.X, data.labels.double() + 0.5), TrainConfig(epochs=1, nc_points=0))
    bad_targets = torch.eye(3)
    bad_targets[1, 1] = float("nan")
    with pytest.raises(NonFiniteError, match=r"Trainer: targets has 1 non-finite entry"):
        Trainer(linear(), (data.X, data.labels), TrainConfig(epochs=1, loss="mse"), targets=bad_targets)
    with pytest.raises(ParameterError, match="Trainer: measure_batch_size must be int in"):
        Trainer(linear(), (data.X, data.labels), TrainConfig(epochs=1), measure_batch_size=0)
    with pytest.raises(ParameterError, match="Trainer: num_classes must be int in"):
        Trainer(linear(), Pairs(data), TrainConfig(epochs=1), num_classes=0)
    with pytest.raises(ParameterError, match="Checkpoint: every must be int in"):
        Checkpoint(path=tmp_path / "ck.pt", every=0)


class Pairs(torch.utils.data.Dataset):
    """A generic map-style data set of ``(x, label)`` pairs (goes through a DataLoader)."""

    def __init__(self, data):
        self.data = data

    def __len__(self):
        return self.data.num_samples

    def __getitem__(self, i):
        return self.data.X[i], self.data.labels[i]


def test_generic_dataset_trains_like_tensors(data):
    cfg = TrainConfig(epochs=2, lr=0.05, batch_size=16, nc_points=2)
    tensors = Trainer(linear(), (data.X, data.labels), cfg).fit()
    generic = Trainer(linear(), Pairs(data), cfg, num_classes=3).fit()
    assert [r.row() for r in generic] == [r.row() for r in tensors]


def test_test_labels_are_range_checked_and_may_miss_classes(data):
    cfg = TrainConfig(epochs=1, batch_size=None, nc_points=1)
    wrong = data.labels.clone()
    wrong[4] = 3
    with pytest.raises(LabelError, match=r"Trainer \(test set\): labels must lie in \[0, 3\) like the training labels, found 3; relabel"):
        Trainer(linear(), (data.X, data.labels), cfg, test=(data.X, wrong))
    with pytest.raises(LabelError, match=r"Trainer \(test set\): labels must lie in \[0, 3\) like the training labels, found -4"):
        Trainer(linear(), (data.X, data.labels), cfg, test=(data.X, wrong - 4))
    # a generic data set is checked as its batches are read (at the first test pass)
    with pytest.raises(LabelError, match=r"Trainer \(test set\): labels must lie in \[0, 3\) like the training labels, found 3"):
        Trainer(linear(), (data.X, data.labels), cfg, test=Pairs(data.__class__(data.X, wrong, data.Y))).fit()
    # a test set without class 2 is fine; its loss is the mean cross-entropy of its samples
    keep = data.labels < 2
    model = linear()
    rec = Trainer(model, (data.X, data.labels), cfg, test=(data.X[keep], data.labels[keep])).fit()[0]
    with torch.no_grad():  # the test pass runs after the epoch's update
        expected = float(torch.nn.functional.cross_entropy(model(data.X[keep]), data.labels[keep]))
    assert math.isclose(rec.metrics["test_loss"], expected, rel_tol=1e-12)


def test_model_and_inputs_are_checked_against_each_other_before_training():
    from collapselab.train import SquareLossConvNet

    torch.manual_seed(0)
    conv = SquareLossConvNet(in_channels=1, num_classes=3, input_size=28).double()
    rows, labels = torch.randn(6, 784, dtype=torch.float64), torch.arange(6) % 3
    before = {k: v.clone() for k, v in conv.state_dict().items()}
    with pytest.raises(ShapeError, match=r"Trainer: the model cannot take the training inputs of shape \(6, 784\) .*expects images \(N, 1, H, W\), got rows \(N, 784\): reshape them, X.reshape\(-1, 1, 28, 28\)"):
        Trainer(conv, (rows, labels), TrainConfig(epochs=1, batch_size=3, nc_points=0))
    assert all(torch.equal(v, before[k]) for k, v in conv.state_dict().items())  # the probe changed nothing
    assert conv.training
    Trainer(conv, (rows.reshape(-1, 1, 28, 28), labels), TrainConfig(epochs=1, batch_size=3, nc_points=0))  # the named fix works
    head = nn.Sequential(nn.Linear(4, 3)).double()  # no flatten: images reach the Linear
    with pytest.raises(ShapeError, match=r"starts with an nn.Linear of 4 inputs and expects rows \(N, 4\): flatten"):
        Trainer(head, (torch.randn(6, 1, 2, 2, dtype=torch.float64), labels), TrainConfig(epochs=1, nc_points=0))
    with pytest.raises(ShapeError, match=r"first nn.Linear takes 4 inputs per sample but a sample has 9 values"):
        Trainer(linear(), (torch.randn(6, 9, dtype=torch.float64), labels), TrainConfig(epochs=1, nc_points=0))
    with pytest.raises(ShapeError, match=r"the model has 2 outputs but the labels have 3 classes"):
        Trainer(linear(P=2), (torch.randn(6, 4, dtype=torch.float64), labels), TrainConfig(epochs=1, nc_points=0))


def test_absurd_horizons_are_refused():
    with pytest.raises(ParameterError, match=r"epochs must be int in \[1, 100000\], got 1000000000"):
        TrainConfig(epochs=10**9)
    with pytest.raises(ParameterError, match=r"seed must be an integer in \[0, 2\^63 - 1\], got -1"):
        TrainConfig(epochs=1, seed=-1)
    # a huge nc_points asks for every epoch, without allocating nc_points values
    assert log_spaced_epochs(7, 10**12) == list(range(1, 8))
    assert log_spaced_epochs(350, 10**6) == log_spaced_epochs(350, 35_000) == list(range(1, 351))


def test_on_step_reports_every_step_of_every_epoch(data):
    from collapselab.cli._training import _step_display

    trainer = Trainer(linear(), (data.X, data.labels), TrainConfig(epochs=2, batch_size=25, nc_points=0))  # 60 samples: 3 steps
    calls = []
    trainer.on_step = lambda step, steps: calls.append((step, steps))
    trainer.fit()
    assert calls == [(1, 3), (2, 3), (3, 3)] * 2

    class Bar:
        shown: list[str] = []

        def set_description_str(self, text):
            self.shown.append(text)

    show = _step_display(Bar(), every=3600.0)  # the first step and the last of an epoch are always shown
    for step in (1, 2, 3):
        show(step, 3)
    assert Bar.shown == ["train (step 1/3)", "train (step 3/3)"]


@pytest.mark.parametrize("chunk", [None, 7])
def test_exact_batchnorm_statistics_make_eval_mode_the_full_batch_network(data, chunk):
    """Precise BN: inside the block the eval-mode network equals the training-mode network on the
    whole set as one batch, whether the inputs come as that one batch (one training-mode pass) or
    in chunks (layer by layer): float64, the two differ by the rounding of the same sums, a few eps
    times the activations' scale. On exit the running statistics are restored."""
    from collapselab.train import exact_batchnorm_statistics

    torch.manual_seed(0)
    model = MLP([4, 16, 16, 3], batch_norm=True).double()
    with torch.no_grad():
        model.train()
        model(2.0 * data.X + 1.0)  # running statistics of other inputs, as after training on drifting weights
        full_batch = model(data.X)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        model.eval()
        lagging = model(data.X)
        with exact_batchnorm_statistics(model, [data.X] if chunk is None else list(data.X.split(chunk))):
            exact = model(data.X)
            assert not model.training
        assert model.training is False
    assert torch.allclose(exact, full_batch, rtol=0, atol=1e3 * torch.finfo(torch.float64).eps * float(full_batch.abs().max()))
    assert float((lagging - full_batch).abs().max()) > 1e-3  # the running statistics were not the full batch's
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, nn.BatchNorm1d))


def test_exact_bn_measurement_leaves_training_unchanged(data):
    """``exact_bn`` changes what is measured, not the trajectory: the same losses and weights."""
    runs = []
    for exact in (False, True):
        torch.manual_seed(1)
        model = MLP([4, 16, 3], batch_norm=True).double()
        recs = Trainer(model, (data.X, data.labels), TrainConfig(epochs=4, lr=0.1, batch_size=15, nc_points=4), exact_bn=exact, measure_batch_size=data.num_samples).fit()
        runs.append(([r.train_loss for r in recs], model.state_dict(), recs[-1].metrics["nc1"]))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(v, runs[1][1][k]) for k, v in runs[0][1].items())
    assert runs[0][2] != runs[1][2]  # measured with other statistics
