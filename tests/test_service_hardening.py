"""The REST service probed as a demanding Face++/Rekognition/CompreFace user would, in process on
real models: values at the ends of what a field can hold are refused where they are parsed,
naming the field; refused writes leave an audit row; and the Python API's image inputs."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
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


@pytest.fixture(params=["sqlite", "postgresql"])
def app(request: pytest.FixtureRequest, tmp_path: Path, fixtures_dir: Path) -> Iterator[App]:
    """The service on the embedded store and on PostgreSQL (whose columns hold their lengths)."""
    url = request.getfixturevalue("postgres").url if request.param == "postgresql" else None
    settings = Settings(data_dir=tmp_path / "data", database_url=url, rate_burst=10_000,
                        rate_per_minute=1e6)
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


# --------------------------------------------------------------------- refused writes audited
def new_rows(app: App, request: Callable[[], Any]) -> tuple[Any, list[tuple[str, str, str, Any]]]:
    """The response to `request` and the audit rows it added (actor, action, outcome, detail);
    not the start's retention pass, which the service writes when it comes to it."""
    before = max((e.id for e in app.state.audit.entries(1)), default=0)
    response = request()
    rows = [(e.actor, e.action, e.outcome, json.loads(e.detail))
            for e in reversed(app.state.audit.entries(100))
            if e.id > before and e.actor != "service"]
    return response, rows


def test_a_refused_write_leaves_one_audit_row_naming_who_tried_what(app: App) -> None:
    # Only enrol, identify and verify audited their refusals (inside the inference pool): a
    # write refused for its fields (422), its scope (403), an unknown id (404) or a conflict
    # (409) left no trace of who tried it.
    c, admin = app.client, app.auth("admin")
    c.post("/v1/galleries", headers=admin, json={"name": "audited", "purpose": "door"})
    label = {scope: app.state.keys.authenticate(key).label  # type: ignore[union-attr]
             for scope, key in app.keys.items()}
    refused = [
        (lambda: c.post("/v1/keys", headers=admin, json={"name": "ci", "scopes": []}),
         "admin", "create_key", 422, "scopes: List should have at least 1 item"),
        (lambda: c.post("/v1/keys", headers=app.auth("detect"),
                        json={"name": "ci", "scopes": ["admin"]}),
         "detect", "create_key", 403, "this key lacks the admin scope"),
        (lambda: c.post("/v1/galleries/audited/subjects", headers=app.auth("enrol"),
                        data={"name": "obama"}, files=app.photo("obama.jpg")),
         "enrol", "enrol", 422, "legal_basis: Field required"),
        (lambda: c.delete("/v1/subjects/nobody", headers=app.auth("enrol")),
         "enrol", "delete_subject", 404, "no subject nobody"),
        (lambda: c.post("/v1/galleries", headers=admin,
                        json={"name": "audited", "purpose": "door"}),
         "admin", "create_gallery", 409, "gallery 'audited' already exists"),
        (lambda: c.patch("/v1/cameras/gate", headers=admin, json={"fps": 100}),
         "admin", "change_camera", 422, "fps: Input should be less than"),
        (lambda: c.post("/v1/hotlists/plates", headers=admin,
                        json={"plate": "AB123", "reason": "no"}),
         "admin", "add_plate", 422, "reason: String should have at least"),
    ]
    for request, scope, action, status, reason in refused:
        response, rows = new_rows(app, request)
        assert response.status_code == status, response.text
        ((actor, logged, outcome, detail),) = rows
        assert (actor, logged, outcome, detail["status"]) == (label[scope], action, "refused",
                                                              status)
        assert detail["reason"].startswith(reason), detail
        assert detail["request"] == f"{response.request.method} {response.url.path}"
    assert c.get("/v1/audit/verify", headers=admin).json()["ok"]


