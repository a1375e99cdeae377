"""The vector store's one interface: what Shoebox asks of a vector database, in its own types.

Two backends implement it (`edge.EdgeStore`, the embedded default, and `server.ServerStore`,
qdrant-client against a server or cluster). Nothing outside this package imports Qdrant: the
ingest pipeline, search, similar, listing, duplicates and collection management speak only
these types, and every backend failure arrives as one `ShoeboxError(ERR_VECTOR_DB)`.

A point is one content: its id is a UUID derived from the SHA-256 of the bytes, so the same
photo under two paths is one point whose `payload.paths` lists both. Vectors are stored
L2-normalised and compared by dot product, which then *is* cosine similarity.
"""

from __future__ import annotations

import abc
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from shoebox.protocol import ErrorCode, ShoeboxError

# Payload fields the search filters use, and the index each needs (names of Qdrant's schema types).
PayloadIndex = Literal["keyword", "float", "bool", "geo"]
PAYLOAD_INDEXES: dict[str, PayloadIndex] = {
    "taken_ts": "float",
    "camera_make": "keyword",
    "camera_model": "keyword",
    "format": "keyword",
    "folders": "keyword",
    "has_gps": "bool",
    "gps": "geo",
    # the perceptual hash (imaging.fingerprint): a lookup of the other files of one picture
    "phash": "keyword",
}
# Not indexed: `sha256` (a point's id is derived from it) and `paths` (only counted, by the
# exact-duplicate scan): two keyword indexes of one value per point that halved the time to
# open a 100,000-point shard when dropped (0.85 → 0.38 s, measured).

_ID_NAMESPACE = uuid.UUID("6f1c3a52-6d0e-4b6e-9b7a-5e0b7c1d2a90")
# A collection name is also a directory name (embedded) and part of a server collection's name.
# '~' only in the store: a collection's other generations (models) are `<name>~<digest>`, and a
# collection's own name cannot hold it.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.~-]{0,127}$")


def point_id(sha256_hex: str) -> str:
    """The point id of a content: a UUID derived from its SHA-256 (stable across runs and machines)."""
    return str(uuid.uuid5(_ID_NAMESPACE, sha256_hex.lower()))


def check_collection_name(name: str) -> str:
    if not _NAME.match(name):
        raise ShoeboxError(
            ErrorCode.VALIDATION,
            f"not a collection name: {name[:80]!r} (letters, digits, '_', '-', '.', '~'; at most 128)",
        )
    return name


