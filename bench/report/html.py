"""index.html: the report page as one self-contained file (plots embedded as base64 data
URIs, styles inline, no script, nothing fetched), to open in a browser or mail.

Rendered from the same blocks as README.md (bench.report.blocks). Laid out for a
1280×800 screen: the first screen holds the findings beside the key plot.
"""

from __future__ import annotations

import base64
import html
import re
import struct
from pathlib import Path

from bench.report.blocks import Block, Bullets, Figure, Findings, Heading, Table, Text

HTML_PAGE = "index.html"
# A key plot wider than this (width / height) gets the findings' full width, below them.
WIDE_ASPECT = 3.0

STYLE = """
:root { --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; --tint: #f6f8fa;
        --accent: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff;
       font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 14px 20px 40px; }
h1 { font-size: 22px; margin: 0 0 10px; }
h2 { font-size: 18px; margin: 28px 0 8px; padding-bottom: 4px;
     border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 20px 0 6px; }
p, ul { margin: 6px 0 10px; }
code { font: 12.5px/1.3 ui-monospace, "DejaVu Sans Mono", monospace; background: var(--tint);
       padding: 0 3px; border-radius: 4px; overflow-wrap: break-word; }
a { color: var(--accent); }
#findings { display: grid; grid-template-columns: minmax(0, 5fr) minmax(0, 6fr); gap: 18px;
            align-items: start; background: var(--tint); border: 1px solid var(--line);
            border-radius: 8px; padding: 10px 16px; }
#findings h2 { margin-top: 2px; border: 0; }
#findings ul { padding-left: 18px; font-size: 14px; }
#findings li { margin-bottom: 5px; }
#findings .note { color: var(--muted); font-size: 12.5px; }
#findings figure { margin: 6px 0 0; }
a.see { font-size: 12px; white-space: nowrap; text-decoration: none; }
figure { margin: 14px 0 22px; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--line);
             border-radius: 4px; background: #fff; }
figcaption { color: var(--muted); font-size: 13.5px; margin-top: 4px; }
.table { overflow-x: auto; margin: 8px 0 14px; }
table { border-collapse: collapse; font-size: 12.5px; }
th, td { border: 1px solid var(--line); padding: 3px 7px; text-align: left;
         vertical-align: top; }
th { background: var(--tint); }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
#findings.wide { grid-template-columns: 1fr; }
@media (max-width: 900px) { #findings { grid-template-columns: 1fr; } }
"""

_INLINE = [  # applied outside code spans, to escaped text
    (re.compile(r"\*\*(.+?)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])"), r"<em>\1</em>"),
    (re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)"), r'<a href="\2">\1</a>'),
]


def inline(text: str) -> str:
    """Markdown inline (`code`, **bold**, *italic*, [link](target)) as escaped HTML. Code
    spans are kept apart first so that nothing inside them is read as emphasis."""
    parts = re.split(r"(`[^`]+`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
            continue
        piece = html.escape(part, quote=False)
        for pattern, repl in _INLINE:
            piece = pattern.sub(repl, piece)
        out.append(piece)
    return "".join(out)


def _png_size(path: Path) -> tuple[int, int] | None:
    """Width and height from a PNG's header."""
    head = path.read_bytes()[:24]
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return struct.unpack(">II", head[16:24])


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _figure(figure: Figure, out_dir: Path) -> str:
    path = out_dir / figure.file
    if not path.is_file():
        return ""
    alt = html.escape(figure.name or figure.anchor)
    return (f'<figure id="{figure.anchor}"><img src="{_data_uri(path)}" alt="{alt}">'
            f"<figcaption>{inline(figure.caption)}</figcaption></figure>")


def _table(table: Table) -> str:
    frame = table.frame.copy()
    numeric = [c for c in frame.columns if frame[c].dtype.kind in "if"]
    for column in frame.columns:
        frame[column] = [
            "" if _missing(v) else format(v, table.floatfmt) if column in numeric
            and isinstance(v, float) else str(v) for v in frame[column]]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for values in frame.itertuples(index=False):
        cells = "".join(
            f'<td class="num">{html.escape(v)}</td>' if c in numeric else
            f"<td>{html.escape(v)}</td>" for c, v in zip(frame.columns, values, strict=True))
        rows.append(f"<tr>{cells}</tr>")
    return (f'<div class="table"><table><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _missing(value: object) -> bool:
    try:
        return value is None or bool(value != value)  # NaN
    except (TypeError, ValueError):
        return False


def _findings(block: Findings, out_dir: Path) -> str:
    items = []
    for text, fig in block.items:
        see = (f' <a class="see" href="#{fig.anchor}">→ plot</a>'
               if fig and (out_dir / fig.file).is_file() else "")
        items.append(f"<li>{inline(text)}{see}</li>")
    note = f'<p class="note">{inline(block.note)}</p>' if block.note else ""
    key = _figure(block.key, out_dir) if block.key else ""
    size = _png_size(out_dir / block.key.file) if key and block.key else None
    wide = ' class="wide"' if size and size[0] > WIDE_ASPECT * size[1] else ""
    return (f'<section id="findings"{wide}><div><h2>{html.escape(block.title)}</h2>'
            f"<ul>{''.join(items)}</ul>{note}</div><div>{key}</div></section>")


def render(blocks: list[Block], out_dir: Path, title: str) -> str:
    """The page as one HTML document; figures are read from out_dir and embedded."""
    body = []
    for block in blocks:
        if isinstance(block, Heading):
            level = min(max(block.level, 1), 6)
            body.append(f"<h{level}>{inline(block.text)}</h{level}>")
        elif isinstance(block, Text):
            body.append(f"<p>{inline(block.text)}</p>")
        elif isinstance(block, Bullets):
            body.append("<ul>" + "".join(f"<li>{inline(i)}</li>" for i in block.items)
                        + "</ul>")
        elif isinstance(block, Table):
            body.append(_table(block))
        elif isinstance(block, Figure):
            body.append(_figure(block, out_dir))
        elif isinstance(block, Findings):
            body.append(_findings(block, out_dir))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
            f"<body><main>\n" + "\n".join(b for b in body if b) + "\n</main></body></html>\n")


def fragment(blocks: list[Block], out_dir: Path) -> str:
    """Blocks as HTML to embed in another page (a notebook's output): the page's styles for
    the findings only, scoped to their ids, so the host page keeps its own look."""
    rules = re.findall(r"([^{}]+)\{([^{}]*)\}", re.sub(r"@media[^{]*\{[^}]*\}\s*\}", "", STYLE))
    scoped = " ".join(f"{sel.strip()} {{{body.strip()}}}" for sel, body in rules
                      if sel.strip().startswith(("#findings", "a.see")))
    colours = next(body for sel, body in rules if sel.strip() == ":root")
    scoped = f".covalent-bench {{{colours.strip()}}} {scoped}"
    body = render(blocks, out_dir, "")
    inner = body[body.index("<main>") + len("<main>"):body.index("</main>")]
    return f"<style>{scoped}</style><div class=\"covalent-bench\">{inner}</div>"


def write_html(blocks: list[Block], out_dir: Path, title: str) -> Path:
    path = Path(out_dir) / HTML_PAGE
    path.write_text(render(blocks, Path(out_dir), title), encoding="utf-8")
    return path
