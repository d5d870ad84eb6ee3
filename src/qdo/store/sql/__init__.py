"""SQL text of the stores, kept in ``<dialect>/*.sql`` files as named blocks.

A block starts with a line ``-- name: <name>`` and runs to the next such line.
"""

from __future__ import annotations

import re
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def load(dialect: str, filename: str) -> dict[str, str]:
    """Return {name: sql} for the named blocks of ``<dialect>/<filename>``."""
    text = resources.files(__package__).joinpath(dialect).joinpath(filename).read_text("utf-8")
    parts = _NAME.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def migrations(dialect: str) -> dict[int, str]:
    """Return {version: sql} of ``<dialect>/migrations/NNNN_*.sql`` (NNNN = version reached)."""
    folder = resources.files(__package__).joinpath(dialect).joinpath("migrations")
    out: dict[int, str] = {}
    if not folder.is_dir():
        return out
    for entry in folder.iterdir():
        m = re.fullmatch(r"(\d{4})_\w+\.sql", entry.name)
        if m:
            out[int(m.group(1))] = entry.read_text("utf-8")
    return out
