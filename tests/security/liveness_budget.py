"""The memory a liveness answer costs, worst shapes first: each shape is decoded in a fresh
process and its peak RSS growth (and time) is measured. The answer's budget is the largest
growth measured here (README, docs/benchmarks.md).

    python tests/security/liveness_budget.py [--json-out out/liveness-budget.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
SHAPES = ("h264-4k-static-600", "h264-2000-179", "vp9-4k-noise-60", "frames-48-png-4k",
          "frames-75-jpeg-4k", "frames-90-png-4k", "frames-24-1bit-6324")
"""Each within the 10 MB body limit."""


def payload(shape: str) -> tuple[bytes | None, list[bytes]]:
    """(video, frames) of one shape."""
    import numpy as np
    from hostile import encoded, one_bit_png, video

    if shape == "h264-4k-static-600":
        return video("libx264", "mp4", 3840, 2160, 600), []
    if shape == "h264-2000-179":  # the 18 KB file that took ~2 GB
        return video("libx264", "mp4", 2000, 2000, 179), []
    if shape == "vp9-4k-noise-60":
        return _noise_video(60), []
    if shape.startswith("frames-") and shape.endswith("-png-4k"):
        # a gradient: small on the wire, 25 MB decoded
        ramp = np.broadcast_to(np.arange(3840, dtype=np.uint8)[None, :, None], (2160, 3840, 3))
        count = int(shape.split("-")[1])
        return None, [encoded(Image.fromarray(np.ascontiguousarray(ramp)), "PNG")] * count
    if shape == "frames-75-jpeg-4k":
        return None, [encoded(Image.new("RGB", (3840, 2160), "grey"), "JPEG")] * 75
    return None, [one_bit_png(6324)] * 24


def _noise_video(frames: int) -> bytes:
    import io

    import av
    import numpy as np

    buffer, rng = io.BytesIO(), np.random.default_rng(0)
    with av.open(buffer, mode="w", format="webm") as out:
        stream = out.add_stream("libvpx-vp9", rate=30)
        stream.width, stream.height, stream.pix_fmt = 3840, 2160, "yuv420p"
        stream.options = {"deadline": "realtime", "cpu-used": "8", "crf": "63", "b": "0"}
        for _ in range(frames):
            still = rng.integers(0, 255, (2160, 3840, 3), np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(still, format="rgb24")))
        out.mux(stream.encode())
    return buffer.getvalue()


def measure(shape: str, inputs: Path) -> dict[str, object]:
    """Decode one shape's answer in this process; peak RSS growth over the imports."""
    from facelens.liveness.answer import answer_frames

    video = inputs / "video"
    frames = sorted(inputs.glob("frame-*"))
    recorded = video.read_bytes() if video.exists() else None
    stills = [f.read_bytes() for f in frames]
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM restarts from the RSS now
    before = _status_kb("VmRSS")
    start = time.perf_counter()
    try:
        shown = answer_frames(recorded, stills, limit_pixels=40_000_000,
                              formats=frozenset({"JPEG", "PNG", "WEBP"}))
        outcome = f"{len(shown)} frames"
    except Exception as e:  # a refusal is an outcome too
        outcome = f"{type(e).__name__}: {e}"
    seconds = time.perf_counter() - start
    grown = (_status_kb("VmHWM") - before) / 1024
    body = (len(recorded) if recorded else 0) + sum(map(len, stills))
    return {"shape": shape, "body_bytes": body, "outcome": outcome,
            "peak_growth_mb": round(grown, 1), "seconds": round(seconds, 2)}


def _status_kb(field: str) -> int:
    status = Path("/proc/self/status").read_text()
    return next(int(line.split()[1]) for line in status.splitlines()
                if line.startswith(f"{field}:"))


def run(shape: str, work: Path) -> dict[str, object]:
    """`shape` in a fresh process: its peak is its own."""
    inputs = work / shape
    inputs.mkdir(parents=True, exist_ok=True)
    recorded, stills = payload(shape)
    if recorded is not None:
        (inputs / "video").write_bytes(recorded)
    for i, data in enumerate(stills):
        (inputs / f"frame-{i:03d}").write_bytes(data)
    done = subprocess.run([sys.executable, __file__, "--measure", shape, str(inputs)],
                          capture_output=True, text=True, timeout=600, cwd=HERE)
    if done.returncode:
        raise RuntimeError(done.stderr)
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json-out", type=Path)
    parser.add_argument("--work", type=Path, default=Path("out/liveness-budget"))
    parser.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], Path(args.measure[1]))))
        return
    sys.path.insert(0, str(HERE))
    results = [run(shape, args.work.resolve()) for shape in SHAPES]
    report = {"shapes": results,
              "budget_mb": max(float(r["peak_growth_mb"]) for r in results)}  # type: ignore[arg-type]
    text = json.dumps(report, indent=1)
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
