"""Editing enrolled subjects over the API: rename, add photos, list and delete single
templates; the index follows every change, the last template cannot go, all is audited."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from PIL import Image

from facelens.service.state import ServiceState

CONSENT = {"legal_basis": "consent", "consent_purpose": "staff door", "recorded_by": "hr"}


def test_a_subject_is_renamed_given_photos_and_templates_one_by_one(
        scoped_service: tuple[TestClient, ServiceState, dict[str, str]],
        fixtures_dir: Path) -> None:
    client, state, keys = scoped_service
    enrol, admin = {"Authorization": keys["enrol"]}, {"Authorization": keys["admin"]}

    def photo(name: str, field: str = "images") -> Any:
        return (field, (name, (fixtures_dir / name).read_bytes(), "image/jpeg"))

    def named(image: str) -> list[str]:
        found = client.post("/v1/galleries/staff/identify",
                            headers={"Authorization": keys["identify"]},
                            files=[photo(image, "image")]).json()
        return [c["name"] for c in found["faces"][0]["candidates"]]

    assert client.post("/v1/galleries", headers=admin,
                       json={"name": "staff", "purpose": "staff-door"}).status_code == 201
    made = client.post("/v1/galleries/staff/subjects", headers=enrol, data={"name": "barack",
                       **CONSENT}, files=[photo("obama.jpg")])
    subject = made.json()["subject_id"]
    client.post("/v1/galleries/staff/subjects", headers=enrol, data={"name": "joe", **CONSENT},
                files=[photo("biden.jpg")])
    url = f"/v1/subjects/{subject}"

    added = client.post(f"{url}/images", headers=enrol,
                        files=[photo("obama2.jpg"), photo("kit_with_rose.jpg")])
    assert added.status_code == 201, added.text
    assert added.json()["added"] == 1
    assert "2 faces" in added.json()["skipped"][0]["reason"]
    listed = client.get(f"{url}/templates", headers=enrol).json()
    assert len(listed) == 2 and all("vector" not in t for t in listed)
    assert named("obama2.jpg") == ["barack"] and named("biden.jpg") == ["joe"]

    renamed = client.patch(url, headers=enrol, json={"name": "Barack Obama"})
    assert renamed.json() == {"id": subject, "name": "Barack Obama"}
    assert named("obama2.jpg") == ["Barack Obama"]

    # The first template goes: the subject is re-indexed under the other, found once.
    first, second = (t["id"] for t in listed)
    assert client.delete(f"{url}/templates/{first}", headers=enrol).status_code == 204
    assert [t["id"] for t in client.get(f"{url}/templates", headers=enrol).json()] == [second]
    assert named("obama.jpg") == ["Barack Obama"]
    last = client.delete(f"{url}/templates/{second}", headers=enrol)
    assert last.status_code == 400 and "only template" in last.json()["error"]["message"]
    assert client.delete(f"{url}/templates/{first}", headers=enrol).status_code == 404
    assert client.delete(f"{url}/templates/{2**70}", headers=enrol).status_code in (404, 422)
    nobody = client.post(f"{url}/images", headers=enrol, files=[photo("kit_with_rose.jpg")])
    assert (nobody.status_code, nobody.json()["error"]["code"]) == (422, "no_face")
    assert client.patch("/v1/subjects/nope", headers=enrol, json={"name": "x"}).status_code == 404
    assert client.get(f"{url}/templates", headers={"Authorization": keys["identify"]}
                      ).status_code == 403

    # The reference picture: the best enrolment face, for reviewers; gone with the subject.
    picture = client.get(f"{url}/reference.jpg", headers=enrol)
    assert picture.status_code == 200 and picture.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(picture.content)).size == (112, 112)
    assert client.get(f"{url}/reference.jpg", headers={"Authorization": keys["identify"]}
                      ).status_code == 403
    sealed = state.galleries.subject(subject).reference
    assert sealed is not None and picture.content[:64] not in sealed

    actions = [(e.action, e.outcome) for e in state.audit.entries(100)]
    for done in (("subject.add_photos", "ok"), ("subject.rename", "ok"),
                 ("subject.delete_template", "ok"), ("subject.add_photos", "refused")):
        assert done in actions, done
    assert client.delete(url, headers=enrol).status_code == 204
    assert client.get(f"{url}/reference.jpg", headers=enrol).status_code == 404
