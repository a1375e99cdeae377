"""Embedding cache: the same bytes under the same model are never sent to the ML service twice.

diskcache under the data dir, key = model name + SHA-256, with a size limit and
least-recently-used culling. Each entry keeps the vector and the content-derived metadata
(size, EXIF, thumbnail reference) so a cache hit needs no decode at all.

Entries are plain bytes (the metadata as JSON, a NUL, the vector as float32), never pickles:
diskcache unpickles what its files hold (CVE-2025-69872), so a cache whose Disk refuses every
pickled row cannot be made to run code by whoever can write into it. A pickled row (an earlier
version's, or a tampered one) reads as a miss.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import diskcache
import numpy as np
from diskcache.core import MODE_PICKLE


class _NoPickleDisk(diskcache.Disk):
    """diskcache's Disk for raw bytes only: a row that asks to be unpickled is refused."""

    def fetch(self, mode: int, filename: str, value: Any, read: bool) -> Any:
        if mode == MODE_PICKLE:
            raise _PickledEntry("refusing to unpickle a cache entry")
        return super().fetch(mode, filename, value, read)


class _PickledEntry(ValueError):
    pass


def open_bytes_cache(directory: Path, size_limit: int) -> diskcache.Cache:
    """A diskcache of raw bytes under `directory` (LRU within `size_limit`) that never unpickles."""
    directory.mkdir(parents=True, exist_ok=True)
    return diskcache.Cache(
        str(directory),
        size_limit=size_limit,
        eviction_policy="least-recently-used",
        statistics=False,
        disk=_NoPickleDisk,
    )


def read_bytes(cache: diskcache.Cache, key: str) -> bytes | None:
    """The bytes stored under `key`; a pickled row (tampered, or an earlier version's) is deleted
    and reads as a miss."""
    try:
        raw = cache.get(key)
    except _PickledEntry:
        cache.delete(key)
        return None
    return raw if isinstance(raw, bytes) else None


class EmbeddingCache:
    def __init__(self, directory: Path, size_limit: int) -> None:
        self._cache = open_bytes_cache(directory, size_limit)

    @staticmethod
    def _key(sha256: str, model_name: str) -> str:
        return f"{model_name}\x00{sha256}"

    def get(self, sha256: str, model_name: str) -> tuple[list[float], dict[str, Any]] | None:
        raw = read_bytes(self._cache, self._key(sha256, model_name))
        if raw is None:
            return None
        meta, _, vector = raw.partition(b"\0")  # JSON never holds a raw NUL byte
        try:
            return np.frombuffer(vector, dtype=np.float32).tolist(), json.loads(meta)
        except ValueError:  # a damaged row: a miss
            return None

    def put(self, sha256: str, model_name: str, vector: list[float], meta: dict[str, Any]) -> None:
        blob = json.dumps(meta).encode() + b"\0" + np.asarray(vector, np.float32).tobytes()
        self._cache.set(self._key(sha256, model_name), blob)

    def clear(self) -> int:
        return int(self._cache.clear())

    def __len__(self) -> int:
        return len(self._cache)

    def close(self) -> None:
        self._cache.close()
