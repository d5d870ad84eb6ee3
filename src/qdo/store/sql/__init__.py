"""SQL text of the stores, kept in ``*.sql`` files as named blocks.

A block starts with a line ``-- name: <name>`` and runs to the next such line.
``queries.sql`` holds the statements of every verb, written once; each dialect renders
its hooks (``{now}``, ``{in ...}``, ``{rows ...}``, ``{rowlock ...}``, ``:param``; see
that file) its own way, and ``<dialect>/queries.sql`` adds what only it has.
"""

from __future__ import annotations

import os
import re
from typing import NamedTuple, Protocol

#: The folder of the ``*.sql`` files: beside this module, in the installed package (read
#: with ``open``, not ``importlib.resources``, whose import costs every short command
#: several milliseconds).
_HERE = os.path.dirname(os.path.abspath(__file__))
_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
_HOOK = re.compile(r"\{(now|in|among|rows|rowlock|idlist)\b([^{}]*)\}")
_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
_COMMENT = re.compile(r"--[^\n]*")
_ROWS = re.compile(r"\s*(\w+)\s*\((.*)\)\s*", re.DOTALL)


def load(dialect: str, filename: str) -> dict[str, str]:
    """Return {name: sql} for the named blocks of ``<dialect>/<filename>`` (``dialect``
    empty: the shared file)."""
    with open(os.path.join(_HERE, dialect, filename), encoding="utf-8") as f:
        text = f.read()
    parts = _NAME.split(text)
    # parts = [preamble, name1, body1, name2, body2, ...]
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def migrations(dialect: str) -> dict[int, str]:
    """Return {version: sql} of ``<dialect>/migrations/NNNN_*.sql`` (NNNN = version reached)."""
    folder = os.path.join(_HERE, dialect, "migrations")
    out: dict[int, str] = {}
    if not os.path.isdir(folder):
        return out
    for name in os.listdir(folder):
        m = re.fullmatch(r"(\d{4})_\w+\.sql", name)
        if m:
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                out[int(m.group(1))] = f.read()
    return out


class Statement(NamedTuple):
    """A statement as one dialect runs it."""

    text: str
    #: parameters passed as a Python list ({in name type})
    lists: tuple[str, ...]
    #: parameters passed as a list of rows ({rows name (columns)}), with their columns
    tables: tuple[tuple[str, tuple[str, ...]], ...]
    #: whether it reads the store's clock ({now})
    clock: bool
    #: the names of its lists, then of its tables: what the dialect encodes
    #: (``Dialect.encode``), when there are any
    sized: tuple[str, ...] = ()


class Renderer(Protocol):
    """How a dialect spells the hooks of the shared SQL."""

    def escape(self, text: str) -> str:
        """The statement's own text, made safe for the driver's parameter syntax."""

    def param(self, name: str) -> str: ...

    def now(self) -> str: ...

    def in_list(self, name: str, sql_type: str) -> str: ...

    def rows(self, name: str, columns: list[tuple[str, str]]) -> str:
        """A table expression named ``name`` with these (column, SQL type)."""

    def rowlock(self, clause: str) -> str: ...

    def id_list(self, expr: str) -> str:
        """The aggregate of ``expr`` (integers) as text, comma-separated."""

    def among(self, name: str, sql_type: str) -> str | None:
        """``in_list`` where a table of rows names the batch, or None to leave the
        join to those rows (see ``{among}`` in queries.sql)."""


def compile_queries(dialect: str, render: Renderer) -> dict[str, Statement]:
    """Every statement of the shared ``queries.sql`` and of ``<dialect>/queries.sql``
    (which may also replace a shared one), rendered for ``dialect``."""
    blocks = {**load("", "queries.sql"), **load(dialect, "queries.sql")}
    return {name: compile_statement(text, render) for name, text in blocks.items()}


def compile_statement(text: str, render: Renderer) -> Statement:
    lists: list[str] = []
    tables: list[tuple[str, tuple[str, ...]]] = []
    clock = False
    # comments go first: a parameter named in one must not become a placeholder
    text = render.escape(_COMMENT.sub("", text))

    def hook(m: re.Match[str]) -> str:
        nonlocal clock
        kind, args = m.group(1), m.group(2).strip()
        if kind == "now":
            clock = True
            return render.now()
        if kind == "in":
            name, sql_type = args.split(None, 1)
            lists.append(name)
            return render.in_list(name, sql_type)
        if kind == "among":
            name, sql_type = args.split(None, 1)
            spelled = render.among(name, sql_type)
            if spelled is None:
                return " IS NOT NULL"  # (a key: true; the parameter goes unused)
            lists.append(name)
            return spelled
        if kind == "rows":
            parsed = _ROWS.fullmatch(args)
            if parsed is None:
                raise ValueError(f"bad {{rows}} hook: {m.group(0)}")
            columns = [tuple(c.split(None, 1)) for c in parsed.group(2).split(",")]
            pairs = [(c[0], c[1]) for c in columns]
            tables.append((parsed.group(1), tuple(c for c, _ in pairs)))
            return render.rows(parsed.group(1), pairs)
        if kind == "idlist":
            return render.id_list(args)
        return render.rowlock(args)

    # parameters first (the hooks' own renderings name theirs in the driver's syntax)
    text = _PARAM.sub(lambda m: render.param(m.group(1)), text)
    text = _HOOK.sub(hook, text)
    text = "\n".join(line.rstrip() for line in text.strip().splitlines() if line.strip())
    return Statement(text, tuple(lists), tuple(tables), clock,
                     (*lists, *(name for name, _ in tables)))  # fmt: skip
