"""Payload encoding, validation helpers, states, and the SQL block loader."""

from __future__ import annotations

import pytest

from qdo.display import table
from qdo.errors import InvalidPayload, InvalidPriority, InvalidQueueName, InvalidState
from qdo.models import State, check_priority, check_queue_name, decode_payload, encode_payload
from qdo.store import sql


@pytest.mark.parametrize(
    "task",
    ["echo hi", "  spaced  ", {"a": [1, 2]}, [1, "x"], 3, 2.5, True, {"ü": "漢"}],
)
def test_payload_round_trip(task: object) -> None:
    text, is_json = encode_payload(task)
    assert is_json == (not isinstance(task, str))
    assert decode_payload(text, is_json) == task


def test_shell_payload_is_stored_verbatim() -> None:
    assert encode_payload('echo "x"') == ('echo "x"', False)


@pytest.mark.parametrize(
    "task", ["", " \t\n", "a\0b", None, b"x", object(), float("nan"), {"n": 10**5000}]
)
def test_bad_payloads(task: object) -> None:
    with pytest.raises(InvalidPayload):
        encode_payload(task)


def test_state_parse() -> None:
    assert State.parse("failed") is State.FAILED
    assert State.parse(State.KILLED) is State.KILLED
    with pytest.raises(InvalidState):
        State.parse("done")
    with pytest.raises(InvalidState):
        State.parse(3)


def test_checks() -> None:
    assert check_priority(-5) == -5
    for bad in (True, 1.0, "1", 2**64):
        with pytest.raises(InvalidPriority):
            check_priority(bad)
    assert check_queue_name("a.b-c_D9") == "a.b-c_D9"
    for name in ("", "a b", "ä", "x" * 101, "../etc"):
        with pytest.raises(InvalidQueueName):
            check_queue_name(name)


def test_sql_blocks_are_named_and_complete() -> None:
    queries = sql.load("", "queries.sql")
    assert {"claim", "finish", "counts", "release_dependents"} <= set(queries)
    assert all(body and not body.startswith("--name") for body in queries.values())
    assert "create_schema" in sql.load("sqlite", "schema.sql")


def test_every_statement_renders_in_both_dialects() -> None:
    import re

    from qdo.store import sqlite

    for dialect in ("sqlite", "postgres"):
        if dialect == "postgres":
            pytest.importorskip("psycopg")
            from qdo.store import postgres as module
        else:
            module = sqlite  # type: ignore[assignment]
        for name, st in module.Q.items():
            assert not re.search(r"\{(now|in|rows|rowlock)\b", st.text), (dialect, name)
            assert "--" not in st.text, (dialect, name)  # comments never reach the driver
            if dialect == "postgres":
                assert not re.search(r"(?<![:\w]):[a-z_]", st.text), (dialect, name)
    shared = set(sql.load("", "queries.sql"))
    assert shared <= set(sqlite.Q)


def test_table_alignment_and_streaming() -> None:
    rows = ([i, "x" * (i % 3), None] for i in range(5))
    lines = list(table(["ID", "NAME", "MSG"], rows, right=[0], sample=2))
    assert lines[0] == "ID  NAME  MSG"
    assert lines[1] == " 0  -     -"
    assert len(lines) == 6


@pytest.mark.parametrize("shape", ["list", "dict"])
def test_payloads_nest_at_most_the_limit_deep(shape: str) -> None:
    # (short texts skip the walk: a level takes at least 2 characters)
    from qdo.models import MAX_PAYLOAD_DEPTH

    def nested(depth: int) -> object:
        value: object = []
        for _ in range(depth - 1):
            value = [value] if shape == "list" else {"": value}
        return value

    text, is_json = encode_payload(nested(MAX_PAYLOAD_DEPTH))
    assert is_json and decode_payload(text, True) == nested(MAX_PAYLOAD_DEPTH)
    for depth in (MAX_PAYLOAD_DEPTH + 1, 5000):
        with pytest.raises(InvalidPayload, match="nests"):
            encode_payload(nested(depth))
