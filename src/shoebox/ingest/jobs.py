"""Ingest jobs: validation, persistence, one thread per job, serialised per collection, resumed at start.

A job is a row in the catalog before it is anything else, so it survives any stop. Two jobs on
the same collection never run at once: the second waits (`pending`) for the first, because the
store stage merges `paths` by read-modify-write. At start-up, jobs a stopped service left
`pending` or `running` are started again; they skip the files they already finished, and point
ids come from content, so nothing is lost and nothing is stored twice.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

from shoebox.ingest.cache import EmbeddingCache
from shoebox.ingest.catalog import Catalog
from shoebox.ingest.config import IngestSettings
from shoebox.ingest.ml_client import MLClient
from shoebox.ingest.pipeline import IngestPipeline
from shoebox.ingest.scan import is_within
from shoebox.ingest.stages import SharedLimits, detach_paths
from shoebox.protocol import ErrorCode, Job, JobStatus, ShoeboxError
from shoebox.store import VectorStore

log = logging.getLogger(__name__)

COLLECTION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def validate_collection_name(name: str) -> str:
    if not COLLECTION_NAME.match(name or ""):
        raise ShoeboxError(
            ErrorCode.VALIDATION,
            f"invalid collection name {name!r}: 1-64 letters, digits, '_', '-', '.', starting with a letter or digit",
        )
    return name


def resolve_ingest_dir(directory: str, roots: list[Path]) -> str:
    """The real path of `directory` if it is inside an allowed root (links and `..` resolved first)."""
    if not directory or "\x00" in directory:
        raise ShoeboxError(ErrorCode.VALIDATION, "directory_path is required")
    real = os.path.realpath(os.path.expanduser(directory))
    allowed = [os.path.realpath(r) for r in roots]
    if not allowed or not is_within(real, allowed):
        raise ShoeboxError(
            ErrorCode.PATH_NOT_ALLOWED,
            f"{directory} is outside the allowed ingest roots (SHOEBOX_INGEST_ROOTS"
            + (f" = {', '.join(allowed)})" if allowed else " is not set)"),
        )
    if not os.path.isdir(real):
        raise ShoeboxError(ErrorCode.PATH_NOT_FOUND, f"no such folder: {directory}")
    return real


class JobRunner:
    def __init__(
        self,
        *,
        settings: IngestSettings,
        catalog: Catalog,
        store: VectorStore,
        cache: EmbeddingCache,
        ml: MLClient,
        thumbs_dir: Path,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.store = store
        self.cache = cache
        self.ml = ml
        self.thumbs_dir = thumbs_dir
        self.shutdown = threading.Event()
        self._cancels: dict[str, threading.Event] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._collection_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self.on_finished: Callable[[str, JobStatus], None] | None = None
        # Called after a job ends and after a collection is deleted or pruned (housekeeping).
        self.after_change: Callable[[], None] | None = None
        # Per process, not per job: one byte budget and one set of decode slots for all jobs,
        # and at most `max_concurrent_jobs` jobs running; the others wait `pending`.
        self.limits = SharedLimits.from_settings(settings)
        self._job_slots = threading.BoundedSemaphore(max(1, settings.max_concurrent_jobs))
        self._running: set[str] = set()

    # ------------------------------------------------------------ public

    def submit(self, directory: str, collection: str) -> Job:
        validate_collection_name(collection)
        real = resolve_ingest_dir(directory, self.settings.ingest_roots)
        rec = self.catalog.get_collection(collection)
        if rec is not None and rec.model_name:
            caps = self.ml.capabilities(timeout=3.0)
            if caps is not None and caps.model(rec.model_name) is None:
                hosted = caps.hosted_ids()
                raise ShoeboxError(
                    ErrorCode.MODEL_MISMATCH,
                    f"collection {collection!r} was built with model {rec.model_name!r} "
                    f"but the ML service hosts {', '.join(hosted)}: embeddings of different models "
                    "cannot be mixed; use another collection, host that model, or migrate the collection",
                    collection_model=rec.model_name,
                    ml_model=caps.model_id or caps.model_name,
                    ml_models=hosted,
                )
        if rec is None:
            self.catalog.add_collection(collection)
        job_id = uuid.uuid4().hex
        self.catalog.create_job(job_id, collection, real)
        self.catalog.log(job_id, f"queued: {real} → collection {collection!r}")
        self._start(job_id, collection, real)
        job = self.catalog.get_job(job_id)
        assert job is not None
        return job

    def cancel(self, job_id: str) -> Job:
        job = self.catalog.get_job(job_id, details=False)
        if job is None:
            raise ShoeboxError(ErrorCode.NOT_FOUND, f"no job {job_id}")
        if not job.status.finished:
            with self._lock:
                event = self._cancels.get(job_id)
            if event is not None:
                event.set()
                thread = self._threads.get(job_id)
                if thread is not None:
                    thread.join(timeout=10.0)  # cancel is prompt: answer with the final state when we can
            if self.catalog.job_status(job_id) in (JobStatus.PENDING, JobStatus.RUNNING) and event is None:
                self.catalog.set_job_status(job_id, JobStatus.CANCELLED)
        result = self.catalog.get_job(job_id)
        assert result is not None
        return result

    def prune(self, collection: str, directory: str | None = None) -> dict[str, object]:
        """Remove offline files (all of the collection's, or those below `directory`) from the index.

        The only way offline files leave it (see `stages.vanished_in_bulk`). Runs under the
        collection's job lock, so it never races an ingest of the same collection.
        """
        validate_collection_name(collection)
        rec = self.catalog.get_collection(collection)
        if rec is None:
            raise ShoeboxError(ErrorCode.NOT_FOUND, f"no collection {collection!r}")
        folder = None
        if directory:
            if "\x00" in directory or not os.path.isabs(directory):
                raise ShoeboxError(ErrorCode.VALIDATION, "directory_path must be an absolute path")
            # Only compared with catalog paths, never opened: an offline folder need not exist.
            folder = os.path.normpath(directory)
        lock = self._collection_lock(collection)
        if not lock.acquire(timeout=2.0):
            raise ShoeboxError(ErrorCode.CONFLICT, f"collection {collection!r} has a job in progress")
        try:
            rec = self.catalog.get_collection(collection) or rec  # a migration may have switched it
            offline = self.catalog.offline_files(collection, folder)
            # Points first, then the catalog: a crash in between leaves a prune that is simply redone.
            deleted = detach_paths(self.store, rec.store, offline)
            self.store.sync(rec.store)
            self.catalog.forget_files(collection, list(offline))
        finally:
            lock.release()
        if deleted:
            self.store.after_writes(rec.store)
        self._changed()
        log.info("pruned %d offline files from %s (%d points deleted)", len(offline), collection, deleted)
        return {"collection_name": collection, "pruned_files": len(offline), "deleted_points": deleted}

    def delete_collection(self, collection: str) -> None:
        """Delete a collection Shoebox registered, points and books, never one it did not create.

        Runs under the collection's job lock, and refuses while a job of it is queued or running,
        so no job can lose its collection under it (or re-create it half-way).
        """
        validate_collection_name(collection)
        if self.catalog.get_collection(collection) is None:
            raise ShoeboxError(ErrorCode.NOT_FOUND, f"no collection {collection!r}")
        lock = self._collection_lock(collection)
        if not lock.acquire(timeout=2.0):
            raise ShoeboxError(ErrorCode.CONFLICT, f"collection {collection!r} has a job in progress")
        try:
            running = [
                j for j in self.catalog.list_jobs() if j.collection_name == collection and not j.status.finished
            ]
            if running:
                raise ShoeboxError(
                    ErrorCode.CONFLICT, f"collection {collection!r} has a job in progress ({running[0].job_id})"
                )
            migration = self.catalog.latest_migration(collection)
            if migration is not None and migration.status in ("queued", "running"):
                raise ShoeboxError(
                    ErrorCode.CONFLICT,
                    f"collection {collection!r} is migrating to {migration.model_name}: cancel the migration first",
                )
            rec = self.catalog.get_collection(collection)
            # Every store collection of it: the one answering and those other models filled.
            stored = {rec.store if rec else collection} | {g.store_name for g in self.catalog.generations(collection)}
            for store_name in sorted(stored):
                self.store.delete_collection(store_name)
            self.catalog.delete_collection(collection)
        finally:
            lock.release()
        self._changed()

    def resume_unfinished(self) -> int:
        """Start again the jobs a previous run of the service left pending or running."""
        jobs = self.catalog.unfinished_jobs()
        for job_id, collection, directory in jobs:
            self.catalog.log(job_id, "service restarted: resuming")
            self._start(job_id, collection, directory)
        return len(jobs)

    def stats(self) -> dict[str, int]:
        """What /health shows of the ingest's process-wide limits."""
        with self._lock:
            running, known = len(self._running), len(self._threads)
        budget = self.limits.budget
        return {
            "running_jobs": running,
            "queued_jobs": known - running,
            "max_concurrent_jobs": self.settings.max_concurrent_jobs,
            "inflight_bytes": budget.used,
            "inflight_bytes_peak": budget.peak,
            "inflight_bytes_limit": budget.limit,
        }

    def busy(self) -> bool:
        """Whether any job is queued or running (housekeeping leaves thumbnails alone then)."""
        with self._lock:
            return bool(self._threads)

    def wait(self, job_id: str, timeout: float | None = None) -> None:
        thread = self._threads.get(job_id)
        if thread is not None:
            thread.join(timeout)

    def stop_all(self, timeout: float = 10.0) -> None:
        """Service shutdown: stop every job WITHOUT finishing it, so the next start resumes it."""
        self.shutdown.set()
        with self._lock:
            threads = list(self._threads.values())
        for t in threads:
            t.join(timeout)

    # ------------------------------------------------------------ internals

    def _start(self, job_id: str, collection: str, directory: str) -> None:
        cancel = threading.Event()
        thread = threading.Thread(
            target=self._run,
            args=(job_id, collection, directory, cancel),
            name=f"job-{job_id[:8]}",
            daemon=True,
        )
        with self._lock:
            self._cancels[job_id] = cancel
            self._threads[job_id] = thread
        self._collection_lock(collection)
        thread.start()

    def _finish(self, job_id: str, status: JobStatus) -> None:
        try:
            self.catalog.set_job_status(job_id, status)
        except Exception:  # the catalog itself is failing: the job must still release its collection
            log.exception("job %s: cannot record its end (%s)", job_id, status.value)
            try:
                self.catalog.set_job_status(job_id, JobStatus.FAILED)
            except Exception:
                log.exception("job %s: cannot record its end at all", job_id)
                return
        if self.on_finished:
            self.on_finished(job_id, status)

    def _collection_lock(self, collection: str) -> threading.Lock:
        with self._lock:
            return self._collection_locks.setdefault(collection, threading.Lock())

    # A migration's switch holds the same lock: no job of the collection runs while it switches.
    collection_lock = _collection_lock

    def _wait_for(self, lock: threading.Lock | threading.Semaphore, job_id: str, cancel: threading.Event) -> bool:
        """Take `lock`; False when the job was cancelled (recorded) or the service stops first."""
        while not lock.acquire(timeout=0.2):
            if cancel.is_set():
                self.catalog.set_job_status(job_id, JobStatus.CANCELLED)
                self.catalog.log(job_id, "cancelled before it started")
                return False
            if self.shutdown.is_set():
                return False
        return True

    def _run(self, job_id: str, collection: str, directory: str, cancel: threading.Event) -> None:
        lock = self._collection_lock(collection)
        try:
            # Serialise jobs of one collection: the store merges paths by read-modify-write.
            if not self._wait_for(lock, job_id, cancel):
                return
            try:
                # Then a slot among the process's running jobs (a job waiting for its collection holds none).
                if not self._wait_for(self._job_slots, job_id, cancel):
                    return
                try:
                    with self._lock:
                        self._running.add(job_id)
                    self._run_pipeline(job_id, collection, directory, cancel)
                finally:
                    with self._lock:
                        self._running.discard(job_id)
                    self._job_slots.release()
            finally:
                lock.release()
        finally:
            with self._lock:
                self._cancels.pop(job_id, None)
                self._threads.pop(job_id, None)
            if not self.shutdown.is_set():
                self._changed()

    def _changed(self) -> None:
        if self.after_change is not None:
            try:
                self.after_change()
            except Exception:
                log.exception("after-change hook failed")

    def _run_pipeline(self, job_id: str, collection: str, directory: str, cancel: threading.Event) -> None:
        if cancel.is_set():
            self.catalog.set_job_status(job_id, JobStatus.CANCELLED)
            return
        pipeline = IngestPipeline(
            settings=self.settings,
            catalog=self.catalog,
            store=self.store,
            cache=self.cache,
            ml=self.ml,
            thumbs_dir=self.thumbs_dir,
            job_id=job_id,
            collection=collection,
            directory=directory,
            cancel=cancel,
            shutdown=self.shutdown,
            limits=self.limits,
        )
        try:
            self.catalog.set_job_status(job_id, JobStatus.RUNNING)
            status = pipeline.run()
        except Exception as exc:
            log.exception("job %s crashed", job_id)
            status = JobStatus.FAILED
            with contextlib.suppress(Exception):
                self.catalog.log(job_id, f"failed: internal error: {type(exc).__name__}: {exc}")
        if status is not None:
            self._finish(job_id, status)
            # The store may now build an index, in the background (searches go on).
            with contextlib.suppress(Exception):
                self.store.after_writes(pipeline.ctx.store_collection)
