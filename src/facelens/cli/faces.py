"""`facelens detect | analyze | verify | models`: one image or pair, and the model cards."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from facelens.cli.common import (
    FAR_MAX,
    FAR_MIN,
    JsonFlag,
    calibration_in_force,
    emit,
    environment_engine,
    environment_settings,
    err,
    errors,
    out,
    writable,
)

if TYPE_CHECKING:
    import numpy as np

    from facelens.face import Face


class DetectorName(StrEnum):
    yunet = "yunet"
    centerface = "centerface"


EmbedderName = StrEnum("EmbedderName", [(e, e) for e in ("sface", "sface-flip", "dlib", "fusion")])
"""settings.Embedder's names (a test keeps them equal): another one was exit 3, "no
calibrated thresholds", as if a model file were missing."""


def _decoded(image: Path) -> np.ndarray:
    """The image decoded once: detection, quality, attributes and drawing all read it. Its
    errors name the file, so a script's log shows which of its inputs was bad."""
    from facelens.vision.decode import load_image

    return load_image(image)


def _face_table(faces: list[Face], title: str) -> Table:
    table = Table(title=title)
    for col in ("#", "box", "score", "quality", "reasons", "age / sex"):
        table.add_column(col)
    for i, f in enumerate(faces):
        q = f.quality
        attrs = f.attributes
        table.add_row(str(i), " ".join(f"{v:.0f}" for v in f.box), f"{f.score:.2f}",
                      f"{q.score:.2f}" if q else "", ", ".join(q.reasons) if q else "",
                      f"{attrs.age:.0f} / {attrs.sex}" if attrs else "")
    return table


def _draw(rgb: np.ndarray, faces: list[Face], target: Path) -> None:
    from facelens.vision.draw import draw_faces, save_rgb

    save_rgb(target, draw_faces(rgb, faces))
    err.print(f"drawn: {target}", markup=False, highlight=False)


def _faces_command(image: Path, rgb: np.ndarray, faces: list[Face], as_json: bool,
                   draw: Path | None) -> None:
    if draw:
        with errors():
            _draw(rgb, faces, draw)
    if as_json:
        emit({"image": str(image), "faces": [f.to_dict() for f in faces]})
    else:
        out.print(_face_table(faces, f"{escape(str(image))}: {len(faces)} face(s)"))
    if not faces:
        raise typer.Exit(1)


def detect(image: Path, draw: Annotated[Path | None, typer.Option(
               help="Write a copy with boxes, landmarks and quality.", callback=writable)]
           = None,
           detector: Annotated[DetectorName, typer.Option(help="Which detector.")]
           = DetectorName.yunet,
           as_json: JsonFlag = False) -> None:
    """Find faces: boxes, 5 landmarks, scores and quality."""
    with errors():
        rgb = _decoded(image)
        faces = environment_engine().detect(rgb, detector=detector.value)
    _faces_command(image, rgb, faces, as_json, draw)


def analyze(image: Path, draw: Annotated[Path | None, typer.Option(
                help="Write a copy with boxes, landmarks, quality and attributes.",
                callback=writable)] = None,
            as_json: JsonFlag = False) -> None:
    """Detect faces with quality, age (with its typical error) and perceived sex."""
    with errors():
        rgb = _decoded(image)
        faces = environment_engine().analyze(rgb)
    _faces_command(image, rgb, faces, as_json, draw)


def verify(a: Path, b: Path,
           far: Annotated[float, typer.Option(help="False-accept rate of the decision.",
                                              min=FAR_MIN, max=FAR_MAX)] = 1e-3,
           embedder: Annotated[EmbedderName | None, typer.Option(
               help="Default: settings.")] = None,
           as_json: JsonFlag = False) -> None:
    """Are A and B the same person? A's largest face against every face of B; exit 0 if one
    matches, 1 if not (or no face)."""
    with errors():
        comparison = environment_engine().compare(_decoded(a), _decoded(b), far=far,
                                                  embedder=embedder and embedder.value)
    verdict, several = comparison.best, len(comparison.verdicts) > 1
    if as_json:
        emit({**verdict.to_dict(), **({"faces_of_b": [v.to_dict() for v in comparison.verdicts]}
                                      if several else {})})
    else:
        word = "[green]MATCH[/green]" if verdict.match else "[yellow]NO MATCH[/yellow]"
        out.print(f"{word}  score {verdict.score:.4f}  (decided by {verdict.operating_point})")
        if verdict.note:
            out.print(f"  {verdict.note}")
        for number, each in enumerate(comparison.verdicts if several else [], 1):
            box = ", ".join(str(round(float(v))) for v in each.faces[1].box)  # type: ignore[union-attr]
            out.print(f"  B face {number} at ({box}): "
                      f"{'match' if each.match else 'no match'}  score {each.score:.4f}")
    raise typer.Exit(0 if verdict.match else 1)


def models(as_json: JsonFlag = False) -> None:
    """Print a model card per model (task, source package, licence, accuracy) and the
    calibration in force."""
    from facelens.eval.demographics import differential_note
    from facelens.models.registry import CARDS, ModelMissingError, measured_accuracy, model_path

    settings = environment_settings()
    with errors():
        calibration = calibration_in_force()
    measured = measured_accuracy(calibration.path.parent if calibration.path else None)
    in_force = f"calibration: {calibration.origin} ({calibration.source})\n" \
        + differential_note(calibration)
    cards = []
    for card in CARDS.values():
        info = card.to_dict(settings.runtime, measured)
        try:
            info["file"] = str(model_path(card.name))
            info["status"] = "ok (sha256 checked)"
        except ModelMissingError as e:
            info["status"] = str(e)
        cards.append(info)
    if as_json:
        emit(cards)
        err.print(in_force, highlight=False)
        return
    for c in cards:
        table = Table(title=c["name"], show_header=False, title_justify="left")
        for key in ("task", "package", "version", "licence", "input_size", "published",
                    "measured", "runtime", "file", "sha256", "status"):
            table.add_row(key, str(c[key]))
        out.print(table)
    out.print(in_force, highlight=False, soft_wrap=True)  # a path stays whole
