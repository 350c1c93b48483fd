"""``collapselab train DATA``: train a model of :mod:`collapselab.train.models` with NC tracking.

Thin: the options are declared here; :mod:`._training` (imported when the command runs, as it
imports torch) resolves the options (fresh, or the recorded ones of ``--resume``), loads the data set
(:func:`collapselab.core.data.load_dataset`), builds the model (:func:`collapselab.train.make_model`)
and a :class:`collapselab.train.Trainer`, and writes a run folder like ``collapselab run``
(:class:`collapselab.core.store.RunFolder` under ``OUT/train/<run-id>``: config.json with the
resolved options and versions, metrics.csv one row per epoch, checkpoint.pt every epoch
(atomic), log.txt). Under ``torchrun`` every rank trains its share (gloo on CPU, NCCL on
CUDA); rank 0 alone writes the folder and prints, and every rank loads the checkpoint on
``--resume``: ``torchrun --nproc_per_node=2 $(which collapselab) train digits --threads 1``.
``--resume`` keeps what the numbers depend on: the recorded options, number of processes, CPU
threads and device type (a different one given is refused).
Bad input raises a :class:`~collapselab.core.errors.CollapseLabError`; the
top-level app prints ``error: ...`` and exits 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._command import Command

__all__ = ["TrainCommand", "train"]


def _help_values() -> dict[str, str]:
    """The registries named in the options' help (they import torch: filled in for ``train --help`` only)."""
    from ..core.data import LOADERS
    from ..train import NORMALISATIONS

    return {"datasets": ", ".join(LOADERS), "normalisations": ", ".join(NORMALISATIONS)}


class TrainCommand(Command):
    """``train``'s command class: its help names the data sets and normalisations."""

    help_values = staticmethod(_help_values)


def train(
    ctx: typer.Context,
    data: Annotated[str | None, typer.Argument(help="Data set: {datasets}, or a .npz/.pt file (arrays X (or features), labels) or an IDX folder. Not needed with --resume.")] = None,
    model: Annotated[str, typer.Option("--model", help="mlp, conv002, vgg11, vgg13 or resnet18 (conv nets take square images, see --channels).")] = "mlp",
    hidden: Annotated[list[int], typer.Option("--hidden", help="Hidden width of the MLP (repeat for more layers).")] = [256, 256],  # noqa: B006 (Typer reads, never mutates)
    width: Annotated[float, typer.Option("--width", help="Channel multiplier of vgg11/vgg13/resnet18 (1 = the papers' widths).")] = 1.0,
    batch_norm: Annotated[bool | None, typer.Option("--batch-norm/--no-batch-norm", help="Batch norm in the model (default: the model's own, off for mlp, on for the conv nets).")] = None,
    channels: Annotated[int, typer.Option("--channels", help="Image channels of the input rows (conv nets; rows of length channels * side^2).")] = 1,
    normalise: Annotated[str, typer.Option("--normalise", help="Input normalisation: {normalisations} (standardise: the training set's global mean and std, PHD 2020).")] = "standardise",
    subset: Annotated[int | None, typer.Option("--subset", help="Train on the first N samples of every class (balanced).")] = None,
    test: Annotated[bool, typer.Option("--test", help="Evaluate the test split (loss, error) at the NC epochs (data sets with a test split).")] = False,
    dtype: Annotated[str, typer.Option("--dtype", help="float32 or float64 (model and inputs; NC statistics are float64 either way).")] = "float32",
    sync_batchnorm: Annotated[bool, typer.Option("--sync-batchnorm", help="Under torchrun, batch-norm statistics of the global batch (SyncBatchNorm; CUDA only).")] = False,
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the training set (at most 100000).")] = 10,
    loss: Annotated[str, typer.Option("--loss", help="cross_entropy or mse (one-hot targets, PyTorch MSELoss).")] = "cross_entropy",
    optimizer: Annotated[str, typer.Option("--optimizer", help="sgd or adam.")] = "sgd",
    lr: Annotated[float, typer.Option("--lr", help="Initial learning rate.")] = 0.05,
    momentum: Annotated[float, typer.Option("--momentum", help="SGD momentum.")] = 0.9,
    weight_decay: Annotated[float, typer.Option("--weight-decay", help="PyTorch weight decay (penalty wd/2 |theta|^2 on the mean loss).")] = 5e-4,
    schedule: Annotated[str, typer.Option("--schedule", help="constant, phd_step (lr / 10 at epochs/3 and 2 epochs/3) or cosine.")] = "constant",
    batch_size: Annotated[int, typer.Option("--batch-size", help="Global mini-batch size (split over torchrun processes); 0 = full batch.")] = 128,
    nc_points: Annotated[int, typer.Option("--nc-points", help="Log-spaced epochs with NC metrics (the first and last always; 0 = none).")] = 20,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the model initialisation and the shuffle (an integer in [0, 2^63 - 1]).")] = 0,
    out: Annotated[Path, typer.Option("--out", help="Root folder of the run folders (the run goes to OUT/train/<run-id>).")] = Path("runs"),
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue this run folder from its last checkpoint, with its recorded options.")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda or cuda:N (under torchrun: cuda:LOCAL_RANK; --resume keeps the recorded device).")] = "cpu",
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="CPU threads for torch (per process; default: torch's; --resume keeps the recorded count).")] = None,
    tensorboard: Annotated[bool, typer.Option("--tensorboard", help="Also log the metrics to RUN_FOLDER/tensorboard (needs the tensorboard package).")] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object (final metrics, terminal epoch, run folder) and nothing else on stdout.")] = False,
) -> None:
    """Train a classifier with neural-collapse tracking into a resumable run folder."""
    from ._training import run_command

    run_command(ctx, dict(locals()))
