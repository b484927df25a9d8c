"""Gallery change announcements between API replicas, on core NATS.

After each committed change to a gallery's templates, the replica that made it publishes
(gallery id, new version, index ids added, ids removed) on `<prefix>.gallery.<id>`; every
replica subscribes to `<prefix>.gallery.*` and applies the deltas to its cached index in
version order. A message can be missed (core NATS keeps nothing for a subscriber that was
away); the gallery version in the database shows the gap and the cache falls back to its
full check (docs/decisions.md).
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from facelens.cluster.bus import Bus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GalleryChange:
    """One committed change: the gallery's version after it, and which index ids (a subject's
    first template id) it added and removed."""

    gallery_id: int
    version: int
    added: tuple[int, ...] = ()
    removed: tuple[int, ...] = ()
    origin: str = ""
    """The announcing replica (its own announcements come back to it and are ignored)."""

    def encode(self) -> bytes:
        return json.dumps({"gallery": self.gallery_id, "version": self.version,
                           "added": list(self.added), "removed": list(self.removed),
                           "origin": self.origin}).encode()

    @classmethod
    def decode(cls, data: bytes) -> GalleryChange:
        doc = json.loads(data)
        return cls(int(doc["gallery"]), int(doc["version"]),
                   tuple(int(i) for i in doc["added"]), tuple(int(i) for i in doc["removed"]),
                   str(doc.get("origin", "")))


class Announcer:
    """Publishes this replica's gallery changes and hands other replicas' to `on_change`
    (called on the bus's loop: it must only note the change, never block)."""

    def __init__(self, bus: Bus, prefix: str, on_change: Callable[[GalleryChange], None]
                 ) -> None:
        self.bus, self.prefix, self.on_change = bus, prefix, on_change
        self.origin = uuid.uuid4().hex
        self._subscription = bus.subscribe(f"{prefix}.gallery.*", self._received)

    def announce(self, gallery_id: int, version: int, added: tuple[int, ...] = (),
                 removed: tuple[int, ...] = ()) -> None:
        """Publish a committed change. A failure is logged, not raised: the change is in the
        database, and the others notice it by its version."""
        change = GalleryChange(gallery_id, version, added, removed, self.origin)
        try:
            self.bus.publish(f"{self.prefix}.gallery.{gallery_id}", change.encode())
            # At the server before the change is reported done (and before a CLI exits).
            self.bus.call(self.bus.nc.flush())
        except Exception as e:  # any NATS failure: the version in the database still tells
            log.warning("gallery %d version %d not announced: %s", gallery_id, version, e)

    async def _received(self, msg: Any) -> None:
        try:
            change = GalleryChange.decode(msg.data)
        except (ValueError, KeyError, TypeError) as e:
            log.warning("ignored a malformed gallery announcement on %s: %s", msg.subject, e)
            return
        if change.origin != self.origin:
            self.on_change(change)

    def close(self) -> None:
        self.bus.close()
