"""The scale-out bench's machinery: every job is done and acknowledged exactly once by worker
processes pulling from a JetStream work queue, and the USL fit recovers known parameters;
`facelens bench scaleout` given no gallery, too few people or no NATS says so in one line
before any model work."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from facelens.api import Engine
from facelens.cluster.bus import Bus
from facelens.eval.scaleout import best_shot_jobs, fit_usl, run_once, usl_throughput
from facelens.eval.scaleout_worker import WorkerPlan
from facelens.settings import Settings

NATS_URL = "nats://127.0.0.1:4222"


@pytest.fixture
def bus() -> Iterator[Bus]:
    try:
        socket.create_connection(("127.0.0.1", 4222), timeout=1).close()
    except OSError:
        pytest.skip("NATS JetStream is not reachable at 127.0.0.1:4222 (start nats-server -js)")
    connection = Bus(NATS_URL, name="test-scaleout")
    yield connection
    connection.close()


def _lfw_style(fixtures_dir: Path, root: Path) -> Path:
    """One person with two photos, as LFW lays them out: the first enrolled, the second a job."""
    person = root / "Barack_Obama"
    person.mkdir(parents=True)
    for name in ("obama.jpg", "obama2.jpg"):
        (person / name).symlink_to(fixtures_dir / name)
    return root


@pytest.mark.parametrize(("args", "said"), [
    ([], "error: the gallery comes from --lfw"),
    (["--lfw", "{lfw}/Barack_Obama/obama.jpg"], "is not a folder"),
    (["--lfw", "{lfw}", "--people", "2"], "1 people with 2+ photos; --people must be 1"),
    (["--lfw", "{lfw}", "--clip", "{lfw}/no.mp4"], "no.mp4: no such video file"),
    (["--lfw", "{lfw}", "--nats", "nats://facelens:s3cret@127.0.0.1:9"],
     "error: NATS at nats://127.0.0.1:9 is unreachable"),
])
def test_bench_scaleout_refuses_what_it_cannot_run_in_one_line(
        fixtures_dir: Path, tmp_path: Path, args: list[str], said: str) -> None:
    lfw = _lfw_style(fixtures_dir, tmp_path / "lfw")
    env = {**os.environ, "FACELENS_DATA_DIR": str(tmp_path / "data"),
           "FACELENS_NATS_URL": NATS_URL}
    if "--nats" in args:  # NATS comes from the settings; nothing listens on the discard port
        env["FACELENS_NATS_URL"] = args[-1]
        args = args[:-2]
    if "--people" in args:  # the people are counted after connecting: NATS must answer
        try:
            socket.create_connection(("127.0.0.1", 4222), timeout=1).close()
        except OSError:
            pytest.skip("NATS JetStream is not reachable at 127.0.0.1:4222")
    run = subprocess.run([str(Path(sys.executable).with_name("facelens")), "bench", "scaleout",
                          *(a.format(lfw=lfw) for a in args), "--idle-wait-s", "0"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert said in run.stderr and "s3cret" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr


def test_engine_worker_does_each_job_once_and_finds_the_person(
        bus: Bus, fixtures_dir: Path, tmp_path: Path) -> None:
    settings = Settings(threads=1)
    lfw = _lfw_style(fixtures_dir, tmp_path / "lfw")
    ids, vectors, jobs = best_shot_jobs(Engine(settings), lfw, [], people=1)
    assert ids.tolist() == [0] and len(jobs) == 1 and jobs[0][0] == 0
    gallery = tmp_path / "gallery.npz"
    np.savez(gallery, ids=ids, vectors=vectors)
    plan = WorkerPlan(nats_url=NATS_URL, work="engine", gallery=str(gallery),
                      settings=settings, warmup=jobs[0][1])
    run = run_once(bus, plan, [jobs[0][1]], 1, pin=True, jobs=5)
    assert run["processed_once"] and run["duplicates"] == 0 and run["lost"] == 0
    assert run["left"] == {"stream_messages": 0, "pending": 0, "ack_pending": 0,
                           "redelivered": 0}
    assert run["workers"][0]["matched"] == {"lfw_jobs": 5, "rank1": 5}


def test_two_sleep_workers_share_the_queue_without_duplicates(bus: Bus) -> None:
    plan = WorkerPlan(nats_url=NATS_URL, work="sleep", sleep_s=0.005)
    run = run_once(bus, plan, [b"job"], 2, pin=False, jobs=40)
    assert run["processed_once"] and run["duplicates"] == 0
    assert sum(w["jobs"] for w in run["workers"]) == 40
    assert run["left"]["stream_messages"] == 0 and run["left"]["ack_pending"] == 0


def test_usl_fit_recovers_sigma_and_kappa() -> None:
    n = np.arange(1, 33, dtype=np.float64)
    exact = usl_throughput(n, 50.0, 0.05, 0.002)
    fit = fit_usl(n, exact)
    assert fit["lambda"] == pytest.approx(50.0, rel=1e-9)
    assert fit["sigma"] == pytest.approx(0.05, rel=1e-6)
    assert fit["kappa"] == pytest.approx(0.002, rel=1e-6)
    assert fit["peak_n"] == pytest.approx(np.sqrt(0.95 / 0.002))
    noisy = exact * np.random.default_rng(0).normal(1.0, 0.01, n.size)
    rough = fit_usl(n, noisy)
    assert rough["sigma"] == pytest.approx(0.05, abs=0.01)
    assert rough["kappa"] == pytest.approx(0.002, abs=0.0005)


def test_usl_fit_of_linear_scaling_has_no_contention() -> None:
    n = np.array([1, 2, 4, 8, 16, 32], np.float64)
    fit = fit_usl(n, 40.0 * n)
    assert abs(fit["sigma"]) < 1e-9 and abs(fit["kappa"]) < 1e-9
    assert fit["peak_n"] == float("inf") or fit["peak_n"] > 1e6
