"""`facelens eval lfw | identify`: verification and open-set identification accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from facelens.cli.common import (
    JsonFlag,
    JsonOut,
    Workers,
    emit,
    emit_report,
    environment_engine,
    environment_settings,
    err,
    errors,
    out,
    progress,
    require_folder,
    save_json,
    writable,
)


def known_levels(names: list[str] | None) -> list[str] | None:
    """--degrade's check, at parsing, in every command that takes it: a name eval/degrade.py
    does not know is a bad parameter (exit 2, the valid names listed) before any work."""
    from facelens.eval.degrade import level

    for name in names or ():
        try:
            level(name)
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
    return names


def eval_lfw(root: Path,
             plot: Annotated[Path | None, typer.Option(help="Write the ROC curves here.",
                                                       callback=writable)] = None,
             peer: Annotated[bool, typer.Option(help="Also run face_recognition.")] = False,
             save: Annotated[bool, typer.Option(
                 help="Store the thresholds (and measured accuracy beside them) in the data "
                      "directory's calibration/ folder, where the engine and the service "
                      "read them.")] = False,
             save_to: Annotated[Path | None, typer.Option(
                 help="Store the thresholds in this file instead (measured.json beside it); "
                      "use it with FACELENS_CALIBRATION_FILE.", callback=writable)] = None,
             workers: Workers = 2,
             cache: Annotated[Path, typer.Option(help="Per-image feature cache.")]
             = Path("out/eval"),
             json_out: JsonOut = None,
             degrade: Annotated[list[str] | None, typer.Option(
                 callback=known_levels,
                 help="Also measure a CCTV-like copy (repeatable): cctv (= cctv-18: eyes ~18 "
                      "px apart, blur σ 0.8, JPEG 35), cctv-24, cctv-12; made from each "
                      "image as an LFW-framed photo before detection.")] = None,
             bands: Annotated[bool, typer.Option(
                 help="Fit per-quality-band fusion weights and thresholds on the clean and "
                      "degraded images (needs --degrade; --save stores them).")] = False,
             as_json: JsonFlag = False) -> None:
    """Verification accuracy, all-vs-all, on an LFW-layout folder (see docs/evaluation.md)."""
    from facelens.eval.calibrate import warnings
    from facelens.eval.lfw_report import evaluate, plot_roc, save_calibration
    from facelens.matching.calibration import calibration_file

    require_folder(root)
    if bands and not degrade:
        raise typer.BadParameter("quality bands are fitted on degraded copies too",
                                 param_hint="--degrade")
    settings = environment_settings()
    with errors(), progress() as start:
        report, curves = evaluate(root, runtime=settings.runtime, peer=peer, workers=workers,
                                  cache=cache, progress=start, degrade=tuple(degrade or ()),
                                  shift_tta=settings.sface_shift_tta)
        if bands:
            from facelens.eval.lfw_bands import evaluate_cached

            report["quality_bands"] = evaluate_cached(root, report, settings.runtime,
                                                      tuple(degrade or ()), cache, workers)
    if plot:
        plot_roc(curves, plot, root.name)
    if save or save_to:
        target = save_to or settings.calibration_dir / calibration_file(report["sface_runtime"])
        save_calibration(report, target)
        err.print(f"calibration saved: {target}", markup=False, highlight=False)
        for warning in warnings(report["variants"]):  # as `facelens calibrate` warns
            err.print(f"warning: {warning}", markup=False, highlight=False)
    save_json(report, json_out)
    if as_json:
        emit(report)
        return
    out.print(lfw_table(report))
    for name, level in report.get("degraded", {}).items():
        out.print(lfw_table(level | {"root": f"{report['root']} made {name}",
                                     "images": report["images"]}))


def eval_identify(root: Path,
                  embedder: Annotated[str, typer.Option(help="Which embedding to search.")]
                  = "fusion",
                  workers: Workers = 2,
                  cache: Annotated[Path, typer.Option(help="Per-image feature cache.")]
                  = Path("out/eval"),
                  json_out: JsonOut = None,
                  degrade: Annotated[list[str] | None, typer.Option(
                      callback=known_levels,
                      help="Also search with the probes made CCTV-like (repeatable): cctv "
                           "(= cctv-18), cctv-24, cctv-12 (see eval lfw). The gallery stays "
                           "clean, as a watchlist enrolled from good photos would be; each "
                           "probe is searched in its quality cell (by_quality_cell; needs "
                           "--embedder fusion).")] = None) -> None:
    """Open-set 1:N identification on an LFW-layout folder: rank-1, FNIR at FPIR."""
    require_folder(root)  # before the imports: a wrong path is told at once
    from facelens.eval.identify_eval import evaluate_identification

    if degrade and embedder != "fusion":
        raise typer.BadParameter("degraded probes are searched by quality cell, as fusion",
                                 param_hint="--embedder")
    with errors(), progress() as start:
        report = evaluate_identification(environment_engine(), root, embedder=embedder,
                                         workers=workers, cache=cache, progress=start,
                                         degrade=tuple(degrade or ()))
    emit_report(report, json_out)


def lfw_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"{report['root']}: {report['images']} images, "
                        f"{report['faces_not_found']} without a face")
    fars = ("1e-02", "1e-03", "1e-04", "1e-05")
    for col in ("variant", *(f"TAR@{f}" for f in fars), "pairs.txt acc"):
        table.add_column(col)
    rows = dict(report["variants"])
    if "peer" in report:
        rows["face_recognition (peer)"] = report["peer"]
    for name, r in rows.items():
        acc = r.get("lfw_pairs", {}).get("accuracy_10fold")
        table.add_row(name, *(f"{r['tar_at_far'][f]['tar']:.4f}" for f in fars),
                      f"{acc:.4f}" if acc is not None else "")
    return table
