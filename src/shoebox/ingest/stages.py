"""The stages of an ingest job and what flows between them (`pipeline.py` wires them together).

    scan ─► read+hash (N) ─► dedupe ─► prepare (N) ─► embed (batches, K in flight) ─► store
      │ unchanged / offline   │ cached / copy  │ failed                              ▲
      └───────────────────────┴────────────────┴─────────────────────────────────────┘

Rules every stage keeps:

- **Each new file is read once.** The read stage reads the whole file (within the job's byte
  budget), hashes those bytes and hands the same bytes on; the decoder never opens the file
  again, so the vector always belongs to the content its hash names, even when the file is
  rewritten during the job.
- **Each RAW is decoded once.** Prepare decodes it once (embedded preview when its short side
  reaches the model's input size, else a half-size demosaic) for both the thumbnail and the small
  JPEG rendition sent to the ML service (`raw_transport = "rendition"`), or sends the original
  bytes as they were read (`"original"`, for an ML host with the stronger CPU).
- **Nothing blocks for ever.** Every queue `put`/`get` and the byte budget give up when the job
  aborts (cancel, service shutdown, or a stage crash), and batch senders run in an executor
  whose futures are checked with a deadline.
- **Every file is accounted for.** The `Tracker` holds every file the scan handed on until the
  store stage has recorded how it ended; `pipeline.py` fails whatever is left after a crash.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from shoebox.ingest.cache import EmbeddingCache
from shoebox.ingest.catalog import Catalog, FileOutcome
from shoebox.ingest.config import IngestSettings
from shoebox.ingest.diskspace import disk_full_message, ensure_room, is_disk_full
from shoebox.ingest.metadata import build_payload, content_meta, with_paths
from shoebox.ingest.ml_client import BatchFile, MLClient
from shoebox.ingest.scan import FolderScanner, OutsideRoots, open_within_roots
from shoebox.protocol import ErrorCode, Item, Outcome, ShoeboxError, same_model
from shoebox.store import VectorStore

log = logging.getLogger(__name__)

POLL_S = 0.1
STORE_BATCH = 256
STORE_WAIT_S = 0.25
BATCH_FILL_WAIT_S = 0.05


class _Signal(Enum):
    DONE = "done"  # no more items: the producer finished (or the job aborts)
    EMPTY = "empty"  # nothing arrived within the timeout


DONE = _Signal.DONE
EMPTY = _Signal.EMPTY


class _Follower(Enum):
    FOLLOWER = "follower"  # a copy of a content in flight: settled with its leader


FOLLOWER = _Follower.FOLLOWER


# ---------------------------------------------------------------- records flowing through the stages


@dataclass
class FileRef:
    path: str
    size: int
    mtime_ns: int
    old_sha: str | None = None  # the content the catalog knew at this path, if any
    sha: str | None = None
    data: bytes | None = None  # the bytes read once (dropped as soon as they are not needed)
    held: int = 0  # bytes of the byte budget this file holds


@dataclass
class Prepared:
    ref: FileRef
    send: BatchFile
    meta: dict[str, Any]


@dataclass
class Unchanged:
    ref: FileRef
    back_online: bool = False  # an offline file found again


@dataclass
class Gone:
    """A file the catalog knew under the folder that is no longer there (really deleted)."""

    ref: FileRef


@dataclass
class Offline:
    """Known files not found, in bulk: kept in the index, flagged offline (see `vanished_in_bulk`)."""

    paths: list[str]
    reason: str


@dataclass
class Failed:
    ref: FileRef
    code: ErrorCode
    message: str


@dataclass
class Stored:
    """A file whose vector is known: `vector` None means the point already exists (add the path)."""

    ref: FileRef
    outcome: Outcome
    vector: list[float] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    model_name: str | None = None


# ---------------------------------------------------------------- plumbing


class Pipe:
    """A bounded queue whose `put` and `get` give up when the job aborts, so no stage waits for ever."""

    def __init__(self, maxsize: int, stopping: Callable[[], bool]) -> None:
        self._q: queue.Queue[Any] = queue.Queue(maxsize)
        self._stopping = stopping

    def put(self, item: Any) -> bool:
        """False when the job aborted before there was room (the item is dropped)."""
        while True:
            try:
                self._q.put(item, timeout=POLL_S)
                return True
            except queue.Full:
                if self._stopping():
                    return False

    def get(self, timeout: float | None = None) -> Any:
        """The next item; DONE when the job aborts, EMPTY when `timeout` passed with nothing."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._stopping():
                return DONE
            wait = POLL_S if deadline is None else min(POLL_S, deadline - time.monotonic())
            if wait <= 0:
                return EMPTY
            try:
                return self._q.get(timeout=wait)
            except queue.Empty:
                continue

    def drain(self) -> list[Any]:
        """Whatever is queued now, without waiting (the store stage's last look after an abort)."""
        items = []
        while True:
            try:
                items.append(self._q.get_nowait())
            except queue.Empty:
                return items


