"""`facelens calibrate FOLDER` and `facelens eval demographics ROOT`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from facelens.cli.common import (
    JsonFlag,
    JsonOut,
    Workers,
    emit,
    emit_report,
    environment_settings,
    err,
    errors,
    out,
    progress,
    require_folder,
    writable,
)

GroupOption = Annotated[list[str] | None, typer.Option(
    "--group", help="NAME=FILE: the person-folder names of a group, one a line, from the "
                    "data set's own labels (repeatable).")]


def _groups(items: list[str] | None) -> dict[str, set[str]]:
    from facelens.eval.calibrate import read_group

    groups = {}
    for item in items or []:
        name, _, file = item.partition("=")
        if not file or not Path(file).is_file():
            raise typer.BadParameter(f"--group {item!r}: use NAME=FILE with an existing file")
        groups[name] = read_group(Path(file))
    return groups


def calibrate(folder: Path,
              group: GroupOption = None,
              save_to: Annotated[Path | None, typer.Option(
                  help="Write the calibration here instead of the data directory's "
                       "calibration/ folder (use it with FACELENS_CALIBRATION_FILE).",
                  callback=writable)] = None,
              dry_run: Annotated[bool, typer.Option(help="Print, write nothing.")] = False,
              singles: Annotated[int, typer.Option(
                  help="People with one photo in a folder each: how many to sample (the "
                       "`eval lfw` protocol's 1000 by default).")] = 1000,
              workers: Workers = 2,
              cache: Annotated[Path, typer.Option(help="Per-image feature cache.")]
              = Path("out/eval"),
              as_json: JsonFlag = False) -> None:
    """Fit the operating points on photos of the people this deployment watches: FOLDER holds
    one folder per person or one photo per person (many different people). Prints each
    threshold with its impostor pair count, warns below the FAR they can support, and writes
    the calibration the engine and the service then use (`facelens models` names it). With
    --group, each threshold is the highest among the whole set and each group."""
    from facelens.eval.calibrate import calibrate as fit_folder
    from facelens.eval.lfw_report import write_calibration
    from facelens.matching.calibration import calibration_file, load_calibration
    from facelens.models.runtime import runtime_label

    require_folder(folder)
    settings = environment_settings()
    groups = _groups(group)
    active = load_calibration(runtime_label(settings.runtime), settings.calibration_dir,
                              settings.calibration_file)
    with errors(), progress() as start:
        report = fit_folder(folder, runtime=settings.runtime, groups=groups,
                            default_weight=active.fusion_weight(settings.fusion_weight),
                            workers=workers, cache=cache, progress=start, singles=singles,
                            keep_bands=active, shift_tta=settings.sface_shift_tta)
    if not dry_run:
        target = save_to or settings.calibration_dir / calibration_file(report["sface_runtime"])
        by_group = f"; highest of groups {', '.join(groups)}, rest" if groups else ""
        source = (f"{folder.name}: {report['identities']} people, {report['images']} photos, "
                  f"{report['sface_runtime']}{by_group}")
        write_calibration(report, source, target)
        report["saved"] = str(target)
    if as_json:
        emit(report)
        return
    out.print(calibration_table(report))
    for warning in report["warnings"]:
        err.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False)
    if "quality_bands" in report:
        err.print(f"quality bands kept from {report['quality_bands']['kept_from']} (sharp "
                  "photos cannot fit them): refit with `facelens eval lfw ROOT --degrade "
                  "cctv-18 --degrade cctv-12 --bands --save-to FILE`", highlight=False)
    if "saved" in report:
        err.print(f"calibration saved: {report['saved']}", markup=False, highlight=False)


def calibration_table(report: dict[str, Any]) -> Table:
    table = Table(title=f"{report['root']}: {report['identities']} people, {report['images']} "
                        f"photos, {report['faces_not_found']} without a face; fusion weight "
                        f"{report['fusion_weight']}")
    fars = ("1e-02", "1e-03", "1e-04", "1e-05")
    for col in ("embedder", "impostor pairs", *(f"FAR {f}" for f in fars)):
        table.add_column(col)
    for name, v in report["variants"].items():
        cells = []
        for f in fars:
            cell = f"{v['tar_at_far'][f]['threshold']:.4f}"
            cell += "" if v["supported"][f] else " (!)"
            cells.append(cell + (" ↑" if f in v.get("raised", []) else ""))
        table.add_row(name, f"{v['impostor_pairs']:,}", *cells)
    table.caption = "(!) fewer pairs than the FAR needs; ↑ raised to a group's threshold"
    return table


def eval_demographics(root: Path,
                      group: GroupOption = None,
                      workers: Workers = 2,
                      cache: Annotated[Path, typer.Option(help="Per-image feature cache.")]
                      = Path("out/eval"),
                      json_out: JsonOut = None
                      ) -> None:
    """False-match rate per labelled group at the calibrated FAR 1e-3 and 1e-4 thresholds
    (NIST FRVT Part 3 style), with pair counts and 95% intervals."""
    from facelens.eval.demographics import demographic_fmr
    from facelens.matching.calibration import load_calibration
    from facelens.models.runtime import runtime_label

    require_folder(root)
    groups = _groups(group)
    if not groups:
        raise typer.BadParameter("give at least one --group NAME=FILE")
    settings = environment_settings()
    calibration = load_calibration(runtime_label(settings.runtime), settings.calibration_dir,
                                   settings.calibration_file)
    with errors(), progress() as start:
        report = demographic_fmr(root, groups, calibration, runtime=settings.runtime,
                                 workers=workers, cache=cache, progress=start)
    emit_report(report, json_out)
