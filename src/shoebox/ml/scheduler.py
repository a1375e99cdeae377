"""One inference worker per device, fed by a bounded queue, with dynamic batching.

Every request (from every connection) hands its preprocessed images to the scheduler; one
dedicated thread owns the model and coalesces whatever is waiting into batches of up to
`batch_size`, waiting at most `batch_max_wait_ms` for a partial batch to fill. ONNX Runtime
releases the GIL while it runs, so the event loop and the decode pool keep going meanwhile.

Text has its own lane: it is served before the next image batch, so a search waits at most
for the batch that is already running — up to MAX_TEXT_STREAK text calls in a row while images
wait; then one image batch runs, so a flood of searches never starves indexing. Capacity is counted in images from the moment a
request is admitted (before it is even decoded): a request that does not fit is refused at
once with ERR_BUSY and a Retry-After derived from the queue depth and measured throughput.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from shoebox.protocol import ErrorCode, ShoeboxError

log = logging.getLogger(__name__)

# Texts are tiny next to images, but an unbounded lane is still an unbounded queue.
MAX_PENDING_TEXTS = 4096
# One text call embeds at most this many queries, so a huge text request cannot starve images.
TEXT_BATCH = 64
# Text calls in a row while images wait, before one image batch runs: a flood of searches
# slows bulk indexing down, never stops it.
MAX_TEXT_STREAK = 4
# Retry-After never sends a client away for longer than this.
MAX_RETRY_AFTER_S = 60


class Embedder(Protocol):
    """What the worker thread calls; `ClipModel` is one, tests may pass any other."""

    def embed_images(self, batch: np.ndarray) -> np.ndarray: ...

    def embed_texts(self, texts: list[str], language: str | None = None) -> np.ndarray: ...


@dataclass(eq=False)
class _ImageJob:
    """The images of one request; the worker may spread them over several batches."""

    images: Sequence[np.ndarray]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    ticket: Ticket
    enqueued_at: float
    taken: int = 0  # images handed to a batch so far
    done: int = 0  # images whose embeddings are in `out`
    out: np.ndarray | None = None
    failed: bool = False

    @property
    def cancelled(self) -> bool:
        return self.future.cancelled()


@dataclass(eq=False)
class _TextJob:
    texts: list[str]
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    language: str | None = None  # one call embeds texts of one language (NLLB prefixes it)


@dataclass(eq=False)
class Ticket:
    """Capacity reserved for one request's images, held from admission until they are embedded.

    Reserving before decoding is what makes the 429 immediate: a flood is turned away at the
    door instead of piling up in the decode pool.
    """

    scheduler: InferenceScheduler
    held: int
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def take(self) -> int:
        """Hand the reserved room over to another ticket (this one then holds nothing)."""
        with self._lock:
            n, self.held = self.held, 0
        return n

    def release(self, n: int | None = None) -> None:
        with self._lock:
            n = self.held if n is None else min(n, self.held)
            self.held -= n
        if n:
            self.scheduler._release(n)

    def resize(self, n: int) -> None:
        """Hold room for exactly `n` images: give back the surplus, or reserve the shortfall
        (which may raise ERR_BUSY like any admission)."""
        if n <= self.held:
            self.release(self.held - n)
            return
        extra = self.scheduler.admit_more(self.held, n - self.held)
        with self._lock:
            self.held += extra

    def __enter__(self) -> Ticket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _deliver(future: asyncio.Future, result: object = None, error: BaseException | None = None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _deliver_threadsafe(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future,
    result: object = None,
    error: BaseException | None = None,
) -> None:
    try:
        loop.call_soon_threadsafe(_deliver, future, result, error)
    except RuntimeError:  # the loop is already closed: nobody is waiting any more
        pass


class DeviceGate:
    """One device's turn, shared by the schedulers (lanes) of the models it runs: one model call at
    a time, and no image batch starts while another lane has texts waiting. Without it, two lanes
    run their sessions at once (each with every core's threads), and the searches of a collection
    on one model compete with the image batches of another (a migration to a new model)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._busy = False
        self._texts: dict[int, int] = {}  # lane (id of its scheduler) -> texts jobs waiting
        self._text_turns = 0  # text calls since the last image batch, over every lane

    def texts_queued(self, lane: object, n: int) -> None:
        with self._cond:
            self._texts[id(lane)] = max(0, self._texts.get(id(lane), 0) + n)
            self._cond.notify_all()

    @contextmanager
    def turn(self, lane: object, *, text: bool) -> Iterator[None]:
        me = id(lane)
        with self._cond:
            # Past MAX_TEXT_STREAK text calls an image batch goes anyway: a flood of searches on
            # one model slows another model's batches down, never stops them.
            while self._busy or (
                not text
                and self._text_turns < MAX_TEXT_STREAK
                and any(n for other, n in self._texts.items() if other != me)
            ):
                self._cond.wait()
            self._busy = True
            self._text_turns = self._text_turns + 1 if text else 0
        try:
            yield
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()


class InferenceScheduler:
    """Owns the model on one worker thread; `embed_images` / `embed_texts` are awaited from the loop."""

    def __init__(
        self,
        model: Embedder,
        *,
        batch_size: int,
        max_queue: int,
        batch_max_wait_ms: float = 5.0,
        throughput_img_s: float | None = None,
        name: str = "inference",
        gate: DeviceGate | None = None,
    ) -> None:
        if batch_size < 1 or max_queue < 1:
            raise ValueError("batch_size and max_queue must be at least 1")
        self.model = model
        self.gate = gate or DeviceGate()
        self.batch_size = batch_size
        self.max_queue = max_queue
        self.batch_max_wait_s = max(0.0, batch_max_wait_ms) / 1000.0
        # EWMA of images per second over real batches; seeded by the start-up probe.
        self.throughput_img_s: float | None = throughput_img_s
        self._cond = threading.Condition()
        self._images: deque[_ImageJob] = deque()
        self._texts: deque[_TextJob] = deque()
        self._queued_images = 0  # waiting in `_images`, not yet handed to a batch
        self._admitted = 0  # reserved by tickets: decoding, queued or running
        self._text_streak = 0  # text calls in a row while images were waiting
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.stats = {"image_batches": 0, "images": 0, "text_calls": 0, "texts": 0, "dropped_images": 0}

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker after the batch it is running; everything still queued is cancelled."""
        with self._cond:
            self._stopping = True
            pending_images = list(self._images)
            pending_texts = list(self._texts)
            self._images.clear()
            self._texts.clear()
            self.gate.texts_queued(self, -len(pending_texts))
            self._queued_images = 0
            self._cond.notify_all()
        err = ShoeboxError(ErrorCode.ML_UNAVAILABLE, "the inference service is shutting down")
        for job in [*pending_images, *pending_texts]:
            _deliver_threadsafe(job.loop, job.future, None, err)
        if self._thread.is_alive():
            self._thread.join(timeout)

    # ------------------------------------------------------------------ state

    @property
    def queue_depth(self) -> int:
        """Images admitted and not yet embedded (decoding, waiting or in the running batch)."""
        return self._admitted

    @property
    def queued_images(self) -> int:
        """Images waiting for the worker (already decoded), a subset of `queue_depth`."""
        return self._queued_images

    @property
    def pending_texts(self) -> int:
        return len(self._texts)

    def retry_after_s(self, extra: int = 0) -> int:
        """Seconds until the queue has drained enough to take `extra` more images."""
        rate = self.throughput_img_s or 1.0
        backlog = max(1, self._admitted + extra - self.max_queue)
        seconds = backlog / rate
        return int(min(MAX_RETRY_AFTER_S, max(1, math.ceil(seconds))))

    # ------------------------------------------------------------------ admission

    def admit(self, n: int) -> Ticket:
        """Reserve room for `n` images or raise ERR_BUSY (429, Retry-After) right away."""
        if n > self.max_queue:
            raise ShoeboxError(
                ErrorCode.VALIDATION,
                f"{n} images in one request exceed the queue capacity of {self.max_queue}; send smaller batches",
                status=413,
                max_queue=self.max_queue,
            )
        with self._cond:
            if self._stopping:
                raise ShoeboxError(ErrorCode.ML_UNAVAILABLE, "the inference service is shutting down")
            if self._admitted + n > self.max_queue:
                retry = self.retry_after_s(n)
                err = ShoeboxError(
                    ErrorCode.BUSY,
                    f"inference queue is full ({self._admitted}/{self.max_queue} images); retry in {retry}s",
                    retry_after=retry,
                    queue_depth=self._admitted,
                )
                err.headers["Retry-After"] = str(retry)
                raise err
            self._admitted += n
        return Ticket(self, n)

    def admit_more(self, held: int, n: int) -> int:
        """Reserve `n` more images for a request that holds `held` already; returns `n`."""
        if held + n > self.max_queue:
            self.admit(held + n)  # raises the 413 of a request larger than the whole queue
        return self.admit(n).take()

    def _release(self, n: int) -> None:
        with self._cond:
            self._admitted -= n

    # ------------------------------------------------------------------ requests

    async def embed_images(self, images: Sequence[np.ndarray], ticket: Ticket | None = None) -> np.ndarray:
        """Embed preprocessed images (each 3xSxS float32); returns [N, D] in the same order.

        Without a ticket the images are admitted here (and may raise ERR_BUSY). If the awaiting
        task is cancelled (client gone), the images still queued are dropped at once.
        """
        if ticket is None:
            ticket = self.admit(len(images))
        if not images:
            ticket.release()
            return np.zeros((0, 0), dtype=np.float32)
        loop = asyncio.get_running_loop()
        job = _ImageJob(images, loop.create_future(), loop, ticket, time.monotonic())
        with self._cond:
            if self._stopping:
                ticket.release()
                raise ShoeboxError(ErrorCode.ML_UNAVAILABLE, "the inference service is shutting down")
            self._images.append(job)
            self._queued_images += len(images)
            self._cond.notify()
        try:
            return await job.future
        except asyncio.CancelledError:
            self._drop(job)
            raise

    async def embed_texts(self, texts: list[str], language: str | None = None) -> np.ndarray:
        """Embed texts on the priority lane; returns [N, D]."""
        loop = asyncio.get_running_loop()
        job = _TextJob(list(texts), loop.create_future(), loop, language)
        with self._cond:
            if self._stopping:
                raise ShoeboxError(ErrorCode.ML_UNAVAILABLE, "the inference service is shutting down")
            if len(self._texts) >= MAX_PENDING_TEXTS:
                err = ShoeboxError(ErrorCode.BUSY, "too many text queries waiting", retry_after=1)
                err.headers["Retry-After"] = "1"
                raise err
            self._texts.append(job)
            self.gate.texts_queued(self, 1)
            self._cond.notify()
        try:
            return await job.future
        except asyncio.CancelledError:
            job.future.cancel()
            with self._cond:
                if job in self._texts:
                    self._texts.remove(job)
                    self.gate.texts_queued(self, -1)
            raise

    def _drop(self, job: _ImageJob) -> None:
        job.future.cancel()
        with self._cond:
            untaken = len(job.images) - job.taken
            if job in self._images:
                self._images.remove(job)
                self._queued_images -= untaken
            self.stats["dropped_images"] += untaken
        # Images already in the running batch finish and are thrown away (releasing their own
        # room); the rest is free now.
        job.ticket.release(untaken)

    # ------------------------------------------------------------------ worker thread

    def _run(self) -> None:
        while True:
            texts, slices = self._next_work()
            try:
                if texts:
                    self._run_texts(texts)
                elif slices:
                    self._run_images(slices)
                elif texts is None:
                    return
            except Exception:  # noqa: BLE001 - the worker must outlive any bug in one batch
                log.exception("inference worker error")

    def _next_work(self) -> tuple[list[_TextJob] | None, list[tuple[_ImageJob, int, int]]]:
        """(texts, []) or ([], image slices); (None, []) when stopping."""
        with self._cond:
            while True:
                if self._stopping:
                    return None, []
                images_wait = self._queued_images > 0
                if self._texts and not (images_wait and self._text_streak >= MAX_TEXT_STREAK):
                    self._text_streak = self._text_streak + 1 if images_wait else 0
                    return self._take_texts(), []
                if self._queued_images >= self.batch_size or self._text_streak >= MAX_TEXT_STREAK:
                    # A full batch, or images that already waited out a streak of text calls.
                    self._text_streak = 0
                    return [], self._take_images()
                if self._images:
                    # A partial batch waits for company, counted from its oldest image's arrival,
                    # so images that already waited behind a running batch do not wait again.
                    deadline = self._images[0].enqueued_at + self.batch_max_wait_s
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        self._text_streak = 0
                        return [], self._take_images()
                    self._cond.wait(remaining)
                else:
                    self._cond.wait()

    def _take_texts(self) -> list[_TextJob]:
        jobs: list[_TextJob] = []
        count = 0
        while self._texts and (not jobs or count + len(self._texts[0].texts) <= TEXT_BATCH):
            if jobs and self._texts[0].language != jobs[0].language:
                break  # the next call takes the other language
            job = self._texts.popleft()
            self.gate.texts_queued(self, -1)
            if job.future.cancelled():
                continue
            jobs.append(job)
            count += len(job.texts)
        return jobs

    def _take_images(self) -> list[tuple[_ImageJob, int, int]]:
        """Slices (job, start, stop) filling one batch, oldest request first."""
        slices: list[tuple[_ImageJob, int, int]] = []
        room = self.batch_size
        while room and self._images:
            job = self._images[0]
            if job.cancelled or job.failed:
                self._images.popleft()
                self._queued_images -= len(job.images) - job.taken
                continue
            start = job.taken
            stop = min(len(job.images), start + room)
            job.taken = stop
            room -= stop - start
            self._queued_images -= stop - start
            slices.append((job, start, stop))
            if stop == len(job.images):
                self._images.popleft()
        return slices

    def _run_texts(self, jobs: list[_TextJob]) -> None:
        if not jobs:
            return
        texts = [t for job in jobs for t in job.texts]
        try:
            language = jobs[0].language
            with self.gate.turn(self, text=True):
                if language is None:
                    embeddings = self.model.embed_texts(texts)
                else:
                    embeddings = self.model.embed_texts(texts, language=language)
        except Exception as exc:  # noqa: BLE001 - a failed call fails its requests, never the worker
            log.exception("text inference failed")
            err = ShoeboxError(ErrorCode.CLIP_INFER, f"text inference failed: {type(exc).__name__}: {exc}")
            for job in jobs:
                _deliver_threadsafe(job.loop, job.future, None, err)
            return
        self.stats["text_calls"] += 1
        self.stats["texts"] += len(texts)
        offset = 0
        for job in jobs:
            part = embeddings[offset : offset + len(job.texts)]
            offset += len(job.texts)
            _deliver_threadsafe(job.loop, job.future, part)

    def _run_images(self, slices: list[tuple[_ImageJob, int, int]]) -> None:
        live = []
        for job, start, stop in slices:
            if job.cancelled or job.failed:
                job.ticket.release(stop - start)
            else:
                live.append((job, start, stop))
        slices = live
        if not slices:
            return
        n = sum(stop - start for _, start, stop in slices)
        began = time.perf_counter()
        try:
            # One copy into a contiguous batch; a misshapen image fails here like in the model.
            first = slices[0][0].images[slices[0][1]]
            batch = np.empty((n, *first.shape), dtype=np.float32)
            row = 0
            for job, start, stop in slices:
                for i in range(start, stop):
                    batch[row] = job.images[i]
                    row += 1
            with self.gate.turn(self, text=False):
                embeddings = self.model.embed_images(batch)
        except Exception:  # noqa: BLE001
            log.exception("image inference failed on a batch of %d; retrying per request", n)
            self._retry_per_job(slices)
            return
        self._observe(n, time.perf_counter() - began)
        row = 0
        for job, start, stop in slices:
            self._store(job, start, stop, embeddings[row : row + stop - start])
            row += stop - start

    def _retry_per_job(self, slices: list[tuple[_ImageJob, int, int]]) -> None:
        """A failed batch is re-run one request at a time, so only the request at fault fails."""
        for job, start, stop in slices:
            if job.cancelled or job.failed:
                job.ticket.release(stop - start)
                continue
            try:
                batch = np.stack([job.images[i] for i in range(start, stop)]).astype(np.float32, copy=False)
                embeddings = self.model.embed_images(batch)
            except Exception as exc:  # noqa: BLE001
                job.ticket.release(stop - start)
                self._fail(job, exc)
                continue
            self._store(job, start, stop, embeddings)

    def _store(self, job: _ImageJob, start: int, stop: int, embeddings: np.ndarray) -> None:
        job.ticket.release(stop - start)
        self.stats["images"] += stop - start
        if job.cancelled or job.failed:
            return
        if job.out is None:
            job.out = np.empty((len(job.images), embeddings.shape[1]), dtype=np.float32)
        job.out[start:stop] = embeddings
        job.done += stop - start
        if job.done == len(job.images):
            _deliver_threadsafe(job.loop, job.future, job.out)

    def _fail(self, job: _ImageJob, exc: BaseException) -> None:
        with self._cond:
            job.failed = True
            if job in self._images:
                self._images.remove(job)
                self._queued_images -= len(job.images) - job.taken
        job.ticket.release()
        err = ShoeboxError(ErrorCode.CLIP_INFER, f"image inference failed: {type(exc).__name__}: {exc}")
        _deliver_threadsafe(job.loop, job.future, None, err)

    def _observe(self, n: int, seconds: float) -> None:
        self.stats["image_batches"] += 1
        if seconds <= 0:
            return
        rate = n / seconds
        # Partial batches underestimate the device; weight each sample by how full it was.
        weight = 0.2 * min(1.0, n / self.batch_size)
        if self.throughput_img_s is None:
            self.throughput_img_s = rate
        else:
            self.throughput_img_s += weight * (rate - self.throughput_img_s)
