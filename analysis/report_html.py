"""`report.html` beside a run's `report.md`: the same content as one self-contained page
(figures inlined as base64 PNG data URIs, CSS inline, no external URL), tables styled, and
in colour what needs a look: host-load flags in red and amber, model and synthetic-data
warnings in amber, the paper's reference numbers marked beside this run's, the claims'
yes/NO, and, where the run directory holds `comparison-*.md`, each comparison's agreement
verdict and table (within: yes green, no red)."""

from __future__ import annotations

import base64
import html
import mimetypes
import re
from pathlib import Path
from typing import Any

from analysis.md_html import MarkdownHtml
from analysis.run_data import RunData, load_run
from testbed.results.atomic import atomic_write_text

REPORT_HTML = "report.html"
_VERDICT = re.compile(r"^agreement: (\d+)/(\d+) metrics within")
_PAPER = re.compile(r"\(paper ([^)]*)\)")
_SECTION = re.compile(r"^## ", re.MULTILINE)

CSS = """
:root { --red: #c62828; --red-bg: #fdecea; --amber: #b26a00; --amber-bg: #fff4dc;
  --green: #1b6e2a; --green-bg: #e3f4e6; --paper: #23408e; --paper-bg: #e8eefc;
  --line: #d5d9e0; --muted: #5b6472; }
* { box-sizing: border-box; }
body { margin: 0; background: #f4f5f7; color: #1d2330; line-height: 1.5;
  font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 24px 32px 48px; background: #fff;
  min-height: 100vh; box-shadow: 0 0 12px rgba(0, 0, 0, .06); }
h1 { font-size: 26px; margin: 8px 0 12px; padding-bottom: 8px;
  border-bottom: 3px solid #2f5fb3; }
h2 { font-size: 19px; margin: 32px 0 10px; padding-bottom: 4px;
  border-bottom: 1px solid var(--line); color: #243a66; }
h3 { font-size: 16px; margin: 22px 0 8px; }
code { font: 13px/1.4 "DejaVu Sans Mono", Menlo, Consolas, monospace;
  background: #eef0f4; padding: 1px 4px; border-radius: 3px; }
ul { padding-left: 22px; }
li { margin: 2px 0; }
li.good, li.bad, li.warn { list-style: none; margin-left: -18px; padding: 2px 8px;
  border-radius: 4px; }
blockquote { margin: 14px 0; padding: 8px 14px; border-left: 5px solid #9aa5b8;
  background: #f3f5f9; color: #333c4c; border-radius: 0 6px 6px 0; }
blockquote p { margin: 4px 0; }
p.good, p.bad, p.warn, blockquote.good, blockquote.bad, blockquote.warn {
  padding: 8px 14px; border-radius: 0 6px 6px 0; border-left: 5px solid; }
.good { background: var(--green-bg); border-color: var(--green); color: var(--green); }
.bad { background: var(--red-bg); border-color: var(--red); color: var(--red);
  font-weight: 600; }
.warn { background: var(--amber-bg); border-color: #e69500; color: var(--amber); }
.good a, .bad a, .warn a { color: inherit; }
.table-wrap { overflow-x: auto; margin: 10px 0 14px; }
table { border-collapse: collapse; font-size: 13.5px; min-width: 50%; }
th { background: #2f3f5f; color: #fff; text-align: left; font-weight: 600;
  padding: 6px 10px; white-space: nowrap; }
td { padding: 5px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
tbody tr:nth-child(even) td { background: #f7f8fb; }
tbody tr:hover td { background: #eef3ff; }
tbody tr td.good { background: var(--green-bg); font-weight: 600; }
tbody tr td.bad { background: var(--red-bg); }
tbody tr td.warn { background: var(--amber-bg); }
tbody tr td.good, tbody tr td.bad, tbody tr td.warn { border-color: var(--line); }
tbody tr td.paper { background: var(--paper-bg); color: var(--paper); font-weight: 600; }
span.paper { display: inline-block; margin-left: 6px; padding: 0 6px; border-radius: 8px;
  background: var(--paper-bg); color: var(--paper); font-size: 12px; font-weight: 600; }
figure { margin: 18px 0; padding: 10px; border: 1px solid var(--line); border-radius: 6px;
  background: #fff; text-align: center; }
figure img { max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 12.5px; margin-top: 4px; }
.missing { color: var(--amber); }
footer { margin-top: 36px; color: var(--muted); font-size: 12px; }
"""


def _data_uri(path: Path) -> str | None:
    """A file as a base64 data URI, or None if it is not there."""
    if not path.is_file():
        return None
    kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


