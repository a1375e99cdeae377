"""The ML inference service: CLIP embeddings for images and texts over HTTP (API.md, ML section).

Request path of an image batch: the body's cap (`shoebox.body_limit`: 413 before reading when
Content-Length says so) → admit (reserve queue room for the declared files, `X-Shoebox-Files`,
or answer 429 without reading the body) → read the body (multipart: streamed, `ml.uploads`) →
set the reservation to the files that came → decode every file in the decode pool (never on the
event loop, never on the inference thread) → one scheduler job for the images that decoded →
per-item results, 200 for the batch.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import math
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response

from shoebox import imaging
from shoebox.body_limit import DEFAULT_BODY_BYTES, MIB, BodyLimit, LimitFor, install_body_limit, route_limits
from shoebox.http import install_api_key, install_error_handlers
from shoebox.ml.capabilities import ProbeResult, measure_safe_batch
from shoebox.ml.captioning import Captioner, NoCaptioner
from shoebox.ml.config import MLSettings
from shoebox.ml.models.clip import ClipModel, listed_twice
from shoebox.ml.models.download import resolve_model_dir
from shoebox.ml.prepare import Prepared, prepare_image
from shoebox.ml.scheduler import DeviceGate, InferenceScheduler, Ticket
from shoebox.ml.uploads import UploadedFile, UploadLimits, read_multipart, too_many_files
from shoebox.protocol import (
    BatchRequest,
    BatchResponse,
    Capabilities,
    ErrorCode,
    Item,
    ModelInfo,
    ShoeboxError,
    SingleEmbedRequest,
    TextEmbedRequest,
    find_model,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# Texts in one /embed_text request.
MAX_TEXTS = 1024
# Body cap of /embed_text: 1024 queries of a few KB each.
TEXT_BODY_BYTES = 4 * MIB
# The header of a multipart batch that declares its number of files (admission before reading).
FILES_HEADER = "X-Shoebox-Files"
# Without that header, a multipart body is guessed to hold one file per this many bytes.
BYTES_PER_FILE_GUESS = 4 * MIB


class MLCapabilities(Capabilities):
    """The capabilities of API.md plus live figures a client may use to pace itself."""

    queue_depth: int = 0
    runtime_version: str = ""
    probe_source: str = ""


def _rss_bytes() -> int:
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except Exception:  # noqa: BLE001 - psutil is optional: memory is then not accounted
        return 0


@dataclass
class ModelLane:
    """One hosted model and what is its own: its scheduler (queue, batching, worker thread), its
    measured safe batch, and the memory its loading took."""

    model: ClipModel
    probe: ProbeResult
    scheduler: InferenceScheduler
    memory_bytes: int = 0

    @classmethod
    def start(cls, model_dir: Path, settings: MLSettings, gates: dict[str, DeviceGate] | None = None) -> ModelLane:
        before = _rss_bytes()
        model = ClipModel(model_dir, settings.device, settings.intra_op_threads)
        model.load()
        grown = max(0, _rss_bytes() - before)
        _ = model.model_id  # hashed now (once per change), not on the first request
        probe = measure_safe_batch(model, settings)
        scheduler = InferenceScheduler(
            model,
            batch_size=probe.safe_clip_batch,
            max_queue=settings.max_queue,
            batch_max_wait_ms=settings.batch_max_wait_ms,
            throughput_img_s=probe.throughput_img_s,
            name=f"inference-{model.device}-{model.model_name[:24]}",
            gate=(gates if gates is not None else {}).setdefault(model.device, DeviceGate()),
        )
        scheduler.start()
        return cls(model, probe, scheduler, grown)

    def info(self, default: bool) -> ModelInfo:
        m = self.model
        return ModelInfo(
            model_name=m.model_name,
            model_id=m.model_id,
            family=getattr(m, "family", "openclip"),
            multilingual=getattr(m, "multilingual", None),
            embedding_dim=m.embedding_dim,
            input_size=m.input_size,
            safe_clip_batch=self.probe.safe_clip_batch,
            device=m.device,
            dtype=m.dtype,
            test_model=m.is_test_model,
            default=default,
            queue_depth=self.scheduler.queue_depth,
            throughput_img_s=round(self.scheduler.throughput_img_s, 2) if self.scheduler.throughput_img_s else None,
            memory_mb=round(self.memory_bytes / 2**20, 1) if self.memory_bytes else None,
        )


@dataclass
class MLRuntime:
    """Everything the endpoints need, built by the lifespan and kept in `app.state.ml`.

    `lanes` holds every hosted model, the default first; requests name a model by its id or name.
    """

    settings: MLSettings
    lanes: list[ModelLane]
    decode_pool: ThreadPoolExecutor
    captioner: Captioner = field(default_factory=NoCaptioner)

    @classmethod
    def start(cls, settings: MLSettings) -> MLRuntime:
        model_dirs = [resolve_model_dir(settings, entry) for entry in settings.model_entries()]
        if (twice := listed_twice(model_dirs)) is not None:
            raise ShoeboxError(ErrorCode.VALIDATION, f"SHOEBOX_MODELS lists one model twice: {twice}")
        lanes: list[ModelLane] = []
        gates: dict[str, DeviceGate] = {}  # one per device: its lanes take turns, texts first
        try:
            for model_dir in model_dirs:
                lanes.append(ModelLane.start(model_dir, settings, gates))
        except BaseException:
            for lane in lanes:
                lane.scheduler.close()
            raise
        pool = ThreadPoolExecutor(max(1, settings.decode_workers), thread_name_prefix="decode")
        for lane in lanes:
            log.info(
                "ML service hosts %s (%s) on %s, safe_clip_batch=%d (%s), %.0f MiB",
                lane.model.model_name,
                lane.model.model_id,
                lane.model.device,
                lane.probe.safe_clip_batch,
                lane.probe.source,
                lane.memory_bytes / 2**20,
            )
        log.info(
            "ML service ready: %d model(s), default %s, max_queue=%d per model, decode_workers=%d",
            len(lanes),
            lanes[0].model.model_name,
            settings.max_queue,
            settings.decode_workers,
        )
        return cls(settings, lanes, pool)

    def close(self) -> None:
        for lane in self.lanes:
            lane.scheduler.close()
        self.decode_pool.shutdown(wait=False, cancel_futures=True)

    # The default model's parts, for code written when there was one model.
    @property
    def model(self) -> ClipModel:
        return self.lanes[0].model

    @property
    def scheduler(self) -> InferenceScheduler:
        return self.lanes[0].scheduler

    @property
    def probe(self) -> ProbeResult:
        return self.lanes[0].probe

    def lane(self, name: str | None) -> ModelLane:
        """The lane of the model `name` names (id, or name when unambiguous); None = the default."""
        if name is None or name == "":
            return self.lanes[0]
        found = find_model([lane.model for lane in self.lanes], name)
        if found is None:
            hosted = [lane.model.model_id for lane in self.lanes]
            raise ShoeboxError(
                ErrorCode.MODEL_NOT_FOUND,
                f"this ML service does not host model {name!r} (it hosts: {', '.join(hosted)})",
                hosted=hosted,
            )
        return next(lane for lane in self.lanes if lane.model is found)

    def capabilities(self) -> MLCapabilities:
        default = self.lanes[0]
        infos = [lane.info(default=i == 0) for i, lane in enumerate(self.lanes)]
        return MLCapabilities(
            safe_clip_batch=default.probe.safe_clip_batch,
            max_batch=self.settings.max_batch,
            model_name=default.model.model_name,
            model_id=default.model.model_id,
            embedding_dim=default.model.embedding_dim,
            device=default.model.device,
            dtype=default.model.dtype,
            image_formats=sorted(ext.lstrip(".") for ext in imaging.IMAGE_EXTENSIONS),
            raw_formats=sorted(ext.lstrip(".") for ext in imaging.RAW_EXTENSIONS),
            captioning=self.captioner.enabled,
            max_queue=self.settings.max_queue,
            max_batch_files=self.settings.max_batch_files,
            test_model=default.model.is_test_model,
            input_size=default.model.input_size,
            throughput_img_s=infos[0].throughput_img_s,
            queue_depth=sum(lane.scheduler.queue_depth for lane in self.lanes),
            runtime_version=default.model.runtime_version,
            probe_source=default.probe.source,
            models=infos,
        )

    # -------------------------------------------------------------- images

    def prepare(self, read: Callable[[], bytes], filename: str, model: ClipModel) -> Prepared:
        """Runs in the decode pool: bytes → original size + the encoder's input tensor."""
        return prepare_image(
            read,
            filename,
            model,
            max_pixels=self.settings.max_image_pixels,
            captioner=self.captioner,
        )

    async def embed_files(
        self, files: list[tuple[str, str, Callable[[], bytes]]], ticket: Ticket, lane: ModelLane | None = None
    ) -> list[Item]:
        """(unique_id, filename, read) per file → one Item per file, in order; errors per item."""
        lane = lane or self.lanes[0]
        loop = asyncio.get_running_loop()
        with ticket:
            prepared: list[Prepared] = await asyncio.gather(
                *(
                    loop.run_in_executor(self.decode_pool, self.prepare, read, name, lane.model)
                    for _, name, read in files
                )
            )
            good = [i for i, p in enumerate(prepared) if p.error is None]
            ticket.release(len(files) - len(good))
            embeddings: np.ndarray | None = None
            infer_error: ShoeboxError | None = None
            if good:
                try:
                    embeddings = await lane.scheduler.embed_images([prepared[i].array for i in good], ticket)
                except ShoeboxError as exc:
                    if exc.code != ErrorCode.CLIP_INFER:
                        raise
                    infer_error = exc
        rows = {index: row for row, index in enumerate(good)}
        items: list[Item] = []
        for index, ((unique_id, filename, _), p) in enumerate(zip(files, prepared, strict=True)):
            error = p.error or (infer_error if index in rows else None)
            embedding = None
            if error is None and embeddings is not None:
                embedding = embeddings[rows[index]].tolist()
            items.append(
                Item(
                    unique_id=unique_id,
                    filename=filename,
                    embedding=embedding,
                    caption=p.caption,
                    width=p.width,
                    height=p.height,
                    error={"code": error.code, "message": error.message} if error else None,
                )
            )
        return items

    def batch_response(self, items: list[Item], lane: ModelLane | None = None) -> Response:
        # Serialised by pydantic's Rust core in one pass: through the stdlib json encoder, the
        # thousands of floats of a batch cost more than the rest of the request.
        model = (lane or self.lanes[0]).model
        body = BatchResponse(
            results=items, model_name=model.model_name, model_id=model.model_id, device_used=model.device
        )
        return Response(body.model_dump_json(), media_type="application/json")


