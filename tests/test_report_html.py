"""report.html (analysis/report_html.py, analysis/md_html.py): the markdown subset the
reports use as HTML, the colours of what needs a look, a self-contained page for a small
twin run, rendered by a headless chromium, and `testbed report --open`."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import webbrowser
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console

from analysis.compare import compare
from analysis.md_html import MarkdownHtml
from analysis.report import write_report
from analysis.report_html import ReportHtml, refresh_html_report
from testbed.cli import main
from testbed.experiment.runner import run_experiment
from testbed.los.schedulers import scheduler_names
from testbed.spec.loader import load_experiment

from .conftest import EXPERIMENTS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REQUIRE_BROWSER = "LOS_REQUIRE_BROWSER"
GREEN_BG = (0xE3, 0xF4, 0xE6)
"""The background of a good verdict (CSS --green-bg): seen only if the CSS applied."""


# --- markdown to HTML -----------------------------------------------------------------
def test_a_table_becomes_a_table_with_a_head() -> None:
    page = MarkdownHtml().convert(
        "| streams | paper (LOS) | los |\n|---|---|---|\n| 2 | 14.37 % | `x` **1** |\n| 4 |\n"
    )
    assert page.startswith('<div class="table-wrap"><table><thead><tr><th>streams</th>')
    assert "<th>paper (LOS)</th>" in page
    assert "<td>14.37 %</td><td><code>x</code> <strong>1</strong></td>" in page
    assert page.count("<tr>") == 3
    assert "<td>4</td><td></td><td></td>" in page  # a short row is padded


def test_nested_lists_and_continued_items() -> None:
    page = MarkdownHtml().convert(
        "* los (share):\n  * 2 streams: none\n  * 10 streams: cycle\n    50 %\n* in-situ\n"
    )
    assert page == (
        "<ul>\n<li>los (share):\n<ul>\n<li>2 streams: none</li>\n"
        "<li>10 streams: cycle 50 %</li>\n</ul></li>\n<li>in-situ</li>\n</ul>"
    )


def test_blockquotes_headings_paragraphs_and_escaping() -> None:
    page = MarkdownHtml().convert(
        "# Run <1>\n\n> first line\n> second `a<b`\n\nsome text\ngoes on & on\n\n## Host load\n"
    )
    assert '<h1 id="run-1">Run &lt;1&gt;</h1>' in page
    assert "<blockquote>\n<p>first line second <code>a&lt;b</code></p>\n</blockquote>" in page
    assert "<p>some text goes on &amp; on</p>" in page
    assert '<h2 id="host-load">Host load</h2>' in page


def test_a_paragraph_of_images_becomes_figures() -> None:
    page = MarkdownHtml().convert("![fig7](figures/fig7.png)\n![fig8](figures/fig8.png)\n")
    assert page.count("<figure>") == 2
    assert '<img src="figures/fig7.png" alt="fig7"><figcaption>fig7</figcaption>' in page


# --- colours --------------------------------------------------------------------------
REPORT = """# los-scheduling on twin

> These numbers come from the discrete-event twin; they are not measurements of real systems.

## Drop rate by stream count (Fig. 7)

| streams | paper (LOS) | los | optimum |
|---|---|---|---|
| 2 | 14.37 % | 3.0 % | not proven in 1 cell(s) |

| streams | 0 hops | 2 hops |
|---|---|---|
| 6 | 0.0 % | 12.0 % (paper 31.13 %) |

## The paper's claims, checked on this run

* in situ drops 100 % at every stream count: yes
* LOS drops fewer than in situ at every stream count: NO

## Host load

NOT TRUSTWORTHY: the host's CPU was over 95 % busy for more than 10% of these cells:
* los-s02-r01: 40% of the time

## Agreement: twin against twin

agreement: 1/2 metrics within bands (drop rate 1/2); worst: los

