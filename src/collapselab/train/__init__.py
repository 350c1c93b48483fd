"""Training loops with neural-collapse tracking, resumable checkpoints and data parallelism.

``Trainer(model, (X, labels), TrainConfig(epochs=...)).fit()`` trains any classifier with
cross-entropy or MSE, SGD/Adam, weight decay and the PHD step schedule, detects the terminal
phase (first epoch of zero training error), measures NC1-NC4 of the classifier's input features
at log-spaced epochs (through :mod:`collapselab.collapse`), stops on divergence with a
:class:`~collapselab.core.errors.DivergenceError`, and continues bit-identically from
:meth:`Trainer.state_dict`. Models of the seeds live in :mod:`.models`; :class:`Series` runs several trainings in one
resumable run folder; :mod:`.protocols` holds the Rangamani et al. 2021 protocol pieces.
"""

from .callbacks import Checkpoint, MetricsLogger, TensorBoardLogger
from .config import LOSSES, OPTIMIZERS, SCHEDULES, TrainConfig, log_spaced_epochs
from .data import NORMALISATIONS, as_images, randomise_labels
from .distributed import init_distributed, shutdown_distributed
from .measure import capture_input, exact_batchnorm_statistics, measure_features
from .models import MLP, MODELS, VGG, ResNet18, SquareLossConvNet, classifier_of, classifier_weights, make_model, scale_conv_init
from .protocols import BinaryImages, binary_fashion_mnist, bn_settled_epoch, exempt_from_weight_decay, normalised_margins, rho_metrics, seed002_model
from .series import Series
from .trainer import Callback, EpochRecord, Trainer

__all__ = [
    "BinaryImages",
    "Callback",
    "Checkpoint",
    "EpochRecord",
    "LOSSES",
    "MLP",
    "MODELS",
    "MetricsLogger",
    "NORMALISATIONS",
    "OPTIMIZERS",
    "ResNet18",
    "SCHEDULES",
    "Series",
    "SquareLossConvNet",
    "TensorBoardLogger",
    "TrainConfig",
    "Trainer",
    "VGG",
    "as_images",
    "binary_fashion_mnist",
    "bn_settled_epoch",
    "capture_input",
    "classifier_of",
    "classifier_weights",
    "exact_batchnorm_statistics",
    "exempt_from_weight_decay",
    "init_distributed",
    "log_spaced_epochs",
    "make_model",
    "measure_features",
    "normalised_margins",
    "randomise_labels",
    "rho_metrics",
    "scale_conv_init",
    "seed002_model",
    "shutdown_distributed",
]