class ByteBudget:
    """Caps bytes read but not yet embedded, across every job of the process; one oversized file
    may always pass alone. `peak` is the most ever held at once (shown by /health)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self._cond = threading.Condition()

    def acquire(self, n: int, stopping: Callable[[], bool]) -> bool:
        with self._cond:
            while self.used > 0 and self.used + n > self.limit:
                if stopping():
                    return False
                self._cond.wait(POLL_S)
            self.used += n
            self.peak = max(self.peak, self.used)
            return True

    def release(self, n: int) -> None:
        if n <= 0:
            return
        with self._cond:
            self.used -= n
            self._cond.notify_all()


class JobBytes:
    """One job's share of the process's `ByteBudget`.

    Whatever the job still holds when it ends (files dropped from its queues by a cancel or a
    crash) goes back to the shared budget at once, so one job's abort never starves the others.
    """

    def __init__(self, shared: ByteBudget) -> None:
        self.shared = shared
        self.held = 0
        self._lock = threading.Lock()

    def acquire(self, n: int, stopping: Callable[[], bool]) -> bool:
        if not self.shared.acquire(n, stopping):
            return False
        with self._lock:
            self.held += n
        return True

    def release(self, n: int) -> None:
        with self._lock:
            n = min(n, self.held)
            self.held -= max(n, 0)
        self.shared.release(n)

    def release_all(self) -> None:
        self.release(self.held)


@dataclass
class SharedLimits:
    """What every job of the process shares: the byte budget and the decode (prepare) slots, so
    two jobs at once hold no more file bytes, and run no more decodes, than one job may."""

    budget: ByteBudget
    decode_slots: threading.BoundedSemaphore

    @classmethod
    def from_settings(cls, settings: IngestSettings) -> SharedLimits:
        return cls(
            ByteBudget(settings.inflight_bytes_limit),
            threading.BoundedSemaphore(max(1, settings.prepare_workers)),
        )


class Tracker:
    """Every file the scan handed on, until the store stage has recorded how it ended."""

    def __init__(self) -> None:
        self._open: dict[str, FileRef] = {}
        self._lock = threading.Lock()
        self.scanned = 0

    def open(self, ref: FileRef) -> None:
        with self._lock:
            self._open[ref.path] = ref
            self.scanned += 1

    def close(self, paths: Iterable[str]) -> None:
        with self._lock:
            for p in paths:
                self._open.pop(p, None)

    def outstanding(self) -> list[FileRef]:
        with self._lock:
            return list(self._open.values())


@dataclass
class JobContext:
    """What every stage of one job shares."""

    settings: IngestSettings
    catalog: Catalog
    store: VectorStore
    cache: EmbeddingCache
    ml: MLClient
    thumbs_dir: Path
    job_id: str
    collection: str
    directory: str
    cancel: threading.Event
    shutdown: threading.Event
    crashed: threading.Event = field(default_factory=threading.Event)  # set by `fail_job`
    ml_down: threading.Event = field(default_factory=threading.Event)
    tracker: Tracker = field(default_factory=Tracker)
    # The collection's model by identity (`name@digest`, shoebox.ml.models.identity): what the
    # catalog, the points' payloads and the embedding cache record, and what each request names.
    model_name: str | None = None
    embedding_dim: int | None = None
    input_size: int = 224
    # The store collection that answers for `collection` (another one after a model migration;
    # none switches while a job of the collection runs: both hold the collection's job lock).
    store_collection: str = ""
    fatal: str | None = None
    fatal_code: ErrorCode = ErrorCode.INTERNAL
    limits: SharedLimits | None = None  # the process's (JobRunner); None = this job's own
    budget: JobBytes = field(init=False)
    # Real paths of the allowed roots: a file is only ever read from inside them.
    roots: list[str] = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.limits = self.limits or SharedLimits.from_settings(self.settings)
        self.budget = JobBytes(self.limits.budget)
        self.roots = [os.path.realpath(r) for r in (self.settings.ingest_roots or [Path(self.directory)])]
        self.store_collection = self.store_collection or self.collection

    def log(self, line: str) -> None:
        log.info("job %s: %s", self.job_id, line)
        try:
            self.catalog.log(self.job_id, line)
        except Exception:  # a log line must never be what breaks a job
            log.exception("job %s: cannot write its log", self.job_id)

    def fail_job(self, message: str, code: ErrorCode = ErrorCode.INTERNAL) -> None:
        """Stop the whole job: every stage returns, every unfinished file fails with `code`."""
        with self._lock:
            if self.fatal is None:
                self.fatal, self.fatal_code = message, code
        self.crashed.set()

    def stopping(self) -> bool:
        """The job aborts: cancelled, the service shutting down, or a stage crashed."""
        return self.crashed.is_set() or self.cancel.is_set() or self.shutdown.is_set()

    def release(self, ref: FileRef) -> None:
        """Drop the file's bytes and give back the budget they held."""
        self.budget.release(ref.held)
        ref.held, ref.data = 0, None

    def check_model(self, model_name: str, dim: int) -> None:
        """The first answer fixes a new collection's model; another model later fails the job."""
        with self._lock:
            if self.model_name is None or (model_name and "@" not in self.model_name):
                # A new collection takes the answering model; one recorded by bare name (an
                # earlier version) its identity, when it is that name.
                if same_model(self.model_name, model_name):
                    self.model_name = model_name or self.model_name
            if self.embedding_dim is None:
                self.embedding_dim = dim
            same = same_model(self.model_name, model_name) and dim == self.embedding_dim
        if not same:
            self.ml_down.set()
            self.fail_job(
                f"the ML service now answers with {model_name!r} ({dim}-d) but this collection uses "
                f"{self.model_name!r} ({self.embedding_dim}-d); never mixing embedding spaces",
                ErrorCode.MODEL_MISMATCH,
            )
            raise ShoeboxError(ErrorCode.MODEL_MISMATCH, self.fatal or "model changed")


