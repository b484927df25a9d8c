"""The REST service probed as a demanding Face++/Rekognition/CompreFace user would, in process on
real models: values at the ends of what a field can hold are refused where they are parsed,
naming the field; refused writes leave an audit row; and the Python API's image inputs."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from facelens.errors import BadImageError
from facelens.service.app import create_app
from facelens.service.state import ServiceState
from facelens.settings import Settings
from facelens.vision.decode import load_image

CONSENT = {"legal_basis": "consent", "consent_purpose": "door access", "recorded_by": "desk"}
SCOPES = ("admin", "detect", "identify", "events", "enrol")


@dataclass
class App:
    client: TestClient
    state: ServiceState
    keys: dict[str, str]
    fixtures: Path

    def auth(self, scope: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[scope]}"}

    def photo(self, name: str, field: str = "images") -> list[tuple[str, Any]]:
        return [(field, (name, (self.fixtures / name).read_bytes(), "image/jpeg"))]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> Iterator[App]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("hardening") / "data",
                        rate_burst=10_000, rate_per_minute=1e6)
    with TestClient(create_app(settings)) as client:
        state: ServiceState = client.app.state.facelens  # type: ignore[attr-defined]
        keys = {scope: state.keys.create(f"only-{scope}", [scope])[1] for scope in SCOPES}
        yield App(client, state, keys, fixtures_dir)


def refusal(r: Any) -> tuple[int, str, str]:
    error = r.json()["error"]
    return r.status_code, error["code"], error["message"]


# ------------------------------------------------------------- values at the calendar's ends
def test_times_past_the_calendar_are_refused_naming_the_field(app: App) -> None:
    # They reached datetime arithmetic (UTC conversion) and overflowed: a global OverflowError
    # handler answered "a date or number is out of range", naming no field.
    for since in ("9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00%2B14:00", "1899-12-31"):
        status, code, message = refusal(
            app.client.get(f"/v1/events?since={since}", headers=app.auth("events")))
        assert (status, code) == (422, "validation_error"), since
        assert message == "query.since: must lie between 1900-01-01 and 9000-01-01 (UTC)"
    r = app.client.get("/v1/events?since=2026-01-01T00:00:00%2B14:00", headers=app.auth("events"))
    assert r.status_code == 200
    for expires in ("9999-12-31T23:59:59-12:00", "9999-12-31"):
        status, code, message = refusal(app.client.post(
            "/v1/hotlists/plates", headers=app.auth("admin"),
            json={"plate": "AB123", "reason": "stolen car", "expires_at": expires}))
        assert (status, code) == (422, "validation_error"), expires
        assert message.startswith("expires_at: must lie between"), message


def test_a_correction_id_past_64_bits_is_refused_naming_it(app: App) -> None:
    # SQLite's driver raised OverflowError binding it (the global handler's vague 422).
    for correction in ("9" * 30, "-" + "9" * 30, "0"):
        status, code, message = refusal(app.client.delete(
            f"/v1/subjects/nobody/corrections/{correction}", headers=app.auth("identify")))
        assert (status, code) == (422, "validation_error"), correction
        assert message.startswith("path.correction_id: "), message


# ------------------------------------------------------------------ the Python API's images
def test_a_closed_pil_image_is_said_to_be_closed_not_corrupt(fixtures_dir: Path) -> None:
    # face_recognition's users pass PIL images; closed ones read "truncated or corrupt image:
    # AssertionError" (the `with` block left) or "... Operation on closed image" (close()).
    photo = fixtures_dir / "obama.jpg"
    with Image.open(photo) as left_block:
        pass
    closed = Image.open(photo)
    closed.close()
    with photo.open("rb") as file:
        file_closed = Image.open(file)
    for image in (left_block, closed, file_closed):
        with pytest.raises(BadImageError, match=r"^the PIL image was closed before its pixels "
                                                r"were read: load\(\) it before closing it"):
            load_image(image)
    with Image.open(photo) as loaded:
        loaded.load()
    assert load_image(loaded).shape == (1137, 910, 3)  # loaded, then closed: still usable
