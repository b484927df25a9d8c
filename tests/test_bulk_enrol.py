"""Bulk enrolment from a zip of folders (one per person): parsed without touching disk and
within size limits, enrolled person by person with a streamed report, audited, idempotent."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from facelens.errors import BadImageError, ImageTooLargeError
from facelens.gallery.bulk import ZipArchive
from facelens.service.state import ServiceState

CONSENT = {"legal_basis": "consent", "consent_purpose": "staff door", "recorded_by": "hr"}


def _zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_a_zip_is_read_as_one_folder_per_person_within_its_limits() -> None:
    nested = ZipArchive(_zip({"staff/ann/1.jpg": b"a", "staff/ann/2.PNG": b"b",
                              "staff/bob/1.jpg": b"c", "staff/bob/notes.txt": b"x",
                              "staff/bob/deeper/3.jpg": b"d", "__MACOSX/staff/ann/._1.jpg": b"",
                              "staff/.hidden/1.jpg": b"e"}))
    people = nested.people()
    assert [(p.name, p.labels) for p in people] == [
        ("ann", ["staff/ann/1.jpg", "staff/ann/2.PNG"]), ("bob", ["staff/bob/1.jpg"])]
    assert people[0].images[1].read() == b"b"
    flat = ZipArchive(_zip({"ann/1.jpg": b"a", "bob/1.jpg": b"b"})).people()
    assert [p.name for p in flat] == ["ann", "bob"]

    with pytest.raises(BadImageError):
        ZipArchive(b"PK\x03\x04 not really a zip")
    with pytest.raises(BadImageError):
        ZipArchive(_zip({"loose.jpg": b"a"})).people()  # no folder: whose photo is it?
    bomb = ZipArchive(_zip({"ann/1.jpg": b"\0" * 50_000}), max_image_bytes=10_000)
    (ann,) = bomb.people()  # headers are read, nothing inflated yet
    with pytest.raises(ImageTooLargeError):
        ann.images[0].read()  # inflating stops at the limit, whatever the header says
    many = ZipArchive(_zip({f"p{i}/1.jpg": b"\0" * 6000 for i in range(4)}),
                      max_total_bytes=20_000)
    with pytest.raises(ImageTooLargeError, match="inflate to 24,000 bytes, over 20,000"):
        many.people()  # from the declared sizes: no one is enrolled before the refusal


def _lines(response: Any) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in response.text.splitlines()]


def test_a_zip_of_people_is_enrolled_person_by_person_and_audited(
        scoped_service: tuple[TestClient, ServiceState, dict[str, str]],
        fixtures_dir: Path) -> None:
    client, state, keys = scoped_service
    photo = {name: (fixtures_dir / name).read_bytes()
             for name in ("obama.jpg", "obama2.jpg", "biden.jpg", "kit_with_rose.jpg")}
    archive = _zip({"team/obama/a.jpg": photo["obama.jpg"], "team/obama/b.jpg": photo["obama2.jpg"],
                    "team/biden/a.jpg": photo["biden.jpg"],
                    "team/rose/a.jpg": photo["kit_with_rose.jpg"]})
    assert client.post("/v1/galleries", headers={"Authorization": keys["admin"]},
                       json={"name": "staff", "purpose": "staff-door"}).status_code == 201

    def upload(**form: str) -> Any:
        return client.post("/v1/galleries/staff/subjects/zip",
                           headers={"Authorization": keys["enrol"]}, data={**CONSENT, **form},
                           files={"archive": ("team.zip", archive, "application/zip")})

    first = _lines(upload())
    assert first[0] == {"people": 3}
    report = {line["name"]: line for line in first[1:-1]}
    assert [line["done"] for line in first[1:-1]] == [1, 2, 3]
    assert report["obama"]["status"] == "enrolled" and report["obama"]["templates"] == 2
    assert report["biden"]["status"] == "enrolled" and report["biden"]["templates"] == 1
    assert report["rose"]["status"] == "refused" and "nothing to enrol" in report["rose"]["reason"]
    assert first[-1] == {"summary": {"enrolled": 2, "refused": 1}}

    again = _lines(upload())  # a second run enrols only who is missing
    assert again[-1] == {"summary": {"kept": 2, "refused": 1}}
    assert {line["subject_id"] for line in again[1:-1] if line["status"] == "kept"} == {
        report["obama"]["subject_id"], report["biden"]["subject_id"]}
    renewed = _lines(upload(update="true"))  # --update: new subjects replace the old ones
    assert renewed[-1] == {"summary": {"enrolled": 2, "refused": 1}}
    subjects = client.get("/v1/galleries/staff/subjects",
                          headers={"Authorization": keys["enrol"]}).json()
    assert sorted(s["external_id"] for s in subjects) == ["biden", "obama"]

    found = client.post("/v1/galleries/staff/identify", headers={"Authorization": keys["identify"]},
                        files={"image": ("p.jpg", photo["obama2.jpg"], "image/jpeg")}).json()
    assert found["faces"][0]["candidates"][0]["name"] == "obama"
    actions = [(e.action, e.outcome) for e in state.audit.entries(100)]
    assert actions.count(("enrol", "ok")) == 4 and actions.count(("enrol", "refused")) == 3
    assert actions.count(("subject.delete", "ok")) == 2

    refused = client.post("/v1/galleries/staff/subjects/zip",
                          headers={"Authorization": keys["enrol"]}, data=CONSENT,
                          files={"archive": ("x.zip", b"not a zip", "application/zip")})
    assert (refused.status_code, refused.json()["error"]["code"]) == (422, "bad_image")
    no_basis = client.post("/v1/galleries/staff/subjects/zip",
                           headers={"Authorization": keys["enrol"]},
                           data={**CONSENT, "legal_basis": "because"},
                           files={"archive": ("team.zip", archive, "application/zip")})
    assert no_basis.status_code == 400
    nowhere = client.post("/v1/galleries/nope/subjects/zip",
                          headers={"Authorization": keys["enrol"]}, data=CONSENT,
                          files={"archive": ("team.zip", archive, "application/zip")})
    assert nowhere.status_code == 404


def test_a_value_postgresql_cannot_store_refuses_each_person_and_ends_the_report(
        tmp_path: Path, fixtures_dir: Path, postgres: Any) -> None:
    # QA: a NUL in recorded_by made the first enrolment raise inside the stream, which then
    # stopped after the lines already sent, with no summary.
    from facelens.service.app import create_app
    from facelens.settings import Settings

    app = create_app(Settings(data_dir=tmp_path / "data", database_url=postgres.url))
    photo = (fixtures_dir / "obama.jpg").read_bytes()
    with TestClient(app) as client:
        key = f"Bearer {app.state.facelens.keys.create('admin', ['admin'])[1]}"
        client.post("/v1/galleries", headers={"Authorization": key},
                    json={"name": "staff", "purpose": "staff-door"})
        lines = _lines(client.post(
            "/v1/galleries/staff/subjects/zip", headers={"Authorization": key},
            data={**CONSENT, "recorded_by": "h\0r"},
            files={"archive": ("t.zip", _zip({"ann/1.jpg": photo, "bob/1.jpg": photo}),
                               "application/zip")}))
    assert lines[-1] == {"summary": {"refused": 2}}
    assert all("NUL" in line["reason"] for line in lines[1:-1])
