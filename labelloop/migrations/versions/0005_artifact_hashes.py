"""hashes of what was checked: frames' for the trainer and labeler-assist, model files'

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 10:00:00

The trainer and labeler-assist use a frame only if its bytes hash to what ingest validated,
and a model file only if it hashes to what the registry recorded. The frames' hashes are
copied from ingest's ``frames`` table, so frames processed before the upgrade still train and
are pre-annotated; model versions published before it have no recorded hash and are not
loaded again (the next run trains from scratch, and labeler-assist waits for it).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "training_frames",
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("frame", sa.String(length=255), nullable=False),
        sa.Column("object_key", sa.String(length=1024), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("task_id", "frame"),
    )
    with op.batch_alter_table("assist_frames") as batch:
        batch.add_column(sa.Column("sha256", sa.String(length=64), nullable=True))
    with op.batch_alter_table("served_models") as batch:
        batch.add_column(sa.Column("onnx_sha256", sa.String(length=64), nullable=True))
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("onnx_sha256", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("weights_sha256", sa.String(length=64), nullable=True))
    with op.batch_alter_table("training_requests") as batch:
        batch.add_column(sa.Column("checkpoint_sha256", sa.String(length=64), nullable=True))
    # What frame.processed carried, as the projections would have kept it.
    op.execute(
        "INSERT INTO training_frames (task_id, frame, object_key, sha256, width, height) "
        "SELECT task_id, name, object_key, sha256, width, height FROM frames "
        "WHERE status = 'processed' AND sha256 IS NOT NULL "
        "AND width IS NOT NULL AND height IS NOT NULL"
    )
    op.execute(
        "UPDATE assist_frames SET sha256 = (SELECT frames.sha256 FROM frames "
        "WHERE frames.task_id = assist_frames.task_id AND frames.name = assist_frames.name "
        "AND frames.status = 'processed')"
    )


def downgrade() -> None:
    with op.batch_alter_table("training_requests") as batch:
        batch.drop_column("checkpoint_sha256")
    with op.batch_alter_table("model_versions") as batch:
        batch.drop_column("weights_sha256")
        batch.drop_column("onnx_sha256")
    with op.batch_alter_table("served_models") as batch:
        batch.drop_column("onnx_sha256")
    with op.batch_alter_table("assist_frames") as batch:
        batch.drop_column("sha256")
    op.drop_table("training_frames")
