"""Fixtures of the cluster tests: the servers they need, started here or skipped with the reason."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator

import pytest
from milvus_server import start_milvus


@pytest.fixture(scope="session")
def milvus_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URI of a Milvus 2.3.5 standalone server started once per session in a temp dir."""
    pytest.importorskip("milvus", reason="the Milvus server package (requirements/cluster.txt) "
                        "is not installed")
    pytest.importorskip("pymilvus", reason="pymilvus (requirements/index.txt) is not installed")
    try:
        # a 50 ms time tick: Strong searches and id lookups wait ~0.1 s instead of ~0.22
        server = start_milvus(tmp_path_factory.mktemp("milvus"),
                              **{"proxy.timeTickInterval": 50})
    except RuntimeError as e:
        pytest.skip(f"the Milvus standalone server cannot start here: {e}")
    print(f"\nMilvus standalone ready at {server.uri} in {server.ready_s:.1f} s", file=sys.stderr)
    try:
        yield server.uri
    finally:
        server.stop()


@pytest.fixture
def database_uri(milvus_uri: str) -> Iterator[str]:
    """A fresh Milvus database of the session's server (the URI's path names it), dropped
    after: tests never see each other's collections."""
    from pymilvus import MilvusClient

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = MilvusClient(milvus_uri)
    admin.create_database(name)
    yield f"{milvus_uri}/{name}"
    inside = MilvusClient(f"{milvus_uri}/{name}")
    for collection in inside.list_collections():
        inside.drop_collection(collection)
    inside.close()
    admin.drop_database(name)
    admin.close()
