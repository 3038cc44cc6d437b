"""Initial schema: experiments, trials, trace points, epoch metrics.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001_initial"
down_revision: Union[str, None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# Frozen copies of the types (a migration must not change when the models do).
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)
F = sa.Double()


def upgrade() -> None:
    op.create_table(
        "rnnhpo_experiments",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("spec", JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("runner_id", sa.String(200), nullable=True),
        sa.Column("heartbeat_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("n_trials_total", sa.Integer(), nullable=True),
        sa.Column("n_trials_done", sa.Integer(), nullable=False),
        sa.Column("best", JSON, nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.CheckConstraint("status IN ('queued','running','succeeded','failed','cancelled')",
                           name=op.f("ck_rnnhpo_experiments_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rnnhpo_experiments")),
    )
    op.create_index("ix_rnnhpo_experiments_status_created", "rnnhpo_experiments",
                    ["status", "created_at"])
    op.create_index("ix_rnnhpo_experiments_created_at", "rnnhpo_experiments", ["created_at"])

    op.create_table(
        "rnnhpo_trials",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("experiment_id", sa.String(32), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("variant", sa.String(200), nullable=False),
        sa.Column("params", JSON, nullable=False),
        sa.Column("config", JSON, nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("fold", sa.Integer(), nullable=True),
        sa.Column("pack_id", sa.String(200), nullable=True),
        sa.Column("pack_size", sa.Integer(), nullable=True),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("train_metric", F, nullable=True),
        sa.Column("test_metric", F, nullable=True),
        sa.Column("loss", F, nullable=True),
        sa.Column("data_loss", F, nullable=True),
        sa.Column("penalty", F, nullable=True),
        sa.Column("sparsity_out", F, nullable=True),
        sa.Column("sparsity_all", F, nullable=True),
        sa.Column("weight_norm", F, nullable=True),
        sa.Column("steps", sa.Integer(), nullable=True),
        sa.Column("wall_time", F, nullable=True),
        sa.Column("device", sa.String(100), nullable=True),
        sa.Column("diagnostics", JSON, nullable=True),
        sa.Column("monotonicity_violations", sa.Integer(), nullable=True),
        sa.Column("grad_norm_ratio", F, nullable=True),
        sa.Column("diverged", sa.Boolean(), nullable=True),
        sa.Column("final", JSON, nullable=True),
        sa.Column("extra", JSON, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.CheckConstraint(
            "status IN ('pending','running','completed','diverged','failed','pruned')",
            name=op.f("ck_rnnhpo_trials_status")),
        sa.ForeignKeyConstraint(["experiment_id"], ["rnnhpo_experiments.id"],
                                name=op.f("fk_rnnhpo_trials_experiment_id_rnnhpo_experiments"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_rnnhpo_trials")),
        sa.UniqueConstraint("experiment_id", "number", name="uq_rnnhpo_trials_experiment_number"),
    )
    op.create_index("ix_rnnhpo_trials_experiment_status", "rnnhpo_trials",
                    ["experiment_id", "status"])
    op.create_index("ix_rnnhpo_trials_experiment_variant", "rnnhpo_trials",
                    ["experiment_id", "variant"])

    op.create_table(
        "rnnhpo_trace_points",
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=True),
        *[sa.Column(c, F, nullable=True) for c in (
            "loss", "data_loss", "penalty", "grad_norm", "grad_norm_out", "weight_norm",
            "update_norm", "sparsity_out", "sparsity_all", "lr")],
        sa.ForeignKeyConstraint(["trial_id"], ["rnnhpo_trials.id"],
                                name=op.f("fk_rnnhpo_trace_points_trial_id_rnnhpo_trials"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("trial_id", "step", name=op.f("pk_rnnhpo_trace_points")),
        sqlite_with_rowid=False,
    )

    op.create_table(
        "rnnhpo_epoch_metrics",
        sa.Column("trial_id", sa.Integer(), nullable=False),
        sa.Column("epoch", sa.Integer(), nullable=False),
        sa.Column("train_metric", F, nullable=True),
        sa.Column("test_metric", F, nullable=True),
        sa.Column("train_loss", F, nullable=True),
        sa.Column("wall_time", F, nullable=True),
        sa.ForeignKeyConstraint(["trial_id"], ["rnnhpo_trials.id"],
                                name=op.f("fk_rnnhpo_epoch_metrics_trial_id_rnnhpo_trials"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("trial_id", "epoch", name=op.f("pk_rnnhpo_epoch_metrics")),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("rnnhpo_epoch_metrics")
    op.drop_table("rnnhpo_trace_points")
    op.drop_index("ix_rnnhpo_trials_experiment_variant", table_name="rnnhpo_trials")
    op.drop_index("ix_rnnhpo_trials_experiment_status", table_name="rnnhpo_trials")
    op.drop_table("rnnhpo_trials")
    op.drop_index("ix_rnnhpo_experiments_created_at", table_name="rnnhpo_experiments")
    op.drop_index("ix_rnnhpo_experiments_status_created", table_name="rnnhpo_experiments")
    op.drop_table("rnnhpo_experiments")
