"""Cost of neural-collapse tracking in training, against a plain PyTorch loop (same process).

Times, per epoch on the same data and model:
  plain    a hand-written loop (forward, loss, backward, step) with no tracking,
  trainer  collapselab.train.Trainer without NC measurements (its own bookkeeping only),
  tracked  the Trainer measuring NC metrics after every epoch (eval forward pass over the
           training set, hook, two-pass float64 statistics, report).
The three run in rotation, one epoch each per round, so every round sees the same machine
load (the machine may be shared); the cost of one measurement is the median over rounds of
tracked - trainer. Reports trainer/plain, the cost of one measurement relative to a training epoch, and the
amortised overhead of the PHD schedule (about 50 log-spaced measurements over 350 epochs),
whose target is < 5% of training time.

Usage: python benchmarks/train_tracking.py [--model mlp|vgg11] [--samples N] [--epochs E]
       [--device cpu|cuda] [--threads T] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

from collapselab.train import MLP, VGG, TrainConfig, Trainer, log_spaced_epochs


def make(model_name: str, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    model = MLP([784, 512, 512, 10]) if model_name == "mlp" else VGG(11, in_channels=1, num_classes=10, width=0.25, input_size=28)
    return model.to(device)


def data(model_name: str, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % 10
    X = torch.randn(n, 1, 28, 28, generator=g) + labels.float().reshape(n, 1, 1, 1) / 5
    if model_name == "mlp":
        X = X.flatten(1)
    return X.to(device), labels.to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_epochs(model_name: str, X: torch.Tensor, y: torch.Tensor, batch: int, device: torch.device) -> Iterator[None]:
    """A hand-written training loop, one epoch per ``next``."""
    model = make(model_name, device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    g = torch.Generator().manual_seed(0)
    while True:
        perm = torch.randperm(X.shape[0], generator=g).to(device)
        for idx in perm.split(batch):
            loss = F.cross_entropy(model(X[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        float(loss.detach())
        yield


def eval_passes(model_name: str, X: torch.Tensor, batch: int, device: torch.device) -> Iterator[None]:
    """One eval-mode forward pass over the training set per ``next``: the floor of any exact
    measurement of the features of the current weights."""
    model = make(model_name, device).eval()
    while True:
        with torch.inference_mode():
            for xb in X.split(batch):
                model(xb)
        yield


def trainer_epochs(model_name: str, X: torch.Tensor, y: torch.Tensor, epochs: int, batch: int, device: torch.device, measure: bool) -> Iterator[object]:
    """The Trainer, one epoch per ``next``; ``measure``: NC metrics after every epoch."""
    cfg = TrainConfig(epochs=epochs, lr=0.01, weight_decay=5e-4, batch_size=batch, nc_points=epochs if measure else 0)
    return Trainer(make(model_name, device), (X, y), cfg, num_classes=10).iterate()  # measurement batches = training batches


def timed(step: Callable[[], object], device: torch.device) -> float:
    sync(device)
    t = time.perf_counter()
    step()
    sync(device)
    return time.perf_counter() - t


def interleaved(model_name: str, X: torch.Tensor, y: torch.Tensor, epochs: int, batch: int, device: torch.device) -> dict[str, list[float]]:
    """Epoch times of the three variants and of an eval forward pass, run in rotation (plain, trainer, tracked, forward, plain, ...)
    so that each round sees the same machine load; the first round is a warm-up."""
    runs = {
        "plain": plain_epochs(model_name, X, y, batch, device),
        "trainer": trainer_epochs(model_name, X, y, epochs + 1, batch, device, measure=False),
        "tracked": trainer_epochs(model_name, X, y, epochs + 1, batch, device, measure=True),
        "forward": eval_passes(model_name, X, batch, device),
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(epochs + 1):
        for name, it in runs.items():
            times[name].append(timed(lambda: next(it), device))
    return {k: v[1:] for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["mlp", "vgg11"], default="mlp")
    ap.add_argument("--samples", type=int, default=4096)
    ap.add_argument("--epochs", type=int, default=5, help="timed rounds (one epoch of each variant; plus one warm-up round)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: leave the default)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    X, y = data(args.model, args.samples, device)
    times = interleaved(args.model, X, y, args.epochs, args.batch, device)
    plain, trainer, tracked = (statistics.median(times[k]) for k in ("plain", "trainer", "tracked"))
    # the measurement's cost: median over rounds of (tracked - trainer), same round, same load
    per_measure = max(statistics.median(a - b for a, b in zip(times["tracked"], times["trainer"])), 0.0)
    phd_points = len(log_spaced_epochs(350, 50))
    amortised = phd_points * per_measure / (350 * trainer)
    out = {
        "model": args.model,
        "device": str(device),
        "samples": args.samples,
        "epoch_plain_s": plain,
        "epoch_trainer_s": trainer,
        "epoch_tracked_s": tracked,
        "trainer_over_plain": trainer / plain,
        "measurement_over_epoch": per_measure / trainer,
        "eval_forward_over_epoch": statistics.median(times["forward"]) / trainer,
        "phd_measurements": phd_points,
        "phd_amortised_overhead": amortised,
        "target_met": amortised < 0.05,
    }
    if args.json:
        print(json.dumps(out))
        return
    print(f"{args.model} on {device}, N={args.samples}: epoch plain {plain:.3f} s, Trainer {trainer:.3f} s, Trainer + NC every epoch {tracked:.3f} s")
    print(f"  Trainer / plain loop            {out['trainer_over_plain']:.3f}")
    print(f"  one NC measurement / epoch      {out['measurement_over_epoch']:.3f}  (of which the eval forward pass, the floor: {out['eval_forward_over_epoch']:.3f})")
    print(f"  PHD schedule ({phd_points} of 350 epochs) overhead {100 * amortised:.2f}% (target < 5%: {'met' if out['target_met'] else 'NOT met'})")


if __name__ == "__main__":
    main()
