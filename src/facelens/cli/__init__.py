"""`facelens …`: a thin Typer shell over the library.

Exit codes: 0 ok / match · 1 no match or no face · 2 bad input · 3 model missing.

Every command imports what it needs when it runs: `facelens --help` and `facelens models`
load no model runtime, web framework or video library (tests/test_cli.py checks it).
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from facelens.cli import calibrate as cli_calibrate
from facelens.cli import gallery as cli_gallery
from facelens.cli import scene as cli_scene
from facelens.cli import service as cli_service
from facelens.cli import video as cli_video
from facelens.cli.common import JsonFlag, emit, err, errors, out, progress

if TYPE_CHECKING:
    import numpy as np

    from facelens.api import Engine
    from facelens.face import Face
    from facelens.matching.calibration import Calibration

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Open, self-hosted face recognition. Exit codes: 0 ok/match, "
                       "1 no match or no face, 2 bad input, 3 model missing.")
eval_app = typer.Typer(no_args_is_help=True, help="Accuracy harnesses.")
app.add_typer(eval_app, name="eval")
app.add_typer(cli_gallery.gallery_app, name="gallery")
app.add_typer(cli_service.keys_app, name="keys")
app.add_typer(cli_service.audit_app, name="audit")
app.command()(cli_service.serve)
app.command()(cli_service.worker)
app.command()(cli_video.watch)
eval_app.command("watch")(cli_video.eval_watch)
eval_app.command("tracks")(cli_video.eval_tracks)
eval_app.command("liveness")(cli_video.eval_liveness)
eval_app.command("depiction")(cli_video.eval_depiction)
eval_app.command("plates")(cli_scene.eval_plates)
eval_app.command("street")(cli_scene.eval_street)
app.command()(cli_scene.objects)
app.command("watch-street")(cli_scene.watch_street)
app.command()(cli_calibrate.calibrate)
eval_app.command("demographics")(cli_calibrate.eval_demographics)
app.command()(cli_gallery.enroll)
app.command("enroll-folder")(cli_gallery.enroll_folder)
app.command()(cli_gallery.identify)


class DetectorName(StrEnum):
    yunet = "yunet"
    centerface = "centerface"


class SearchEmbedder(StrEnum):
    fusion = "fusion"
    sface_flip = "sface-flip"


class SearchIndex(StrEnum):
    auto = "auto"
    sign = "sign"
    ivf = "ivf"


def _engine() -> Engine:
    """The engine under the environment's settings (the CLI is an entry point)."""
    from facelens.api import default_engine

    return default_engine()


def _calibration() -> Calibration:
    """The calibration in force under the environment's settings, without loading a model."""
    from facelens.matching.calibration import load_calibration
    from facelens.models.runtime import runtime_label
    from facelens.settings import get_settings

    settings = get_settings()
    return load_calibration(runtime_label(settings.runtime), settings.calibration_dir,
                            settings.calibration_file)


def _decoded(image: Path) -> np.ndarray:
    """The image decoded once: detection, quality, attributes and drawing all read it."""
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
    err.print(f"drawn: {target}")


def _faces_command(image: Path, rgb: np.ndarray, faces: list[Face], as_json: bool,
                   draw: Path | None) -> None:
    if draw:
        with errors():
            _draw(rgb, faces, draw)
    if as_json:
        emit({"image": str(image), "faces": [f.to_dict() for f in faces]})
    else:
        out.print(_face_table(faces, f"{image}: {len(faces)} face(s)"))
    if not faces:
        raise typer.Exit(1)


@app.command()
def detect(image: Path, draw: Annotated[Path | None, typer.Option(
               help="Write a copy with boxes, landmarks and quality.")] = None,
           detector: Annotated[DetectorName, typer.Option(help="Which detector.")]
           = DetectorName.yunet,
           as_json: JsonFlag = False) -> None:
    """Find faces: boxes, 5 landmarks, scores and quality."""
    with errors():
        rgb = _decoded(image)
        faces = _engine().detect(rgb, detector=detector.value)
    _faces_command(image, rgb, faces, as_json, draw)


