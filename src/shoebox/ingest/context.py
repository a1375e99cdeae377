"""Everything a request handler of the ingestion service needs, built once at start-up."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi import Request

from shoebox.ingest.cache import EmbeddingCache
from shoebox.ingest.catalog import Catalog
from shoebox.ingest.config import IngestSettings
from shoebox.ingest.jobs import JobRunner
from shoebox.ingest.ml_client import MLClient
from shoebox.ingest.store import VectorStore

SELECTED_COLLECTION_KEY = "selected_collection"


@dataclass
class ServiceContext:
    settings: IngestSettings
    catalog: Catalog
    store: VectorStore
    cache: EmbeddingCache
    ml: MLClient
    jobs: JobRunner
    thumbs_dir: Path

    @classmethod
    def open(cls, settings: IngestSettings, ml: MLClient | None = None) -> ServiceContext:
        """Open everything under the data dir; `ml` replaces the HTTP client of the ML services (tests)."""
        data = settings.data_dir
        data.mkdir(parents=True, exist_ok=True)
        thumbs = data / "thumbs"
        thumbs.mkdir(exist_ok=True)
        catalog = Catalog(data / "catalog.sqlite3")
        store = VectorStore(settings)
        cache = EmbeddingCache(data / "embedding_cache", settings.cache_size_limit)
        ml = ml or MLClient(settings)
        jobs = JobRunner(
            settings=settings, catalog=catalog, store=store, cache=cache, ml=ml, thumbs_dir=thumbs
        )
        return cls(settings, catalog, store, cache, ml, jobs, thumbs)

    def close(self) -> None:
        self.jobs.stop_all()
        self.ml.close()
        self.cache.close()
        self.store.close()
        self.catalog.close()

    def selected_collection(self) -> str:
        return self.catalog.get_meta(SELECTED_COLLECTION_KEY) or self.settings.default_collection

    def resolve_collection(self, name: str | None) -> str:
        """The named collection, else the selected one (not checked for existence)."""
        return name or self.selected_collection()


def get_ctx(request: Request) -> ServiceContext:
    return request.app.state.ctx
