"""Label Studio projects connected with labelloop as their ML backend, and predictions pushed

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 18:00:00

``label_studio_projects`` keeps each connection (Label Studio's origin and project id, the
project owner's token that /setup sent, the label config and the task made for it);
``label_studio_pushes`` the predictions given to Label Studio, each frame and version once.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "label_studio_projects",
        sa.Column("origin", sa.String(length=255), nullable=False),
        sa.Column("project", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(length=256), nullable=False),
        sa.Column("config_xml", sa.String(), nullable=False),
        sa.Column("task_id", sa.String(length=64), nullable=True),
        sa.Column("connected_by", sa.String(length=128), nullable=False),
        sa.Column("task_params", sa.JSON(), nullable=False),
        sa.Column("synced", sa.Boolean(), nullable=False),
        sa.Column("frames", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("origin", "project"),
    )
    op.create_index(op.f("ix_label_studio_projects_task_id"), "label_studio_projects", ["task_id"])
    op.create_table(
        "label_studio_pushes",
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("frame", sa.String(length=255), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("pushed_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("task_id", "frame", "model_version"),
    )


def downgrade() -> None:
    op.drop_table("label_studio_pushes")
    op.drop_index(op.f("ix_label_studio_projects_task_id"), table_name="label_studio_projects")
    op.drop_table("label_studio_projects")
