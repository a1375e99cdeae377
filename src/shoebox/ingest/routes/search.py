"""Search routes: by text, by uploaded image, by a stored image; and duplicates.

Queries are embedded by the ML service (text through its priority lane) and ranked by Qdrant
with the filters applied inside it. Qdrant's client is synchronous, so every call runs in a
worker thread, never on the event loop.
"""

from __future__ import annotations

import functools
import json
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile
from pydantic import BaseModel, Field, StringConstraints, ValidationError
from starlette.concurrency import run_in_threadpool

from shoebox.ingest import duplicates as duplicates_mod
from shoebox.ingest import language, search
from shoebox.ingest import query as combined
from shoebox.ingest.activity import searching
from shoebox.ingest.context import ServiceContext
from shoebox.ingest.search import (
    CollectionRef,
    check_image_id,
    context,
    query_cache,
    resolve_collection,
    vector_call,
)
from shoebox.protocol import ErrorCode, Hit, QueryWarning, ShoeboxError, same_model

router = APIRouter(tags=["search"])

MAX_LIMIT = 1000
MAX_OFFSET = 100_000
MAX_UPLOAD_BYTES = 256 * 1024 * 1024
CACHE_HEADER = "X-Query-Embedding-Cache"
# Request bodies read by hand (JSON or multipart), listed in the OpenAPI schema by the app.
BODY_MODELS = [combined.CombinedQuery]


class TextSearchRequest(BaseModel):
    query: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
    limit: int = Field(default=20, ge=1, le=MAX_LIMIT)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)
    collection_name: str | None = None
    filters: search.SearchFilters | None = None
    language: str | None = Field(
        default=None,
        max_length=32,
        description="The query's language (ISO 639-1 or FLORES-200) for models that take one (NLLB); "
        "default: detected when clearly not English, else English.",
    )


class SearchResponse(BaseModel):
    results: list[Hit]
    collection_name: str
    model_name: str | None = None


class TextSearchResponse(SearchResponse):
    warnings: list[QueryWarning] = Field(
        default_factory=list,
        description="W_QUERY_LANGUAGE: a text is clearly not English and the model is English-only.",
    )


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
    if not same_model(ref.model_name, model_name):
        raise ShoeboxError(
            ErrorCode.MODEL_MISMATCH,
            f"collection {ref.name!r} was built with {ref.model_name}, the ML service runs {model_name}",
        )


def _query_model(ctx: ServiceContext, ref: CollectionRef) -> str:
    """The model a query of this collection is embedded with: the collection's own (by identity),
    or the ML service's default for a collection that has none yet. Refused (ERR_MODEL_MISMATCH)
    when no reachable ML service hosts the collection's model."""
    if ctx.ml.capabilities() is None:
        # No ML service answers: a cached query embedding may still serve; else the embed call
        # reports the outage with its own error.
        return ref.model_name or ""
    info = ctx.ml.model_info(ref.model_name)
    if info is not None:
        return info.model_id
    raise ctx.ml.model_not_hosted(
        ErrorCode.MODEL_MISMATCH,
        f"collection {ref.name!r} was built with {ref.model_name}, which no reachable ML service hosts",
        collection_model=ref.model_name,
    )


def _text_languages(ctx: ServiceContext, model: str, texts: list[str], given: str | None) -> dict[str, str | None]:
    """The language each text is embedded in: only a model that takes one (NLLB) gets one — the
    request's, else the detected one when the text is clearly not English, else none (English).
    Runs the detector: call it in a worker thread."""
    info = ctx.ml.model_info(model) if model else None
    if info is None or info.family != "nllb":
        return dict.fromkeys(texts)
    if given:
        return dict.fromkeys(texts, given)
    return {text: (found.language if (found := language.detect_foreign(text)) else None) for text in texts}


def _cache_key(model: str, lang: str | None) -> str:
    return f"{model}|{lang}" if lang else model


