"""1:1 checks where an image shows several people: the source's largest face against every face
of the target (Rekognition's CompareFaces), in Python, on the command line and over REST
(tests/test_service.py); against an enrolled subject the claimant is the largest face."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
from gallery_helpers import CONSENT, names

from facelens.face import Face
from facelens.gallery.service import Galleries

CLI = Path(sys.executable).with_name("facelens")


def _centre_x(face: Face) -> float:
    return float(face.box[0] + face.box[2]) / 2


def test_compare_answers_for_every_face_of_the_target(engine: Any, fixtures_dir: Path) -> None:
    group = fixtures_dir / "obama_and_biden.jpg"
    comparison = engine.compare(fixtures_dir / "biden.jpg", group)
    assert len(comparison.verdicts) >= 2
    (match,) = comparison.matches
    assert len(comparison.unmatched) == len(comparison.verdicts) - 1
    # biden stands left of obama in the photo, and obama is the larger face
    obama = max(comparison.unmatched, key=lambda f: f.width * f.height)
    assert isinstance(obama, Face) and _centre_x(match.faces[1]) < _centre_x(obama)

    verdict = engine.verify(fixtures_dir / "biden.jpg", group)  # was "not the same person"
    assert verdict.match and np.array_equal(verdict.faces[1].box, match.faces[1].box)
    assert verdict.note.startswith(f"second image: {len(comparison.verdicts)} faces, the best")
    single = engine.verify(fixtures_dir / "obama.jpg", fixtures_dir / "obama2.jpg")
    assert single.match and single.note == "" and "note" not in single.to_dict()
    reversed_ = engine.verify(group, fixtures_dir / "obama2.jpg")
    assert reversed_.match and reversed_.note.startswith("first image: ")


def test_cli_verify_lists_each_face_of_b(repo_root: Path, fixtures_dir: Path) -> None:
    run = subprocess.run([str(CLI), "verify", str(fixtures_dir / "biden.jpg"),
                          str(fixtures_dir / "obama_and_biden.jpg"), "--json"],
                         cwd=repo_root, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["match"] and [f["match"] for f in out["faces_of_b"]].count(True) == 1
    assert all(len(f["faces"][1]["box"]) == 4 for f in out["faces_of_b"])


def test_a_subject_is_verified_against_the_largest_face_only(
        opened: Any, tmp_path: Path, fixtures_dir: Path) -> None:
    g: Galleries = opened(tmp_path / "data")
    g.create_gallery("door", "staff-door", embedder="sface-flip")
    biden = g.enroll("door", "biden", [fixtures_dir / "biden.jpg"], consent=CONSENT)
    reference = g.subject_reference(biden.subject_id)
    group = fixtures_dir / "obama_and_biden.jpg"
    # biden is in the picture, but the claimant (the largest face) is obama
    assert not g.engine.verify(group, reference, embedder="sface-flip").match
    assert sorted(n for r in g.identify("door", group) for n in names(r)) == ["biden"]