def run_stage(ctx: JobContext, name: str, body: Callable[[], None]) -> None:
    """A stage's thread: a crash (a bug, a broken disk cache, a dead catalog) ends the job, never hangs it."""
    try:
        body()
    except Exception as exc:
        if ctx.shutdown.is_set():
            return  # the service is closing the catalog and the store under us: resumed at restart
        if is_disk_full(exc):  # the catalog or a file write met a full disk: say so, not "internal"
            log.error("job %s: the %s stage stopped: %s", ctx.job_id, name, exc)
            ctx.fail_job(disk_full_message(ctx.settings.data_dir), ErrorCode.DISK_FULL)
            return
        log.exception("job %s: the %s stage crashed", ctx.job_id, name)
        ctx.fail_job(f"internal error in the {name} stage: {type(exc).__name__}: {exc}")


# ---------------------------------------------------------------- scan


def scan_stage(ctx: JobContext, scanner: FolderScanner, out: Pipe, results: Pipe) -> None:
    """Walk the folder; unchanged files go straight to the store, new or modified ones to be read."""
    # Popped as files are found: what is left at the end is what vanished (no set of every path seen).
    known = ctx.catalog.known_files_under(ctx.collection, ctx.directory, with_sha=False)
    known_total = len(known)
    found = 0
    done = ctx.catalog.done_paths(ctx.job_id)
    if done:
        ctx.log(f"resuming: {len(done)} files already finished")
    ctx.log(f"scanning {ctx.directory}")
    last_report = time.monotonic()
    for f in scanner.scan(ctx.directory, ctx.stopping):
        found += 1
        k = known.pop(f.path, None)
        if f.path in done:
            ctx.tracker.scanned += 1
            continue
        ref = FileRef(f.path, f.size, f.mtime_ns)
        ctx.tracker.open(ref)
        if time.monotonic() - last_report > 0.5:
            ctx.catalog.set_total(ctx.job_id, ctx.tracker.scanned, scan_done=False)
            last_report = time.monotonic()
        if f.error:
            ok = results.put(Failed(ref, ErrorCode.FILE_READ, f.error))
        elif k is not None and k.size == f.size and k.mtime_ns == f.mtime_ns:
            ok = results.put(Unchanged(ref, back_online=k.offline))
        else:
            ref.old_sha = _known_sha(ctx, f.path) if k else None
            ok = out.put(ref)
        if not ok:
            return
    done.clear()
    if ctx.stopping():
        return
    ctx.catalog.set_total(ctx.job_id, ctx.tracker.scanned, scan_done=True)
    ctx.log(f"found {ctx.tracker.scanned} files")
    gone = known  # the known files the scan did not find
    if not gone:
        return
    reason = vanished_in_bulk(ctx.settings, len(gone), known_total, found, scanner.incomplete)
    if reason:
        ctx.log(f"{len(gone)} known files were not found ({reason}): kept in the index, marked offline")
        results.put(Offline(list(gone), reason))
    else:
        ctx.log(f"{len(gone)} known files are gone: removing their paths from the collection")
        for p in gone:
            if not results.put(Gone(FileRef(p, 0, 0, old_sha=_known_sha(ctx, p)))):
                return


def _known_sha(ctx: JobContext, path: str) -> str | None:
    k = ctx.catalog.known_file(ctx.collection, path)
    return k.sha256 if k else None


