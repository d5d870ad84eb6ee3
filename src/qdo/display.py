"""Plain-text tables and numbers for the command line."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime


def when(value: datetime | None) -> str:
    """A UTC time to the second, or '-'."""
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


def size(nbytes: int | None) -> str:
    """Bytes for people: 812K, 210M, 3.1G; '-' when unknown."""
    if nbytes is None:
        return "-"
    for unit, scale in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if nbytes >= scale:
            n = nbytes / scale
            return f"{n:.1f}{unit}" if n < 10 else f"{n:.0f}{unit}"
    return f"{nbytes}B"


#: Control characters as escapes that show, not act: a task's output (a log's last line,
#: a message) must not retitle or clear the terminal of whoever reads it
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_CONTROLS |= {ord("\n"): "\\n", ord("\t"): " "}


def cell(value: object, width: int | None = None) -> str:
    """``value`` as text for one cell of a line: '-' for nothing, its control characters
    escaped, and cut to ``width``."""
    text = "-" if value is None or value == "" else str(value)
    if not text.isprintable():
        text = text.translate(_CONTROLS)
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return text


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    right: Iterable[int] = (),
    sample: int = 1000,
    least: dict[int, int] | None = None,
) -> Iterator[str]:
    """Lines of an aligned table.  Column widths come from the first ``sample`` rows,
    so a table of a million rows streams (``least``: widths columns must have at least,
    for what comes after the sample); the last column is never padded."""
    right = set(right)
    it = iter(rows)
    first: list[list[str]] = []
    for row in it:
        first.append([cell(v) for v in row])
        if len(first) >= sample:
            break
    widths = [max(len(h), (least or {}).get(i, 0)) for i, h in enumerate(headers)]
    for row in first:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, (c, w) in enumerate(zip(cells, widths, strict=True)):
            if i == len(widths) - 1:
                out.append(c.rjust(w) if i in right else c)
            else:
                out.append(c.rjust(w) if i in right else c.ljust(w))
        return "  ".join(out).rstrip()

    yield line(list(headers))
    for row in first:
        yield line(row)
    for rest in it:
        yield line([cell(v) for v in rest])
