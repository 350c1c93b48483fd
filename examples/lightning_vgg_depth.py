"""Layer-wise neural collapse of a VGG-11 on Fashion-MNIST, measured during a Lightning fit.

One :class:`~collapselab.integrations.lightning.NeuralCollapseCallback` hooks the output of every
convolutional block (global average pooled) and the classifier's input, and measures NC1, the
ETF error of the class means and the nearest-class-centre accuracy of all nine layers from the
same forward passes (exact two-pass statistics, float64) at log-spaced epochs; the figure
shows the metrics against depth, one curve per epoch (collapselab.collapse.plots.plot_depth).

    python examples/lightning_vgg_depth.py --out /tmp/vgg-depth --per-class 200 --epochs 10 --threads 1

Needs ``pip install 'collapselab[lightning]'`` and Fashion-MNIST (``apt-get install
dataset-fashion-mnist``, read by :func:`collapselab.core.data.load_fashion_mnist`); nothing is
downloaded.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import lightning as L
import matplotlib
import torch
from torch import nn

from collapselab.collapse.plots import plot_depth
from collapselab.core.data import load_fashion_mnist
from collapselab.integrations import Layer
from collapselab.integrations.lightning import NeuralCollapseCallback
from collapselab.train import VGG


class Classifier(L.LightningModule):
    def __init__(self, lr: float) -> None:
        super().__init__()
        self.net = VGG(11, in_channels=1, num_classes=10, width=0.25, input_size=28)
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch, _):
        x, y = batch
        loss = nn.functional.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9, weight_decay=5e-4)


def depth_layers(model: Classifier) -> list[Layer]:
    """The output of every ReLU of the convolutional stack (one per block), average pooled,
    then the classifier's input (the classifier's W, b give NC3/NC4 there)."""
    relus = [name for name, mod in model.named_modules() if isinstance(mod, nn.ReLU)]
    blocks = [Layer(name, capture="output", pool="avg", name=f"block{i + 1}") for i, name in enumerate(relus)]
    return blocks + [Layer("net.classifier", name="classifier")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--points", type=int, default=5, help="log-spaced measurement epochs")
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    matplotlib.use("Agg")
    L.seed_everything(args.seed, verbose=False)
    data = load_fashion_mnist("train", limit_per_class=args.per_class, dtype=torch.float32)
    images = data.X.reshape(-1, 1, 28, 28)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, data.labels), batch_size=64, shuffle=True)
    model = Classifier(args.lr)
    nc = NeuralCollapseCallback(10, layers=depth_layers(model), count=args.points)
    trainer = L.Trainer(
        max_epochs=args.epochs, accelerator="cpu", callbacks=[nc], logger=L.pytorch.loggers.CSVLogger(args.out, name="logs"),
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(model, loader)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "history.json").write_text(json.dumps(nc.history, indent=1))
    fig = plot_depth(nc.history, title=f"VGG-11 (width 1/4), Fashion-MNIST {len(data.labels)} images")
    fig.savefig(args.out / "depth.png", dpi=110)
    last = nc.history[-1]
    for layer, m in last["layers"].items():
        print(f"epoch {last['epoch']:3d} {layer:>10}: nc1 {m['nc1']:.4g}  etf {m['nc2_etf_error_means']:.3f}  ncc {m['ncc_accuracy']:.3f}")
    print(f"figure: {args.out / 'depth.png'}")


if __name__ == "__main__":
    main()
