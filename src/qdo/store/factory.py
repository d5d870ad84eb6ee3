"""Open the store that the settings point at (one per process, location and user)."""

from __future__ import annotations

from .. import config
from ..models import check_user_name
from .base import Store

#: The stores this process opened: (backend, location, user) -> store.
_stores: dict[tuple[str, ...], Store] = {}


def open_store(settings: config.Settings | None = None, user: str | None = None) -> Store:
    """The store that the settings point at, acting for ``user`` (default: the ``user``
    setting, else the login name); opened once per process, location and user."""
    settings = settings or config.load()
    user = user or settings["user"] or None
    if user is not None:
        check_user_name(user)

    rc = settings.rc_path

    def sample() -> None:
        """The first real use (qdo made its database): the sample qdorc, if none."""
        if not rc.exists():
            config.write_sample_rc(rc)

    if settings["backend"] == "postgres":
        conninfo, schema = settings.postgres_conninfo(), settings["db_schema"]
        key: tuple[str, ...] = ("postgres", conninfo, schema, user or "")
        store = _stores.get(key)
        if store is None:
            from .postgres import PostgresStore  # psycopg only for those who use it

            store = _stores[key] = PostgresStore(
                conninfo,
                schema=schema,
                user=user,
                on_create=sample,
                reconnect_seconds=settings.pg_reconnect_seconds,
                pooled=settings.pg_pooled,
            )
        return store
    from .sqlite import SQLiteStore

    key = ("sqlite", str(settings.db_path.absolute()), user or "")
    store = _stores.get(key)
    if store is None:
        store = _stores[key] = SQLiteStore(settings.db_path, user=user, on_create=sample)
    return store


def close_all() -> None:
    """Close every store this process opened, and forget them."""
    for store in _stores.values():
        store.close()
    _stores.clear()
