"""`facelens objects IMAGE` (people, vehicles, screens and plates) and `facelens eval plates`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from facelens.cli.common import JsonFlag, emit, err, errors, out, progress


def objects(image: Path,
            region: Annotated[str, typer.Option(help="Plate formats: us, eu, uk, br, in or "
                                                     "any.")] = "us",
            as_json: JsonFlag = False) -> None:
    """People, vehicles and screens in IMAGE, with the plate read on each motor vehicle."""
    from facelens.scene.detect import MOTOR_VEHICLES, detect_objects
    from facelens.scene.plates import read_plate
    from facelens.vision.decode import load_image

    with errors():
        rgb = load_image(image)
        found = detect_objects(rgb)
        rows = []
        for name, score, box in zip(found.names, found.scores, found.boxes, strict=True):
            plate = read_plate(rgb, box, region) if name in MOTOR_VEHICLES else None
            rows.append({"class": name, "score": round(float(score), 3),
                         "box": [round(float(v), 1) for v in box],
                         "plate": plate.text if plate else None,
                         "plate_confidence": round(plate.confidence, 3) if plate else None})
    if as_json:
        emit({"image": str(image), "objects": rows})
        return
    table = Table(title=f"{image}: {len(rows)} object(s)")
    for col in ("class", "score", "box", "plate"):
        table.add_column(col)
    for row in rows:
        plate = f"{row['plate']} ({row['plate_confidence']:.2f})" if row["plate"] else ""
        table.add_row(row["class"], f"{row['score']:.2f}",
                      " ".join(f"{v:.0f}" for v in row["box"]), plate)
    out.print(table)


def eval_plates(folder: Path,
                region: Annotated[str, typer.Option(help="Plate formats: us, eu, uk, br, in "
                                                         "or any.")] = "us",
                limit: Annotated[int | None, typer.Option(help="Only the first N images.")]
                = None,
                json_out: Annotated[Path | None, typer.Option(help="Write the report here.")]
                = None) -> None:
    """Plate reading on an openalpr-layout folder (<id>.jpg + <id>.txt): read_rate with the
    vehicle detector in the loop, read_rate_given_box, ms per image, error kinds."""
    from facelens.eval.plates import evaluate_plates

    if not folder.is_dir():
        err.print(f"[red]error:[/red] {escape(str(folder))} is not a folder", highlight=False)
        raise typer.Exit(2)
    with errors(), progress() as start:
        report = evaluate_plates(folder, region=region, limit=limit, progress=start)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=1) + "\n")
    emit(report)
