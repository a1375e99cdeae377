"""Browse routes: a paged listing, one image's metadata, its thumbnail and the image itself.

Files are only ever served from the paths stored in an image's payload (what was indexed),
re-checked on disk; a path never comes from the client. An id is derived from the content,
so it names the same image in every collection.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from shoebox.ingest import search
from shoebox.ingest.browse import IndexedFile, open_indexed
from shoebox.ingest.context import ServiceContext
from shoebox.ingest.search import (
    candidate_collections,
    check_image_id,
    context,
    resolve_collection,
    vector_call,
)
from shoebox.ingest.stages import store_thumbnail, thumbnail_name
from shoebox.protocol import ErrorCode, ShoeboxError
from shoebox.store import Record

router = APIRouter(tags=["images"])

MAX_PER_PAGE = 500
# Pages beyond this are refused (422) rather than scrolled to: 1,000,000 images at 10 per page.
MAX_PAGE = 100_000
# Formats every current browser shows as they are; anything else (RAW, HEIC, TIFF…) gets a JPEG rendition.
BROWSER_FORMATS = {"jpg", "jpeg", "jpe", "png", "gif", "webp", "avif", "bmp"}
RENDITION_QUALITY = 90
# The id is a content hash: the bytes behind it never change, so caches may keep them.
IMMUTABLE = {"Cache-Control": "private, max-age=31536000, immutable"}
REVALIDATE = {"Cache-Control": "private, no-cache"}
# Whether a rendition or thumbnail came from a cache (hit) or was decoded for this request (miss).
CACHE_HEADER = "X-Rendition-Cache"


class ImagePage(BaseModel):
    total: int
    page: int
    per_page: int
    collection_name: str
    results: list[dict[str, Any]]


@router.get("/api/v1/images", response_model=ImagePage)
async def list_images(
    request: Request,
    collection_name: str | None = None,
    page: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 1,
    per_page: Annotated[int, Query(ge=1, le=MAX_PER_PAGE)] = 50,
) -> ImagePage:
    """Every image of a collection, a page at a time, in a stable order (by id)."""
    ctx = context(request)
    ref = await run_in_threadpool(resolve_collection, ctx, collection_name)
    if not ref.exists:
        return ImagePage(total=0, page=page, per_page=per_page, collection_name=ref.name, results=[])
    total, hits = await vector_call(
        search.list_page, ctx.store, ref.store, page=page, per_page=per_page
    )
    # Up to MAX_PER_PAGE payloads: built in a worker thread, not in the event loop.
    results = await run_in_threadpool(lambda: [h.model_dump(exclude={"score"}) for h in hits])
    return ImagePage(total=total, page=page, per_page=per_page, collection_name=ref.name, results=results)


def _find_point(ctx: ServiceContext, point_id: str, collection_name: str | None) -> tuple[str, Record]:
    for name, store_name in candidate_collections(ctx, collection_name):
        if not ctx.store.collection_exists(store_name):
            continue
        records = ctx.store.get(store_name, [point_id])
        if records:
            return name, records[0]
    where = f"collection {collection_name!r}" if collection_name else "any collection"
    raise ShoeboxError(ErrorCode.NOT_FOUND, f"no image {point_id} in {where}")


async def _lookup(request: Request, image_id: str, collection_name: str | None) -> tuple[str, Record]:
    point_id = check_image_id(image_id)
    return await vector_call(_find_point, context(request), point_id, collection_name)


@router.get("/api/v1/images/{image_id}/info")
async def image_info(image_id: str, request: Request, collection_name: str | None = None) -> dict[str, Any]:
    """All stored metadata of one image, every path holding it, and which of them still exist."""
    name, record = await _lookup(request, image_id, collection_name)
    payload = dict(record.payload)
    paths = payload.get("paths") or []
    existing = await run_in_threadpool(lambda: [p for p in paths if os.path.isfile(p)])
    point_id = record.id
    return {
        **payload,
        "id": point_id,
        "collection_name": name,
        "paths": paths,
        "missing_paths": [p for p in paths if p not in existing],
        "thumbnail_url": search.thumbnail_url(point_id),
        "image_url": f"/api/v1/images/{point_id}/image",
    }


def _thumbnail_file(thumbs_dir: Path, relative: str | None, sha: str | None) -> Path | None:
    """The stored thumbnail: where the payload says, else where a re-made one was written."""
    root = thumbs_dir.resolve()
    for rel in (relative, thumbnail_name(sha) if sha else None):
        if not rel:
            continue
        candidate = (root / rel).resolve()
        # The payload is ours, but a path that leaves the thumbnail folder is never served.
        if root in candidate.parents and candidate.is_file():
            return candidate
    return None


def _cache_control(exact: bool) -> dict[str, str]:
    # An id names a content: bytes known to be that content never change, so caches may keep them;
    # a file modified since the ingest (same size, other mtime or hash) must be asked for again.
    return IMMUTABLE if exact else REVALIDATE


def _decode(file: IndexedFile, sha: str | None, max_pixels: int, thumbnail_size: int | None) -> tuple[bytes, bool]:
    """A JPEG rendition (or thumbnail) of the file, and whether its bytes are the indexed content."""
    from shoebox.imaging import decode_full, encode_jpeg, make_thumbnail

    name = os.path.basename(file.path)
    data = file.read()
    exact = sha is not None and hashlib.sha256(data).hexdigest() == sha
    image = decode_full(data, name, max_pixels)
    del data
    if thumbnail_size:
        return make_thumbnail(image, thumbnail_size), exact
    return encode_jpeg(image, RENDITION_QUALITY), exact


async def _open(ctx: ServiceContext, collection: str, payload: dict[str, Any]) -> IndexedFile:
    return await run_in_threadpool(open_indexed, payload, ctx.settings.ingest_roots, ctx.catalog, collection)


async def _render(ctx: ServiceContext, file: IndexedFile, sha: str | None, thumbnail_size: int | None) -> tuple[bytes, bool]:
    """A full decode, within the process's decode slots (ERR_BUSY when none frees in time)."""
    try:
        async with ctx.browse.gate.slot():
            return await run_in_threadpool(
                _decode, file, sha, ctx.settings.max_image_pixels, thumbnail_size
            )
    finally:
        file.close()


