"""Street counts (#28): tracks per camera, class and minute added up in the database (SQLite
and PostgreSQL), read per minute or hour over /v1/cameras/{name}/counts with the events
scope, pruned by age; and a SceneCamera over a street clip stores exactly what it counted."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from facelens.events.counts import SceneCounts
from facelens.events.store import EventStore
from facelens.service.app import create_app
from facelens.settings import Settings
from facelens.store.database import Store
from facelens.store.tables import SceneCount

# Yesterday at hh:58:40: recent enough that the service's retention (at start) keeps it.
T = (datetime.now(UTC) - timedelta(days=1)).replace(minute=58, second=40, microsecond=0)
HOUR = T.replace(minute=0, second=0)


def _z(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture(params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[TestClient, Any]]:
    url = request.getfixturevalue("postgres").url if request.param == "postgresql" else None
    app = create_app(Settings(data_dir=tmp_path / "data", database_url=url))
    with TestClient(app) as client:
        yield client, app.state.facelens


def test_counts_add_up_and_are_read_per_minute_and_hour(
        served: tuple[TestClient, Any]) -> None:
    client, state = served
    counts = SceneCounts(state.store)
    counts.add({("gate", "car", T): 2, ("gate", "person", T): 1, ("lane", "car", T): 7})
    # A second flush of the same minute (or another worker's) adds, never overwrites.
    counts.add({("gate", "car", T + timedelta(seconds=10)): 3,
                ("gate", "bus", T + timedelta(minutes=3)): 1})
    keys = {s: f"Bearer {state.keys.create(f'counts-{s}', [s])[1]}" for s in ("events", "enrol")}

    def get(query: str, scope: str = "events") -> Any:
        return client.get(f"/v1/cameras/gate/counts?{query}",
                          headers={"Authorization": keys[scope]})

    window = f"since={_z(HOUR)}&until={_z(HOUR + timedelta(hours=2))}"
    minutes = get(window)
    assert minutes.status_code == 200, minutes.text
    body = minutes.json()
    later = HOUR + timedelta(hours=1)
    assert body["buckets"] == [
        {"at": _z(T.replace(second=0)), "counts": {"car": 5, "person": 1}},
        {"at": _z(later + timedelta(minutes=1)), "counts": {"bus": 1}}]
    assert body["totals"] == {"car": 5, "person": 1, "bus": 1}  # not lane's 7 cars
    hours = get(f"{window}&bucket=hour").json()
    assert [(b["at"], b["counts"]) for b in hours["buckets"]] == [
        (_z(HOUR), {"car": 5, "person": 1}), (_z(later), {"bus": 1})]
    assert get(f"since={_z(later)}&until={_z(later + timedelta(hours=1))}").json()["buckets"] \
        == [{"at": _z(later + timedelta(minutes=1)), "counts": {"bus": 1}}]
    assert get(f"until={_z(HOUR)}").json()["buckets"] == []  # the day before: nothing

    assert get(window, "enrol").status_code == 403
    assert client.get(f"/v1/cameras/gate/counts?{window}").status_code == 401
    for bad, status in ((f"since={_z(later)}&until={_z(HOUR)}", 400),
                        (f"since={_z(HOUR - timedelta(days=3))}&until={_z(HOUR)}", 400),
                        (f"{window}&bucket=day", 422)):
        assert get(bad).status_code == status, bad
    assert get("bucket=hour").json()["totals"] == {"car": 5, "person": 1, "bus": 1}
    every = client.get(f"/v1/counts?{window}", headers={"Authorization": keys["events"]}).json()
    assert every["camera"] is None and every["totals"] == {"car": 12, "person": 1, "bus": 1}
    assert every["buckets"][0]["counts"] == {"car": 12, "person": 1}  # gate's 5 + lane's 7

    assert counts.prune(30) == 0
    assert counts.prune(0.5) == 4  # all from yesterday: older than half a day
    with state.store.sessions() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(SceneCount)) == 0


@pytest.mark.slow
def test_a_scene_camera_stores_what_it_counted(shared_data: Path, tmp_path: Path) -> None:
    """The highway clip through a SceneCamera: closing it adds its counts, and the stored
    rows equal the tracks it counted per class and minute."""
    from facelens.video.scene_camera import SceneCamera
    from facelens.video.source import VideoSource

    store = Store(Settings(data_dir=tmp_path / "data"))
    camera = SceneCamera("highway", EventStore(store), None, cooldown_s=60)
    for frame in VideoSource(str(shared_data / "street" / "bgslibrary_video02.avi"),
                             fps=5).frames():
        if frame.time > 12:
            break
        camera.process(frame)
    counted = Counter({(kind, minute): n for (_, kind, minute), n
                       in camera.watch.counts.items()})
    assert sum(counted.values()) >= 3, counted
    camera.close()
    assert not camera.watch.counts  # handed to the database
    with store.sessions() as s:
        stored = Counter({(r.kind, r.minute.replace(tzinfo=UTC)): r.tracks
                          for r in s.scalars(sa.select(SceneCount))})
    assert stored == counted
    camera.close()  # nothing new: nothing added
    with store.sessions() as s:
        assert s.scalar(sa.select(sa.func.sum(SceneCount.tracks))) == sum(counted.values())
