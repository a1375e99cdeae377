"""Store backends for tests: Qdrant Edge, and qdrant-client's local mode standing in for a server.

No Qdrant server can run here, so the server backend's code (`ServerStore`) is driven through
local mode, which answers the same client calls.
"""

from __future__ import annotations

from pathlib import Path

from shoebox.store import VectorStore
from shoebox.store.edge import EdgeStore, IndexParams
from shoebox.store.server import ServerStore

BACKENDS = ["edge", "server-api"]


def open_backend(kind: str, root: Path, **edge: object) -> VectorStore:
    if kind == "edge":
        return EdgeStore(root / "edge", params=IndexParams(**edge) if edge else None)  # type: ignore[arg-type]
    if kind == "server-api":
        return ServerStore(path=root / "qdrant")
    raise ValueError(kind)
