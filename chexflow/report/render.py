"""The report as a list of blocks, rendered to Markdown and to one self-contained HTML page.

Both renderers read the same blocks (built from ``comparison.json`` by ``text.py``);
the HTML is never parsed back from the Markdown. Inline markup inside a block's text
is limited to ``**bold**`` and ```code```.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Paragraph:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Figure:
    path: str  # relative to the report folder
    caption: str


Block = Heading | Paragraph | Bullets | Table | Figure


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block]) -> str:
    """GitHub-flavoured Markdown; figures link to their PNG files."""
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Paragraph):
            out.append(block.text)
        elif isinstance(block, Bullets):
            out.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Table):
            lines = [f"**{block.caption}**", ""] if block.caption else []
            lines.append("| " + " | ".join(_md_cell(h) for h in block.header) + " |")
            lines.append("|" + "---|" * len(block.header))
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            out.append("\n".join(lines))
        elif isinstance(block, Figure):
            out.append(f"![{block.caption}]({block.path})\n\n*{block.caption}*")
    return "\n\n".join(out) + "\n"


_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*")


def inline(text: str) -> str:
    """Escape, then turn ```code``` and ``**bold**`` into tags."""
    escaped = html.escape(text, quote=False)
    escaped = _CODE.sub(r"<code>\1</code>", escaped)
    return _BOLD.sub(r"<strong>\1</strong>", escaped)


def _anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _image(out_dir: Path, path: str) -> str:
    data = base64.b64encode((out_dir / path).read_bytes()).decode("ascii")
    return f"data:image/png;base64,{data}"


def _html_block(block: Block, out_dir: Path) -> str:
    if isinstance(block, Heading):
        level = min(block.level, 4)
        return f'<h{level} id="{_anchor(block.text)}">{inline(block.text)}</h{level}>'
    if isinstance(block, Paragraph):
        return f"<p>{inline(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{inline(i)}</li>" for i in block.items) + "</ul>"
    if isinstance(block, Table):
        caption = f"<caption>{inline(block.caption)}</caption>" if block.caption else ""
        head = "".join(f"<th>{inline(h)}</th>" for h in block.header)
        body = "".join(
            "<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>" for row in block.rows
        )
        return (
            f'<div class="scroll"><table>{caption}<thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>"
        )
    return (
        f'<figure><img alt="{html.escape(block.caption)}" src="{_image(out_dir, block.path)}">'
        f"<figcaption>{inline(block.caption)}</figcaption></figure>"
    )


STYLE = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;
max-width:1180px;margin:0 auto;padding:1.5em 1.2em 4em}
h1{font-size:1.7em;margin-top:.2em}h2{font-size:1.35em;border-bottom:1px solid #d0d7de;
padding-bottom:.2em;margin-top:2em}h3{font-size:1.1em;margin-top:1.5em}
nav{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:.4em 1em;
font-size:.92em}nav a{margin-right:1.2em;color:#0969da;text-decoration:none}
.scroll{overflow-x:auto;margin:.6em 0 1.2em}
table{border-collapse:collapse;font-size:.85em;font-variant-numeric:tabular-nums}
caption{text-align:left;font-weight:600;padding:.3em 0}
th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}tbody tr:nth-child(even){background:#fbfcfd}
code{font-size:.9em;background:#f6f8fa;padding:0 .25em;border-radius:3px}
figure{margin:1em 0}img{max-width:100%;height:auto}figcaption{font-size:.88em;color:#57606a}
li{margin:.2em 0}
"""


def to_html(blocks: list[Block], out_dir: Path, title: str, explorer: str | None = None) -> str:
    """One page, no external resources, no script: figures inlined as base64 PNG.

    ``explorer``: a page beside this one (relative link), first in the navigation bar."""
    sections = [b for b in blocks if isinstance(b, Heading) and b.level == 2]
    nav = "".join(f'<a href="#{_anchor(h.text)}">{inline(h.text)}</a>' for h in sections)
    if explorer:
        link = html.escape(explorer, quote=True)
        nav = f'<a href="{link}"><b>Interactive maps</b></a>' + nav
    body = "\n".join(_html_block(b, out_dir) for b in blocks)
    if nav and blocks and isinstance(blocks[0], Heading):
        first, rest = body.split("\n", 1)
        body = f"{first}\n<nav>{nav}</nav>\n{rest}"
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body>\n{body}\n</body></html>\n"
    )
