"""SQLAlchemy 2.x typed models. Every table is prefixed ``rnnhpo_`` (the database may be shared
with Optuna or others). The migrations are the source of truth for the schema;
these models describe the same tables (a test checks they agree).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal, get_args

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from search.sink import EPOCH_COLUMNS, TRACE_COLUMNS, TRIAL_STATUSES  # noqa: F401 - declared once

#: Every experiment status, declared once. ``partial``: finished, some trials failed.
ExperimentStatus = Literal["queued", "running", "succeeded", "partial", "failed", "cancelled"]
EXPERIMENT_STATUSES: tuple[str, ...] = get_args(ExperimentStatus)
#: Statuses an experiment does not leave by itself.
FINAL_EXPERIMENT_STATUSES: tuple[str, ...] = tuple(s for s in EXPERIMENT_STATUSES
                                                   if s not in ("queued", "running"))

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: JSON everywhere, JSONB on PostgreSQL.
JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


class UTCDateTime(sa.types.TypeDecorator):
    """Timestamps stored in UTC, always returned timezone-aware (SQLite keeps them naive)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING)
    type_annotation_map = {
        dict[str, Any]: JSONType,
        float: sa.Double(),
        datetime: UTCDateTime(),
    }


class Experiment(Base):
    __tablename__ = "rnnhpo_experiments"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(200))
    spec: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(sa.String(16), default="queued")
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    runner_id: Mapped[str | None] = mapped_column(sa.String(200))
    heartbeat_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(sa.Text)
    n_trials_total: Mapped[int | None]
    n_trials_done: Mapped[int] = mapped_column(default=0)
    best: Mapped[dict[str, Any] | None]
    attempts: Mapped[int] = mapped_column(default=0)
    progress: Mapped[dict[str, Any] | None]
    # the Ray job running it and its driver's outcome (migration 0004)
    ray_job_id: Mapped[str | None] = mapped_column(sa.String(200))
    outcome: Mapped[dict[str, Any] | None]

    __table_args__ = (
        sa.CheckConstraint(
            "status IN ('queued','running','succeeded','partial','failed','cancelled')", name="status"),
        sa.Index("ix_rnnhpo_experiments_status_created", "status", "created_at"),
        sa.Index("ix_rnnhpo_experiments_created_at", "created_at"),
    )


class Trial(Base):
    __tablename__ = "rnnhpo_trials"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    experiment_id: Mapped[str] = mapped_column(
        sa.ForeignKey("rnnhpo_experiments.id", ondelete="CASCADE"))
    number: Mapped[int]
    variant: Mapped[str] = mapped_column(sa.String(200))
    params: Mapped[dict[str, Any]]
    config: Mapped[dict[str, Any]]
    seed: Mapped[int] = mapped_column(sa.BigInteger)
    fold: Mapped[int | None]
    pack_id: Mapped[str | None] = mapped_column(sa.String(200))
    pack_size: Mapped[int | None]
    attempt: Mapped[int] = mapped_column(default=0)
    status: Mapped[str] = mapped_column(sa.String(16), default="pending")
    train_metric: Mapped[float | None]
    test_metric: Mapped[float | None]
    loss: Mapped[float | None]
    data_loss: Mapped[float | None]
    penalty: Mapped[float | None]
    sparsity_out: Mapped[float | None]
    sparsity_all: Mapped[float | None]
    weight_norm: Mapped[float | None]
    steps: Mapped[int | None]
    wall_time: Mapped[float | None]
    device: Mapped[str | None] = mapped_column(sa.String(100))
    diagnostics: Mapped[dict[str, Any] | None]
    monotonicity_violations: Mapped[int | None]
    grad_norm_ratio: Mapped[float | None]
    diverged: Mapped[bool | None]
    final: Mapped[dict[str, Any] | None]
    extra: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(sa.Text)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # where it ran (migration 0004)
    node_id: Mapped[str | None] = mapped_column(sa.String(64))
    host: Mapped[str | None] = mapped_column(sa.String(255))
    device_name: Mapped[str | None] = mapped_column(sa.String(200))

    __table_args__ = (
        sa.UniqueConstraint("experiment_id", "number", name="uq_rnnhpo_trials_experiment_number"),
        sa.CheckConstraint(
            "status IN ('pending','running','completed','diverged','failed','pruned')",
            name="status"),
        sa.Index("ix_rnnhpo_trials_experiment_status", "experiment_id", "status"),
        sa.Index("ix_rnnhpo_trials_experiment_variant", "experiment_id", "variant"),
    )


class TracePoint(Base):
    """One recorded iteration of one trial; columns are exactly ``TRACE_COLUMNS``."""

    __tablename__ = "rnnhpo_trace_points"

    trial_id: Mapped[int] = mapped_column(
        sa.ForeignKey("rnnhpo_trials.id", ondelete="CASCADE"), primary_key=True)
    step: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    epoch: Mapped[int | None]
    loss: Mapped[float | None]
    data_loss: Mapped[float | None]
    penalty: Mapped[float | None]
    grad_norm: Mapped[float | None]
    grad_norm_out: Mapped[float | None]
    weight_norm: Mapped[float | None]
    update_norm: Mapped[float | None]
    sparsity_out: Mapped[float | None]
    sparsity_all: Mapped[float | None]
    lr: Mapped[float | None]

    __table_args__ = ({"sqlite_with_rowid": False},)


class EpochMetric(Base):
    """One epoch of one trial; columns are exactly ``EPOCH_COLUMNS``."""

    __tablename__ = "rnnhpo_epoch_metrics"

    trial_id: Mapped[int] = mapped_column(
        sa.ForeignKey("rnnhpo_trials.id", ondelete="CASCADE"), primary_key=True)
    epoch: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    train_metric: Mapped[float | None]
    test_metric: Mapped[float | None]
    train_loss: Mapped[float | None]
    wall_time: Mapped[float | None]

    __table_args__ = ({"sqlite_with_rowid": False},)


def _check_columns() -> None:
    trace = tuple(c.name for c in TracePoint.__table__.columns if c.name != "trial_id")
    epochs = tuple(c.name for c in EpochMetric.__table__.columns if c.name != "trial_id")
    if trace != TRACE_COLUMNS or epochs != EPOCH_COLUMNS:  # pragma: no cover - guards drift
        raise RuntimeError(
            f"service.db.models out of sync with trainer.result: {trace} vs {TRACE_COLUMNS}, "
            f"{epochs} vs {EPOCH_COLUMNS}")


_check_columns()
