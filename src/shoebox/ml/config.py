"""Settings of the ML inference service: one pydantic-settings object, env prefix SHOEBOX_."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shoebox.settings_common import default_cache_dir


class MLSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHOEBOX_", extra="ignore", protected_namespaces=())

    host: str = Field(default="127.0.0.1", description="Bind address (the CLI passes --host).")
    port: int = Field(default=8001, description="Port of the ML service (the CLI passes --port).")
    api_key: str | None = Field(default=None, description="When set, every path but /health and the API docs needs X-API-Key.")

    model_name: str = Field(
        default="ViT-B-32__openai", description="Model folder name in the Immich/OpenCLIP ONNX layout."
    )
    model_dir: Path | None = Field(default=None, description="A local model folder; skips any download.")
    models: str | None = Field(
        default=None,
        description="Comma-separated models to host, each a catalogue name or a folder path; the first "
        "is the default. Unset: SHOEBOX_MODEL_DIR, else SHOEBOX_MODEL_NAME.",
    )
    model_cache_dir: Path = Field(
        default_factory=lambda: default_cache_dir() / "models",
        description="Where downloaded models are kept.",
    )
    model_repo_prefix: str = Field(
        default="immich-app", description="Hugging Face org the model is downloaded from."
    )
    model_source: Path | None = Field(
        default=None,
        description="A local mirror to fetch models from instead of the hub: a folder holding one "
        "folder per model name in the same layout (e.g. a NAS share of ~/.cache/shoebox/models).",
    )
    offline: bool = Field(default=False, description="Never try to download a model.")

    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto = CUDA when available.")
    intra_op_threads: int = Field(default=0, description="ONNX Runtime intra-op threads (0 = all cores).")

    max_batch: int = Field(default=256, description="Upper bound of the safe-batch probe.")
    safe_clip_batch: int | None = Field(default=None, description="Skip the probe and use this batch size.")
    probe_cache_dir: Path = Field(
        default_factory=lambda: default_cache_dir() / "probe",
        description="Cache of the measured safe_clip_batch per (model, device, runtime).",
    )
    max_queue: int = Field(default=512, description="Images waiting for the accelerator before 429.")
    batch_max_wait_ms: float = Field(default=5.0, description="How long a partial batch waits for company.")
    decode_workers: int = Field(
        default_factory=lambda: os.cpu_count() or 2, description="Decode thread pool size."
    )

    max_image_pixels: int = Field(default=100_000_000, description="Refuse images above this many pixels.")
    max_upload_bytes: int = Field(
        default=256 * 1024 * 1024, description="Refuse a single file above this size."
    )
    max_batch_files: int = Field(default=512, description="Files accepted in one batch request.")
    max_request_bytes: int = Field(
        default=2 * 1024**3, description="Refuse a multipart batch request whose body is above this size."
    )
    max_json_bytes: int = Field(
        default=64 * 1024**2,
        description="Refuse a JSON request (base64 images) whose body is above this size.",
    )

    def model_entries(self) -> list[str]:
        """What to host, in order (first = default): names to find in the cache or download, or folders."""
        if self.models:
            entries = [e.strip() for e in self.models.split(",") if e.strip()]
            if entries:
                return list(dict.fromkeys(entries))
        return [str(self.model_dir) if self.model_dir is not None else self.model_name]


def looks_like_a_path(entry: str) -> bool:
    """A SHOEBOX_MODELS entry naming a folder rather than a catalogue model."""
    return "/" in entry or "\\" in entry or entry.startswith(("~", "."))
