"""The store under the galleries: master key rotation (and crashes in the middle of it), the
wrong or missing key, the key file's mode."""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from gallery_helpers import (
    GALLERIES,
    db_index_ids,
    index_file_ids,
    names,
    open_galleries,
    snapshot,
)

from facelens.events.hotlist_store import HotlistStore
from facelens.gallery import index_store
from facelens.gallery.identify import Identification
from facelens.gallery.service import Galleries
from facelens.settings import EMBEDDER_DIMS, Settings
from facelens.store.crypto import (
    ENV_KEY,
    MasterKey,
    MasterKeyError,
    new_data_key,
    write_key_file,
)
from facelens.store.database import Store
from facelens.store.db import MIGRATIONS
from facelens.store.tables import Gallery, PlateHotlistEntry, Subject, Template


# --------------------------------------------------------------------------- key rotation
def _results(results: list[Identification]) -> list[list[tuple[str, float]]]:
    return [[(c.name, c.score) for c in r.candidates] for r in results]


def test_rotate_master_key(opened: Callable[..., Galleries], copy_dir: Path,
                           fixtures_dir: Path) -> None:
    g = opened(copy_dir)
    probe = fixtures_dir / "two_people.jpg"
    before = _results(g.identify("flip", probe))
    assert sorted(r[0][0] for r in before) == ["biden", "obama"]
    old = g.store.master
    key_file = copy_dir / "master.key"
    old_text = key_file.read_text()

    new_id = g.rotate_master_key()

    assert new_id == g.store.master.id != old.id
    assert key_file.read_text() != old_text
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert sorted(p.name for p in copy_dir.iterdir() if p.name.startswith("master.key")) == [
        "master.key"]
    assert _results(g.identify("flip", probe)) == before
    with g.store.sessions() as s:
        subjects = list(s.scalars(sa.select(Subject)))
    assert len(subjects) == 4
    for subject in subjects:
        assert subject.key_id == new_id
        g.store.master.unwrap(subject.wrapped_key, subject.id)
        with pytest.raises(MasterKeyError):
            old.unwrap(subject.wrapped_key, subject.id)

    reopened = opened(copy_dir)
    assert reopened.store.master.id == new_id
    # flip's index (in memory at the rotation) was re-sealed under the new key, not rebuilt.
    assert index_file_ids(reopened, "flip") == db_index_ids(reopened, "flip")
    assert _results(reopened.identify("flip", probe)) == before


def test_rotation_leaves_no_index_file_under_the_old_key(opened: Callable[..., Galleries],
                                                         copy_dir: Path) -> None:
    g = opened(copy_dir)  # nothing loaded yet: a fresh process running `facelens keys rotate`
    old = g.store.master
    g.rotate_master_key()
    readable_with_old = []
    for gallery in GALLERIES:
        gid = g.gallery(gallery).id
        if index_store.load(g.cache.index_dir, gid, old.derive("index"),
                            EMBEDDER_DIMS[GALLERIES[gallery]]):
            readable_with_old.append(gallery)
    assert readable_with_old == []


def test_crash_before_rewrap_keeps_the_old_key(opened: Callable[..., Galleries], copy_dir: Path,
                                               fixtures_dir: Path) -> None:
    key_file, pending = copy_dir / "master.key", copy_dir / "master.key.next"
    old_text = key_file.read_text()
    write_key_file(pending, new_data_key())  # the rotation died right after writing .next

    g = opened(copy_dir)
    assert not pending.exists()
    assert key_file.read_text() == old_text
    (face,) = g.identify("flip", fixtures_dir / "obama2.jpg")
    assert names(face) == ["obama"]


