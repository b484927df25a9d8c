"""galleries and templates: drop keep_crops and crop (enrolment crops are not kept)

Revision ID: 0005
Revises: 0004

The columns go in place (ALTER TABLE … DROP COLUMN, SQLite 3.35+ and PostgreSQL), never by
batch mode's copy-and-rename: on SQLite that drops the old `galleries` table, and with foreign
keys on, dropping it deletes every subject through ON DELETE CASCADE. Any crops stored are
deleted with their column.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("templates", recreate="never") as batch:
        batch.drop_column("crop")
    with op.batch_alter_table("galleries", recreate="never") as batch:
        batch.drop_column("keep_crops")


def downgrade() -> None:
    with op.batch_alter_table("galleries", recreate="never") as batch:
        batch.add_column(sa.Column("keep_crops", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))
    with op.batch_alter_table("templates", recreate="never") as batch:
        batch.add_column(sa.Column("crop", sa.LargeBinary(), nullable=True))
