"""What one wrong "not this person" costs a subject, measured on lfw-dev (not a test).

For each of the first N people with 3+ photos: photo 1 enrolled, photo 2 marked "not this
person" by mistake, photos 3+ that matched before are checked again under the rule before
(same person at FAR 1e-3 and closer to the correction than to the subject) and the
near-duplicate rule (gallery/identify.py NEAR_DUPLICATE). Altered copies of photo 2 (JPEG q25,
5 % crop, +40 % brightness, half size) show how many near-duplicates each bound catches.

    .venv/bin/python tests/gallery/correction_cost.py --embedder fusion --people 120
"""

from __future__ import annotations

import argparse
import io
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from facelens.api import Engine
from facelens.gallery.identify import NEAR_DUPLICATE
from facelens.settings import Settings
from facelens.vision.decode import load_image

LFW = Path(__file__).resolve().parents[3] / "shared" / "data" / "lfw-dev" / "images"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--embedder", default="fusion")
    parser.add_argument("--people", type=int, default=120)
    args = parser.parse_args()
    engine = Engine(Settings(data_dir=Path(tempfile.mkdtemp())))
    bound = NEAR_DUPLICATE.get(args.embedder, 0.9)

    def vector(rgb: np.ndarray) -> np.ndarray | None:
        faces, chips = engine.detect_rgb(rgb, second_chance=True)
        if not faces or chips is None:
            return None
        i = max(range(len(faces)), key=lambda k: faces[k].width * faces[k].height)
        engine.embed_rgb(rgb, faces[i:i + 1], embedder=args.embedder, chips=chips[i:i + 1])
        return faces[i].embedding

    def altered(path: Path) -> list[np.ndarray]:
        image = Image.open(path).convert("RGB")
        w, h = image.size
        jpeg = io.BytesIO()
        image.save(jpeg, "JPEG", quality=25)
        return [np.asarray(Image.open(jpeg)),
                np.asarray(image.crop((w // 20, h // 20, w, h)).resize((w, h))),
                np.asarray(ImageEnhance.Brightness(image).enhance(1.4)),
                np.asarray(image.resize((w // 2, h // 2)))]

    people = [p for p in sorted(LFW.iterdir()) if len(list(p.iterdir())) >= 3][:args.people]
    same = engine.calibration.operating_point(args.embedder, 1e-3).threshold
    open_set = engine.calibration.open_set_threshold(args.embedder, 1e-3, len(people)).value
    matched = lost_before = lost_now = copies = caught = 0
    for person in people:
        files = sorted(person.iterdir())
        vectors = [v for v in (vector(load_image(f)) for f in files) if v is not None]
        if len(vectors) < 3:
            continue
        enrolled, corrected = vectors[0], vectors[1]
        for other in vectors[2:]:
            score = float(enrolled @ other)
            if score <= open_set:
                continue
            matched += 1
            similarity = float(corrected @ other)
            lost_before += similarity > same and similarity > score
            lost_now += similarity > bound
        for copy in altered(files[1]):
            if (v := vector(copy)) is not None:
                copies += 1
                caught += float(v @ corrected) > bound
    print(f"{args.embedder}, {len(people)} people: {matched} true matches; one wrong correction "
          f"suppresses {lost_before} ({lost_before / matched:.1%}) by the rule before, "
          f"{lost_now} ({lost_now / matched:.2%}) as near-duplicates (> {bound}); "
          f"{caught}/{copies} altered copies of the corrected photo stay suppressed")


if __name__ == "__main__":
    main()
