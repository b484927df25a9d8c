"""events: blurred frame; cameras

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("frame", sa.LargeBinary(), nullable=True))
    op.create_table(
        "cameras",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("source", sa.String(length=1000), nullable=False),
        sa.Column("galleries", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("fps", sa.Float(), nullable=False),
        sa.Column("motion", sa.Boolean(), nullable=False),
        sa.Column("cooldown_s", sa.Float(), nullable=False),
        sa.Column("far", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("cameras")
    with op.batch_alter_table("events") as batch:
        batch.drop_column("frame")
