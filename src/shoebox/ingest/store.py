"""The vector store: Qdrant through qdrant-client, embedded (local mode) or a server — one code path.

A point is one content: its id is a UUID derived from the SHA-256 of the bytes, so the same
photo under two paths is one point whose `payload.paths` lists both. The payload keys are a
contract with the search routes (see plan.md); payload indexes cover every field they filter on.
"""

from __future__ import annotations

import functools
import logging
import threading
import uuid
import warnings
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from shoebox.ingest.config import IngestSettings
from shoebox.protocol import ErrorCode, ShoeboxError

log = logging.getLogger(__name__)

# Payload fields the search filters use, and the index type each needs.
PAYLOAD_INDEXES: dict[str, qm.PayloadSchemaType] = {
    "taken_ts": qm.PayloadSchemaType.FLOAT,
    "camera_make": qm.PayloadSchemaType.KEYWORD,
    "camera_model": qm.PayloadSchemaType.KEYWORD,
    "format": qm.PayloadSchemaType.KEYWORD,
    "folders": qm.PayloadSchemaType.KEYWORD,
    "has_gps": qm.PayloadSchemaType.BOOL,
    "gps": qm.PayloadSchemaType.GEO,
    "paths": qm.PayloadSchemaType.KEYWORD,
    "sha256": qm.PayloadSchemaType.KEYWORD,
}

_ID_NAMESPACE = uuid.UUID("6f1c3a52-6d0e-4b6e-9b7a-5e0b7c1d2a90")


def point_id(sha256_hex: str) -> str:
    """The point id of a content: a UUID derived from its SHA-256 (stable across runs and machines)."""
    return str(uuid.uuid5(_ID_NAMESPACE, sha256_hex.lower()))


class _LockedClient:
    """Serialises every call into an embedded Qdrant, which is plain Python and not thread-safe.

    Search requests (threadpool) and the ingest store stage share one QdrantClient; with a
    server the lock is a no-op and calls run concurrently.
    """

    def __init__(self, client: QdrantClient, lock: AbstractContextManager[Any]) -> None:
        self._client = client
        self._lock = lock

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attr(*args, **kwargs)

        return locked


@dataclass
class StoredPoint:
    id: str
    payload: dict[str, Any]
    vector: list[float] | None


class VectorStore:
    def __init__(self, settings: IngestSettings) -> None:
        self.settings = settings
        self.is_local = not settings.qdrant_url
        self._tuned: set[int] = set()
        if self.is_local:
            path = settings.data_dir / "qdrant"
            path.mkdir(parents=True, exist_ok=True)
            raw = QdrantClient(path=str(path))
            self.lock: AbstractContextManager[Any] = threading.RLock()
        else:
            raw = QdrantClient(url=settings.qdrant_url, api_key=settings.qdrant_api_key, timeout=60)
            self.lock = nullcontext()
        self._raw = raw
        # Typed as QdrantClient for callers: every method is there, each call holds the lock.
        self.client: QdrantClient = _LockedClient(raw, self.lock)  # type: ignore[assignment]
        self._tune_local_storage()

    def _tune_local_storage(self) -> None:
        """Embedded Qdrant commits each point in its own SQLite transaction with a full fsync
        (~300 points/s here); WAL with synchronous=NORMAL keeps every commit safe from a process
        crash (`kill -9`) and writes ~15x faster. Only an OS crash may lose the last commits,
        which the catalog's known-files then re-ingests. Reaches into the client's internals, so
        it is best-effort."""
        if not self.is_local:
            return
        try:
            collections = self._raw._client.collections  # type: ignore[attr-defined]
            for collection in collections.values():
                conn = collection.storage.storage if collection.storage else None
                if conn is not None and id(conn) not in self._tuned:
                    conn.execute("PRAGMA journal_mode=WAL")
                    conn.execute("PRAGMA synchronous=NORMAL")
                    self._tuned.add(id(conn))
        except Exception as exc:  # a newer client may store things differently: just slower then
            log.debug("could not tune embedded Qdrant storage: %s", exc)

    @property
    def kind(self) -> str:
        return "qdrant-local" if self.is_local else "qdrant-server"

    def close(self) -> None:
        with self.lock:
            self._raw.close()

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ShoeboxError:
            raise
        except Exception as exc:  # the client raises many types: all mean the vector DB failed
            raise ShoeboxError(ErrorCode.VECTOR_DB, f"vector database error: {exc}") from exc

    # ------------------------------------------------------------ collections

    def collection_exists(self, name: str) -> bool:
        return bool(self._call(self.client.collection_exists, name))

    def ensure_collection(self, name: str, dim: int) -> None:
        """Create the collection (`dim`, dot product) with its payload indexes, unless it exists.

        Vectors are stored L2-normalised (see `upsert`), so dot product *is* cosine similarity;
        asking Qdrant for COSINE instead makes embedded mode re-normalise every stored vector
        on every query (~4x slower search at 10k points).
        """
        with self.lock:
            if self._call(self.client.collection_exists, name):
                return
            self._call(
                self.client.create_collection,
                name,
                vectors_config=qm.VectorParams(size=dim, distance=qm.Distance.DOT),
            )
            with warnings.catch_warnings():
                # Embedded mode ignores payload indexes (it scans) and warns; a server builds them.
                warnings.simplefilter("ignore", UserWarning)
                for field_name, schema in PAYLOAD_INDEXES.items():
                    self._call(
                        self.client.create_payload_index, name, field_name=field_name, field_schema=schema
                    )
            self._tune_local_storage()

    def delete_collection(self, name: str) -> None:
        if self.collection_exists(name):
            self._call(self.client.delete_collection, name)

    def count(self, name: str) -> int:
        if not self.collection_exists(name):
            return 0
        return int(self._call(self.client.count, name, exact=True).count)

    # ------------------------------------------------------------ points

    def retrieve(
        self, name: str, sha256s: Iterable[str], *, with_vectors: bool = False
    ) -> dict[str, StoredPoint]:
        """Existing points by content hash; missing ones are simply absent from the answer."""
        ids = {point_id(s): s for s in sha256s}
        if not ids or not self.collection_exists(name):
            return {}
        records = self._call(
            self.client.retrieve, name, ids=list(ids), with_payload=True, with_vectors=with_vectors
        )
        found: dict[str, StoredPoint] = {}
        for rec in records:
            sha = ids.get(str(rec.id))
            if sha is None:
                continue
            vector = rec.vector if isinstance(rec.vector, list) else None
            found[sha] = StoredPoint(id=str(rec.id), payload=dict(rec.payload or {}), vector=vector)
        return found

    def upsert(self, name: str, points: list[tuple[str, list[float], dict[str, Any]]]) -> None:
        """Write (sha256, vector, payload) points; idempotent, because ids come from content."""
        if not points:
            return
        vectors = np.asarray([vec for _, vec, _ in points], dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        vectors = vectors / np.where(norms > 0, norms, 1.0)
        structs = [
            qm.PointStruct(id=point_id(sha), vector=vec.tolist(), payload=payload)
            for (sha, _, payload), vec in zip(points, vectors, strict=True)
        ]
        self._call(self.client.upsert, name, points=structs, wait=True)

    def set_payload(self, name: str, sha256: str, payload: dict[str, Any]) -> None:
        self._call(self.client.set_payload, name, payload=payload, points=[point_id(sha256)], wait=True)

    def delete(self, name: str, sha256s: Iterable[str]) -> None:
        ids = [point_id(s) for s in sha256s]
        if ids:
            self._call(self.client.delete, name, points_selector=qm.PointIdsList(points=ids), wait=True)
