"""Every hostile-corpus case against a real server: the status it must get (4xx, never 5xx or a
dropped connection), within 1 s, with the server's peak RSS less than 300 MB above where it
started, one case at a time and eight at once."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from abuse_support import Target, upload
from hostile import Case, cases

SECONDS = 1.0
GROWTH_MB = 300.0


@pytest.fixture(scope="module")
def corpus() -> list[Case]:
    return cases()


def answer(target: Target, case: Case) -> tuple[int, float]:
    """(status, seconds) of one case on a fresh connection."""
    with httpx.Client(base_url=target.url, timeout=60) as c:
        start = time.perf_counter()
        if case.route == "events":
            r = c.get(case.path, headers=target.auth("events"))
        else:
            r = upload(target, c, case.route, case.files, case.content_type)
        return r.status_code, time.perf_counter() - start


def test_each_case_alone_is_refused_fast_in_bounded_memory(target: Target,
                                                           corpus: list[Case]) -> None:
    answer(target, corpus[-1])  # warm: models loaded, first-request costs paid
    slow, grown, wrong = [], [], []
    for case in corpus:
        base = target.rss_mb()
        target.reset_peak()
        status, seconds = answer(target, case)
        peak = target.peak_since_reset_mb() - base
        if status not in case.statuses:
            wrong.append((case.route, case.name, status))
        if seconds > SECONDS:
            slow.append((case.route, case.name, round(seconds, 2)))
        if peak > GROWTH_MB:
            grown.append((case.route, case.name, round(peak)))
    assert not wrong, f"wrong status: {wrong}"
    assert not slow, f"over {SECONDS} s: {slow}"
    assert not grown, f"RSS grew over {GROWTH_MB} MB: {grown}"


def test_eight_at_once_are_refused_fast_in_bounded_memory(target: Target,
                                                          corpus: list[Case]) -> None:
    for start in range(0, len(corpus), 8):
        batch = corpus[start:start + 8]
        base = target.rss_mb()
        target.reset_peak()
        with ThreadPoolExecutor(len(batch)) as pool:
            answers = list(pool.map(lambda case: answer(target, case), batch))
        peak = target.peak_since_reset_mb() - base
        for case, (status, seconds) in zip(batch, answers, strict=True):
            assert status in case.statuses, (case.route, case.name, status)
            assert seconds <= SECONDS, (case.route, case.name, round(seconds, 2))
        assert peak < GROWTH_MB, [c.name for c in batch]
