"""HTML building blocks of the report: escaping, numbers, tables, embedded figures."""
from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure

from robusteval.report import plots


def esc(value: Any) -> str:
    return html.escape(str(value))


def num(value: Any) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.4g}"
    return esc(value)


def table(header: Sequence[str], rows: Sequence[Sequence[str]], *, cls: str = "") -> str:
    """An HTML table from already-escaped cell strings (a cell may be ``(html, css class)``)."""
    def cell(c: Any) -> str:
        return f'<td class="{c[1]}">{c[0]}</td>' if isinstance(c, tuple) else f"<td>{c}</td>"
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(cell(c) for c in row) + "</tr>" for row in rows)
    return f'<div class="scroll"><table class="{cls}"><tr>{head}</tr>{body}</table></div>'


def figure(fig: Figure, alt: str) -> str:
    data = base64.b64encode(plots.to_png(fig)).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'
