"""The work behind ``collapselab train`` (:mod:`.train` holds the command and its options):
resolve the options (fresh, or the recorded ones of ``--resume``), load the data, build the model
and a :class:`collapselab.train.Trainer`, train into a run folder, summarise. Imported when the
command runs (it imports torch), so ``collapselab --help`` starts without it.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
import typer

from ..core.data import LOADERS, ClassificationData, load_dataset, select_classes
from ..core.errors import ConfigError, ParameterError
from ..core.runtime import resolve_device
from ..core.store import RunFolder, new_run_id, read_metrics
from ..core.validation import Interval, OneOf, check_param
from ..experiments._base import folder_logging, seed_everything, torch_threads
from ..experiments._progress import progress
from ..train import NORMALISATIONS, Checkpoint, MetricsLogger, TensorBoardLogger, TrainConfig, Trainer, as_images, init_distributed, make_model, shutdown_distributed

__all__ = ["run_command"]

log = logging.getLogger("collapselab.cli.train")

RUN_NAME = "train"  # run folders go to OUT/train/<run-id>; config.json's "experiment"
DTYPES = {"float32": torch.float32, "float64": torch.float64}
# the options that define the run: recorded in config.json, compared on --resume
RUN_OPTIONS = (
    "data", "model", "hidden", "width", "batch_norm", "channels", "normalise", "subset", "test", "dtype", "sync_batchnorm",
    "epochs", "loss", "optimizer", "lr", "momentum", "weight_decay", "schedule", "batch_size", "nc_points", "seed",
)  # fmt: skip


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether option ``name`` was set by the user (command line or environment), not defaulted."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _recorded(folder: RunFolder, resume: Path) -> dict[str, Any]:
    """The run's config.json, checked: a `collapselab train` run with every run option recorded."""
    try:
        doc = folder.config
    except (ValueError, UnicodeDecodeError) as exc:  # json.JSONDecodeError is a ValueError
        raise ConfigError(f"--resume {resume}: config.json is not valid JSON ({exc}); the run cannot be continued without its recorded options: start a new run") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"--resume {resume}: config.json holds a {type(doc).__name__}, not a run record; start a new run")
    if doc.get("experiment") != RUN_NAME:
        raise ConfigError(f"--resume {resume} is a run of {doc.get('experiment')!r}, not of `collapselab train`; resume it with `collapselab run {doc.get('experiment')} --resume {resume}`")
    recorded = doc.get("config")
    missing = [name for name in RUN_OPTIONS if not isinstance(recorded, dict) or name not in recorded]
    if missing:
        raise ConfigError(f"--resume {resume}: config.json lacks the recorded option(s) {', '.join(missing)}; the run cannot be continued as recorded: start a new run")
    return doc


def _resolve(ctx: typer.Context, values: dict[str, Any], resume: Path | None) -> tuple[dict[str, Any], RunFolder | None]:
    """The run's options: ``values`` for a fresh run; on ``--resume`` the recorded ones, where
    an option given on the command line must equal its recorded value."""
    if resume is None:
        if values["data"] is None:
            raise ParameterError("train: give a data set (a name such as digits, or a .npz/.pt file or IDX folder) or --resume RUN_FOLDER")
        if values["batch_norm"] is None:  # the models' own default, recorded explicitly
            values = {**values, "batch_norm": values["model"] != "mlp"}
        return values, None
    folder = RunFolder.open(resume)
    recorded = _recorded(folder, resume)["config"]
    for name in RUN_OPTIONS:
        if _given(ctx, name) and values[name] != recorded.get(name):
            flag = "DATA" if name == "data" else "--" + name.replace("_", "-")
            raise ConfigError(f"--resume {resume}: {flag} {values[name]!r} differs from the recorded {recorded.get(name)!r}; drop it (a resumed run keeps its recorded options) or start a new run")
    return {name: recorded[name] for name in RUN_OPTIONS}, folder


