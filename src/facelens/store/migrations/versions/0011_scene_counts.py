"""street scenes: scene_counts, the aggregate kept about passers-by

Revision ID: 0011
Revises: 0010

Per camera, minute (UTC) and class: the number of tracks confirmed in that minute. Nothing
per track (no id, box, attribute or plate) has a column here.
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scene_counts",
        sa.Column("camera", sa.String(length=100), nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("tracks", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("camera", "minute", "kind"),
    )
    # Retention deletes by age across cameras.
    op.create_index("ix_scene_counts_minute", "scene_counts", ["minute"])


def downgrade() -> None:
    op.drop_index("ix_scene_counts_minute", table_name="scene_counts")
    op.drop_table("scene_counts")
