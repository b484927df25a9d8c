"""street scenes: plate hotlist, description rules, scene events, cameras.scene

Revision ID: 0010
Revises: 0009

Hotlists, not histories: a plate hotlist entry or a description rule is the only reason a
passer-by leaves a row. Each carries a wrapped data key its alerts' crops are sealed under, and
its events go with it (deleting the entry deletes and shreds them). Events gain `kind` ("face",
"plate", "rule") and lose the NOT NULL on subject_id; scene alerts get their own cool-down
windows keyed by (camera, target), since alert_windows' subject_id references subjects.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _keep_outbox() -> bool:
    """SQLite rebuilds `events`: dropping the old table would cascade into the outbox, so its
    pending rows are kept aside (PostgreSQL alters the table in place)."""
    if op.get_bind().dialect.name != "sqlite":
        return False
    op.execute("CREATE TEMP TABLE outbox_kept AS SELECT * FROM outbox")
    return True


def _restore_outbox(kept: bool) -> None:
    if kept:
        op.execute("INSERT INTO outbox SELECT * FROM outbox_kept "
                   "WHERE id NOT IN (SELECT id FROM outbox)")
        op.execute("DROP TABLE outbox_kept")


def upgrade() -> None:
    op.create_table(
        "plate_hotlist",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("plate_key", sa.String(length=20), nullable=False),
        sa.Column("plate", sa.String(length=40), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("added_by", sa.String(length=120), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_plate_hotlist_plate_key", "plate_hotlist", ["plate_key"])
    op.create_table(
        "scene_rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("description", sa.String(length=200), nullable=False),
        sa.Column("cameras", sa.JSON(), nullable=False),
        sa.Column("active_from", sa.DateTime(timezone=True), nullable=False),
        sa.Column("active_to", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("added_by", sa.String(length=120), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "scene_alert_windows",
        sa.Column("camera", sa.String(length=100), nullable=False),
        sa.Column("target", sa.String(length=40), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("camera", "target"),
    )
    kept = _keep_outbox()
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("kind", sa.String(length=20), nullable=False,
                                   server_default="face"))
        batch.add_column(sa.Column("hotlist_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("rule_id", sa.Integer(), nullable=True))
        batch.alter_column("subject_id", existing_type=sa.String(length=36), nullable=True)
        batch.create_foreign_key("fk_events_hotlist_id", "plate_hotlist", ["hotlist_id"], ["id"],
                                 ondelete="CASCADE")
        batch.create_foreign_key("fk_events_rule_id", "scene_rules", ["rule_id"], ["id"],
                                 ondelete="CASCADE")
        batch.create_index("ix_events_kind", ["kind"])
        batch.create_index("ix_events_hotlist_id", ["hotlist_id"])
        batch.create_index("ix_events_rule_id", ["rule_id"])
    _restore_outbox(kept)
    with op.batch_alter_table("cameras", recreate="never") as batch:
        batch.add_column(sa.Column("scene", sa.Boolean(), nullable=False,
                                   server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("cameras", recreate="never") as batch:
        batch.drop_column("scene")
    op.execute("DELETE FROM events WHERE subject_id IS NULL")
    kept = _keep_outbox()
    with op.batch_alter_table("events") as batch:
        batch.drop_index("ix_events_rule_id")
        batch.drop_index("ix_events_hotlist_id")
        batch.drop_index("ix_events_kind")
        batch.drop_constraint("fk_events_rule_id", type_="foreignkey")
        batch.drop_constraint("fk_events_hotlist_id", type_="foreignkey")
        batch.alter_column("subject_id", existing_type=sa.String(length=36), nullable=False)
        batch.drop_column("rule_id")
        batch.drop_column("hotlist_id")
        batch.drop_column("kind")
    _restore_outbox(kept)
    op.drop_table("scene_alert_windows")
    op.drop_table("scene_rules")
    op.drop_index("ix_plate_hotlist_plate_key", table_name="plate_hotlist")
    op.drop_table("plate_hotlist")
