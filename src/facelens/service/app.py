"""The FastAPI application: API under /v1, console under /console, /healthz, /metrics.

    uvicorn --factory facelens.service.app:create_app     (or: facelens serve)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from importlib import resources

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from facelens import __version__
from facelens.policy.retention import apply_retention
from facelens.service import (
    routes_admin,
    routes_bulk,
    routes_cameras,
    routes_faces,
    routes_galleries,
    routes_liveness,
    routes_scene,
    routes_subjects,
)
from facelens.service.http import (
    ERROR_RESPONSES,
    Admission,
    BodyLimit,
    Methods,
    SecurityHeaders,
    install_error_handlers,
    install_metrics,
)
from facelens.service.json_uploads import JsonUploads
from facelens.service.limits import InferencePool
from facelens.service.state import ServiceState
from facelens.service.uploads import one_value_per_field
from facelens.settings import Settings, get_settings

log = logging.getLogger("facelens.service")
STATIC = resources.files("facelens.web") / "static"


async def _purge_daily(state: ServiceState) -> None:
    """The retention pass (policy/retention.py), applied at start and then every
    purge_interval_h hours."""
    while True:
        try:
            purged = await asyncio.get_running_loop().run_in_executor(
                None, apply_retention, state.galleries, state.settings)
            state.audit.record("service", "purge", "ok", **purged.audit_fields())
        except Exception:  # keep the loop alive; the next run retries
            log.exception("retention purge failed")
        await asyncio.sleep(state.settings.purge_interval_h * 3600)


def _pool(app: FastAPI) -> InferencePool | None:
    state = getattr(app.state, "facelens", None)  # None until the lifespan has opened it
    return state.pool if state else None


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = ServiceState.open(settings)
        app.state.facelens = state
        purge = asyncio.create_task(_purge_daily(state))
        state.cameras.start()
        try:
            yield
        finally:
            purge.cancel()
            state.close()

    # /docs from the Swagger UI 5 files the pinned fastapi-offline wheel carries (it reads
    # OpenAPI 3.1), never a CDN; no /redoc.
    app = FastAPI(title="facelens", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, responses=ERROR_RESPONSES,
                  dependencies=[Depends(one_value_per_field)],
                  description="Open, self-hosted face recognition. Every route but /healthz "
                              "needs an API key (Authorization: Bearer fl_…).")
    install_error_handlers(app)
    install_metrics(app)
    # Added first, so it runs inside BodyLimit: the JSON it reads whole is bounded already.
    app.add_middleware(JsonUploads, spec=app.openapi)
    app.add_middleware(BodyLimit, limit=int(settings.max_body_mb * 2**20),
                       archive_limit=int(settings.max_archive_mb * 2**20),
                       archive_paths=("/subjects/zip",))
    app.add_middleware(Admission, pool=lambda: _pool(app))
    app.add_middleware(Methods)
    app.add_middleware(SecurityHeaders)
    app.include_router(routes_faces.router)
    app.include_router(routes_galleries.router)
    app.include_router(routes_bulk.router)
    app.include_router(routes_subjects.router)
    app.include_router(routes_admin.router)
    app.include_router(routes_cameras.router)
    app.include_router(routes_liveness.router)
    app.include_router(routes_scene.router)

    @app.get("/healthz", tags=["admin"], summary="Liveness: answers without a key")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # The console is a static shell (no data in it); every call it makes carries the key.
    @app.get("/", include_in_schema=False)
    async def root() -> RedirectResponse:
        return RedirectResponse("/console/")

    @app.get("/console/", include_in_schema=False)
    async def console() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), headers={"Cache-Control": "no-store"})

    app.mount("/console/static", StaticFiles(directory=str(STATIC)), name="console-static")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="facelens API",
                                   swagger_js_url="/docs/static/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/static/swagger-ui.css",
                                   swagger_favicon_url="/docs/static/favicon.png")

    swagger_files = resources.files("fastapi_offline") / "static"
    app.mount("/docs/static", StaticFiles(directory=str(swagger_files)), name="docs-static")
    return app
