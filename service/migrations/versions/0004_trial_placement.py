"""Where each trial ran (Ray node id, host name, device name; the attempt is counted here too),
and the Ray job running each experiment (its submission id and the driver's outcome).

Revision ID: 0004_trial_placement
Revises: 0003_experiment_partial
Create Date: 2026-11-22
"""

from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004_trial_placement"
down_revision: Union[str, None] = "0003_experiment_partial"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

COLUMNS = (("node_id", 64), ("host", 255), ("device_name", 200))


def upgrade() -> None:
    with op.batch_alter_table("rnnhpo_trials") as batch:
        for name, length in COLUMNS:
            batch.add_column(sa.Column(name, sa.String(length), nullable=True))
    json = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
    with op.batch_alter_table("rnnhpo_experiments") as batch:
        batch.add_column(sa.Column("ray_job_id", sa.String(200), nullable=True))
        batch.add_column(sa.Column("outcome", json, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rnnhpo_experiments") as batch:
        batch.drop_column("outcome")
        batch.drop_column("ray_job_id")
    with op.batch_alter_table("rnnhpo_trials") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
