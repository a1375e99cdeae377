"""Search over a collection: filters → a store filter, hits, the query-embedding cache, duplicates.

Everything here runs inside the vector engine (payload indexes, its own nearest-neighbour
search, batched queries) through the store interface, so that a filtered search or a duplicate
scan costs what the engine makes it cost, never a Python loop over every point. The functions
are synchronous; the routes call them from a worker thread.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timezone
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from starlette.concurrency import run_in_threadpool

from shoebox.protocol import ErrorCode, Hit, ShoeboxError
from shoebox.store import GeoBox as GeoRect
from shoebox.store import MatchAny, Range, Record, VectorStore, Where
from shoebox.store.base import Condition

if TYPE_CHECKING:
    from shoebox.ingest.context import ServiceContext

T = TypeVar("T")

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


def to_where(filters: SearchFilters | None) -> Where | None:
    """The store filter for `filters`, evaluated by the vector engine against its payload indexes."""
    if filters is None or filters.is_empty():
        return None
    must: list[Condition] = []
    if filters.taken_after is not None or filters.taken_before is not None:
        must.append(
            Range(
                "taken_ts",
                gte=_parse_when(filters.taken_after, end_of_day=False) if filters.taken_after else None,
                lte=_parse_when(filters.taken_before, end_of_day=True) if filters.taken_before else None,
            )
        )
    if filters.camera_make:
        must.append(MatchAny("camera_make", tuple(_case_variants(filters.camera_make))))
    if filters.camera_model:
        must.append(MatchAny("camera_model", tuple(_case_variants(filters.camera_model))))
    if filters.format:
        must.append(MatchAny("format", tuple(_format_variants(filters.format))))
    if filters.folder:
        must.append(MatchAny("folders", (normalise_folder(filters.folder),)))
    if filters.has_gps is not None:
        must.append(MatchAny("has_gps", (filters.has_gps,)))
    if filters.gps_bbox is not None:
        box = filters.gps_bbox
        must.append(GeoRect("gps", box.min_lat, box.min_lon, box.max_lat, box.max_lon))
    return Where(tuple(must))


# ---------------------------------------------------------------- hits


def hit_from_record(record: Record, *, with_score: bool = True) -> Hit:
    payload = dict(record.payload)
    paths = payload.get("paths") or []
    path = payload.get("path") or (paths[0] if paths else "")
    return Hit(
        id=record.id,
        score=record.score if with_score else None,
        filename=payload.get("filename") or os.path.basename(path),
        path=path,
        thumbnail_url=thumbnail_url(record.id),
        payload=payload,
    )


def search_vector(
    store: VectorStore,
    collection: str,
    vector: list[float],
    *,
    limit: int,
    offset: int = 0,
    filters: SearchFilters | None = None,
) -> list[Hit]:
    """Nearest points to `vector` by cosine similarity, filtered and paged inside the engine."""
    found = store.query(collection, vector, limit=limit, offset=offset, where=to_where(filters))
    return [hit_from_record(r) for r in found]


def search_similar(
    store: VectorStore,
    collection: str,
    point_id: str,
    *,
    limit: int,
    offset: int = 0,
    filters: SearchFilters | None = None,
) -> list[Hit]:
    """Nearest points to a stored point, by its stored vector (no re-embedding), never itself.

    The point is left out here rather than by an id filter: one more hit costs nothing, and
    the same code suits every backend.
    """
    vector = stored_vector(store, collection, point_id)
    found = store.query(collection, vector, limit=offset + limit + 1, where=to_where(filters))
    others = [r for r in found if r.id != point_id]
    return [hit_from_record(r) for r in others[offset : offset + limit]]


def stored_vector(store: VectorStore, collection: str, point_id: str) -> list[float]:
    records = store.get(collection, [point_id], with_vectors=True)
    if not records:
        raise ShoeboxError(ErrorCode.NOT_FOUND, f"no image {point_id} in collection {collection!r}")
    vector = records[0].vector
    if vector is None:
        raise ShoeboxError(ErrorCode.VECTOR_DB, f"image {point_id} has no single vector in {collection!r}")
    return vector


def get_point(store: VectorStore, collection: str, point_id: str) -> Record:
    records = store.get(collection, [point_id])
    if not records:
        raise ShoeboxError(ErrorCode.NOT_FOUND, f"no image {point_id} in collection {collection!r}")
    return records[0]


def list_page(store: VectorStore, collection: str, *, page: int, per_page: int) -> tuple[int, list[Hit]]:
    """One page of the collection in point-id order (stable while nothing is added or removed)."""
    total = store.count(collection)
    records = store.page(collection, limit=per_page, offset=(page - 1) * per_page)
    return total, [hit_from_record(r, with_score=False) for r in records]


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


# ---------------------------------------------------------------- route support


@dataclass(frozen=True)
class CollectionRef:
    """A collection a request is about: registered in the catalog, maybe not yet in the store."""

    name: str
    exists: bool
    model_name: str | None
    embedding_dim: int | None
    # The store collection that answers for it, read with the model in one catalog row: a request
    # keeps both through a migration's switch, so its vector and the collection always agree.
    store: str = ""

    def __post_init__(self) -> None:
        if not self.store:
            object.__setattr__(self, "store", self.name)


def context(request: Request) -> ServiceContext:
    return request.app.state.ctx


def selected_collection(ctx: ServiceContext) -> str:
    return ctx.selected_collection()


def resolve_collection(ctx: ServiceContext, name: str | None) -> CollectionRef:
    """The named collection, or the selected one; 404 when neither the catalog nor the store knows it."""
    name = name or selected_collection(ctx)
    record = ctx.catalog.get_collection(name)
    store_name = record.store if record else name
    in_store = ctx.store.collection_exists(store_name)
    if record is None and not in_store:
        raise ShoeboxError(ErrorCode.NOT_FOUND, f"no collection {name!r}")
    return CollectionRef(
        name=name,
        exists=in_store,
        model_name=record.model_name if record else None,
        embedding_dim=record.embedding_dim if record else None,
        store=store_name,
    )


def candidate_collections(ctx: ServiceContext, name: str | None) -> list[tuple[str, str]]:
    """Where to look an image id up, as (collection, the store collection answering for it): the
    named collection, else the selected one first, then the rest.

    An id is derived from content, so it means the same image in every collection; a thumbnail
    URL therefore needs no collection in it.
    """
    records = {c.name: c for c in ctx.catalog.list_collections()}

    def pair(collection: str) -> tuple[str, str]:
        return collection, records[collection].store if collection in records else collection

    if name:
        return [pair(name)]
    first = selected_collection(ctx)
    return [pair(first), *(pair(c) for c in records if c != first)]


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
    """Run a store call in a worker thread (the store raises ERR_VECTOR_DB itself)."""
    return await run_in_threadpool(fn, *args, **kwargs)
