"""Settings of the ingestion orchestration service: one pydantic-settings object, env prefix SHOEBOX_."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shoebox.settings_common import default_data_dir, split_list


class IngestSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHOEBOX_", extra="ignore", protected_namespaces=())

    host: str = "127.0.0.1"
    port: int = 8002
    api_key: str | None = None

    data_dir: Path = Field(default_factory=default_data_dir, description="Catalog, thumbnails, cache, embedded Qdrant.")
    qdrant_url: str | None = Field(default=None, description="Qdrant server/cluster URL; unset = embedded local mode.")
    qdrant_api_key: str | None = None
    default_collection: str = "shoebox"

    ml_url: str = "http://127.0.0.1:8001"
    ml_urls: Annotated[list[str], NoDecode] = Field(default_factory=list, description="Several ML services (overrides ml_url).")
    ml_api_key: str | None = None
    ml_inference_batch_size: int = Field(
        default=128, validation_alias=AliasChoices("SHOEBOX_ML_INFERENCE_BATCH_SIZE", "ML_INFERENCE_BATCH_SIZE")
    )
    ml_max_inflight: int = Field(default=3, description="Batches in flight to the ML services at once.")
    ml_unavailable_timeout_s: float = Field(default=120.0, description="ML down longer than this fails the job.")
    ml_timeout_s: float = 300.0

    ingest_roots: Annotated[list[Path], NoDecode] = Field(default_factory=list, description="Allow-list of ingest folders.")
    cache_size_limit: int = Field(default=2 * 1024**3, description="Embedding cache size limit in bytes (LRU culling).")

    scan_workers: int = 8
    hash_workers: int = Field(default_factory=lambda: max(2, os.cpu_count() or 2))
    prepare_workers: int = Field(default_factory=lambda: os.cpu_count() or 2)
    queue_size: int = Field(default=256, description="Bound of each pipeline queue.")
    inflight_bytes_limit: int = Field(
        default=512 * 1024**2, description="File bytes read but not yet embedded, across one job (RAW originals are big)."
    )
    thumbnail_size: int = 256
    max_image_pixels: int = 100_000_000

    @field_validator("ml_urls", "ingest_roots", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return split_list(value)

    @property
    def ml_endpoints(self) -> list[str]:
        return [u.rstrip("/") for u in (self.ml_urls or [self.ml_url])]
