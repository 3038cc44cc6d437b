"""Which database errors mean "unavailable now" (an outage: retry later) rather than a bad
request or a bug, and which mean "the schema is missing" (a database recreated empty)."""

from __future__ import annotations


def is_schema_missing(exc: BaseException) -> bool:
    """The tables are not there (SQLite ``no such table``, PostgreSQL ``UndefinedTable``)."""
    text = f"{type(getattr(exc, 'orig', None) or exc).__name__} {exc}".lower()
    return ("relation" in text and "does not exist" in text) or "no such table" in text \
        or "undefinedtable" in text


def is_db_unavailable(exc: BaseException) -> bool:
    """Connection refused or reset, pool timeout, disk full, read-only, or tables missing."""
    import sqlalchemy.exc as sa_exc

    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError,
                        sa_exc.DisconnectionError)):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and (exc.connection_invalidated or is_schema_missing(exc))
