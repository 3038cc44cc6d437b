"""Where each trial ran: Ray node id, host name and device name (the attempt is counted here too).

Revision ID: 0004_trial_placement
Revises: 0003_experiment_partial
Create Date: 2026-11-22
"""

from __future__ import annotations

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0004_trial_placement"
down_revision: Union[str, None] = "0003_experiment_partial"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

COLUMNS = (("node_id", 64), ("host", 255), ("device_name", 200))


def upgrade() -> None:
    with op.batch_alter_table("rnnhpo_trials") as batch:
        for name, length in COLUMNS:
            batch.add_column(sa.Column(name, sa.String(length), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rnnhpo_trials") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