class ReportHtml(MarkdownHtml):
    """The report's markdown, with its figures inlined and its warnings in colour."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = run_dir

    def block_class(self, kind: str, text: str) -> str | None:
        if text.startswith("NOT TRUSTWORTHY"):
            return "bad"
        if self.section == "Host load":
            if kind == "li":  # a saturated cell
                return "warn"
            return "good" if "below saturation" in text else None
        if "SYNTHETIC" in text or "not measurements of real systems" in text:
            return "warn"
        if text.startswith("NOT PROVEN"):
            return "warn"
        if verdict := _VERDICT.match(text):
            return "good" if verdict.group(1) == verdict.group(2) else "bad"
        if text.startswith("agreement: no metric"):
            return "warn"
        if kind == "li" and self.section.startswith("The paper's claims"):
            return "good" if text.endswith(": yes") else "bad" if text.endswith(": NO") else None
        return None

    def cell_class(self, header: str, text: str) -> str | None:
        if header == "within":
            return "good" if text == "yes" else "bad"
        if header.startswith("paper"):
            return "paper" if text not in ("–", "") else None
        if "not proven" in text:
            return "warn"
        return None

    def image(self, alt: str, src: str) -> str:
        uri = None
        if "://" not in src and not src.startswith("data:"):
            uri = _data_uri(self.run_dir / src)
        if uri is None:
            return f'<span class="missing">[figure not found: {html.escape(src)}]</span>'
        return f'<img src="{uri}" alt="{html.escape(alt)}">'

    def decorate(self, rendered: str) -> str:
        # "12.0 % (paper 31.13 %)": the paper's number as a marked badge beside this run's
        return _PAPER.sub(r'<span class="paper">paper \1</span>', rendered)


def _synthetic_warning(manifest: dict[str, Any]) -> list[str]:
    """A warning where the run's streams replayed synthetic samples (manifest `data`)."""
    data = manifest.get("data") or {}
    names = [n for n, used in data.items() if isinstance(used, dict) and "synthetic" in used]
    if not names:
        return []
    return [
        f"> SYNTHETIC data: the {', '.join(names)} streams replayed synthetic samples, not "
        "CityPulse files (manifest.json's `data`; the console of the run said how to get "
        "the files).",
        "",
    ]


def _host_load_warning(lines: list[str]) -> list[str]:
    """A red line at the top where the Host load section flags cells, linking to it."""
    if "## Host load" not in lines:
        return []
    section = lines[lines.index("## Host load") + 1 :]
    if not any(s.startswith("NOT TRUSTWORTHY") for s in section):
        return []
    end = next((k for k, s in enumerate(section) if s.startswith("## ")), len(section))
    flagged = sum(s.startswith("* ") for s in section[:end])
    return [
        f"> NOT TRUSTWORTHY: the host's CPU was saturated during {flagged} cell(s); see "
        "[Host load](#host-load) below.",
        "",
    ]


def _agreement_sections(run_dir: Path) -> list[str]:
    """Each `comparison-*.md`'s '## Agreement' section, headed by what it compares."""
    lines: list[str] = []
    for path in sorted(run_dir.glob("comparison-*.md")):
        text = path.read_text(encoding="utf-8")
        title = text.splitlines()[0].lstrip("# ").strip() if text.strip() else path.stem
        parts = _SECTION.split(text)
        found = [p for p in parts[1:] if p.startswith("Agreement")]
        if not found:
            continue
        body = found[0].split("\n", 1)[1] if "\n" in found[0] else ""
        lines += [f"## Agreement: {title}", "", f"From `{path.name}`.", "", body.strip(), ""]
    return lines


def report_markdown(run: RunData) -> str:
    """report.md with the page's additions: after the header, a red line where the Host
    load section flags cells and a synthetic-data warning (from the manifest, unless
    report.md says so already); before the figures, the comparisons' agreement sections."""
    text = (run.path / "report.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    warnings = _host_load_warning(lines)
    if "SYNTHETIC" not in text:
        warnings += _synthetic_warning(run.manifest)
    if warnings:
        first = next((k for k, s in enumerate(lines) if s.startswith("## ")), len(lines))
        quote = next((k for k, s in enumerate(lines[:first]) if s.startswith(">")), first)
        lines[quote:quote] = warnings
    if agreement := _agreement_sections(run.path):
        figures = next((k for k, s in enumerate(lines) if s == "## Figures"), len(lines))
        lines[figures:figures] = agreement
    return "\n".join(lines) + "\n"


def render(run: RunData) -> str:
    """The whole page for a run whose report.md is written."""
    renderer = ReportHtml(run.path)
    body = renderer.convert(report_markdown(run))
    m = run.manifest
    title = f"{m.get('experiment')} on {m.get('testbed')} ({run.path.name})"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n"
        f"<body>\n<main>\n{body}\n"
        f"<footer>{html.escape(run.path.name)}: rendered from report.md by "
        "analysis/report_html.py; figures inlined.</footer>\n</main>\n</body>\n</html>\n"
    )


def write_html_report(run_dir: Path | str | RunData) -> Path:
    """Write `report.html` beside the run's `report.md` (atomically); its path."""
    run = load_run(run_dir)
    path = run.path / REPORT_HTML
    atomic_write_text(path, render(run))
    return path


def refresh_html_report(run_dir: Path | str | RunData) -> Path | None:
    """Rewrite `report.html` where the run has a `report.md` (e.g. after `compare` added a
    comparison to show); its path, or None without a report."""
    run = load_run(run_dir)
    return write_html_report(run) if (run.path / "report.md").is_file() else None
