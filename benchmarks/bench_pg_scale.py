"""Flat costs as a campaign grows (issue 16), PostgreSQL: one queue of 100,000,000 tasks.

``bench_scale``'s benchmark, on the private PostgreSQL of ``scripts/postgres`` (or
``$QDO_BENCH_PG_URL``): the big queue in a schema of its own, the fresh one in another,
both dropped afterwards.  The size per task is every table and index of the big
queue's schema (``pg_total_relation_size``: heap, TOAST and indexes).
"""

from __future__ import annotations

from _common import Config, Report, pg_drop_schema, pg_env, pg_server_version, pg_url
from bench_scale import Place, measure

BIG = "bench_pg_scale"
FRESH = "bench_pg_scale_fresh"


def schema_bytes(url: str, schema: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind IN ('r', 'm')",
            (schema,),
        ).fetchone()
    return int(row[0]) if row else 0


def run(cfg: Config) -> Report:
    url = pg_url()
    server = pg_server_version(url)
    for schema in (BIG, FRESH):
        pg_drop_schema(url, schema)
    scratch = cfg.scratch / "pg-scale"
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        place = Place(
            "PostgreSQL",
            pg_env(scratch, url, BIG),
            pg_env(scratch, url, FRESH),
            lambda: pg_drop_schema(url, FRESH),
            lambda: schema_bytes(url, BIG),
        )
        report = measure(cfg, place)
    finally:
        for schema in (BIG, FRESH):
            pg_drop_schema(url, schema)
    report.notes.append(server)
    return report
