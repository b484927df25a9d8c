"""The engine on real models and real photos: detection (incl. tiling and odd image modes),
alignment, embeddings, 1:1 verification, quality and attributes."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

import facelens
from facelens.errors import FacelensError, NoFaceError
from facelens.face import Attributes, Face
from facelens.settings import EMBEDDER_DIMS, get_settings
from facelens.vision.align import TEMPLATE, align, align_matrix, similarity_transform
from facelens.vision.detect import detect_faces

Detected = Callable[..., list[Face]]
LoadRgb = Callable[[str], np.ndarray]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union)


def interocular(face: Face) -> float:
    return float(np.linalg.norm(face.landmarks[1] - face.landmarks[0]))


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


# --- detection --------------------------------------------------------------------------------


def test_two_people(detected: Detected) -> None:
    faces = detected("two_people.jpg")
    assert len(faces) >= 2
    for f in faces:
        x1, y1, x2, y2 = f.box
        assert x2 - x1 > 50 and y2 - y1 > 50
        assert f.landmarks.shape == (5, 2)
        assert ((f.landmarks[:, 0] > x1) & (f.landmarks[:, 0] < x2)).all()
        assert ((f.landmarks[:, 1] > y1) & (f.landmarks[:, 1] < y2)).all()
        assert f.landmarks[0, 0] < f.landmarks[1, 0]  # subject's right eye on the image's left
        assert f.score > 0.8
        assert f.detector == "yunet"
        assert f.quality is not None
    # Obama on the left half, Biden on the right, best score first.
    assert sorted(f.box[0] < 563 for f in faces) == [False, True]
    assert faces[0].score >= faces[1].score


@pytest.mark.parametrize("detector", ["yunet", "centerface"])
def test_group_shot_big_faces_by_both_detectors(detected: Detected, detector: str) -> None:
    faces = detected("obama_and_biden.jpg", detector)
    big = [f for f in faces if interocular(f) > 60]
    assert len(big) >= 2
    assert all(f.detector == detector for f in faces)
    assert all(f.quality is not None and f.quality.acceptable for f in big)
    # They are two different people side by side, not one face found twice.
    a, b = big[:2]
    assert iou(a.box, b.box) == 0.0


def test_small_faces_in_a_4k_frame_are_found_by_tiling(detected: Detected, load_rgb: LoadRgb
                                                       ) -> None:
    frame = np.random.default_rng(0).integers(100, 156, (2160, 3840, 3), dtype=np.uint8)
    sources = [("two_people.jpg", f) for f in detected("two_people.jpg")]
    sources.append(("obama.jpg", detected("obama.jpg")[0]))
    # The middle face straddles the left edge of the third column of tiles (x = 1920).
    places = [(400, 300), (1900, 1000), (3400, 1800)]
    known = []
    for (name, face), (px, py) in zip(sources, places, strict=True):
        rgb = load_rgb(name)
        x1, y1, x2, y2 = face.box
        w, h = x2 - x1, y2 - y1
        cx1, cy1 = int(max(0, x1 - w / 2)), int(max(0, y1 - h / 2))
        cx2, cy2 = int(min(rgb.shape[1], x2 + w / 2)), int(min(rgb.shape[0], y2 + h / 2))
        scale = 40 / w  # the face box becomes ~40 px wide
        crop = rgb[cy1:cy2, cx1:cx2]
        small = cv2.resize(crop, (round(crop.shape[1] * scale), round(crop.shape[0] * scale)),
                           interpolation=cv2.INTER_AREA)
        frame[py:py + small.shape[0], px:px + small.shape[1]] = small
        known.append(np.array([px + (x1 - cx1) * scale, py + (y1 - cy1) * scale,
                               px + (x2 - cx1) * scale, py + (y2 - cy1) * scale]))

    assert max(frame.shape[:2]) > get_settings().detect_max_side  # the tiled path runs
    faces = facelens.detect(frame)
    for box in known:
        assert max((iou(box, f.box) for f in faces), default=0.0) > 0.3, box
    # Overlapping tiles and the shrunk whole-frame pass must merge into one hit per face.
    assert len(faces) == 3


# --- image variants of a real photo -----------------------------------------------------------


def _variant(upright: Image.Image, kind: str) -> bytes:
    up = upright
    if kind == "grey":
        return encode(up.convert("L"), "PNG")
    if kind == "rgba":
        alpha = Image.new("L", up.size, 0)
        alpha.paste(255, (30, 30, up.width - 30, up.height - 30))  # transparent frame
        rgba = up.convert("RGBA")
        rgba.putalpha(alpha)
        return encode(rgba, "PNG")
    if kind == "grey16":
        grey16 = Image.fromarray(np.asarray(up.convert("L")).astype(np.uint16) * 257)
        assert grey16.mode == "I;16"
        return encode(grey16, "PNG")
    if kind == "cmyk":
        return encode(up.convert("CMYK"), "JPEG", quality=95)
    if kind == "exif6":
        exif = Image.Exif()
        exif[0x0112] = 6  # "rotate 90° clockwise to display": store it turned counter-clockwise
        return encode(up.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif)
    raise AssertionError(kind)


@pytest.mark.parametrize("max_side", [320, 480, 640])
def test_a_face_a_tile_cuts_is_one_face(load_rgb: LoadRgb, max_side: int) -> None:
    """Tiling obama.jpg (910x1137) at 320 px found his face whole and, cut by a tile's edge,
    its lower half again (score 0.65): a second face inside the first."""
    faces = detect_faces(load_rgb("obama.jpg"), max_side=max_side)
    assert len(faces) == 1, [f.box.round().tolist() for f in faces]


@pytest.mark.parametrize("shape", [(1, 4000), (4000, 1), (8, 1920), (20, 640), (30, 777)])
def test_a_thin_strip_holds_no_face(shape: tuple[int, int]) -> None:
    """Noise in a short, wide frame: YuNet answered 20x640 with a face of score 1.0 at 1e30 /
    inf / NaN px, and a strip thinner than the shrink to max_side made cv2.resize assert."""
    noise = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    for name in ("yunet", "centerface"):
        assert detect_faces(noise, name=name, max_side=1920) == [], name


@pytest.mark.parametrize("kind", ["grey", "rgba", "grey16", "cmyk", "exif6"])
def test_image_variants_still_show_both_people(fixtures_dir: Path, detected: Detected, kind: str
                                               ) -> None:
    upright = Image.open(fixtures_dir / "two_people.jpg")
    upright.load()
    data = _variant(upright, kind)
    if kind == "exif6":
        assert Image.open(io.BytesIO(data)).size == (upright.height, upright.width)  # sideways
    reference = detected("two_people.jpg")
    faces = facelens.detect(data)
    matched = []
    for ref in reference:
        best = max(faces, key=lambda f, r=ref: iou(r.box, f.box))
        assert iou(ref.box, best.box) > 0.7, (kind, ref.box, [f.box for f in faces])
        matched.append(best)
        if kind == "exif6":  # same pixels up to JPEG noise: same boxes and landmarks
            assert np.abs(best.box - ref.box).max() < 4
            assert np.abs(best.landmarks - ref.landmarks).max() < 4
    # Anything else found (YuNet sees a 9-px "face" in a sleeve of the grey copy) must be
    # flagged by quality, so only the two people count as usable faces.
    extras = [f for f in faces if not any(f is m for m in matched)]
    assert all(f.quality is not None and not f.quality.acceptable for f in extras)


# --- alignment --------------------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 1])
def test_aligned_chip_puts_the_landmarks_on_the_template(load_rgb: LoadRgb, detected: Detected,
                                                         index: int) -> None:
    rgb = load_rgb("two_people.jpg")
    face = detected("two_people.jpg")[index]
    chip = align(rgb, face.landmarks)
    assert chip.shape == (112, 112, 3) and chip.dtype == np.uint8
    pad = 56  # a detector needs some context around a tight chip
    padded = cv2.copyMakeBorder(chip, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    found = facelens.detect(padded, quality=False)
    assert found, "no face on the aligned chip"
    error = np.linalg.norm(found[0].landmarks - pad - TEMPLATE, axis=1)
    # Re-detection on a 112-px chip is itself noisy by a few px, the mouth corners most.
    assert error[:2].max() < 4, error  # eyes
    assert error.mean() < 4, error
    assert error.max() < 7, error


def test_similarity_transform_recovers_a_known_similarity() -> None:
    rng = np.random.default_rng(7)
    for _ in range(5):
        angle, scale = rng.uniform(-np.pi, np.pi), rng.uniform(0.2, 5.0)
        shift = rng.uniform(-300, 300, 2)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        expected = np.column_stack([scale * rot, shift])
        src = rng.uniform(0, 500, (5, 2))
        dst = src @ (scale * rot).T + shift
        matrix = similarity_transform(src, dst)
        assert matrix.shape == (2, 3)
        np.testing.assert_allclose(matrix, expected, rtol=1e-9, atol=1e-9)
    # A mirrored target is not a similarity: the answer stays a rotation (no reflection).
    mirrored = TEMPLATE * [-1, 1]
    assert np.linalg.det(similarity_transform(TEMPLATE, mirrored)[:, :2]) > 0
    # On the template itself, alignment is the identity.
    np.testing.assert_allclose(align_matrix(TEMPLATE), np.eye(2, 3), atol=1e-9)


# --- embeddings -------------------------------------------------------------------------------

DIMS = {"sface": 128, "sface-flip": 128, "dlib": 128, "fusion": 256}


def test_every_embedder_is_covered() -> None:
    assert EMBEDDER_DIMS == DIMS


@pytest.mark.parametrize("embedder", list(DIMS))
def test_embeddings_unit_norm_and_batch_equals_single(load_rgb: LoadRgb, detected: Detected,
                                                      embedder: str) -> None:
    rgb = load_rgb("two_people.jpg")
    faces = facelens.embed(rgb, detected("two_people.jpg"), embedder=embedder)
    assert len(faces) >= 2
    batch = np.stack([f.embedding for f in faces])
    assert batch.shape == (2, DIMS[embedder]) and batch.dtype == np.float32
    assert np.isfinite(batch).all()
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    assert all(f.embedder == embedder for f in faces)
    alone = np.stack([facelens.embed(rgb, [f], embedder=embedder)[0].embedding
                      for f in detected("two_people.jpg")])
    np.testing.assert_allclose(batch, alone, atol=1e-5)
    assert float(batch[0] @ batch[1]) < 0.9  # Obama and Biden are not the same vector


# --- verification (needs src/facelens/data/operating_points.json) -----------------------------


@pytest.fixture(scope="module")
def verdicts(fixtures_dir: Path) -> dict[str, facelens.Verdict]:
    """obama vs obama2 and obama vs biden at FAR 1e-3, from the image files."""
    obama = fixtures_dir / "obama.jpg"
    return {"same": facelens.verify(obama, fixtures_dir / "obama2.jpg", far=1e-3),
            "different": facelens.verify(obama, fixtures_dir / "biden.jpg", far=1e-3)}


def _check_verdict(verdict: facelens.Verdict, far: float) -> None:
    from facelens.matching.operating_points import far_key

    name = get_settings().embedder
    assert verdict.embedder == name
    assert verdict.far == pytest.approx(far)
    assert f"{name} @ FAR {far_key(far)}" in verdict.operating_point
    assert verdict.match == (verdict.score > verdict.threshold)


@pytest.mark.parametrize("far", [1e-3, 1e-4])
def test_verify_same_person_matches_and_another_does_not(verdicts: dict[str, facelens.Verdict],
                                                         far: float) -> None:
    if far == 1e-3:
        same, different = verdicts["same"], verdicts["different"]
    else:  # the embedded faces of the first verdicts, decided again at the stricter point
        same = facelens.verify(*verdicts["same"].faces, far=far)
        different = facelens.verify(*verdicts["different"].faces, far=far)
    assert same.match, same
    assert not different.match, different
    _check_verdict(same, far)
    _check_verdict(different, far)
    assert same.score > different.score


def test_verify_far_stricter_than_calibrated_is_refused(verdicts: dict[str, facelens.Verdict]
                                                        ) -> None:
    with pytest.raises(FacelensError, match="stricter than any calibrated point"):
        facelens.verify(*verdicts["same"].faces, far=1e-7)


@pytest.mark.parametrize("other", ["obama2.jpg", "biden.jpg", "obama2-dark"])
def test_fusion_cascade_gives_the_fused_decision(fixtures_dir: Path, load_rgb: LoadRgb,
                                                 other: str) -> None:
    """Plain SFace decides alone only outside its calibrated band; either way the verdict is
    the one the fused score gives, and a cascade verdict carries plain SFace's score."""
    from facelens.api import default_engine

    obama = load_rgb("obama.jpg")
    second = (np.clip(load_rgb("obama2.jpg") * 0.35, 0, 255).astype(np.uint8)
              if other == "obama2-dark" else load_rgb(other))
    verdict = facelens.verify(obama, second, far=1e-3, embedder="fusion")
    point = default_engine().calibration.operating_point("fusion", 1e-3)
    assert point.cascade is not None
    low, high = point.cascade

    def largest(rgb: np.ndarray, embedder: str) -> np.ndarray:
        faces = facelens.embed(rgb, embedder=embedder)
        face = max(faces, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
        assert face.embedding is not None
        return face.embedding

    plain = float(largest(obama, "sface") @ largest(second, "sface"))
    fused = float(largest(obama, "fusion") @ largest(second, "fusion"))
    assert verdict.match == (fused > point.threshold)
    if low <= plain <= high:
        assert verdict.decided_by == "fusion"
        assert verdict.score == pytest.approx(fused, abs=1e-5)
    else:
        assert verdict.decided_by == "sface"
        assert verdict.score == pytest.approx(plain, abs=1e-5)


def test_an_engine_detects_and_embeds_with_the_settings_it_is_given(fixtures_dir: Path,
                                                                    tmp_path: Path) -> None:
    """No stage reads the environment's settings: an engine built with CenterFace and plain
    SFace uses them, while the default engine (the environment's) uses YuNet and fusion."""
    from facelens.api import Engine, default_engine
    from facelens.settings import Settings

    photo = fixtures_dir / "obama.jpg"
    custom = Engine(Settings(data_dir=tmp_path, detector="centerface", embedder="sface"))
    (face,) = custom.embed(photo)
    assert (face.detector, face.embedder) == ("centerface", "sface")
    assert face.embedding is not None and face.embedding.shape == (128,)
    verdict = custom.verify(photo, fixtures_dir / "obama2.jpg")
    assert verdict.embedder == "sface" and verdict.match
    assert {f.detector for f in verdict.faces if isinstance(f, Face)} == {"centerface"}

    (face,) = default_engine().embed(photo)
    assert (face.detector, face.embedder) == ("yunet", "fusion")
    assert face.embedding is not None and face.embedding.shape == (256,)


def test_verify_without_a_face_raises_no_face_error(fixtures_dir: Path) -> None:
    grey = encode(Image.new("RGB", (400, 300), (128, 128, 128)), "PNG")
    with pytest.raises(NoFaceError, match="second image"):
        facelens.verify(fixtures_dir / "obama.jpg", grey)


# --- quality ----------------------------------------------------------------------------------


def test_quality_flags_blur(load_rgb: LoadRgb, detected: Detected) -> None:
    original = detected("obama.jpg")
    assert len(original) == 1 and original[0].quality is not None
    assert "blurred" not in original[0].quality.reasons
    assert original[0].quality.acceptable
    blurred = facelens.detect(cv2.GaussianBlur(load_rgb("obama.jpg"), (0, 0), 6))
    assert len(blurred) == 1 and blurred[0].quality is not None
    assert "blurred" in blurred[0].quality.reasons
    assert blurred[0].quality.sharpness < original[0].quality.sharpness
    assert blurred[0].quality.score < original[0].quality.score
    for q in (original[0].quality, blurred[0].quality):
        assert 0.0 <= q.score <= 1.0


def test_quality_flags_a_small_face(load_rgb: LoadRgb, detected: Detected) -> None:
    original = detected("obama.jpg")[0]
    scale = 12 / interocular(original)
    small = cv2.resize(load_rgb("obama.jpg"), None, fx=scale, fy=scale,
                       interpolation=cv2.INTER_AREA)
    faces = facelens.detect(small)
    assert len(faces) == 1 and faces[0].quality is not None
    q = faces[0].quality
    assert 8 < q.interocular_px < 16
    assert any(r.startswith("too small") for r in q.reasons), q.reasons
    assert 0.0 <= q.score < original.quality.score



def test_quality_flags_a_face_cut_by_the_image_edge(load_rgb: LoadRgb,
                                                     detected: Detected) -> None:
    """Half a face is found and even verifies; enrolling it would keep a poor template, so
    quality names the cut (enrolment skips a face with a reason). A cheek cut off is fine."""
    rgb = load_rgb("obama.jpg")
    left, _, right, _ = detected("obama.jpg")[0].box
    for share, cut in ((0.2, False), (0.5, True)):
        part = np.ascontiguousarray(rgb[:, int(left + (right - left) * share):])
        faces = facelens.detect(part)
        assert len(faces) == 1 and faces[0].quality is not None
        flagged = [r for r in faces[0].quality.reasons if r.startswith("cut by the image edge")]
        assert bool(flagged) is cut, (share, faces[0].quality.reasons)


# --- attributes -------------------------------------------------------------------------------


def test_attributes_on_two_men(load_rgb: LoadRgb) -> None:
    faces = facelens.analyze(load_rgb("two_people.jpg"))
    assert len(faces) >= 2
    for f in faces:
        a = f.attributes
        assert a is not None
        assert 30 <= a.age <= 80, a
        assert a.sex == "male", a
        assert 0.5 <= a.sex_confidence <= 1.0
        assert a.age_error is None or a.age_error > 0
    obama, biden = sorted(faces, key=lambda f: f.box[0])  # Obama left, Biden (older) right
    assert biden.attributes.age > obama.attributes.age


def test_attributes_are_opt_in_and_limited_to_age_and_sex(load_rgb: LoadRgb) -> None:
    assert {f.name for f in dataclasses.fields(Attributes)} == {
        "age", "age_error", "sex", "sex_confidence"}
    faces = facelens.analyze(load_rgb("obama.jpg"), attributes=False)
    assert faces and all(f.attributes is None for f in faces)


def test_verify_uses_the_largest_face_of_a_group_photo(fixtures_dir: Path) -> None:
    """obama_and_biden.jpg shows several people; verify compares its largest face, whoever
    that is, and finds that person in the single portrait of the same man."""
    group = fixtures_dir / "obama_and_biden.jpg"
    faces = facelens.detect(group)
    assert len(faces) >= 2
    largest = max(faces, key=lambda f: f.width * f.height)
    verdicts = {name: facelens.verify(group, fixtures_dir / f"{name}.jpg", far=1e-3)
                for name in ("obama", "biden")}
    assert sum(v.match for v in verdicts.values()) == 1, verdicts
    winner = next(v for v in verdicts.values() if v.match)
    assert winner.faces[0].box == pytest.approx(largest.box)
