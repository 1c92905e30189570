"""Markdown to HTML for the subset the reports use: headings, paragraphs, bullet lists
(nested by indentation), tables, blockquotes, images, links, bold and code spans.

No dependency: the reports are written by this project, so the subset is known. A
`MarkdownHtml` renders; a subclass colours what it recognises by overriding `block_class`
(paragraphs, list items, blockquotes), `cell_class` (table cells, by column header) and
`image` (e.g. to inline a figure as a data URI).
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_BULLET = re.compile(r"^(\s*)[*+-]\s+(.*)$")
_RULE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")
_PIPE = re.compile(r"(?<!\\)\|")
_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_IMAGES_ONLY = re.compile(r"^(\s*!\[[^\]]*\]\([^)\s]+\)\s*)+$")


def slug(text: str) -> str:
    """An id for a heading: lower case words joined by '-'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _split_row(line: str) -> list[str]:
    cells = _PIPE.split(line.strip())
    if cells and not cells[0].strip():
        cells = cells[1:]
    if cells and not cells[-1].strip():
        cells = cells[:-1]
    return [c.strip().replace("\\|", "|") for c in cells]


def _attr(name: str, value: str | None) -> str:
    return f' {name}="{html.escape(value)}"' if value else ""


class MarkdownHtml:
    """Render markdown as HTML; subclasses colour blocks and cells (see the module)."""

    def __init__(self) -> None:
        self.section = ""  # the text of the latest heading of level 1 or 2
        self._quoted = False  # inside a blockquote: its paragraphs take its colour

    # --- hooks ------------------------------------------------------------------------
    def block_class(self, kind: str, text: str) -> str | None:
        """CSS class of a block: `kind` is 'p', 'li' or 'blockquote', `text` its markdown."""
        return None

    def cell_class(self, header: str, text: str) -> str | None:
        """CSS class of a table cell under column `header`, `text` its markdown."""
        return None

    def image(self, alt: str, src: str) -> str:
        """An image as HTML."""
        return f'<img src="{html.escape(src)}" alt="{html.escape(alt)}">'

    def decorate(self, rendered: str) -> str:
        """Inline HTML after rendering, to mark up what the markdown only says in words."""
        return rendered

    # --- rendering --------------------------------------------------------------------
    def inline(self, text: str) -> str:
        """Code spans verbatim (escaped); elsewhere images, links and bold."""
        parts = text.split("`")
        if len(parts) % 2 == 0:  # an unmatched backtick stays a backtick
            parts[-2:] = [parts[-2] + "`" + parts[-1]]
        out = []
        for k, part in enumerate(parts):
            if k % 2:
                out.append(f"<code>{html.escape(part)}</code>")
                continue
            pieces, last = [], 0
            for hit in _IMAGE.finditer(part):
                pieces.append(self._words(part[last : hit.start()]))
                pieces.append(self.image(hit.group(1), hit.group(2)))
                last = hit.end()
            pieces.append(self._words(part[last:]))
            out.append("".join(pieces))
        return self.decorate("".join(out))

    def _words(self, text: str) -> str:
        escaped = html.escape(text, quote=False)
        escaped = _LINK.sub(
            lambda m: f'<a href="{html.escape(html.unescape(m.group(2)))}">{m.group(1)}</a>',
            escaped,
        )
        return _BOLD.sub(r"<strong>\1</strong>", escaped)

    def convert(self, text: str) -> str:
        """The HTML of a markdown document (a sequence of block elements)."""
        return "\n".join(self._blocks(text.splitlines()))

    def _blocks(self, lines: list[str]) -> list[str]:
        out: list[str] = []
        k = 0
        while k < len(lines):
            line = lines[k]
            if not line.strip():
                k += 1
            elif heading := _HEADING.match(line):
                out.append(self._heading(len(heading.group(1)), heading.group(2)))
                k += 1
            elif line.lstrip().startswith(">"):
                end = self._run(lines, k, lambda s: s.lstrip().startswith(">"))
                inner = [re.sub(r"^\s*> ?", "", s) for s in lines[k:end]]
                cls = self.block_class("blockquote", " ".join(inner).strip())
                self._quoted, quoted = True, self._quoted
                body = "\n".join(self._blocks(inner))
                self._quoted = quoted
                out.append(f"<blockquote{_attr('class', cls)}>\n{body}\n</blockquote>")
                k = end
            elif line.lstrip().startswith("|") and k + 1 < len(lines) and _RULE.match(lines[k + 1]):
                end = self._run(lines, k + 2, lambda s: s.lstrip().startswith("|"))
                out.append(self._table(lines[k], lines[k + 2 : end]))
                k = end
            elif _BULLET.match(line):
                end = self._run(
                    lines, k, lambda s: bool(_BULLET.match(s)) or s.startswith((" ", "\t"))
                )
                out.append(self._list(lines[k:end]))
                k = end
            else:
                end = self._run(lines, k, self._continues)
                out.append(self._paragraph(lines[k:end]))
                k = end
        return out

    @staticmethod
    def _run(lines: list[str], start: int, keep: Callable[[str], bool]) -> int:
        """The index after the lines from `start` that `keep` accepts (non-blank)."""
        end = start
        while end < len(lines) and lines[end].strip() and keep(lines[end]):
            end += 1
        return end

    @staticmethod
    def _continues(line: str) -> bool:
        """A paragraph goes on until a blank line or the start of another block."""
        stripped = line.lstrip()
        return not (_HEADING.match(line) or stripped.startswith((">", "|")) or _BULLET.match(line))

    def _heading(self, level: int, text: str) -> str:
        if level <= 2:
            self.section = text
        return f'<h{level} id="{slug(text)}">{self.inline(text)}</h{level}>'

    def _paragraph(self, lines: list[str]) -> str:
        text = " ".join(s.strip() for s in lines)
        if _IMAGES_ONLY.match(text):  # a paragraph of figures
            return "\n".join(
                f"<figure>{self.image(alt, src)}<figcaption>{html.escape(alt)}</figcaption>"
                "</figure>"
                for alt, src in _IMAGE.findall(text)
            )
        cls = None if self._quoted else self.block_class("p", text)
        return f"<p{_attr('class', cls)}>{self.inline(text)}</p>"

    def _table(self, header_line: str, rows: list[str]) -> str:
        header = _split_row(header_line)
        out = ['<div class="table-wrap"><table>', "<thead><tr>"]
        out += [f"<th>{self.inline(h)}</th>" for h in header]
        out.append("</tr></thead><tbody>")
        for row in rows:
            cells = _split_row(row)
            cells += [""] * (len(header) - len(cells))
            out.append("<tr>")
            for k, cell in enumerate(cells):
                column = header[k] if k < len(header) else ""
                cls = self.cell_class(column, cell)
                out.append(f"<td{_attr('class', cls)}>{self.inline(cell)}</td>")
            out.append("</tr>")
        out.append("</tbody></table></div>")
        return "".join(out)

    def _list(self, lines: list[str]) -> str:
        """Bullet items, nested by indentation; an indented line without a bullet
        continues the item above it."""
        items: list[tuple[int, str]] = []
        for line in lines:
            bullet = _BULLET.match(line)
            if bullet:
                items.append((len(bullet.group(1).expandtabs(4)), bullet.group(2).strip()))
            elif items:
                indent, text = items[-1]
                items[-1] = (indent, f"{text} {line.strip()}")
        html_lines, _ = self._items(items, 0)
        return "\n".join(html_lines)

    def _items(self, items: list[tuple[int, str]], start: int) -> tuple[list[str], int]:
        indent = items[start][0]
        out = ["<ul>"]
        k = start
        while k < len(items) and items[k][0] >= indent:
            text = items[k][1]
            cls = self.block_class("li", text)
            entry = f"<li{_attr('class', cls)}>{self.inline(text)}"
            k += 1
            if k < len(items) and items[k][0] > indent:
                nested, k = self._items(items, k)
                entry += "\n" + "\n".join(nested)
            out.append(entry + "</li>")
        out.append("</ul>")
        return out, k
