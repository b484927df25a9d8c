"""`facelens bench …`: speed benchmarks as JSON, each a ratio against a baseline of the same run."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from facelens.cli.common import (
    JsonOut,
    calibration_in_force,
    emit_report,
    environment_engine,
    errors,
    progress,
)


class SearchEmbedder(StrEnum):
    fusion = "fusion"
    sface_flip = "sface-flip"


class SearchIndex(StrEnum):
    auto = "auto"
    sign = "sign"
    ivf = "ivf"


def bench(ctx: typer.Context,
          images: Annotated[Path | None, typer.Option(
              help="Folder of images, one sub-folder per person (e.g. lfw-dev). Required "
                   "unless a sub-command is given.")] = None,
          count: Annotated[int, typer.Option(help="Images to time stage by stage.", min=1)] = 60,
          pairs: Annotated[int, typer.Option(
              help="Verify pairs to time (half one person, half two).", min=1)] = 100,
          peer: Annotated[bool, typer.Option(help="Time face_recognition too.")] = True,
          json_out: JsonOut = None) -> None:
    """Engine: median ms per stage, overhead over raw model time, verify throughput vs peer."""
    if ctx.invoked_subcommand:
        return
    if images is None:
        raise typer.BadParameter("give the images to time", param_hint="--images")
    from facelens.eval.bench import run_bench

    with errors(), progress() as start:
        report = run_bench(environment_engine(), images, count=count, pairs_count=pairs,
                           peer=peer, progress=start)
    emit_report(report, json_out)


def bench_search(n: Annotated[int, typer.Option("--n", help="Faces in the index.", min=1)]
                 = 1_000_000,
                 embedder: Annotated[SearchEmbedder, typer.Option(
                     help="Whose vectors to imitate: fusion (256-d, the default galleries') "
                          "or sface-flip (128-d).")] = SearchEmbedder.fusion,
                 queries: Annotated[int, typer.Option(help="Searches timed.", min=1)]
                 = 1000,
                 index: Annotated[SearchIndex, typer.Option(
                     help="The ANN index: auto (what large galleries use on this CPU), sign "
                          "(AVX-512 or AVX2) or ivf.")]
                 = SearchIndex.auto,
                 json_out: JsonOut = None) -> None:
    """Vector search on synthetic unit vectors: ANN vs numpy brute force, recall, memory."""
    from facelens.eval.search_bench import run_search_bench

    with errors(), progress() as start:
        report = run_search_bench(calibration_in_force(), n=n,
                                  embedder=embedder.value,  # type: ignore[arg-type]
                                  queries=queries, progress=start,
                                  kind=index.value)  # type: ignore[arg-type]
    emit_report(report, json_out)


def bench_milvus(uri: Annotated[str, typer.Option(help="A running Milvus server.")],
                 n: Annotated[int, typer.Option("--n", help="Faces per collection.", min=1)]
                 = 1_000_000,
                 kinds: Annotated[str, typer.Option(
                     help="Index kinds, comma-separated (DISKANN needs a build that has "
                          "it and queryNode.enableDisk; the PyPI 2.3.5 server has not).")]
                 = "IVF_SQ8,HNSW",
                 queries: Annotated[int, typer.Option(help="Searches timed.", min=1)]
                 = 1000,
                 server_pid: Annotated[int | None, typer.Option(
                     help="The server's process, to measure its memory per face.")] = None,
                 json_out: JsonOut = None) -> None:
    """Milvus index kinds at scale: memory per face, recall@1 of mates, queries/s."""
    from facelens.eval.milvus_bench import run_milvus_bench

    with errors(), progress() as start:
        report = run_milvus_bench(uri, n=n, queries=queries, kinds=tuple(kinds.split(",")),
                                  server_pid=server_pid, progress=start)
    emit_report(report, json_out)


def bench_service(lfw: Annotated[Path, typer.Option(help="lfw-style folder of people.")],
                  people: Annotated[int, typer.Option(help="Gallery size.", min=1)] = 40,
                  overload_s: Annotated[float, typer.Option(help="Overload duration.")] = 20.0,
                  json_out: JsonOut = None) -> None:
    """HTTP identify throughput vs the library in-process; 429s, /healthz p99 and recovery
    under 4x overload."""
    from facelens.eval.service_bench import run_service_bench

    with errors(), progress() as start:
        report = run_service_bench(lfw, people=people, overload_s=overload_s, progress=start)
    emit_report(report, json_out)


def bench_scaleout(lfw: Annotated[Path | None, typer.Option(
                       help="lfw-style folder: one photo per person enrolled, others are jobs.")]
                   = None,
                   clip: Annotated[list[Path] | None, typer.Option(
                       help="Video clip whose faces are jobs too (repeatable).")] = None,
                   rounds: Annotated[int, typer.Option(help="k=1 / k=2 pairs (ABAB…).", min=1)] = 5,
                   jobs_per_worker: Annotated[int | None, typer.Option(
                       help="Jobs per worker; default one pass over the distinct jobs.")]
                   = None,
                   people: int = 40,
                   sleep_ms: Annotated[float, typer.Option(
                       help="The modelled GPU job's duration.")] = 20.0,
                   idle_wait_s: Annotated[float, typer.Option(
                       help="Before each real run, wait up to this long for load < 0.3.")]
                   = 90.0,
                   json_out: JsonOut = None) -> None:
    """P6 scale-out: best-shot jobs on a NATS JetStream work queue, k=1 and k=2 pinned worker
    processes; then sleep jobs for k=1…32 and a Universal Scalability Law fit."""
    from facelens.eval.scaleout import run_scaleout
    from facelens.settings import get_settings

    with errors(), progress() as start:
        report = run_scaleout(get_settings(), lfw, clip or [], rounds=rounds,
                              jobs_per_worker=jobs_per_worker, people=people,
                              sleep_ms=sleep_ms, idle_wait_s=idle_wait_s, progress=start)
    emit_report(report, json_out)
