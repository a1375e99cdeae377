"""Client of the ML inference service(s): several URLs, least-loaded healthy one, retries.

- 429 `ERR_BUSY` → wait `Retry-After`, then try again (the service is alive, so this never
  counts towards the unavailability bound);
- connection errors and 5xx → exponential backoff; when no endpoint answered for longer than
  `ml_unavailable_timeout_s` → `ShoeboxError(ERR_ML_UNAVAILABLE)`;
- after an endpoint failed, its capabilities are asked again before the next batch, so a
  restarted ML service (maybe with another model or batch size) is seen at once.

Synchronous (httpx.Client is thread-safe): the pipeline calls it from worker threads, and
FastAPI runs `def` routes in its threadpool.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from shoebox.ingest.config import IngestSettings
from shoebox.protocol import Capabilities, ErrorCode, Item, ModelInfo, ShoeboxError

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 5.0
# Declares a multipart batch's file count, so the ML service admits it before reading the body.
FILES_HEADER = "X-Shoebox-Files"
# A malformed answer (not JSON, cut short, wrong shape) is retried this many times, then fails
# only its batch: a proxy's hiccup is waited out, an ML service that always answers garbage is not.
MALFORMED_RETRIES = 3


@dataclass
class _Endpoint:
    url: str
    inflight: int = 0
    healthy: bool = True
    capabilities: Capabilities | None = None
    stale: bool = True  # capabilities must be (re)read before the next batch
    failed_at: float = 0.0


@dataclass
class BatchFile:
    unique_id: str
    filename: str
    data: bytes
    content_type: str | None = None


class _MalformedAnswer(Exception):
    """A 2xx answer that is not what the contract says (not JSON, cut short, wrong shape)."""


@dataclass
class _Attempt:
    first_failure: float | None = None
    delay: float = 0.25
    malformed: int = 0
    errors: list[str] = field(default_factory=list)


class MLClient:
    def __init__(self, settings: IngestSettings, *, transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings
        self._endpoints = [_Endpoint(url) for url in settings.ml_endpoints]
        self._lock = threading.Lock()
        headers = {"X-API-Key": settings.ml_api_key} if settings.ml_api_key else {}
        self._http = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(settings.ml_timeout_s, connect=5.0),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=16),
            transport=transport,
        )
        self.batches_sent = 0

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------ capabilities

    def _fetch_capabilities(self, ep: _Endpoint, timeout: float | None = None) -> Capabilities:
        r = self._http.get(ep.url + "/api/v1/capabilities", timeout=timeout or 10.0)
        if r.status_code >= 500 or r.status_code == 429:  # e.g. still loading its model: retried
            raise httpx.HTTPStatusError(f"HTTP {r.status_code}", request=r.request, response=r)
        _raise_for_error(r)
        caps = Capabilities.model_validate(r.json())
        with self._lock:
            if ep.capabilities and _hosted(ep.capabilities) != _hosted(caps):
                log.warning(
                    "ML service %s now hosts %s (was %s)",
                    ep.url,
                    ", ".join(sorted(_hosted(caps))),
                    ", ".join(sorted(_hosted(ep.capabilities))),
                )
            ep.capabilities, ep.stale, ep.healthy = caps, False, True
        return caps

    def capabilities(self, *, timeout: float = 3.0) -> Capabilities | None:
        """Capabilities of a reachable ML service (fresh when it was restarted), None when none answers."""
        for ep in self._by_load():
            if ep.capabilities and not ep.stale:
                return ep.capabilities
            try:
                return self._fetch_capabilities(ep, timeout)
            except (httpx.HTTPError, ShoeboxError, ValueError):
                self._mark_failed(ep)
        return None

    def known_capabilities(self) -> Capabilities | None:
        """Last capabilities seen, without any network call."""
        for ep in self._endpoints:
            if ep.capabilities:
                return ep.capabilities
        return None

    def model_info(self, model: str | None = None, *, timeout: float = 3.0) -> ModelInfo | None:
        """What a reachable ML service says of `model` (None: its default model); None when no
        reachable service hosts it."""
        for ep in self._by_load():
            try:
                caps = ep.capabilities if ep.capabilities and not ep.stale else self._fetch_capabilities(ep, timeout)
            except (httpx.HTTPError, ShoeboxError, ValueError):
                self._mark_failed(ep)
                continue
            info = caps.model(model)
            if info is not None:
                return info
        return None

    def hosted_models(self) -> list[str]:
        """Every model id the ML services last said they host (no network call)."""
        found: dict[str, None] = {}
        for ep in self._endpoints:
            if ep.capabilities:
                found.update(dict.fromkeys(ep.capabilities.hosted_ids()))
        return list(found)

    def model_not_hosted(self, code: ErrorCode, message: str, **detail: object) -> ShoeboxError:
        """The error for a model no reachable ML service hosts, naming those it does host."""
        hosted = self.hosted_models()
        return ShoeboxError(
            code, message + (f" (hosted: {', '.join(hosted)})" if hosted else ""), ml_models=hosted, **detail
        )

    def batch_size(self, model: str | None = None) -> int:
        """Files per batch: the setting, within what every known ML service takes — its safe
        batch for `model`, its whole queue (`max_queue`) and its files per request
        (`max_batch_files`); a larger batch would only be refused with 413."""
        bounds = [self.settings.ml_inference_batch_size]
        for ep in self._endpoints:
            caps = ep.capabilities
            if caps is None:
                continue
            info = caps.model(model)
            if info is not None:
                bounds.append(info.safe_clip_batch)
            bounds.append(caps.max_queue)
            if caps.max_batch_files:
                bounds.append(caps.max_batch_files)
        return max(1, min(bounds))

    def probe(self, timeout: float = 1.0) -> dict:
        """For /health: is any ML service reachable, and its safe batch."""
        for ep in self._endpoints:
            try:
                r = self._http.get(ep.url + "/health", timeout=timeout)
                if r.status_code == 200:
                    if ep.stale or ep.capabilities is None:
                        try:
                            self._fetch_capabilities(ep, timeout)
                        except (httpx.HTTPError, ShoeboxError, ValueError):
                            pass
                    caps = ep.capabilities
                    return {"reachable": True, "safe_clip_batch": caps.safe_clip_batch if caps else None}
            except httpx.HTTPError:
                self._mark_failed(ep)
        return {"reachable": False, "safe_clip_batch": None}

    # ------------------------------------------------------------ endpoint choice

    def _by_load(self, model: str | None = None) -> list[_Endpoint]:
        """Healthy and least busy first; with `model`, the endpoints known not to host it last."""
        with self._lock:
            return sorted(
                self._endpoints,
                key=lambda e: (
                    model is not None and e.capabilities is not None and e.capabilities.model(model) is None,
                    not e.healthy,
                    e.inflight,
                    e.failed_at,
                ),
            )

    def _mark_failed(self, ep: _Endpoint) -> None:
        with self._lock:
            ep.healthy, ep.stale, ep.failed_at = False, True, time.monotonic()

    # ------------------------------------------------------------ calls

    def _with_retries(
        self,
        call: Callable[[_Endpoint], httpx.Response],
        *,
        unavailable_after: float,
        should_stop: Callable[[], bool] | None = None,
        model: str | None = None,
        accept: Callable[[httpx.Response], object] | None = None,
    ) -> httpx.Response:
        """`call` on the best endpoint until it answers; `accept` parses a 2xx answer and raises
        ValueError (KeyError, TypeError) when it is malformed: retried like an outage, at most
        `MALFORMED_RETRIES` times, then `_MalformedAnswer` fails the call."""
        attempt = _Attempt()
        while True:
            if should_stop and should_stop():
                raise ShoeboxError(ErrorCode.CANCELLED, "stopped while waiting for the ML service")
            ep = self._by_load(model)[0]
            try:
                if ep.stale:
                    self._fetch_capabilities(ep)
                with self._lock:
                    ep.inflight += 1
                try:
                    r = call(ep)
                finally:
                    with self._lock:
                        ep.inflight -= 1
                if r.status_code == 429:
                    wait = _retry_after(r)
                    attempt.first_failure = None  # busy is alive
                    _sleep(wait, should_stop)
                    continue
                if r.status_code >= 500:
                    raise httpx.HTTPStatusError(f"HTTP {r.status_code}", request=r.request, response=r)
                if accept is not None and r.status_code < 300:
                    try:
                        accept(r)
                    except (ValueError, KeyError, TypeError) as exc:
                        raise _MalformedAnswer(f"malformed answer: {type(exc).__name__}: {exc}"[:300]) from exc
                with self._lock:
                    ep.healthy = True
                return r
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code == 429:  # its capabilities asked while it is busy: alive
                    attempt.first_failure = None
                    _sleep(_retry_after(exc.response), should_stop)
                else:
                    self._failed(ep, exc, attempt, unavailable_after, should_stop)
            except (_MalformedAnswer, ValueError) as exc:  # ValueError: malformed capabilities
                attempt.malformed += 1
                if attempt.malformed > MALFORMED_RETRIES:
                    raise _MalformedAnswer(f"{ep.url}: {exc}") from exc
                self._failed(ep, exc, attempt, unavailable_after, should_stop)
            except httpx.TransportError as exc:
                self._failed(ep, exc, attempt, unavailable_after, should_stop)

    def _failed(
        self,
        ep: _Endpoint,
        exc: Exception,
        attempt: _Attempt,
        unavailable_after: float,
        should_stop: Callable[[], bool] | None,
    ) -> None:
        """An attempt failed: back off, or give up once nothing answered for `unavailable_after`."""
        self._mark_failed(ep)
        now = time.monotonic()
        attempt.first_failure = attempt.first_failure or now
        attempt.errors.append(f"{ep.url}: {exc}")
        if now - attempt.first_failure >= unavailable_after:
            gave_up = ShoeboxError(
                ErrorCode.ML_UNAVAILABLE,
                f"ML service unavailable for {unavailable_after:.0f}s ({attempt.errors[-1]})",
            )
            gave_up.outage = True  # type: ignore[attr-defined]  # the job stops asking (stages.send_batch)
            raise gave_up from exc
        _sleep(attempt.delay, should_stop)
        attempt.delay = min(attempt.delay * 2, MAX_BACKOFF_S)

    def embed_batch(
        self,
        files: list[BatchFile],
        *,
        should_stop: Callable[[], bool] | None = None,
        model: str | None = None,
    ) -> tuple[list[Item], str]:
        """Embed a batch (multipart) with `model` (None: the service's default); returns the items
        (same order) and the id (else the name) of the model that made them."""

        def call(ep: _Endpoint) -> httpx.Response:
            parts = [
                ("files", (f.filename, f.data, f.content_type or _content_type(f.filename))) for f in files
            ]
            ids = json.dumps([f.unique_id for f in files])
            return self._http.post(
                ep.url + "/api/v1/batch_embed_and_caption_multipart",
                params=_model_param(model),
                files=parts,
                data={"unique_ids": ids},
                headers={FILES_HEADER: str(len(files))},
            )

        answer: list[tuple[dict[str, Item], dict]] = []

        def accept(r: httpx.Response) -> None:
            body = r.json()
            answer[:] = [({item["unique_id"]: Item.model_validate(item) for item in body["results"]}, body)]

        r = self._with_retries(
            call,
            unavailable_after=self.settings.ml_unavailable_timeout_s,
            should_stop=should_stop,
            model=model,
            accept=accept,
        )
        _raise_for_error(r)
        by_id, body = answer[0]
        self.batches_sent += 1
        # One item per file, in order: a file the answer leaves out fails on its own.
        items = [
            by_id.get(f.unique_id)
            or Item(
                unique_id=f.unique_id,
                filename=f.filename,
                error={
                    "code": ErrorCode.ML_UNAVAILABLE,
                    "message": "the ML service's answer has no result for this file",
                },
            )
            for f in files
        ]
        return items, body.get("model_id") or body.get("model_name", "")

    def embed_text(self, text: str, *, model: str | None = None, language: str | None = None) -> list[float]:
        """Embed a search query (the ML service's priority lane); fails fast when no ML answers."""
        return self.embed_texts([text], model=model, language=language)[0]

    def embed_texts(
        self, texts: list[str], *, model: str | None = None, language: str | None = None
    ) -> list[list[float]]:
        """Embed query texts in one call (a combined query's terms), in order, with `model`."""
        body: dict[str, object] = {"text": texts[0]} if len(texts) == 1 else {"texts": texts}
        if model is not None:
            body["model"] = model
        if language is not None:
            body["language"] = language
        r = self._with_retries(
            lambda ep: self._http.post(ep.url + "/api/v1/embed_text", json=body, timeout=30.0),
            unavailable_after=min(5.0, self.settings.ml_unavailable_timeout_s),
            model=model,
        )
        _raise_for_error(r)
        answer = r.json()
        if len(texts) == 1:
            return [list(answer["embedding"])]
        return [list(e) for e in answer["embeddings"]]

    def embed_image(self, data: bytes, filename: str, *, model: str | None = None) -> list[float]:
        """Embed one uploaded image (any supported format, RAW included) for search by image."""
        items, _ = self._embed_one(data, filename, model)
        item = items[0]
        if item.error is not None:
            raise ShoeboxError(item.error.code, item.error.message)
        assert item.embedding is not None
        return list(item.embedding)

    def _embed_one(self, data: bytes, filename: str, model: str | None) -> tuple[list[Item], str]:
        f = BatchFile("query", filename or "upload", data)

        def call(ep: _Endpoint) -> httpx.Response:
            return self._http.post(
                ep.url + "/api/v1/batch_embed_and_caption_multipart",
                params=_model_param(model),
                files=[("files", (f.filename, f.data, _content_type(f.filename)))],
                data={"unique_ids": json.dumps([f.unique_id])},
                headers={FILES_HEADER: "1"},
                timeout=60.0,
            )

        r = self._with_retries(
            call, unavailable_after=min(10.0, self.settings.ml_unavailable_timeout_s), model=model
        )
        _raise_for_error(r)
        body = r.json()
        return [Item.model_validate(i) for i in body["results"]], body.get("model_id") or body.get("model_name", "")


def _model_param(model: str | None) -> dict[str, str]:
    return {"model": model} if model else {}


def _hosted(caps: Capabilities) -> set[str]:
    return set(caps.hosted_ids())


def _content_type(filename: str) -> str:
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


def _retry_after(r: httpx.Response) -> float:
    try:
        return min(max(float(r.headers.get("retry-after", "1")), 0.05), 30.0)
    except ValueError:
        return 1.0


def _sleep(seconds: float, should_stop: Callable[[], bool] | None) -> None:
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if should_stop and should_stop():
            return
        time.sleep(min(left, 0.1))


def _raise_for_error(r: httpx.Response) -> None:
    """A 4xx from the ML service becomes a ShoeboxError with the service's own code and message."""
    if r.status_code < 400:
        return
    try:
        err = r.json()["error"]
        code, message = ErrorCode(err["code"]), err.get("message", "")
    except (ValueError, KeyError, TypeError):
        code, message = ErrorCode.ML_UNAVAILABLE, r.text[:200]
    raise ShoeboxError(code, f"ML service: {message}", status=502 if code == ErrorCode.UNAUTHORIZED else None)