@app.command()
def analyze(image: Path, draw: Annotated[Path | None, typer.Option(
                help="Write a copy with boxes, landmarks, quality and attributes.")] = None,
            as_json: JsonFlag = False) -> None:
    """Detect faces with quality, age (with its typical error) and perceived sex."""
    with errors():
        rgb = _decoded(image)
        faces = _engine().analyze(rgb)
    _faces_command(image, rgb, faces, as_json, draw)


@app.command()
def verify(a: Path, b: Path,
           far: Annotated[float, typer.Option(help="False-accept rate of the decision.")] = 1e-3,
           embedder: Annotated[str | None, typer.Option(
               help="sface, sface-flip, dlib or fusion (default: settings)")] = None,
           as_json: JsonFlag = False) -> None:
    """Are A and B the same person? A's largest face against every face of B; exit 0 if one
    matches, 1 if not (or no face)."""
    with errors():
        comparison = _engine().compare(a, b, far=far, embedder=embedder)
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


@app.command()
def models(as_json: JsonFlag = False) -> None:
    """Print a model card per model (task, source package, licence, accuracy) and the
    calibration in force."""
    from facelens.models.registry import CARDS, ModelMissingError, measured_accuracy, model_path
    from facelens.settings import get_settings

    settings = get_settings()
    with errors():
        calibration = _calibration()
    measured = measured_accuracy(calibration.path.parent if calibration.path else None)
    in_force = f"calibration: {calibration.origin} ({calibration.source})"
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


@eval_app.command("lfw")
def eval_lfw(root: Path,
             plot: Annotated[Path | None, typer.Option(help="Write the ROC curves here.")] = None,
             peer: Annotated[bool, typer.Option(help="Also run face_recognition.")] = False,
             save: Annotated[bool, typer.Option(
                 help="Store the thresholds (and measured accuracy beside them) in the data "
                      "directory's calibration/ folder, where the engine and the service "
                      "read them.")] = False,
             save_to: Annotated[Path | None, typer.Option(
                 help="Store the thresholds in this file instead (measured.json beside it); "
                      "use it with FACELENS_CALIBRATION_FILE.")] = None,
             workers: Annotated[int, typer.Option(help="Processes (1 thread each).")] = 2,
             cache: Annotated[Path, typer.Option(help="Per-image feature cache.")]
             = Path("out/eval"),
             json_out: Annotated[Path | None, typer.Option(help="Write the report here.")] = None,
             degrade: Annotated[list[str] | None, typer.Option(
                 help="Also measure a CCTV-like copy (repeatable): cctv (= cctv-18: eyes ~18 "
                      "px apart, blur σ 0.8, JPEG 35), cctv-24, cctv-12; made from each "
                      "image as an LFW-framed photo before detection.")] = None,
             bands: Annotated[bool, typer.Option(
                 help="Fit per-quality-band fusion weights and thresholds on the clean and "
                      "degraded images (needs --degrade; --save stores them).")] = False,
             as_json: JsonFlag = False) -> None:
    """Verification accuracy, all-vs-all, on an LFW-layout folder (see docs/evaluation.md)."""
    from facelens.eval.lfw_report import evaluate, plot_roc, save_calibration
    from facelens.matching.calibration import calibration_file
    from facelens.settings import get_settings

    if not root.is_dir():
        err.print(f"[red]error:[/red] {escape(str(root))} is not a folder", highlight=False)
        raise typer.Exit(2)
    if bands and not degrade:
        raise typer.BadParameter("quality bands are fitted on degraded copies too",
                                 param_hint="--degrade")
    settings = get_settings()
    with errors(), progress() as start:
        report, curves = evaluate(root, runtime=settings.runtime, peer=peer, workers=workers,
                                  cache=cache, progress=start, degrade=tuple(degrade or ()))
        if bands:
            from facelens.eval.lfw_bands import evaluate_cached

            report["quality_bands"] = evaluate_cached(root, report, settings.runtime,
                                                      tuple(degrade or ()), cache, workers)
    if plot:
        plot_roc(curves, plot)
    if save or save_to:
        target = save_to or settings.calibration_dir / calibration_file(report["sface_runtime"])
        save_calibration(report, target)
        err.print(f"calibration saved: {target}", highlight=False)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=1) + "\n")
    if as_json:
        emit(report)
        return
    out.print(lfw_table(report))
    for name, level in report.get("degraded", {}).items():
        out.print(lfw_table(level | {"root": f"{report['root']} made {name}",
                                     "images": report["images"]}))