def normalised(vectors: Iterable[list[float]] | np.ndarray) -> np.ndarray:
    array = np.asarray(vectors if isinstance(vectors, np.ndarray) else list(vectors), dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return array / np.where(norms > 0, norms, 1.0)


# ---------------------------------------------------------------- filters


@dataclass(frozen=True)
class MatchAny:
    """The field (or any element of a list field) equals one of `values`."""

    key: str
    values: tuple[str | bool, ...]


@dataclass(frozen=True)
class Range:
    key: str
    gte: float | None = None
    lte: float | None = None


@dataclass(frozen=True)
class GeoBox:
    key: str
    min_lat: float
    min_lon: float
    max_lat: float
    max_lon: float


@dataclass(frozen=True)
class MoreValuesThan:
    """A list field holds more than `count` values (e.g. a content under several paths)."""

    key: str
    count: int


Condition = MatchAny | Range | GeoBox | MoreValuesThan


@dataclass(frozen=True)
class Where:
    """All of `must` hold. Backends translate it into the engine's own filter, evaluated there."""

    must: tuple[Condition, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.must)


# ---------------------------------------------------------------- answers


@dataclass
class Record:
    """A stored point as Shoebox sees it; `score` is set on search answers."""

    id: str
    payload: dict[str, Any] = field(default_factory=dict)
    vector: list[float] | None = None
    score: float | None = None


@dataclass
class StoredPoint:
    """A point found by content hash (the ingest side's view)."""

    id: str
    payload: dict[str, Any]
    vector: list[float] | None


@dataclass
class IndexStatus:
    """How a collection is searched: `exact` until an HNSW index covers it."""

    points: int
    indexed: int
    building: bool = False
    last_build_s: float | None = None
    error: str | None = None

    @property
    def exact(self) -> bool:
        return self.indexed < self.points


Point = tuple[str, list[float], dict[str, Any]]  # (sha256, vector, payload)


class VectorStore(abc.ABC):
    """What Shoebox needs of a vector database. Every method may raise ShoeboxError(ERR_VECTOR_DB)."""

    #: "qdrant-edge", "qdrant-server" or "qdrant-local" (qdrant-client's local mode)
    kind: str

    # -------------------------------------------------------- collections

    @abc.abstractmethod
    def collection_exists(self, name: str) -> bool: ...

    @abc.abstractmethod
    def list_collections(self) -> list[str]:
        """The Shoebox collections this store holds (never another application's)."""

    @abc.abstractmethod
    def ensure_collection(self, name: str, dim: int) -> None:
        """Create the collection (`dim`, dot product) with its payload indexes, unless it exists."""

    @abc.abstractmethod
    def collection_dim(self, name: str) -> int | None: ...

    @abc.abstractmethod
    def delete_collection(self, name: str) -> None: ...

    @abc.abstractmethod
    def count(self, name: str, where: Where | None = None) -> int: ...

    def index_status(self, name: str) -> IndexStatus:
        count = self.count(name)
        return IndexStatus(points=count, indexed=count)

    def after_writes(self, name: str) -> None:
        """A batch of writes (an ingest job, a prune) has ended: a chance to build indexes."""
        return None

    def wait_for_index(self, name: str, timeout: float | None = None) -> bool:
        """Block until no index build of `name` is running (tests, export). True when idle."""
        return True

    # -------------------------------------------------------- points by content

    def retrieve(
        self, name: str, sha256s: Iterable[str], *, with_vectors: bool = False
    ) -> dict[str, StoredPoint]:
        """Existing points by content hash; missing ones are simply absent from the answer."""
        ids = {point_id(s): s for s in sha256s}
        if not ids:
            return {}  # (`get` answers nothing for a missing collection: no extra call for that)
        found: dict[str, StoredPoint] = {}
        for rec in self.get(name, list(ids), with_vectors=with_vectors):
            sha = ids.get(rec.id)
            if sha is not None:
                found[sha] = StoredPoint(id=rec.id, payload=rec.payload, vector=rec.vector)
        return found

    def upsert(self, name: str, points: list[Point]) -> None:
        """Write (sha256, vector, payload) points; idempotent, because ids come from content."""
        if not points:
            return
        vectors = normalised([vec for _, vec, _ in points])
        self.write(
            name,
            [
                Record(id=point_id(sha), vector=vec.tolist(), payload=payload)
                for (sha, _, payload), vec in zip(points, vectors, strict=True)
            ],
        )

    def set_payload(self, name: str, sha256: str, payload: dict[str, Any]) -> None:
        self.set_payload_by_id(name, point_id(sha256), payload)

    def delete(self, name: str, sha256s: Iterable[str]) -> None:
        ids = [point_id(s) for s in sha256s]
        if ids:
            self.delete_ids(name, ids)

    def sync(self, name: str) -> None:
        """Make the writes so far durable against an OS crash, not only a process crash.

        The ingest calls it before it records outcomes in the catalog, so the catalog never
        knows a file whose point a power cut could take away. A server acknowledges writes
        durably already (`wait=True`), so the default does nothing.
        """
        return None

    # -------------------------------------------------------- points by id

    @abc.abstractmethod
    def write(self, name: str, records: list[Record]) -> None:
        """Upsert points as given (ids, vectors already normalised, payloads); durable on return."""

    @abc.abstractmethod
    def set_payload_by_id(self, name: str, pid: str, payload: dict[str, Any]) -> None:
        """Merge `payload` into the point's payload."""

    @abc.abstractmethod
    def delete_ids(self, name: str, ids: list[str]) -> None: ...

    @abc.abstractmethod
    def get(self, name: str, ids: list[str], *, with_vectors: bool = False) -> list[Record]:
        """The points of these ids that exist, with payload."""

    # -------------------------------------------------------- search

    @abc.abstractmethod
    def query(
        self,
        name: str,
        vector: list[float],
        *,
        limit: int,
        offset: int = 0,
        where: Where | None = None,
        score_threshold: float | None = None,
        with_payload: bool | list[str] = True,
    ) -> list[Record]:
        """Nearest points by cosine similarity, filtered and paged inside the engine (payload: all, none, or these keys)."""

    @abc.abstractmethod
    def query_batch(
        self,
        name: str,
        vectors: list[list[float]],
        *,
        limit: int,
        score_threshold: float | None = None,
        where: Where | None = None,
        breadth: int | None = None,
    ) -> list[list[Record]]:
        """Several searches planned as one (the duplicate scan); answers carry ids and scores only.

        `breadth` narrows an approximate (HNSW) search below the store's default: neighbours at
        cosine 0.95 and above are found by a narrow search, at a fraction of the cost.
        """

    @abc.abstractmethod
    def scroll(
        self,
        name: str,
        *,
        where: Where | None = None,
        limit: int = 256,
        start: str | None = None,
        payload: bool | list[str] = True,
        with_vectors: bool = False,
    ) -> tuple[list[Record], str | None]:
        """One page of points in id order from the id `start` on (inclusive); then the next page's start."""

    def page(self, name: str, *, limit: int, offset: int) -> list[Record]:
        """Points in id order, `offset` skipped (browse); stable while nothing is added or removed."""
        start: str | None = None
        skipped = 0
        while skipped < offset:
            step = min(1024, offset - skipped)
            records, start = self.scroll(name, limit=step, start=start, payload=False)
            skipped += len(records)
            if start is None:
                return []
        records, _ = self.scroll(name, limit=limit, start=start)
        return records

    def iter_points(
        self, name: str, *, page: int = 256, payload: bool | list[str] = True
    ) -> Iterator[list[Record]]:
        """Every point with its vector (and payload), a page at a time (export, duplicate scan)."""
        start: str | None = None
        while True:
            records, start = self.scroll(name, limit=page, start=start, payload=payload, with_vectors=True)
            if records:
                yield records
            if start is None:
                return

    # -------------------------------------------------------- life

    @abc.abstractmethod
    def close(self) -> None: ...

    def describe(self) -> dict[str, Any]:
        """What /health and the CLI show about the backend."""
        return {"backend": self.kind}


def vector_db_error(exc: BaseException) -> ShoeboxError:
    if isinstance(exc, ShoeboxError):
        return exc
    return ShoeboxError(ErrorCode.VECTOR_DB, f"vector database error: {exc}")
