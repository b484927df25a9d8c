"""Identify latency for a normal photo, idle and while one key floods the server with
worst-case legal images (6300 x 6300 WebP, 1.5 KB on the wire, 39.7 MP decoded) from four
threads. The pixel budget per key is what keeps the ratio low.

    python tests/security/flood_bench.py [--json-out out/flood.json] [--seconds 40]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from hostile import encoded  # noqa: E402
from PIL import Image  # noqa: E402

from served import printed_key, start_server, stop  # noqa: E402

CONSENT = {"legal_basis": "consent", "consent_purpose": "door", "recorded_by": "bench"}


def latencies(url: str, key: str, photo: bytes, seconds: float) -> list[float]:
    out, end = [], time.monotonic() + seconds
    with httpx.Client(base_url=url, timeout=300,
                      headers={"Authorization": f"Bearer {key}"}) as c:
        while time.monotonic() < end:
            start = time.perf_counter()
            r = c.post("/v1/galleries/door/identify", files={"image": ("p.jpg", photo,
                                                                        "image/jpeg")})
            out.append(time.perf_counter() - start)
            assert r.status_code == 200, r.text
    return out


def flood(url: str, key: str, image: bytes, stop_at: float, counts: Counter[int]) -> None:
    with httpx.Client(base_url=url, timeout=300,
                      headers={"Authorization": f"Bearer {key}"}) as c:
        while time.monotonic() < stop_at:
            r = c.post("/v1/detect", files={"image": ("w.webp", image, "image/webp")})
            counts[r.status_code] += 1
            if r.status_code == 429:
                time.sleep(float(r.headers.get("Retry-After", "1")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--seconds", type=float, default=40.0)
    args = parser.parse_args()
    fixtures = HERE.parent / "fixtures"
    photo = (fixtures / "obama2.jpg").read_bytes()
    worst = encoded(Image.new("RGB", (6300, 6300)), "WEBP", lossless=True)
    # The reader sends one photo again and again: not a hill-climb, so no probe limit.
    os.environ["FACELENS_PROBE_REPEATS"] = "1000000"
    with tempfile.TemporaryDirectory() as root:
        server = start_server(Path(root) / "data", Path(root))
        try:
            admin = printed_key(server) or ""
            with httpx.Client(base_url=server.url, timeout=120,
                              headers={"Authorization": f"Bearer {admin}"}) as c:
                c.post("/v1/galleries", json={"name": "door", "purpose": "door"})
                c.post("/v1/galleries/door/subjects", data={"name": "obama", **CONSENT},
                       files=[("images", ("o.jpg", (fixtures / "obama.jpg").read_bytes(),
                                          "image/jpeg"))])
                reader = c.post("/v1/keys", json={"name": "r", "scopes": ["identify"]})
                flooder = c.post("/v1/keys", json={"name": "f", "scopes": ["detect"]})
            reader_key, flood_key = reader.json()["key"], flooder.json()["key"]
            latencies(server.url, reader_key, photo, 3)  # warm
            idle = latencies(server.url, reader_key, photo, args.seconds / 2)
            counts: Counter[int] = Counter()
            stop_at = time.monotonic() + args.seconds + 5
            threads = [threading.Thread(target=flood, args=(server.url, flood_key, worst,
                                                            stop_at, counts)) for _ in range(4)]
            for t in threads:
                t.start()
            time.sleep(2)
            flooded = latencies(server.url, reader_key, photo, args.seconds)
            for t in threads:
                t.join()
        finally:
            stop(server)
    report = {
        "idle_median_s": round(statistics.median(idle), 4),
        "flooded_median_s": round(statistics.median(flooded), 4),
        "ratio_median": round(statistics.median(flooded) / statistics.median(idle), 2),
        "idle_p95_s": round(sorted(idle)[int(0.95 * (len(idle) - 1))], 4),
        "flooded_p95_s": round(sorted(flooded)[int(0.95 * (len(flooded) - 1))], 4),
        "identify_calls": {"idle": len(idle), "flooded": len(flooded)},
        "flood_answers": {str(k): v for k, v in sorted(counts.items())},
        "flood_image": f"6300x6300 WebP lossless, {len(worst)} bytes",
    }
    text = json.dumps(report, indent=1)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
