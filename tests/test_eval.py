"""The LFW harness: thresholds at a FAR, the all-vs-all protocol, misses, and one small real
run on ../shared/data/lfw-dev."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from facelens.eval.lfw import build_protocol, pair_scores, tar_at_far
from facelens.matching.operating_points import far_key, threshold_at_far
from facelens.settings import Settings

# --- threshold_at_far -------------------------------------------------------------------------


@pytest.mark.parametrize("far", [1e-1, 3e-2, 1e-2, 2.5e-3, 1e-3, 1e-4])
def test_threshold_at_far_lets_through_exactly_floor_far_n(far: float) -> None:
    scores = np.random.default_rng(3).normal(0.0, 0.1, 10_000)  # continuous: no ties
    t = threshold_at_far(scores, far)
    assert int((scores > t).sum()) == math.floor(far * len(scores))
    # ... and it is the smallest such threshold: any lower score lets one more through.
    assert int((scores >= t).sum()) == math.floor(far * len(scores)) + 1


def test_threshold_at_far_edges() -> None:
    scores = np.array([0.1, 0.5, 0.9, 0.3])
    assert threshold_at_far(scores, 0.0) == 0.9  # nobody above the best impostor
    assert threshold_at_far(scores, 1e-6) == 0.9
    assert threshold_at_far(scores, 0.25) == 0.5  # one of four above
    assert threshold_at_far(scores, 1.0) == 0.1


def test_tar_at_far_uses_the_impostor_threshold() -> None:
    impostor = np.linspace(0.0, 0.5, 1000)
    genuine = np.array([0.2, 0.6, 0.7, 0.8])
    out = tar_at_far(genuine, impostor, fars=(1e-2,))
    assert out[far_key(1e-2)]["threshold"] == pytest.approx(threshold_at_far(impostor, 1e-2))
    assert out[far_key(1e-2)]["tar"] == 0.75


# --- build_protocol on a tiny LFW tree --------------------------------------------------------


def _lfw_tree(root: Path, people: dict[str, list[Path]]) -> Path:
    for name, sources in people.items():
        folder = root / "images" / name
        folder.mkdir(parents=True)
        for i, src in enumerate(sources, 1):
            (folder / f"{name}_{i:04d}.jpg").symlink_to(src)
    return root


def test_build_protocol_counts(fixtures_dir: Path, tmp_path: Path) -> None:
    jpg = sorted(fixtures_dir.glob("*.jpg"))
    root = _lfw_tree(tmp_path / "lfw", {
        "Anna_A": jpg[:3], "Bert_B": jpg[3:5], "Cleo_C": jpg[5:6], "Dora_D": jpg[:1],
        "Emil_E": jpg[1:2],
    })
    (root / "images" / "Emil_E" / "notes.txt").write_text("not a jpg")  # ignored
    (root / "pairs.txt").write_text("2\nAnna_A\t1\t3\nAnna_A\t2\tBert_B\t1\n")

    proto = build_protocol(root, singles=2, seed=0)
    assert len(proto.files) == 3 + 2 + 2
    assert all(f.suffix == ".jpg" and f.is_file() for f in proto.files)
    assert proto.labels.tolist()[:5] == [0, 0, 0, 1, 1]
    assert sorted(proto.labels.tolist()[5:]) == [2, 3]
    assert [f.parent.name for f in proto.files[:5]] == ["Anna_A"] * 3 + ["Bert_B"] * 2
    singles = {f.parent.name for f in proto.files[5:]}
    assert len(singles) == 2 and singles <= {"Cleo_C", "Dora_D", "Emil_E"}
    # The same seed chooses the same singles.
    assert build_protocol(root, singles=2, seed=0).files == proto.files

    genuine, impostor = pair_scores(np.eye(len(proto.files), 8, dtype=np.float32), proto.labels)
    assert len(genuine) == 3 + 1
    assert len(impostor) == 7 * 6 // 2 - 4

    images = root / "images"
    assert proto.pairs == [
        (images / "Anna_A" / "Anna_A_0001.jpg", images / "Anna_A" / "Anna_A_0003.jpg", True),
        (images / "Anna_A" / "Anna_A_0002.jpg", images / "Bert_B" / "Bert_B_0001.jpg", False),
    ]

    capped = build_protocol(root, max_per_person=2, singles=0)
    assert capped.labels.tolist() == [0, 0, 1, 1]


# --- pair_scores: a face not found ------------------------------------------------------------


@pytest.mark.parametrize("euclidean", [False, True])
def test_a_missing_face_fails_genuine_pairs_and_rejects_impostors(euclidean: bool) -> None:
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(5, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    emb[1] = np.nan  # image 1: no face found
    labels = np.array([0, 0, 1, 1, 2])
    genuine, impostor = pair_scores(emb, labels, euclidean=euclidean)
    assert len(genuine) == 2 and len(impostor) == 8
    # Genuine (0,1) involves the miss; (2,3) does not.
    assert genuine[0] == -np.inf and np.isfinite(genuine[1])
    # Impostors (1,2), (1,3), (1,4) involve the miss; the other five are real scores.
    assert int(np.isneginf(impostor).sum()) == 3
    assert int(np.isfinite(impostor).sum()) == 5
    assert not np.isnan(genuine).any() and not np.isnan(impostor).any()
    # At any threshold the miss fails its genuine pair and rejects its impostor pairs.
    lowest = min(genuine[1], impostor[np.isfinite(impostor)].min()) - 1
    assert not (genuine[0] > lowest)
    assert (impostor > lowest).sum() == 5
    tars = tar_at_far(genuine, impostor, fars=(1.0,))
    assert tars[far_key(1.0)]["tar"] <= 0.5


# --- a small real run on lfw-dev --------------------------------------------------------------


@pytest.mark.shared_data
@pytest.mark.slow
@pytest.mark.filterwarnings("error::RuntimeWarning")  # e.g. a NaN from an empty fold or slice
def test_evaluate_on_a_small_lfw_dev_subset(shared_data: Path, tmp_path: Path) -> None:
    from facelens.eval.lfw_report import evaluate, features_cache_kind

    images = shared_data / "lfw-dev" / "images"
    if not images.is_dir():
        pytest.skip(f"../shared/data is absent: {images} not found")
    people = sorted(p for p in images.iterdir() if p.is_dir())
    counts = {p: sorted(p.glob("*.jpg")) for p in people}
    multi = [p for p in people if 2 <= len(counts[p]) <= 4][:15]
    single = [p for p in people if len(counts[p]) == 1][:10]
    assert len(multi) == 15 and len(single) == 10
    root = _lfw_tree(tmp_path / "lfw", {p.name: counts[p] for p in multi + single})
    names = [p.name for p in multi[:7]]  # pairs.txt: 6 same-person and 6 different pairs
    (root / "pairs.txt").write_text(
        "1\t12\n" + "".join(f"{n}\t1\t2\n" for n in names[:6])
        + "".join(f"{m}\t1\t{n}\t2\n" for m, n in pairwise(names)))

    runtime = Settings().runtime
    report, curves = evaluate(root, runtime=runtime, workers=1, cache=tmp_path / "cache",
                              singles=10)

    n_files = sum(len(counts[p]) for p in multi) + 10
    assert report["images"] == n_files
    assert report["identities"] == 25
    assert report["faces_not_found"] == 0
    flip = report["variants"]["sface-flip"]
    genuine = sum(len(counts[p]) * (len(counts[p]) - 1) // 2 for p in multi)
    assert flip["genuine_pairs"] == genuine
    assert flip["impostor_pairs"] == n_files * (n_files - 1) // 2 - genuine
    assert flip["tar_at_far"][far_key(1e-2)]["tar"] >= 0.95
    assert flip["lfw_pairs"]["pairs"] == 12
    assert flip["lfw_pairs"]["accuracy_10fold"] >= 0.9
    assert set(report["variants"]) == {"sface", "sface-flip", "dlib", "fusion"}
    assert 0.0 <= report["fusion_weight"] <= 1.0
    assert set(curves["clean"]) == set(report["variants"])  # one ROC panel per image set
    # The cache went where we said, named after the runtime that computed SFace's numbers.
    assert (tmp_path / "cache" / f"{features_cache_kind(runtime)}.pkl").is_file()
    assert report["sface_runtime"] in features_cache_kind(runtime)


# --- saved calibration --------------------------------------------------------------------------


def _report(runtime_label: str, threshold: float) -> dict[str, Any]:
    """The parts of an `evaluate` report that `save_calibration` stores."""
    def variant(cascade: bool) -> dict[str, Any]:
        tars = {far_key(f): {"threshold": threshold + i / 100, "tar": 0.99 - i / 100}
                for i, f in enumerate((1e-2, 1e-3, 1e-4, 1e-5))}
        return ({"tar_at_far": tars, "impostor_pairs": 1000, "genuine_pairs": 100,
                 "tail": [[1e-2, threshold], [1e-3, threshold + 0.01]], "tail_fit": None}
                | ({"cascade": {k: {"band": [0.2, 0.5]} for k in tars}} if cascade else {}))
    return {"variants": {name: variant(name == "fusion")
                         for name in ("sface", "sface-flip", "dlib", "fusion")},
            "fusion_weight": 0.4, "sface_runtime": runtime_label, "faces_not_found": 1,
            "images": 10, "second_chance_detections": 0, "root": "/photos/lfw-dev"}


def test_saved_calibration_goes_to_the_data_directory_and_is_read_from_there(
        tmp_path: Path) -> None:
    """`eval lfw --save` writes under settings.calibration_dir, never into the package; the
    engine (and so the service) reads it from there, and the model cards its accuracy."""
    from facelens.api import Engine
    from facelens.eval.lfw_report import save_calibration
    from facelens.matching.calibration import calibration_file
    from facelens.models.registry import measured_accuracy
    from facelens.models.runtime import runtime_label

    settings = Settings(data_dir=tmp_path / "data")
    label = runtime_label(settings.runtime)
    package = Engine(Settings(data_dir=tmp_path / "empty")).calibration
    assert package.path is None and package.origin == f"package:{calibration_file(label)}"
    shipped = package.data

    target = settings.calibration_dir / calibration_file(label)
    save_calibration(_report(label, 0.61), target)
    calibration = Engine(settings).calibration
    assert calibration.path == target and calibration.origin == str(target)
    assert calibration.operating_point("fusion", 1e-3).threshold == pytest.approx(0.62)
    assert calibration.fusion_weight(0.5) == 0.4 and label in calibration.source
    measured = measured_accuracy(target.parent)
    assert "TAR 0.980 / 0.970 / 0.960" in measured["sface"]
    assert measured["facemesh"] == measured_accuracy()["facemesh"]  # other models kept
    assert "1 of 10" in measured["yunet"]
    assert Engine(Settings(data_dir=tmp_path / "empty")).calibration.data == shipped


def test_a_calibration_file_the_user_names_wins(tmp_path: Path) -> None:
    """`eval lfw --save-to FILE` and settings.calibration_file: that file, before the data
    directory's."""
    from facelens.api import Engine
    from facelens.eval.lfw_report import save_calibration
    from facelens.matching.calibration import calibration_file
    from facelens.models.runtime import runtime_label

    settings = Settings(data_dir=tmp_path / "data")
    label = runtime_label(settings.runtime)
    save_calibration(_report(label, 0.61), settings.calibration_dir / calibration_file(label))
    named = tmp_path / "mine" / "points.json"
    save_calibration(_report(label, 0.71), named)
    assert (named.parent / "measured.json").is_file()
    calibration = Engine(settings.model_copy(update={"calibration_file": named})).calibration
    assert calibration.path == named
    assert calibration.operating_point("sface", 1e-2).threshold == pytest.approx(0.71)


