"""The square-loss protocol: exact ("precise") BN statistics of its conv net, measuring with them
during training, and exempting the classifier bias from weight decay."""

import pytest
import torch

from collapselab.core.errors import ParameterError
from collapselab.train import TrainConfig, Trainer
from collapselab.train import exact_batchnorm_statistics
from collapselab.train.protocols import exempt_from_weight_decay, seed002_model


def _images(n, seed):
    X = torch.randn(n, 1, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    return X / X.flatten(1).norm(dim=1).view(-1, 1, 1, 1)


@pytest.mark.parametrize("chunk", [7, 1024])
def test_exact_batchnorm_statistics_make_the_conv_net_equal_its_full_batch_training_mode(chunk):
    """Independent reference: a training-mode pass over all of X as one batch normalises every BN layer
    with the exact batch statistics of its input. Inside exact_batchnorm_statistics (in chunks or
    not) the eval-mode network must give the same outputs; float64 rounding over a few hundred terms per sum
    bounds the difference by ~1e-13 of the outputs."""
    model = seed002_model(5.0, channels=[4, 8, 16], seed=3, dtype=torch.float64)
    X = _images(40, 0)
    with torch.no_grad():
        with exact_batchnorm_statistics(model, list(X.split(chunk))):
            model.eval()
            evaluated = model(X)
        model.train()
        reference = model(X)
    assert model.training
    assert torch.allclose(evaluated, reference, rtol=0, atol=1e-11 * float(reference.abs().max()))
    # running statistics of mini-batches (PyTorch's default) differ: the check can fail
    lagging = seed002_model(5.0, channels=[4, 8, 16], seed=3, dtype=torch.float64)
    with torch.no_grad():
        for xb in X.split(8):
            lagging(xb)
        lagging.eval()
        assert not torch.allclose(lagging(X), reference, rtol=0, atol=1e-6)


def test_trainer_measures_with_exact_bn_at_the_nc_epochs():
    """Trainer(exact_bn=True): at the measured epochs its epoch_metrics see the eval-mode network
    equal to the training-mode one on the whole set (float64 rounding); training is unchanged."""
    X = _images(24, 1)
    y = torch.arange(24) % 2
    model = seed002_model(1.0, channels=[2, 2, 2], seed=0, dtype=torch.float64)
    trainer = Trainer(model, (X, y), TrainConfig(epochs=6, loss="mse", lr=0.01, batch_size=8, seed=0, nc_points=3), exact_bn=True, measure_batch_size=24)

    def metrics(m):
        if trainer.epoch not in trainer.nc_epochs:
            return {}
        m.eval()
        with torch.no_grad():
            out = m(X)
            m.train()
            ref = m(X)
        return {"gap": float((out - ref).abs().max())}

    trainer.epoch_metrics = metrics
    records = trainer.fit()
    assert all(("gap" in r.metrics) == (r.epoch in trainer.nc_epochs) for r in records)
    assert max(r.metrics["gap"] for r in records if r.measured) < 1e-10


def test_exempt_from_weight_decay_leaves_the_bias_undecayed():
    model = seed002_model(1.0, channels=[2, 2, 2], seed=0, dtype=torch.float64)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.5)
    bias = model.classifier.bias
    exempt_from_weight_decay(opt, [bias])
    assert [len(g["params"]) for g in opt.param_groups] == [len(list(model.parameters())) - 1, 1]
    assert opt.param_groups[1]["weight_decay"] == 0.0 and opt.param_groups[1]["momentum"] == 0.9
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()  # zero gradients: only weight decay moves a parameter, by the factor 1 - lr wd
    for n, p in model.named_parameters():
        factor = 1.0 if n == "classifier.bias" else 1.0 - 0.1 * 0.5
        assert torch.allclose(p, factor * before[n], rtol=1e-15, atol=0), n
    with pytest.raises(ParameterError, match="already have optimizer state"):
        exempt_from_weight_decay(opt, [model.classifier.weight])
    with pytest.raises(ParameterError, match="not in the optimizer"):
        exempt_from_weight_decay(torch.optim.SGD([bias], lr=0.1), [model.classifier.weight])
