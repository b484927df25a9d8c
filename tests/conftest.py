"""Shared fixtures: paths to the fixture photos and ../shared/data, one detection per photo per
session, and an environment in which no test reads a developer's config or writes outside tmp."""

from __future__ import annotations

import copy
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
SHARED_DATA = REPO.parent / "shared" / "data"
PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session", autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Default settings, no user config, caches in tmp; inherited by CLI subprocesses too."""
    home = tmp_path_factory.mktemp("env")
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith("FACELENS_"):
                mp.delenv(key)
        mp.setenv("FACELENS_CONFIG", str(home / "absent-facelens.toml"))  # never ./facelens.toml
        mp.setenv("FACELENS_DATA_DIR", str(home / "data"))
        mp.setenv("MPLCONFIGDIR", str(home / "matplotlib"))
        mp.setenv("XDG_CACHE_HOME", str(home / "cache"))
        mp.setenv("PYTHONDONTWRITEBYTECODE", "1")
        from facelens.settings import get_settings

        get_settings.cache_clear()
        yield home
        get_settings.cache_clear()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data next to the repository; skips the test when it is absent (fresh clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"../shared/data is absent: {SHARED_DATA} not found (only the team's "
                    "checkout has it; core tests use tests/fixtures)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def lfw_open_set_photos(shared_data: Path) -> Callable[[int, int], list[Path]]:
    """lfw_open_set_photos(people, singles) -> 3 photos each of the first `people` lfw-dev
    people with 3+ images, then the photos of the first `singles` single-image people (name
    order): mated and non-mated searches for open-set 1:N. Skips when lfw-dev is absent."""
    images = shared_data / "lfw-dev" / "images"
    if not images.is_dir():
        pytest.skip(f"../shared/data is absent: {images} not found")

    def photos(people: int, singles: int) -> list[Path]:
        multi: list[Path] = []
        single: list[Path] = []
        for person in sorted(p for p in images.iterdir() if p.is_dir()):
            files = sorted(person.glob("*.jpg"))
            if len(files) >= 3 and len(multi) < 3 * people:
                multi.extend(files[:3])
            elif len(files) == 1 and len(single) < singles:
                single.extend(files)
            if len(multi) >= 3 * people and len(single) >= singles:
                break
        return multi + single

    return photos


@pytest.fixture(scope="session")
def load_rgb(fixtures_dir: Path) -> Callable[[str], np.ndarray]:
    """load_rgb("obama.jpg") -> the decoded RGB array (decoded once per session, read-only)."""
    from facelens.vision.decode import load_image

    cache: dict[str, np.ndarray] = {}

    def load(name: str) -> np.ndarray:
        if name not in cache:
            rgb = load_image(fixtures_dir / name)
            rgb.flags.writeable = False
            cache[name] = rgb
        return cache[name]

    return load


@pytest.fixture(scope="session")
def engine(isolated_env: Path) -> Any:
    """An engine under the test environment's default settings, shared by the session."""
    from facelens.api import Engine
    from facelens.settings import Settings

    return Engine(Settings())


@pytest.fixture(scope="session")
def _detections(load_rgb: Callable[[str], np.ndarray]) -> dict[tuple[str, str], list]:
    return {}


@pytest.fixture
def detected(load_rgb: Callable[[str], np.ndarray], _detections: dict[tuple[str, str], list]
             ) -> Callable[..., list]:
    """detected("two_people.jpg", detector="yunet") -> faces with quality, detected once per
    session; each call returns fresh copies, so a test may fill embeddings without leaking."""
    import facelens

    def get(name: str, detector: str = "yunet") -> list:
        key = (name, detector)
        if key not in _detections:
            _detections[key] = facelens.detect(load_rgb(name), detector=detector)
        return copy.deepcopy(_detections[key])

    return get


@dataclass(frozen=True)
class Postgres:
    url: str
    schema: str
    admin: sa.Engine


@pytest.fixture
def postgres() -> Iterator[Postgres]:
    """A fresh schema in the `test` database, dropped afterwards; skips if PostgreSQL is down."""
    try:
        admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT",
                                 connect_args={"connect_timeout": 3})
        with admin.connect() as c:
            c.exec_driver_sql("SELECT 1")
    except (sa.exc.OperationalError, ImportError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        pytest.skip(f"PostgreSQL unreachable at 127.0.0.1:5432 (user postgres, db test): {reason}")
    schema = f"facelens_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield Postgres(f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}", schema, admin)
    finally:
        with admin.connect() as c:
            c.exec_driver_sql("SET lock_timeout = '10s'")
            c.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture
def scoped_service(tmp_path: Path) -> Iterator[tuple[Any, Any, dict[str, str]]]:
    """The service in this process on a fresh data dir (rate limits out of the way): its test
    client, its state, and an Authorization value per scope (admin, enrol, identify)."""
    from fastapi.testclient import TestClient

    from facelens.service.app import create_app
    from facelens.settings import Settings

    app = create_app(Settings(data_dir=tmp_path / "data", rate_burst=10_000,
                              rate_per_minute=1e6))
    with TestClient(app) as client:
        state = app.state.facelens
        keys = {scope: state.keys.create(scope, [scope])[1]
                for scope in ("admin", "enrol", "identify")}
        yield client, state, {k: f"Bearer {v}" for k, v in keys.items()}