def test_reads_unknown_keys_and_self_audited_refusals_add_no_row(app: App) -> None:
    c = app.client
    for request in (lambda: c.get("/v1/subjects/nobody", headers=app.auth("enrol")),
                    lambda: c.post("/v1/keys", json={"name": "x", "scopes": ["admin"]}),
                    lambda: c.post("/v1/detect", headers=app.auth("detect"),
                                   files={"image": ("x.jpg", b"junk", "image/jpeg")})):
        response, rows = new_rows(app, request)
        assert response.status_code in (401, 404, 422) and rows == [], rows
    # enrol audits its own refusals (a bad photo): one row, not a second from the handler
    c.post("/v1/galleries", headers=app.auth("admin"), json={"name": "own", "purpose": "door"})
    response, rows = new_rows(app, lambda: c.post(
        "/v1/galleries/own/subjects", headers=app.auth("enrol"), data={"name": "x", **CONSENT},
        files=[("images", ("x.jpg", b"junk", "image/jpeg"))]))
    assert response.status_code == 422 and [row[1:3] for row in rows] == [("enrol", "refused")]


# ---------------------------------------------------------------- several files for one field
def test_two_files_in_a_one_file_field_are_refused_not_one_dropped(app: App) -> None:
    # The last file of the field was answered alone: obama and biden sent to /v1/detect
    # answered biden's face, with nothing saying obama's photo was never looked at.
    c = app.client
    c.post("/v1/galleries", headers=app.auth("admin"), json={"name": "zips", "purpose": "door"})
    for path, scope, field, extra in (("/v1/detect", "detect", "image", []),
                                      ("/v1/verify", "admin", "image_a",
                                       app.photo("obama2.jpg", "image_b")),
                                      ("/v1/galleries/zips/subjects/zip", "enrol", "archive",
                                       [])):
        files = [*app.photo("obama.jpg", field), *app.photo("biden.jpg", field), *extra]
        r = c.post(path, headers=app.auth(scope), files=files, data=CONSENT)
        assert refusal(r) == (422, "validation_error", f"{field}: one file expected, 2 sent")
    one = c.post("/v1/detect", headers=app.auth("detect"), files=app.photo("obama.jpg", "image"))
    assert one.status_code == 200 and len(one.json()["faces"]) == 1
    # and a value: name=a&name=b enrolled "b"; JSON {"top_k": [1, 2]} asked for 2
    r = c.post("/v1/galleries/zips/subjects", headers=app.auth("enrol"),
               files=[*app.photo("obama.jpg"), ("name", (None, "a")), ("name", (None, "b"))],
               data=CONSENT)
    assert refusal(r) == (422, "validation_error", "name: one value expected, 2 sent")
    r = c.post("/v1/galleries/zips/identify", headers=app.auth("identify"), json={
        "image": base64.b64encode((app.fixtures / "obama.jpg").read_bytes()).decode(),
        "top_k": [1, 2]})
    assert refusal(r) == (422, "validation_error", "top_k: one value expected, 2 sent")
    assert app.state.galleries.subjects("zips") == []


# ------------------------------------------------------------------------- HEAD and OPTIONS
def test_every_get_route_answers_head_and_options_name_every_method(app: App) -> None:
    # FastAPI's routes answered HEAD and OPTIONS with 405, and a 405's Allow named the first
    # route's methods only: PUT /v1/galleries said "Allow: GET", hiding POST.
    c, admin = app.client, app.auth("admin")
    c.post("/v1/galleries", headers=admin, json={"name": "probed", "purpose": "door"})
    paths = [path for path, operations in c.get("/openapi.json").json()["paths"].items()
             if "get" in operations and "{" not in path and path != "/v1/events/stream"]
    for path in [*paths, "/console/", "/docs", "/v1/galleries/probed", "/v1/events/stream"]:
        head = c.head(path, headers=admin)
        assert (head.status_code, head.content) == (200, b""), path
        if path not in ("/v1/events/stream", "/metrics"):  # no length; a count grown by one
            assert head.headers["content-length"] == c.get(
                path, headers=admin).headers["content-length"], path
    assert c.head("/v1/galleries/absent", headers=admin).status_code == 404
    for path, allowed in (("/v1/galleries", "GET, HEAD, OPTIONS, POST"),
                          ("/v1/subjects/anyone", "DELETE, GET, HEAD, OPTIONS, PATCH"),
                          ("/v1/detect", "OPTIONS, POST")):
        options = c.options(path)
        assert (options.status_code, options.headers["allow"]) == (204, allowed), path
        refused = c.put(path, headers=admin, json={})
        assert (refused.status_code, refused.headers["allow"]) == (405, allowed), path
    assert c.options("/v1/absent").status_code == 404


