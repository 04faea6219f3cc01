"""what to label next and which labels look wrong: frame scores, label checks, trained frames

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 05:00:00

Pre-annotations keep how informative labeling their frame would be (``uncertainty``), the
newest out-of-sample check of each labeled frame is a row of ``label_checks``, and a served
model names the frames it trained on (``trained_frames_key``), so labels submitted later are
checked only by a model that never saw them. Rows from before stay NULL: those frames rank in
the fallback order until the next model, and those models check no labels.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "label_checks",
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("frame", sa.String(length=255), nullable=False),
        sa.Column("model_version", sa.Integer(), nullable=False),
        sa.Column("labels_sha256", sa.String(length=16), nullable=False),
        sa.Column("issues", sa.JSON(), nullable=False),
        sa.Column("checked_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("task_id", "frame"),
    )
    with op.batch_alter_table("preannotations") as batch:
        batch.add_column(sa.Column("uncertainty", sa.Float(), nullable=True))
    with op.batch_alter_table("served_models") as batch:
        batch.add_column(sa.Column("trained_frames_key", sa.String(length=1024), nullable=True))
        batch.add_column(sa.Column("trained_frames_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("served_models") as batch:
        batch.drop_column("trained_frames_sha256")
        batch.drop_column("trained_frames_key")
    with op.batch_alter_table("preannotations") as batch:
        batch.drop_column("uncertainty")
    op.drop_table("label_checks")