def vanished_in_bulk(
    settings: IngestSettings, gone: int, known: int, found: int, incomplete: bool
) -> str | None:
    """Why the files that vanished look like an outage rather than deletions (None: deleted).

    A root that is empty or could not be fully listed (a NAS share that did not mount, a disk
    not plugged in) never deletes anything; nor does losing more than `offline_fraction` of the
    known files under the folder at once, unless that is no more than `offline_min_files`.
    """
    if found == 0:
        return "the folder is empty or unreadable"
    if incomplete:
        return "some folders could not be listed"
    if gone > settings.offline_min_files and gone > settings.offline_fraction * known:
        return f"{gone} of {known} known files vanished at once, over {settings.offline_fraction:.0%}"
    return None


# ---------------------------------------------------------------- read + hash


def read_stage(ctx: JobContext, inp: Pipe, out: Pipe, results: Pipe) -> None:
    while (ref := inp.get()) is not DONE:
        if not ctx.budget.acquire(max(ref.size, 1), ctx.stopping):
            return
        ref.held = max(ref.size, 1)
        try:
            ref.data = read_file(ref.path, ctx.roots)
            # The bytes being decoded are the bytes hashed (hashlib releases the GIL).
            ref.sha = hashlib.sha256(ref.data).hexdigest()
            ok = out.put(ref)
        except ShoeboxError as exc:
            ctx.release(ref)
            ok = results.put(Failed(ref, exc.code, exc.message))
        if not ok:
            return


def read_file(path: str, roots: Iterable[str] | None = None) -> bytes:
    """The whole file, once; an empty or unreadable file is an `ERR_FILE_READ`.

    Opened without following a symlink swapped in after the scan, and only when its real path
    is inside `roots` (real paths; None = not checked): a scanned file replaced by a link out of
    the roots is `ERR_PATH_NOT_ALLOWED`, and nothing outside them is read.
    """
    try:
        fd, _ = open_within_roots(path, roots)
    except OutsideRoots as exc:
        raise ShoeboxError(ErrorCode.PATH_NOT_ALLOWED, f"not read: {exc}") from exc
    except OSError as exc:
        reason = "it became a symbolic link since the scan" if exc.errno == errno.ELOOP else exc.strerror or exc
        raise ShoeboxError(ErrorCode.FILE_READ, f"cannot read: {reason}") from exc
    try:
        with open(fd, "rb", buffering=0, closefd=True) as f:
            data = f.read()
    except OSError as exc:
        raise ShoeboxError(ErrorCode.FILE_READ, f"cannot read: {exc.strerror or exc}") from exc
    if not data:
        raise ShoeboxError(ErrorCode.FILE_READ, "empty file (0 bytes)")
    return data


# ---------------------------------------------------------------- dedupe


class Deduper:
    """Finds a vector without the ML service: the collection, the embedding cache, or a copy in flight.

    Copies of one content met in the same job wait for their leader (`followers`); the store
    stage settles them once the leader is stored or failed.
    """

    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self._inflight: dict[str, list[FileRef]] = {}
        self._lock = threading.Lock()

    def run(self, inp: Pipe, out: Pipe, results: Pipe) -> None:
        ctx = self.ctx
        while (ref := inp.get()) is not DONE:
            try:
                result = self._lookup(ref)
            except ShoeboxError as exc:
                result = Failed(ref, exc.code, exc.message)
            if result is None:
                ok = out.put(ref)  # to be embedded
            else:
                ctx.release(ref)
                ok = result is FOLLOWER or results.put(result)
            if not ok:
                return

    def _lookup(self, ref: FileRef) -> Stored | _Follower | None:
        """The file's result when no ML call is needed; None when it must be embedded.

        Runs on the one dedupe thread; the store stage only ever pops settled entries.
        """
        ctx = self.ctx
        assert ref.sha is not None
        with self._lock:
            if ref.sha in self._inflight:  # same bytes under another path, being embedded right now
                self._inflight[ref.sha].append(ref)
                return FOLLOWER
        existing = ctx.store.retrieve(ctx.store_collection, [ref.sha]).get(ref.sha)
        if existing is not None and (
            ctx.model_name is None
            or ((recorded := existing.payload.get("model_name")) and same_model(recorded, ctx.model_name))
        ):
            return Stored(ref, Outcome.UNCHANGED if ref.old_sha == ref.sha else Outcome.CACHED)
        if ctx.model_name and (hit := ctx.cache.get(ref.sha, ctx.model_name)) is not None:
            vector, meta = hit
            if "phash" not in meta:  # cached before the perceptual hash existed: from its thumbnail
                meta = {**meta, **fingerprint_of_thumbnail(ctx.thumbs_dir, meta.get("thumbnail"), ref.path)}
            return Stored(ref, Outcome.CACHED, vector, meta, ctx.model_name)
        with self._lock:
            self._inflight[ref.sha] = []
        return None

    def followers(self, sha: str) -> list[FileRef]:
        """The copies that waited for the content `sha`, now settled (called by the store stage)."""
        with self._lock:
            return self._inflight.pop(sha, [])


