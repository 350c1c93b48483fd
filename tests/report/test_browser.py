"""The HTML report of a quick run, rendered by a real headless Chromium at 1400 px (Debian's
``chromium``, which ``make test`` installs; without it these tests skip and say why).

Checked: no console error or uncaught exception, every image and animation decodes
(naturalWidth > 0) and the animation plays (two screenshots of it, taken apart, differ), no element is
wider than the viewport, and the headline counts equal those of the runs' claims.json files,
counted here apart from the report's own code.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from browser import Browser, chromium
from collapselab.core.store import RunFolder
from collapselab.experiments import run_experiment
from collapselab.report import build_report, collect_runs

pytestmark = [
    pytest.mark.skipif(chromium() is None, reason="Debian's chromium is not installed: `make test` installs it (as root: apt-get install chromium); the report's browser test is skipped"),
    pytest.mark.xdist_group("report"),  # one pytest-xdist worker for the module, so its fixture (two quick runs) runs once (Makefile: make test)
]

CHECKS = """(async () => {
  const images = [...document.images];
  const broken = [];
  for (const img of images) {
    try { await img.decode(); } catch (err) { broken.push(img.alt); continue; }
    if (!(img.naturalWidth > 0)) broken.push(img.alt);
  }
  const vw = document.documentElement.clientWidth;
  const wide = [...document.querySelectorAll('body *')].filter(el => el.getBoundingClientRect().right > vw + 0.5).map(el => el.tagName + '#' + el.id);
  return {images: images.length, animations: document.querySelectorAll('img.anim').length, broken, wide, scroll: document.documentElement.scrollWidth, vw,
          headline: {...document.getElementById('headline').dataset}};
})()"""

def _counts_from_claims_json(root: Path) -> dict[str, int]:
    """Claims of the finished runs below ``root`` and the incomplete or stopped runs, straight from the files."""
    out = dict.fromkeys(("claims", "passed", "failed", "not_applicable", "runs", "incomplete", "error"), 0)
    for config in root.rglob("config.json"):
        run = config.parent
        out["runs"] += 1
        status = json.loads((run / "status.json").read_text())["status"] if (run / "status.json").exists() else "missing"
        if status == "failed":
            out["error"] += 1
        elif status != "finished":
            out["incomplete"] += 1
        else:
            claims = json.loads((run / "claims.json").read_text())
            out["claims"] += len(claims)
            for key, value in (("passed", True), ("failed", False), ("not_applicable", None)):
                out[key] += sum(c["passed"] is value for c in claims)
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("runs")
    for name in ("truncation-geometry", "effective-dynamics"):
        run_experiment(name, out=root, quick=True, threads=1)
    stopped = RunFolder.create(root, "truncation-geometry", {"seed": 1}, run_id="stopped", extra={"quick": True})
    stopped.write_status("failed", error="RuntimeError: a stopped run for the report's test")
    RunFolder.create(root, "effective-dynamics", {"seed": 1}, run_id="killed", extra={"quick": True}).write_status("running")
    return build_report(collect_runs(root), root / "report.html")


def test_report_renders_in_chromium_at_1400px(report):
    with Browser(width=1400, height=1000) as browser:
        browser.open(report)
        page = browser.evaluate(CHECKS)
        assert browser.errors == []
        assert page["broken"] == [] and page["images"] >= 6 and page["animations"] == 1
        assert page["wide"] == [] and page["scroll"] <= page["vw"]
        headline = {k: int(v) for k, v in page["headline"].items()}
        expected = _counts_from_claims_json(report.parent)
        assert {"notApplicable" if k == "not_applicable" else k: v for k, v in expected.items()} == headline
        assert expected["error"] == 1 and expected["incomplete"] == 1 and expected["claims"] > 0
        browser.evaluate("document.querySelector('img.anim').scrollIntoView()")  # chromium animates images in view
        frames = {browser.capture(selector="img.anim")}
        for _ in range(20):  # the GIF shows 8 frames per second: another frame within a few captures
            time.sleep(0.3)
            frames.add(browser.capture(selector="img.anim"))
            if len(frames) > 1:
                break
        assert len(frames) > 1, "the animation does not play"


def test_failed_and_incomplete_runs_come_first(report):
    text = report.read_text()
    attention = text.index("id='attention'")
    assert attention < text.index("Verdicts per experiment") < text.index("id='exp-truncation-geometry'")
    block = text[attention : text.index("</div>", attention)]
    assert "ERROR" in block and "INCOMPLETE" in block and "a stopped run for the report" in block
