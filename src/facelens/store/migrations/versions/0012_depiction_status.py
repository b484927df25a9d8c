"""events: faces shown by a screen or a print get their own status, "depiction"

Revision ID: 0012
Revises: 0011

The status column is a plain string (no CHECK), so no schema change: depictions stored before
as "suppressed" (details.flagged "depiction: <what>") become "depiction", with the cue that
found them in details.cue ("bezel" for "framed", else "object": the two cues of that time).
Downgrading turns every depiction back into "suppressed".
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

events = sa.table("events", sa.column("id", sa.Integer), sa.column("status", sa.String),
                  sa.column("details", sa.JSON))


def upgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.select(events.c.id, events.c.details)
                        .where(events.c.status == "suppressed")).all()
    for event_id, details in rows:
        flagged = str((details or {}).get("flagged") or "")
        if not flagged.startswith("depiction: "):
            continue  # a poster stays suppressed
        cue = "bezel" if flagged == "depiction: framed" else "object"
        bind.execute(events.update().where(events.c.id == event_id).values(
            status="depiction", details={**details, "cue": cue}))


def downgrade() -> None:
    op.execute(events.update().where(events.c.status == "depiction")
               .values(status="suppressed"))
