"""Claims: one checked statement, the independent reference it is checked against, and its verdict.

A claim is structured data, so that the terminal table, the HTML report and a seed sweep
read it the same way:

- ``comparator`` says how ``measured`` is compared with ``expected``: ``"close"``
  (``|measured - expected| <= tolerance``, times ``|expected|`` when relative),
  ``"at_most"``/``"at_least"`` (a bound), ``"true"`` (a fact that holds or not),
  ``"test"`` (a statistical test: PASS iff its p-value is at most the level) or
  ``"not_applicable"`` (the claim does not apply to this configuration or outcome, and the
  claim says why; it is neither passed nor failed).
- ``reference`` names the independent computation the measurement is compared with (a
  closed form, autograd, a second algorithm, a theorem's prediction, the paper's number).
- ``tolerance_reason`` is the error model the tolerance (or bound, or level) comes from:
  a solver tolerance, a step size and order, eps times a condition number, a sample size.

The verdict rules live here once (:func:`verdict_close` and friends); the run context of
an experiment (``collapselab.experiments.RunContext``) records claims through them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from .errors import DataFileError, ParameterError

__all__ = ["COMPARATORS", "Claim", "format_expected", "format_measured", "format_value", "verdict_at_least", "verdict_at_most", "verdict_close", "verdict_test"]

COMPARATORS = ("close", "at_most", "at_least", "true", "test", "not_applicable")


def jsonable(x: Any) -> Any:
    """Numbers, strings, lists and dicts; tensors/arrays become lists, non-finite floats strings."""
    if hasattr(x, "detach"):
        x = x.detach().cpu()
    if hasattr(x, "tolist") and not isinstance(x, (list, tuple, dict, str)):
        x = x.tolist()
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if hasattr(x, "__fspath__"):
        return str(x)
    return x


@dataclass(frozen=True)
class Claim:
    """One verified statement.

    ``passed`` is True (PASS), False (FAIL) or None (not applicable: ``comparator`` is
    ``"not_applicable"`` and ``tolerance_reason`` says why).
    """

    id: str
    claim: str
    source: str
    comparator: str
    expected: Any
    measured: Any
    tolerance: Any
    tolerance_reason: str
    reference: str
    passed: bool | None

    def __post_init__(self) -> None:
        if self.comparator not in COMPARATORS:
            raise ParameterError(f"claim {self.id!r}: comparator must be one of {', '.join(COMPARATORS)}, got {self.comparator!r}")
        if (self.passed is None) != (self.comparator == "not_applicable"):
            raise ParameterError(f"claim {self.id!r}: only a not_applicable claim has no verdict (passed=None)")
        if not self.tolerance_reason.strip() or not self.reference.strip():
            raise ParameterError(f"claim {self.id!r}: every claim names its independent reference and the reason for its tolerance")

    @property
    def verdict(self) -> str:
        """``"PASS"``, ``"FAIL"`` or ``"N/A"``."""
        return "N/A" if self.passed is None else ("PASS" if self.passed else "FAIL")

    def to_json(self) -> dict[str, Any]:
        d = jsonable(asdict(self))
        d["passed"] = None if self.passed is None else bool(self.passed)
        d["verdict"] = self.verdict
        return d

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "Claim":
        """Read one entry of claims.json; an entry without the structured fields is an error naming it."""
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in doc]
        if missing:
            raise DataFileError(f"claim {doc.get('id', '?')!r} lacks {', '.join(missing)}: written by an older collapselab; run the experiment again")
        return cls(**{n: doc[n] for n in names})


def _finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def verdict_close(measured: float, expected: float, tolerance: float, *, relative: bool = False) -> bool:
    """``|measured - expected| <= tolerance`` (times ``|expected|`` when ``relative``); NaN fails."""
    scale = abs(expected) if relative else 1.0
    return _finite(measured) and _finite(expected) and abs(measured - expected) <= tolerance * scale


def verdict_at_most(measured: float, bound: float) -> bool:
    """``measured <= bound``; NaN fails."""
    return _finite(measured) and measured <= bound


def verdict_at_least(measured: float, bound: float) -> bool:
    """``measured >= bound``; NaN fails."""
    return _finite(measured) and measured >= bound


def verdict_test(p_value: float, level: float) -> bool:
    """A test of the null hypothesis "the claim is false": PASS iff ``p_value <= level``."""
    if not 0.0 < level < 1.0:
        raise ParameterError(f"a test's level must lie in (0, 1), got {level}")
    return _finite(p_value) and p_value <= level


def format_value(v: Any) -> str:
    """A measured or expected value for people: numbers to 4 significant digits, dicts as
    ``name=value`` pairs, lists element-wise; one rendering for the terminal and the report."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, dict):
        return ", ".join(f"{k}={format_value(x)}" for k, x in v.items())
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(format_value(x) for x in v) + "]"
    return str(v)


def format_expected(doc: dict[str, Any]) -> str:
    """What a claim (as in claims.json) expects, with its comparator: ``<= 1e-12``, ``0.5 ± 1e-3``, ``p <= 0.001``."""
    comparator, expected, tol = doc.get("comparator"), doc.get("expected"), doc.get("tolerance") or {}
    if comparator == "close":
        kind, t = next(iter(tol.items())) if tol else ("absolute", 0.0)
        return f"{format_value(expected)} ± {format_value(t)}" + (" (relative)" if kind == "relative" else "")
    if comparator in ("at_most", "at_least"):
        return f"{'<=' if comparator == 'at_most' else '>='} {format_value(expected)}"
    if comparator == "test":
        return f"p <= {format_value(tol.get('level'))}"
    if comparator == "not_applicable":
        return "n/a"
    return format_value(expected)


def format_measured(doc: dict[str, Any]) -> str:
    """What a claim (as in claims.json) measured; a test shows its p-value and statistic first."""
    m = doc.get("measured")
    if doc.get("comparator") == "test" and isinstance(m, dict):
        rest = {k: v for k, v in m.items() if k not in ("test", "p_value", "statistic")}
        return f"p={format_value(m.get('p_value'))}, statistic={format_value(m.get('statistic'))}" + (f", {format_value(rest)}" if rest else "")
    return format_value(m)
