"""Sphinx configuration of the CollapseLab documentation.

Why Sphinx: autodoc reads every public docstring (the API pages are generated from each package's
``__all__`` at build time), Typer's own markdown generator renders the CLI from the app itself
(sphinx-click does not recognise the copy of click that Typer now vendors), sphinx-gallery runs the tutorials as scripts (a failing tutorial fails the build)
and puts their figures and animations in the pages, and MyST lets the pages be markdown with
``$...$`` maths. sphinx-mathjax-offline ships MathJax 3 inside the package, so the maths renders
with no network. ``make docs`` builds with ``-W --keep-going -n``: any warning, broken reference or
failing example is an error.
"""

from __future__ import annotations

import os
import re
import sys

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
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "tutorials/README.txt", "**/*.ipynb", "**/*.py.md5", "**/*.codeobj.json"]

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

autosummary_generate = True
autodoc_default_options = {"undoc-members": True, "show-inheritance": False}  # the generated API pages name every member (below)
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
    "write_computation_times": False,  # its page loads DataTables from a CDN; the docs stay offline
}

html_theme = "furo"
html_title = f"CollapseLab {release}"
html_static_path: list[str] = []
nitpicky = True
# Types named in signatures that live outside our documented API (torch, numpy, the standard
# library); there is no intersphinx (the build is offline), so they stay unlinked.
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|nn|numpy|np|scipy|pydantic|typer|click|tqdm|collections\.abc|typing|types|pathlib|enum|abc|os|io|logging|contextlib|dataclasses|lightning|transformers)\..*"),
    (r"py:class", r"(Path|Module|callable|Progress|T)"),
    (r"py:class", r"collapselab\.[\w.]*\._?\w+\.T"),  # type variables
    (r"py:class", r"collapselab\.collapse\._sources\.Progress"),  # a private alias of Callable[[int], None]
]

os.environ.setdefault("COLLAPSELAB_DOCS_BUILD", "1")

# -- generated pages: the API from each package's __all__, the CLI from the Typer app ----------
# Written into docs/generated/ (not committed) before Sphinx reads the sources, so they always match
# the code: every name of every documented module's ``__all__`` gets an entry (autodoc's ``members``
# alone skips constants that a package re-exports), each object once, on the page of the first
# module in DOCUMENTED that exports it; the other pages link there.
PAGES = {
    "collapselab": ["collapselab"],
    "construct": ["collapselab.construct"],
    "collapse": ["collapselab.collapse", "collapselab.collapse.plots"],
    "effective": ["collapselab.effective"],
    "flows": ["collapselab.flows", "collapselab.flows.gram", "collapselab.flows.linalg"],
    "toy": ["collapselab.toy"],
    "train": ["collapselab.train", "collapselab.train.config"],
    "core": ["collapselab.core", "collapselab.core.errors", "collapselab.core.data", "collapselab.core.network", "collapselab.core.cost",
             "collapselab.core.geometry", "collapselab.core.validation", "collapselab.core.types", "collapselab.core.runtime",
             "collapselab.core.claims", "collapselab.core.verdicts", "collapselab.core.store", "collapselab.core.provenance"],
    "experiments": ["collapselab.experiments"],
    "report": ["collapselab.report"],
    "integrations": ["collapselab.integrations", "collapselab.integrations.lightning", "collapselab.integrations.transformers"],
}
# the order in which a re-exported object finds its page: the defining layer first
DOCUMENTED = [*PAGES["core"][1:], *(m for k, v in PAGES.items() if k not in ("core", "collapselab") for m in v), "collapselab.core", "collapselab"]


def _api_pages(outdir: str) -> None:
    import importlib
    import inspect

    owners: dict[int, str] = {}
    for modname in DOCUMENTED:
        mod = importlib.import_module(modname)
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                owners.setdefault(id(obj), modname)
    os.makedirs(outdir, exist_ok=True)
    for page, modules in PAGES.items():
        lines = [f"# {modules[0]}", ""]
        for k, modname in enumerate(modules):
            mod = importlib.import_module(modname)
            own, data, elsewhere = [], [], []
            for name in getattr(mod, "__all__", []):
                obj = getattr(mod, name)
                if inspect.ismodule(obj):
                    continue
                owner = owners.get(id(obj), modname)
                if owner != modname:
                    elsewhere.append((name, owner))
                elif inspect.isclass(obj) or inspect.isroutine(obj):
                    own.append(name)
                else:  # a constant: autodoc's members skip re-exported ones, so each gets its autodata
                    data.append(name)
            if k:
                lines += [f"## `{modname}`", ""]
            lines += ["```{eval-rst}", f".. automodule:: {modname}", *([f"   :members: {', '.join(own)}"] if own else []), "",
                      *(f".. autodata:: {modname}.{n}" for n in data), "```", ""]
            if elsewhere:
                lines += [f"Also exported by `{modname}`, documented with the module that defines it:", ""]
                lines += [f"- `{modname}.{n}`: {{py:obj}}`{o}.{n}`" for n, o in elsewhere] + [""]
        path = os.path.join(outdir, f"{page}.md")
        text = "\n".join(lines)
        if not os.path.exists(path) or open(path).read() != text:  # unchanged pages keep Sphinx's cache
            with open(path, "w") as fh:
                fh.write(text)