@router.get("/api/v1/images/{image_id}/thumbnail", response_class=Response)
async def image_thumbnail(image_id: str, request: Request, collection_name: str | None = None) -> Response:
    """The JPEG thumbnail written at ingest; re-made from the original if it went missing, and
    written back to the thumbnail folder."""
    ctx = context(request)
    name, record = await _lookup(request, image_id, collection_name)
    payload = record.payload or {}
    sha = payload.get("sha256")
    thumb = await run_in_threadpool(_thumbnail_file, Path(ctx.thumbs_dir), payload.get("thumbnail"), sha)
    if thumb is not None:
        return FileResponse(thumb, media_type="image/jpeg", headers={**IMMUTABLE, CACHE_HEADER: "hit"})
    try:
        file = await _open(ctx, name, payload)
    except ShoeboxError as exc:
        if exc.code != ErrorCode.PATH_NOT_FOUND:
            raise
        raise ShoeboxError(ErrorCode.NOT_FOUND, f"no thumbnail for image {record.id}, and its files are gone") from None
    data, exact = await _render(ctx, file, sha, ctx.settings.thumbnail_size)
    if exact and sha:
        await run_in_threadpool(store_thumbnail, Path(ctx.thumbs_dir), sha, data)
    return Response(data, media_type="image/jpeg", headers={**_cache_control(exact), CACHE_HEADER: "miss"})


@router.get("/api/v1/images/{image_id}/image", response_class=Response)
async def image_file(image_id: str, request: Request, collection_name: str | None = None) -> Response:
    """The indexed file itself for browser formats; a JPEG rendition for RAW, HEIC and the like
    (made once per content, then served from the rendition cache)."""
    ctx = context(request)
    name, record = await _lookup(request, image_id, collection_name)
    payload = record.payload or {}
    sha = payload.get("sha256")
    # Checked at every request, cache or not: an image is served only while one of its files is
    # still there, inside the allowed roots.
    file = await _open(ctx, name, payload)
    original = Path(file.path)
    fmt = original.suffix.lower().lstrip(".")
    if fmt in BROWSER_FORMATS:
        media_type = mimetypes.guess_type(original.name)[0] or "application/octet-stream"
        headers = {**_cache_control(file.unchanged), "Content-Length": str(file.size)}
        return StreamingResponse(file.chunks(), media_type=media_type, headers=headers)
    stem = original.stem.encode("ascii", "ignore").decode().replace('"', "") or "image"
    disposition = {"Content-Disposition": f'inline; filename="{stem}.jpg"'}
    cached = await run_in_threadpool(ctx.browse.cache.get, sha, "image") if sha else None
    if cached is not None:
        file.close()
        return Response(cached, media_type="image/jpeg", headers={**IMMUTABLE, **disposition, CACHE_HEADER: "hit"})
    data, exact = await _render(ctx, file, sha, None)
    if exact and sha:
        await run_in_threadpool(ctx.browse.cache.put, sha, "image", data)
    return Response(
        data, media_type="image/jpeg", headers={**_cache_control(exact), **disposition, CACHE_HEADER: "miss"}
    )
