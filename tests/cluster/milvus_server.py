"""A throwaway Milvus standalone server (PyPI `milvus==2.3.5`, requirements/cluster.txt) in a
temp dir, on free ports, for the integration tests: start it, wait until it answers, stop it."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COMPONENTS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord",
              "dataNode")
STARTUP_TIMEOUT_S = 120  # ready in 7-15 s alone; much longer when other jobs hold the cores


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class RunningMilvus:
    uri: str
    ready_s: float
    """seconds from launch until it answered"""
    server: Any

    def stop(self) -> None:
        self.server.stop()


def start_milvus(base: Path, **extra: object) -> RunningMilvus:
    """A server whose files all live under `base`; `extra` are dotted milvus.yaml keys (e.g.
    `queryNode.enableDisk=True`). Raises RuntimeError with the reason and the log's tail when
    it cannot start."""
    from milvus import MilvusServer, MilvusServerConfig  # why lazy: an optional dependency

    config = MilvusServerConfig()
    server: Any = MilvusServer(config, wait_for_started=False)
    server.set_base_dir(str(base))
    # The embedded etcd listens on 2379/2380 whatever `etcd.endpoints` says, so a second
    # server on the host would fail: its own etcd config gives it free ports.
    client, peer = _free_port(), _free_port()
    etcd = base / "configs" / "embed-etcd.yaml"
    etcd.write_text(f"listen-client-urls: http://127.0.0.1:{client}\n"
                    f"advertise-client-urls: http://127.0.0.1:{client}\n"
                    f"listen-peer-urls: http://127.0.0.1:{peer}\n"
                    f"initial-advertise-peer-urls: http://127.0.0.1:{peer}\n"
                    f"initial-cluster: default=http://127.0.0.1:{peer}\n"
                    f"data-dir: {base / 'data' / 'etcd.data'}\n")
    config.template_text = config.template_text.replace(
        "  rootPath: by-dev", f"  config:\n    path: {etcd}\n  rootPath: by-dev", 1)
    config.update(etcd_port=client)
    # every component advertises loopback, so nothing resolves the host's outward address
    # (the binary still listens on every interface for its gRPC ports: 2.3.5 has no bind key)
    for component in COMPONENTS:
        config.set(f"{component}.ip", "127.0.0.1")
    for key, value in extra.items():
        config.set(key, str(value).lower() if isinstance(value, bool) else value)
    started = time.perf_counter()
    try:
        server.start()
        server.wait_started(timeout=STARTUP_TIMEOUT_S * 1000)
    except Exception as e:
        server.stop()
        log = base / "logs" / "milvus-stderr.log"
        tail = log.read_text(errors="replace")[-600:] if log.exists() else ""
        raise RuntimeError(f"{type(e).__name__}: {e} {tail}".strip()) from e
    return RunningMilvus(f"http://127.0.0.1:{server.listen_port}",
                         time.perf_counter() - started, server)