# ---------------------------------------------------------------- prepare


def prepare_stage(ctx: JobContext, inp: Pipe, out: Pipe, results: Pipe) -> None:
    while (ref := inp.get()) is not DONE:
        if ctx.ml_down.is_set():
            ctx.release(ref)
            item: Any = Failed(ref, ErrorCode.ML_UNAVAILABLE, "ML service unavailable")
            target = results
        else:
            try:
                if not _take(ctx.limits.decode_slots, ctx.stopping):
                    ctx.release(ref)
                    return
                try:
                    item, target = prepare_one(ctx, ref), out
                finally:
                    ctx.limits.decode_slots.release()
            except ShoeboxError as exc:
                ctx.release(ref)
                item, target = Failed(ref, exc.code, exc.message), results
            except Exception as exc:  # a decoder's surprise fails its file, not the job
                log.exception("preparing %s", ref.path)
                ctx.release(ref)
                item, target = Failed(ref, ErrorCode.DECODING_IMAGE, f"cannot decode: {exc}"), results
        if not target.put(item):
            return


def _take(slots: threading.Semaphore, stopping: Callable[[], bool]) -> bool:
    """One of the process's decode slots; False when the job aborts first."""
    while not slots.acquire(timeout=POLL_S):
        if stopping():
            return False
    return True


def prepare_one(ctx: JobContext, ref: FileRef) -> Prepared:
    """One decode of the bytes read: the thumbnail, the EXIF, and what the ML service gets."""
    from shoebox import imaging

    data, sha = ref.data, ref.sha
    assert data is not None and sha is not None
    settings = ctx.settings
    name = os.path.basename(ref.path)
    send_original = imaging.is_raw(name) and settings.raw_transport == "original"
    if send_original:
        min_side = settings.thumbnail_size  # the ML service decodes for the model itself
    elif imaging.is_raw(name):
        # The preview when its short side reaches the model's input, else the sensor binned to it.
        min_side = ctx.input_size
    else:
        min_side = max(ctx.input_size, settings.thumbnail_size)
    decoded = imaging.decode_for_model(data, name, min_side=min_side, max_pixels=settings.max_image_pixels)
    if send_original:
        send = BatchFile(sha, name, data)
        thumb_source = decoded.image
    else:
        small, jpeg = rendition(decoded.image, ctx.input_size)
        send = BatchFile(sha, os.path.splitext(name)[0] + ".jpg", jpeg)
        thumb_source = small if max(small.size) >= settings.thumbnail_size else decoded.image
    thumbnail = write_thumbnail(ctx.thumbs_dir, sha, thumb_source, settings.thumbnail_size)
    exif = imaging.read_exif(data, name) or {}
    meta = content_meta(
        exif, decoded.width, decoded.height, thumbnail, fingerprint_of(thumb_source, ref.path)
    )
    # Only what is sent stays in memory (and in the budget) until the batch is answered.
    ctx.budget.release(ref.held - len(send.data))
    ref.held, ref.data = len(send.data), None
    return Prepared(ref, send, meta)


def fingerprint_of(image: Any, path: str) -> dict[str, Any]:
    """The perceptual hash and sharpness (duplicate tiers) of the picture already decoded."""
    from shoebox.imaging import fingerprint

    try:
        return fingerprint.fingerprint(image)
    except Exception as exc:  # a fingerprint is a bonus: its failure must not fail the photo
        log.warning("fingerprint of %s failed: %s", path, exc)
        return {}


def fingerprint_of_thumbnail(thumbs_dir: Path, rel: str | None, path: str) -> dict[str, Any]:
    """The fingerprint from the stored thumbnail (a 32×32 hash barely changes from 256 px down)."""
    from PIL import Image

    if not rel:
        return {}
    try:
        with Image.open(thumbs_dir / rel) as img:
            img.load()
            return fingerprint_of(img, path)
    except OSError as exc:
        log.warning("no thumbnail to fingerprint %s: %s", path, exc)
        return {}


def rendition(image: Any, input_size: int) -> tuple[Any, bytes]:
    """What the ML service gets: the picture with its shortest side at the model's input size
    (so the service's own resize is a no-op; smaller pictures go as they are, which gives the
    same tensor), as a JPEG (imaging's encoder: 4:4:4, close to the original's CLIP input)."""
    from shoebox import imaging

    if min(image.size) > input_size:
        image = imaging.resize_for_model(image, input_size)
    return image, imaging.encode_jpeg(image)


