"""How SQLite runs the batch statements of an agent: a batch of n outcomes (renewals,
starts) must cost n lookups, not n x n.  With the batch's ids as a list too, SQLite
looked each task up from the list and scanned the whole batch of rows for each: a
500-task report took 75 ms, and ``qdo do`` was 6x slower than it is.  The plans are
checked, not the time."""

from __future__ import annotations

from pathlib import Path

import pytest

from qdo.store.sqlite import INLINE, Q, SQLiteStore, _Spelled


@pytest.mark.parametrize("name", ["finish", "begin", "renew"])
@pytest.mark.parametrize("size", [3, INLINE + 1, 500])
def test_batches_join_from_their_rows(tmp_path: Path, name: str, size: int) -> None:
    store = SQLiteStore(tmp_path / "plans.sqlite", user="me")
    store.create_queue("q")  # (the file, made)
    st = Q[name]
    spelled = _Spelled(name, st, [size] * len(st.sized))
    params = {p: None for p in ("worker", "now", "lease")}
    conn = store.dialect._conn()
    for param, names, table in spelled.parts:
        if names is None and table:
            conn.execute(spelled.temps[param][0])  # (a big table's rows go to a temp table)
        elif names is None:
            params[param] = "[]"
        else:
            params.update(dict.fromkeys(names))
    plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + spelled.text, params)]
    store.close()
    tasks = [i for i, step in enumerate(plan) if step.startswith(("SEARCH t ", "SCAN t "))]
    rows = [i for i, step in enumerate(plan) if "json_each" in step or "SCAN" in step
            and "t " not in step[:7]]  # fmt: skip
    assert tasks and plan[tasks[0]].startswith("SEARCH t USING INTEGER PRIMARY KEY"), plan
    assert rows and rows[0] < tasks[0], plan  # the batch's rows outside, the tasks inside
