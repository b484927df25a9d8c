"""`facelens serve`, `facelens keys …` (API keys and the master key), `facelens audit verify`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from facelens.cli.common import JsonFlag, emit, environment_settings, err, errors, out

if TYPE_CHECKING:
    from facelens.cluster.bus import Bus
    from facelens.service.state import ServiceState

SHUTDOWN_GRACE_S = 5
"""On SIGTERM, how long `serve` lets open requests finish before it closes them."""

keys_app = typer.Typer(no_args_is_help=True,
                       help="API keys (create, list, revoke) and the master key (rotate).")
audit_app = typer.Typer(no_args_is_help=True, help="The hash-chained audit log.")


def _state() -> ServiceState:
    """Imported on use: the engine's commands need not load the web stack."""
    from facelens.service.state import ServiceState

    # Keys, audit and rotation live in the database: a NATS or Redis outage must not lock
    # the operator out.
    return ServiceState.open(environment_settings().model_copy(update={"nats_url": None,
                                                               "redis_url": None}))


@keys_app.command("create")
def create_key(name: str,
               scope: Annotated[list[str], typer.Option(help="Repeat for several scopes: "
                                "admin, detect, enrol, identify, verify, events, metrics, "
                                "export, scores, payment.")],
               as_json: JsonFlag = False) -> None:
    """Make an API key. It is printed once and never stored in the clear."""
    with errors():
        state = _state()
        made, key = state.keys.create(name, scope)
        state.audit.record("cli", "key.create", "ok", key_id=made.id, scopes=sorted(made.scopes))
    if as_json:
        emit({"id": made.id, "name": made.name, "scopes": sorted(made.scopes), "key": key})
    else:
        err.print(f"key {made.id} ({', '.join(sorted(made.scopes))}) — shown once, store it now:")
        print(key)


@keys_app.command("list")
def list_keys(as_json: JsonFlag = False) -> None:
    """List API keys (ids, names, scopes; never the keys)."""
    with errors():
        rows = _state().keys.list()
    if as_json:
        emit([{"id": k.id, "name": k.name, "scopes": k.scopes, "created_at": k.created_at,
               "revoked_at": k.revoked_at} for k in rows])
        return
    table = Table("id", "name", "scopes", "created", "revoked")
    for k in rows:
        table.add_row(k.id, escape(k.name), ", ".join(k.scopes), str(k.created_at)[:19],
                      str(k.revoked_at or "")[:19])
    out.print(table)


@keys_app.command("revoke")
def revoke_key(key_id: str) -> None:
    """Revoke an API key at once."""
    with errors():
        state = _state()
        state.keys.revoke(key_id)
        state.audit.record("cli", "key.revoke", "ok", key_id=key_id)
    out.print(f"revoked {key_id}")


@keys_app.command("rotate")
def rotate() -> None:
    """Re-wrap every subject's key under a new master key (crash-safe)."""
    with errors():
        state = _state()
        new_id = state.galleries.rotate_master_key()
        state.audit.record("cli", "masterkey.rotate", "ok", key_id=new_id)
    out.print(f"master key rotated; new key id {new_id}")


@audit_app.command("verify")
def audit_verify(as_json: JsonFlag = False) -> None:
    """Check the audit log's hash chain; exit 1 if a row was edited, removed or reordered."""
    with errors():
        check = _state().audit.verify()
    if as_json:
        emit({"ok": check.ok, "entries": check.entries, "broken_at": check.broken_at,
              "reason": check.reason})
    else:
        (out if check.ok else err).print(
            f"audit log {'intact' if check.ok else 'TAMPERED'}: {check.entries} entries "
            f"verified; {check.reason}" + ("" if check.ok else f" (row {check.broken_at})"))
    if not check.ok:
        raise typer.Exit(1)


def _check_listen(host: str, port: int) -> None:
    """Exit 2 with one line unless `host:port` can be listened on (taken, or no such address):
    uvicorn's own exit for it, 3, is this CLI's "model missing"."""
    import socket

    try:
        with socket.create_server((host, port), family=socket.AF_INET6 if ":" in host
                                  else socket.AF_INET):
            pass
    except OSError as e:
        err.print(f"[red]error:[/red] cannot listen on {escape(host)}:{port}: {e.strerror or e}",
                  highlight=False)
        raise typer.Exit(2) from None


