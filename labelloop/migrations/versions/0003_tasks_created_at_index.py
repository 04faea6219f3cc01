"""tasks.created_at index (ingest's reconciler reads the tasks of its horizon every tick)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 14:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(op.f("ix_tasks_created_at"), "tasks", ["created_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_tasks_created_at"), table_name="tasks")
