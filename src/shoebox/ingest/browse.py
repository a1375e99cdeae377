"""What the browse routes need to serve files safely and cheaply.

- `DecodeGate`: a full decode of a 100 MP RAW, HEIC or TIFF takes seconds and a gigabyte;
  at most `browse_decode_concurrency` run at once, the other requests wait for a slot (in the
  event loop, holding no thread) and get 503 `ERR_BUSY` with `Retry-After` after
  `browse_decode_wait_s`.
- `RenditionCache`: the JPEG renditions made, on disk (diskcache, LRU within
  `rendition_cache_size_limit`), keyed by content hash: the second request for an image is a
  file read. Only a rendition of bytes whose hash is the image's id goes in.
- `open_indexed`: the first stored path of an image that is still inside the allowed roots
  (real path, re-checked at every request: a file swapped for a link out of them is refused),
  still a regular file of the indexed size, opened without following a link swapped in.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoebox.ingest.cache import open_bytes_cache, read_bytes
from shoebox.ingest.catalog import Catalog
from shoebox.ingest.scan import OutsideRoots, open_within_roots
from shoebox.protocol import ErrorCode, ShoeboxError

CHUNK = 256 * 1024


class DecodeGate:
    """At most `limit` full decodes at once; a request waits `wait_s` for a slot, then ERR_BUSY."""

    def __init__(self, limit: int, wait_s: float) -> None:
        self.limit = max(1, limit)
        self.wait_s = wait_s
        self._sem: asyncio.Semaphore | None = None
        self.active = 0
        self.peak = 0
        self.waiting = 0
        self.decodes = 0
        self.refused = 0

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._sem is None:  # made in the event loop that uses it
            self._sem = asyncio.Semaphore(self.limit)
        self.waiting += 1
        try:
            async with asyncio.timeout(self.wait_s):
                await self._sem.acquire()
        except TimeoutError:
            self.refused += 1
            err = ShoeboxError(
                ErrorCode.BUSY,
                f"{self.limit} images are being decoded already and none finished in {self.wait_s:g} s; try again",
                status=503,
            )
            err.headers["Retry-After"] = str(max(1, round(self.wait_s / 3)))
            raise err from None
        finally:
            self.waiting -= 1
        self.active += 1
        self.decodes += 1
        self.peak = max(self.peak, self.active)
        try:
            yield
        finally:
            self.active -= 1
            self._sem.release()

    def stats(self) -> dict[str, int]:
        return {
            "decode_limit": self.limit,
            "decoding": self.active,
            "decoding_peak": self.peak,
            "waiting": self.waiting,
            "decodes": self.decodes,
            "refused_busy": self.refused,
        }


class RenditionCache:
    """JPEG renditions by content hash and kind, on disk, least recently used culled first."""

    def __init__(self, directory: Path, size_limit: int) -> None:
        self.enabled = size_limit > 0
        self._cache = open_bytes_cache(directory, max(size_limit, 1))
        self.hits = 0
        self.misses = 0

    @staticmethod
    def _key(sha256: str, kind: str) -> str:
        return f"{kind}\x00{sha256}"

    def get(self, sha256: str, kind: str) -> bytes | None:
        data = read_bytes(self._cache, self._key(sha256, kind)) if self.enabled else None
        if data is None:
            self.misses += 1
        else:
            self.hits += 1
        return data

    def put(self, sha256: str, kind: str, data: bytes) -> None:
        if self.enabled:
            self._cache.set(self._key(sha256, kind), data)

    def stats(self) -> dict[str, int]:
        return {
            "cache_hits": self.hits,
            "cache_misses": self.misses,
            "cache_bytes": int(self._cache.volume()),
        }

    def close(self) -> None:
        self._cache.close()


@dataclass
class IndexedFile:
    """An open descriptor of one of an image's stored paths, checked as it is now."""

    path: str
    fd: int
    size: int
    mtime_ns: int
    # Size and mtime are what the catalog recorded for this path: the bytes are (very likely)
    # the indexed content, so a client may cache them for good.
    unchanged: bool

    def _pieces(self) -> Iterator[bytes]:
        offset = 0
        while chunk := os.pread(self.fd, CHUNK, offset):
            offset += len(chunk)
            yield chunk

    def read(self) -> bytes:
        """The whole file, and the descriptor closed."""
        try:
            return b"".join(self._pieces())
        finally:
            self.close()

    def chunks(self) -> Iterator[bytes]:
        """The file's bytes a chunk at a time (closing the descriptor after the last)."""
        try:
            yield from self._pieces()
        finally:
            self.close()

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


def open_indexed(
    payload: dict[str, Any], roots: Iterable[str], catalog: Catalog | None, collection: str
) -> IndexedFile:
    """The first stored path that still holds the indexed bytes, opened.

    Raises 403 `ERR_PATH_NOT_ALLOWED` when every path that still exists now leads outside the
    roots (a link swapped in since the ingest), else 404 `ERR_PATH_NOT_FOUND`.
    """
    allowed = [os.path.realpath(r) for r in roots]
    expected_size = payload.get("size")
    refused: list[str] = []
    for path in payload.get("paths") or [payload.get("path")]:
        if not path:
            continue
        try:
            fd, st = open_within_roots(path, allowed)
        except OutsideRoots:
            refused.append(path)
            continue
        except OSError:
            continue
        if expected_size is not None and st.st_size != expected_size:
            os.close(fd)
            continue
        known = catalog.known_file(collection, path) if catalog is not None else None
        unchanged = known is not None and known.size == st.st_size and known.mtime_ns == st.st_mtime_ns
        return IndexedFile(path, fd, st.st_size, st.st_mtime_ns, unchanged)
    if refused:
        raise ShoeboxError(
            ErrorCode.PATH_NOT_ALLOWED,
            f"the files of this image now lead outside the allowed ingest roots ({refused[0]})",
        )
    raise ShoeboxError(
        ErrorCode.PATH_NOT_FOUND, "none of the indexed files of this image is on disk any more"
    )


@dataclass
class Browse:
    """The browse routes' decode gate and rendition cache, one of each per process."""

    gate: DecodeGate
    cache: RenditionCache

    @classmethod
    def open(cls, directory: Path, decode_limit: int, wait_s: float, cache_size: int) -> Browse:
        return cls(DecodeGate(decode_limit, wait_s), RenditionCache(directory, cache_size))

    def stats(self) -> dict[str, int]:
        return {**self.gate.stats(), **self.cache.stats()}

    def close(self) -> None:
        self.cache.close()
