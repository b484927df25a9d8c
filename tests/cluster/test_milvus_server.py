"""MilvusIndex on a real Milvus 2.3.5 standalone server (started by conftest.py, or skipped with
the reason): galleries as partition keys of one collection, deletes that are deletes, and the
index agreeing with the database through `Galleries`."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from facelens.gallery.enrol import ConsentRecord
from facelens.gallery.service import Galleries
from facelens.index import MilvusIndex
from facelens.settings import Settings
from facelens.store.tables import Subject, Template

DIM = 256
CONSENT = ConsentRecord(purpose="staff-door", legal_basis="consent", recorded_by="test-suite")


def unit(n: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _client(uri: str) -> Any:
    from pymilvus import MilvusClient

    return MilvusClient(uri)


def test_two_galleries_share_one_collection_and_never_see_each_other(database_uri: str
                                                                     ) -> None:
    faces = unit(400, seed=1)
    a = MilvusIndex(DIM, database_uri, "faces", gallery=1)
    b = MilvusIndex(DIM, database_uri, "faces", gallery=2)
    a.add(np.arange(400), faces)
    b.add(np.arange(1_000, 1_400), faces)  # the same faces, enrolled in B under other ids
    assert _client(database_uri).list_collections() == ["faces"]
    assert len(a) == len(b) == 400
    assert sorted(a.ids().tolist()) == list(range(400))
    assert sorted(b.ids().tolist()) == list(range(1_000, 1_400))

    scores, found = a.search(faces[:50], 5)
    assert (found[:, 0] == np.arange(50)).all()  # each face finds itself, in A
    assert (found < 400).all(), "a search in gallery A returned B's ids"
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=0.02)  # IVF_SQ8: 8-bit codes
    _, found = b.search(faces[:50], 5)
    assert (found[:, 0] == np.arange(1_000, 1_050)).all() and (found >= 1_000).all()

    assert b.remove(np.arange(400)) == 0  # A's ids are not B's to remove
    assert len(a) == 400
    empty = MilvusIndex(DIM, database_uri, "faces", gallery=3)
    assert len(empty) == 0 and (empty.search(faces[:2], 3)[1] == -1).all()


def test_a_delete_is_a_milvus_delete_not_a_copy(database_uri: str, tmp_path: Path) -> None:
    faces = unit(1_000, seed=2)
    index = MilvusIndex(DIM, database_uri, "faces", gallery=7)
    index.add(np.arange(1_000), faces)
    index.save(tmp_path / "g.json")
    client = _client(database_uri)
    client.flush("faces")  # a sealed segment, so the compaction has a segment to rewrite
    made = client.describe_collection("faces")["collection_id"]

    gone = np.arange(0, 1_000, 10)
    assert index.remove(gone) == len(gone)
    index.save(tmp_path / "g.json")
    assert client.describe_collection("faces")["collection_id"] == made  # not recreated
    assert client.list_collections() == ["faces"]  # and nothing copied beside it
    assert len(index) == 900
    _, found = index.search(faces[gone], 20)
    assert not np.isin(found, gone).any()

    # the compaction save() asked for rewrites the segment without the deleted rows
    deadline = time.monotonic() + 60
    while _segment_rows(client, "faces") != 900 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _segment_rows(client, "faces") == 900

    again = MilvusIndex.load(tmp_path / "g.json")
    assert len(again) == 900 and again.search(faces[1:2], 1)[1][0, 0] == 1


def _segment_rows(client: Any, collection: str) -> int:
    """Rows the sealed segments hold, deleted ones included until a compaction drops them."""
    return sum(s.num_rows for s in client.list_persistent_segments(collection))


def test_adding_a_present_id_replaces_its_vector_in_its_gallery(database_uri: str) -> None:
    faces = unit(101, seed=3)
    index = MilvusIndex(DIM, database_uri, "faces", gallery=1)
    index.add(np.arange(100), faces[:100])
    index.add([5], faces[100:])
    assert len(index) == 100
    _, found = index.search(np.vstack([faces[100:], faces[5:6]]), 1)
    assert found[0, 0] == 5 and found[1, 0] != 5


def test_milvus_holds_what_the_database_holds_after_enrolments_and_deletes(
        database_uri: str, tmp_path: Path, fixtures_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    galleries = Galleries(Settings(data_dir=tmp_path / "data", milvus_uri=database_uri))
    try:
        galleries.create_gallery("staff", "staff-door", embedder="fusion")
        galleries.create_gallery("visitors", "staff-door", embedder="fusion")
        obama = galleries.enroll("staff", "obama", [fixtures_dir / "obama.jpg"],
                                 consent=CONSENT)
        # Why stand-in faces: the face models take ~1-2 s a face here. The one real photo's
        # embedding, moved a little per person, stands in; each enrolment still goes the
        # whole way (sealed templates, one transaction, the index delta into Milvus).
        monkeypatch.setattr(galleries.enrolment, "embed_images", _stand_ins(
            galleries.enrolment.embed_images(galleries.gallery("staff"),
                                             [fixtures_dir / "obama.jpg"], None)))
        where = ["staff" if i % 3 else "visitors" for i in range(99)]
        people = [galleries.enroll(gallery, f"p{i}", ["-"], consent=CONSENT).subject_id
                  for i, gallery in enumerate(where)]
        assert _database_counts(galleries) == {"staff": 1 + where.count("staff"),
                                               "visitors": where.count("visitors")}
        assert _milvus_counts(database_uri, galleries) == _database_counts(galleries)

        for subject_id in people[::7]:  # from both galleries
            galleries.delete_subject(subject_id)
        kept = where[:]
        for i in range(0, 99, 7):
            kept[i] = "deleted"
        assert _database_counts(galleries) == {"staff": 1 + kept.count("staff"),
                                               "visitors": kept.count("visitors")}
        assert _milvus_counts(database_uri, galleries) == _database_counts(galleries)
        (found,) = galleries.identify("staff", fixtures_dir / "obama.jpg")
        assert found.candidates[0].subject_id == obama.subject_id  # the photo, not a stand-in
        assert _client(database_uri).list_collections() == ["facelens_fusion"]
    finally:
        galleries.close()


def _stand_ins(real: Any) -> Any:
    """embed_images() for any images: the real result with its vector moved at random."""
    rng = np.random.default_rng(4)

    def embed(*_: object) -> Any:
        moved = real.vectors[0] + rng.normal(0, 0.05, DIM).astype(np.float32)
        return dataclasses.replace(real, vectors=[moved / np.linalg.norm(moved)])

    return embed


def _database_counts(galleries: Galleries) -> dict[str, int]:
    with galleries.store.sessions() as s:
        rows = s.execute(sa.select(Subject.gallery_id, sa.func.count(sa.distinct(Subject.id)))
                         .join(Template).group_by(Subject.gallery_id)).all()
    names = {g.id: g.name for g, _ in galleries.list_galleries()}
    return {names[gallery_id]: int(n) for gallery_id, n in rows}


def _milvus_counts(uri: str, galleries: Galleries) -> dict[str, int]:
    """Rows per gallery as Milvus counts them, straight from the server."""
    client = _client(uri)
    return {g.name: int(client.query("facelens_fusion", filter=f"gallery == {g.id}",
                                     output_fields=["count(*)"])[0]["count(*)"])
            for g, _ in galleries.list_galleries()}