def test_crash_after_rewrap_adopts_the_new_key(opened: Callable[..., Galleries], copy_dir: Path,
                                               fixtures_dir: Path) -> None:
    key_file, pending = copy_dir / "master.key", copy_dir / "master.key.next"
    g = opened(copy_dir)
    old = g.store.master
    new = MasterKey(new_data_key(), str(key_file))
    write_key_file(pending, new.key)
    with g.store.sessions.begin() as s:  # the database was re-wrapped; the rename never happened
        for subject in s.scalars(sa.select(Subject)):
            subject.wrapped_key = new.wrap(old.unwrap(subject.wrapped_key, subject.id),
                                           subject.id)
            subject.key_id = new.id
    g.store.close()

    g = opened(copy_dir)
    assert not pending.exists()
    assert g.store.master.id == new.id
    assert base64.b64decode(key_file.read_text().strip()) == new.key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    (face,) = g.identify("flip", fixtures_dir / "obama2.jpg")
    assert names(face) == ["obama"]
    assert index_file_ids(g, "flip") == db_index_ids(g, "flip")


def test_wrong_master_key_is_refused_at_open_and_changes_nothing(
        opened: Callable[..., Galleries], copy_dir: Path, fixtures_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    before = snapshot(copy_dir)
    monkeypatch.setenv(ENV_KEY, base64.b64encode(new_data_key()).decode())
    with pytest.raises(MasterKeyError) as caught:  # checked at open: nothing can be enrolled
        open_galleries(copy_dir)
    assert "does not match" in str(caught.value) and "\n" not in str(caught.value)
    assert snapshot(copy_dir) == before
    monkeypatch.delenv(ENV_KEY)
    (face,) = opened(copy_dir).identify("flip", fixtures_dir / "obama2.jpg")
    assert names(face) == ["obama"]


def test_missing_key_file_for_existing_data_is_refused(copy_dir: Path) -> None:
    (copy_dir / "master.key").unlink()
    with pytest.raises(MasterKeyError):
        open_galleries(copy_dir).store.close()
    assert not (copy_dir / "master.key").exists()


def _store_with_a_plate(data_dir: Path) -> MasterKey:
    """A data directory holding no subject, only a plate hotlist entry; its master key."""
    store = Store(Settings(data_dir=data_dir))
    HotlistStore(store).add_plate("7ABC123", "stolen", datetime.now(UTC) + timedelta(days=1),
                                  "test")
    key = store.master
    store.close()
    return key


def test_a_store_holding_only_hotlist_entries_refuses_a_lost_or_wrong_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The entries' data keys (their alerts' crops) are wrapped with the master key too: a
    deleted key file is not silently replaced by a new one, nor a wrong key taken."""
    data_dir = tmp_path / "data"
    key = _store_with_a_plate(data_dir)
    monkeypatch.setenv(ENV_KEY, base64.b64encode(new_data_key()).decode())
    with pytest.raises(MasterKeyError, match="does not match"):
        Store(Settings(data_dir=data_dir))
    monkeypatch.delenv(ENV_KEY)
    (data_dir / "master.key").unlink()
    with pytest.raises(MasterKeyError):
        Store(Settings(data_dir=data_dir))
    assert not (data_dir / "master.key").exists()
    write_key_file(data_dir / "master.key", key.key)
    Store(Settings(data_dir=data_dir)).close()


def test_a_rotation_that_crashed_after_rewrapping_hotlist_entries_keeps_their_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No subject, one plate entry: the database was re-wrapped, the new key file never
    renamed into place. Opening adopts the new key (the entry's data key still unwraps)."""
    data_dir = tmp_path / "data"
    _store_with_a_plate(data_dir)
    store = Store(Settings(data_dir=data_dir))
    rename = os.replace

    def crash_before_the_last_rename(source: Path, target: Path) -> None:
        if Path(target).name == "master.key":
            raise OSError("crash")
        rename(source, target)

    monkeypatch.setattr(os, "replace", crash_before_the_last_rename)
    with pytest.raises(OSError, match="crash"):
        store.rotate_master_key()
    store.close()
    monkeypatch.undo()
    assert (data_dir / "master.key.next").exists()
    reopened = Store(Settings(data_dir=data_dir))
    assert not (data_dir / "master.key.next").exists()
    with reopened.sessions() as s:
        entry = s.scalars(sa.select(PlateHotlistEntry)).one()
    reopened.master.unwrap(entry.wrapped_key, f"plate:{entry.id}")
    reopened.close()


