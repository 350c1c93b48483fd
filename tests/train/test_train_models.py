"""Models: published parameter counts, shapes, and the classifier as (W, b) on the features."""

import pytest
import torch
from torch import nn

from collapselab.core.errors import ParameterError, UnknownNameError
from collapselab.train import MLP, VGG, ResNet18, SquareLossConvNet, capture_input, classifier_of, classifier_weights, make_model, scale_conv_init


def count(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def test_parameter_counts_match_the_reference_cifar_models():
    # kuangliu/pytorch-cifar VGG('VGG11'), VGG('VGG13'), ResNet18(): the CIFAR forms PHD 2020 train
    assert count(VGG(11)) == 9_231_114
    assert count(VGG(13)) == 9_416_010
    assert count(ResNet18()) == 11_173_962
    # Rangamani et al. 2021 net: 3->32->64->128 3x3 convs with biases, 128x4x4 -> 2 classifier conv
    assert count(SquareLossConvNet(3, 2)) == (3 * 32 * 9 + 32) + (32 * 64 * 9 + 64) + (64 * 128 * 9 + 128) + (128 * 2 * 16 + 2)


@pytest.mark.parametrize(
    "model, shape",
    [
        (MLP([12, 7, 5, 3], batch_norm=True), (4, 12)),
        (SquareLossConvNet(1, 2, channels=(4, 5, 6)), (4, 1, 32, 32)),
        (VGG(11, 1, 3, width=1 / 16, input_size=28), (4, 1, 28, 28)),
        (VGG(13, 3, 3, width=1 / 16, batch_norm=False), (4, 3, 32, 32)),
        (ResNet18(1, 3, width=1 / 16), (4, 1, 28, 28)),
    ],
)
def test_classifier_weights_reproduce_the_output(model, shape):
    torch.manual_seed(0)
    model = model.double().eval()
    x = torch.randn(shape, dtype=torch.float64)
    with capture_input(classifier_of(model)) as box:
        out = model(x)
    W, b = classifier_weights(classifier_of(model))
    assert out.shape == (4, W.shape[0])
    torch.testing.assert_close(box[0] @ W.T + b, out, rtol=1e-12, atol=1e-12)


def test_make_model_and_errors():
    assert isinstance(make_model("vgg13", in_channels=1, num_classes=10, width=0.125, input_size=28), VGG)
    with pytest.raises(UnknownNameError, match="unknown model 'vgg19'; known: mlp, conv002"):
        make_model("vgg19")
    with pytest.raises(ParameterError, match="input_size must be one of 28, 32"):
        VGG(13, input_size=30)
    with pytest.raises(ParameterError, match="depth must be one of 11, 13"):
        VGG(16)
    with pytest.raises(ParameterError, match="expected nn.Linear or a full-kernel nn.Conv2d"):
        classifier_weights(nn.Conv2d(3, 2, 3, padding=1))
    with pytest.raises(ParameterError, match="expected nn.Linear or a full-kernel nn.Conv2d"):
        classifier_weights(nn.Conv2d(4, 2, 2, groups=2))  # weight (2, 2, 2, 2) is not a (2, 16) matrix


def test_scale_conv_init_sets_every_layer_norm():
    model = SquareLossConvNet(1, 2)
    scale_conv_init(model, 0.1, generator=torch.Generator().manual_seed(0))
    norms = [float(torch.linalg.vector_norm(m.weight.detach())) for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(norms) == 4
    assert all(abs(n - 0.1) < 1e-6 for n in norms)