def _bus(url: str, name: str) -> Bus:
    """The NATS connection at `url`, or exit 1 with one line naming it without credentials
    (nats-py logged a traceback per refused attempt; uvicorn's exit 3 is "model missing")."""
    import logging

    from facelens.cluster.bus import Bus, BusError

    nats_log = logging.getLogger("nats")
    nats_log.setLevel(logging.CRITICAL)  # a refused first connection: one line, not tracebacks
    try:
        bus = Bus(url, name=name)
    except BusError as e:
        logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # the abandoned connect task
        cause = type(e.__cause__).__name__ if e.__cause__ else ""
        err.print(f"[red]error:[/red] {escape(str(e).rstrip())} {cause}".rstrip(),
                  highlight=False)
        raise typer.Exit(1) from None
    nats_log.setLevel(logging.NOTSET)  # later disconnections are worth their warnings
    return bus


def serve(host: Annotated[str | None, typer.Option(help="Default: settings (127.0.0.1).")] = None,
          port: Annotated[int | None, typer.Option(help="Default: settings (8000).", min=1,
                                                   max=65535)] = None
          ) -> None:
    """Run the REST API and the web console. The first start prints a new admin key once."""
    import uvicorn

    from facelens.service.app import create_app

    settings = environment_settings()
    host, port = host or settings.host, port or settings.port
    _check_listen(host, port)
    # Redis and NATS checked here: the app connects again as it starts, refused there with
    # a traceback and uvicorn's exit 3.
    if settings.redis_url:
        from facelens.cluster.shared import SharedState

        with errors():
            SharedState(settings.redis_url, settings.redis_prefix).close()
    nats = None
    if settings.nats_url:
        bus = _bus(settings.nats_url, "facelens-check")
        nats = bus.shown
        bus.close()
    with errors():
        state = _state()
        if not state.keys.any_active():
            made, key = state.keys.create("admin (first start)", ["admin"])
            state.audit.record("service", "key.create", "ok", key_id=made.id, scopes=["admin"])
            # stdout, once, never the log: the only copy of the key the operator will get
            print(f"\nfacelens: no API key existed, so an admin key was made. Store it now; "
                  f"it is not shown again:\n\n    {key}\n", flush=True)
        state.close()
    err.print(f"facelens: API and console on http://{host}:{port}/ (docs at /docs)")
    if nats:
        err.print(f"facelens: cameras run in `facelens worker` processes ({nats})")
    # Live streams (the console's alerts, camera previews) never end by themselves: without a
    # bound, SIGTERM waited for every open one (minutes) while the console still said "Live".
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning",
                timeout_graceful_shutdown=SHUTDOWN_GRACE_S)


def worker() -> None:
    """Run cameras, no HTTP: with nats_url set, as many `facelens worker`s as you like share the
    cameras of one database by leases on NATS (a dead worker's cameras move within seconds).
    Stops cleanly on SIGTERM or Ctrl-C, handing its cameras on at once."""
    settings = environment_settings()
    if not settings.nats_url:
        err.print("facelens worker needs nats_url (FACELENS_NATS_URL); without it `facelens "
                  "serve` runs the cameras itself")
        raise typer.Exit(2)
    import logging
    import signal
    import threading

    from facelens.events.delivery import start_delivery
    from facelens.events.store import EventStore
    from facelens.gallery.service import Galleries
    from facelens.video.camera import sinks_from
    from facelens.video.worker import CameraWorker, warm_up

    logging.basicConfig(format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("facelens.worker").setLevel(logging.INFO)  # which cameras it takes
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    bus = _bus(settings.nats_url, "facelens-worker")
    with errors():
        galleries = Galleries(settings)
        warm_up(galleries)
        events = EventStore(galleries.store)
        sink = sinks_from(settings, events)
        delivery = start_delivery(settings, events, sink, bus)  # outbox → stream → sinks
        camera_worker = CameraWorker(settings, bus, galleries, events, delivery.relay,
                                     announcer=sink)
        err.print(f"facelens: worker {camera_worker.me} on {bus.shown}")
        try:
            camera_worker.run(stop)
        finally:
            delivery.close()
            sink.close()
            galleries.store.close()
            bus.close()
