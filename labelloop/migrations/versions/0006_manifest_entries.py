"""manifest entries as rows: ingest checks a batch against its own entries, not the whole list

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 01:00:00

A task's manifest was one JSON column that every transaction of the task loaded and scanned:
a 100,000-frame task held it in each batch. Its entries become rows of ``manifest_entries``
(in their order) and ``task_ingest.declared`` counts them; existing manifests are copied.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COPY_ENTRIES = {
    "sqlite": (
        "INSERT INTO manifest_entries (task_id, name, position, sha256) "
        "SELECT t.task_id, json_extract(e.value, '$.name'), e.key, "
        "json_extract(e.value, '$.sha256') "
        "FROM task_ingest AS t, json_each(t.manifest) AS e "
        "WHERE json_type(t.manifest) = 'array'"
    ),
    "postgresql": (
        "INSERT INTO manifest_entries (task_id, name, position, sha256) "
        "SELECT t.task_id, e.value->>'name', e.ordinality - 1, e.value->>'sha256' "
        "FROM task_ingest AS t, json_array_elements(t.manifest) WITH ORDINALITY AS e(value, "
        "ordinality) WHERE json_typeof(t.manifest) = 'array'"
    ),
}
"""Each manifest's entries as rows, in their order (by the database's own JSON functions, so
the revision also renders as SQL)."""
COUNT_ENTRIES = {
    "sqlite": (
        "UPDATE task_ingest SET declared = json_array_length(manifest) "
        "WHERE json_type(manifest) = 'array'"
    ),
    "postgresql": (
        "UPDATE task_ingest SET declared = json_array_length(manifest) "
        "WHERE json_typeof(manifest) = 'array'"
    ),
}
"""A manifest never read is SQL NULL or JSON ``null`` (SQLAlchemy's JSON keeps None so)."""
COPY_BACK = {
    "sqlite": (
        "UPDATE task_ingest SET manifest = (SELECT json_group_array(json_object('name', m.name, "
        "'sha256', m.sha256)) FROM (SELECT name, sha256 FROM manifest_entries "
        "WHERE manifest_entries.task_id = task_ingest.task_id ORDER BY position) AS m) "
        "WHERE declared IS NOT NULL"
    ),
    "postgresql": (
        "UPDATE task_ingest SET manifest = (SELECT json_agg(json_build_object('name', m.name, "
        "'sha256', m.sha256) ORDER BY m.position) FROM manifest_entries AS m "
        "WHERE m.task_id = task_ingest.task_id) WHERE declared IS NOT NULL"
    ),
}


def upgrade() -> None:
    op.create_table(
        "manifest_entries",
        sa.Column("task_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("task_id", "name"),
    )
    op.create_index(
        "ix_manifest_entries_position", "manifest_entries", ["task_id", "position"], unique=False
    )
    with op.batch_alter_table("task_ingest") as batch:
        batch.add_column(sa.Column("declared", sa.Integer(), nullable=True))
    op.execute(COPY_ENTRIES[op.get_context().dialect.name])
    op.execute(COUNT_ENTRIES[op.get_context().dialect.name])
    with op.batch_alter_table("task_ingest") as batch:
        batch.drop_column("manifest")


def downgrade() -> None:
    with op.batch_alter_table("task_ingest") as batch:
        batch.add_column(sa.Column("manifest", sa.JSON(), nullable=True))
    op.execute(COPY_BACK[op.get_context().dialect.name])
    with op.batch_alter_table("task_ingest") as batch:
        batch.drop_column("declared")
    op.drop_index("ix_manifest_entries_position", table_name="manifest_entries")
    op.drop_table("manifest_entries")
