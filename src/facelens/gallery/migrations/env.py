"""Alembic environment: run programmatically by facelens.gallery.db with a live connection."""

from alembic import context

import facelens.events.models
import facelens.service.models  # noqa: F401  (their tables join Base.metadata)
from facelens.gallery.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
