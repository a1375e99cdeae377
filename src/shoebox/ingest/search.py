"""Search over a collection: filters → a Qdrant filter, hits, the query-embedding cache, duplicates.

Everything here runs inside Qdrant (payload indexes, its own nearest-neighbour search) so that
a filtered search or a duplicate scan costs what the vector engine makes it cost, never a
Python loop over every point. The functions are synchronous (qdrant-client is); the routes
call them from a worker thread.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from qdrant_client import QdrantClient
from qdrant_client import models as qm
from starlette.concurrency import run_in_threadpool

from shoebox.protocol import ErrorCode, Hit, ShoeboxError

if TYPE_CHECKING:
    from shoebox.ingest.context import ServiceContext

T = TypeVar("T")

DEFAULT_NEAR_DUPLICATE_THRESHOLD = 0.95
# Neighbours asked per point when grouping near-duplicates: a burst of copies larger than this
# is still one group, because union-find joins it through the copies' own neighbours.
NEAR_DUPLICATE_NEIGHBOURS = 16
_SCROLL_PAGE = 256
# Queries per batch call: embedded Qdrant holds the store's lock for a whole call, and searches
# and ingest writes wait behind it, so calls stay short.
_QUERY_BATCH = 32

# Formats one user calls by two names; the payload holds the file's own extension.
_FORMAT_ALIASES = [{"jpg", "jpeg", "jpe"}, {"tif", "tiff"}, {"heic", "heif"}]


def thumbnail_url(point_id: str) -> str:
    return f"/api/v1/images/{point_id}/thumbnail"


# ---------------------------------------------------------------- filters


class GeoBox(BaseModel):
    """A latitude/longitude rectangle (degrees); it may not cross the antimeridian."""

    model_config = ConfigDict(extra="forbid")

    min_lat: float = Field(ge=-90, le=90)
    min_lon: float = Field(ge=-180, le=180)
    max_lat: float = Field(ge=-90, le=90)
    max_lon: float = Field(ge=-180, le=180)

    @model_validator(mode="after")
    def _ordered(self) -> GeoBox:
        if self.min_lat > self.max_lat or self.min_lon > self.max_lon:
            raise ValueError("gps_bbox needs min_lat <= max_lat and min_lon <= max_lon")
        return self


class SearchFilters(BaseModel):
    """What a search may be narrowed by. Every field is optional; all given ones must hold.

    Dates are ISO 8601 (`2021-06-01` or `2021-06-01T12:00:00`); a bare date in `taken_before`
    includes that whole day. Times without a zone are read as UTC, as the payload's `taken_ts` is.
    """

    model_config = ConfigDict(extra="forbid")

    taken_after: str | None = Field(default=None, description="Taken at or after this date/time.")
    taken_before: str | None = Field(default=None, description="Taken at or before this date/time.")
    camera_make: list[str] | None = Field(default=None, description="Any of these makes (EXIF Make).")
    camera_model: list[str] | None = Field(default=None, description="Any of these models (EXIF Model).")
    format: list[str] | None = Field(default=None, description="Any of these formats: jpg, png, heic, dng…")
    folder: str | None = Field(default=None, description="Only files under this folder (any depth).")
    has_gps: bool | None = Field(default=None, description="Only photos with (true) or without (false) GPS.")
    gps_bbox: GeoBox | None = Field(default=None, description="Only photos taken inside this rectangle.")

    @field_validator("camera_make", "camera_model", "format", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        if isinstance(value, str):
            return [value]
        return value

    @field_validator("taken_after", "taken_before")
    @classmethod
    def _iso(cls, value: str | None) -> str | None:
        if value is not None:
            _parse_when(value, end_of_day=False)
        return value

    def is_empty(self) -> bool:
        return all(v is None for v in self.model_dump().values())


def _parse_when(text: str, *, end_of_day: bool) -> float:
    """Epoch seconds of an ISO date or date-time; a bare date means its first (or last) second."""
    text = text.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime.combine(day, time.max if end_of_day else time.min)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"not an ISO date or date-time: {text!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _case_variants(values: list[str]) -> list[str]:
    # Keyword indexes match exactly; EXIF writes "Canon", "NIKON CORPORATION", "samsung"…
    variants: dict[str, None] = {}
    for value in values:
        value = value.strip()
        for v in (value, value.lower(), value.upper(), value.title()):
            variants[v] = None
    return list(variants)


def _format_variants(values: list[str]) -> list[str]:
    formats: dict[str, None] = {}
    for value in values:
        fmt = value.strip().lower().lstrip(".")
        formats[fmt] = None
        for group in _FORMAT_ALIASES:
            if fmt in group:
                formats.update(dict.fromkeys(sorted(group)))
    return list(formats)


def normalise_folder(folder: str) -> str:
    """The form folders take in the payload's `folders` list: absolute, no trailing separator."""
    cleaned = os.path.normpath(os.path.expanduser(folder.strip()))
    return cleaned if cleaned == os.sep else cleaned.rstrip(os.sep)


