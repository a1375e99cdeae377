"""The vector store: the one package that imports Qdrant (see `base` for the interface).

`open_store(settings)` picks the backend:
- `edge` (the default when no server is configured): Qdrant Edge embedded under the data dir;
- `server`: qdrant-client against `SHOEBOX_QDRANT_URL`, a Qdrant server or cluster;
- `local`: qdrant-client's local mode under the data dir, the pure-Python stand-in of the
  server API (the test suite's server backend; also how libraries of earlier versions were kept).
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from shoebox.protocol import ErrorCode, ShoeboxError
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
    from shoebox.store.edge import EdgeStore

log = logging.getLogger(__name__)

# In the folder of an earlier version's store (qdrant-client local mode, `<data_dir>/qdrant`):
LEGACY_DIR = "qdrant"
IMPORTED_MARKER = "IMPORTED_TO_EDGE"  # its collections are in the edge store: never import again
IMPORTING_MARKER = "IMPORTING_TO_EDGE"  # the collection being imported (a cut-off import is redone)

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
    store = EdgeStore(settings.data_dir / "edge", params=params, background_index=background_index)
    legacy = settings.data_dir / LEGACY_DIR
    if (legacy / "meta.json").is_file() and not (legacy / IMPORTED_MARKER).exists():
        try:
            import_legacy(legacy, store)
        except BaseException:
            store.close()
            raise
    return store


def import_legacy(legacy: Path, edge: EdgeStore) -> None:
    """Copy, once, the collections of an earlier version's store that the edge store lacks.

    The old folder stays as it was, plus a marker file that stops further imports (delete the
    marker to import again what the edge store still lacks). A failed import deletes the edge
    collection it was writing and raises; the old data is untouched, and the next start retries.
    """
    from shoebox.store.export import copy_collection
    from shoebox.store.server import ServerStore

    importing = legacy / IMPORTING_MARKER
    if importing.is_file():  # an import cut off by a crash or a kill: its collection is partial
        partial = importing.read_text().strip()
        if partial:
            log.warning("removing the partial import of collection %r (cut off last time)", partial)
            edge.delete_collection(partial)
    old = ServerStore(path=legacy, prefix="")
    try:
        missing = [n for n in old.list_collections() if not edge.collection_exists(n)]
        for name in missing:
            started = time.monotonic()
            total = old.count(name)
            log.info("importing collection %r (%d points) from the earlier store %s", name, total, legacy)
            importing.write_text(name)
            try:
                copied = copy_collection(old, edge, name)
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    edge.delete_collection(name)
                if not isinstance(exc, Exception):  # Ctrl-C, SystemExit: stay what they are
                    raise
                raise ShoeboxError(
                    ErrorCode.VECTOR_DB,
                    f"importing collection {name!r} from the earlier store {legacy} failed ({exc}); its data "
                    f"there is untouched and the import is retried at the next start (SHOEBOX_STORE=local "
                    f"serves it as it is meanwhile)",
                ) from exc
            importing.unlink()
            edge.after_writes(name)
            seconds = time.monotonic() - started
            log.info(
                "imported collection %r into the edge store: %d points in %.1f s (%.0f points/s)",
                name,
                copied,
                seconds,
                copied / seconds if seconds > 0 else 0.0,
            )
    finally:
        old.close()
    (legacy / IMPORTED_MARKER).write_text(
        "The collections of this folder were copied into ../edge (Qdrant Edge), which Shoebox now uses.\n"
        "This folder is kept as it was; delete it once the library looks right. Delete this file to\n"
        "import again the collections that ../edge lacks.\n"
    )
    if missing:
        log.info("the earlier store %s stays in place, marked %s", legacy, IMPORTED_MARKER)
