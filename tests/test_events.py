"""Alerts as a live stream (Server-Sent Events): every event recorded after the last one the
client saw, resumable by id, ending after max_s so clients reconnect."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from facelens.gallery.service import ConsentRecord
from facelens.service.app import create_app
from facelens.service.state import ServiceState
from facelens.settings import Settings


@pytest.fixture
def served(tmp_path: Path, fixtures_dir: Path) -> Iterator[tuple[TestClient, ServiceState,
                                                                    str, str]]:
    app = create_app(Settings(data_dir=tmp_path / "data"))
    with TestClient(app) as client:
        state: ServiceState = app.state.facelens
        key = state.keys.create("events", ["events"])[1]
        state.galleries.create_gallery("door", "staff-door", embedder="sface-flip")
        subject = state.galleries.enroll("door", "obama", [fixtures_dir / "obama.jpg"],
                                         consent=ConsentRecord("door", "consent", "test"))
        yield client, state, key, subject.subject_id


def _alerts(client: TestClient, key: str, query: str) -> list[dict[str, Any]]:
    got = []
    with client.stream("GET", f"/v1/events/stream?{query}",
                       headers={"Authorization": f"Bearer {key}"}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event_id = None
        for line in response.iter_lines():
            if line.startswith("id: "):
                event_id = int(line[4:])
            elif line.startswith("data: "):
                payload = json.loads(line[6:])
                assert payload["id"] == event_id
                got.append(payload)
    return got


def test_the_stream_sends_each_new_alert_once_and_resumes_by_id(
        served: tuple[TestClient, ServiceState, str, str]) -> None:
    client, state, key, obama = served
    before = state.events.record("front", obama, "high")
    # recorded while the stream is open (as a camera would), one second in
    later = threading.Timer(1.0, state.events.record, ("back", obama, "low"))
    later.start()
    started = time.monotonic()
    live = _alerts(client, key, "max_s=3")  # from now: the earlier event is not sent
    later.join()
    assert time.monotonic() - started < 10
    assert [(e["camera"], e["subject_name"]) for e in live] == [("back", "obama")]
    resumed = _alerts(client, key, f"after={before.id}&max_s=1.5")
    assert [e["camera"] for e in resumed] == ["back"]
    assert [e["camera"] for e in _alerts(client, key, "after=0&max_s=1.5")] == ["front", "back"]
    no_key = client.get("/v1/events/stream?max_s=1")
    assert no_key.status_code == 401


def test_bulk_review_confirms_several_and_refuses_unknown_ids_first(
        served: tuple[TestClient, ServiceState, str, str]) -> None:
    client, state, key, obama = served
    made = [state.events.record("front", obama, "high").id for _ in range(3)]
    auth = {"Authorization": f"Bearer {key}"}
    refused = client.post("/v1/events/review", headers=auth,
                          json={"ids": [made[0], 10**6], "status": "confirmed"})
    assert refused.status_code == 404
    assert state.events.get(made[0]).status == "unconfirmed"  # nothing changed
    done = client.post("/v1/events/review", headers=auth,
                       json={"ids": made[:2], "status": "dismissed"})
    assert done.status_code == 200, done.text
    assert [(e["id"], e["status"]) for e in done.json()] == [(i, "dismissed") for i in made[:2]]
    assert all(e["reviewed_by"].endswith(":events") and e["reviewed_at"] for e in done.json())
    assert state.events.get(made[2]).status == "unconfirmed"
    bad = client.post("/v1/events/review", headers=auth, json={"ids": made, "status": "suppressed"})
    assert bad.status_code == 422


def test_event_ids_past_the_column_range_name_no_event_on_postgresql(tmp_path: Path,
                                                                      postgres: Any) -> None:
    # PostgreSQL's INTEGER is 32-bit: such an id reached the database and came back a 500.
    app = create_app(Settings(data_dir=tmp_path / "data", database_url=postgres.url))
    with TestClient(app) as client:
        key = app.state.facelens.keys.create("ops", ["events"])[1]
        auth = {"Authorization": f"Bearer {key}"}
        for big in (2**31, 2**63):
            assert client.get(f"/v1/events/{big}", headers=auth).status_code == 404
            assert client.post(f"/v1/events/{big}/confirm", headers=auth).status_code == 404
            page = client.get(f"/v1/events?cursor={big}", headers=auth)
            assert page.status_code == 200 and page.json() == []
