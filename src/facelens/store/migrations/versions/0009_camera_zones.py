"""cameras: zones (where faces are watched) and masks (never looked at)

Revision ID: 0009
Revises: 0008

Polygons as JSON lists of (x, y) fractions of the frame; existing cameras get none (the whole
frame is watched, as before).
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("cameras", recreate="never") as batch:
        batch.add_column(sa.Column("zones", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("masks", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("cameras", recreate="never") as batch:
        batch.drop_column("masks")
        batch.drop_column("zones")
