"""Sphinx configuration of the CollapseLab documentation.

Why Sphinx: autodoc/autosummary read every public docstring, sphinx-click renders the CLI from the
Typer app itself, sphinx-gallery runs the tutorials as scripts (a failing tutorial fails the build)
and puts their figures and animations in the pages, and MyST lets the pages be markdown with
``$...$`` maths. sphinx-mathjax-offline ships MathJax 3 inside the package, so the maths renders
with no network. ``make docs`` builds with ``-W --keep-going -n``: any warning, broken reference or
failing example is an error.
"""

from __future__ import annotations

import os

import collapselab

project = "CollapseLab"
author = "CollapseLab developers"
release = collapselab.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # the distribution ships MathJax 3 under this (hyphenated) module name
    "sphinx_click",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "tutorials/README.txt", "**/*.ipynb", "**/*.py.md5", "**/*.codeobj.json"]

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

autosummary_generate = True
autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = True

sphinx_gallery_conf = {
    "examples_dirs": ["tutorials"],
    "gallery_dirs": ["generated/tutorials"],
    "filename_pattern": r"/plot_",
    "abort_on_example_error": True,
    "matplotlib_animations": True,
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
}

html_theme = "furo"
html_title = f"CollapseLab {release}"
html_static_path: list[str] = []
nitpicky = True
# Types named in signatures that live outside our documented API (torch, numpy, stdlib aliases).
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|numpy|np|scipy|pydantic|typer|click|collections\.abc|typing)\..*"),
]

os.environ.setdefault("COLLAPSELAB_DOCS_BUILD", "1")
