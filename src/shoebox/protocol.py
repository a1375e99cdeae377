"""Wire schemas shared by both services and every client (see API.md).

One definition of an error code, of a batch item, of a job and of a hit, imported by the
ML service, the ingestion service, the CLI and the tests alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, Field


class ErrorCode(str, Enum):
    UNAUTHORIZED = "ERR_UNAUTHORIZED"
    VALIDATION = "ERR_VALIDATION"
    NOT_FOUND = "ERR_NOT_FOUND"
    PATH_NOT_FOUND = "ERR_PATH_NOT_FOUND"
    PATH_NOT_ALLOWED = "ERR_PATH_NOT_ALLOWED"
    FILE_READ = "ERR_FILE_READ"
    UNSUPPORTED_FORMAT = "ERR_UNSUPPORTED_FORMAT"
    DECODING_IMAGE = "ERR_DECODING_IMAGE"
    DECODING_RAW = "ERR_DECODING_RAW"
    IMAGE_TOO_LARGE = "ERR_IMAGE_TOO_LARGE"
    CLIP_INFER = "ERR_CLIP_INFER"
    BUSY = "ERR_BUSY"
    ML_UNAVAILABLE = "ERR_ML_UNAVAILABLE"
    VECTOR_DB = "ERR_VECTOR_DB"
    CANCELLED = "ERR_CANCELLED"
    INTERNAL = "ERR_INTERNAL"
    # Added beyond the API.md floor (documented in the README's error table).
    CONFLICT = "ERR_CONFLICT"
    MODEL_MISMATCH = "ERR_MODEL_MISMATCH"
    # A job-level warning, never a file's failure: known files vanished in bulk and were kept offline.
    FILES_OFFLINE = "ERR_FILES_OFFLINE"
    # A request named a model the ML service does not host.
    MODEL_NOT_FOUND = "ERR_MODEL_NOT_FOUND"
    # The data dir's disk is (nearly) full: the ingest stops writing before a write can fail half-way.
    DISK_FULL = "ERR_DISK_FULL"


# The HTTP status each code answers with when it is a whole-request error.
HTTP_STATUS: dict[ErrorCode, int] = {
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.VALIDATION: 422,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.PATH_NOT_FOUND: 404,
    ErrorCode.PATH_NOT_ALLOWED: 403,
    ErrorCode.FILE_READ: 400,
    ErrorCode.UNSUPPORTED_FORMAT: 415,
    ErrorCode.DECODING_IMAGE: 422,
    ErrorCode.DECODING_RAW: 422,
    ErrorCode.IMAGE_TOO_LARGE: 413,
    ErrorCode.CLIP_INFER: 500,
    ErrorCode.BUSY: 429,
    ErrorCode.ML_UNAVAILABLE: 503,
    ErrorCode.VECTOR_DB: 503,
    ErrorCode.CANCELLED: 409,
    ErrorCode.INTERNAL: 500,
    ErrorCode.CONFLICT: 409,
    ErrorCode.MODEL_MISMATCH: 409,
    ErrorCode.FILES_OFFLINE: 409,
    ErrorCode.MODEL_NOT_FOUND: 404,
    ErrorCode.DISK_FULL: 507,
}


class ShoeboxError(Exception):
    """An error with a contract code; raised anywhere, rendered as the API.md error body."""

    def __init__(self, code: ErrorCode, message: str, *, status: int | None = None, **detail: Any) -> None:
        super().__init__(message)
        self.code = ErrorCode(code)
        self.message = message
        self.status = status if status is not None else HTTP_STATUS[self.code]
        self.detail = detail
        self.headers: dict[str, str] = {}

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code.value, "message": self.message, **self.detail}}


class ItemError(BaseModel):
    code: ErrorCode
    message: str


# ---------------------------------------------------------------- ML service


class ModelInfo(BaseModel):
    """One model an ML service hosts, with its own lane (scheduler, queue and safe batch)."""

    model_name: str
    model_id: str = Field(description="<model_name>@<digest>: the model by content (what collections record).")
    family: str = "openclip"
    multilingual: bool | None = Field(
        default=None,
        description="Whether text queries in other languages than English work; null: the model does not "
        "say (the ingestion service then goes by the model's name).",
    )
    embedding_dim: int
    input_size: int = 224
    safe_clip_batch: int
    device: str
    dtype: str
    test_model: bool = False
    default: bool = False
    queue_depth: int = 0
    throughput_img_s: float | None = None
    memory_mb: float | None = Field(
        default=None, description="Host memory the process grew by while loading this model (MiB)."
    )


class Capabilities(BaseModel):
    """API.md's fields describe the default model (the first of SHOEBOX_MODELS); `models` lists all."""

    safe_clip_batch: int
    max_batch: int
    model_name: str
    embedding_dim: int
    device: str
    dtype: str
    image_formats: list[str]
    raw_formats: list[str]
    captioning: bool = False
    max_queue: int
    max_batch_files: int | None = Field(
        default=None, description="Files one batch request may hold (None: a service that does not say)."
    )
    test_model: bool = False
    input_size: int = 224
    throughput_img_s: float | None = None
    model_id: str = ""
    models: list[ModelInfo] = Field(default_factory=list)

    def hosted_ids(self) -> list[str]:
        """The ids of the models the service hosts, default first."""
        return [m.model_id for m in self.models] or [self.model_id or self.model_name]

    def model(self, name: str | None) -> ModelInfo | None:
        """The hosted model `name` names (its id, or its name when that is unambiguous); None = default."""
        if not self.models:  # a service older than several models: only its one model
            if name is None or name in (self.model_id, self.model_name):
                return ModelInfo(
                    model_name=self.model_name,
                    model_id=self.model_id or self.model_name,
                    embedding_dim=self.embedding_dim,
                    input_size=self.input_size,
                    safe_clip_batch=self.safe_clip_batch,
                    device=self.device,
                    dtype=self.dtype,
                    test_model=self.test_model,
                    default=True,
                    throughput_img_s=self.throughput_img_s,
                )
            return None
        if name is None:
            return next((m for m in self.models if m.default), self.models[0])
        return find_model(self.models, name)


