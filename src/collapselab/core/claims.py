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

__all__ = ["COMPARATORS", "Claim", "ClaimView", "format_expected", "format_measured", "format_value", "verdict_at_least", "verdict_at_most", "verdict_close", "verdict_test", "view"]

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


_BOUND_SUFFIXES = {"_at_most": "<=", "_at_least": ">="}
_LONG_LIST = 6


def _number(x: float, digits: int = 4) -> str:
    return f"{x:.{digits}g}"


def format_value(v: Any, digits: int = 4) -> str:
    """A measured or expected value for people: numbers to ``digits`` significant digits, dicts
    as ``name=value`` pairs (a key ``name_at_most`` as ``name <= value``), lists element-wise
    (a long one by its first and last entries and its length); one rendering for the terminal
    and the report."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return _number(v, digits)
    if isinstance(v, dict):
        pairs = []
        for k, x in v.items():
            op = next((o for suffix, o in _BOUND_SUFFIXES.items() if str(k).endswith(suffix)), None)
            name = str(k)[: -len(next(s for s in _BOUND_SUFFIXES if str(k).endswith(s)))] if op else str(k)
            pairs.append(f"{name} {op} {format_value(x, digits)}" if op else f"{name}={format_value(x, digits)}")
        return ", ".join(pairs)
    if isinstance(v, (list, tuple)):
        if len(v) > _LONG_LIST:
            return f"[{format_value(v[0], digits)}, {format_value(v[1], digits)}, ..., {format_value(v[-1], digits)}] ({len(v)} values)"
        return "[" + ", ".join(format_value(x, digits) for x in v) + "]"
    return str(v)


def _close_digits(expected: Any, tolerance: float) -> int:
    """Significant digits that resolve a deviation of a tenth of the tolerance at the scale of
    ``expected`` (at least 4, at most 16: float64), so a value within ``1 ± 3e-9`` shows as
    ``0.9999999986``, not ``1``."""
    if not (_finite(expected) and _finite(tolerance)) or tolerance <= 0 or expected == 0:
        return 4
    return max(4, min(16, math.floor(math.log10(abs(expected))) - math.floor(math.log10(tolerance)) + 2))


@dataclass(frozen=True)
class ClaimView:
    """One claim as people read it, the same in the terminal table and the HTML report.

    ``check`` names the comparator in words (``equal within``, ``at most``, ``at least``,
    ``holds``, ``test``, ``not applicable``); ``expected`` the value compared with (a bound, a
    closed form, ``p <= level``); ``tolerance`` the allowed deviation (``± 1e-08``, ``± 1e-06 ×
    |expected|``, the level of a test, ``-`` for bounds and facts); ``measured`` the value seen,
    to the precision the tolerance resolves; ``reason`` the error model behind the tolerance (or,
    when not applicable, why); ``test`` the name of a statistical test (empty otherwise).
    """

    id: str
    check: str
    expected: str
    tolerance: str
    measured: str
    reason: str
    verdict: str
    test: str = ""


_CHECK = {"close": "equal within", "at_most": "at most", "at_least": "at least", "true": "holds", "test": "test", "not_applicable": "not applicable"}


def view(doc: dict[str, Any]) -> ClaimView:
    """:class:`ClaimView` of one claim as in claims.json."""
    comparator, expected, tol = doc.get("comparator"), doc.get("expected"), doc.get("tolerance") or {}
    measured = doc.get("measured")
    verdict = {True: "PASS", False: "FAIL", None: "N/A"}.get(doc.get("passed"), "FAIL")
    tolerance, exp_text = "-", format_value(expected)
    if comparator == "close":
        kind, t = next(iter(tol.items())) if tol else ("absolute", 0.0)
        digits = _close_digits(expected, abs(expected) * t if kind == "relative" and _finite(expected) else t)
        exp_text, meas = format_value(expected, digits), format_value(measured, digits)
        tolerance = f"± {format_value(t)}" + (" × |expected|" if kind == "relative" else "")
    elif comparator == "test" and isinstance(measured, dict):
        rest = {k: v for k, v in measured.items() if k not in ("test", "p_value", "statistic")}
        meas = f"p={format_value(measured.get('p_value'))}, statistic={format_value(measured.get('statistic'))}" + (f", {format_value(rest)}" if rest else "")
        exp_text, tolerance = f"p <= {format_value(tol.get('level'))}", f"level {format_value(tol.get('level'))}"
    else:
        meas = format_value(measured)
        if comparator == "test":
            exp_text, tolerance = f"p <= {format_value(tol.get('level'))}", f"level {format_value(tol.get('level'))}"
        elif comparator == "not_applicable":
            exp_text = meas = "-"
    test = str(measured.get("test", "")) if comparator == "test" and isinstance(measured, dict) else ""
    return ClaimView(str(doc.get("id", "?")), _CHECK.get(str(comparator), str(comparator)), exp_text, tolerance, meas, str(doc.get("tolerance_reason") or "-"), verdict, test)


def format_expected(doc: dict[str, Any]) -> str:
    """What a claim (as in claims.json) expects with its comparator, in one string:
    ``<= 1e-08``, ``>= 3``, ``0.5 ± 0.001``, ``2 ± 0.01 × |expected|``, ``p <= 0.001``, ``n/a``."""
    v = view(doc)
    comparator = doc.get("comparator")
    if comparator == "close":
        return f"{v.expected} {v.tolerance}"
    if comparator in ("at_most", "at_least"):
        return f"{'<=' if comparator == 'at_most' else '>='} {v.expected}"
    return "n/a" if comparator == "not_applicable" else v.expected


def format_measured(doc: dict[str, Any]) -> str:
    """What a claim (as in claims.json) measured; a test shows its p-value and statistic first."""
    return view(doc).measured