def _world_size() -> int:
    """The number of processes: ``WORLD_SIZE`` under torchrun, else 1."""
    return int(os.environ["WORLD_SIZE"]) if "RANK" in os.environ and "WORLD_SIZE" in os.environ else 1


def _machine(ctx: typer.Context, folder: RunFolder | None, device: str, threads: int | None) -> tuple[torch.device, int | None]:
    """Device and CPU threads of the run. A resumed run keeps what its numbers depend on: the
    recorded number of processes (the batch split and the reduction order) must be the current
    one, and the recorded threads and device type are kept (given differently: refused)."""
    if folder is None:
        return resolve_device(device), threads
    doc, path, world = folder.config, folder.path, _world_size()
    recorded_world = doc.get("world_size")
    if recorded_world is not None and recorded_world != world:
        launch = "without torchrun" if recorded_world == 1 else f"under `torchrun --nproc_per_node={recorded_world}`"
        raise ConfigError(
            f"--resume {path}: the run was recorded with {recorded_world} process(es) and would continue with {world}, which splits the batches "
            f"and orders the sums differently (other numbers); resume it {launch}"
        )
    recorded_threads = doc.get("threads")
    if threads is None:
        threads = recorded_threads
    elif recorded_threads is not None and threads != recorded_threads:
        raise ConfigError(f"--resume {path}: --threads {threads} differs from the recorded {recorded_threads} (the CPU reductions, and so the numbers, depend on it); drop --threads")
    recorded_device = doc.get("device")
    if recorded_device is None:
        return resolve_device(device), threads
    if not _given(ctx, "device"):
        try:
            return resolve_device(torch.device(recorded_device).type if world > 1 else recorded_device), threads
        except ParameterError as exc:
            raise ConfigError(f"--resume {path}: the run was recorded on {recorded_device}, which this machine cannot use ({exc}); resume it where that device exists") from None
    chosen = resolve_device(device)
    if chosen.type != torch.device(recorded_device).type:
        raise ConfigError(f"--resume {path}: --device {device} differs from the recorded {recorded_device} (other kernels, other numbers); drop --device")
    return chosen, threads


def _has_test_split(source: str) -> bool:
    """Whether ``load_dataset(source)`` takes ``split="train"/"test"`` (named loaders with a
    ``split`` parameter, and IDX folders)."""
    if source in LOADERS:
        return "split" in inspect.signature(LOADERS[source]).parameters
    return Path(source).is_dir()


def _load(opts: dict[str, Any]) -> tuple[ClassificationData, ClassificationData | None]:
    """Training data (balanced subset if asked) and the test split (if ``--test``)."""
    source, dtype = str(opts["data"]), DTYPES[opts["dtype"]]
    split = _has_test_split(source)
    if opts["test"] and not split:
        raise ParameterError(f"train: data set {source!r} has no test split (those with one: {', '.join(n for n in LOADERS if _has_test_split(n))}, IDX folders); drop --test")
    train = load_dataset(source, dtype=dtype, **({"split": "train"} if split else {}))
    if opts["subset"] is not None:
        n = int(check_param("subset", opts["subset"], Interval(int, 1), "train"))
        short = [c for c, k in enumerate(train.class_counts.tolist()) if k < n]
        if short:
            raise ParameterError(f"train: --subset {n} asks for {n} samples of every class but class {short[0]} has {int(train.class_counts[short[0]])}; lower --subset")
        train = select_classes(train, limit_per_class=n)
    test = load_dataset(source, dtype=dtype, split="test") if opts["test"] else None
    return train, test


def _inputs(data: ClassificationData, opts: dict[str, Any], stats: tuple[float, float] | None) -> tuple[torch.Tensor, torch.Tensor, tuple[float, float]]:
    """Model inputs: images ``(N, channels, S, S)`` for the conv nets, rows ``(N, M)`` for the MLP,
    normalised by :func:`collapselab.train.as_images` (``stats``: the training set's, for the test set)."""
    flat = opts["model"] == "mlp"
    # rows are M one-pixel channels to as_images, so both kinds share its normalisations
    X, labels, stats = as_images(data, channels=data.dim if flat else opts["channels"], normalise=opts["normalise"], stats=stats, dtype=DTYPES[opts["dtype"]])
    return (X.flatten(1) if flat else X), labels, stats


