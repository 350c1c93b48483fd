"""`collapselab metrics` (in-process) and the plot helpers."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from collapselab.cli.metrics import metrics
from collapselab.collapse import REPORT_KEYS, collapse_report
from collapselab.collapse.plots import plot_geometry, plot_metrics
from collapselab.core.errors import DataFileError, EmptyClassError, MissingFileError

WEIGHT_KEYS = {"nc2_equinorm_weights", "nc2_equiangular_weights", "nc2_etf_error_weights", "nc3",
               "nc3_self_duality_error", "nc4", "accuracy", "bias_collapse"}


@pytest.fixture
def app():
    a = typer.Typer()
    a.command()(metrics)
    return a


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    H = (rng.standard_normal((60, 4)) + 4 * np.eye(4)[y]).astype(np.float32)
    return {"features": H, "labels": y, "weights": rng.standard_normal((3, 4)), "bias": rng.standard_normal(3)}


def test_json_output_with_weights(app, arrays, tmp_path):
    f = tmp_path / "feats.npz"
    np.savez(f, **arrays)
    res = CliRunner().invoke(app, [str(f), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert list(out) == list(REPORT_KEYS)
    ref = collapse_report(arrays["features"], arrays["labels"], arrays["weights"], arrays["bias"])
    for k in REPORT_KEYS:
        assert out[k] == pytest.approx(getattr(ref, k), rel=1e-12), k


def test_json_without_weights_has_nulls_and_no_nan(app, arrays, tmp_path):
    f = tmp_path / "feats.npz"
    np.savez(f, features=arrays["features"], labels=arrays["labels"])
    res = CliRunner().invoke(app, [str(f), "--json"])
    assert res.exit_code == 0, res.output
    assert "NaN" not in res.stdout and "Infinity" not in res.stdout
    out = json.loads(res.stdout)
    assert all(out[k] is None for k in WEIGHT_KEYS)
    assert out["num_classes"] == 3 and out["num_samples"] == 60 and out["rank"] == 2


def test_table_output(app, arrays, tmp_path):
    f = tmp_path / "feats.npz"
    np.savez(f, **arrays)
    res = CliRunner().invoke(app, [str(f)])
    assert res.exit_code == 0
    assert "60 samples, 3 classes, d = 4" in res.stdout
    assert any(line.startswith("nc1 ") for line in res.stdout.splitlines())


def test_cli_errors(arrays, tmp_path):
    with pytest.raises(MissingFileError, match="does not exist"):
        metrics(tmp_path / "nope.npz", json_output=True)
    f = tmp_path / "features.npz"
    np.savez(f, features=arrays["features"])
    with pytest.raises(DataFileError, match="features.npz has no array 'labels'"):
        metrics(f, json_output=False)
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip")
    with pytest.raises(DataFileError, match="bad.npz is not an .npz archive"):
        metrics(bad, json_output=False)
    g = tmp_path / "gap.npz"
    keep = arrays["labels"] != 1
    np.savez(g, features=arrays["features"][keep], labels=arrays["labels"][keep], weights=arrays["weights"])
    with pytest.raises(EmptyClassError, match=r"metrics: classes must be 0..2 with every class present, but class 1 has no samples"):
        metrics(g, json_output=True)


def test_plots(arrays):
    reps = [collapse_report(arrays["features"] * s + np.random.default_rng(i).standard_normal((60, 4)).astype(np.float32) / s,
                            arrays["labels"], arrays["weights"]) for i, s in enumerate([1.0, 2.0, 4.0])]
    fig = plot_metrics([1, 10, 100], reps)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert {line.get_label() for line in ax.lines} >= {"nc1", "nc3"}
    fig2 = plot_geometry(reps[-1])
    assert len(fig2.axes[0].collections) == 2  # means and classifiers
    fig3 = plot_geometry(reps[-1].means, dims=3)
    assert len(fig3.axes[0].collections) == 1
    with pytest.raises(ValueError, match="3 epochs but 2 reports"):
        plot_metrics([1, 2, 3], reps[:2])


def test_npy_features_are_streamed_to_the_same_report(app, arrays, tmp_path):
    # same float64 arithmetic on the same upcast float32 values, other block boundaries:
    # N eps kappa with N = 60 (see tests/collapse/test_sources.py)
    np.savez(tmp_path / "f.npz", **arrays)
    for k in ("features", "labels", "weights", "bias"):
        np.save(tmp_path / f"{k}.npy", arrays[k])
    whole = json.loads(CliRunner().invoke(app, [str(tmp_path / "f.npz"), "--json"]).stdout)
    args = [str(tmp_path / "features.npy"), "--labels", str(tmp_path / "labels.npy"), "--weights", str(tmp_path / "weights.npy"),
            "--bias", str(tmp_path / "bias.npy"), "--batch-size", "7", "--json"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert list(out) == list(REPORT_KEYS)
    for k in REPORT_KEYS:
        assert out[k] == pytest.approx(whole[k], rel=1e-12, abs=1e-15), k


def test_npy_features_need_labels_in_the_contract(arrays, tmp_path):
    from collapselab.core.errors import LabelError, ParameterError

    np.save(tmp_path / "h.npy", arrays["features"])
    with pytest.raises(ParameterError, match="give the labels with --labels"):
        metrics(tmp_path / "h.npy")
    np.save(tmp_path / "y.npy", arrays["labels"] + 1)  # values 1..3: class 0 empty
    with pytest.raises(EmptyClassError, match="class 0 has no samples"):
        metrics(tmp_path / "h.npy", labels=tmp_path / "y.npy")
    np.save(tmp_path / "w.npy", arrays["weights"][:2])
    np.save(tmp_path / "y.npy", arrays["labels"])
    with pytest.raises(LabelError, match=r"labels must be integers in \[0, 2\)"):
        metrics(tmp_path / "h.npy", labels=tmp_path / "y.npy", weights=tmp_path / "w.npy")
    with pytest.raises(ParameterError, match="go with a .npy of features"):
        metrics(tmp_path / "f.npz", labels=tmp_path / "y.npy")
