"""Settings of the ingestion orchestration service: one pydantic-settings object, env prefix SHOEBOX_."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shoebox.settings_common import default_data_dir, split_list


class IngestSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHOEBOX_", extra="ignore", protected_namespaces=())

    host: str = Field(default="127.0.0.1", description="Bind address (the CLI passes --host).")
    port: int = Field(default=8002, description="Port of the ingestion service (the CLI passes --port).")
    api_key: str | None = Field(default=None, description="When set, every path but /health and the API docs needs X-API-Key.")

    data_dir: Path = Field(
        default_factory=default_data_dir, description="Catalog, thumbnails, cache, the embedded vector store."
    )
    store: Literal["auto", "edge", "server", "local"] = Field(
        default="auto",
        description="Vector store: edge (Qdrant Edge embedded in the data dir), server (SHOEBOX_QDRANT_URL), "
        "local (qdrant-client's local mode in the data dir: earlier versions' embedded store); auto = server "
        "when SHOEBOX_QDRANT_URL is set, else edge.",
    )
    qdrant_url: str | None = Field(
        default=None, description="Qdrant server/cluster URL; unset = the embedded store."
    )
    qdrant_api_key: str | None = Field(default=None, description="API key of the Qdrant server.")
    qdrant_prefix: str = Field(
        default="shoebox__",
        description="Prefix of Shoebox's collection names on a Qdrant server, so it never lists or deletes "
        "another application's collections ('' = the bare names of earlier versions).",
    )
    index_threshold: int = Field(
        default=20_000,
        ge=1,
        description="Embedded store: a collection of at least this many points gets an HNSW index, built in "
        "the background after a job; smaller ones are searched exactly.",
    )
    hnsw_ef: int = Field(
        default=128, ge=8, description="Embedded store: HNSW search breadth (recall@20 >= 0.98 measured)."
    )
    default_collection: str = Field(
        default="shoebox", description="Collection used when a request names none."
    )

    ml_url: str = Field(default="http://127.0.0.1:8001", description="The ML service.")
    ml_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Several ML services (overrides ml_url)."
    )
    ml_api_key: str | None = Field(default=None, description="Sent as X-API-Key to the ML services.")
    ml_inference_batch_size: int = Field(
        default=128,
        description="Images per ML request (clamped to the ML service's safe_clip_batch); also ML_INFERENCE_BATCH_SIZE.",
        validation_alias=AliasChoices("SHOEBOX_ML_INFERENCE_BATCH_SIZE", "ML_INFERENCE_BATCH_SIZE"),
    )
    ml_max_inflight: int = Field(default=3, description="Batches in flight to the ML services at once.")
    migration_batch: int = Field(
        default=2,
        ge=1,
        description="Images per ML request of a model migration (one in flight): a search waits at most "
        "for one such batch, so small keeps searches interactive during a migration.",
    )
    ml_unavailable_timeout_s: float = Field(
        default=120.0, description="ML down longer than this fails the job."
    )
    ml_timeout_s: float = Field(default=300.0, description="Timeout of one ML request.")
    ml_batch_deadline_s: float = Field(
        default=900.0,
        description="A batch not answered in this long (retries and 429 waits included) fails its files.",
    )
    raw_transport: Literal["rendition", "original"] = Field(
        default="rendition",
        description="RAW files: send the ML service the small JPEG rendition of the one decode made here "
        "(rendition), or the original bytes for it to decode (original: an ML host with the stronger CPU).",
    )

    ingest_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="Allow-list of ingest folders."
    )
    min_free_mb: int = Field(
        default=128,
        ge=0,
        description="An ingest stops (files fail ERR_DISK_FULL) when the data dir's disk has less free space: "
        "the embedded store writes through mmap, where a disk that runs out kills the service.",
    )
    cache_size_limit: int = Field(
        default=2 * 1024**3, description="Embedding cache size limit in bytes (LRU culling)."
    )

    scan_workers: int = Field(default=8, description="Threads listing folders.")
    hash_workers: int = Field(
        default_factory=lambda: max(2, os.cpu_count() or 2),
        description="Threads reading and hashing new files (each read once).",
    )
    prepare_workers: int = Field(
        default_factory=lambda: os.cpu_count() or 2,
        description="Threads decoding renditions, EXIF and thumbnails.",
    )
    queue_size: int = Field(default=256, description="Bound of each pipeline queue.")
    inflight_bytes_limit: int = Field(
        default=512 * 1024**2,
        description="File bytes read but not yet embedded, across all jobs of the process (RAW originals are big).",
    )
    max_concurrent_jobs: int = Field(
        default=2,
        ge=1,
        description="Ingest jobs running at once (on different collections); further jobs wait `pending`.",
    )
    offline_fraction: float = Field(
        default=0.2,
        ge=0.0,
        le=1.0,
        description="More than this share of a folder's known files vanishing at once marks them offline, not deleted.",
    )
    offline_min_files: int = Field(
        default=10,
        ge=0,
        description="Up to this many vanished files are always taken as deleted (unless the folder is empty).",
    )
    thumbnail_size: int = Field(default=256, description="Long side of thumbnails, px.")
    max_image_pixels: int = Field(default=100_000_000, description="Refuse images above this many pixels.")

    browse_decode_concurrency: int = Field(
        default=2,
        ge=1,
        description="Browse routes: full decodes (RAW, HEIC, TIFF renditions, lost thumbnails) running at once.",
    )
    browse_decode_wait_s: float = Field(
        default=15.0,
        gt=0,
        description="Browse routes: how long a request waits for a decode slot before 503 ERR_BUSY (Retry-After).",
    )
    rendition_cache_size_limit: int = Field(
        default=1024**3,
        ge=0,
        description="Browse routes: size limit in bytes of the on-disk cache of JPEG renditions (LRU culling).",
    )
    job_details_keep: int = Field(
        default=50,
        ge=0,
        description="Housekeeping: finished jobs (newest first) whose logs and failed-file list are kept.",
    )
    job_details_max_age_days: float = Field(
        default=30.0,
        ge=0,
        description="Housekeeping: logs and failed-file lists of jobs finished longer ago than this are dropped.",
    )
    thumbnail_grace_s: float = Field(
        default=600.0,
        ge=0,
        description="Housekeeping: an orphaned thumbnail younger than this is kept (a job writes one before "
        "the catalog knows its file).",
    )

    @field_validator("ml_urls", "ingest_roots", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return split_list(value)

    @property
    def ml_endpoints(self) -> list[str]:
        return [u.rstrip("/") for u in (self.ml_urls or [self.ml_url])]
