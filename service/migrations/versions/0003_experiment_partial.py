"""Experiment status ``partial``: finished, but some trials failed (``--resume`` re-runs them).

Revision ID: 0003_experiment_partial
Revises: 0002_experiment_progress
Create Date: 2026-11-22
"""

from __future__ import annotations

from typing import Sequence, Union

from alembic import op

revision: str = "0003_experiment_partial"
down_revision: Union[str, None] = "0002_experiment_progress"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

OLD = "status IN ('queued','running','succeeded','failed','cancelled')"
NEW = "status IN ('queued','running','succeeded','partial','failed','cancelled')"
NAME = "ck_rnnhpo_experiments_status"


def _replace_check(condition: str) -> None:
    with op.batch_alter_table("rnnhpo_experiments") as batch:
        batch.drop_constraint(op.f(NAME), type_="check")
        batch.create_check_constraint(op.f(NAME), condition)


def upgrade() -> None:
    _replace_check(NEW)


def downgrade() -> None:
    op.execute("UPDATE rnnhpo_experiments SET status = 'failed' WHERE status = 'partial'")
    _replace_check(OLD)
