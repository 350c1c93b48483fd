"""The documentation builds strictly, as ``make docs`` builds it: a warning, a broken reference, a
missing page, a docstring that does not parse or a failing tutorial fails this test.

The build runs on a copy of docs/ (Sphinx and sphinx-gallery write generated pages into their
source folder), with the source tree of this checkout first on the path.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _public_names() -> dict[str, list[str]]:
    """``__all__`` of every public package and module below collapselab (no modules, no CLI internals)."""
    import importlib
    import inspect
    import pkgutil

    import collapselab

    out = {"collapselab": list(collapselab.__all__)}
    for info in pkgutil.walk_packages(collapselab.__path__, "collapselab."):
        if any(part.startswith("_") for part in info.name.split(".")[1:]) or info.name.startswith(("collapselab.cli", "collapselab.experiments.")):
            continue
        mod = importlib.import_module(info.name)
        out[info.name] = [n for n in getattr(mod, "__all__", []) if not inspect.ismodule(getattr(mod, n))]
    return out


@pytest.mark.timeout(900)
def test_docs_build_strictly(tmp_path) -> None:
    try:
        import myst_parser  # noqa: F401
        import sphinx  # noqa: F401
    except ImportError:
        pytest.fail("the docs extra is not installed: pip install -e '.[docs]' (make test installs it)")
    src = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", src, ignore=shutil.ignore_patterns("_build", "generated", "sg_execution_times.rst", "__pycache__"))
    # one OpenMP thread for the tutorials' torch, as in the rest of the suite (tests/conftest.py): under
    # `make test`'s two pytest workers a multi-threaded build would compete with the other worker
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]), "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html", str(src), str(tmp_path / "html")],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 0, f"sphinx-build failed ({proc.returncode}):\n{proc.stderr[-8000:]}"
    for page in ("index", "getting-started", "datasets", "reference/api", "reference/cli", "reference/experiments", "reference/run-folders"):
        assert (tmp_path / "html" / f"{page}.html").is_file(), page
    # the API reference documents every public name: each name of each package's __all__ is an object of the inventory
    inv = subprocess.run([sys.executable, "-m", "sphinx.ext.intersphinx", str(tmp_path / "html" / "objects.inv")], capture_output=True, text=True, env=env).stdout
    documented = {line.split()[0].rsplit(".", 1)[-1] for line in inv.splitlines() if line.startswith("    collapselab")}
    missing = [f"{m}.{n}" for m, names in _public_names().items() for n in names if n not in documented]
    assert not missing, f"public names without an API entry: {missing}"
    # offline: no page loads a script or style sheet from the network, and MathJax ships with the pages
    remote = re.compile(r"""<(?:script|link)[^>]+(?:src|href)=["'](?:https?:)?//""")
    pages = list((tmp_path / "html").rglob("*.html"))
    assert not [p.name for p in pages if remote.search(p.read_text())]
    if any('class="math' in p.read_text() for p in pages):
        assert list((tmp_path / "html" / "_static").rglob("*mathjax*/**/*.js")) or list((tmp_path / "html" / "_static").rglob("tex-*.js"))