def _language_warnings(ctx: ServiceContext, texts: list[str], model: str) -> list[QueryWarning]:
    """One W_QUERY_LANGUAGE warning per language found among the texts, when the model is
    English-only (runs the detector: call it in a worker thread)."""
    if not model or not texts:
        return []
    info = ctx.ml.model_info(model)
    name = info.model_name if info else model
    multilingual = language.is_multilingual(name, info.multilingual if info else None)
    found: dict[str, QueryWarning] = {}
    for text in texts:
        warning = language.query_language_warning(text, multilingual, name)
        if warning is not None and warning.language not in found:
            found[warning.language] = QueryWarning(**warning.as_dict(), text=text)
    return list(found.values())


@router.post("/api/v1/search/text", response_model=TextSearchResponse, dependencies=[Depends(searching)])
async def search_text(body: TextSearchRequest, request: Request, response: Response) -> TextSearchResponse:
    """Images ranked by cosine similarity to a text, optionally filtered; `limit`/`offset` page.

    `warnings` says when the text is clearly not English and the model is English-only."""
    ctx = context(request)
    ref = await run_in_threadpool(resolve_collection, ctx, body.collection_name)
    model_name = await run_in_threadpool(_query_model, ctx, ref)
    warnings = await run_in_threadpool(_language_warnings, ctx, [body.query], model_name)
    cache = query_cache(request)
    text = body.query
    lang = (await run_in_threadpool(_text_languages, ctx, model_name, [text], body.language))[text]
    vector = cache.get(_cache_key(model_name, lang), text)
    response.headers[CACHE_HEADER] = "hit" if vector is not None else "miss"
    if vector is None:
        vector = await run_in_threadpool(
            functools.partial(ctx.ml.embed_text, text, model=model_name or None, language=lang)
        )
        if model_name:
            cache.put(_cache_key(model_name, lang), text, vector)
    _check_model(ref, model_name or None, len(vector))
    answer = TextSearchResponse(
        results=[], collection_name=ref.name, model_name=model_name or None, warnings=warnings
    )
    if not ref.exists:
        return answer
    answer.results = await vector_call(
        search.search_vector,
        ctx.store,
        ref.store,
        vector,
        limit=body.limit,
        offset=body.offset,
        filters=body.filters,
    )
    return answer


@router.post("/api/v1/search/image", response_model=SearchResponse, dependencies=[Depends(searching)])
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
    model_name = await run_in_threadpool(_query_model, ctx, ref) or None
    vector = await run_in_threadpool(
        functools.partial(ctx.ml.embed_image, data, file.filename or "upload", model=model_name)
    )
    _check_model(ref, model_name, len(vector))
    if not ref.exists:
        return SearchResponse(results=[], collection_name=ref.name, model_name=model_name)
    hits = await vector_call(
        search.search_vector,
        ctx.store,
        ref.store,
        vector,
        limit=limit,
        offset=offset,
        filters=parsed_filters,
    )
    return SearchResponse(results=hits, collection_name=ref.name, model_name=model_name)


class QueryResponse(TextSearchResponse):
    total: int | None = Field(
        default=None, description="Date sorts: how many candidates were ordered (pages end there)."
    )
    sort: combined.Sort = "relevance"
    score_threshold: float | None = None


_QUERY_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/CombinedQuery"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["query"],
                    "properties": {
                        "query": {"type": "string", "description": "CombinedQuery as JSON."},
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "Photos the terms' image_upload index into, in order.",
                        },
                    },
                }
            },
        },
    }
}


