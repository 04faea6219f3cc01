"""trainer leases: each running run's last renewal by the trainer that trains it

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-08 01:10:00

Several trainer processes (pods) share the run queue; a running run whose trainer has not
renewed ``heartbeat_at`` within the lease is an orphan any trainer requeues. Runs running at
the upgrade have none: their ``started_at`` stands in until their trainer renews it.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("training_requests") as batch:
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("training_requests") as batch:
        batch.drop_column("heartbeat_at")
