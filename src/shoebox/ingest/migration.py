"""Switching a collection to another model without a minute of downtime.

    POST /collections/{name}/migrate {"model": M}
      1. shadow: a store collection `<name>~<digest of M>` (a "building" generation), filled in
         the background from the catalog's known files: each distinct content read once, checked
         against its hash, decoded once and embedded by M. A file that is gone (offline, moved)
         is embedded from its stored thumbnail instead. Progress is a row of the catalog, and
         what is done is what the shadow holds, so a restart (kill -9 included) resumes.
      2. the old model keeps answering every search meanwhile: nothing of the collection changes.
      3. catch-up and switch, under the collection's job lock (no ingest job runs then; new ones
         wait): the contents ingested during the migration are embedded, the points deleted
         meanwhile are deleted, the paths are copied over, and then one catalog transaction makes
         the shadow the collection's store collection. A search reads the store collection and the
         model from one catalog row, so it answers from the old model or the new one, never a mix.
      4. the store collection that answered before is kept as a "retired" generation: migrating
         back to its model is a rollback that only catches up what changed since. DELETE
         /collections/{name}/models/{model} drops it.

Priority, searches first: a migration sends one small batch at a time (`migration_batch`), each
only once searches have been quiet for a moment (`activity.SearchActivity`, bounded), from decoder
threads at a low CPU priority; and the ML service's lanes (one per model) take turns on a device
through one gate that starts no image batch while any lane has text queries waiting.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from shoebox.ingest.activity import SearchActivity
from shoebox.ingest.catalog import Catalog, Generation, MigrationRecord, utc_now
from shoebox.ingest.config import IngestSettings
from shoebox.ingest.ml_client import BatchFile, MLClient
from shoebox.protocol import ErrorCode, ShoeboxError, same_model
from shoebox.store import Record, VectorStore, point_id

log = logging.getLogger(__name__)

# Contents looked up in the shadow per store call.
_LOOKUP_PAGE = 256
# Decoders of one migration: enough to keep the ML service busy on a small machine, few enough
# to leave the ingest (and searches) their share of the CPU.
_DECODERS = 2
# Nice value of the migration's decoder threads (0 normal, 19 lowest).
_NICE = 10
# Before each batch, wait for searches to have been quiet this long, but never longer than that.
_QUIET_S = 0.2
_MAX_YIELD_S = 2.0
_FINISHED = ("completed", "failed", "cancelled")


@dataclass(frozen=True)
class Source:
    """What a content is embedded from: a known path holding it, else its thumbnail."""

    sha: str
    paths: list[str]


def shadow_name(collection: str, model_id: str) -> str:
    """The store collection of `collection` embedded by `model_id` (never a collection's own name:
    collection names cannot hold '~')."""
    return f"{collection}~{hashlib.sha256(model_id.encode()).hexdigest()[:10]}"


class Migrations:
    """Starts, runs (one thread each), resumes and cancels model migrations."""

    def __init__(
        self,
        settings: IngestSettings,
        catalog: Catalog,
        store: VectorStore,
        ml: MLClient,
        thumbs_dir: Path,
        collection_lock: Callable[[str], threading.Lock],
        activity: SearchActivity | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.store = store
        self.ml = ml
        self.thumbs_dir = thumbs_dir
        self._collection_lock = collection_lock
        self.activity = activity or SearchActivity()
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}
        self._cancels: dict[str, threading.Event] = {}
        self.shutdown = threading.Event()

    # ------------------------------------------------------------ public

    def start(self, collection: str, model: str) -> MigrationRecord:
        rec = self.catalog.get_collection(collection)
        if rec is None:
            raise ShoeboxError(ErrorCode.NOT_FOUND, f"no collection {collection!r}")
        if self.ml.capabilities(timeout=5.0) is None:
            raise ShoeboxError(ErrorCode.ML_UNAVAILABLE, "no ML service answers: a migration needs one")
        info = self.ml.model_info(model)
        if info is None:
            raise self.ml.model_not_hosted(ErrorCode.MODEL_NOT_FOUND, f"no reachable ML service hosts model {model!r}")
        if rec.model_name and "@" in rec.model_name and same_model(rec.model_name, info.model_id):
            raise ShoeboxError(ErrorCode.CONFLICT, f"collection {collection!r} already uses {info.model_id}")
        with self._lock:
            running = self.catalog.latest_migration(collection)
            if running is not None and running.status not in _FINISHED:
                if running.model_name == info.model_id:
                    self._spawn(running)  # already under way (or left by a restart): carry on
                    return self.catalog.get_migration(running.migration_id) or running
                raise ShoeboxError(
                    ErrorCode.CONFLICT,
                    f"collection {collection!r} is migrating to {running.model_name}: cancel that first",
                )
            retired = next(
                (g for g in self.catalog.generations(collection) if g.model_name == info.model_id), None
            )
            m = MigrationRecord(
                migration_id=os.urandom(8).hex(),
                collection=collection,
                model_name=info.model_id,
                store_name=retired.store_name if retired else shadow_name(collection, info.model_id),
                embedding_dim=info.embedding_dim,
                status="queued",
                total=0,
                done=0,
                from_files=0,
                from_thumbnails=0,
                failed=0,
                message=("rollback: catching up the kept collection" if retired else None),
                previous_model=rec.model_name,
                created_at=utc_now(),
                started_at=None,
                finished_at=None,
            )
            self.catalog.create_migration(m)
            self._spawn(m)
        return m

    def cancel(self, collection: str) -> MigrationRecord:
        m = self.catalog.latest_migration(collection)
        if m is None or m.status in _FINISHED:
            raise ShoeboxError(ErrorCode.NOT_FOUND, f"collection {collection!r} has no migration in progress")
        with self._lock:
            event = self._cancels.get(m.migration_id)
            thread = self._threads.get(m.migration_id)
        if event is not None:
            event.set()
        if thread is not None:
            thread.join(30)
        else:  # not running in this process: end it here
            self._end_cancelled(m)
        return self.catalog.get_migration(m.migration_id) or m

    def drop_generation(self, collection: str, model: str) -> dict[str, Any]:
        """Delete a kept generation (the collection's files embedded by `model`, not answering)."""
        rec = self.catalog.get_collection(collection)
        if rec is None:
            raise ShoeboxError(ErrorCode.NOT_FOUND, f"no collection {collection!r}")
        # By id, or by bare name: `same_model`, as a collection's model is matched everywhere.
        found = [g for g in self.catalog.generations(collection) if same_model(model, g.model_name)]
        if not found:
            raise ShoeboxError(
                ErrorCode.NOT_FOUND, f"collection {collection!r} keeps no embeddings of {model!r}"
            )
        g = found[0]
        if g.state != "retired":
            raise ShoeboxError(
                ErrorCode.CONFLICT, f"{g.model_name} is being built by a migration: cancel it first"
            )
        lock = self._collection_lock(collection)
        if not lock.acquire(timeout=5.0):
            raise ShoeboxError(ErrorCode.CONFLICT, f"collection {collection!r} has a job in progress")
        try:
            self.store.delete_collection(g.store_name)
            self.catalog.drop_generation(collection, g.store_name)
        finally:
            lock.release()
        return {"collection_name": collection, "dropped": g.model_name}

    def resume_unfinished(self) -> int:
        unfinished = self.catalog.unfinished_migrations()
        for m in unfinished:
            log.info("resuming the migration of %s to %s", m.collection, m.model_name)
            self._spawn(m)
        return len(unfinished)

    def stop_all(self, timeout: float = 10.0) -> None:
        """Service shutdown: stop WITHOUT finishing, so the next start resumes."""
        self.shutdown.set()
        with self._lock:
            threads = list(self._threads.values())
        for t in threads:
            t.join(timeout)

    def wait(self, collection: str, timeout: float | None = None) -> MigrationRecord | None:
        m = self.catalog.latest_migration(collection)
        if m is not None:
            with self._lock:
                thread = self._threads.get(m.migration_id)
            if thread is not None:
                thread.join(timeout)
        return self.catalog.latest_migration(collection)

    # ------------------------------------------------------------ the worker

    def _spawn(self, m: MigrationRecord) -> None:
        if m.migration_id in self._threads:
            return
        cancel = threading.Event()
        thread = threading.Thread(
            target=self._run, args=(m, cancel), name=f"migrate-{m.collection[:16]}", daemon=True
        )
        self._threads[m.migration_id] = thread
        self._cancels[m.migration_id] = cancel
        thread.start()

    def _run(self, m: MigrationRecord, cancel: threading.Event) -> None:
        stop = lambda: cancel.is_set() or self.shutdown.is_set()  # noqa: E731
        try:
            self.catalog.update_migration(
                m.migration_id, status="running", started_at=m.started_at or utc_now()
            )
            _Worker(self, m, stop).run()
            if cancel.is_set():
                self._end_cancelled(m)
        except ShoeboxError as exc:
            if self.shutdown.is_set() and not cancel.is_set():
                return  # resumed at the next start
            if cancel.is_set():
                self._end_cancelled(m)
                return
            log.warning("migration of %s to %s failed: %s", m.collection, m.model_name, exc.message)
            self.catalog.update_migration(
                m.migration_id,
                status="failed",
                message=f"{exc.code.value}: {exc.message} (start it again to resume)",
                finished_at=utc_now(),
            )
        except Exception as exc:
            log.exception("migration of %s crashed", m.collection)
            self.catalog.update_migration(
                m.migration_id,
                status="failed",
                message=f"{ErrorCode.INTERNAL.value}: {type(exc).__name__}: {exc} (start it again to resume)",
                finished_at=utc_now(),
            )
        finally:
            with self._lock:
                self._threads.pop(m.migration_id, None)
                self._cancels.pop(m.migration_id, None)

    def _end_cancelled(self, m: MigrationRecord) -> None:
        """A cancelled migration leaves nothing behind but the generation it may have reused."""
        kept = {g.store_name: g for g in self.catalog.generations(m.collection)}
        g = kept.get(m.store_name)
        if g is not None and g.state == "building":
            self.store.delete_collection(m.store_name)
            self.catalog.drop_generation(m.collection, m.store_name)
        self.catalog.update_migration(
            m.migration_id,
            status="cancelled",
            message="cancelled: the collection keeps its model",
            finished_at=utc_now(),
        )


class _Worker:
    """One migration, start to switch."""

    def __init__(self, owner: Migrations, m: MigrationRecord, stop: Callable[[], bool]) -> None:
        self.owner = owner
        self.m = m
        self.stop = stop
        self.catalog = owner.catalog
        self.store = owner.store
        self.ml = owner.ml
        self.counts = {"from_files": m.from_files, "from_thumbnails": m.from_thumbnails, "failed": 0}
        info = self.ml.model_info(m.model_name)
        self.input_size = info.input_size if info else 224

    def run(self) -> None:
        m = self.m
        kept = {g.store_name: g for g in self.catalog.generations(m.collection)}
        if m.store_name not in kept or kept[m.store_name].state != "building":
            self.catalog.add_generation(
                Generation(m.collection, m.store_name, m.model_name, m.embedding_dim, "building", utc_now())
            )
        self.store.ensure_collection(m.store_name, m.embedding_dim)
        # Fill while the collection goes on as before; each pass takes what the last one missed
        # (contents ingested meanwhile), until a pass finds nothing new.
        while not self.stop():
            if self._fill() == 0:
                break
        if self.stop():
            return
        lock = self.owner._collection_lock(m.collection)
        while not lock.acquire(timeout=0.5):
            if self.stop():
                return
        try:
            self._fill()
            if self.stop():
                return
            self._switch()
        finally:
            lock.release()

    # ------------------------------------------------------------ filling

    def _contents(self) -> list[Source]:
        return [Source(sha, paths) for sha, paths in self.catalog.contents(self.m.collection)]

    def _fill(self) -> int:
        """One pass over the collection's contents: embed those the shadow lacks. Returns how many."""
        m = self.m
        contents = self._contents()
        missing: list[Source] = []
        for start in range(0, len(contents), _LOOKUP_PAGE):
            page = contents[start : start + _LOOKUP_PAGE]
            have = {r.id for r in self.store.get(m.store_name, [point_id(s.sha) for s in page])}
            missing += [s for s in page if point_id(s.sha) not in have]
        self.counts["failed"] = 0
        self.catalog.update_migration(m.migration_id, total=len(contents), done=len(contents) - len(missing))
        done = len(contents) - len(missing)
        # Small batches: a text query waits for the batch on the device to end (the ML service's
        # device gate), so the batch size bounds what a migration adds to a search's latency.
        size = max(1, min(self.owner.settings.migration_batch, self.ml.batch_size(m.model_name)))
        with ThreadPoolExecutor(_DECODERS, thread_name_prefix="migrate-decode", initializer=_background) as pool:
            for batch in _chunks(missing, size):
                # Searches first: the next batch waits for a quiet moment (bounded, so a steady
                # search load slows a migration down without stopping it).
                self.owner.activity.wait_quiet(_QUIET_S, _MAX_YIELD_S, self.stop)
                if self.stop():
                    break
                done += self._embed(batch, pool)
                self.catalog.update_migration(m.migration_id, done=done, **self.counts)
        return len(missing)

    def _embed(self, batch: list[Source], pool: ThreadPoolExecutor) -> int:
        m = self.m
        active = self.catalog.get_collection(m.collection)
        payloads = {
            r.id: r.payload
            for r in self.store.get(
                active.store if active else m.collection, [point_id(s.sha) for s in batch]
            )
        }
        prepared = list(pool.map(self._prepare, batch, [payloads.get(point_id(s.sha), {}) for s in batch]))
        files = [p for p in prepared if p is not None]
        self.counts["failed"] += len(prepared) - len(files)
        if not files:
            return 0
        items, answered_by = self.ml.embed_batch(files, should_stop=self.stop, model=m.model_name)
        if not same_model(m.model_name, answered_by):
            raise ShoeboxError(
                ErrorCode.MODEL_MISMATCH, f"the ML service answered with {answered_by}, not {m.model_name}"
            )
        records = []
        for f, item in zip(files, items, strict=True):
            if item.error is not None or not item.embedding:
                self.counts["failed"] += 1
                log.warning("migration of %s: %s failed: %s", m.collection, f.filename, item.error)
                continue
            pid = point_id(f.unique_id)
            payload = {**payloads.get(pid, {}), "model_name": m.model_name}
            records.append(Record(id=pid, vector=list(item.embedding), payload=payload))
        if records:
            self.store.write(m.store_name, records)
        return len(records)

    def _prepare(self, source: Source, payload: dict[str, Any]) -> BatchFile | None:
        """The content's bytes as the ML service takes them: a rendition of the first known path
        that still holds this content (read once, hash checked), else the stored thumbnail."""
        from shoebox import imaging
        from shoebox.ingest.stages import read_file, rendition

        # Only inside the allowed roots, never through a link swapped in since the ingest.
        roots = [os.path.realpath(r) for r in self.owner.settings.ingest_roots] or None
        for path in source.paths:
            try:
                data = read_file(path, roots)
            except ShoeboxError:
                continue
            if hashlib.sha256(data).hexdigest() != source.sha:
                continue  # rewritten since: the next ingest of its folder takes the new content
            name = os.path.basename(path)
            try:
                decoded = imaging.decode_for_model(
                    data, name, min_side=self.input_size, max_pixels=self.owner.settings.max_image_pixels
                )
                _, jpeg = rendition(decoded.image, self.input_size)
            except Exception as exc:  # noqa: BLE001 - a file the decoder refuses now: try the thumbnail
                log.warning("migration: cannot decode %s: %s", path, exc)
                break
            self.counts["from_files"] += 1
            return BatchFile(source.sha, os.path.splitext(name)[0] + ".jpg", jpeg)
        thumbnail = payload.get("thumbnail")
        if thumbnail:
            try:
                data = (self.owner.thumbs_dir / thumbnail).read_bytes()
            except OSError:
                data = b""
            if data:
                self.counts["from_thumbnails"] += 1
                return BatchFile(source.sha, "thumbnail.jpg", data)
        log.warning(
            "migration of %s: no readable file nor thumbnail for content %s", self.m.collection, source.sha
        )
        return None

    # ------------------------------------------------------------ the switch

    def _switch(self) -> None:
        m = self.m
        active = self.catalog.get_collection(m.collection)
        if active is None:
            raise ShoeboxError(ErrorCode.NOT_FOUND, f"collection {m.collection!r} was deleted")
        wanted = {point_id(s.sha) for s in self._contents()}
        old_store = active.store
        if self.counts["failed"]:
            raise ShoeboxError(
                ErrorCode.FILE_READ,
                f"{self.counts['failed']} photo(s) could not be embedded by {m.model_name} (no readable file "
                "and no thumbnail): the collection keeps its model; prune or re-ingest them, then migrate again",
            )
        # Points deleted meanwhile go; the paths (and other fields) the collection now has come over.
        extra: list[str] = []
        for page in _pages(self.store, m.store_name):
            extra += [r.id for r in page if r.id not in wanted]
        if extra:
            self.store.delete_ids(m.store_name, extra)
        if self.store.collection_exists(old_store):
            for page in _pages(self.store, old_store, payload=True):
                ids = [r.id for r in page if r.id in wanted]
                theirs = {r.id: r.payload for r in self.store.get(m.store_name, ids)}
                for r in page:
                    mine = {**r.payload, "model_name": m.model_name}
                    if r.id in theirs and theirs[r.id] != mine:
                        self.store.set_payload_by_id(m.store_name, r.id, mine)
        self.store.sync(m.store_name)
        count = self.store.count(m.store_name)
        if count != len(wanted):
            raise ShoeboxError(
                ErrorCode.VECTOR_DB,
                f"the new embeddings hold {count} photos for {len(wanted)} contents: not switching",
            )
        self.catalog.switch_generation(m.collection, m.store_name, m.model_name, m.embedding_dim)
        self.catalog.update_migration(
            m.migration_id,
            status="completed",
            total=len(wanted),
            done=len(wanted),
            message=f"switched: {m.collection!r} answers with {m.model_name}; {m.previous_model} kept for a rollback",
            finished_at=utc_now(),
        )
        log.info("collection %s now answers with %s (was %s)", m.collection, m.model_name, m.previous_model)
        try:
            self.store.after_writes(m.store_name)
        except Exception:  # an index is an optimisation: the switch stands
            log.exception("index build after the migration of %s", m.collection)


def _background() -> None:
    """Lower this thread's CPU priority (Linux: a thread is a task with its own nice value): the
    migration's decodes then take what searches and ingests leave of the cores."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), _NICE)
    except (AttributeError, OSError):  # another OS, or not allowed: full priority, still correct
        pass


def _chunks(items: list[Source], size: int) -> Iterator[list[Source]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _pages(store: VectorStore, collection: str, payload: bool = False) -> Iterator[list[Record]]:
    """Every point without its vector, a page at a time."""
    start: str | None = None
    while True:
        records, start = store.scroll(collection, limit=512, start=start, payload=payload, with_vectors=False)
        if records:
            yield records
        if start is None:
            return


def migration_status(m: MigrationRecord) -> dict[str, Any]:
    """The answer of GET /collections/{name}/migrate, shaped like a job's."""
    elapsed = None
    if m.started_at:
        end = datetime.fromisoformat(m.finished_at) if m.finished_at else None
        start = datetime.fromisoformat(m.started_at)
        elapsed = ((end or datetime.now(start.tzinfo)) - start).total_seconds()
    return {
        "migration_id": m.migration_id,
        "collection_name": m.collection,
        "model": m.model_name,
        "previous_model": m.previous_model,
        "status": m.status,
        "total": m.total,
        "done": m.done,
        "progress": round(m.done / m.total, 4) if m.total else (1.0 if m.status == "completed" else 0.0),
        "from_files": m.from_files,
        "from_thumbnails": m.from_thumbnails,
        "failed": m.failed,
        "message": m.message,
        "created_at": m.created_at,
        "started_at": m.started_at,
        "finished_at": m.finished_at,
        "elapsed_s": round(elapsed, 1) if elapsed is not None else None,
    }
