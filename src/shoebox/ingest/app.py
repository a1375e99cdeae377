"""The ingestion orchestration service: FastAPI app over the catalog, the store and the job runner."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from starlette.concurrency import run_in_threadpool

from shoebox.body_limit import DEFAULT_BODY_BYTES, MIB, BodyLimit, install_body_limit, route_limits
from shoebox.http import add_openapi_schemas, install_api_key, install_error_handlers
from shoebox.ingest import language
from shoebox.ingest.config import IngestSettings
from shoebox.ingest.context import ServiceContext, get_ctx
from shoebox.ingest.routes import collections, folders, images, ingest, search

log = logging.getLogger(__name__)


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    settings = settings or IngestSettings()

    def start() -> ServiceContext:
        ctx = ServiceContext.open(settings)
        # Housekeeping first (job details, orphaned thumbnails), in the background: resumed jobs
        # make it leave the thumbnails for after them.
        ctx.housekeeping.request()
        # The language hint's model takes ≈ 0.5 s to load: in the background, never in a request's way
        # (a search that comes first waits for it in its worker thread).
        threading.Thread(target=language.load, name="language-model", daemon=True).start()
        resumed = ctx.jobs.resume_unfinished()
        if resumed:
            log.info("resumed %d unfinished ingest job(s)", resumed)
        if migrations := ctx.migrations.resume_unfinished():
            log.info("resumed %d unfinished model migration(s)", migrations)
        return ctx

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Opening the store and the catalog, and joining the jobs at the end, take seconds on a big
        # library: in a worker thread, never in the event loop.
        ctx = await run_in_threadpool(start)
        app.state.ctx = ctx
        try:
            yield
        finally:
            await run_in_threadpool(ctx.close)

    app = FastAPI(title="Shoebox ingestion service", version="1", lifespan=lifespan)
    install_error_handlers(app)
    # Uploads (search by image, combined queries) up to their files' limit, every other body 1 MiB.
    uploads = BodyLimit(search.MAX_UPLOAD_BYTES + MIB)
    limits = {"/api/v1/search/image": uploads, "/api/v1/search/query": uploads}
    install_body_limit(app, route_limits(limits, BodyLimit(DEFAULT_BODY_BYTES)))
    install_api_key(app, settings.api_key)

    @app.get("/health", tags=["health"])
    def health(ctx: ServiceContext = Depends(get_ctx)) -> dict:
        return {
            "status": "ok",
            "ml": ctx.ml.probe(timeout=1.0),
            "vector_db": ctx.store.kind,
            "vector_store": ctx.store.describe(),
            "ingest": ctx.jobs.stats(),
            "browse": ctx.browse.stats() if ctx.browse else {},
            "housekeeping": ctx.housekeeping.last,
        }

    for module in (collections, ingest, search, images, folders):
        app.include_router(module.router)
    add_openapi_schemas(app, search.BODY_MODELS)
    return app
