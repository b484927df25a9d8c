"""Schemathesis against the running server's OpenAPI document: every route, with no key, a
key of the wrong scope and an admin key, gets schema-shaped (and schema-breaking) requests;
none may answer 5xx or drop the connection."""

from __future__ import annotations

from collections import Counter

import httpx
import pytest
import schemathesis
from abuse_support import FUZZ_SCHEMA_EXAMPLES, Target
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

CALLERS = ("none", "metrics", "admin")
"""No key, a key with a scope no route but /metrics accepts, a key that may do anything."""


def test_every_route_with_and_without_keys_never_answers_5xx(target: Target) -> None:
    spec = httpx.get(f"{target.url}/openapi.json").json()
    schema = schemathesis.openapi.from_dict(spec)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 30, "the walk must see the whole API"
    with httpx.Client(base_url=target.url, headers=target.auth("admin")) as c:
        metrics_key = c.post("/v1/keys", json={"name": "m", "scopes": ["metrics"]}).json()["key"]
    headers = {"none": {}, "metrics": {"Authorization": f"Bearer {metrics_key}"},
               "admin": target.auth("admin")}
    seen: Counter[str] = Counter()
    for operation in operations:
        walk(target, operation, headers, seen)
    assert all(seen[caller] for caller in CALLERS), seen
    assert target.server.process.poll() is None


def walk(target: Target, operation: schemathesis.APIOperation,
         headers: dict[str, dict[str, str]], seen: Counter[str]) -> None:
    """Hypothesis examples of one operation, each sent as one of CALLERS."""
    label = f"{operation.method.upper()} {operation.path}"

    # No shrinking: a failure is reported as found (one request is easy to read as it is).
    @settings(max_examples=FUZZ_SCHEMA_EXAMPLES * len(CALLERS), deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @given(case=operation.as_strategy(), caller=st.sampled_from(CALLERS))
    def call(case: schemathesis.Case, caller: str) -> None:
        if operation.path == "/v1/keys/{key_id}" and caller == "admin":
            return  # revoking the suite's own keys would only end the walk early
        try:
            response = case.call(base_url=target.url, headers=headers[caller], timeout=60)
        except (httpx.TransportError, OSError) as e:
            pytest.fail(f"{label} ({caller}): connection error {e}")
        seen[caller] += 1
        assert response.status_code < 500, (label, caller, response.status_code,
                                            response.text[:300])

    call()