def same_model(recorded: str | None, model_id: str | None) -> bool:
    """Whether a recorded model (a collection's, a point's) is `model_id`. Libraries of earlier
    versions recorded the bare name (no `@digest`): that matches any model of the name."""
    if not recorded or not model_id:
        return True
    if recorded == model_id:
        return True
    return "@" not in recorded and model_id.rsplit("@", 1)[0] == recorded


class NamedModel(Protocol):
    model_id: str
    model_name: str


M = TypeVar("M", bound=NamedModel)


def find_model(models: Sequence[M], name: str) -> M | None:
    """By id first; by name only when one hosted model has it (two exports of one name need the id).
    `models`: anything with a `model_id` and a `model_name` (a ModelInfo, a loaded ClipModel)."""
    for m in models:
        if m.model_id == name:
            return m
    named = [m for m in models if m.model_name == name or m.model_name.split(":", 1)[-1] == name]
    return named[0] if len(named) == 1 else None


class TextEmbedRequest(BaseModel):
    text: str | None = None
    texts: list[str] | None = None
    model: str | None = Field(default=None, description="A hosted model's id or name; default: the first.")
    language: str | None = Field(
        default=None, description="The texts' language (ISO 639-1 or FLORES-200), for models that take it."
    )


class ImageIn(BaseModel):
    unique_id: str
    image_base64: str
    filename: str = ""


class BatchRequest(BaseModel):
    images: list[ImageIn]
    model: str | None = None


class SingleEmbedRequest(BaseModel):
    image_base64: str
    filename: str = ""
    model: str | None = None


class Item(BaseModel):
    unique_id: str
    filename: str
    embedding: list[float] | None = None
    caption: str | None = None
    width: int | None = None
    height: int | None = None
    error: ItemError | None = None


class BatchResponse(BaseModel):
    results: list[Item]
    model_name: str
    device_used: str
    model_id: str = ""


# ---------------------------------------------------------------- ingestion service


class JobStatus(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self not in (JobStatus.PENDING, JobStatus.RUNNING)


class Outcome(str, Enum):
    """How one file found by a job ended (API.md): exactly one of these."""

    INDEXED = "indexed"  # embedded by the ML service in this job
    CACHED = "cached"  # vector reused without an ML call
    UNCHANGED = "unchanged"  # already in the collection, same bytes
    FAILED = "failed"  # with a code in the job's `errors`


class JobWarning(BaseModel):
    """Something the job did not fail on but the user must know about (e.g. files offline)."""

    code: ErrorCode
    message: str
    count: int = 0


class QueryWarning(BaseModel):
    """A search answer's warning: the search ran, but the user should know something about it.

    `W_QUERY_LANGUAGE`: a text of the query is clearly not English and the model is English-only.
    """

    code: str
    message: str
    language: str
    confidence: float
    suggested_models: list[str] = Field(default_factory=list)
    text: str | None = None


class FileError(BaseModel):
    file: str
    code: ErrorCode
    message: str


class Job(BaseModel):
    job_id: str
    collection_name: str
    directory_path: str
    status: JobStatus
    progress: float = 0.0
    total_files: int = 0
    processed_files: int = 0
    indexed: int = 0
    cached: int = 0
    unchanged: int = 0
    failed: int = 0
    # Known files not found by this job's scan but kept in the index (vanished in bulk: an
    # unmounted share, an emptied folder); not part of processed_files. See `warnings`.
    offline: int = 0
    errors: list[FileError] = Field(default_factory=list)
    warnings: list[JobWarning] = Field(default_factory=list)
    logs: list[str] = Field(default_factory=list)
    created_at: str
    started_at: str | None = None
    finished_at: str | None = None


class Hit(BaseModel):
    id: str
    score: float | None = None
    filename: str
    path: str
    thumbnail_url: str
    payload: dict[str, Any] = Field(default_factory=dict)
