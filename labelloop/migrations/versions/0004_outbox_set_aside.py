"""outbox.error: records the relay can never publish are set aside with their error;
frame_listings: jobgen keeps a task's ``task.frames-listed`` parts until its data is ready

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 17:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("error", sa.Text(), nullable=True))
    op.create_table(
        "frame_listings",
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("parts", sa.Integer(), nullable=False),
        sa.Column("frames", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("task_id", "part"),
    )


def downgrade() -> None:
    op.drop_table("frame_listings")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("error")