# ------------------------------------------------------------------ request helpers


def _runtime(request: Request) -> MLRuntime:
    runtime: MLRuntime | None = getattr(request.app.state, "ml", None)
    if runtime is None:
        raise ShoeboxError(ErrorCode.ML_UNAVAILABLE, "the model is not loaded")
    return runtime


async def _wait_for_disconnect(request: Request) -> None:
    # The body is already read, so the next ASGI message is the disconnect. Awaiting it (rather
    # than polling `request.is_disconnected()`) also works behind BaseHTTPMiddleware, whose
    # wrapped receive loses a disconnect to the poll's immediate cancellation.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (and so dropping its queued images) if the client goes away."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        log.info("client disconnected from %s; its work was dropped", request.url.path)
        raise ShoeboxError(ErrorCode.CANCELLED, "the client disconnected")
    finally:
        watcher.cancel()
        task.cancel()


def _b64_reader(data: str, limit: int) -> Callable[[], bytes]:
    def read() -> bytes:
        if len(data) * 3 // 4 > limit:
            raise ShoeboxError(ErrorCode.IMAGE_TOO_LARGE, f"file exceeds the {limit}-byte upload limit")
        try:
            return base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ShoeboxError(ErrorCode.DECODING_IMAGE, f"image_base64 is not valid base64: {exc}") from exc

    return read


