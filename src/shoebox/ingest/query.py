"""Combined queries: weighted terms made into one vector, ranked with a relevance cutoff and a date sort.

The query vector of terms t₁…tₙ with weights w₁…wₙ is

    q = Σ wᵢ · eᵢ / ‖eᵢ‖,    then q / ‖q‖

where eᵢ is the embedding of term i (a text, a stored image's vector, or an uploaded photo).
A negative weight means "not like this": it pulls the query away from that term. Images are
ranked by cosine similarity to q, so a hit's score is its cosine with the combined vector.

Ordering:
- `relevance`: by score, highest first, as the engine ranks it (paged inside the engine).
- `date_taken` / `-date_taken`: the candidates are the `top_k` most relevant hits at or above
  `score_threshold`; they come back oldest (or newest) first by `taken_ts`, ties by score then
  id, and photos without a date last in both directions. The candidate set is the same for
  every page of one query, so pages never overlap or skip.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from shoebox.ingest.search import SearchFilters, check_image_id, hit_from_record, to_where
from shoebox.protocol import ErrorCode, Hit, ShoeboxError
from shoebox.store import Record, VectorStore

MAX_TERMS = 16
MAX_UPLOADS = 8
MAX_WEIGHT = 100.0
MAX_LIMIT = 1000
MAX_OFFSET = 100_000
# Without a threshold the date sort orders this many of the most relevant hits; with one, every
# hit above it, up to MAX_TOP_K (a bound on the work of one request).
DEFAULT_DATE_TOP_K = 200
MAX_TOP_K = 10_000
# Below this norm the weighted terms cancel out ("dog - dog"): no direction is left to rank by.
_CANCELLED_NORM = 1e-6

Sort = Literal["relevance", "date_taken", "-date_taken"]


class Term(BaseModel):
    """One part of a combined query: exactly one of `text`, `image_id`, `image_upload`, and a weight."""

    model_config = ConfigDict(extra="forbid")

    text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)] | None = (
        None
    )
    image_id: str | None = Field(default=None, description="A stored image's id: its stored vector.")
    image_upload: int | None = Field(
        default=None, ge=0, lt=MAX_UPLOADS, description="Index of an uploaded file (multipart `files`)."
    )
    weight: float = Field(default=1.0, description="Non-zero; negative means 'not like this'.")

    @field_validator("weight")
    @classmethod
    def _weight(cls, value: float) -> float:
        if not math.isfinite(value) or value == 0 or abs(value) > MAX_WEIGHT:
            raise ValueError(f"weight must be non-zero, finite and at most {MAX_WEIGHT:g} in size")
        return value

    @field_validator("image_id")
    @classmethod
    def _uuid(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                return check_image_id(value)
            except ShoeboxError as exc:
                raise ValueError(exc.message) from None
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> Term:
        given = [k for k in ("text", "image_id", "image_upload") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a term has exactly one of text, image_id, image_upload")
        return self

    @property
    def kind(self) -> str:
        return (
            "text" if self.text is not None else "image_id" if self.image_id is not None else "image_upload"
        )


class CombinedQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    terms: list[Term] = Field(min_length=1, max_length=MAX_TERMS)
    filters: SearchFilters | None = None
    limit: int = Field(default=20, ge=1, le=MAX_LIMIT)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)
    score_threshold: float | None = Field(default=None, ge=-1.0, le=1.0)
    sort: Sort = "relevance"
    top_k: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TOP_K,
        description=(
            f"Date sorts: how many of the most relevant hits are ordered by date (default "
            f"{DEFAULT_DATE_TOP_K}, or {MAX_TOP_K} with a score_threshold)."
        ),
    )
    collection_name: str | None = None
    language: str | None = Field(
        default=None,
        description="The texts' language (ISO 639-1 or FLORES-200) for models that take one (NLLB); "
        "default: detected per text when clearly not English, else English.",
    )

    def uploads_used(self) -> set[int]:
        return {t.image_upload for t in self.terms if t.image_upload is not None}


def combine(vectors: Sequence[Sequence[float]], weights: Sequence[float]) -> list[float]:
    """The normalised weighted sum of the normalised vectors (see the module docstring)."""
    if len(vectors) != len(weights) or not vectors:
        raise ValueError("one weight per vector, at least one vector")
    matrix = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ShoeboxError(ErrorCode.VALIDATION, "a term's embedding is the zero vector")
    q = (np.asarray(weights, dtype=np.float64)[:, None] * (matrix / norms)).sum(axis=0)
    norm = float(np.linalg.norm(q))
    if norm < _CANCELLED_NORM:
        raise ShoeboxError(
            ErrorCode.VALIDATION, "the terms cancel each other out: nothing is left to rank by"
        )
    return (q / norm).astype(np.float32).tolist()


@dataclass(frozen=True)
class Ranked:
    hits: list[Hit]
    total: int | None  # the candidates a date sort ordered; None for relevance (open-ended)


def date_key(record: Record, newest_first: bool) -> tuple:
    taken = record.payload.get("taken_ts")
    dated = isinstance(taken, (int, float)) and math.isfinite(taken)
    when = (-taken if newest_first else taken) if dated else 0.0
    return (not dated, when, -(record.score or 0.0), record.id)


def rank(
    store: VectorStore,
    collection: str,
    vector: list[float],
    *,
    limit: int,
    offset: int = 0,
    filters: SearchFilters | None = None,
    score_threshold: float | None = None,
    sort: Sort = "relevance",
    top_k: int | None = None,
) -> Ranked:
    """One page of hits for a query vector, cut at `score_threshold` and ordered by `sort`."""
    where = to_where(filters)
    if sort == "relevance":
        found = store.query(
            collection, vector, limit=limit, offset=offset, where=where, score_threshold=score_threshold
        )
        return Ranked([hit_from_record(r) for r in found], None)
    window = top_k or (MAX_TOP_K if score_threshold is not None else DEFAULT_DATE_TOP_K)
    # Only the date travels with the candidates; the page's own payloads are fetched after.
    candidates = store.query(
        collection,
        vector,
        limit=window,
        where=where,
        score_threshold=score_threshold,
        with_payload=["taken_ts"],
    )
    candidates.sort(key=lambda r: date_key(r, newest_first=sort == "-date_taken"))
    page = candidates[offset : offset + limit]
    full = {r.id: r for r in store.get(collection, [r.id for r in page])} if page else {}
    hits = []
    for r in page:
        record = full.get(r.id)
        if record is not None:  # deleted between the two calls: left out rather than shown half
            hits.append(hit_from_record(Record(id=r.id, payload=record.payload, score=r.score)))
    return Ranked(hits, len(candidates))
