"""The experiments' names, summaries and sources, read without running their modules.

``collapselab list`` shows what every experiment checks; importing the experiments for that
would import torch, scipy and matplotlib (seconds). Each experiment module states its
``EXPERIMENT = Experiment(name=..., summary=..., source=...)`` with string literals or
module-level string constants (its own, or imported from a sibling module), so the three fields
are read from the module's syntax tree.
A module whose fields are not plain strings there is imported instead (correct, only slower);
the tests check that the catalogue equals the imported registry.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ExperimentInfo", "catalogue"]

_FIELDS = ("name", "summary", "source")


@dataclass(frozen=True)
class ExperimentInfo:
    """What ``collapselab list`` shows of one experiment, and the module that defines it."""

    name: str
    summary: str
    source: str
    module: str


def _string(node: ast.expr, constants: dict[str, str]) -> str | None:
    """The value of a string literal, a module-level string constant, or ``+`` of those; else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _string(node.left, constants), _string(node.right, constants)
        return None if left is None or right is None else left + right
    return None


def _constants(tree: ast.Module, folder: Path, depth: int = 0) -> dict[str, str]:
    """Module-level string constants of ``tree``, with those it imports from a sibling module
    (``from ._shared import SOURCE``), followed one level deep."""
    constants: dict[str, str] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.ImportFrom) and stmt.level == 1 and stmt.module and depth == 0:
            sibling = folder / f"{stmt.module}.py"
            if sibling.is_file():
                theirs = _constants(ast.parse(sibling.read_text(encoding="utf-8")), folder, depth + 1)
                constants.update({a.asname or a.name: theirs[a.name] for a in stmt.names if a.name in theirs})
        elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            text = _string(stmt.value, constants)
            if text is not None:
                constants[stmt.targets[0].id] = text
    return constants


def _read(path: Path, module: str) -> ExperimentInfo | None:
    """The fields of ``EXPERIMENT = Experiment(...)`` in ``path``; None where they are not plain strings."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    constants = _constants(tree, path.parent)
    for stmt in tree.body:
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name) and stmt.targets[0].id == "EXPERIMENT"):
            continue
        value = stmt.value
        if not (isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "Experiment"):
            return None
        given = {kw.arg: _string(kw.value, constants) for kw in value.keywords if kw.arg in _FIELDS}
        given.update({f: _string(a, constants) for f, a in zip(_FIELDS, value.args)})
        if any(given.get(f) is None for f in _FIELDS):
            return None
        return ExperimentInfo(given["name"], given["summary"], given["source"], module)  # type: ignore[arg-type]
    return None


def _imported(module: str) -> ExperimentInfo | None:
    from ._base import Experiment

    exp = getattr(importlib.import_module(module), "EXPERIMENT", None)
    return ExperimentInfo(exp.name, exp.summary, exp.source, module) if isinstance(exp, Experiment) else None


def catalogue() -> dict[str, ExperimentInfo]:
    """Every experiment module's :class:`ExperimentInfo`, by experiment name, sorted; the modules
    are those the registry (:func:`collapselab.experiments.experiments`) scans."""
    from .. import experiments as pkg

    found: dict[str, ExperimentInfo] = {}
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = f"{pkg.__name__}.{info.name}"
        spec = importlib.util.find_spec(module)
        origin = None if spec is None or spec.origin is None else Path(spec.origin)
        entry = _read(origin, module) if origin is not None and origin.suffix == ".py" else None
        if entry is None:
            entry = _imported(module)
        if entry is None:
            continue
        if entry.name in found:
            raise RuntimeError(f"two experiments are named {entry.name!r}")
        found[entry.name] = entry
    return dict(sorted(found.items()))
