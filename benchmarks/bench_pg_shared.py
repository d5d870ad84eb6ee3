"""What row-level security costs: the same work as the tables' owner and as a member
role of a shared database (``qdo admin init-db``), in the same run.

One schema, set up by the server's own role (which owns the tables, so the policies do
not apply to it); a login role made for the run is the member.  Each run, in turn for
the owner and for the member: a queue of N no-op tasks is loaded (``store.add_many``:
one COPY for the owner; for the member, whom PostgreSQL refuses COPY FROM under
row-level security, a COPY into a temporary table and one INSERT that the policies
check), then 8 processes claim(100) and finish until it is empty (bench_pg_claim's
loop).  The member's rows divided by the owner's are the price of the isolation.
"""

from __future__ import annotations

import uuid

from _common import Config, Ratio, Report, Row, in_child, pg_server_version, pg_url, progress
from bench_pg_claim import WORKERS, consume, qdo_consume, qdo_load

SCHEMA = "bench_pg_shared"
BATCH = 100


def setup(url: str, member: str, password: str) -> None:
    """The schema (owned by the server's role), opened to ``member``."""
    import psycopg

    from qdo.store.postgres import PostgresStore

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        conn.execute(f"CREATE ROLE {member} LOGIN PASSWORD '{password}'")
    store = PostgresStore(url, schema=SCHEMA)
    store.open_to(f"{member}_group", [member])
    store.close()


def teardown(url: str, member: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {SCHEMA} CASCADE")
        for role in (member, f"{member}_group"):
            conn.execute(f"DROP ROLE IF EXISTS {role}")


def run(cfg: Config) -> Report:
    n = cfg.size(50_000, 5_000)
    url = pg_url()
    tag = uuid.uuid4().hex[:8]
    member, password = f"bench_member_{tag}", f"pw-{tag}"
    scheme, rest = url.split("://", 1)
    member_url = f"{scheme}://{member}:{password}@{rest.rsplit('@', 1)[1]}"
    who = {"owner": url, "member": member_url}
    rows = {
        (w, what): Row(f"{w:6} {label}", "/s")
        for w in who
        for what, label in (("load", "add_many"), ("drain", f"claim({BATCH}) + finish, "
                                                           f"{WORKERS} processes"))
    }  # fmt: skip
    try:
        for i in range(cfg.runs):
            in_child(setup, url, member, password)
            for w, conn in who.items():
                progress(f"pg-shared: run {i + 1}/{cfg.runs}, {w}, {n:,} tasks")
                queue = f"{w}-{i}"
                rows[w, "load"].values.append(n / in_child(qdo_load, conn, n, SCHEMA, queue))
                seconds, counts = consume(qdo_consume, conn, SCHEMA, queue, BATCH)
                assert sum(counts) == n, counts
                rows[w, "drain"].values.append(n / seconds)
            in_child(teardown, url, member)
    finally:
        in_child(teardown, url, member)
    return Report(
        f"pg-shared: {n:,} no-op tasks as the tables' owner and as a member role "
        "(row-level security), same run",
        list(rows.values()),
        [
            Ratio(f"ratio member / owner: {what}", rows["member", what], rows["owner", what])
            for what in ("load", "drain")
        ],  # fmt: skip
        [pg_server_version(url)],
    )