def _part_reader(part: UploadedFile, limit: int) -> Callable[[], bytes]:
    def read() -> bytes:
        if part.data is None:
            raise part.too_large(limit)
        return part.data

    return read


def _check_count(n: int, settings: MLSettings) -> None:
    if n == 0:
        raise ShoeboxError(ErrorCode.VALIDATION, "no images in the request")
    if n > settings.max_batch_files:
        raise too_many_files(settings.max_batch_files)


def _declared_files(request: Request, settings: MLSettings) -> int:
    """How many files a multipart batch holds, known before its body is read: `X-Shoebox-Files`,
    else one per BYTES_PER_FILE_GUESS of Content-Length (at least one, at most what the queue
    holds). The guess errs low on purpose — a batch of thumbnails must not look like a flood — and
    the reservation is set to the real count once the body is parsed."""
    raw = request.headers.get(FILES_HEADER)
    if raw is not None:
        if not raw.strip().isdigit() or int(raw) < 1:
            raise ShoeboxError(ErrorCode.VALIDATION, f"{FILES_HEADER} must be a whole number of files (≥ 1)")
        declared = int(raw)
        if declared > settings.max_batch_files:
            raise too_many_files(settings.max_batch_files)
        return declared
    length = request.headers.get("content-length", "")
    if not length.isdigit():
        return 1
    guess = math.ceil(int(length) / BYTES_PER_FILE_GUESS)
    return max(1, min(guess, settings.max_batch_files, settings.max_queue))


