"""What keeping a replica's index current costs, on PostgreSQL and NATS (not a test).

Two index caches (two replicas) on one fresh PostgreSQL database: a gallery of N subjects with
one sealed random template each; the writer commits one enrolment at a time and announces it,
and the reader's next use is timed (the wait for the announcement plus reading and decrypting
that one subject) against what a gap costs (the whole index built from decrypted templates).

    nice .venv/bin/python tests/cluster/replica_cost.py --sizes 1000 10000 --changes 30
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import secrets
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from facelens.gallery.index_cache import IndexCache
from facelens.gallery.templates import bump_version, seal_vector
from facelens.settings import Settings
from facelens.store.crypto import new_data_key
from facelens.store.database import Store
from facelens.store.tables import Consent, Gallery, Subject, Template

PG_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"


def enrol(store: Store, gallery: Gallery, vectors: np.ndarray) -> tuple[list[int], int]:
    """Subjects with one template each, in one transaction; (their index ids, new version)."""
    with store.sessions.begin() as s:
        subjects = []
        for vector in vectors:
            subject_id, data_key = str(uuid.uuid4()), new_data_key()
            subject = Subject(id=subject_id, gallery_id=gallery.id, display_name="x",
                              attributes={}, wrapped_key=store.master.wrap(data_key, subject_id),
                              key_id=store.master.id)
            subject.consents.append(Consent(purpose="bench", legal_basis="consent",
                                            recorded_by="bench"))
            subject.templates.append(Template(embedder=gallery.embedder, quality=1.0, vector=(
                seal_vector(data_key, vector, "template", subject_id))))
            subjects.append(subject)
        s.add_all(subjects)
        version = bump_version(s, gallery.id)
        s.flush()
        return [subject.templates[0].id for subject in subjects], version


def measure(size: int, changes: int, nats_url: str, root: Path) -> dict[str, float]:
    admin = sa.create_engine(f"{PG_SERVER}/test", isolation_level="AUTOCOMMIT")
    database = f"facelens_bench_{uuid.uuid4().hex[:12]}"
    with admin.connect() as c:
        c.exec_driver_sql(f'CREATE DATABASE "{database}"')
    try:
        common = {"database_url": f"{PG_SERVER}/{database}", "nats_url": nats_url,
                  "nats_prefix": f"bench{uuid.uuid4().hex[:8]}", "embedder": "fusion"}
        writer_settings = Settings(data_dir=root / f"w{size}", **common)
        reader_settings = Settings(data_dir=root / f"r{size}", **common)
        writer_store, reader_store = Store(writer_settings), Store(reader_settings)
        writer = IndexCache(writer_settings, writer_store)
        reader = IndexCache(reader_settings, reader_store)
        with writer_store.sessions.begin() as s:
            gallery = Gallery(name="bench", purpose="bench", embedder="fusion")
            s.add(gallery)
        rng = np.random.default_rng(0)

        def unit(n: int) -> np.ndarray:
            v = rng.standard_normal((n, 256)).astype(np.float32)
            return v / np.linalg.norm(v, axis=1, keepdims=True)

        enrol(writer_store, gallery, unit(size))
        start = time.perf_counter()
        reader.checked(gallery)
        build_ms = 1e3 * (time.perf_counter() - start)
        writer.checked(gallery)
        delta_ms = []
        for _ in range(changes):
            vector = unit(1)
            ids, version = enrol(writer_store, gallery, vector)
            writer.added(gallery, version, np.array(ids, np.int64), vector)  # announces
            start = time.perf_counter()
            _, current = reader.checked(gallery)
            delta_ms.append(1e3 * (time.perf_counter() - start))
            assert current == version
        assert reader.stats.builds == 1 and reader.stats.gaps == 0
        for cache, store in ((writer, writer_store), (reader, reader_store)):
            cache.close()
            store.close()
        return {"faces": size, "build_ms": round(build_ms, 1),
                "next_use_after_announced_change_ms_median": round(statistics.median(
                    delta_ms), 2),
                "next_use_after_announced_change_ms_max": round(max(delta_ms), 2)}
    finally:
        with admin.connect() as c:
            c.exec_driver_sql(f'DROP DATABASE "{database}" WITH (FORCE)')
        admin.dispose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--changes", type=int, default=30)
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    args = parser.parse_args()
    os.environ["FACELENS_MASTER_KEY"] = base64.b64encode(secrets.token_bytes(32)).decode()
    with tempfile.TemporaryDirectory() as root:
        rows = [measure(size, args.changes, args.nats, Path(root)) for size in args.sizes]
    print(json.dumps({"cpu": platform.processor() or platform.machine(),
                      "load_1min": round(os.getloadavg()[0], 1), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