def _model(opts: dict[str, Any], X: torch.Tensor, num_classes: int) -> torch.nn.Module:
    name = opts["model"]
    if name == "mlp":
        return make_model(name, widths=[X.shape[1], *opts["hidden"], num_classes], batch_norm=opts["batch_norm"])
    kwargs: dict[str, Any] = {"in_channels": X.shape[1], "num_classes": num_classes, "batch_norm": opts["batch_norm"]}
    if name in ("vgg11", "vgg13", "resnet18"):
        kwargs["width"] = opts["width"]
    if name != "resnet18":
        kwargs["input_size"] = X.shape[-1]
    return make_model(name, **kwargs)


def _read_checkpoint(folder: RunFolder, main: bool) -> dict[str, Any] | None:
    """The run's last checkpoint. Rank 0 reads it through the run folder (which drops metrics
    rows written after it); the other ranks read the same file and leave the folder alone."""
    if main:
        return folder.load_checkpoint()
    path = folder.path / "checkpoint.pt"
    return torch.load(path, map_location="cpu", weights_only=False) if path.exists() else None


def _number(cell: str) -> float | int | None:
    """A metrics.csv cell as a JSON number (blank and non-finite cells become null)."""
    if cell == "":
        return None
    value = float(cell)
    if not math.isfinite(value):
        return None
    return int(value) if value.is_integer() and "." not in cell and "e" not in cell else value


def _summary(folder: Path) -> dict[str, Any]:
    rows = read_metrics(folder)
    last = {k: _number(v) for k, v in rows[-1].items()} if rows else {}
    return {"run_folder": str(folder), "epochs": len(rows), "terminal_epoch": last.get("terminal_epoch"), "final": last}


def _describe(summary: dict[str, Any]) -> str:
    final = summary["final"]
    keys = [k for k in ("train_loss", "train_error", "nc1", "nc2_etf_error_means", "nc3", "nc4", "test_loss", "test_error") if final.get(k) is not None]
    values = ", ".join(f"{k} {final[k]:.4g}" for k in keys)
    terminal = summary["terminal_epoch"]
    return "\n".join([
        f"run folder: {summary['run_folder']}",
        f"epoch {final.get('epoch')}: {values}",
        f"terminal phase (zero training error) from epoch {terminal}" if terminal is not None else "training error never reached zero",
    ])  # fmt: skip


def run_command(ctx: typer.Context, values: dict[str, Any]) -> None:
    """``collapselab train`` with its parsed parameters ``values`` (by name)."""
    opts, folder = _resolve(ctx, {name: values[name] for name in RUN_OPTIONS}, values["resume"])
    run_device, run_threads = _machine(ctx, folder, values["device"], values["threads"])
    summary = _run(opts, folder, out=values["out"], device=run_device, threads=run_threads, tensorboard=values["tensorboard"])
    if summary is not None:  # rank 0
        typer.echo(json.dumps(summary, allow_nan=False) if values["json_output"] else _describe(summary))


