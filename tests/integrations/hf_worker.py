"""Script of test_transformers.py: Hugging Face ``Trainer`` fits of a tiny BERT (sequence
classification) and a tiny ViT (image classification), both built from configs (a few
thousand parameters, nothing downloaded), with NeuralCollapseCallback; run on one process
(``python hf_worker.py OUT``) or on two CPU processes (``torchrun --nproc_per_node=2
hf_worker.py OUT``: accelerate on gloo). Rank r saves ``{model}-rank{r}.pt``: the callback's
history, the trainer's log history and (rank 0) the final parameters.

Float64 models and data, no dropout (its random masks would differ between the runs), samples in order (no shuffling: the 2-process run's global batches
are the 1-process run's batches), so both runs take the same steps.
"""

import sys
from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments, ViTConfig, ViTForImageClassification

from collapselab.collapse import last_linear
from collapselab.integrations import Layer
from collapselab.integrations.transformers import NeuralCollapseCallback

C, N = 3, 48


class Tokens(torch.utils.data.Dataset):
    """Class c has token 3 + c at position 1 among random tokens."""

    def __init__(self):
        g = torch.Generator().manual_seed(5)
        self.ids = torch.randint(10, 30, (N, 8), generator=g)
        self.y = torch.arange(N) % C
        self.ids[:, 1] = 3 + self.y

    def __len__(self):
        return N

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.y[i]}


class Images(torch.utils.data.Dataset):
    """8 x 8 one-channel images: noise plus a class-dependent bright patch."""

    def __init__(self):
        g = torch.Generator().manual_seed(6)
        self.x = torch.randn(N, 1, 8, 8, generator=g, dtype=torch.float64)
        self.y = torch.arange(N) % C
        for c in range(C):
            self.x[self.y == c, 0, 2 * c : 2 * c + 2, :] += 2.0

    def __len__(self):
        return N

    def __getitem__(self, i):
        return {"pixel_values": self.x[i], "labels": self.y[i]}


def models():
    bert = BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                      max_position_embeddings=16, num_labels=C, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    vit = ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=32, num_labels=C)
    # the CLS token of the last encoder layer's output, besides the default layer (the classifier's input)
    return {
        "bert": (lambda: BertForSequenceClassification(bert), Tokens, Layer("bert.encoder.layer.1", capture="output", feature_fn=cls, name="cls")),
        "vit": (lambda: ViTForImageClassification(vit), Images, Layer("vit.layers.1", capture="output", feature_fn=cls, name="cls")),
    }


def cls(hidden):
    """The first token's features (B, d) of a layer's output (B, T, d)."""
    return hidden[:, 0]


def arguments(folder: Path, world: int = 1, **changes) -> TrainingArguments:
    """Plain SGD at a constant rate, in order, on the CPU, nothing reported or saved unless changed."""
    options = dict(
        num_train_epochs=3, per_device_train_batch_size=16 // world, per_device_eval_batch_size=7,
        learning_rate=0.05, optim="sgd", lr_scheduler_type="constant", weight_decay=0.0, use_cpu=True, report_to="none",
        save_strategy="no", logging_strategy="no", disable_tqdm=True, seed=0, dataloader_num_workers=0, train_sampling_strategy="sequential",
        average_tokens_across_devices=False,  # else models that take num_items_in_batch (BERT) get world-size-scaled losses
    )
    return TrainingArguments(str(folder), **{**options, **changes})


def run(name: str, out: Path, world: int) -> None:
    make, data, extra = models()[name]
    torch.manual_seed(0)
    model = make().double()
    args = arguments(out / f"{name}-trainer", world)
    trainer = Trainer(model=model, args=args, train_dataset=data())
    nc = NeuralCollapseCallback(C, layers=[extra, Layer(last_linear(model))], every=1).attach(trainer)
    trainer.train()
    rank = args.process_index
    torch.save({"history": nc.history, "log_history": trainer.state.log_history, "params": model.state_dict() if rank == 0 else None},
               out / f"{name}-rank{rank}.pt")


if __name__ == "__main__":
    import os

    torch.set_num_threads(1)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    for name in sys.argv[2:] or ["bert", "vit"]:
        run(name, Path(sys.argv[1]), world)
