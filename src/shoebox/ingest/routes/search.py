"""Search routes: by text, by uploaded image, by a stored image; and duplicates.

Queries are embedded by the ML service (text through its priority lane) and ranked by Qdrant
with the filters applied inside it. Qdrant's client is synchronous, so every call runs in a
worker thread, never on the event loop.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from pydantic import BaseModel, Field, StringConstraints, ValidationError
from starlette.concurrency import run_in_threadpool

from shoebox.ingest import search
from shoebox.ingest.search import (
    CollectionRef,
    check_image_id,
    context,
    query_cache,
    resolve_collection,
    vector_call,
)
from shoebox.protocol import ErrorCode, Hit, ShoeboxError

router = APIRouter(tags=["search"])

MAX_LIMIT = 1000
MAX_OFFSET = 100_000
MAX_UPLOAD_BYTES = 256 * 1024 * 1024
CACHE_HEADER = "X-Query-Embedding-Cache"


class TextSearchRequest(BaseModel):
    query: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
    limit: int = Field(default=20, ge=1, le=MAX_LIMIT)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)
    collection_name: str | None = None
    filters: search.SearchFilters | None = None


class SearchResponse(BaseModel):
    results: list[Hit]
    collection_name: str
    model_name: str | None = None


class QueryCacheStats(BaseModel):
    entries: int
    hits: int
    misses: int


def _check_model(ref: CollectionRef, model_name: str | None, dim: int) -> None:
    """Never rank one embedding space against another."""
    if ref.embedding_dim and dim != ref.embedding_dim:
        raise ShoeboxError(
            ErrorCode.MODEL_MISMATCH,
            f"collection {ref.name!r} holds {ref.embedding_dim}-d vectors of {ref.model_name}, "
            f"the ML service answers {dim}-d vectors of {model_name}",
        )
    if ref.model_name and model_name and ref.model_name != model_name:
        raise ShoeboxError(
            ErrorCode.MODEL_MISMATCH,
            f"collection {ref.name!r} was built with {ref.model_name}, the ML service runs {model_name}",
        )


@router.post("/api/v1/search/text", response_model=SearchResponse)
async def search_text(body: TextSearchRequest, request: Request, response: Response) -> SearchResponse:
    """Images ranked by cosine similarity to a text, optionally filtered; `limit`/`offset` page."""
    ctx = context(request)
    ref = await run_in_threadpool(resolve_collection, ctx, body.collection_name)
    caps = await run_in_threadpool(ctx.ml.capabilities)
    model_name = caps.model_name if caps else (ref.model_name or "")
    cache = query_cache(request)
    text = body.query
    vector = cache.get(model_name, text)
    response.headers[CACHE_HEADER] = "hit" if vector is not None else "miss"
    if vector is None:
        vector = await run_in_threadpool(ctx.ml.embed_text, text)
        cache.put(model_name, text, vector)
    _check_model(ref, model_name or None, len(vector))
    if not ref.exists:
        return SearchResponse(results=[], collection_name=ref.name, model_name=model_name or None)
    hits = await vector_call(
        search.search_vector,
        ctx.store,
        ref.name,
        vector,
        limit=body.limit,
        offset=body.offset,
        filters=body.filters,
    )
    return SearchResponse(results=hits, collection_name=ref.name, model_name=model_name or None)


@router.post("/api/v1/search/image", response_model=SearchResponse)
async def search_image(
    request: Request,
    file: Annotated[UploadFile, File(description="A photo in any supported format, RAW included.")],
    limit: Annotated[int, Form(ge=1, le=MAX_LIMIT)] = 20,
    offset: Annotated[int, Form(ge=0, le=MAX_OFFSET)] = 0,
    collection_name: Annotated[str | None, Form()] = None,
    filters: Annotated[str | None, Form(description="SearchFilters as JSON.")] = None,
) -> SearchResponse:
    """Images most like an uploaded one; the upload goes to the ML service as its original bytes."""
    ctx = context(request)
    parsed_filters = _parse_filters(filters)
    ref = await run_in_threadpool(resolve_collection, ctx, collection_name)
    data = await file.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        raise ShoeboxError(ErrorCode.IMAGE_TOO_LARGE, f"upload larger than {MAX_UPLOAD_BYTES} bytes")
    if not data:
        raise ShoeboxError(ErrorCode.FILE_READ, "the uploaded file is empty")
    vector = await run_in_threadpool(ctx.ml.embed_image, data, file.filename or "upload")
    caps = ctx.ml.known_capabilities()
    model_name = caps.model_name if caps else None
    _check_model(ref, model_name, len(vector))
    if not ref.exists:
        return SearchResponse(results=[], collection_name=ref.name, model_name=model_name)
    hits = await vector_call(
        search.search_vector,
        ctx.store,
        ref.name,
        vector,
        limit=limit,
        offset=offset,
        filters=parsed_filters,
    )
    return SearchResponse(results=hits, collection_name=ref.name, model_name=model_name)


def _parse_filters(raw: str | None) -> search.SearchFilters | None:
    if not raw:
        return None
    try:
        return search.SearchFilters.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        raise ShoeboxError(ErrorCode.VALIDATION, f"filters: {exc}") from exc


@router.get("/api/v1/images/{image_id}/similar", response_model=SearchResponse)
async def similar_images(
    image_id: str,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    collection_name: str | None = None,
) -> SearchResponse:
    """Images most like a stored one, by its stored vector (no re-embedding); never the image itself."""
    ctx = context(request)
    point_id = check_image_id(image_id)
    ref = await run_in_threadpool(resolve_collection, ctx, collection_name)
    if not ref.exists:
        raise ShoeboxError(ErrorCode.NOT_FOUND, f"no image {point_id} in collection {ref.name!r}")
    hits = await vector_call(
        search.search_similar, ctx.store, ref.name, point_id, limit=limit, offset=offset
    )
    return SearchResponse(results=hits, collection_name=ref.name, model_name=ref.model_name)


@router.get("/api/v1/duplicates", response_model=search.Duplicates)
async def duplicates(
    request: Request,
    collection_name: str | None = None,
    threshold: Annotated[float, Query(gt=0.0, le=1.0)] = search.DEFAULT_NEAR_DUPLICATE_THRESHOLD,
) -> search.Duplicates:
    """Exact duplicates (one content under several paths) and near-duplicate groups (cosine ≥ threshold)."""
    ctx = context(request)
    ref = await run_in_threadpool(resolve_collection, ctx, collection_name)
    if not ref.exists:
        return search.Duplicates(exact=[], near=[], threshold=threshold)
    return await vector_call(search.find_duplicates, ctx.store, ref.name, threshold)


@router.get("/api/v1/search/cache", response_model=QueryCacheStats)
async def query_cache_stats(request: Request) -> QueryCacheStats:
    """Counters of the query-embedding cache (a repeated text query costs no ML call)."""
    return QueryCacheStats(**query_cache(request).stats())
