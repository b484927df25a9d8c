"""The gallery commands as users run them (subprocesses with FACELENS_DATA_DIR set): create a
gallery, enrol ../shared/data/people/knn/train one folder per person, identify every photo of
knn/test, list/show/remove/purge, rotate the key; exit codes and one-line errors.

The knn enrolment (default "fusion" embedder, ~10 s) runs once per module; tests that change
the gallery work on a copy of its data directory.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import sqlite3
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

CLI = Path(sys.executable).with_name("facelens")
PEOPLE = ["alex_lacamoire", "biden", "kit_harington", "obama", "rose_leslie"]


def facelens(*args: object, data_dir: Path, cwd: Path | None = None,
             master_key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["FACELENS_DATA_DIR"] = str(data_dir)
    env.pop("FACELENS_MASTER_KEY", None)
    if master_key:
        env["FACELENS_MASTER_KEY"] = master_key
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    run = subprocess.run([str(CLI), *map(str, args)], cwd=cwd or data_dir, env=env,
                         capture_output=True, text=True, timeout=300)
    assert "Traceback" not in run.stderr, run.stderr
    return run


def as_json(run: subprocess.CompletedProcess[str]) -> Any:
    try:
        return json.loads(run.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"not JSON (exit {run.returncode}): {run.stdout!r} {run.stderr!r}")


def one_line_error(run: subprocess.CompletedProcess[str]) -> str:
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, f"stderr is not one line: {run.stderr!r}"
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


def subjects_in_db(data_dir: Path) -> dict[str, str]:
    """display name -> subject id, read straight from the SQLite file."""
    with sqlite3.connect(data_dir / "facelens.db") as db:
        return dict(db.execute("SELECT display_name, id FROM subjects"))


@dataclass(frozen=True)
class Knn:
    data_dir: Path
    test_dir: Path
    enrolled: dict[str, Any]


@pytest.fixture(scope="module")
def knn(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Knn:
    train, test = shared_data / "people" / "knn" / "train", shared_data / "people" / "knn" / "test"
    if not train.is_dir() or not test.is_dir():
        pytest.skip(f"{train} or {test} is absent")
    data_dir = tmp_path_factory.mktemp("knn")
    created = facelens("gallery", "create", "G", "--purpose", "staff-door", data_dir=data_dir)
    assert created.returncode == 0, created.stderr
    assert "created gallery G (staff-door, fusion)" in created.stdout
    run = facelens("enroll-folder", "G", train, "--recorded-by", "test-suite", "--json",
                   data_dir=data_dir)
    assert run.returncode == 0, run.stderr
    return Knn(data_dir, test, as_json(run))


@pytest.fixture
def knn_copy(knn: Knn, tmp_path: Path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(knn.data_dir, target)
    return target


def test_enroll_folder_enrols_one_subject_per_sub_folder(knn: Knn) -> None:
    enrolled = {e["name"]: e["templates"] for e in knn.enrolled["enrolled"]}
    assert enrolled == {"alex_lacamoire": 1, "biden": 2, "kit_harington": 2, "obama": 2,
                        "rose_leslie": 2}
    assert knn.enrolled["skipped"] == []
    assert stat.S_IMODE((knn.data_dir / "master.key").stat().st_mode) == 0o600


@pytest.mark.parametrize("image, expected", [
    ("alex_lacamoire1.jpg", ["alex_lacamoire"]),
    ("johnsnow_test1.jpg", ["kit_harington"]),
    ("kit_with_rose.jpg", ["kit_harington", "rose_leslie"]),
    ("obama1.jpg", ["obama"]),
    ("obama_and_biden.jpg", ["biden", "obama"]),
])
def test_identify_knn_test_photos(knn: Knn, image: str, expected: list[str]) -> None:
    run = facelens("identify", "G", knn.test_dir / image, "--json", data_dir=knn.data_dir)
    assert run.returncode == 0, run.stderr
    faces = as_json(run)["faces"]
    named = sorted(f["result"] for f in faces if f["result"] != "unknown")
    assert named == expected, faces
    for f in faces:
        if f["result"] == "unknown":
            assert f["candidates"] == []
        else:
            assert f["candidates"][0]["name"] == f["result"]
            assert len({c["name"] for c in f["candidates"]}) == len(f["candidates"])
        assert "FPIR 0.001" in f["decision"] and "threshold" in f["decision"]
    if image == "obama_and_biden.jpg":  # two more faces: turned away, and tiny
        assert len(faces) == 4
        assert sum(f["result"] == "unknown" for f in faces) == 2


def test_enroll_without_recorded_by_is_refused(knn_copy: Path, fixtures_dir: Path) -> None:
    before = subjects_in_db(knn_copy)
    run = facelens("enroll", "G", "newcomer", fixtures_dir / "obama2.jpg", data_dir=knn_copy)
    assert run.returncode == 2
    assert "recorded" in one_line_error(run)
    run = facelens("enroll", "G", "newcomer", fixtures_dir / "obama2.jpg", "--recorded-by",
                   "test-suite", "--consent", "whim", data_dir=knn_copy)
    assert run.returncode == 2
    assert "legal basis" in one_line_error(run)
    assert subjects_in_db(knn_copy) == before


def test_enroll_folder_refuses_a_bad_consent_at_once_and_fails_on_a_person_it_skips(
        tmp_path: Path, fixtures_dir: Path) -> None:
    """Without --recorded-by nobody is tried (exit 2, not "enrolled 0 of 2" and exit 0); a
    sub-folder whose photos hold no face is reported while the others are enrolled, exit 1."""
    data_dir, people = tmp_path / "data", tmp_path / "people"
    data_dir.mkdir()
    created = facelens("gallery", "create", "G", "--purpose", "staff-door", data_dir=data_dir)
    assert created.returncode == 0, created.stderr
    (people / "obama").mkdir(parents=True)
    shutil.copy(fixtures_dir / "obama.jpg", people / "obama")
    (people / "nobody").mkdir()
    Image.new("RGB", (320, 240), (128, 128, 128)).save(people / "nobody" / "grey.jpg")
    run = facelens("enroll-folder", "G", people, data_dir=data_dir)
    assert run.returncode == 2
    assert "recorded" in one_line_error(run)
    assert subjects_in_db(data_dir) == {}
    run = facelens("enroll-folder", "G", people, "--recorded-by", "test-suite", "--json",
                   data_dir=data_dir)
    assert run.returncode == 1, run.stderr
    report = as_json(run)
    assert [e["name"] for e in report["enrolled"]] == ["obama"]
    assert [s["image"] for s in report["skipped"]] == [str(people / "nobody")]
    assert "no face found" in report["skipped"][0]["reason"]
    assert list(subjects_in_db(data_dir)) == ["obama"]


def test_gallery_list_and_show_json(knn: Knn) -> None:
    listed = facelens("gallery", "list", "--json", data_dir=knn.data_dir)
    assert listed.returncode == 0, listed.stderr
    assert as_json(listed) == [{"name": "G", "purpose": "staff-door", "embedder": "fusion",
                                "subjects": 5}]
    shown = facelens("gallery", "show", "G", "--json", data_dir=knn.data_dir)
    assert shown.returncode == 0, shown.stderr
    rows = as_json(shown)
    assert [r["name"] for r in rows] == PEOPLE
    ids = {e["name"]: e["subject_id"] for e in knn.enrolled["enrolled"]}
    for r in rows:
        assert r["id"] == ids[r["name"]]
        assert r["templates"] == (1 if r["name"] == "alex_lacamoire" else 2)
        assert r["legal_basis"] == "consent" and r["consent_expires"] == "never"
        assert r["watch_expires"] == ""


def test_rotate_remove_purge(knn_copy: Path, knn: Knn) -> None:
    key_file = knn_copy / "master.key"
    old_key = key_file.read_text()
    rotated = facelens("keys", "rotate", data_dir=knn_copy)
    assert rotated.returncode == 0, rotated.stderr
    assert "master key rotated" in rotated.stdout
    assert key_file.read_text() != old_key
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert not (knn_copy / "master.key.next").exists()

    ids = subjects_in_db(knn_copy)
    removed = facelens("gallery", "remove", "G", "--subject", ids["alex_lacamoire"],
                       data_dir=knn_copy)
    assert removed.returncode == 0, removed.stderr
    assert ids["alex_lacamoire"] in removed.stderr
    assert "alex_lacamoire" not in subjects_in_db(knn_copy)

    # alex is no longer enrolled: his photo names no one (exit 1); decrypting after the
    # rotation works.
    unknown = facelens("identify", "G", knn.test_dir / "alex_lacamoire1.jpg", "--json",
                       data_dir=knn_copy)
    assert unknown.returncode == 1, unknown.stderr
    faces = as_json(unknown)["faces"]
    assert faces and all(f["result"] == "unknown" for f in faces)

    with sqlite3.connect(knn_copy / "facelens.db") as db:  # biden was last seen long ago
        db.execute("UPDATE subjects SET last_seen_at = '2000-01-01 00:00:00.000000' "
                   "WHERE id = ?", (ids["biden"],))
    purged = facelens("gallery", "purge", "--json", data_dir=knn_copy)
    assert purged.returncode == 0, purged.stderr
    assert as_json(purged)["removed"] == [ids["biden"]]
    shown = facelens("gallery", "show", "G", "--json", data_dir=knn_copy)
    assert [r["name"] for r in as_json(shown)] == ["kit_harington", "obama", "rose_leslie"]


def test_remove_subject_checks_the_gallery(knn_copy: Path) -> None:
    ids = subjects_in_db(knn_copy)
    run = facelens("gallery", "remove", "no-such-gallery", "--subject", ids["obama"],
                   data_dir=knn_copy)
    assert run.returncode == 2
    assert "obama" in subjects_in_db(knn_copy)


def test_readable_key_file_is_refused(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    key_file = data_dir / "master.key"
    key_file.write_text(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    key_file.chmod(0o644)
    run = facelens("gallery", "list", data_dir=data_dir, cwd=tmp_path)
    assert run.returncode == 2
    assert "chmod 600" in one_line_error(run)


def test_wrong_master_key_is_one_line_and_changes_nothing(knn_copy: Path, knn: Knn) -> None:
    def files() -> dict[str, bytes]:
        return {str(p): p.read_bytes() for p in knn_copy.rglob("*")
                if p.is_file() and not p.name.endswith("-shm")}

    before = files()
    run = facelens("identify", "G", knn.test_dir / "obama1.jpg", data_dir=knn_copy,
                   master_key=base64.b64encode(secrets.token_bytes(32)).decode())
    assert run.returncode == 2
    assert "wrong master key" in one_line_error(run)
    assert files() == before
