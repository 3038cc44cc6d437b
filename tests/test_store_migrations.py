"""Alembic migrations: tables, round trip, coexistence with other apps' tables."""

from __future__ import annotations


import pytest
import sqlalchemy as sa

from service.db import Base, current_revision, downgrade, get_engine, head_revision, upgrade
from service.db.engine import make_engine
from service.db.migrate import VERSION_TABLE
from service.db.models import EpochMetric, TracePoint
from service.store import Store
from trainer.result import EPOCH_COLUMNS, TRACE_COLUMNS

TABLES = {"rnnhpo_experiments", "rnnhpo_trials", "rnnhpo_trace_points", "rnnhpo_epoch_metrics"}


@pytest.fixture
def url(db_url):
    """The conftest's fresh database (SQLite file or a new PostgreSQL database)."""
    return db_url


def _tables(url) -> set[str]:
    return set(sa.inspect(get_engine(url)).get_table_names())


def test_migrations_create_the_tables(url):
    assert current_revision(url) is None
    Store(url)
    assert _tables(url) == TABLES | {VERSION_TABLE}
    assert current_revision(url) == head_revision() == "0004_trial_placement"
    insp = sa.inspect(get_engine(url))
    # the migration and the models describe the same columns, keys and indexes
    for table in Base.metadata.sorted_tables:
        assert [c["name"] for c in insp.get_columns(table.name)] == [c.name for c in table.columns]
        assert insp.get_pk_constraint(table.name)["constrained_columns"] == [
            c.name for c in table.primary_key.columns]
    assert [c["name"] for c in insp.get_columns("rnnhpo_trace_points")][1:] == list(TRACE_COLUMNS)
    assert [c["name"] for c in insp.get_columns("rnnhpo_epoch_metrics")][1:] == list(EPOCH_COLUMNS)
    idx = {i["name"]: i["column_names"] for i in insp.get_indexes("rnnhpo_trials")}
    assert idx["ix_rnnhpo_trials_experiment_status"] == ["experiment_id", "status"]
    assert idx["ix_rnnhpo_trials_experiment_variant"] == ["experiment_id", "variant"]
    fks = insp.get_foreign_keys("rnnhpo_trace_points")
    assert fks[0]["referred_table"] == "rnnhpo_trials" and fks[0]["options"].get("ondelete") == "CASCADE"


def test_model_columns_follow_trainer_result():
    assert tuple(c.name for c in TracePoint.__table__.columns)[1:] == TRACE_COLUMNS
    assert tuple(c.name for c in EpochMetric.__table__.columns)[1:] == EPOCH_COLUMNS


def test_downgrade_base_then_upgrade(url):
    store = Store(url)
    store.create_experiment("before", {})
    downgrade(url, "base")
    assert _tables(url) & TABLES == set()
    assert current_revision(url) is None
    upgrade(url)
    assert _tables(url) >= TABLES
    store = Store(url)                                   # migrate=True again: a no-op
    assert store.list_experiments() == ([], 0)
    exp = store.create_experiment("after", {})
    assert store.get_experiment(exp).name == "after"


def test_other_apps_tables_are_left_alone(url):
    """Optuna keeps its own ``alembic_version``; ours is ``rnnhpo_alembic_version``."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
            conn.execute(sa.text("INSERT INTO alembic_version VALUES ('v3.0.0.d')"))
            conn.execute(sa.text("CREATE TABLE studies (study_id INTEGER PRIMARY KEY)"))
        Store(url)
        downgrade(url, "base")
        upgrade(url)
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() == "v3.0.0.d"
        assert {"alembic_version", "studies"} <= _tables(url)
    finally:
        engine.dispose()


def test_store_without_migrate_does_not_create_tables(url):
    Store(url, migrate=False)
    assert _tables(url) & TABLES == set()


def test_sqlite_pragmas_and_parent_dir(tmp_path):
    url = f"sqlite:///{tmp_path / 'deep' / 'er' / 'x.db'}"
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 30000
        assert (tmp_path / "deep" / "er" / "x.db").exists()
    finally:
        engine.dispose()


def test_plain_postgresql_url_uses_psycopg():
    from service.db.engine import normalize_url

    assert normalize_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:///x.db").drivername == "sqlite"
    with pytest.raises(ValueError, match="unsupported"):
        make_engine("mysql://u@h/db")


def test_alembic_without_a_passed_connection_and_offline_sql(tmp_path, capsys):
    """env.py also works the classic way: URL in the config, and offline (--sql) mode."""
    from alembic import command

    from service.db.migrate import alembic_config

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    command.upgrade(alembic_config(url), "head")
    assert _tables(url) >= TABLES and current_revision(url) == head_revision()
    command.upgrade(alembic_config("postgresql://u@h/db"), "head", sql=True)
    out = capsys.readouterr().out
    assert "CREATE TABLE rnnhpo_trace_points" in out and "rnnhpo_alembic_version" in out
    assert "JSONB" in out and "DOUBLE PRECISION" in out


def test_in_memory_sqlite_is_shared_across_threads():
    import threading

    store = Store("sqlite://")
    exp = store.create_experiment("mem", {})
    seen = []
    t = threading.Thread(target=lambda: seen.append(store.get_experiment(exp)))
    t.start()
    t.join()
    assert seen[0] is not None and seen[0].name == "mem"


def _insert_minimal(conn, table: sa.Table, **values) -> None:
    """Insert a row giving every NOT NULL column without a default a plain value."""
    from datetime import datetime, timezone

    plain = {sa.Integer: 0, sa.String: "x", sa.Text: "x", sa.Boolean: False, sa.Float: 0.0,
             sa.JSON: "{}", sa.DateTime: datetime.now(timezone.utc)}
    row = dict(values)
    for c in table.columns:
        if c.name in row or c.nullable or c.default is not None or c.server_default is not None \
                or c.autoincrement is True:
            continue
        row[c.name] = next((v for t, v in plain.items() if isinstance(c.type, t)), 0)
    conn.execute(table.insert().values(**row))


def test_upgrading_sqlite_keeps_every_trial_and_trace(tmp_path):
    """Batch migrations recreate tables on SQLite; with foreign keys on, that used to cascade
    and delete every trial and trace of a database created before 0003."""
    from service.db.engine import dispose_engines

    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = get_engine(url)
    upgrade(engine, "0002")
    meta = sa.MetaData()
    meta.reflect(engine)
    with engine.begin() as conn:
        _insert_minimal(conn, meta.tables["rnnhpo_experiments"], id="e1", name="old", status="queued")
        _insert_minimal(conn, meta.tables["rnnhpo_trials"], id=1, experiment_id="e1", number=0,
                        status="completed")
        for step in range(5):
            _insert_minimal(conn, meta.tables["rnnhpo_trace_points"], trial_id=1, step=step, epoch=0)
    upgrade(engine, "head")
    store = Store(url)
    assert store.trace_row_count(trial_id=1) == 5
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM rnnhpo_trials").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    dispose_engines()
