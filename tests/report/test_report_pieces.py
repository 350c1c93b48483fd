"""The pieces of the report without a browser: one claim rendering, the terminal table, figure and
paper records, provenance."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from collapselab.core.claims import format_value, view  # noqa: E402
from collapselab.core.errors import ParameterError  # noqa: E402
from collapselab.core.store import RunFolder  # noqa: E402
from collapselab.core.verdicts import summarise  # noqa: E402
from collapselab.experiments._figures import read_json_list, record_paper_value, save_figure  # noqa: E402
from collapselab.report import Collection, build_report, format_text  # noqa: E402
from collapselab.report._text import table  # noqa: E402


def test_close_claims_show_the_digits_their_tolerance_resolves():
    v = view({"id": "r", "comparator": "close", "expected": 1.0, "measured": 0.9999999986444, "tolerance": {"absolute": 2.7e-9}, "passed": True, "tolerance_reason": "rk4"})
    assert (v.check, v.expected, v.tolerance, v.verdict) == ("equal within", "1", "± 2.7e-09", "PASS")
    assert v.measured == "0.99999999864"  # 4 significant digits would print 1 and hide the deviation
    rel = view({"comparator": "close", "expected": 0.1111111111111111, "measured": 0.1111111, "tolerance": {"relative": 1e-6}, "passed": True})
    assert rel.tolerance == "± 1e-06 × |expected|" and rel.expected == "0.11111111" and rel.measured == "0.1111111"


def test_bounds_facts_tests_and_not_applicable_share_one_form():
    bound = view({"comparator": "at_most", "expected": 1e-8, "measured": 1.4259017862859323e-12, "passed": True})
    assert (bound.check, bound.expected, bound.tolerance, bound.measured) == ("at most", "1e-08", "-", "1.426e-12")
    fact = view({"comparator": "true", "expected": {"max_gap_at_most": 2.414035105883437e-07, "n": 3}, "measured": {"max_gap": 3.4354885602994045e-10, "n": 3}, "passed": True})
    assert fact.expected == "max_gap <= 2.414e-07, n=3" and fact.measured == "max_gap=3.435e-10, n=3"
    test = view({"comparator": "test", "expected": {"p_value_at_most": 1e-3}, "tolerance": {"level": 1e-3}, "passed": True,
                 "measured": {"test": "one-sided sign test over 8 seeds", "statistic": 8.0, "p_value": 0.00390625, "median": 0.25}})
    assert (test.check, test.expected, test.tolerance, test.test) == ("test", "p <= 0.001", "level 0.001", "one-sided sign test over 8 seeds")
    assert test.measured == "p=0.003906, statistic=8, median=0.25"
    na = view({"comparator": "not_applicable", "expected": None, "measured": None, "passed": None, "tolerance_reason": "no classifier"})
    assert (na.check, na.expected, na.measured, na.verdict, na.reason) == ("not applicable", "-", "-", "N/A", "no classifier")
    assert format_value([0.019013028084183384, 0.9281697391755779]) == "[0.01901, 0.9282]"
    assert format_value(list(range(10))) == "[0, 1, ..., 9] (10 values)"


def test_terminal_table_wraps_long_values_and_cuts_none():
    long = "records_after_s1=163, points_not_fully_truncated=0, max_autograd_omega=0, switches_exact=16, switches_seen=16"
    lines = table([("id", "measured"), ("R2-collapsed", long)], (12, 30))
    assert len(lines) > 3 and all(len(line) <= 12 + 2 + 30 for line in lines)
    assert " ".join(" ".join(line[14:].split()) for line in lines[2:]) == long


def _run_with_figure(tmp_path):
    folder = RunFolder.create(tmp_path, "demo", {"seed": 0}, run_id="r", extra={"quick": True, "threads": 1, "device": "cpu"})
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    save_figure(folder, fig, "line", caption="a falling line", claims=["c1"], paper_figure="Ji et al. 2022, Fig. 2")
    plt.close(fig)
    record_paper_value(folder, "steps", paper=100_000, source="Ji et al. 2022, Sec. 4", ours=3000, claims=["c1"], differs="fewer steps")
    from collapselab.core.claims import Claim

    folder.add_claim(Claim("c1", "falls", "Ji et al. 2022; Fig 2", "at_most", 1.0, 0.5, None, "a bound", "the paper", True))
    folder.write_status("finished")
    return folder


def test_figures_and_paper_values_are_recorded_and_shown(tmp_path):
    folder = _run_with_figure(tmp_path)
    (entry,) = read_json_list(folder.figures / "figures.json")
    assert entry["caption"] == "a falling line" and entry["claims"] == ["c1"] and "line.png" in entry["files"]
    doc = json.loads((folder.path / "config.json").read_text())
    assert doc["provenance"]["cpu"] and doc["provenance"]["command"] and "git_commit" in doc["provenance"]
    page = build_report(Collection([summarise(folder.path)]), tmp_path / "report.html").read_text()
    assert "a falling line" in page and "Ji et al. 2022, Fig. 2" in page and "href='#demo-r--c1'" in page and "id='demo-r--c1'" in page
    assert "The paper beside us" in page and "100000" in page and "fewer steps" in page
    assert "data:image/svg+xml;base64," in page or "data:image/png;base64," in page
    assert "<h2>What the runs covered, and on what</h2>" in page and doc["provenance"]["cpu"] in page


def test_paper_value_needs_its_source(tmp_path):
    folder = RunFolder.create(tmp_path, "demo", {}, run_id="r")
    with pytest.raises(ParameterError, match="name where the paper prints it"):
        record_paper_value(folder, "x", paper=1, source=" ", ours=1, claims=(), differs="")


def test_terminal_text_has_one_table_per_run(tmp_path):
    folder = _run_with_figure(tmp_path)
    text = format_text(Collection([summarise(folder.path)]))
    assert "demo PASS" in text and "at most" in text and "1 of 1 claims passed" in text