# ---------------------------------------------------------------------------------- cameras
def test_a_gallery_listed_twice_for_a_camera_is_refused(app: App) -> None:
    # 300,000 copies of one gallery's name were each looked up (a PATCH took 3 minutes) and
    # stored, to be searched for every face the camera saw.
    c, admin = app.client, app.auth("admin")
    c.post("/v1/galleries", headers=admin, json={"name": "lobby", "purpose": "door"})
    twice = ["lobby", "lobby"]
    added = c.post("/v1/cameras", headers=admin, json={
        "name": "hall", "source": "/dev/video7", "enabled": False, "galleries": twice})
    assert refusal(added) == (422, "validation_error", "galleries: 'lobby' is listed twice")
    assert c.post("/v1/cameras", headers=admin, json={
        "name": "hall", "source": "/dev/video7", "enabled": False,
        "galleries": ["lobby"]}).status_code == 201
    changed = c.patch("/v1/cameras/hall", headers=admin, json={"galleries": twice * 1000})
    assert refusal(changed) == (422, "validation_error", "galleries: 'lobby' is listed twice")
    assert c.get("/v1/cameras", headers=admin).json()[0]["galleries"] == ["lobby"]


def test_a_camera_change_past_a_bound_of_its_settings_answers_422(app: App) -> None:
    # A PATCH checked its own bounds, not the camera's: cooldown_s 1e9 (a camera's is at most
    # a day) failed only as the changed settings were made, answering 500.
    c, admin = app.client, app.auth("admin")
    c.post("/v1/cameras", headers=admin, json={"name": "yard", "source": "/dev/video7",
                                               "enabled": False})
    r = c.patch("/v1/cameras/yard", headers=admin, json={"cooldown_s": 1e9})
    assert refusal(r) == (422, "validation_error",
                          "cooldown_s: Input should be less than or equal to 86400")
    assert c.get("/v1/cameras", headers=admin).json()[0]["cooldown_s"] == 60


# ------------------------------------------------------------------------------------- keys
def test_the_last_admin_key_cannot_be_revoked(app: App) -> None:
    # Revoking it answered 204 and left no key to make keys with; with other keys active, a
    # restart made no new admin key either.
    c, admin = app.client, app.auth("admin")
    admin_id = app.keys["admin"].split("_")[1]
    status, code, message = refusal(c.delete(f"/v1/keys/{admin_id}", headers=admin))
    assert (status, code) == (409, "conflict")
    assert message.startswith(f"key {admin_id} is the last active admin key: make another")
    assert c.get("/v1/me", headers=admin).status_code == 200
    second = c.post("/v1/keys", headers=admin, json={"name": "second", "scopes": ["admin"]})
    assert c.delete(f"/v1/keys/{second.json()['id']}", headers=admin).status_code == 204
    assert c.delete(f"/v1/keys/{app.keys['detect'].split('_')[1]}",
                    headers=admin).status_code == 204  # no admin scope: revoked as before


def test_revoking_a_key_stops_its_zip_enrolment_before_the_next_person(app: App) -> None:
    # The zip went on enrolling every person (minutes for a large one) for a key revoked after
    # the first, while the alert and preview streams already stopped for one.
    c = app.client
    c.post("/v1/galleries", headers=app.auth("admin"), json={"name": "bulk", "purpose": "door"})
    principal, key = app.state.keys.create("bulk-loader", ["enrol"])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(8):
            archive.writestr(f"person{i}/1.jpg", (app.fixtures / "obama.jpg").read_bytes())
    answer: list[Any] = []
    upload = threading.Thread(target=lambda: answer.append(c.post(
        "/v1/galleries/bulk/subjects/zip", headers={"Authorization": f"Bearer {key}"},
        data=CONSENT, files={"archive": ("people.zip", buffer.getvalue(), "application/zip")})))
    upload.start()
    while upload.is_alive() and not any(e.actor == principal.label and e.action == "enrol"
                                        for e in app.state.audit.entries(20)):
        time.sleep(0.05)  # the first person is enrolled: now revoke
    app.state.keys.revoke(principal.id)
    upload.join()
    lines = [json.loads(line) for line in answer[0].text.splitlines()]
    last = lines[-1]
    enrolled = [line for line in lines if line.get("status") == "enrolled"]
    assert 1 <= len(enrolled) < 8 and last["summary"]["not_reached"] == 8 - len(enrolled)
    assert last["stopped"].startswith("the key was revoked")
    assert len(app.state.galleries.subjects("bulk")) == len(enrolled)