def to_qdrant_filter(filters: SearchFilters | None) -> qm.Filter | None:
    """The Qdrant filter for `filters`, evaluated by Qdrant against its payload indexes."""
    if filters is None or filters.is_empty():
        return None
    must: list[qm.Condition] = []
    if filters.taken_after is not None or filters.taken_before is not None:
        must.append(
            qm.FieldCondition(
                key="taken_ts",
                range=qm.Range(
                    gte=_parse_when(filters.taken_after, end_of_day=False) if filters.taken_after else None,
                    lte=_parse_when(filters.taken_before, end_of_day=True) if filters.taken_before else None,
                ),
            )
        )
    if filters.camera_make:
        must.append(
            qm.FieldCondition(key="camera_make", match=qm.MatchAny(any=_case_variants(filters.camera_make)))
        )
    if filters.camera_model:
        must.append(
            qm.FieldCondition(key="camera_model", match=qm.MatchAny(any=_case_variants(filters.camera_model)))
        )
    if filters.format:
        must.append(qm.FieldCondition(key="format", match=qm.MatchAny(any=_format_variants(filters.format))))
    if filters.folder:
        must.append(
            qm.FieldCondition(key="folders", match=qm.MatchValue(value=normalise_folder(filters.folder)))
        )
    if filters.has_gps is not None:
        must.append(qm.FieldCondition(key="has_gps", match=qm.MatchValue(value=filters.has_gps)))
    if filters.gps_bbox is not None:
        box = filters.gps_bbox
        must.append(
            qm.FieldCondition(
                key="gps",
                geo_bounding_box=qm.GeoBoundingBox(
                    top_left=qm.GeoPoint(lat=box.max_lat, lon=box.min_lon),
                    bottom_right=qm.GeoPoint(lat=box.min_lat, lon=box.max_lon),
                ),
            )
        )
    return qm.Filter(must=must)


# ---------------------------------------------------------------- hits


def hit_from_point(point: qm.ScoredPoint | qm.Record, *, with_score: bool = True) -> Hit:
    payload = dict(point.payload or {})
    paths = payload.get("paths") or []
    path = payload.get("path") or (paths[0] if paths else "")
    point_id = str(point.id)
    score = getattr(point, "score", None) if with_score else None
    return Hit(
        id=point_id,
        score=score,
        filename=payload.get("filename") or os.path.basename(path),
        path=path,
        thumbnail_url=thumbnail_url(point_id),
        payload=payload,
    )


def search_vector(
    client: QdrantClient,
    collection: str,
    vector: list[float],
    *,
    limit: int,
    offset: int = 0,
    filters: SearchFilters | None = None,
) -> list[Hit]:
    """Nearest points to `vector` by cosine similarity, filtered and paged inside Qdrant."""
    response = client.query_points(
        collection_name=collection,
        query=vector,
        query_filter=to_qdrant_filter(filters),
        limit=limit,
        offset=offset,
        with_payload=True,
    )
    return [hit_from_point(p) for p in response.points]


def search_similar(
    client: QdrantClient,
    collection: str,
    point_id: str,
    *,
    limit: int,
    offset: int = 0,
    filters: SearchFilters | None = None,
) -> list[Hit]:
    """Nearest points to a stored point, by its stored vector (no re-embedding), never itself.

    The point is left out here rather than by an id filter (or a query by id, which adds one):
    embedded Qdrant checks filters point by point in Python, which costs more than the search.
    """
    vector = stored_vector(client, collection, point_id)
    response = client.query_points(
        collection_name=collection,
        query=vector,
        query_filter=to_qdrant_filter(filters),
        limit=offset + limit + 1,
        with_payload=True,
    )
    others = [p for p in response.points if str(p.id) != point_id]
    return [hit_from_point(p) for p in others[offset : offset + limit]]


def stored_vector(client: QdrantClient, collection: str, point_id: str) -> list[float]:
    records = client.retrieve(collection_name=collection, ids=[point_id], with_vectors=True)
    if not records:
        raise ShoeboxError(ErrorCode.NOT_FOUND, f"no image {point_id} in collection {collection!r}")
    vector = records[0].vector
    if not isinstance(vector, list):
        raise ShoeboxError(ErrorCode.VECTOR_DB, f"image {point_id} has no single vector in {collection!r}")
    return vector


