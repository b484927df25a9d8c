"""Fixtures of the gallery tests: galleries closed at teardown, and one data directory enrolled
once per session (enrolling costs ~0.3-2 s a face) that tests copy before they change it."""

from __future__ import annotations

import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from gallery_helpers import (
    CONSENT,
    GALLERIES,
    PEOPLE,
    Enrolled,
    open_galleries,
)

from facelens.gallery.service import Galleries


@pytest.fixture
def opened() -> Iterator[Callable[..., Galleries]]:
    """opened(data_dir, **settings) -> Galleries; every store is closed at teardown."""
    made: list[Galleries] = []

    def open_(data_dir: Path, **settings: object) -> Galleries:
        g = open_galleries(data_dir, **settings)
        made.append(g)
        return g

    yield open_
    for g in made:
        g.store.close()


@pytest.fixture(scope="session")
def enrolled(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> Enrolled:
    """obama and biden enrolled into a "fusion" and a "flip" (sface-flip) gallery, once."""
    data_dir = tmp_path_factory.mktemp("enrolled") / "data"
    g = open_galleries(data_dir)
    ids = {}
    try:
        for gallery, embedder in GALLERIES.items():
            g.create_gallery(gallery, "staff-door", embedder=embedder)
            for person, image in PEOPLE.items():
                report = g.enroll(gallery, person, [fixtures_dir / image], consent=CONSENT)
                assert report.templates == 1 and not report.skipped, report
                ids[gallery, person] = report.subject_id
    finally:
        g.store.close()
    return Enrolled(data_dir, ids)


@pytest.fixture
def copy_dir(enrolled: Enrolled, tmp_path: Path) -> Path:
    """A private copy of the enrolled data directory (key file mode preserved)."""
    target = tmp_path / "data"
    shutil.copytree(enrolled.data_dir, target)
    assert stat.S_IMODE((target / "master.key").stat().st_mode) == 0o600
    return target
