"""The abuse suite's server: `facelens serve` in its own process (so RSS and connection resets
are real), a key per scope, and a gallery with one enrolled person to identify and verify
against."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from abuse_support import CONSENT, Target

from served import printed_key, start_server, stop


@pytest.fixture(scope="session")
def target(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path,
           isolated_env: Path) -> Iterator[Target]:
    root = tmp_path_factory.mktemp("abuse")
    # Rate limits out of the way: the suite counts answers, not 429s (the limits have tests).
    generous = {"FACELENS_RATE_PER_MINUTE": "1000000", "FACELENS_RATE_BURST": "100000",
                "FACELENS_PIXELS_PER_MINUTE_MP": "1000000", "FACELENS_PIXEL_BURST_MP": "100000",
                "FACELENS_PROBE_REPEATS": "1000000", "FACELENS_QUEUE": "64"}
    with pytest.MonkeyPatch.context() as mp:
        for name, value in generous.items():
            mp.setenv(name, value)
        server = start_server(root / "data", root)
    try:
        admin = printed_key(server)
        assert admin, "the first start prints an admin key"
        keys = {"admin": admin}
        with httpx.Client(base_url=server.url, timeout=120,
                          headers={"Authorization": f"Bearer {admin}"}) as c:
            for scope in ("detect", "identify", "verify", "events"):
                made = c.post("/v1/keys", json={"name": f"only-{scope}", "scopes": [scope]})
                assert made.status_code == 201, made.text
                keys[scope] = made.json()["key"]
            assert c.post("/v1/galleries", json={"name": "door", "purpose": "door"}
                          ).status_code == 201
            photo = (fixtures_dir / "obama.jpg").read_bytes()
            enrolled = c.post("/v1/galleries/door/subjects", data={"name": "obama", **CONSENT},
                              files=[("images", ("o.jpg", photo, "image/jpeg"))])
            assert enrolled.status_code == 201, enrolled.text
        yield Target(server, keys, enrolled.json()["subject_id"], fixtures_dir)
    finally:
        stop(server)

