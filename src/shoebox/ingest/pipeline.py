"""One ingest job, wired top to bottom: handshake, stages joined by bounded pipes, then the books.

    scan ─► read+hash (N) ─► dedupe ─► prepare (N) ─► embed (batches, K in flight) ─► store

The stages live in `stages.py`. This module starts them, joins them in order, and closes the
job's books: whatever the scan handed on and the store stage did not record — because a stage
crashed, the catalog failed or the ML service vanished — is recorded as failed with a code, so
a job never ends `completed` with `processed_files != total_files`, and never hangs.

Outcome rules (API.md): `indexed` = embedded by the ML service in this job; `cached` = vector
reused without an ML call (from the embedding cache, from a point already in the collection
under another path, or from another path with the same bytes in this same job); `unchanged` =
same path, size and mtime as the catalog (no read at all), or same path touched but same bytes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from shoebox.ingest import stages
from shoebox.ingest.cache import EmbeddingCache
from shoebox.ingest.catalog import Catalog, FileOutcome
from shoebox.ingest.config import IngestSettings
from shoebox.ingest.ml_client import MLClient
from shoebox.ingest.scan import FolderScanner
from shoebox.ingest.stages import Deduper, JobContext, Pipe, SharedLimits, StoreStage
from shoebox.protocol import ErrorCode, JobStatus, Outcome, same_model
from shoebox.store import VectorStore

log = logging.getLogger(__name__)

# Outcomes of files left unfinished by a crash are written in chunks of this many.
FINALIZE_CHUNK = 500


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
        limits: SharedLimits | None = None,
    ) -> None:
        self.ctx = JobContext(
            settings=settings,
            catalog=catalog,
            store=store,
            cache=cache,
            ml=ml,
            thumbs_dir=thumbs_dir,
            job_id=job_id,
            collection=collection,
            directory=directory,
            cancel=cancel,
            shutdown=shutdown,
            limits=limits,
        )
        rec = catalog.get_collection(collection)
        self.ctx.store_collection = rec.store if rec else collection

    def run(self) -> JobStatus | None:
        """Run to the end; returns the final status, or None when the service is shutting down."""
        try:
            return self._run()
        finally:
            # Bytes of files an abort dropped from the queues go back to the process's budget.
            self.ctx.budget.release_all()

    def _run(self) -> JobStatus | None:
        ctx = self.ctx
        extensions = self._handshake()
        if extensions is None:
            return JobStatus.FAILED
        settings = ctx.settings
        scanner = FolderScanner(
            extensions,
            settings.ingest_roots or [Path(ctx.directory)],
            workers=settings.scan_workers,
            on_refused=lambda path, reason: ctx.log(f"skipped {path}: {reason}"),
        )
        qsize = max(8, settings.queue_size)
        to_read, to_dedupe, to_prepare, to_embed = (Pipe(qsize, ctx.stopping) for _ in range(4))
        to_store = Pipe(qsize * 4, ctx.stopping)
        deduper = Deduper(ctx)
        storer = StoreStage(ctx, deduper)
        n_read, n_prep = max(1, settings.hash_workers), max(1, settings.prepare_workers)

        scan = self._spawn("scan", stages.scan_stage, ctx, scanner, to_read, to_store)
        readers = [
            self._spawn("read", stages.read_stage, ctx, to_read, to_dedupe, to_store) for _ in range(n_read)
        ]
        dedupe = self._spawn("dedupe", deduper.run, to_dedupe, to_prepare, to_store)
        preparers = [
            self._spawn("prepare", stages.prepare_stage, ctx, to_prepare, to_embed, to_store)
            for _ in range(n_prep)
        ]
        embed = self._spawn("embed", stages.embed_stage, ctx, to_embed, to_store)
        store = self._spawn("store", storer.run, to_store)

        # Join in order; each stage's end tells the next one (a sentinel per consumer thread).
        self._join([scan], to_read, n_read)
        self._join(readers, to_dedupe, 1)
        self._join([dedupe], to_prepare, n_prep)
        self._join(preparers, to_embed, 1)
        self._join([embed], to_store, 1)
        store.join()
        return self._close_books()

    # ------------------------------------------------------------ wiring

    def _spawn(self, name: str, body: Callable[..., None], *args: object) -> threading.Thread:
        ctx = self.ctx
        t = threading.Thread(
            target=stages.run_stage, args=(ctx, name, lambda: body(*args)), name=f"{name}-{ctx.job_id[:8]}"
        )
        t.daemon = True
        t.start()
        return t

    @staticmethod
    def _join(threads: list[threading.Thread], downstream: Pipe, consumers: int) -> None:
        for t in threads:
            t.join()
        for _ in range(consumers):
            downstream.put(stages.DONE)

    def _handshake(self) -> list[str] | None:
        """Model, input size and formats from the ML service; None when the job must not run."""
        ctx = self.ctx
        rec = ctx.catalog.get_collection(ctx.collection)
        if rec is not None:
            ctx.model_name, ctx.embedding_dim = rec.model_name, rec.embedding_dim
        caps = ctx.ml.capabilities(timeout=5.0)
        if caps is None:
            ctx.log(
                "ML service not reachable at start; unchanged files are still checked, new ones will wait"
            )
            from shoebox import imaging

            return sorted(imaging.IMAGE_EXTENSIONS | imaging.RAW_EXTENSIONS)
        info = caps.model(rec.model_name if rec and rec.model_name else None)
        if info is None:
            hosted = ", ".join(caps.hosted_ids())
            ctx.log(
                f"refused: collection {ctx.collection!r} was built with {rec.model_name!r} "
                f"and the ML service hosts {hosted}; never mixing embedding spaces"
            )
            return None
        ctx.input_size = info.input_size
        ctx.model_name = info.model_id
        ctx.embedding_dim = ctx.embedding_dim or info.embedding_dim
        legacy = rec is not None and rec.model_name and "@" not in rec.model_name
        if legacy and same_model(rec.model_name, info.model_id) and ctx.embedding_dim == info.embedding_dim:
            # Recorded by bare name (an earlier version): the hosted model of that name is its identity.
            ctx.catalog.set_collection_model(ctx.collection, info.model_id, info.embedding_dim)
        return list(caps.image_formats) + list(caps.raw_formats)

    # ------------------------------------------------------------ the books

    def _close_books(self) -> JobStatus | None:
        """Account for every file the scan found, then decide the job's status."""
        ctx = self.ctx
        if ctx.shutdown.is_set() and not ctx.cancel.is_set() and not ctx.fatal:
            return None  # unfinished files are resumed when the service starts again
        if ctx.cancel.is_set() and not ctx.fatal:
            ctx.log("cancelled")
            return JobStatus.CANCELLED
        left = ctx.tracker.outstanding()
        if left:
            if ctx.fatal:
                code, message = ctx.fatal_code, ctx.fatal
            else:  # a stage lost a file without a word: a bug, but the books must still balance
                code, message = ErrorCode.INTERNAL, "the pipeline lost track of this file"
                log.error("job %s: %d files left without an outcome", ctx.job_id, len(left))
            self._record_failed(left, code, message)
        ctx.catalog.set_total(ctx.job_id, ctx.tracker.scanned, scan_done=True)
        job = ctx.catalog.get_job(ctx.job_id, details=False)
        assert job is not None
        summary = (
            f"{job.total_files} files: {job.indexed} indexed, {job.cached} cached, "
            f"{job.unchanged} unchanged, {job.failed} failed"
            + (f", {job.offline} offline" if job.offline else "")
        )
        if ctx.fatal or ctx.ml_down.is_set():
            ctx.log(f"failed: {ctx.fatal or 'ML service unavailable'}; {summary}")
            return JobStatus.FAILED
        if job.processed_files != job.total_files:
            ctx.log(f"failed: {job.processed_files} of {job.total_files} files accounted for; {summary}")
            return JobStatus.FAILED
        ctx.log(f"done: {summary}")
        return JobStatus.COMPLETED_WITH_ERRORS if job.failed else JobStatus.COMPLETED

    def _record_failed(self, refs: list[stages.FileRef], code: ErrorCode, message: str) -> None:
        ctx = self.ctx
        for i in range(0, len(refs), FINALIZE_CHUNK):
            chunk = refs[i : i + FINALIZE_CHUNK]
            # Their known-files rows stay as they were: the next scan sees the change and retries.
            outcomes = [FileOutcome(r.path, Outcome.FAILED, code.value, message) for r in chunk]
            ctx.catalog.record(ctx.job_id, ctx.collection, outcomes)
            ctx.tracker.close(r.path for r in chunk)
