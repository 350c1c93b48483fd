"""The ``construct`` command, run in-process with a local Typer app."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from collapselab.cli.construct import construct
from collapselab.construct import load_network
from collapselab.core.errors import DataFileError, MissingFileError, UnknownNameError
from collapselab.core.data import gaussian_clusters, sequentially_separable

app = typer.Typer()
app.command("construct")(construct)
app.command("noop")(lambda: None)  # two commands, so that "construct" is a sub-command as in the real app
runner = CliRunner()


@pytest.fixture()
def clustered_file(tmp_path):
    data = gaussian_clusters(3, 8, delta=0.02, seed=0)
    path = tmp_path / "data.npz"
    np.savez(path, **data.to_numpy())
    return path, data


def test_json_output_and_saved_module(clustered_file, tmp_path) -> None:
    path, data = clustered_file
    out = tmp_path / "net.pt"
    res = runner.invoke(app, ["construct", "clustered", str(path), "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)  # exactly one JSON object on stdout
    assert doc["cost"] < 1e-12
    assert len(doc["layers"]) == 3
    assert {"collapses_class", "collapse_point", "mu", "cone_angle"} <= set(doc["layers"][0])
    assert doc["descriptive_parameters"] == 15 and doc["num_parameters"] == 4 * 12
    doc = torch.load(out, weights_only=True)  # plain tensors, ints and lists: no pickled code
    assert doc["format"] == "collapselab.ReLUNet" and doc["widths"] == [3, 3, 3, 3, 3] and doc["kind"] == "clustered"
    module = load_network(out)
    with torch.no_grad():
        pred = module(data.X)
    assert float(((pred - data.Y[data.labels]) ** 2).sum()) < 1e-24


@pytest.mark.parametrize("kind", ["sequential", "shallow", "clustered-wide"])
def test_other_kinds_human_output(kind: str, tmp_path) -> None:
    data = sequentially_separable(3, 4, 10, seed=1) if kind == "sequential" else gaussian_clusters(3, 8, dim=4, delta=0.02, seed=1)
    path = tmp_path / "d.npz"
    np.savez(path, X=data.X.numpy(), labels=data.labels.numpy())
    res = runner.invoke(app, ["construct", kind, str(path)])
    assert res.exit_code == 0, res.output
    assert f"{kind} construction: widths" in res.stdout
    assert "layer 1:" in res.stdout


def test_errors(tmp_path) -> None:
    res = runner.invoke(app, ["construct", "clustered", str(tmp_path / "nope.npz")])
    assert isinstance(res.exception, MissingFileError) and "nope.npz does not exist" in str(res.exception)
    bad = tmp_path / "data.npz"
    np.savez(bad, X=np.eye(3))
    res = runner.invoke(app, ["construct", "clustered", str(bad)])
    assert isinstance(res.exception, DataFileError)
    assert "data.npz has no array 'labels'" in str(res.exception)
    res = runner.invoke(app, ["construct", "clusterd", str(bad)])
    assert isinstance(res.exception, UnknownNameError)
    assert "known kinds: clustered, clustered-wide, sequential, shallow" in str(res.exception)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    res = runner.invoke(app, ["construct", "shallow", str(junk)])
    assert isinstance(res.exception, DataFileError) and "is not an .npz archive" in str(res.exception)


def test_save_and_load_network_round_trip(tmp_path) -> None:
    from collapselab.construct import save_network
    from collapselab.core.network import ReLUNet

    torch.manual_seed(0)
    net = ReLUNet([3, 5, 4, 2])
    path = save_network(net, tmp_path / "net.pt")
    doc = torch.load(path, weights_only=True)
    assert doc["widths"] == [3, 5, 4, 2] and "kind" not in doc
    loaded = load_network(path)
    X = torch.randn(7, 3, dtype=torch.float64)
    assert loaded.widths == net.widths and torch.equal(loaded(X), net(X))  # the same parameters, the same code path
    torch.save(net, tmp_path / "pickled.pt")  # the old format: a pickled module
    with pytest.raises(DataFileError, match="is not a network saved by collapselab construct --out"):
        load_network(tmp_path / "pickled.pt")
    torch.save({"format": "collapselab.ReLUNet", "version": 99}, tmp_path / "future.pt")
    with pytest.raises(DataFileError, match="has format version 99"):
        load_network(tmp_path / "future.pt")
    with pytest.raises(MissingFileError, match="does not exist"):
        load_network(tmp_path / "none.pt")
    with pytest.raises(MissingFileError, match="folder .* does not exist"):
        save_network(net, tmp_path / "no" / "net.pt")