def thumbnail_name(sha: str) -> str:
    """Where the thumbnail of a content lives, relative to the thumbnail folder (one per content)."""
    return f"{sha[:2]}/{sha}.jpg"


def store_thumbnail(thumbs_dir: Path, sha: str, data: bytes) -> str:
    """Write a thumbnail atomically (a reader never sees half of one); returns its relative name."""
    rel = thumbnail_name(sha)
    target = thumbs_dir / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return rel


def write_thumbnail(thumbs_dir: Path, sha: str, image: Any, size: int) -> str | None:
    from shoebox import imaging

    rel = thumbnail_name(sha)
    if (thumbs_dir / rel).exists():
        return rel
    try:
        return store_thumbnail(thumbs_dir, sha, imaging.make_thumbnail(image, size=size))
    except Exception as exc:  # a thumbnail is a bonus: its failure must not fail the photo
        log.warning("thumbnail of %s failed: %s", sha, exc)
        return None


# ---------------------------------------------------------------- embed


@dataclass
class _Batch:
    items: list[Prepared]
    future: Future[list[Any]]
    started: float


def embed_stage(ctx: JobContext, inp: Pipe, results: Pipe) -> None:
    """Fill batches of the ML service's safe size and send up to `ml_max_inflight` at once.

    Senders run in an executor; the stage itself checks every future: a sender that raised fails
    its own files (`ERR_INTERNAL`), one that runs past `ml_batch_deadline_s` is abandoned and
    its files fail `ERR_ML_UNAVAILABLE` (a late answer is ignored).
    """
    settings = ctx.settings
    limit = max(1, settings.ml_max_inflight)
    deadline = settings.ml_batch_deadline_s
    pool = ThreadPoolExecutor(limit, thread_name_prefix=f"send-{ctx.job_id[:8]}")
    running: list[_Batch] = []
    pending: list[Prepared] = []

    def settle(batch: _Batch, outcome: list[Any]) -> bool:
        for p in batch.items:
            ctx.budget.release(p.ref.held)
            p.ref.held = 0
        return all(results.put(r) for r in outcome)

    def reap(block: bool) -> bool:
        """Settle finished (or overdue) batches; with `block`, wait until one is settled."""
        nonlocal running
        while running:
            done, _ = wait_futures([b.future for b in running], timeout=POLL_S if block else 0)
            now = time.monotonic()
            still: list[_Batch] = []
            settled = False
            for b in running:
                if b.future in done:
                    try:
                        outcome = b.future.result()
                    except Exception as exc:
                        log.exception("job %s: a batch sender crashed", ctx.job_id)
                        outcome = [
                            Failed(p.ref, ErrorCode.INTERNAL, f"batch sender crashed: {exc}") for p in b.items
                        ]
                elif now - b.started > deadline:
                    ctx.log(f"an ML request ran past {deadline:.0f} s: its {len(b.items)} files fail")
                    outcome = [
                        Failed(
                            p.ref,
                            ErrorCode.ML_UNAVAILABLE,
                            f"the ML service did not answer in {deadline:.0f} s",
                        )
                        for p in b.items
                    ]
                else:
                    still.append(b)
                    continue
                settled = True
                if not settle(b, outcome):
                    return False
            running = still
            if settled or not block or ctx.stopping():
                return not ctx.stopping()
        return True

    try:
        finished = False
        while not finished:
            # Batches in flight are settled even while no file arrives: their bytes may be what
            # the readers wait for (the byte budget is full of them).
            item = inp.get(timeout=BATCH_FILL_WAIT_S if pending else (POLL_S if running else None))
            if item is DONE:
                finished = True
            elif item is not EMPTY:
                pending.append(item)
            if not reap(block=False):
                return
            size = ctx.ml.batch_size(ctx.model_name)
            while pending and (len(pending) >= size or item is EMPTY or finished):
                batch, pending = pending[:size], pending[size:]
                while len(running) >= limit:
                    if not reap(block=True):
                        return
                running.append(_Batch(batch, pool.submit(send_batch, ctx, batch), time.monotonic()))
            if ctx.stopping():
                return
        while running:
            if not reap(block=True):
                return
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def send_batch(ctx: JobContext, batch: list[Prepared]) -> list[Any]:
    """One ML request → one result per file (never raises for the ML service's sake)."""
    if ctx.ml_down.is_set():
        return [Failed(p.ref, ErrorCode.ML_UNAVAILABLE, "ML service unavailable") for p in batch]
    try:
        items, model_name = ctx.ml.embed_batch(
            [p.send for p in batch],
            should_stop=lambda: ctx.stopping() or ctx.ml_down.is_set(),
            model=ctx.model_name,
        )
    except ShoeboxError as exc:
        if exc.code == ErrorCode.CANCELLED and not ctx.ml_down.is_set():
            return []  # the job is stopping; these files stay unfinished (resumed later)
        # Only an outage the client waited out (or a stop) ends the job's ML calls; any other refusal
        # (a 4xx, even one with a body that is no API.md error) fails this batch alone.
        if exc.code == ErrorCode.CANCELLED or getattr(exc, "outage", False):
            if not ctx.ml_down.is_set():
                ctx.ml_down.set()
                ctx.log(f"giving up on the ML service: {exc.message}")
            code, message = ErrorCode.ML_UNAVAILABLE, "ML service unavailable"
        else:
            code, message = ErrorCode.ML_UNAVAILABLE, f"ML service refused the batch: {exc.message}"
        return [Failed(p.ref, code, message) for p in batch]
    except Exception as exc:  # a malformed answer (not JSON, wrong shape): this batch fails, not the job
        log.warning("job %s: malformed ML answer: %s", ctx.job_id, exc)
        return [
            Failed(p.ref, ErrorCode.ML_UNAVAILABLE, f"malformed answer from the ML service: {exc}")
            for p in batch
        ]
    # The client answers one item per file, in order (a file the service left out carries an
    # error); anything else is a bug that the embed stage's checked future turns into ERR_INTERNAL.
    return [_result_of(ctx, p, it, model_name) for p, it in zip(batch, items, strict=True)]