def _upload_limits(settings: MLSettings) -> UploadLimits:
    return UploadLimits(
        max_files=settings.max_batch_files,
        max_file_bytes=settings.max_upload_bytes,
        max_body_bytes=settings.max_request_bytes,
    )


# The multipart endpoint parses its own body, so its schema is spelled out for /docs.
_MULTIPART_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "The images; each part's filename is the file's name.",
                        },
                        "unique_ids": {
                            "type": "string",
                            "description": "JSON list of ids, one per file, same order.",
                        },
                    },
                }
            }
        },
    }
}


def _unique_ids(raw: str | None, n: int) -> list[str]:
    if raw is None or raw == "":
        return [str(i) for i in range(n)]
    try:
        ids = json.loads(raw)
    except ValueError as exc:
        raise ShoeboxError(ErrorCode.VALIDATION, f"unique_ids is not JSON: {exc}") from exc
    if not isinstance(ids, list) or not all(isinstance(i, (str, int)) for i in ids):
        raise ShoeboxError(ErrorCode.VALIDATION, "unique_ids must be a JSON list of strings")
    if len(ids) != n:
        raise ShoeboxError(ErrorCode.VALIDATION, f"unique_ids has {len(ids)} entries for {n} files")
    return [str(i) for i in ids]


# ------------------------------------------------------------------ routes

router = APIRouter()


@router.get("/health", tags=["service"])
async def health(request: Request) -> dict[str, Any]:
    runtime: MLRuntime | None = getattr(request.app.state, "ml", None)
    lanes = runtime.lanes if runtime else []
    return {
        "status": "ok",
        "model_loaded": bool(lanes) and all(lane.model.loaded for lane in lanes),
        # Live figures for operators and load tests: images admitted and not yet embedded, and
        # images embedded since start-up, over every hosted model.
        "queue_depth": sum(lane.scheduler.queue_depth for lane in lanes),
        "images_embedded": sum(lane.scheduler.stats["images"] for lane in lanes),
    }


@router.get("/api/v1/capabilities", response_model=MLCapabilities, tags=["ml"])
async def capabilities(request: Request) -> MLCapabilities:
    return _runtime(request).capabilities()


@router.post("/api/v1/embed_text", tags=["ml"])
async def embed_text(body: TextEmbedRequest, request: Request) -> dict[str, Any]:
    """`{"text": str}` → `{"embedding"}`, or `{"texts": [str]}` → `{"embeddings"}`."""
    runtime = _runtime(request)
    if (body.text is None) == (body.texts is None):
        raise ShoeboxError(ErrorCode.VALIDATION, "send exactly one of `text` or `texts`")
    texts = [body.text] if body.text is not None else list(body.texts or [])
    if not texts:
        raise ShoeboxError(ErrorCode.VALIDATION, "`texts` is empty")
    if len(texts) > MAX_TEXTS:
        raise ShoeboxError(ErrorCode.VALIDATION, f"at most {MAX_TEXTS} texts per request")
    if any(not t.strip() for t in texts):
        raise ShoeboxError(ErrorCode.VALIDATION, "a text is empty")
    lane = runtime.lane(body.model)
    embeddings = await _unless_disconnected(request, lane.scheduler.embed_texts(texts, body.language))
    out: dict[str, Any] = {
        "model_name": lane.model.model_name,
        "model_id": lane.model.model_id,
        "embedding_dim": lane.model.embedding_dim,
    }
    if body.text is not None:
        out["embedding"] = embeddings[0].tolist()
    else:
        out["embeddings"] = embeddings.tolist()
    return out