def test_eval_lfw_save_names_the_folder_and_warns_below_what_it_can_measure(
        tmp_path: Path, fixtures_dir: Path) -> None:
    """`eval lfw ROOT --save-to` on a folder of a few people: the operating points and the
    model cards' figures name that folder (they said lfw-dev whatever it was), and the FARs its
    impostor pairs cannot measure are warned about, as `facelens calibrate` does."""
    people = tmp_path / "my-staff"
    for person, photos in (("obama", ("obama.jpg", "obama2.jpg")), ("biden", ("biden.jpg",)),
                           ("kit", ("kit_with_rose.jpg",))):
        (people / person).mkdir(parents=True)
        for photo in photos:
            shutil.copy(fixtures_dir / photo, people / person / photo)
    target = tmp_path / "points.json"
    cli = str(Path(sys.executable).with_name("facelens"))
    done = subprocess.run([cli, "eval", "lfw", str(people), "--save-to", str(target),
                           "--cache", str(tmp_path / "cache"), "--workers", "1"],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "FACELENS_DATA_DIR": str(tmp_path / "data")})
    assert done.returncode == 0, done.stderr
    assert json.loads(target.read_text())["source"].startswith("my-staff all-vs-all")
    measured = json.loads((target.parent / "measured.json").read_text())["models"]
    assert measured["sface"].startswith("my-staff all-vs-all"), measured["sface"]
    assert "of 4 my-staff images without a face" in measured["yunet"], measured["yunet"]
    assert "warning: fusion @ FAR 1e-02, 1e-03, 1e-04, 1e-05: 5 impostor pairs" in done.stderr
