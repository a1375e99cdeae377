"""One ingest job as a pipeline: scan → identify → dedupe → prepare → embed → store.

Each stage is a thread (or a few) reading a bounded queue and writing the next, so reading,
hashing, decoding, inference and storage overlap and memory stays flat whatever the folder
size; the bytes of files read but not yet embedded are also capped (RAW originals are large).

    scan+identify ─► hash (N) ─► dedupe ─► prepare (N) ─► embed (batches, K in flight) ─► store
         │ unchanged              │ cached / copy           │ failed                    ▲
         └────────────────────────┴─────────────────────────┴───────────────────────────┘

Only the store thread writes outcomes to the catalog, one transaction per batch, after the
vectors are in Qdrant: a crash at any moment leaves files either finished (and stored) or not
yet started, and point ids come from content, so a resumed job never stores anything twice.

Outcome rules (API.md): `indexed` = embedded by the ML service in this job; `cached` = vector
reused without an ML call (from the embedding cache, from a point already in the collection
under another path, or from another path with the same bytes in this same job); `unchanged` =
same path, size and mtime as the catalog (no read at all), or same path touched but same bytes.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoebox.ingest.cache import EmbeddingCache
from shoebox.ingest.catalog import Catalog, FileOutcome
from shoebox.ingest.config import IngestSettings
from shoebox.ingest.metadata import build_payload, content_meta, with_paths
from shoebox.ingest.ml_client import BatchFile, MLClient
from shoebox.ingest.scan import FolderScanner
from shoebox.ingest.store import VectorStore
from shoebox.protocol import ErrorCode, JobStatus, ShoeboxError

log = logging.getLogger(__name__)

HASH_CHUNK = 1024 * 1024
STORE_BATCH = 256
STORE_WAIT_S = 0.25
BATCH_FILL_WAIT_S = 0.05
_DONE = object()


# ---------------------------------------------------------------- records flowing through the stages


@dataclass
class FileRef:
    path: str
    size: int
    mtime_ns: int
    old_sha: str | None = None  # the content the catalog knew at this path, if any
    sha: str | None = None


@dataclass
class Prepared:
    ref: FileRef
    send: BatchFile
    meta: dict[str, Any]
    budget: int


@dataclass
class Unchanged:
    ref: FileRef


@dataclass
class Gone:
    """A file the catalog knew under the folder that is no longer there."""

    ref: FileRef


@dataclass
class Failed:
    ref: FileRef
    code: ErrorCode
    message: str


@dataclass
class Stored:
    """A file whose vector is known: `vector` None means the point already exists (add the path)."""

    ref: FileRef
    outcome: str
    vector: list[float] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    model_name: str | None = None


class ByteBudget:
    """Caps bytes read but not yet embedded; one oversized file may always pass alone."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._cond = threading.Condition()

    def acquire(self, n: int, should_stop: Callable[[], bool]) -> bool:
        with self._cond:
            while self.used > 0 and self.used + n > self.limit:
                if should_stop():
                    return False
                self._cond.wait(0.1)
            self.used += n
            return True

    def release(self, n: int) -> None:
        with self._cond:
            self.used -= n
            self._cond.notify_all()


# ---------------------------------------------------------------- the pipeline