| metric | cell | within |
|---|---|---|
| drop rate | los, 2 streams | yes |
| drop rate | los, 10 streams | **no** |
"""


def test_what_needs_a_look_is_in_colour(tmp_path: Path) -> None:
    page = ReportHtml(tmp_path).convert(REPORT)
    assert '<blockquote class="warn">' in page  # a model, not a measurement
    assert '<td class="paper">14.37 %</td>' in page
    assert '<td class="warn">not proven in 1 cell(s)</td>' in page
    assert '12.0 % <span class="paper">paper 31.13 %</span>' in page
    assert '<li class="good">in situ drops' in page and '<li class="bad">LOS drops' in page
    assert '<p class="bad">NOT TRUSTWORTHY' in page
    assert '<li class="warn">los-s02-r01: 40% of the time</li>' in page
    assert '<p class="bad">agreement: 1/2 metrics' in page
    assert '<td class="good">yes</td>' in page
    assert '<td class="bad"><strong>no</strong></td>' in page
    assert "[figure not found: figures/x.png]" in ReportHtml(tmp_path).convert(
        "![x](figures/x.png)"
    )


# --- a run's page ---------------------------------------------------------------------
def _twin_run(root: Path, seed: int) -> Path:
    experiment = load_experiment(
        EXPERIMENTS / "los-scheduling.yaml",
        "quick",
        {
            "seed": seed,
            "schedulers": ["los", "in-situ"],
            "sweep": {"stream_counts": [2, 10], "repetitions": 1},
            "duration_s": 1800,
        },
        known_schedulers=scheduler_names(),
    )
    return run_experiment(experiment, "twin", root, fresh=True, console=Console(quiet=True)).path


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """report.html of a small twin run, compared with a second one (agreement shown)."""
    root = tmp_path_factory.mktemp("runs")
    run, other = _twin_run(root / "a", 1), _twin_run(root / "b", 2)
    write_report(run)
    assert (run / "report.html").is_file()
    compare(run, other)
    path = refresh_html_report(run)
    assert path == run / "report.html"
    return path


def test_the_page_is_self_contained_and_says_what_report_md_says(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    sources = re.findall(r'src="([^"]*)"', text)
    assert len(sources) == 4 and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<title>los-scheduling on twin (" in text and "<style>" in text
    markdown = (page.parent / "report.md").read_text(encoding="utf-8")
    for heading in re.findall(r"^## (.*)$", markdown, re.MULTILINE):
        assert f">{html.escape(heading, quote=False)}</h2>" in text, heading
    assert '<blockquote class="warn">' in text  # the twin's numbers are a model's
    assert '<td class="paper">14.37 %</td>' in text
    assert '<h2 id="agreement-los-scheduling-twin-against-twin">' in text
    assert '<p class="good">agreement: ' in text and '<td class="good">yes</td>' in text
    assert not list(page.parent.glob(".report.html.*"))  # written atomically


@pytest.fixture(scope="module")
def chromium() -> str:
    """The headless browser; skipped without one, unless LOS_REQUIRE_BROWSER is set."""
    if CHROMIUM is None:
        reason = "no chromium on PATH to render report.html (Debian: apt-get install chromium)"
        if os.environ.get(REQUIRE_BROWSER, "") not in ("", "0"):
            pytest.fail(f"{reason}; {REQUIRE_BROWSER} is set: required here", pytrace=False)
        pytest.skip(reason)
    return CHROMIUM


def _render(chromium: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [chromium, "--headless", "--disable-gpu", "--no-sandbox", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_headless_browser_renders_the_page(chromium: str, page: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    profile = f"--user-data-dir={tmp_path / 'profile'}"
    done = _render(
        chromium, profile, f"--screenshot={shot}", "--window-size=1200,2000", page.as_uri()
    )
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 2000)
    colours = image.getcolors(maxcolors=1 << 22) or []
    assert len(colours) > 200, f"a blank page? {len(colours)} colours"
    assert GREEN_BG in {c for _, c in colours}, "the CSS did not apply (no green verdict)"

    dom = _render(chromium, profile, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "<h1" in dom.stdout and "los-scheduling on twin</h1>" in dom.stdout
    assert "<table>" in dom.stdout
    assert '<img src="data:image/png;base64,' in dom.stdout


# --- testbed report --open --------------------------------------------------------------
class _Browser:
    def __init__(self) -> None:
        self.opened: list[str] = []

    def open(self, url: str) -> bool:
        self.opened.append(url)
        return True


def test_report_open_opens_the_page_or_says_there_is_no_browser(
    page: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    browser = _Browser()
    monkeypatch.setattr(webbrowser, "get", lambda *a: browser)
    assert main(["report", str(page.parent), "--open"]) == 0
    assert browser.opened == [page.resolve().as_uri()]
    assert capsys.readouterr().out.splitlines()[-1] == f"opened {page} in the browser"

    def none(*args: object) -> webbrowser.BaseBrowser:
        raise webbrowser.Error("could not locate runnable browser")

    monkeypatch.setattr(webbrowser, "get", none)
    assert main(["report", str(page.parent), "--open"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1] == f"no browser found: open {page} yourself"
    assert "Traceback" not in captured.out + captured.err
    assert '<p class="good">agreement: ' in page.read_text(encoding="utf-8")  # still shown
