"""The server backend: qdrant-client against a Qdrant server or cluster (the scale-out path).

The same class drives qdrant-client's *local mode* (a pure-Python stand-in of the server API,
in a folder): the test suite runs the server code path against it, call for call, because no
Qdrant server can be started here. Local mode is not thread-safe, so its calls are serialised;
against a server they run concurrently.

In a shared server, Shoebox's collections carry a prefix (`shoebox__photos`), so listing and
deleting never touch another application's collections.
"""

from __future__ import annotations

import functools
import logging
import threading
import warnings
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from shoebox.store.base import (
    PAYLOAD_INDEXES,
    GeoBox,
    MatchAny,
    MoreValuesThan,
    Range,
    Record,
    VectorStore,
    Where,
    check_collection_name,
    vector_db_error,
)

log = logging.getLogger(__name__)

_SCHEMA = {
    "keyword": qm.PayloadSchemaType.KEYWORD,
    "float": qm.PayloadSchemaType.FLOAT,
    "bool": qm.PayloadSchemaType.BOOL,
    "geo": qm.PayloadSchemaType.GEO,
}


def to_filter(where: Where | None) -> qm.Filter | None:
    if not where:
        return None
    must: list[qm.Condition] = []
    for cond in where.must:
        if isinstance(cond, MatchAny):
            values = list(cond.values)
            if len(values) == 1 or any(isinstance(v, bool) for v in values):
                # MatchAny takes strings or ints only; a bool (or a single value) is a MatchValue.
                must.append(
                    qm.Filter(
                        should=[qm.FieldCondition(key=cond.key, match=qm.MatchValue(value=v)) for v in values]
                    )
                    if len(values) > 1
                    else qm.FieldCondition(key=cond.key, match=qm.MatchValue(value=values[0]))
                )
            else:
                must.append(qm.FieldCondition(key=cond.key, match=qm.MatchAny(any=values)))
        elif isinstance(cond, Range):
            must.append(qm.FieldCondition(key=cond.key, range=qm.Range(gte=cond.gte, lte=cond.lte)))
        elif isinstance(cond, GeoBox):
            must.append(
                qm.FieldCondition(
                    key=cond.key,
                    geo_bounding_box=qm.GeoBoundingBox(
                        top_left=qm.GeoPoint(lat=cond.max_lat, lon=cond.min_lon),
                        bottom_right=qm.GeoPoint(lat=cond.min_lat, lon=cond.max_lon),
                    ),
                )
            )
        elif isinstance(cond, MoreValuesThan):
            must.append(qm.FieldCondition(key=cond.key, values_count=qm.ValuesCount(gt=cond.count)))
        else:  # pragma: no cover - Where only holds the conditions above
            raise TypeError(f"unknown condition {cond!r}")
    return qm.Filter(must=must)


def _record(point: Any) -> Record:
    vector = point.vector if isinstance(point.vector, list) else None
    return Record(
        id=str(point.id),
        payload=dict(point.payload or {}),
        vector=vector,
        score=getattr(point, "score", None),
    )


def _wrapped(fn: Any) -> Any:
    @functools.wraps(fn)
    def call(self: ServerStore, *args: Any, **kwargs: Any) -> Any:
        try:
            with self.lock:
                return fn(self, *args, **kwargs)
        except Exception as exc:  # the client raises many types: all mean the vector DB failed
            raise vector_db_error(exc) from exc

    return call


