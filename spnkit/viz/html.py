"""Graphviz HTML-like labels: boxes of text rows, grids of coloured cells (thumbnails) and strips (entry use).

Every size is fixed (``FIXEDSIZE``) so that Graphviz never stretches a cell,
and runs of equal colour are merged, so a large uniform area costs one cell.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np

__all__ = ["colour", "grey", "grid_html", "strip_html", "box_html", "OUTSIDE"]

_EMPTY, _FULL = np.array([0xF3, 0xF3, 0xF3]), np.array([0x1F, 0x4E, 0x99])  # light grey -> dark blue
#: the colour of pixels outside a region's scope in mean thumbnails
OUTSIDE = "#f6e7c8"


def colour(frac: float) -> str:
    """Light grey (0) to dark blue (1)."""
    rgb = np.rint(_EMPTY + (_FULL - _EMPTY) * min(max(frac, 0.0), 1.0)).astype(int)
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def grey(frac: float) -> str:
    """White (0) to black (1), as ink on paper."""
    v = int(round(255 * (1 - min(max(frac, 0.0), 1.0))))
    return f"#{v:02x}{v:02x}{v:02x}"


def grid_html(colours: np.ndarray, cell: int) -> str:
    """A table of ``(rows, cols)`` cells of the given colours, ``cell`` points each.

    Runs of equal colour within a row, and runs of equal rows, are merged into
    one cell each. Each block of rows is its own one-row table, so cell widths
    never depend on other rows.
    """
    width = colours.shape[1] * cell
    rows, top = [], 0
    for bottom in range(1, len(colours) + 1):  # drawing-time loops over thumbnail rows, not a forward pass
        if bottom < len(colours) and np.array_equal(colours[bottom], colours[top]):
            continue
        line, height = colours[top], (bottom - top) * cell
        cells, start = [], 0
        for stop in range(1, len(line) + 1):
            if stop == len(line) or line[stop] != line[start]:
                cells.append(f'<TD BGCOLOR="{line[start]}" WIDTH="{(stop - start) * cell}" HEIGHT="{height}" FIXEDSIZE="TRUE"></TD>')
                start = stop
        rows.append(
            f'<TR><TD><TABLE BORDER="0" CELLSPACING="0" CELLPADDING="0" FIXEDSIZE="TRUE" WIDTH="{width}" '
            f'HEIGHT="{height}"><TR>' + "".join(cells) + "</TR></TABLE></TD></TR>"
        )
        top = bottom
    return (
        f'<TABLE BORDER="1" COLOR="#888888" CELLBORDER="0" CELLSPACING="0" CELLPADDING="0" FIXEDSIZE="TRUE" '
        f'WIDTH="{width + 2}" HEIGHT="{len(colours) * cell + 2}">' + "".join(rows) + "</TABLE>"
    )


def strip_html(shares: np.ndarray, cell: int = 6, height: int = 6) -> str:
    """One row of cells, one per entry, shaded by its share relative to the largest (the use of a region's entries)."""
    top = float(np.max(shares)) if len(shares) and np.max(shares) > 0 else 1.0
    cells = "".join(
        f'<TD BGCOLOR="{colour(float(s) / top)}" WIDTH="{cell}" HEIGHT="{height}" FIXEDSIZE="TRUE"></TD>' for s in shares
    )
    return (f'<TABLE BORDER="1" COLOR="#888888" CELLBORDER="0" CELLSPACING="1" CELLPADDING="0"><TR>{cells}</TR></TABLE>')


def box_html(lines: list[str], fill: str, bold: bool, parts: Sequence[str] = ()) -> str:
    """A rounded box: text ``lines`` (the first bold when ``bold``), then tables ``parts`` one per row."""
    rows = []
    for i, line in enumerate(lines):
        text = html.escape(line)
        rows.append(f"<TR><TD>{'<B>' + text + '</B>' if bold and i == 0 else text}</TD></TR>")
    rows += [f"<TR><TD>{p}</TD></TR>" for p in parts]
    return (
        f'<<TABLE BORDER="{2 if bold else 1}" STYLE="ROUNDED" CELLBORDER="0" CELLSPACING="2" CELLPADDING="1" '
        f'BGCOLOR="{fill}">' + "".join(rows) + "</TABLE>>"
    )
