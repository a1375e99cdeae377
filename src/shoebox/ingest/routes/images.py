"""Browse routes: a paged listing, one image's metadata, its thumbnail and the image itself.

Files are only ever served from the paths stored in an image's payload (what was indexed),
re-checked on disk; a path never comes from the client. An id is derived from the content,
so it names the same image in every collection.
"""

from __future__ import annotations

import mimetypes
import os
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from shoebox.ingest import search
from shoebox.ingest.context import ServiceContext
from shoebox.ingest.search import (
    candidate_collections,
    check_image_id,
    context,
    resolve_collection,
    vector_call,
)
from shoebox.protocol import ErrorCode, ShoeboxError
from shoebox.store import Record

router = APIRouter(tags=["images"])

MAX_PER_PAGE = 500
# Formats every current browser shows as they are; anything else (RAW, HEIC, TIFF…) gets a JPEG rendition.
BROWSER_FORMATS = {"jpg", "jpeg", "jpe", "png", "gif", "webp", "avif", "bmp"}
RENDITION_QUALITY = 90
# The id is a content hash: the bytes behind it never change, so caches may keep them.
IMMUTABLE = {"Cache-Control": "private, max-age=31536000, immutable"}


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
    page: Annotated[int, Query(ge=1)] = 1,
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
    return ImagePage(
        total=total,
        page=page,
        per_page=per_page,
        collection_name=ref.name,
        results=[h.model_dump(exclude={"score"}) for h in hits],
    )


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


def _indexed_file(payload: dict[str, Any]) -> Path | None:
    """The first stored path that still holds the indexed bytes (same size), or None."""
    expected_size = payload.get("size")
    for path in payload.get("paths") or [payload.get("path")]:
        if not path:
            continue
        try:
            st = os.stat(path)
        except OSError:
            continue
        if os.path.isfile(path) and (expected_size is None or st.st_size == expected_size):
            return Path(path)
    return None


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


def _thumbnail_file(thumbs_dir: Path, relative: str | None) -> Path | None:
    if not relative:
        return None
    root = thumbs_dir.resolve()
    candidate = (root / relative).resolve()
    # The payload is ours, but a path that leaves the thumbnail folder is never served.
    if root not in candidate.parents or not candidate.is_file():
        return None
    return candidate


def _render_jpeg(path: Path, max_pixels: int, thumbnail_size: int | None) -> bytes:
    from shoebox.imaging import decode_full, encode_jpeg, make_thumbnail

    image = decode_full(path, path.name, max_pixels)
    if thumbnail_size:
        return make_thumbnail(image, thumbnail_size)
    return encode_jpeg(image, RENDITION_QUALITY)


def _max_pixels(ctx: ServiceContext) -> int:
    return ctx.settings.max_image_pixels


@router.get("/api/v1/images/{image_id}/thumbnail", response_class=Response)
async def image_thumbnail(image_id: str, request: Request, collection_name: str | None = None) -> Response:
    """The JPEG thumbnail written at ingest (re-made from the original if it went missing)."""
    ctx = context(request)
    _, record = await _lookup(request, image_id, collection_name)
    payload = record.payload or {}
    thumb = _thumbnail_file(Path(ctx.thumbs_dir), payload.get("thumbnail"))
    if thumb is not None:
        return FileResponse(thumb, media_type="image/jpeg", headers=IMMUTABLE)
    original = await run_in_threadpool(_indexed_file, payload)
    if original is None:
        raise ShoeboxError(ErrorCode.NOT_FOUND, f"no thumbnail for image {record.id}, and its files are gone")
    size = ctx.settings.thumbnail_size
    data = await run_in_threadpool(_render_jpeg, original, _max_pixels(ctx), size)
    return Response(data, media_type="image/jpeg")


@router.get("/api/v1/images/{image_id}/image", response_class=Response)
async def image_file(image_id: str, request: Request, collection_name: str | None = None) -> Response:
    """The indexed file itself for browser formats; a JPEG rendition for RAW, HEIC and the like."""
    ctx = context(request)
    _, record = await _lookup(request, image_id, collection_name)
    payload = record.payload or {}
    original = await run_in_threadpool(_indexed_file, payload)
    if original is None:
        raise ShoeboxError(
            ErrorCode.PATH_NOT_FOUND, f"none of the indexed files of image {record.id} is on disk any more"
        )
    fmt = original.suffix.lower().lstrip(".")
    if fmt in BROWSER_FORMATS:
        media_type = mimetypes.guess_type(original.name)[0] or "application/octet-stream"
        return FileResponse(original, media_type=media_type, headers=IMMUTABLE)
    data = await run_in_threadpool(_render_jpeg, original, _max_pixels(ctx), None)
    stem = original.stem.encode("ascii", "ignore").decode().replace('"', "") or "image"
    return Response(
        data,
        media_type="image/jpeg",
        headers={**IMMUTABLE, "Content-Disposition": f'inline; filename="{stem}.jpg"'},
    )