@eval_app.command("identify")
def eval_identify(root: Path,
                  embedder: Annotated[str, typer.Option(help="Which embedding to search.")]
                  = "fusion",
                  workers: Annotated[int, typer.Option(help="Processes (1 thread each).")] = 2,
                  cache: Annotated[Path, typer.Option(help="Per-image feature cache.")]
                  = Path("out/eval"),
                  json_out: Annotated[Path | None, typer.Option(help="Write the report here.")]
                  = None) -> None:
    """Open-set 1:N identification on an LFW-layout folder: rank-1, FNIR at FPIR."""
    from facelens.eval.identify_eval import evaluate_identification

    with errors(), progress() as start:
        report = evaluate_identification(_engine(), root, embedder=embedder, workers=workers,
                                         cache=cache, progress=start)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=1) + "\n")
    emit(report)


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


bench_app = typer.Typer(invoke_without_command=True,
                        help="Speed benchmarks (JSON); ratios against baselines in the same run.")
app.add_typer(bench_app, name="bench")
bench_app.command("street")(cli_scene.bench_street)


@bench_app.callback()
def bench(ctx: typer.Context,
          images: Annotated[Path | None, typer.Option(
              help="Folder of images, one sub-folder per person (e.g. lfw-dev). Required "
                   "unless a sub-command is given.")] = None,
          count: Annotated[int, typer.Option(help="Images to time stage by stage.")] = 60,
          pairs: Annotated[int, typer.Option(
              help="Verify pairs to time (half one person, half two).")] = 100,
          peer: Annotated[bool, typer.Option(help="Time face_recognition too.")] = True,
          json_out: Annotated[Path | None, typer.Option(help="Write the JSON here.")] = None
          ) -> None:
    """Engine: median ms per stage, overhead over raw model time, verify throughput vs peer."""
    if ctx.invoked_subcommand:
        return
    if images is None:
        raise typer.BadParameter("give the images to time", param_hint="--images")
    from facelens.eval.bench import run_bench

    with errors(), progress() as start:
        report = run_bench(_engine(), images, count=count, pairs_count=pairs, peer=peer,
                           progress=start)
    _write_json(report, json_out)


@bench_app.command("search")
def bench_search(n: Annotated[int, typer.Option("--n", help="Faces in the index.")] = 1_000_000,
                 embedder: Annotated[SearchEmbedder, typer.Option(
                     help="Whose vectors to imitate: fusion (256-d, the default galleries') "
                          "or sface-flip (128-d).")] = SearchEmbedder.fusion,
                 queries: int = 1000,
                 index: Annotated[SearchIndex, typer.Option(
                     help="The ANN index: auto (what large galleries use on this CPU), sign "
                          "(AVX-512 or AVX2) or ivf.")]
                 = SearchIndex.auto,
                 json_out: Annotated[Path | None, typer.Option(help="Write the JSON here.")]
                 = None) -> None:
    """Vector search on synthetic unit vectors: ANN vs numpy brute force, recall, memory."""
    from facelens.eval.search_bench import run_search_bench

    with errors(), progress() as start:
        report = run_search_bench(_calibration(), n=n,
                                  embedder=embedder.value,  # type: ignore[arg-type]
                                  queries=queries, progress=start,
                                  kind=index.value)  # type: ignore[arg-type]
    _write_json(report, json_out)


