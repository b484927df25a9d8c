"""alert_windows (the cool-down every worker agrees on) and outbox (alerts not yet handed on)

Revision ID: 0006
Revises: 0005

An alert is an event row plus an outbox row written in one transaction, once the camera's
(camera, subject) window has been claimed by one atomic INSERT … ON CONFLICT … WHERE; a relay
hands outbox rows on (JetStream, or the sinks directly) and deletes them afterwards.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_windows",
        sa.Column("camera", sa.String(length=100), nullable=False),
        sa.Column("subject_id", sa.String(length=36), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["subject_id"], ["subjects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("camera", "subject_id"),
    )
    op.create_index("ix_alert_windows_subject_id", "alert_windows", ["subject_id"])
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("camera", sa.String(length=100), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["event_id"], ["events.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id"),
        sqlite_autoincrement=True,
    )


def downgrade() -> None:
    op.drop_table("outbox")
    op.drop_index("ix_alert_windows_subject_id", table_name="alert_windows")
    op.drop_table("alert_windows")
