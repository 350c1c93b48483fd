"""The code blocks of docs/integrations.md run as written, and plot_depth draws what the
history holds."""

import re
from pathlib import Path

import matplotlib
import pytest

from collapselab.collapse.plots import plot_depth
from collapselab.core.errors import ShapeError

matplotlib.use("Agg")
DOC = Path(__file__).parents[2] / "docs" / "integrations.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(3))
def test_docs_examples_run(index, tmp_path, monkeypatch, capsys):
    code = blocks()[index]
    needs = {"lightning": "lightning", "transformers": "transformers"}
    for word, package in needs.items():
        if f"import {word}" in code or f"from {word}" in code:
            pytest.importorskip(package)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    exec(compile(code.replace("/tmp/", f"{tmp_path}/"), f"{DOC.name}[{index}]", "exec"), {"__name__": "__docs__"})


def test_docs_have_the_three_examples():
    assert len(blocks()) == 3


def test_plot_depth_draws_one_curve_per_epoch_and_panel():
    history = [
        {"epoch": e, "layers": {name: {"nc1": v / e, "ncc_accuracy": 0.5 + 0.01 * e} for name, v in (("a", 8.0), ("b", 4.0), ("c", 2.0))}}
        for e in (1, 3, 9)
    ]
    fig = plot_depth(history, keys=("nc1", "ncc_accuracy"))
    nc1, acc = fig.axes
    assert len(nc1.lines) == len(acc.lines) == 3
    assert nc1.get_yscale() == "log" and acc.get_yscale() == "linear"
    assert [t.get_text() for t in nc1.get_xticklabels()] == ["a", "b", "c"]
    assert list(nc1.lines[2].get_ydata()) == [8.0 / 9, 4.0 / 9, 2.0 / 9]
    with pytest.raises(ShapeError, match="no measured rows"):
        plot_depth([])
