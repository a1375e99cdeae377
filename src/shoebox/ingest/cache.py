"""Embedding cache: the same bytes under the same model are never sent to the ML service twice.

diskcache under the data dir, key = model name + SHA-256, with a size limit and
least-recently-used culling. Each entry keeps the vector and the content-derived metadata
(size, EXIF, thumbnail reference) so a cache hit needs no decode at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import diskcache
import numpy as np


class EmbeddingCache:
    def __init__(self, directory: Path, size_limit: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._cache = diskcache.Cache(
            str(directory), size_limit=size_limit, eviction_policy="least-recently-used", statistics=False
        )

    @staticmethod
    def _key(sha256: str, model_name: str) -> str:
        return f"{model_name}\x00{sha256}"

    def get(self, sha256: str, model_name: str) -> tuple[list[float], dict[str, Any]] | None:
        entry = self._cache.get(self._key(sha256, model_name))
        if entry is None:
            return None
        vector = np.frombuffer(entry["v"], dtype=np.float32).tolist()
        return vector, entry["meta"]

    def put(self, sha256: str, model_name: str, vector: list[float], meta: dict[str, Any]) -> None:
        self._cache.set(
            self._key(sha256, model_name), {"v": np.asarray(vector, np.float32).tobytes(), "meta": meta}
        )

    def clear(self) -> int:
        return int(self._cache.clear())

    def __len__(self) -> int:
        return len(self._cache)

    def close(self) -> None:
        self._cache.close()