def _cli_page(path: str) -> None:
    import typer
    import typer.cli

    from collapselab.cli import app

    command = typer.main.get_command(app)
    text = typer.cli.get_docs_for_click(obj=command, ctx=typer.Context(command), name="collapselab").strip() + "\n"
    if not os.path.exists(path) or open(path).read() != text:
        with open(path, "w") as fh:
            fh.write(text)


def _generate(app) -> None:  # noqa: ANN001
    _api_pages(os.path.join(app.srcdir, "generated", "api"))
    _cli_page(os.path.join(app.srcdir, "generated", "cli.md"))


def _constant_docstring(app, what, name, obj, options, lines):  # noqa: ANN001 (Sphinx's event signature)
    """A constant a package re-exports has no docstring of its own there, and autodoc falls back to
    its type's (``dict``'s); take the ``#:`` or string docstring from the module that defines it."""
    doc = getattr(type(obj), "__doc__", None)
    if what not in ("data", "attribute") or not lines or not isinstance(doc, str) or not doc.strip() or lines[0].strip() != doc.strip().splitlines()[0].strip():
        return
    from sphinx.pycode import ModuleAnalyzer

    short = name.rsplit(".", 1)[-1]
    holders = sorted((m for m, mod in list(sys.modules.items()) if m.startswith("collapselab.") and getattr(mod, short, None) is obj), key=len, reverse=True)
    lines[:] = []
    for modname in holders:
        found = ModuleAnalyzer.for_module(modname).find_attr_docs().get(("", short))
        if found:
            lines.extend(found)
            return


def _resolve(app, env, node, contnode):  # noqa: ANN001 (Sphinx's event signature)
    """Resolve a Python reference the domain could not: a short name (``ParameterError``), a
    re-exported path (``collapselab.flows.fit``) or a private module's path
    (``collapselab.collapse._report.CollapseReport``), when exactly one documented object
    carries that last name. A module path that is not documented links to its documented package."""
    if node.get("refdomain") != "py":
        return None
    domain = env.get_domain("py")
    target = node["reftarget"].lstrip("~.")
    if node["reftype"] == "mod":
        parts = target.split(".")
        candidates = [".".join(parts[:k]) for k in range(len(parts), 0, -1)]
        # a submodule named relative to its package's docstring (``normalisation`` in collapselab.toy)
        candidates += [m for m in sorted(domain.modules) if f"{m}.{target}" in sys.modules]
        for cand in candidates:
            if cand in domain.modules and (cand != "collapselab" or target == "collapselab"):
                return domain.resolve_xref(env, node["refdoc"], app.builder, "mod", cand, node, contnode)
        return None
    last = target.rsplit(".", 1)[-1]
    found = {name for name, entry in domain.objects.items() if name.rsplit(".", 1)[-1] == last and not entry.aliased}
    if len(found) == 1:
        return domain.resolve_xref(env, node["refdoc"], app.builder, "obj", found.pop(), node, contnode)
    return None


# matplotlib's JavaScript animation player (sphinx-gallery's ``matplotlib_animations``) loads the
# Font Awesome style sheet from a CDN for its button icons. The site must work offline, so the link
# is replaced by a few CSS rules that draw the same buttons with plain characters.
_FONT_AWESOME = re.compile(r'<link rel="stylesheet"\s+href="https://maxcdn\.bootstrapcdn\.com/font-awesome/[^"]*">')
_PLAYER_ICONS = {"minus": "\u2212", "plus": "+", "fast-backward": "\u23ee", "step-backward": "\u23f4\u23f4",
                 "backward": "\u23f4", "pause": "\u23f8", "play": "\u23f5", "step-forward": "\u23f5\u23f5",
                 "fast-forward": "\u23ed"}
_PLAYER_STYLE = "<style>" + "".join(f".fa-{k}::before{{content:'{v}'}}" for k, v in _PLAYER_ICONS.items()) + ".fa{font-style:normal}</style>"


def _offline_player(app, docname, source):  # noqa: ANN001
    source[0] = _FONT_AWESOME.sub(_PLAYER_STYLE, source[0])


def setup(app):  # noqa: ANN001
    app.connect("builder-inited", _generate)
    app.connect("source-read", _offline_player)
    app.connect("autodoc-process-docstring", _constant_docstring)
    app.connect("missing-reference", _resolve)