async def _read_combined(request: Request) -> tuple[combined.CombinedQuery, list[UploadFile]]:
    """The query from a JSON body, or from the `query` field of a multipart body with its `files`."""
    content_type = request.headers.get("content-type", "")
    uploads: list[UploadFile] = []
    try:
        if content_type.startswith("multipart/form-data"):
            form = await request.form(max_files=combined.MAX_UPLOADS, max_fields=4)
            raw = form.get("query")
            if not isinstance(raw, str):
                raise ShoeboxError(
                    ErrorCode.VALIDATION, "multipart queries carry the JSON in a `query` field"
                )
            uploads = [f for f in form.getlist("files") if not isinstance(f, str)]
            data = json.loads(raw)
        else:
            data = json.loads(await request.body())
    except ShoeboxError:
        raise
    except ValueError as exc:
        raise ShoeboxError(ErrorCode.VALIDATION, f"the query is not valid JSON: {exc}") from exc
    except Exception as exc:  # Starlette's multipart errors (too many files or fields, a broken body)
        raise ShoeboxError(ErrorCode.VALIDATION, f"cannot read the multipart body: {exc}") from exc
    try:
        body = combined.CombinedQuery.model_validate(data)
    except ValidationError as exc:
        raise ShoeboxError(ErrorCode.VALIDATION, f"query: {_errors(exc)}") from None
    used = body.uploads_used()
    if used and max(used) >= len(uploads):
        raise ShoeboxError(
            ErrorCode.VALIDATION, f"a term names upload {max(used)}, but {len(uploads)} file(s) came"
        )
    if len(used) != len(uploads):
        raise ShoeboxError(ErrorCode.VALIDATION, "every uploaded file must be named by an image_upload term")
    return body, uploads


def _errors(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors(include_url=False)
    )


@router.post("/api/v1/search/query", response_model=QueryResponse, openapi_extra=_QUERY_BODY, dependencies=[Depends(searching)])
async def search_query(request: Request, response: Response) -> QueryResponse:
    """Images ranked by a combined query: weighted texts, stored images and uploads (negative = "not").

    The query vector is the normalised weighted sum of the normalised term embeddings. Hits below
    `score_threshold` are dropped; `sort` orders by relevance or by date taken (undated last).
    """
    body, uploads = await _read_combined(request)
    try:
        return await _answer_combined(request, response, body, uploads)
    finally:
        for upload in uploads:
            await upload.close()


async def _answer_combined(
    request: Request, response: Response, body: combined.CombinedQuery, uploads: list[UploadFile]
) -> QueryResponse:
    ctx = context(request)
    ref = await run_in_threadpool(resolve_collection, ctx, body.collection_name)
    model_name = await run_in_threadpool(_query_model, ctx, ref)
    texts = [t.text for t in body.terms if t.text is not None]
    warnings = await run_in_threadpool(_language_warnings, ctx, texts, model_name) if texts else []
    vectors = await _term_vectors(request, ref, body, uploads, model_name, response)
    for vector in vectors:
        _check_model(ref, model_name or None, len(vector))
    answer = QueryResponse(
        results=[],
        collection_name=ref.name,
        model_name=model_name or None,
        sort=body.sort,
        score_threshold=body.score_threshold,
        warnings=warnings,
    )
    if not ref.exists:
        return answer
    vector = combined.combine(vectors, [t.weight for t in body.terms])
    ranked = await vector_call(
        combined.rank,
        ctx.store,
        ref.store,
        vector,
        limit=body.limit,
        offset=body.offset,
        filters=body.filters,
        score_threshold=body.score_threshold,
        sort=body.sort,
        top_k=body.top_k,
    )
    answer.results, answer.total = ranked.hits, ranked.total
    return answer


async def _term_vectors(
    request: Request,
    ref: CollectionRef,
    body: combined.CombinedQuery,
    uploads: list[UploadFile],
    model_name: str,
    response: Response,
) -> list[list[float]]:
    """Each term's embedding: texts from the query cache or one ML call for all the missing ones,
    stored images from the store, uploads from the ML service."""
    ctx = context(request)
    cache = query_cache(request)
    all_texts = list(dict.fromkeys(t.text for t in body.terms if t.text is not None))
    langs = await run_in_threadpool(_text_languages, ctx, model_name, all_texts, body.language) if all_texts else {}
    texts = {text: cache.get(_cache_key(model_name, langs[text]), text) for text in all_texts}
    missing = [text for text, vector in texts.items() if vector is None]
    if texts:
        response.headers[CACHE_HEADER] = "miss" if missing else "hit"
    # One ML call per language among the missing texts (one, but for an NLLB model's mixed query).
    for lang in dict.fromkeys(langs[text] for text in missing):
        group = [text for text in missing if langs[text] == lang]
        embed = functools.partial(ctx.ml.embed_texts, group, model=model_name or None, language=lang)
        for text, vector in zip(group, await run_in_threadpool(embed), strict=True):
            if model_name:
                cache.put(_cache_key(model_name, lang), text, vector)
            texts[text] = vector
    by_upload: dict[int, list[float]] = {}
    for index in sorted(body.uploads_used()):
        data = await uploads[index].read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            raise ShoeboxError(
                ErrorCode.IMAGE_TOO_LARGE, f"upload {index} is larger than {MAX_UPLOAD_BYTES} bytes"
            )
        if not data:
            raise ShoeboxError(ErrorCode.FILE_READ, f"upload {index} is empty")
        by_upload[index] = await run_in_threadpool(
            functools.partial(ctx.ml.embed_image, data, uploads[index].filename or "upload", model=model_name or None)
        )
    vectors: list[list[float]] = []
    for term in body.terms:
        if term.text is not None:
            vector = texts[term.text]
            assert vector is not None
        elif term.image_upload is not None:
            vector = by_upload[term.image_upload]
        else:
            assert term.image_id is not None
            if not ref.exists:
                raise ShoeboxError(
                    ErrorCode.NOT_FOUND, f"no image {term.image_id} in collection {ref.name!r}"
                )
            vector = await vector_call(search.stored_vector, ctx.store, ref.store, term.image_id)
        vectors.append(vector)
    return vectors