@router.post("/api/v1/batch_embed_and_caption", response_model=BatchResponse, tags=["ml"])
async def batch_embed_and_caption(body: BatchRequest, request: Request) -> Response:
    """Base64 images; a bad image fails its own item (200 for the batch)."""
    runtime = _runtime(request)
    lane = runtime.lane(body.model)
    _check_count(len(body.images), runtime.settings)
    ticket = lane.scheduler.admit(len(body.images))
    limit = runtime.settings.max_upload_bytes
    files = [(i.unique_id, i.filename, _b64_reader(i.image_base64, limit)) for i in body.images]
    items = await _unless_disconnected(request, runtime.embed_files(files, ticket, lane))
    return runtime.batch_response(items, lane)


@router.post(
    "/api/v1/batch_embed_and_caption_multipart",
    response_model=BatchResponse,
    tags=["ml"],
    openapi_extra=_MULTIPART_BODY,
)
async def batch_embed_and_caption_multipart(request: Request) -> Response:
    """Original file bytes (RAW too) as multipart; a bad image fails its own item (200 for the batch).

    The model is named by the `model` query parameter (known before the body is read) or form field.
    Send `X-Shoebox-Files: N` (the number of files): the queue room is reserved for them before
    the body is read, so a full queue answers 429 without reading it.
    """
    runtime = _runtime(request)
    settings = runtime.settings
    lane = runtime.lane(request.query_params.get("model"))
    # Admission before the body (maybe hundreds of MB of RAW) is read: room for the declared files.
    ticket = lane.scheduler.admit(_declared_files(request, settings))
    try:
        form = await read_multipart(request, "files", _upload_limits(settings))
        if form.fields.get("model") and "model" not in request.query_params:
            new_lane = runtime.lane(form.fields["model"])
            if new_lane is not lane:
                ticket.release()
                lane, ticket = new_lane, new_lane.scheduler.admit(1)
        _check_count(len(form.files), settings)
        ids = _unique_ids(form.fields.get("unique_ids"), len(form.files))
        ticket.resize(len(form.files))
    except BaseException:
        ticket.release()
        raise
    limit = settings.max_upload_bytes
    work = [(uid, f.filename, _part_reader(f, limit)) for uid, f in zip(ids, form.files, strict=True)]
    items = await _unless_disconnected(request, runtime.embed_files(work, ticket, lane))
    return runtime.batch_response(items, lane)


@router.post("/api/v1/embed", tags=["ml"])
async def embed(body: SingleEmbedRequest, request: Request) -> dict[str, Any]:
    """One base64 image → its embedding; a bad image is an error of the request."""
    runtime = _runtime(request)
    lane = runtime.lane(body.model)
    ticket = lane.scheduler.admit(1)
    read = _b64_reader(body.image_base64, runtime.settings.max_upload_bytes)
    work = [("0", body.filename, read)]
    (item,) = await _unless_disconnected(request, runtime.embed_files(work, ticket, lane))
    if item.error is not None:
        raise ShoeboxError(item.error.code, item.error.message)
    return {"embedding": item.embedding, "model_name": lane.model.model_name, "model_id": lane.model.model_id}


def body_limits(settings: MLSettings) -> LimitFor:
    """Each route's body cap: multipart batches SHOEBOX_MAX_REQUEST_BYTES, base64 JSON
    SHOEBOX_MAX_JSON_BYTES, texts TEXT_BODY_BYTES, any other DEFAULT_BODY_BYTES."""
    json_images = BodyLimit(settings.max_json_bytes, "SHOEBOX_MAX_JSON_BYTES")
    return route_limits(
        {
            "/api/v1/batch_embed_and_caption_multipart": BodyLimit(
                settings.max_request_bytes, "SHOEBOX_MAX_REQUEST_BYTES"
            ),
            "/api/v1/batch_embed_and_caption": json_images,
            "/api/v1/embed": json_images,
            "/api/v1/embed_text": BodyLimit(TEXT_BODY_BYTES),
        },
        BodyLimit(DEFAULT_BODY_BYTES),
    )


def create_app(settings: MLSettings | None = None) -> FastAPI:
    settings = settings or MLSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Loading and probing block for seconds; a thread keeps the loop (and signals) responsive.
        runtime = await asyncio.to_thread(MLRuntime.start, settings)
        app.state.ml = runtime
        try:
            yield
        finally:
            app.state.ml = None
            await asyncio.to_thread(runtime.close)

    app = FastAPI(
        title="Shoebox ML inference service",
        version="1",
        description="CLIP embeddings for images (every common format and camera RAW) and texts.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    install_body_limit(app, body_limits(settings))
    install_api_key(app, settings.api_key)
    app.include_router(router)
    return app
