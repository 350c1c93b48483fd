"""Classifier networks of the seeds, written here (torchvision does not import beside this torch).

Every model exposes ``model.classifier``, the last layer; the *features* are the input of that
layer, flattened to ``(B, d)``, and :func:`classifier_weights` returns the classifier as a matrix
``W (C, d)`` and bias ``b (C,)`` acting on those features (``W h + b``), which is what the neural
collapse metrics need (docs/theory/neural-collapse.md, notation).

- :class:`MLP`: ``widths = [M, d_1, ..., d_L, C]``, ReLU (optional batch norm) hidden layers.
- :class:`SquareLossConvNet`: the Rangamani et al. 2021 "3 conv + FC" network as the authors' code builds it
  (docs/theory/square-loss.md, Rangamani et al. 2021 experiments): conv 3x3/s2 (C_in->32), BN, ReLU,
  conv 32->64 (s2), BN, ReLU, conv 64->128 (s2), BN, ReLU, conv 128->C with a 4x4 kernel (the
  classifier); BN affine off, conv biases on; 32x32 inputs.
- :class:`VGG`: VGG-11/13 (Simonyan and Zisserman 2015, configurations A and B) in the
  CIFAR form used by PHD 2020 and the ULPM paper (Ji et al. 2022, Fig 3): the convolutional stack, then
  one linear classifier on the 512-channel 1x1 map. 28x28 inputs are zero-padded to 32x32 so that
  the five 2x2 max-pools are exact (deviation from torchvision, which has a 4096-wide head for
  224x224 inputs). ``width`` scales every channel count (1.0 = the paper's widths).
- :class:`ResNet18`: He et al. 2016 in the CIFAR form (3x3 stem, no max-pool; blocks [2,2,2,2]),
  works for 28x28 and 32x32 (global average pooling). ``width`` scales the base width 64.

``make_model(name, ...)`` builds one by name (``"mlp"``, ``"conv002"``, ``"vgg11"``, ``"vgg13"``,
``"resnet18"``) and lists the known names on a miss. Models are float32 by default (training);
call ``.double()`` for float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..core.errors import ParameterError, UnknownNameError
from ..core.validation import Interval, OneOf, check_param

__all__ = [
    "MLP",
    "SquareLossConvNet",
    "VGG",
    "ResNet18",
    "MODELS",
    "make_model",
    "classifier_of",
    "classifier_weights",
    "scale_conv_init",
]


class MLP(nn.Module):
    """Fully connected ReLU classifier ``widths = [M, d_1, ..., d_L, C]``.

    Input ``(B, M)`` (or any shape, flattened from dim 1); output ``(B, C)``. ``batch_norm``
    inserts ``BatchNorm1d`` (affine as ``bn_affine``) before each ReLU, as the Rangamani et al. 2021
    toy model's normalisation stand-in. The classifier is ``layers[-1]``.
    """

    def __init__(self, widths: Sequence[int], *, batch_norm: bool = False, bn_affine: bool = True, bias: bool = True) -> None:
        super().__init__()
        widths = [int(check_param(f"widths[{i}]", w, Interval(int, 1), "MLP")) for i, w in enumerate(widths)]
        if len(widths) < 2:
            raise ParameterError(f"MLP: widths must list at least input and output sizes, got {widths}")
        self.widths = widths
        body: list[nn.Module] = [nn.Flatten()]
        for i in range(len(widths) - 2):
            body.append(nn.Linear(widths[i], widths[i + 1], bias=bias))
            if batch_norm:
                body.append(nn.BatchNorm1d(widths[i + 1], affine=bn_affine))
            body.append(nn.ReLU())
        self.body = nn.Sequential(*body)
        self.classifier = nn.Linear(widths[-2], widths[-1], bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.body(x))


class SquareLossConvNet(nn.Module):
    """The Rangamani et al. 2021 binary-classification network (Rangamani et al., CBMM Memo 117, Sec 7;
    layout completed from the authors' code, docs/theory/square-loss.md).

    ``(B, in_channels, 32, 32) -> (B, num_classes)``: three 3x3 stride-2 convolutions
    (``channels``, default 32, 64, 128) each followed by BatchNorm (``affine=False``) and ReLU,
    then the classifier: a convolution with a 4x4 kernel on the 4x4 map, i.e. a linear layer on
    the ``channels[-1] * 16`` features. All convolutions have biases. ``batch_norm=False``
    drops the BN layers (the seed's "no normalisation" variant).
    """

    def __init__(self, in_channels: int = 3, num_classes: int = 2, *, channels: Sequence[int] = (32, 64, 128), batch_norm: bool = True, input_size: int = 32) -> None:
        super().__init__()
        check_param("in_channels", in_channels, Interval(int, 1), "SquareLossConvNet")
        check_param("num_classes", num_classes, Interval(int, 1), "SquareLossConvNet")
        check_param("input_size", input_size, Interval(int, 8), "SquareLossConvNet")
        layers: list[nn.Module] = []
        c_prev, size = in_channels, int(input_size)
        for c in channels:
            layers.append(nn.Conv2d(c_prev, int(c), 3, stride=2, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(int(c), affine=False))
            layers.append(nn.ReLU())
            c_prev, size = int(c), (size + 1) // 2
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Conv2d(c_prev, num_classes, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x)).flatten(1)


VGG_CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
}


class VGG(nn.Module):
    """VGG-11/13 for 28x28 or 32x32 images (CIFAR form; see the module docstring).

    ``(B, in_channels, S, S) -> (B, num_classes)`` with ``S`` in {28, 32}; 28 is zero-padded
    to 32. ``width`` multiplies every channel count (rounded, at least 1); ``batch_norm``
    inserts BatchNorm2d after each convolution (the "vgg13_bn" variant).
    """

    def __init__(self, depth: int = 13, in_channels: int = 3, num_classes: int = 10, *, width: float = 1.0, batch_norm: bool = True, input_size: int = 32) -> None:
        super().__init__()
        name = f"vgg{depth}"
        if name not in VGG_CONFIGS:
            raise ParameterError(f"VGG: depth must be one of 11, 13, got {depth!r}")
        check_param("width", width, Interval(float, 0.0, closed="right"), "VGG")
        check_param("input_size", input_size, OneOf([28, 32]), "VGG")
        layers: list[nn.Module] = [nn.ZeroPad2d(2)] if input_size == 28 else []
        c_prev = in_channels
        for v in VGG_CONFIGS[name]:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            c = max(1, round(int(v) * width))
            layers.append(nn.Conv2d(c_prev, c, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(c))
            layers.append(nn.ReLU(inplace=True))
            c_prev = c
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, batch_norm: bool) -> None:
        super().__init__()
        norm = (lambda c: nn.BatchNorm2d(c)) if batch_norm else (lambda c: nn.Identity())
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=not batch_norm)
        self.bn1 = norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=not batch_norm)
        self.bn2 = norm(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=not batch_norm), norm(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 (He et al. 2016) in the CIFAR form: 3x3 stem, four stages of two basic blocks
    with ``64 w, 128 w, 256 w, 512 w`` channels (``w = width``), global average pooling, linear
    classifier. ``(B, in_channels, S, S) -> (B, num_classes)`` for any ``S >= 8`` (28 and 32)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, *, width: float = 1.0, batch_norm: bool = True) -> None:
        super().__init__()
        check_param("width", width, Interval(float, 0.0, closed="right"), "ResNet18")
        widths = [max(1, round(c * width)) for c in (64, 128, 256, 512)]
        stem: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=not batch_norm)]
        if batch_norm:
            stem.append(nn.BatchNorm2d(widths[0]))
        stem.append(nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []
        c_prev = widths[0]
        for i, c in enumerate(widths):
            for j in range(2):
                blocks.append(_BasicBlock(c_prev, c, 2 if (i > 0 and j == 0) else 1, batch_norm))
                c_prev = c
        self.features = nn.Sequential(*stem, *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(c_prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


MODELS = {
    "mlp": MLP,
    "conv002": SquareLossConvNet,
    "vgg11": lambda **kw: VGG(11, **kw),
    "vgg13": lambda **kw: VGG(13, **kw),
    "resnet18": ResNet18,
}


def make_model(name: str, **kwargs: object) -> nn.Module:
    """Build a model by name with its keyword arguments (see each class)."""
    if name not in MODELS:
        raise UnknownNameError(f"make_model: unknown model {name!r}; known: {', '.join(MODELS)}")
    return MODELS[name](**kwargs)


def classifier_of(model: nn.Module) -> nn.Module:
    """``model.classifier`` if it exists, else the last ``nn.Linear`` among the model's modules."""
    cls = getattr(model, "classifier", None)
    if isinstance(cls, nn.Module):
        return cls
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ParameterError(f"classifier_of: {type(model).__name__} has no .classifier and no nn.Linear; pass the classifier module explicitly")
    return linears[-1]


def classifier_weights(classifier: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The classifier as ``(W (C, d), b (C,) or None)`` acting on the flattened features.

    ``nn.Linear``: its weight and bias. ``nn.Conv2d`` whose kernel covers its whole input (the
    Rangamani et al. 2021 classifier; stride 1, no padding, no dilation, one group): ``weight.reshape(C, -1)``,
    which matches flattening the ``(c, h, w)`` feature map row-major. Returns detached tensors.
    """
    if isinstance(classifier, nn.Linear):
        W = classifier.weight
    elif isinstance(classifier, nn.Conv2d) and classifier.stride == (1, 1) and classifier.padding in ((0, 0), "valid") and classifier.dilation == (1, 1) and classifier.groups == 1:
        W = classifier.weight.reshape(classifier.out_channels, -1)
    else:
        raise ParameterError(f"classifier_weights: expected nn.Linear or a full-kernel nn.Conv2d, got {type(classifier).__name__}")
    b = classifier.bias
    return W.detach(), None if b is None else b.detach()


@torch.no_grad()
def scale_conv_init(model: nn.Module, scale: float, *, generator: torch.Generator | None = None) -> None:
    """Rangamani et al. 2021 initialisation: every conv/linear weight drawn normal, then rescaled to
    Frobenius norm ``scale`` (the same for every layer; docs/theory/square-loss.md). The
    protocol's draw has standard deviation 0.05, which cancels in the rescaling
    (``s w / |w|`` does not depend on the scale of ``w``), so a standard normal is drawn.
    ``generator`` is a CPU generator (same weights on every device). Biases keep PyTorch's
    default initialisation."""
    check_param("scale", scale, Interval(float, 0.0, closed="right"), "scale_conv_init")
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            w = torch.randn(m.weight.shape, generator=generator, dtype=m.weight.dtype, device="cpu").to(m.weight.device)
            m.weight.copy_(w * (scale / torch.linalg.vector_norm(w)))