def _run(opts: dict[str, Any], folder: RunFolder | None, *, out: Path, device: torch.device, threads: int | None, tensorboard: bool) -> dict[str, Any] | None:
    """Train with the resolved options into ``folder`` (a new one under ``out`` if None); return
    the summary on rank 0 and None on the other ranks (which write nothing)."""
    check_param("dtype", opts["dtype"], OneOf(list(DTYPES)), "train")
    check_param("normalise", opts["normalise"], OneOf(NORMALISATIONS), "train")
    check_param("channels", opts["channels"], Interval(int, 1), "train")
    config = TrainConfig(
        epochs=opts["epochs"], loss=opts["loss"], optimizer=opts["optimizer"], lr=opts["lr"], momentum=opts["momentum"], weight_decay=opts["weight_decay"],
        schedule=opts["schedule"], batch_size=opts["batch_size"] or None, nc_points=opts["nc_points"], seed=opts["seed"],
    )  # fmt: skip
    with ExitStack() as stack:
        stack.enter_context(torch_threads(threads))
        train_data, test_data = _load(opts)
        X, labels, stats = _inputs(train_data, opts, None)
        test_set = None if test_data is None else _inputs(test_data, opts, stats)[:2]
        world = 1
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # launched by torchrun
            _, world, device = init_distributed(backend="gloo" if device.type == "cpu" else None)
            stack.callback(shutdown_distributed)
        seed_everything(opts["seed"])  # the same initial model on every rank
        net = _model(opts, X, train_data.num_classes).to(device=device, dtype=DTYPES[opts["dtype"]])
        trainer = Trainer(net, (X, labels), config, num_classes=train_data.num_classes, test=test_set, sync_batchnorm=opts["sync_batchnorm"])
        checkpoint = None if folder is None else _read_checkpoint(folder, trainer.is_main)
        if not trainer.is_main:
            if checkpoint is not None:
                trainer.load_state_dict(checkpoint)
            trainer.fit()
            return None
        resumed = folder is not None
        path = Path(out) / RUN_NAME / new_run_id() if folder is None else folder.path
        board = TensorBoardLogger(path / "tensorboard") if tensorboard else None  # refuses before anything is written
        if folder is None:
            folder = RunFolder.create(out, RUN_NAME, opts, run_id=path.name, extra={"device": str(device), "world_size": world, "threads": torch.get_num_threads(), "seed": opts["seed"]})
        stack.enter_context(folder_logging(folder))
        trainer.callbacks.extend([MetricsLogger(folder.log_metrics), Checkpoint(folder.save_checkpoint)])
        if board is not None:
            stack.callback(board.close)
            trainer.callbacks.append(board)
        log.info("training %s on %s into %s (%s, world size %d, %d threads)", opts["model"], opts["data"], folder.path, device, world, torch.get_num_threads())
        if checkpoint is not None:
            trainer.load_state_dict(checkpoint)
        if resumed:
            note = f"resuming {folder.path} after epoch {trainer.epoch} of {config.epochs}" if checkpoint is not None else f"no checkpoint in {folder.path}: starting again from epoch 0"
            log.info(note)
            typer.echo(note, err=True)
        with folder.running(RUN_NAME):
            bar = progress(trainer.iterate(), desc=RUN_NAME, total=config.epochs - trainer.epoch)
            trainer.on_step = _step_display(bar)
            post: dict[str, str] = {}
            for record in bar:
                post.update(record.postfix())  # nc1 stays the latest measured value
                bar.set_postfix(**post)
            _save_figure(folder, f"{opts['model']} on {opts['data']}")
        return _summary(folder.path)


def _step_display(bar: Any, every: float = 0.5) -> Callable[[int, int], None]:
    """``on_step`` for the epoch bar: the step within the epoch in its description, redrawn at
    most every ``every`` seconds (and at the last step), so long epochs show progress too."""
    last = -math.inf

    def show(step: int, steps: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= every or step == steps:
            last = now
            bar.set_description_str(f"{RUN_NAME} (step {step}/{steps})")

    return show


def _save_figure(folder: RunFolder, title: str) -> None:
    """``figures/collapse.png``: the NC metrics of the measured epochs against epochs
    (:func:`collapselab.collapse.plots.plot_metrics`); nothing when no epoch was measured."""
    rows = [{k: _number(v) for k, v in row.items()} for row in read_metrics(folder.path)]
    measured = [row for row in rows if row.get("nc1") is not None]
    if not measured:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..collapse.plots import plot_metrics

    fig = plot_metrics([row["epoch"] for row in measured], measured, title=title)
    folder.save_figure(fig, "collapse.png")
    plt.close(fig)
