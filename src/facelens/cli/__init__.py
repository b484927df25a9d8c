"""`facelens …`: a thin Typer shell over the library. This module builds the app and registers
the commands, which live by concern in the modules beside it.

Exit codes: 0 ok / match · 1 no match or no face · 2 bad input · 3 model missing.

Every command imports what it needs when it runs: `facelens --help` and `facelens models`
load no model runtime, web framework or video library (tests/test_cli.py checks it).
"""

from __future__ import annotations

import typer

from facelens.cli import accuracy as cli_accuracy
from facelens.cli import bench as cli_bench
from facelens.cli import calibrate as cli_calibrate
from facelens.cli import faces as cli_faces
from facelens.cli import gallery as cli_gallery
from facelens.cli import scene as cli_scene
from facelens.cli import service as cli_service
from facelens.cli import video as cli_video

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Open, self-hosted face recognition. Exit codes: 0 ok/match, "
                       "1 no match or no face, 2 bad input, 3 model missing.")
eval_app = typer.Typer(no_args_is_help=True, help="Accuracy harnesses.")
bench_app = typer.Typer(invoke_without_command=True,
                        help="Speed benchmarks (JSON); ratios against baselines in the same run.")
# `facelens --help` lists commands in the order they are registered here.
app.add_typer(eval_app, name="eval")
app.add_typer(cli_gallery.gallery_app, name="gallery")
app.add_typer(cli_service.keys_app, name="keys")
app.add_typer(cli_service.audit_app, name="audit")
app.add_typer(bench_app, name="bench")
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
app.command()(cli_faces.detect)
app.command()(cli_faces.analyze)
app.command()(cli_faces.verify)
app.command()(cli_faces.models)
eval_app.command("lfw")(cli_accuracy.eval_lfw)
eval_app.command("identify")(cli_accuracy.eval_identify)
bench_app.callback()(cli_bench.bench)
bench_app.command("street")(cli_scene.bench_street)
bench_app.command("street-beside")(cli_scene.bench_street_beside)
bench_app.command("search")(cli_bench.bench_search)
bench_app.command("milvus")(cli_bench.bench_milvus)
bench_app.command("service")(cli_bench.bench_service)
bench_app.command("scaleout")(cli_bench.bench_scaleout)