def get_point(client: QdrantClient, collection: str, point_id: str) -> qm.Record:
    records = client.retrieve(collection_name=collection, ids=[point_id], with_payload=True)
    if not records:
        raise ShoeboxError(ErrorCode.NOT_FOUND, f"no image {point_id} in collection {collection!r}")
    return records[0]


def list_page(client: QdrantClient, collection: str, *, page: int, per_page: int) -> tuple[int, list[Hit]]:
    """One page of the collection in point-id order (stable while nothing is added or removed)."""
    total = client.count(collection_name=collection, exact=True).count
    # A query without a vector returns points ordered by id, and unlike scroll it takes an offset.
    response = client.query_points(
        collection_name=collection, limit=per_page, offset=(page - 1) * per_page, with_payload=True
    )
    return total, [hit_from_point(p, with_score=False) for p in response.points]


# ---------------------------------------------------------------- query-embedding cache


class QueryEmbeddingCache:
    """A small LRU of text → embedding, so a repeated query costs no ML call.

    Keyed by the model too: a collection built with another model lives in another space.
    """

    def __init__(self, max_entries: int = 512) -> None:
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, model: str, text: str) -> list[float] | None:
        key = (model, text)
        with self._lock:
            vector = self._entries.get(key)
            if vector is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return vector

    def put(self, model: str, text: str, vector: list[float]) -> None:
        with self._lock:
            self._entries[(model, text)] = vector
            self._entries.move_to_end((model, text))
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"entries": len(self._entries), "hits": self.hits, "misses": self.misses}


# ---------------------------------------------------------------- duplicates


class ExactDuplicate(BaseModel):
    id: str
    paths: list[str]


class Duplicates(BaseModel):
    exact: list[list[str]] = Field(description="One group per content held by several paths.")
    near: list[list[str]] = Field(description="Groups of distinct images with cosine >= threshold.")
    threshold: float
    exact_groups: list[ExactDuplicate] = Field(default_factory=list)
    near_groups: list[list[Hit]] = Field(default_factory=list)


def _scroll_all(
    client: QdrantClient, collection: str, scroll_filter: qm.Filter | None, with_payload: Any
) -> Iterator[qm.Record]:
    offset = None
    while True:
        records, offset = client.scroll(
            collection_name=collection,
            scroll_filter=scroll_filter,
            limit=_SCROLL_PAGE,
            offset=offset,
            with_payload=with_payload,
            with_vectors=False,
        )
        yield from records
        if offset is None:
            return


def exact_duplicates(client: QdrantClient, collection: str) -> list[ExactDuplicate]:
    """Contents stored under more than one path (one point, several `paths`)."""
    several_paths = qm.Filter(must=[qm.FieldCondition(key="paths", values_count=qm.ValuesCount(gt=1))])
    return [
        ExactDuplicate(id=str(r.id), paths=list((r.payload or {}).get("paths") or []))
        for r in _scroll_all(client, collection, several_paths, ["paths"])
    ]


def near_duplicate_pairs(
    client: QdrantClient, collection: str, threshold: float, *, neighbours: int = NEAR_DUPLICATE_NEIGHBOURS
) -> Iterator[tuple[str, str, float]]:
    """Pairs of points with cosine ≥ threshold, found by Qdrant's search in batches of neighbour queries.

    Each point's stored vector is the query (no id filter, no query by id: embedded Qdrant would
    check those point by point in Python); its match with itself is dropped here.
    """
    for page in _vector_pages(client, collection):
        for start in range(0, len(page), _QUERY_BATCH):
            yield from _neighbour_pairs(
                client, collection, page[start : start + _QUERY_BATCH], threshold, neighbours
            )


def _neighbour_pairs(
    client: QdrantClient,
    collection: str,
    batch: list[tuple[str, list[float]]],
    threshold: float,
    neighbours: int,
) -> Iterator[tuple[str, str, float]]:
    requests = [
        qm.QueryRequest(query=vector, score_threshold=threshold, limit=neighbours + 1, with_payload=False)
        for _, vector in batch
    ]
    responses = client.query_batch_points(collection_name=collection, requests=requests)
    for (point_id, _), response in zip(batch, responses, strict=True):
        for neighbour in response.points:
            if str(neighbour.id) != point_id:
                yield point_id, str(neighbour.id), neighbour.score