def _result_of(ctx: JobContext, p: Prepared, it: Item, model_name: str) -> Any:
    if it.error is not None:
        return Failed(p.ref, it.error.code, it.error.message)
    vector = np.asarray(it.embedding or [], dtype=np.float64)
    if vector.size == 0 or not np.isfinite(vector).all() or not vector.any():
        return Failed(p.ref, ErrorCode.CLIP_INFER, "the ML service returned no usable embedding")
    try:
        ctx.check_model(model_name, vector.size)
    except ShoeboxError as exc:
        return Failed(p.ref, exc.code, exc.message)
    meta = dict(p.meta)
    if meta.get("width") is None:
        meta["width"], meta["height"] = it.width, it.height
    return Stored(p.ref, Outcome.INDEXED, list(it.embedding or []), meta, model_name)


# ---------------------------------------------------------------- store


class StoreStage:
    """The only writer of outcomes: vectors into the store first, then one catalog transaction.

    A crash at any moment leaves files either finished (and stored) or not yet started, and point
    ids come from content, so a resumed job never stores anything twice.
    """

    def __init__(self, ctx: JobContext, deduper: Deduper) -> None:
        self.ctx = ctx
        self.deduper = deduper
        self._collection_ready = False

    def run(self, inp: Pipe) -> None:
        finished = False
        while not finished:
            batch: list[Any] = []
            deadline = time.monotonic() + STORE_WAIT_S
            while len(batch) < STORE_BATCH:
                item = inp.get(timeout=max(0.0, deadline - time.monotonic()) if batch else None)
                if item is EMPTY:
                    break
                if item is DONE:
                    finished = True
                    break
                batch.append(item)
            if self.ctx.stopping():
                batch += inp.drain()  # the job stops: still record what is already done
            if batch:
                self.write(batch)

    def write(self, batch: list[Any]) -> None:
        ctx = self.ctx
        stored = [r for r in batch if isinstance(r, Stored)]
        failed = [r for r in batch if isinstance(r, Failed)]
        unchanged = [r for r in batch if isinstance(r, Unchanged)]
        gone = [r.ref for r in batch if isinstance(r, Gone)]
        for off in (r for r in batch if isinstance(r, Offline)):
            ctx.catalog.mark_offline(ctx.job_id, ctx.collection, off.paths, off.reason)
        try:
            self._write_points(stored)
        except ShoeboxError as exc:
            if ctx.shutdown.is_set():
                raise  # the store is closing under us: these files are redone when the job resumes
            code = ErrorCode.DISK_FULL if exc.code == ErrorCode.DISK_FULL else ErrorCode.VECTOR_DB
            if code == ErrorCode.DISK_FULL:
                ctx.fail_job(exc.message, code)  # every later write would meet the same full disk
            failed += [Failed(r.ref, code, exc.message) for r in stored]
            stored = []
        # Copies of a content that was being embedded: their leader is now stored (or failed).
        followers: list[Stored] = []
        for leader in [*stored, *failed]:
            if leader.ref.sha is None:
                continue
            for ref in self.deduper.followers(leader.ref.sha):
                if isinstance(leader, Stored):
                    followers.append(
                        Stored(ref, Outcome.CACHED, leader.vector, leader.meta, leader.model_name)
                    )
                else:
                    failed.append(Failed(ref, leader.code, leader.message))
        if followers:
            try:
                self._write_points(followers)
                stored += followers
            except ShoeboxError as exc:
                failed += [Failed(r.ref, ErrorCode.VECTOR_DB, exc.message) for r in followers]
        # Paths whose content changed (or became unreadable) leave the point of their old content.
        moved = [r.ref for r in [*stored, *failed] if r.ref.old_sha and r.ref.old_sha != r.ref.sha] + gone
        try:
            detach_paths(ctx.store, ctx.store_collection, {ref.path: ref.old_sha for ref in moved if ref.old_sha})
        except ShoeboxError as exc:
            log.warning("job %s: could not detach changed paths: %s", ctx.job_id, exc.message)

        outcomes = [FileOutcome(r.ref.path, Outcome.UNCHANGED) for r in unchanged]
        outcomes += [FileOutcome(r.ref.path, r.outcome) for r in stored]
        outcomes += [FileOutcome(r.ref.path, Outcome.FAILED, r.code.value, r.message) for r in failed]
        known = [(r.ref.path, r.ref.size, r.ref.mtime_ns, r.ref.sha) for r in stored if r.ref.sha]
        forget = [r.ref.path for r in failed if r.ref.old_sha] + [ref.path for ref in gone]
        online = [r.ref.path for r in unchanged if r.back_online]
        if stored or moved:
            ctx.store.sync(ctx.store_collection)  # the points are durable before the catalog says so
        ctx.catalog.record(ctx.job_id, ctx.collection, outcomes, known, forget, online)
        ctx.tracker.close(o.path for o in outcomes)

    def _write_points(self, records: list[Stored]) -> None:
        if not records:
            return
        ctx = self.ctx
        ensure_room(ctx.settings.data_dir, ctx.settings.min_free_mb)
        by_sha: dict[str, list[Stored]] = {}
        for r in records:
            assert r.ref.sha is not None
            by_sha.setdefault(r.ref.sha, []).append(r)
        existing = ctx.store.retrieve(ctx.store_collection, by_sha)
        new_points = []
        for sha, recs in by_sha.items():
            paths = [r.ref.path for r in recs]
            point = existing.get(sha)
            if point is not None:
                old_paths = list(point.payload.get("paths") or [])
                if not set(paths) <= set(old_paths):
                    ctx.store.set_payload(ctx.store_collection, sha, with_paths(point.payload, old_paths + paths))
                continue
            with_vector = next((r for r in recs if r.vector is not None), None)
            if with_vector is None:
                raise ShoeboxError(ErrorCode.VECTOR_DB, "point vanished from the collection during the job")
            first = min(recs, key=lambda r: r.ref.path)
            model = with_vector.model_name or ctx.model_name or ""
            payload = build_payload(
                sha, paths, first.ref.size, first.ref.mtime_ns / 1e9, with_vector.meta, model
            )
            new_points.append((sha, with_vector.vector, payload))
        if new_points:
            self._ensure_collection(len(new_points[0][1]), new_points[0][2]["model_name"])
            ctx.store.upsert(ctx.store_collection, new_points)
        for sha, vector, payload in new_points:
            rec = next(r for r in by_sha[sha] if r.vector is not None)
            if rec.outcome == Outcome.INDEXED:
                try:
                    ctx.cache.put(sha, payload["model_name"], vector, rec.meta)
                except Exception as exc:  # the cache is a shortcut: its failure loses nothing
                    log.warning("job %s: embedding cache write failed: %s", ctx.job_id, exc)

    def _ensure_collection(self, dim: int, model_name: str) -> None:
        if self._collection_ready:
            return
        ctx = self.ctx
        ctx.store.ensure_collection(ctx.store_collection, dim)
        rec = ctx.catalog.get_collection(ctx.collection)
        recorded = rec.model_name if rec else None
        # A new collection records its model; one recorded by bare name (an earlier version) gets
        # the identity of the model that turned out to be that name.
        if recorded is None or (recorded != model_name and "@" not in recorded and same_model(recorded, model_name)):
            ctx.catalog.set_collection_model(ctx.collection, model_name, dim)
        self._collection_ready = True


def detach_paths(store: VectorStore, collection: str, old_sha_of: dict[str, str]) -> int:
    """Remove paths from the points of their old content; a point left with no path is deleted.

    `old_sha_of` maps path → the content the catalog knew there. Returns the points deleted.
    """
    if not old_sha_of:
        return 0
    by_old: dict[str, set[str]] = {}
    for path, sha in old_sha_of.items():
        by_old.setdefault(sha, set()).add(path)
    deleted = 0
    for sha, point in store.retrieve(collection, by_old).items():
        remaining = [p for p in point.payload.get("paths") or [] if p not in by_old[sha]]
        if remaining:
            store.set_payload(collection, sha, with_paths(point.payload, remaining))
        else:
            store.delete(collection, [sha])
            deleted += 1
    return deleted