class ServerStore(VectorStore):
    def __init__(
        self,
        *,
        url: str | None = None,
        path: Path | None = None,
        api_key: str | None = None,
        prefix: str = "shoebox__",
        timeout: float = 60.0,
    ) -> None:
        if (url is None) == (path is None):
            raise ValueError("give a server url or a local-mode path")
        self.prefix = prefix
        if path is not None:
            path.mkdir(parents=True, exist_ok=True)
            self.client = QdrantClient(path=str(path))
            self.kind = "qdrant-local"
            self.lock: AbstractContextManager[Any] = threading.RLock()
            self._tune_local_storage()
        else:
            self.client = QdrantClient(url=url, api_key=api_key, timeout=int(timeout))
            self.kind = "qdrant-server"
            self.lock = nullcontext()
        self.where = url or str(path)

    def _q(self, name: str) -> str:
        return self.prefix + check_collection_name(name)

    def _tune_local_storage(self) -> None:
        """Local mode commits each point in its own SQLite transaction with a full fsync
        (~300 points/s here); WAL with synchronous=NORMAL keeps every commit safe from a process
        crash (`kill -9`) and writes ~15x faster. Reaches into the client's internals, so it is
        best-effort."""
        try:
            collections = self.client._client.collections  # type: ignore[attr-defined]
            for collection in collections.values():
                conn = collection.storage.storage if collection.storage else None
                if conn is not None:
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute("PRAGMA synchronous=NORMAL")
        except Exception as exc:  # a newer client may store things differently: just slower then
            log.debug("could not tune local-mode storage: %s", exc)

    def describe(self) -> dict[str, Any]:
        return {"backend": self.kind, "location": self.where, "prefix": self.prefix}

    # -------------------------------------------------------- collections

    @_wrapped
    def collection_exists(self, name: str) -> bool:
        return bool(self.client.collection_exists(self._q(name)))

    @_wrapped
    def list_collections(self) -> list[str]:
        names = [c.name for c in self.client.get_collections().collections]
        return sorted(n[len(self.prefix) :] for n in names if n.startswith(self.prefix))

    @_wrapped
    def ensure_collection(self, name: str, dim: int) -> None:
        """Vectors are stored L2-normalised, so dot product *is* cosine similarity; asking for
        COSINE instead makes local mode re-normalise every stored vector on every query."""
        q = self._q(name)
        if self.client.collection_exists(q):
            return
        self.client.create_collection(q, vectors_config=qm.VectorParams(size=dim, distance=qm.Distance.DOT))
        with warnings.catch_warnings():
            # Local mode ignores payload indexes (it scans) and warns; a server builds them.
            warnings.simplefilter("ignore", UserWarning)
            for field_name, schema in PAYLOAD_INDEXES.items():
                self.client.create_payload_index(q, field_name=field_name, field_schema=_SCHEMA[schema])
        if self.kind == "qdrant-local":
            self._tune_local_storage()

    @_wrapped
    def collection_dim(self, name: str) -> int | None:
        q = self._q(name)
        if not self.client.collection_exists(q):
            return None
        vectors = self.client.get_collection(q).config.params.vectors
        return int(vectors.size) if isinstance(vectors, qm.VectorParams) else None

    @_wrapped
    def delete_collection(self, name: str) -> None:
        q = self._q(name)
        if self.client.collection_exists(q):
            self.client.delete_collection(q)

    @_wrapped
    def count(self, name: str, where: Where | None = None) -> int:
        q = self._q(name)
        if not self.client.collection_exists(q):
            return 0
        return int(self.client.count(q, count_filter=to_filter(where), exact=True).count)

    # -------------------------------------------------------- points

    @_wrapped
    def write(self, name: str, records: list[Record]) -> None:
        if records:
            self.client.upsert(
                self._q(name),
                points=[qm.PointStruct(id=r.id, vector=r.vector, payload=r.payload) for r in records],
                wait=True,
            )

    @_wrapped
    def set_payload_by_id(self, name: str, pid: str, payload: dict[str, Any]) -> None:
        self.client.set_payload(self._q(name), payload=payload, points=[pid], wait=True)

    @_wrapped
    def delete_ids(self, name: str, ids: list[str]) -> None:
        if ids:
            self.client.delete(self._q(name), points_selector=qm.PointIdsList(points=ids), wait=True)

    @_wrapped
    def get(self, name: str, ids: list[str], *, with_vectors: bool = False) -> list[Record]:
        if not ids:
            return []
        q = self._q(name)
        try:
            records = self.client.retrieve(q, ids=ids, with_payload=True, with_vectors=with_vectors)
        except Exception:
            if not self.client.collection_exists(q):
                return []  # as for ids it does not hold
            raise
        return [_record(r) for r in records]

    @_wrapped
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
        response = self.client.query_points(
            self._q(name),
            query=vector,
            query_filter=to_filter(where),
            limit=limit,
            offset=offset,
            score_threshold=score_threshold,
            with_payload=with_payload,
        )
        return [_record(p) for p in response.points]

    @_wrapped
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
        flt = to_filter(where)
        params = qm.SearchParams(hnsw_ef=breadth) if breadth else None
        requests = [
            qm.QueryRequest(
                query=v,
                filter=flt,
                score_threshold=score_threshold,
                limit=limit,
                params=params,
                with_payload=False,
            )
            for v in vectors
        ]
        responses = self.client.query_batch_points(self._q(name), requests=requests)
        return [[_record(p) for p in r.points] for r in responses]

    @_wrapped
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
        records, next_start = self.client.scroll(
            self._q(name),
            scroll_filter=to_filter(where),
            limit=limit,
            offset=start,
            with_payload=payload,
            with_vectors=with_vectors,
        )
        return [_record(r) for r in records], (str(next_start) if next_start is not None else None)

    @_wrapped
    def page(self, name: str, *, limit: int, offset: int) -> list[Record]:
        # A query without a vector returns points in id order, and unlike scroll it takes an offset.
        response = self.client.query_points(self._q(name), limit=limit, offset=offset, with_payload=True)
        return [_record(p) for p in response.points]

    def close(self) -> None:
        with self.lock:
            self.client.close()
