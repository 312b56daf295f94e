"""reports/report.html as a real browser shows it: headless Chromium loads the page, a small script
checks that every image decoded (naturalWidth > 0) and that no section is empty, and --dump-dom
hands its verdict back. Skipped with a reason where Debian's `chromium` is not installed (.ci/run
installs it).
"""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT
from helpers_report import write_report_inputs

from linclass.studies.report import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install -y chromium)")

CHECK = """<script>
window.addEventListener("load", () => {
  const problems = [];
  for (const [i, img] of [...document.images].entries())
    if (!img.complete || img.naturalWidth === 0) problems.push("image not shown: " + (img.alt || i));
  for (const h of document.querySelectorAll("h2")) {
    let shown = false;
    for (let n = h.nextElementSibling; n && n.tagName !== "H2"; n = n.nextElementSibling)
      if (n.tagName !== "SCRIPT" && (n.matches("img, table") || n.querySelector("img, table") || n.innerText.trim()))
        shown = true;
    if (!shown) problems.push("empty section: " + h.innerText);
  }
  const out = document.createElement("pre");
  out.id = "linclass-check";
  out.textContent = JSON.stringify({images: document.images.length,
                                    sections: document.querySelectorAll("h2").length, problems});
  document.body.appendChild(out);
});
</script>
"""


def browser_check(report: Path, tmp_path: Path) -> dict:
    """Render `report` in headless Chromium; {images, sections, problems} as the page saw itself."""
    page = tmp_path / "checked.html"
    page.write_text(report.read_text().replace("</body>", CHECK + "</body>"))
    assert CHROMIUM is not None   # the module skips without it
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000",
                           "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="linclass-check">(.*?)</pre>', proc.stdout, flags=re.S)
    assert found, f"chromium exited {proc.returncode} without the check's verdict: {proc.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """A report written by linclass.studies.report from small real inputs (PNG figures, CSV tables)."""
    work = tmp_path_factory.mktemp("report")
    paths = write_report_inputs(work)
    write_report(work / "out" / "report.md", **paths)
    return work / "out" / "report.html"


def test_every_image_and_section_of_the_report_renders(report, tmp_path):
    verdict = browser_check(report, tmp_path)
    assert verdict["problems"] == [], verdict
    assert verdict["images"] >= 4 and verdict["sections"] >= 5, verdict


def test_the_check_sees_a_broken_image_and_an_empty_section(report, tmp_path):
    text = report.read_text()
    broken = re.sub(r'src="data:image/png;base64,[^"]{0,40}', 'src="data:image/png;base64,AAAA', text, count=1)
    broken = broken.replace("</body>", "<h2>Nothing here</h2>\n</body>")
    page = tmp_path / "broken.html"
    page.write_text(broken)
    problems = browser_check(page, tmp_path)["problems"]
    assert any(p.startswith("image not shown") for p in problems), problems
    assert "empty section: Nothing here" in problems, problems


def test_the_pipelines_own_report_renders(tmp_path):
    """reports/report.html of this checkout, when a pipeline run has made one."""
    report = ROOT / "reports" / "report.html"
    if not report.exists():
        pytest.skip("no reports/report.html here (run make repro)")
    assert browser_check(report, tmp_path)["problems"] == []
