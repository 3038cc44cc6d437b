"""Alembic environment for rnnhpo.

Normally run through :mod:`service.db.migrate`, which passes an open connection (already inside
a locked transaction) in ``config.attributes["connection"]``. Without one, the URL comes from
the ``sqlalchemy.url`` main option or ``-x url=...`` or the ``RNNHPO_DATABASE_URL`` variable.
Only ``rnnhpo_*`` tables are considered by autogenerate.
"""

from __future__ import annotations


from alembic import context

from service.db.engine import make_engine, normalize_url
from service.db.migrate import VERSION_TABLE
from service.db.models import Base

config = context.config
target_metadata = Base.metadata


def _include_name(name, type_, parent_names):
    if type_ == "table":
        return bool(name) and name.startswith("rnnhpo_") and name != VERSION_TABLE
    return True


def _opts(dialect_name: str) -> dict:
    return dict(
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        include_name=_include_name,
        render_as_batch=dialect_name == "sqlite",
        compare_type=True,
    )


def _url() -> str:
    url = (context.get_x_argument(as_dictionary=True).get("url")
           or config.get_main_option("sqlalchemy.url"))
    if not url:
        from service.settings import Settings

        url = Settings().database_url
    return url


def run_offline() -> None:
    url = normalize_url(_url())
    context.configure(url=url, literal_binds=True, **_opts(url.get_backend_name()))
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    conn = config.attributes.get("connection")
    if conn is not None:
        context.configure(connection=conn, **_opts(conn.dialect.name))
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(_url())
    try:
        with engine.connect() as conn:
            context.configure(connection=conn, **_opts(conn.dialect.name))
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
