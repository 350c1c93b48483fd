"""The command line, in-process (Typer's CliRunner): verdicts, run folders, errors."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from collapselab.cli import app
from collapselab.core.store import read_claims, read_metrics

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args))


def test_list_names_every_experiment():
    from collapselab.experiments import experiments

    res = invoke("list")
    assert res.exit_code == 0
    for name in experiments():
        assert name in res.output


def test_run_quick_writes_a_passing_run_folder(tmp_path):
    res = invoke("run", "truncation-geometry", "--quick", "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    (folder,) = (tmp_path / "truncation-geometry").iterdir()
    claims = read_claims(folder)
    assert claims and all(c["passed"] for c in claims)
    assert {"id", "claim", "source", "expected", "measured", "tolerance", "passed"} <= set(claims[0])
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["quick"] is True and cfg["config"]["trials"] == 10 and "torch" in cfg["versions"]
    assert len(read_metrics(folder)) == 10
    assert (folder / "figures" / "truncation_map.png").stat().st_size > 1000
    assert "PASS" in res.output and "claims passed" in res.output


def test_set_overrides_are_validated_and_recorded(tmp_path):
    res = invoke("run", "truncation-geometry", "--quick", "--set", "trials=2", "--set", "square_widths=[2,2,2]", "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    (folder,) = (tmp_path / "truncation-geometry").iterdir()
    cfg = json.loads((folder / "config.json").read_text())["config"]
    assert cfg["trials"] == 2 and cfg["square_widths"] == [2, 2, 2]


@pytest.mark.parametrize(
    "args, message",
    [
        (("run", "no-such-experiment"), "unknown experiment 'no-such-experiment'"),
        (("run", "truncation-geomety"), "did you mean 'truncation-geometry'"),
        (("run", "truncation-geometry", "--set", "nope=1"), "unknown --set key 'nope'"),
        (("run", "truncation-geometry", "--set", "trials=0"), "invalid value for 'trials'"),
        (("run", "truncation-geometry", "--set", "trials"), "--set expects key=value"),
        (("report", "/nonexistent/folder"), "does not exist"),
        (("reproduce", "--only", "nope"), "unknown experiment 'nope'"),
    ],
)
def test_bad_input_exits_1_with_one_line(tmp_path, args, message):
    res = invoke(*args, *(() if args[0] == "report" else ("--out", str(tmp_path))))
    assert res.exit_code == 1
    assert message in res.output
    assert not (tmp_path / "no-such-experiment").exists()


def test_cuda_request_without_cuda_is_refused(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    res = invoke("run", "truncation-geometry", "--quick", "--device", "cuda", "--out", str(tmp_path))
    assert res.exit_code == 1 and "torch.cuda.is_available() is False" in res.output


def test_reproduce_and_report_build_html(tmp_path):
    res = invoke("reproduce", "--quick", "--only", "truncation-geometry", "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    html = (tmp_path / "report.html").read_text()
    assert "composition-square" in html and "class='PASS'" in html and "data:image/png;base64" in html
    assert "report:" in res.output
    out = tmp_path / "again.html"
    res = invoke("report", str(tmp_path), "--output", str(out))
    assert res.exit_code == 0 and out.exists() and "8 of 8 claims passed" in res.output


@pytest.mark.parametrize(
    "args, message",
    [
        (("metrics", "/nonexistent/feats.npz"), "error: metrics: file /nonexistent/feats.npz does not exist"),
        (("construct", "clustered", "/nonexistent/data.npz"), "error: construct: file /nonexistent/data.npz does not exist"),
        (("construct", "spiral", "/nonexistent/data.npz"), "unknown kind 'spiral'"),
    ],
)
def test_data_commands_report_bad_input_in_one_line(args, message):
    res = invoke(*args)
    assert res.exit_code == 1 and message in res.output
    assert "Traceback" not in res.output


def test_metrics_and_construct_json_on_stdout(tmp_path):
    import numpy as np

    from collapselab.core.data import etf_features, gaussian_clusters

    feats, M = etf_features(4, 6, 5, sigma=0.0, seed=1)
    np.savez(tmp_path / "f.npz", features=feats.X.numpy(), labels=feats.labels.numpy(), weights=M.numpy())
    res = invoke("metrics", str(tmp_path / "f.npz"), "--json")
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["num_classes"] == 4 and abs(doc["nc1"]) < 1e-12 and abs(doc["nc3"]) < 1e-12
    data = gaussian_clusters(3, 6, delta=0.02, seed=2)
    np.savez(tmp_path / "d.npz", **data.to_numpy())
    res = invoke("construct", "clustered", str(tmp_path / "d.npz"), "--json", "--out", str(tmp_path / "net.pt"))
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    assert doc["cost"] < 1e-12 and len(doc["layers"]) == 3

    from collapselab.construct import load_network

    net = load_network(tmp_path / "net.pt")
    out = net(data.X).detach()
    assert float((out - data.Y[data.labels]).abs().max()) < 1e-10


@pytest.mark.xdist_group("processes")  # starts two processes: with the others, one at a time on one pytest-xdist worker (Makefile: make test)
def test_reproduce_jobs_runs_experiments_in_worker_processes(tmp_path):
    names = ["standard-loss-collapsed", "standard-loss-clustered"]
    res = invoke("reproduce", "--quick", "--jobs", "2", *[a for n in names for a in ("--only", n)], "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    for n in names:
        (run,) = (tmp_path / n).iterdir()
        assert json.loads((run / "config.json").read_text())["threads"] == 1
        assert read_claims(run) and all(c["verdict"] == "PASS" for c in read_claims(run))
    assert (tmp_path / "report.html").exists()
    bad = invoke("reproduce", "--quick", "--jobs", "2", "--threads", "2", "--only", names[0], "--out", str(tmp_path / "x"))
    assert bad.exit_code == 1 and "drop --threads 2" in bad.output


_HEAVY = ("torch", "scipy", "matplotlib")


def _imports_after(code: str) -> list[str]:
    """Heavy top-level modules present in ``sys.modules`` after ``code`` runs in a fresh interpreter."""
    import subprocess
    import sys

    probe = code + f"\nimport sys; print(sorted(m for m in {_HEAVY!r} if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1].replace("'", '"'))


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["list"]])
def test_help_version_and_list_do_not_import_torch(args):
    """The commands that only describe start without torch, scipy or matplotlib (seconds of
    import time): the command modules import them inside the commands that need them, and
    `list` reads the experiments' catalogue without importing the experiments."""
    code = f"from collapselab.cli import app\ntry:\n    app({args!r})\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code"
    assert _imports_after(code) == []


