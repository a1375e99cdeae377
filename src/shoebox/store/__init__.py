"""The vector store: the one package that imports Qdrant (see `base` for the interface).

`open_store(settings)` picks the backend:
- `edge` (the default when no server is configured): Qdrant Edge embedded under the data dir;
- `server`: qdrant-client against `SHOEBOX_QDRANT_URL`, a Qdrant server or cluster;
- `local`: qdrant-client's local mode under the data dir, the pure-Python stand-in of the
  server API (the test suite's server backend; also how libraries of earlier versions were kept).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shoebox.store.base import (
    PAYLOAD_INDEXES,
    GeoBox,
    IndexStatus,
    MatchAny,
    MoreValuesThan,
    Point,
    Range,
    Record,
    StoredPoint,
    VectorStore,
    Where,
    check_collection_name,
    point_id,
)

if TYPE_CHECKING:
    from shoebox.ingest.config import IngestSettings

__all__ = [
    "PAYLOAD_INDEXES",
    "GeoBox",
    "IndexStatus",
    "MatchAny",
    "MoreValuesThan",
    "Point",
    "Range",
    "Record",
    "StoredPoint",
    "VectorStore",
    "Where",
    "backend_of",
    "check_collection_name",
    "open_store",
    "point_id",
]


def backend_of(settings: IngestSettings) -> str:
    if settings.store != "auto":
        return settings.store
    return "server" if settings.qdrant_url else "edge"


def open_store(settings: IngestSettings, *, background_index: bool = True) -> VectorStore:
    backend = backend_of(settings)
    if backend == "server":
        from shoebox.store.server import ServerStore

        if not settings.qdrant_url:
            raise ValueError("SHOEBOX_STORE=server needs SHOEBOX_QDRANT_URL")
        return ServerStore(
            url=settings.qdrant_url, api_key=settings.qdrant_api_key, prefix=settings.qdrant_prefix
        )
    if backend == "local":
        from shoebox.store.server import ServerStore

        # Its own folder, shared with nobody: no prefix, as libraries of earlier versions were named.
        return ServerStore(path=settings.data_dir / "qdrant", prefix="")
    from shoebox.store.edge import EdgeStore, IndexParams

    params = IndexParams(threshold=settings.index_threshold, hnsw_ef=settings.hnsw_ef)
    return EdgeStore(settings.data_dir / "edge", params=params, background_index=background_index)