# ---------------------------------------------------------------------------- event filters
def test_an_event_kind_that_names_no_kind_is_refused(app: App) -> None:
    # kind=faces (or Face) answered an empty list, as if no alert had been recorded.
    for kind in ("faces", "Face", ""):
        status, code, message = refusal(
            app.client.get(f"/v1/events?kind={kind}", headers=app.auth("events")))
        assert (status, code) == (422, "validation_error"), kind
        assert message == "query.kind: Input should be 'face', 'plate' or 'rule'", message
    for kind in ("face", "plate", "rule"):
        assert app.client.get(f"/v1/events?kind={kind}",
                              headers=app.auth("events")).status_code == 200


# ---------------------------------------------------------------------------- bodies not JSON
def test_a_body_that_is_no_json_object_is_said_so(app: App) -> None:
    # They read "1: JSON decode error" and ": Field required" (no field, a bare colon).
    for body, said in ((b"{not json", "body: not valid JSON at character 1: Expecting "),
                       (b'{"name": "ci",}', "body: not valid JSON at character 14: "),
                       (b"", "body: Field required"),
                       (b"[1, 2]", "body: Input should be a valid dictionary")):
        r = app.client.post("/v1/keys", content=body, headers={
            **app.auth("admin"), "Content-Type": "application/json"})
        status, code, message = refusal(r)
        assert (status, code) == (422, "validation_error") and message.startswith(said), message


# ------------------------------------------------------------------------------ /openapi.json
def test_the_documented_error_body_is_the_one_sent(app: App) -> None:
    # /openapi.json documented FastAPI's 422 body ({"detail": [...]}), never sent: a client
    # generated from it failed to read every refusal ({"error": {"code", "message"}}).
    c = app.client
    spec = c.get("/openapi.json").json()
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            refused = operation["responses"]["4XX"]["content"]["application/json"]["schema"]
            assert refused == {"$ref": "#/components/schemas/ErrorBody"}, (method, path)
    detail = spec["components"]["schemas"]["ErrorDetail"]
    for r in (c.post("/v1/keys", headers=app.auth("admin"), json={}),
              c.get("/v1/galleries/absent", headers=app.auth("admin")), c.get("/v1/me")):
        assert list(r.json()) == ["error"] and sorted(r.json()["error"]) == sorted(
            detail["required"]), r.text
    cursor = spec["paths"]["/v1/events"]["get"]["responses"]["200"]["headers"]
    assert list(cursor) == ["X-Next-Cursor"]


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


def test_a_number_is_not_taken_for_a_time(app: App) -> None:
    """pydantic reads a number as seconds since 1970: since=0.5 listed every event, and an
    expiry of 1 expired the entry in 1970 (refused as past, for the wrong reason)."""
    for since in ("0.5", "1733650000", "-1", "1e9"):
        status, code, message = refusal(
            app.client.get(f"/v1/events?since={since}", headers=app.auth("events")))
        assert (status, code) == (422, "validation_error"), since
        assert message.startswith("query.since: an ISO-8601 date"), message
    for expires in (1893456000, "1893456000", 2.5):
        status, code, message = refusal(app.client.post(
            "/v1/hotlists/plates", headers=app.auth("admin"),
            json={"plate": "AB123", "reason": "stolen car", "expires_at": expires}))
        assert (status, code) == (422, "validation_error"), expires
        assert message.startswith("expires_at: an ISO-8601 date"), message
    ok = app.client.get("/v1/events?since=2026-12-08", headers=app.auth("events"))
    assert ok.status_code == 200, ok.text