def test_import_collapselab_is_cheap_and_exports_resolve():
    assert _imports_after("import collapselab; collapselab.CollapseLabError; collapselab.__version__") == []
    import collapselab
    from collapselab.collapse import collapse_report
    from collapselab.construct import construct_clustered
    from collapselab.train import Trainer

    assert collapselab.collapse_report is collapse_report and collapselab.construct_clustered is construct_clustered and collapselab.Trainer is Trainer
    for name in collapselab.__all__:
        assert getattr(collapselab, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        collapselab.nope  # noqa: B018


def test_catalogue_equals_the_registry():
    """`list` reads names, summaries and sources from the modules' syntax trees; they must be
    what importing the modules gives."""
    from collapselab.experiments import experiments
    from collapselab.experiments._catalogue import catalogue

    cat, reg = catalogue(), experiments()
    assert list(cat) == list(reg)
    for name, exp in reg.items():
        assert (cat[name].name, cat[name].summary, cat[name].source) == (exp.name, exp.summary, exp.source)


def test_train_help_names_the_data_sets_and_normalisations():
    from collapselab.core.data import LOADERS
    from collapselab.train import NORMALISATIONS

    res = invoke("train", "--help")
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split()).replace("│ ", "")
    for name in [*LOADERS, *NORMALISATIONS]:
        assert name in text, name
    assert "{datasets}" not in text and "{normalisations}" not in text