def _vector_pages(client: QdrantClient, collection: str) -> Iterator[list[tuple[str, list[float]]]]:
    offset = None
    while True:
        records, offset = client.scroll(
            collection_name=collection,
            limit=_SCROLL_PAGE,
            offset=offset,
            with_payload=False,
            with_vectors=True,
        )
        page = [(str(r.id), r.vector) for r in records if isinstance(r.vector, list)]
        if page:
            yield page
        if offset is None:
            return


def group_pairs(
    pairs: Iterator[tuple[str, str, float]],
) -> tuple[list[list[str]], dict[frozenset[str], float]]:
    """Connected components of the similarity pairs (union-find), biggest group first."""
    parent: dict[str, str] = {}
    scores: dict[frozenset[str], float] = {}

    def root(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b, score in pairs:
        scores[frozenset((a, b))] = score
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    groups: dict[str, list[str]] = {}
    for x in parent:
        groups.setdefault(root(x), []).append(x)
    ordered = [sorted(g) for g in groups.values() if len(g) > 1]
    ordered.sort(key=lambda g: (-len(g), g[0]))
    return ordered, scores


def find_duplicates(
    client: QdrantClient,
    collection: str,
    threshold: float = DEFAULT_NEAR_DUPLICATE_THRESHOLD,
) -> Duplicates:
    """Exact duplicates (same bytes, several paths) and near-duplicate groups (cosine ≥ threshold)."""
    if not 0.0 < threshold <= 1.0:
        raise ShoeboxError(ErrorCode.VALIDATION, f"threshold must be in (0, 1], got {threshold}")
    exact = exact_duplicates(client, collection)
    near, _ = group_pairs(near_duplicate_pairs(client, collection, threshold))
    near_hits: list[list[Hit]] = []
    if near:
        wanted = [pid for group in near for pid in group]
        by_id: dict[str, qm.Record] = {}
        for start in range(0, len(wanted), _SCROLL_PAGE):
            chunk = wanted[start : start + _SCROLL_PAGE]
            by_id.update({str(r.id): r for r in client.retrieve(collection, ids=chunk, with_payload=True)})
        near_hits = [
            [hit_from_point(by_id[pid], with_score=False) for pid in group if pid in by_id] for group in near
        ]
    return Duplicates(
        exact=[[d.id] for d in exact],
        near=near,
        threshold=threshold,
        exact_groups=exact,
        near_groups=near_hits,
    )


# ---------------------------------------------------------------- route support


@dataclass(frozen=True)
class CollectionRef:
    """A collection a request is about: registered in the catalog, maybe not yet in Qdrant."""

    name: str
    exists: bool
    model_name: str | None
    embedding_dim: int | None


def context(request: Request) -> ServiceContext:
    return request.app.state.ctx


def selected_collection(ctx: ServiceContext) -> str:
    return ctx.selected_collection()


def resolve_collection(ctx: ServiceContext, name: str | None) -> CollectionRef:
    """The named collection, or the selected one; 404 when neither the catalog nor Qdrant knows it."""
    name = name or selected_collection(ctx)
    record = ctx.catalog.get_collection(name)
    in_qdrant = ctx.store.collection_exists(name)
    if record is None and not in_qdrant:
        raise ShoeboxError(ErrorCode.NOT_FOUND, f"no collection {name!r}")
    return CollectionRef(
        name=name,
        exists=in_qdrant,
        model_name=record.model_name if record else None,
        embedding_dim=record.embedding_dim if record else None,
    )


def candidate_collections(ctx: ServiceContext, name: str | None) -> list[str]:
    """Where to look an image id up: the named collection, else the selected one first, then the rest.

    An id is derived from content, so it means the same image in every collection; a thumbnail
    URL therefore needs no collection in it.
    """
    if name:
        return [name]
    first = selected_collection(ctx)
    others = [c.name for c in ctx.catalog.list_collections() if c.name != first]
    return [first, *others]


def check_image_id(image_id: str) -> str:
    """Image ids are UUIDs; anything else is refused before it reaches the store."""
    try:
        return str(uuid.UUID(image_id))
    except ValueError:
        raise ShoeboxError(ErrorCode.VALIDATION, f"not an image id: {image_id[:80]!r}") from None


def query_cache(request: Request) -> QueryEmbeddingCache:
    state = request.app.state
    cache = getattr(state, "query_embedding_cache", None)
    if cache is None:
        cache = state.query_embedding_cache = QueryEmbeddingCache()
    return cache


async def vector_call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a Qdrant call in a worker thread; a failing vector DB answers ERR_VECTOR_DB."""
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except ShoeboxError:
        raise
    except Exception as exc:  # qdrant-client raises many types; all mean the store failed
        raise ShoeboxError(ErrorCode.VECTOR_DB, f"vector database error: {exc}") from exc
