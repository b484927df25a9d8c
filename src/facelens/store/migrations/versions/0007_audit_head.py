"""audit_head: the audit chain's head (count and last hash) in the database

Revision ID: 0007
Revises: 0006

It was a file beside the database, one per host; replicas on one database need one head,
changed in the same transaction as each audit row. The row itself is seeded at open
(store/audit.py), from the old head file where one exists, which the migration cannot see.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("audit_head")
