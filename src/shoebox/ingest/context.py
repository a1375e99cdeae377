"""Everything a request handler of the ingestion service needs, built once at start-up."""

from __future__ import annotations

import contextlib
import fcntl
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from fastapi import Request

from shoebox.ingest.activity import SearchActivity
from shoebox.ingest.browse import Browse
from shoebox.ingest.cache import EmbeddingCache
from shoebox.ingest.catalog import Catalog
from shoebox.ingest.config import IngestSettings
from shoebox.ingest.housekeeping import Housekeeping
from shoebox.ingest.jobs import JobRunner
from shoebox.ingest.migration import Migrations
from shoebox.ingest.ml_client import MLClient
from shoebox.protocol import ErrorCode, ShoeboxError
from shoebox.store import VectorStore, open_store

SELECTED_COLLECTION_KEY = "selected_collection"
LOCK_FILE = "shoebox.lock"


class DataDirInUse(ShoeboxError):
    def __init__(self, data_dir: Path, holder: str) -> None:
        super().__init__(
            ErrorCode.CONFLICT,
            f"the data dir {data_dir} is in use by another Shoebox process ({holder}); "
            "stop it, or give this one another SHOEBOX_DATA_DIR",
        )


def lock_data_dir(data_dir: Path) -> IO[str]:
    """Hold the data dir for this process: one process owns a catalog and an embedded store.

    A `flock` on a file in it, released by the kernel when the process ends however it ends
    (kill -9 included), so a stale lock never needs cleaning. A second process gets a clear
    error here instead of a half-opened catalog or a shard it cannot lock.
    """
    fh = open(data_dir / LOCK_FILE, "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "unknown pid"
        fh.close()
        raise DataDirInUse(data_dir, holder) from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}\n")
    fh.flush()
    return fh


@dataclass
class ServiceContext:
    settings: IngestSettings
    catalog: Catalog
    store: VectorStore
    cache: EmbeddingCache
    ml: MLClient
    jobs: JobRunner
    thumbs_dir: Path
    lock: IO[str] | None = field(default=None, repr=False)
    browse: Browse | None = field(default=None, repr=False)
    migrations: Migrations = field(init=False, repr=False)
    housekeeping: Housekeeping = field(init=False, repr=False)
    activity: SearchActivity = field(default_factory=SearchActivity, repr=False)

    def __post_init__(self) -> None:
        self.migrations = Migrations(
            self.settings,
            self.catalog,
            self.store,
            self.ml,
            self.thumbs_dir,
            self.jobs.collection_lock,
            self.activity,
        )
        if self.browse is None:
            self.browse = Browse.open(
                self.settings.data_dir / "renditions",
                self.settings.browse_decode_concurrency,
                self.settings.browse_decode_wait_s,
                self.settings.rendition_cache_size_limit,
            )
        self.housekeeping = Housekeeping(
            self.settings, self.catalog, self.thumbs_dir, busy=lambda: self.jobs.busy() or self._migrating()
        )
        self.jobs.after_change = self.housekeeping.request

    def _migrating(self) -> bool:
        return bool(self.catalog.unfinished_migrations())

    @classmethod
    def open(cls, settings: IngestSettings, ml: MLClient | None = None) -> ServiceContext:
        """Open everything under the data dir; `ml` replaces the HTTP client of the ML services (tests)."""
        data = settings.data_dir
        data.mkdir(parents=True, exist_ok=True)
        lock = lock_data_dir(data)
        opened: list[object] = []
        try:
            thumbs = data / "thumbs"
            thumbs.mkdir(exist_ok=True)
            catalog = Catalog(data / "catalog.sqlite3")
            opened.append(catalog)
            store = open_store(settings)
            opened.append(store)
            cache = EmbeddingCache(data / "embedding_cache", settings.cache_size_limit)
            opened.append(cache)
        except BaseException:
            for thing in reversed(opened):
                with contextlib.suppress(Exception):
                    thing.close()  # type: ignore[attr-defined]
            lock.close()
            raise
        ml = ml or MLClient(settings)
        jobs = JobRunner(
            settings=settings, catalog=catalog, store=store, cache=cache, ml=ml, thumbs_dir=thumbs
        )
        return cls(settings, catalog, store, cache, ml, jobs, thumbs, lock)

    def close(self) -> None:
        try:
            self.housekeeping.stop()
            self.migrations.stop_all()
            self.jobs.stop_all()
            self.ml.close()
            if self.browse is not None:
                self.browse.close()
            self.cache.close()
            self.store.close()
            self.catalog.close()
        finally:
            if self.lock is not None:
                self.lock.close()  # closing the file releases the flock
                self.lock = None

    def selected_collection(self) -> str:
        return self.catalog.get_meta(SELECTED_COLLECTION_KEY) or self.settings.default_collection

    def resolve_collection(self, name: str | None) -> str:
        """The named collection, else the selected one (not checked for existence)."""
        return name or self.selected_collection()


def get_ctx(request: Request) -> ServiceContext:
    return request.app.state.ctx