@bench_app.command("milvus")
def bench_milvus(uri: Annotated[str, typer.Option(help="A running Milvus server.")],
                 n: Annotated[int, typer.Option("--n", help="Faces per collection.")]
                 = 1_000_000,
                 kinds: Annotated[str, typer.Option(
                     help="Index kinds, comma-separated (DISKANN needs a build that has "
                          "it and queryNode.enableDisk; the PyPI 2.3.5 server has not).")]
                 = "IVF_SQ8,HNSW",
                 queries: int = 1000,
                 server_pid: Annotated[int | None, typer.Option(
                     help="The server's process, to measure its memory per face.")] = None,
                 json_out: Annotated[Path | None, typer.Option(help="Write the JSON here.")]
                 = None) -> None:
    """Milvus index kinds at scale: memory per face, recall@1 of mates, queries/s."""
    from facelens.eval.milvus_bench import run_milvus_bench

    with errors(), progress() as start:
        report = run_milvus_bench(uri, n=n, queries=queries, kinds=tuple(kinds.split(",")),
                                  server_pid=server_pid, progress=start)
    _write_json(report, json_out)


@bench_app.command("service")
def bench_service(lfw: Annotated[Path, typer.Option(help="lfw-style folder of people.")],
                  people: Annotated[int, typer.Option(help="Gallery size.")] = 40,
                  overload_s: Annotated[float, typer.Option(help="Overload duration.")] = 20.0,
                  json_out: Annotated[Path | None, typer.Option(help="Write the JSON here.")]
                  = None) -> None:
    """HTTP identify throughput vs the library in-process; 429s, /healthz p99 and recovery
    under 4x overload."""
    from facelens.eval.service_bench import run_service_bench

    with errors(), progress() as start:
        report = run_service_bench(lfw, people=people, overload_s=overload_s, progress=start)
    _write_json(report, json_out)


@bench_app.command("scaleout")
def bench_scaleout(lfw: Annotated[Path | None, typer.Option(
                       help="lfw-style folder: one photo per person enrolled, others are jobs.")]
                   = None,
                   clip: Annotated[list[Path] | None, typer.Option(
                       help="Video clip whose faces are jobs too (repeatable).")] = None,
                   rounds: Annotated[int, typer.Option(help="k=1 / k=2 pairs (ABAB…).")] = 5,
                   jobs_per_worker: Annotated[int | None, typer.Option(
                       help="Jobs per worker; default one pass over the distinct jobs.")]
                   = None,
                   people: int = 40,
                   sleep_ms: Annotated[float, typer.Option(
                       help="The modelled GPU job's duration.")] = 20.0,
                   idle_wait_s: Annotated[float, typer.Option(
                       help="Before each real run, wait up to this long for load < 0.3.")]
                   = 90.0,
                   json_out: Annotated[Path | None, typer.Option(help="Write the JSON here.")]
                   = None) -> None:
    """P6 scale-out: best-shot jobs on a NATS JetStream work queue, k=1 and k=2 pinned worker
    processes; then sleep jobs for k=1…32 and a Universal Scalability Law fit."""
    from facelens.eval.scaleout import run_scaleout
    from facelens.settings import get_settings

    with errors(), progress() as start:
        report = run_scaleout(get_settings(), lfw, clip or [], rounds=rounds,
                              jobs_per_worker=jobs_per_worker, people=people,
                              sleep_ms=sleep_ms, idle_wait_s=idle_wait_s, progress=start)
    _write_json(report, json_out)


def _write_json(report: dict[str, Any], target: Path | None) -> None:
    if target:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(report, indent=1) + "\n")
    emit(report)


def main() -> None:
    app()