def _parse_filters(raw: str | None) -> search.SearchFilters | None:
    if not raw:
        return None
    try:
        return search.SearchFilters.model_validate(json.loads(raw))
    except (ValueError, ValidationError) as exc:
        raise ShoeboxError(ErrorCode.VALIDATION, f"filters: {exc}") from exc


@router.get("/api/v1/images/{image_id}/similar", response_model=SearchResponse, dependencies=[Depends(searching)])
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
    hits = await vector_call(search.search_similar, ctx.store, ref.store, point_id, limit=limit, offset=offset)
    return SearchResponse(results=hits, collection_name=ref.name, model_name=ref.model_name)


@router.get("/api/v1/duplicates", response_model=duplicates_mod.Duplicates)
async def duplicates(
    request: Request,
    collection_name: str | None = None,
    threshold: Annotated[
        float,
        Query(gt=0.0, le=1.0, description="near: cosine at or above which two photos are near-duplicates."),
    ] = duplicates_mod.DEFAULT_NEAR_THRESHOLD,
    phash_distance: Annotated[
        int,
        Query(
            ge=0,
            le=duplicates_mod.MAX_PHASH_DISTANCE,
            description="same_picture: the most bits two perceptual hashes (64 bits) may differ by.",
        ),
    ] = duplicates_mod.DEFAULT_PHASH_DISTANCE,
    burst_seconds: Annotated[
        float, Query(ge=0.0, le=3600.0, description="bursts: the most seconds between two shots of a burst.")
    ] = duplicates_mod.DEFAULT_BURST_SECONDS,
    burst_threshold: Annotated[
        float,
        Query(gt=0.0, le=1.0, description="bursts: cosine at or above which two shots belong together."),
    ] = duplicates_mod.DEFAULT_BURST_THRESHOLD,
    max_groups: Annotated[
        int,
        Query(
            ge=1,
            le=duplicates_mod.MAX_GROUPS,
            description="At most this many groups per tier; `truncated` says when a tier had more.",
        ),
    ] = duplicates_mod.DEFAULT_MAX_GROUPS,
) -> duplicates_mod.Duplicates:
    """Duplicates in tiers: exact (same bytes), same_picture (perceptual hash), near (cosine), bursts."""
    ctx = context(request)
    params = duplicates_mod.Params(threshold, phash_distance, burst_seconds, burst_threshold)
    ref = await run_in_threadpool(resolve_collection, ctx, collection_name)
    if not ref.exists:
        return duplicates_mod.empty(params)
    found = await vector_call(duplicates_mod.find_duplicates, ctx.store, ref.store, params)
    return found.capped(max_groups)


@router.get("/api/v1/search/cache", response_model=QueryCacheStats)
async def query_cache_stats(request: Request) -> QueryCacheStats:
    """Counters of the query-embedding cache (a repeated text query costs no ML call)."""
    return QueryCacheStats(**query_cache(request).stats())