# --------------------------------------------------------------------------- key file mode
@pytest.mark.parametrize("mode", [0o644, 0o640])
def test_readable_key_file_is_refused(tmp_path: Path, mode: int) -> None:
    data_dir = tmp_path / "data"
    key_file = data_dir / "master.key"
    write_key_file(key_file, new_data_key())
    key_file.chmod(mode)
    with pytest.raises(MasterKeyError) as caught:
        open_galleries(data_dir)
    message = str(caught.value)
    assert "\n" not in message
    assert f"chmod 600 {key_file}" in message and f"{mode:o}" in message
    assert stat.S_IMODE(key_file.stat().st_mode) == mode  # refused, not silently "fixed"


# --------------------------------------------------------------------------- migrations
def _database_at_0004(url: str, data_dir: Path) -> None:
    """A database as revision 0004 left it, with its master key file: one gallery keeping
    crops, one subject, its template with a crop, and a deleted template whose id must never
    come back."""
    key = MasterKey(new_data_key(), str(data_dir / "master.key"))
    write_key_file(data_dir / "master.key", key.key)
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = connection
        command.upgrade(config, "0004")
        connection.execute(sa.text(
            "INSERT INTO galleries (id, name, purpose, embedder, retention_days, keep_crops, "
            "created_at, version) VALUES (1, 'door', 'staff-door', 'sface', 30, true, "
            "'2025-01-01', 3)"))
        connection.execute(sa.text(
            "INSERT INTO subjects (id, gallery_id, display_name, attributes, wrapped_key, "
            "key_id, created_at, last_seen_at) VALUES ('s1', 1, 'obama', '{}', :wrapped, :key, "
            "'2025-01-01', '2025-01-01')"),
            {"wrapped": key.wrap(new_data_key(), "s1"), "key": key.id})
        for template_id in (7, 8):
            connection.execute(sa.text(
                "INSERT INTO templates (id, subject_id, embedder, quality, vector, crop, "
                "created_at) VALUES (:id, 's1', 'sface', 0.9, :blob, :blob, '2025-01-01')"),
                {"id": template_id, "blob": b"sealed"})
        connection.execute(sa.text("DELETE FROM templates WHERE id = 8"))
    engine.dispose()


def _check_upgraded(store: Store) -> int:
    """Assert the columns went and the rows stayed; returns the id a new template gets."""
    columns = sa.inspect(store.database)
    assert "keep_crops" not in {c["name"] for c in columns.get_columns("galleries")}
    assert "crop" not in {c["name"] for c in columns.get_columns("templates")}
    with store.sessions.begin() as s:  # the rows survive: no cascade emptied a table
        assert s.scalar(sa.select(sa.func.count(Subject.id))) == 1
        assert list(s.scalars(sa.select(Template.id))) == [7]
        assert s.scalar(sa.select(Gallery.version).where(Gallery.id == 1)) == 3
        template = Template(subject_id="s1", embedder="sface", quality=0.9, vector=b"sealed")
        s.add(template)
    return template.id


def test_migration_drops_the_crop_columns_on_sqlite(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    _database_at_0004(f"sqlite:///{data_dir / 'facelens.db'}", data_dir)
    store = Store(Settings(data_dir=data_dir))
    try:
        assert _check_upgraded(store) > 8  # AUTOINCREMENT's counter survives: no id reused
    finally:
        store.close()


def test_migration_drops_the_crop_columns_on_postgres(postgres: Any, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    _database_at_0004(postgres.url, data_dir)
    store = Store(Settings(data_dir=data_dir, database_url=postgres.url))
    try:
        _check_upgraded(store)
    finally:
        store.close()