class IngestPipeline:
    def __init__(
        self,
        *,
        settings: IngestSettings,
        catalog: Catalog,
        store: VectorStore,
        cache: EmbeddingCache,
        ml: MLClient,
        thumbs_dir: Path,
        job_id: str,
        collection: str,
        directory: str,
        cancel: threading.Event,
        shutdown: threading.Event,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.store = store
        self.cache = cache
        self.ml = ml
        self.thumbs_dir = thumbs_dir
        self.job_id = job_id
        self.collection = collection
        self.directory = directory
        self.cancel = cancel
        self.shutdown = shutdown

        qsize = max(8, settings.queue_size)
        self.hash_q: queue.Queue = queue.Queue(qsize)
        self.dedupe_q: queue.Queue = queue.Queue(qsize)
        self.prepare_q: queue.Queue = queue.Queue(qsize)
        self.embed_q: queue.Queue = queue.Queue(qsize)
        self.store_q: queue.Queue = queue.Queue(qsize * 4)
        self.budget = ByteBudget(settings.inflight_bytes_limit)

        self.model_name: str | None = None
        self.input_size = 224
        self.ml_down = threading.Event()
        self.fatal: str | None = None
        self._inflight_shas: dict[str, list[FileRef]] = {}
        self._dedupe_lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._collection_ready = False

    # ------------------------------------------------------------ helpers

    def stopping(self) -> bool:
        return self.cancel.is_set() or self.shutdown.is_set()

    def log(self, line: str) -> None:
        log.info("job %s: %s", self.job_id, line)
        self.catalog.log(self.job_id, line)

    def _put(self, q: queue.Queue, item: Any) -> None:
        q.put(item)

    # ------------------------------------------------------------ run

    def run(self) -> JobStatus | None:
        """Run to the end; returns the final status, or None when the service is shutting down."""
        rec = self.catalog.get_collection(self.collection)
        caps = self.ml.capabilities(timeout=5.0)
        if caps is not None:
            self.input_size = caps.input_size
            if rec and rec.model_name and rec.model_name != caps.model_name:
                self.log(
                    f"refused: collection {self.collection!r} was built with {rec.model_name!r}, "
                    f"the ML service serves {caps.model_name!r}; never mixing embedding spaces"
                )
                return JobStatus.FAILED
            self.model_name = caps.model_name
            extensions = list(caps.image_formats) + list(caps.raw_formats)
        else:
            self.model_name = rec.model_name if rec else None
            extensions = _local_extensions()
            self.log(
                "ML service not reachable at start; unchanged files are still checked, new ones will wait"
            )

        scanner = FolderScanner(
            extensions,
            self.settings.ingest_roots or [Path(self.directory)],
            workers=self.settings.scan_workers,
            on_refused=lambda path, reason: self.log(f"skipped {path}: {reason}"),
        )
        n_hash = max(1, self.settings.hash_workers)
        n_prep = max(1, self.settings.prepare_workers)

        def spawn(name: str, target: Callable[..., None], *args: Any) -> threading.Thread:
            t = threading.Thread(
                target=self._guard, args=(name, target, *args), name=f"{name}-{self.job_id[:8]}"
            )
            t.daemon = True
            t.start()
            return t

        producer = spawn("scan", self._scan_identify, scanner, n_hash)
        hashers = [spawn("hash", self._hash_worker) for _ in range(n_hash)]
        deduper = spawn("dedupe", self._dedupe_worker)
        preparers = [spawn("prepare", self._prepare_worker) for _ in range(n_prep)]
        embedder = spawn("embed", self._embed_worker)
        storer = spawn("store", self._store_worker)

        producer.join()
        for t in hashers:
            t.join()
        self.dedupe_q.put(_DONE)
        deduper.join()
        for _ in preparers:
            self.prepare_q.put(_DONE)
        for t in preparers:
            t.join()
        self.embed_q.put(_DONE)
        embedder.join()
        self.store_q.put(_DONE)
        storer.join()

        if self.shutdown.is_set() and not (self.cancel.is_set() or self.fatal):
            return None
        if self.cancel.is_set() and not self.fatal:
            self.log("cancelled")
            return JobStatus.CANCELLED
        job = self.catalog.get_job(self.job_id, details=False)
        assert job is not None
        summary = (
            f"{job.total_files} files: {job.indexed} indexed, {job.cached} cached, "
            f"{job.unchanged} unchanged, {job.failed} failed"
        )
        if self.fatal or self.ml_down.is_set():
            self.log(f"failed: {self.fatal or 'ML service unavailable'}; {summary}")
            return JobStatus.FAILED
        self.log(f"done: {summary}")
        return JobStatus.COMPLETED_WITH_ERRORS if job.failed else JobStatus.COMPLETED

    def _guard(self, name: str, target: Callable[..., None], *args: Any) -> None:
        try:
            target(*args)
        except Exception as exc:  # a dead stage would block its neighbours: fail the job loudly instead
            if self.shutdown.is_set():
                return  # the service is closing the catalog and the store under us: resumed at restart
            log.exception("job %s: %s stage crashed", self.job_id, name)
            self.fatal = f"internal error in the {name} stage: {exc}"
            self.cancel.set()

    # ------------------------------------------------------------ stages

    def _scan_identify(self, scanner: FolderScanner, n_hash: int) -> None:
        try:
            known = self.catalog.known_files_under(self.collection, self.directory)
            done = self.catalog.done_paths(self.job_id)
            if done:
                self.log(f"resuming: {len(done)} files already finished")
            self.log(f"scanning {self.directory}")
            total, last_report = 0, time.monotonic()
            seen: set[str] = set()
            for f in scanner.scan(self.directory, self.stopping):
                total += 1
                seen.add(f.path)
                if time.monotonic() - last_report > 0.5:
                    self.catalog.set_total(self.job_id, total, scan_done=False)
                    last_report = time.monotonic()
                if f.path in done:
                    continue
                ref = FileRef(f.path, f.size, f.mtime_ns)
                if f.error:
                    self.store_q.put(Failed(ref, ErrorCode.FILE_READ, f.error))
                    continue
                k = known.get(f.path)
                if k is not None and k.size == f.size and k.mtime_ns == f.mtime_ns:
                    self.store_q.put(Unchanged(ref))
                    continue
                ref.old_sha = k.sha256 if k else None
                self.hash_q.put(ref)
            if not self.stopping():
                self.catalog.set_total(self.job_id, total, scan_done=True)
                self.log(f"found {total} files")
                # Deleted (or moved) since the last ingest: their paths leave the collection.
                gone = [] if scanner.incomplete else [p for p in known if p not in seen]
                if gone:
                    self.log(f"{len(gone)} known files are gone: removing their paths from the collection")
                for path in gone:
                    self.store_q.put(Gone(FileRef(path, 0, 0, old_sha=known[path].sha256)))
        finally:
            for _ in range(n_hash):
                self.hash_q.put(_DONE)

    def _hash_worker(self) -> None:
        while (ref := self.hash_q.get()) is not _DONE:
            if self.stopping():
                continue
            try:
                if ref.size == 0:
                    raise ShoeboxError(ErrorCode.FILE_READ, "empty file (0 bytes)")
                ref.sha = sha256_file(ref.path)
                self.dedupe_q.put(ref)
            except ShoeboxError as exc:
                self.store_q.put(Failed(ref, exc.code, exc.message))

    def _dedupe_worker(self) -> None:
        while (ref := self.dedupe_q.get()) is not _DONE:
            if self.stopping():
                continue
            try:
                self._dedupe_one(ref)
            except ShoeboxError as exc:
                self.store_q.put(Failed(ref, exc.code, exc.message))

    def _dedupe_one(self, ref: FileRef) -> None:
        assert ref.sha is not None
        with self._dedupe_lock:
            if ref.sha in self._inflight_shas:  # same bytes under another path, being embedded right now
                self._inflight_shas[ref.sha].append(ref)
                return
            existing = self.store.retrieve(self.collection, [ref.sha]).get(ref.sha)
            if existing is not None and (
                self.model_name is None or existing.payload.get("model_name") == self.model_name
            ):
                outcome = "unchanged" if ref.old_sha == ref.sha else "cached"
                self.store_q.put(Stored(ref, outcome))
                return
            hit = self.cache.get(ref.sha, self.model_name) if self.model_name else None
            if hit is not None:
                vector, meta = hit
                self.store_q.put(Stored(ref, "cached", vector, meta, self.model_name))
                return
            self._inflight_shas[ref.sha] = []
        self.prepare_q.put(ref)

    def _prepare_worker(self) -> None:
        while (ref := self.prepare_q.get()) is not _DONE:
            if self.stopping():
                continue
            if self.ml_down.is_set():
                self.store_q.put(Failed(ref, ErrorCode.ML_UNAVAILABLE, "ML service unavailable"))
                continue
            if not self.budget.acquire(ref.size, self.stopping):
                continue
            try:
                self.embed_q.put(self._prepare_one(ref))
            except ShoeboxError as exc:
                self.budget.release(ref.size)
                self.store_q.put(Failed(ref, exc.code, exc.message))
            except Exception as exc:  # a decoder bug must fail one file, not the job
                self.budget.release(ref.size)
                log.exception("preparing %s", ref.path)
                self.store_q.put(Failed(ref, ErrorCode.DECODING_IMAGE, f"cannot decode: {exc}"))

    def _prepare_one(self, ref: FileRef) -> Prepared:
        from shoebox import imaging

        data = read_file(ref.path)
        assert ref.sha is not None
        name = os.path.basename(ref.path)
        thumb_side = self.settings.thumbnail_size
        if imaging.is_raw(name):
            # RAW goes to the ML service as its original bytes; here only what the thumbnail needs.
            decoded = imaging.decode_for_model(
                data, name, min_side=thumb_side, max_pixels=self.settings.max_image_pixels
            )
            send = BatchFile(ref.sha, name, data)
            thumb_source = decoded.image
        else:
            decoded = imaging.decode_for_model(
                data,
                name,
                min_side=max(self.input_size, thumb_side),
                max_pixels=self.settings.max_image_pixels,
            )
            small = rendition(decoded.image, self.input_size)
            send = BatchFile(ref.sha, os.path.splitext(name)[0] + ".jpg", jpeg(small))
            # The rendition is usually big enough for the thumbnail, and far cheaper to shrink.
            thumb_source = small if max(small.size) >= thumb_side else decoded.image
        thumbnail = self._write_thumbnail(ref.sha, thumb_source)
        try:
            exif = imaging.read_exif(data, name) or {}
        except Exception:  # metadata is a bonus: a broken EXIF block must not fail the photo
            exif = {}
        meta = content_meta(exif, decoded.width, decoded.height, thumbnail)
        budget = ref.size
        if send.data is not data:
            # Only the small rendition stays in memory until the batch is sent.
            self.budget.release(ref.size - len(send.data))
            budget = len(send.data)
        return Prepared(ref, send, meta, budget)

    def _write_thumbnail(self, sha: str, image: Any) -> str | None:
        from shoebox import imaging

        rel = f"{sha[:2]}/{sha}.jpg"
        target = self.thumbs_dir / rel
        if target.exists():
            return rel
        try:
            data = imaging.make_thumbnail(image, size=self.settings.thumbnail_size)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(f".{threading.get_ident()}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, target)
            return rel
        except Exception as exc:
            log.warning("thumbnail of %s failed: %s", sha, exc)
            return None

    def _embed_worker(self) -> None:
        inflight = threading.Semaphore(max(1, self.settings.ml_max_inflight))
        senders: list[threading.Thread] = []
        pending: list[Prepared] = []
        finished = False
        while not finished:
            try:
                item = self.embed_q.get(timeout=BATCH_FILL_WAIT_S if pending else None)
            except queue.Empty:
                item = None
            if item is _DONE:
                finished = True
            elif item is not None:
                pending.append(item)
            batch_size = self.ml.batch_size()
            while pending and (len(pending) >= batch_size or item is None or finished):
                batch, pending = pending[:batch_size], pending[batch_size:]
                if self.stopping():
                    for p in batch:
                        self.budget.release(p.budget)
                    continue
                inflight.acquire()
                t = threading.Thread(target=self._send_batch, args=(batch, inflight), daemon=True)
                t.start()
                senders.append(t)
                senders = [s for s in senders if s.is_alive()]
        for t in senders:
            t.join()

    def _send_batch(self, batch: list[Prepared], inflight: threading.Semaphore) -> None:
        try:
            if self.ml_down.is_set():
                raise ShoeboxError(ErrorCode.ML_UNAVAILABLE, "ML service unavailable")
            items, model_name = self.ml.embed_batch(
                [p.send for p in batch], should_stop=lambda: self.stopping() or self.ml_down.is_set()
            )
            if self._check_model(model_name):
                for p, it in zip(batch, items, strict=True):
                    if it.error is not None or not it.embedding:
                        code = it.error.code if it.error else ErrorCode.CLIP_INFER
                        self.store_q.put(
                            Failed(p.ref, code, it.error.message if it.error else "no embedding")
                        )
                    else:
                        meta = dict(p.meta)
                        if meta.get("width") is None:
                            meta["width"], meta["height"] = it.width, it.height
                        self.store_q.put(Stored(p.ref, "indexed", it.embedding, meta, model_name))
            else:
                for p in batch:
                    self.store_q.put(Failed(p.ref, ErrorCode.ML_UNAVAILABLE, self.fatal or "model changed"))
        except ShoeboxError as exc:
            if exc.code == ErrorCode.CANCELLED and not self.ml_down.is_set():
                return  # the job is stopping; these files stay unfinished (resumed later)
            if exc.code in (ErrorCode.ML_UNAVAILABLE, ErrorCode.CANCELLED):
                if not self.ml_down.is_set():
                    self.ml_down.set()
                    self.log(f"giving up on the ML service: {exc.message}")
                code, message = ErrorCode.ML_UNAVAILABLE, "ML service unavailable"
            else:
                code, message = ErrorCode.ML_UNAVAILABLE, f"ML service refused the batch: {exc.message}"
            for p in batch:
                self.store_q.put(Failed(p.ref, code, message))
        finally:
            for p in batch:
                self.budget.release(p.budget)
            inflight.release()

    def _check_model(self, model_name: str) -> bool:
        """The first batch fixes the model of a new collection; a different one later fails the job."""
        with self._model_lock:
            if self.model_name is None:
                self.model_name = model_name
                return True
            if model_name and model_name != self.model_name:
                if not self.ml_down.is_set():
                    self.fatal = f"the ML service now serves {model_name!r} but this collection uses {self.model_name!r}"
                    self.log(self.fatal)
                    self.ml_down.set()
                return False
            return True

    # ------------------------------------------------------------ store

    def _store_worker(self) -> None:
        finished = False
        while not finished:
            batch: list[Any] = []
            deadline = time.monotonic() + STORE_WAIT_S
            while len(batch) < STORE_BATCH:
                try:
                    item = self.store_q.get(timeout=max(0.0, deadline - time.monotonic()) if batch else None)
                except queue.Empty:
                    break
                if item is _DONE:
                    finished = True
                    break
                batch.append(item)
            if batch:
                self._store_batch(batch)

    def _store_batch(self, batch: list[Any]) -> None:
        stored = [r for r in batch if isinstance(r, Stored)]
        failed = [r for r in batch if isinstance(r, Failed)]
        unchanged = [r for r in batch if isinstance(r, Unchanged)]
        gone = [r.ref for r in batch if isinstance(r, Gone)]
        try:
            self._write_points(stored)
        except ShoeboxError as exc:
            if self.shutdown.is_set():
                raise  # the store is closing under us: these files are redone when the job resumes
            failed += [Failed(r.ref, ErrorCode.VECTOR_DB, exc.message) for r in stored]
            stored = []
        # Copies of a content that was being embedded: their leader is now stored (or failed).
        followers: list[Stored] = []
        for leader in [*stored, *failed]:
            if leader.ref.sha is None:
                continue
            with self._dedupe_lock:
                copies = self._inflight_shas.pop(leader.ref.sha, [])
            for ref in copies:
                if isinstance(leader, Stored):
                    followers.append(Stored(ref, "cached", leader.vector, leader.meta, leader.model_name))
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
            self._detach_paths(moved)
        except ShoeboxError as exc:
            log.warning("job %s: could not detach changed paths: %s", self.job_id, exc.message)

        outcomes = [FileOutcome(r.ref.path, "unchanged") for r in unchanged]
        outcomes += [FileOutcome(r.ref.path, r.outcome) for r in stored]
        outcomes += [FileOutcome(r.ref.path, "failed", r.code.value, r.message) for r in failed]
        known = [(r.ref.path, r.ref.size, r.ref.mtime_ns, r.ref.sha) for r in stored if r.ref.sha]
        forget = [r.ref.path for r in failed if r.ref.old_sha] + [ref.path for ref in gone]
        self.catalog.record(self.job_id, self.collection, outcomes, known, forget)

    def _write_points(self, records: list[Stored]) -> None:
        if not records:
            return
        by_sha: dict[str, list[Stored]] = {}
        for r in records:
            assert r.ref.sha is not None
            by_sha.setdefault(r.ref.sha, []).append(r)
        existing = self.store.retrieve(self.collection, by_sha)
        new_points = []
        for sha, recs in by_sha.items():
            paths = [r.ref.path for r in recs]
            point = existing.get(sha)
            if point is not None:
                old_paths = list(point.payload.get("paths") or [])
                if not set(paths) <= set(old_paths):
                    self.store.set_payload(self.collection, sha, with_paths(point.payload, old_paths + paths))
                continue
            with_vector = next((r for r in recs if r.vector is not None), None)
            if with_vector is None:
                raise ShoeboxError(ErrorCode.VECTOR_DB, "point vanished from the collection during the job")
            first = min(recs, key=lambda r: r.ref.path)
            model = with_vector.model_name or self.model_name or ""
            payload = build_payload(
                sha, paths, first.ref.size, first.ref.mtime_ns / 1e9, with_vector.meta, model
            )
            new_points.append((sha, with_vector.vector, payload))
            if with_vector.outcome == "indexed":
                self.cache.put(sha, model, with_vector.vector, with_vector.meta)
        if new_points:
            self._ensure_collection(len(new_points[0][1]), new_points[0][2]["model_name"])
            self.store.upsert(self.collection, new_points)

    def _ensure_collection(self, dim: int, model_name: str) -> None:
        if self._collection_ready:
            return
        self.store.ensure_collection(self.collection, dim)
        rec = self.catalog.get_collection(self.collection)
        if rec is None or rec.model_name is None:
            self.catalog.set_collection_model(self.collection, model_name, dim)
        self._collection_ready = True

    def _detach_paths(self, refs: list[FileRef]) -> None:
        if not refs:
            return
        by_old: dict[str, set[str]] = {}
        for ref in refs:
            assert ref.old_sha is not None
            by_old.setdefault(ref.old_sha, set()).add(ref.path)
        for sha, point in self.store.retrieve(self.collection, by_old).items():
            remaining = [p for p in point.payload.get("paths") or [] if p not in by_old[sha]]
            if remaining:
                self.store.set_payload(self.collection, sha, with_paths(point.payload, remaining))
            else:
                self.store.delete(self.collection, [sha])


# ---------------------------------------------------------------- file helpers


def sha256_file(path: str) -> str:
    """SHA-256 streamed in chunks: never the whole file in memory (hashlib releases the GIL)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb", buffering=0) as f:
            while chunk := f.read(HASH_CHUNK):
                h.update(chunk)
    except OSError as exc:
        raise ShoeboxError(ErrorCode.FILE_READ, f"cannot read: {exc.strerror or exc}") from exc
    return h.hexdigest()


def read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ShoeboxError(ErrorCode.FILE_READ, f"cannot read: {exc.strerror or exc}") from exc
    if not data:
        raise ShoeboxError(ErrorCode.FILE_READ, "empty file (0 bytes)")
    return data


def rendition(image: Any, short_side: int) -> Any:
    """What the ML service needs: shortest side = its input size (it would resize to that anyway)."""
    from PIL import Image

    w, h = image.size
    scale = short_side / min(w, h)
    if scale < 1:
        image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BICUBIC)
    return image.convert("RGB")


def jpeg(image: Any, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _local_extensions() -> list[str]:
    from shoebox import imaging

    return sorted(imaging.IMAGE_EXTENSIONS | imaging.RAW_EXTENSIONS)
