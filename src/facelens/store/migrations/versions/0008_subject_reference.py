"""subjects: reference, a small sealed picture of the subject shown beside their alerts

Revision ID: 0008
Revises: 0007

The JPEG of the best enrolment face (its aligned 112-px chip), sealed under the subject's
data key: deleting the subject's key shreds it with the templates. Subjects enrolled before
have none (the console says so); adding a photo gives them one.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subjects", recreate="never") as batch:
        batch.add_column(sa.Column("reference", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("subjects", recreate="never") as batch:
        batch.drop_column("reference")
