"""The report page as structured content: headings, paragraphs, tables (DataFrames),
figures (a plot file and its caption) and the findings. One list of blocks renders to the
Markdown page (README.md, for GitHub) here and to the self-contained HTML page
(index.html) in bench.report.html, so both always say the same.

Text is Markdown inline: `code`, **bold**, *italic* and [links](target).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Bullets:
    items: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class Table:
    frame: pd.DataFrame
    floatfmt: str = ".2f"
    as_text: bool = False  # cells already formatted ("+0.370", "0.0022"): kept as written


@dataclass(frozen=True)
class Figure:
    file: str  # beside the page
    caption: str  # one line: what to look at
    name: str = ""

    @property
    def anchor(self) -> str:
        return "fig-" + self.file.rsplit(".", 1)[0]


@dataclass(frozen=True)
class Findings:
    """The page's opening: sentences (each with the figure that shows it, if any) and the
    key plot."""

    items: tuple[tuple[str, Figure | None], ...]
    key: Figure | None = None
    note: str = ""  # how to read the figures in brackets
    title: str = "Findings"


Block = Heading | Text | Bullets | Table | Figure | Findings


def markdown_table(table: Table) -> str:
    return table.frame.to_markdown(index=False, floatfmt=table.floatfmt,
                                   disable_numparse=table.as_text)


def _figure_md(figure: Figure) -> str:
    return f"![{figure.name or figure.anchor}]({figure.file})\n\n*{figure.caption}*"


def to_markdown(blocks: list[Block]) -> str:
    """The page as GitHub Markdown."""
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Text):
            out.append(block.text)
        elif isinstance(block, Bullets):
            out.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Table):
            out.append(markdown_table(block))
        elif isinstance(block, Figure):
            out.append(_figure_md(block))
        elif isinstance(block, Findings):
            out.append(f"## {block.title}")
            out.append("\n".join(
                f"- {text}" + (f" ([plot]({fig.file}))" if fig else "")
                for text, fig in block.items))
            if block.note:
                out.append(f"*{block.note}*")
            if block.key:
                out.append(_figure_md(block.key))
    return "\n\n".join(out) + "\n"


def save_figure(fig: Any, path: Path) -> None:
    """Every plot of the report, saved alike: laid out, 110 dpi, and closed (matplotlib
    keeps open figures alive)."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
