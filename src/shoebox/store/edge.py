"""The embedded backend: Qdrant Edge, the Qdrant engine itself running in this process.

One Edge shard per collection, under `<data_dir>/edge/<name>/`:

    CURRENT      the name of the live shard directory ("v3"), replaced atomically
    v3/          the live shard (segments, WAL, config)
    v4/          an index build in progress, or a leftover of one (removed at open)

What the bindings do, measured here (see tests/store/test_edge_bindings.py, which keeps checking):
- `query`, `query_batch`, `count`, `scroll`, `retrieve` and `update` are safe to call from
  several threads at once, so search requests and the ingest store stage share a shard without
  a Python lock around reads. But (qdrant-edge-py 0.9.0) they HOLD the GIL while the engine
  works (`retrieve` only part of the time): a search stops every other Python thread of the
  process for its duration, a few ms on an unindexed collection of a few thousand points, tens
  of ms at 20,000 with a filter. Correct, not parallel.
- `optimize()` (the HNSW build) holds the GIL from start to end: minutes at 100,000 points,
  during which no other Python thread of the process runs. So it never runs in the service:
  a build copies the flushed shard, a child process optimises the copy at low priority while
  the live shard keeps answering (exactly: brute force on unindexed segments), then the writes
  made meanwhile are replayed onto the copy and it is swapped in between two requests.
- A second process opening the same shard fails on the WAL's lock ("WouldBlock"); the data
  dir lock (`shoebox.ingest.context`) turns that into a clear error before it gets here.
- `MatchValue(True)` is read as the integer 1 and matches no boolean payload, so booleans are
  passed as `numpy.bool_`, which the bindings read as booleans.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from shoebox.protocol import ErrorCode, ShoeboxError
from shoebox.store.base import (
    PAYLOAD_INDEXES,
    GeoBox,
    IndexStatus,
    MatchAny,
    MoreValuesThan,
    Range,
    Record,
    VectorStore,
    Where,
    check_collection_name,
    vector_db_error,
)

log = logging.getLogger(__name__)

_SCHEMA = {
    "keyword": qe.PayloadSchemaType.Keyword,
    "float": qe.PayloadSchemaType.Float,
    "bool": qe.PayloadSchemaType.Bool,
    "geo": qe.PayloadSchemaType.Geo,
}
_CURRENT = "CURRENT"


@dataclass(frozen=True)
class IndexParams:
    """HNSW build and search parameters (chosen for recall@20 >= 0.98 on clustered vectors)."""

    threshold: int = 20_000  # a collection smaller than this stays exact (brute force is ms there)
    m: int = 16
    ef_construct: int = 100
    hnsw_ef: int = 128
    # A build starts after a batch of writes once this share of the points is not yet indexed.
    rebuild_fraction: float = 0.1


def to_filter(where: Where | None) -> qe.Filter | None:
    if not where:
        return None
    must: list[Any] = []
    for cond in where.must:
        if isinstance(cond, MatchAny):
            values = [np.bool_(v) if isinstance(v, bool) else v for v in cond.values]
            if len(values) == 1 or any(isinstance(v, np.bool_) for v in values):
                conditions = [qe.FieldCondition(key=cond.key, match=qe.MatchValue(v)) for v in values]
                must.append(conditions[0] if len(conditions) == 1 else qe.Filter(should=conditions))
            else:
                must.append(qe.FieldCondition(key=cond.key, match=qe.MatchAny(any=values)))
        elif isinstance(cond, Range):
            must.append(qe.FieldCondition(key=cond.key, range=qe.RangeFloat(gte=cond.gte, lte=cond.lte)))
        elif isinstance(cond, GeoBox):
            must.append(
                qe.FieldCondition(
                    key=cond.key,
                    geo_bounding_box=qe.GeoBoundingBox(
                        top_left=qe.GeoPoint(lat=cond.max_lat, lon=cond.min_lon),
                        bottom_right=qe.GeoPoint(lat=cond.min_lat, lon=cond.max_lon),
                    ),
                )
            )
        elif isinstance(cond, MoreValuesThan):
            must.append(qe.FieldCondition(key=cond.key, values_count=qe.ValuesCount(gt=cond.count)))
        else:  # pragma: no cover - Where only holds the conditions above
            raise TypeError(f"unknown condition {cond!r}")
    return qe.Filter(must=must)


def shard_config(dim: int, m: int, ef_construct: int) -> qe.EdgeConfig:
    """The config of every Shoebox shard: created with it, and loaded with it for an index build."""
    return qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Dot),
        hnsw_config=qe.HnswIndexConfig(m=m, ef_construct=ef_construct, full_scan_threshold=10_000),
        # optimize() indexes every segment it is asked to: when to ask is decided here.
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1),
    )


def _vector(value: Any) -> list[float] | None:
    if isinstance(value, dict):
        value = value.get("")
    return list(value) if isinstance(value, list) else None


def _record(point: Any, *, score: bool = False) -> Record:
    return Record(
        id=str(point.id),
        payload=dict(point.payload or {}),
        vector=_vector(point.vector),
        score=point.score if score else None,
    )


class _RWLock:
    """Many readers or one writer. The standard library has none; readers here are searches,
    the one writer is the swap of a freshly indexed shard (a few milliseconds)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            while self._writer:
                self._cond.wait()
            self._writer = True
            while self._readers:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


@dataclass
class _Journal:
    """Ids written or deleted on the live shard while its copy is being indexed."""

    written: set[str] = field(default_factory=set)
    deleted: set[str] = field(default_factory=set)

    def wrote(self, ids: list[str]) -> None:
        self.written.update(ids)
        self.deleted.difference_update(ids)

    def removed(self, ids: list[str]) -> None:
        self.deleted.update(ids)
        self.written.difference_update(ids)


class _Collection:
    def __init__(
        self, name: str, root: Path, version: str, shard: qe.EdgeShard, dim: int | None = None
    ) -> None:
        self.name = name
        self.root = root
        self.version = version
        self.shard = shard
        self.swap = _RWLock()  # readers: every call; writer: the swap of an indexed copy
        self.writes = threading.Lock()  # one writer at a time, and none during the replay
        self.journal: _Journal | None = None
        self.building = False
        self.last_build_s: float | None = None
        self.error: str | None = None
        self.dim = dim if dim is not None else _dim_of(root / version)

    @contextlib.contextmanager
    def reading(self) -> Iterator[qe.EdgeShard]:
        with self.swap.read():
            yield self.shard


def _dim_of(shard_dir: Path) -> int:
    import json

    config = json.loads((shard_dir / "edge_config.json").read_text())
    vectors = config.get("vectors") or {}
    params = vectors.get("") if isinstance(vectors, dict) and "" in vectors else vectors
    return int(params.get("size", 0)) if isinstance(params, dict) else 0


def _write_current(root: Path, version: str) -> None:
    tmp = root / (_CURRENT + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(version)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, root / _CURRENT)
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _copy_sparse(src: str, dst: str) -> str:
    """`shutil.copy2` that keeps holes. A shard's WAL and mmap'd files are mostly preallocated
    holes (64 MB of WAL for a few KB of points): a plain copy writes them all out as zeros, so
    every build would copy ~200 MB under the write lock and leave the new shard that much bigger."""
    seek_data, seek_hole = getattr(os, "SEEK_DATA", None), getattr(os, "SEEK_HOLE", None)
    if seek_data is None or seek_hole is None:  # pragma: no cover - no SEEK_DATA here
        return shutil.copy2(src, dst)
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        fd_in, fd_out = fin.fileno(), fout.fileno()
        size = os.fstat(fd_in).st_size
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd_in, pos, seek_data)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # only a hole from here to the end
                    break
                raise
            end = os.lseek(fd_in, start, seek_hole)
            while start < end:
                chunk = os.pread(fd_in, min(end - start, 1 << 20), start)
                if not chunk:
                    break
                os.pwrite(fd_out, chunk, start)
                start += len(chunk)
            pos = end
        os.ftruncate(fd_out, size)
    shutil.copystat(src, dst)
    return dst


def _next_version(version: str) -> str:
    return f"v{int(version.lstrip('v')) + 1}"


class EdgeStore(VectorStore):
    kind = "qdrant-edge"

    def __init__(
        self, root: Path, *, params: IndexParams | None = None, background_index: bool = True
    ) -> None:
        self.root = root
        self.params = params or IndexParams()
        root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # the registry of collections
        self._collections: dict[str, _Collection] = {}
        self._closing = threading.Event()
        self._builds: queue.Queue[str | None] = queue.Queue()
        self._child: subprocess.Popen[bytes] | None = None
        self._idle = threading.Condition()
        self._pending: set[str] = set()  # queued or being built
        self._recheck: set[str] = set()  # written again while pending: look again after the build
        try:
            for entry in sorted(root.iterdir()):
                if entry.is_dir() and (entry / _CURRENT).is_file():
                    self._collections[entry.name] = self._open(entry)
        except Exception as exc:
            self.close()
            raise vector_db_error(exc) from exc
        self._indexer: threading.Thread | None = None
        if background_index:
            self._indexer = threading.Thread(target=self._index_loop, name="edge-indexer", daemon=True)
            self._indexer.start()
            for name in list(self._collections):
                self.after_writes(name)

    # -------------------------------------------------------- opening

    def _open(self, root: Path) -> _Collection:
        version = (root / _CURRENT).read_text().strip()
        try:
            shard = qe.EdgeShard.load(str(root / version))
        except Exception as exc:
            if "WouldBlock" in str(exc):
                raise ShoeboxError(
                    ErrorCode.VECTOR_DB, f"the store {root} is open in another process"
                ) from exc
            raise
        # Only now that the live shard is ours (its WAL lock taken): a `v<N+1>` beside it is an
        # index build cut off by a stop or a crash, not the build of a process that has it open.
        for entry in root.iterdir():
            if entry.is_dir() and entry.name != version:
                shutil.rmtree(entry, ignore_errors=True)
        return _Collection(root.name, root, version, shard)

    def _get(self, name: str) -> _Collection | None:
        with self._lock:
            return self._collections.get(check_collection_name(name))

    def _need(self, name: str) -> _Collection:
        coll = self._get(name)
        if coll is None:
            raise ShoeboxError(ErrorCode.NOT_FOUND, f"no collection {name!r} in the store")
        return coll

    def describe(self) -> dict[str, Any]:
        return {"backend": self.kind, "location": str(self.root), "engine": f"qdrant-edge-py {_version()}"}

    # -------------------------------------------------------- collections

    def collection_exists(self, name: str) -> bool:
        return self._get(name) is not None

    def list_collections(self) -> list[str]:
        with self._lock:
            return sorted(self._collections)

    def ensure_collection(self, name: str, dim: int) -> None:
        check_collection_name(name)
        with self._lock:
            if name in self._collections:
                return
            root = self.root / name
            if root.exists():  # a collection whose creation was cut off before CURRENT was written
                shutil.rmtree(root)
            root.mkdir(parents=True)
            try:
                config = shard_config(dim, self.params.m, self.params.ef_construct)
                shard = qe.EdgeShard.create(str(root / "v1"), config)
                for field_name, schema in PAYLOAD_INDEXES.items():
                    shard.update(qe.UpdateOperation.create_field_index(field_name, _SCHEMA[schema]))
                shard.flush()
                _write_current(root, "v1")
            except Exception as exc:
                shutil.rmtree(root, ignore_errors=True)
                raise vector_db_error(exc) from exc
            self._collections[name] = _Collection(name, root, "v1", shard, dim)

    def collection_dim(self, name: str) -> int | None:
        coll = self._get(name)
        return coll.dim if coll else None

    def delete_collection(self, name: str) -> None:
        with self._lock:
            coll = self._collections.pop(check_collection_name(name), None)
        if coll is None:
            return
        with coll.writes, coll.swap.write():
            coll.journal = None
            with contextlib.suppress(Exception):
                coll.shard.close()
            # CURRENT goes first: a crash half-way leaves no half-collection that looks whole.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(coll.root / _CURRENT)
            shutil.rmtree(coll.root, ignore_errors=True)

    def count(self, name: str, where: Where | None = None) -> int:
        coll = self._get(name)
        if coll is None:
            return 0
        try:
            with coll.reading() as shard:
                return int(shard.count(qe.CountRequest(exact=True, filter=to_filter(where))))
        except Exception as exc:
            raise vector_db_error(exc) from exc

    def index_status(self, name: str) -> IndexStatus:
        coll = self._need(name)
        with coll.reading() as shard:
            info = shard.info()
        return IndexStatus(
            points=int(info.points_count),
            indexed=int(info.indexed_vectors_count),
            building=coll.building,
            last_build_s=coll.last_build_s,
            error=coll.error,
        )

    # -------------------------------------------------------- points

    def write(self, name: str, records: list[Record]) -> None:
        if not records:
            return
        coll = self._need(name)
        points = [qe.Point(r.id, r.vector, r.payload) for r in records]
        try:
            with coll.writes, coll.reading() as shard:
                shard.update(qe.UpdateOperation.upsert_points(points))
                if coll.journal is not None:
                    coll.journal.wrote([r.id for r in records])
        except Exception as exc:
            raise vector_db_error(exc) from exc

    def set_payload_by_id(self, name: str, pid: str, payload: dict[str, Any]) -> None:
        coll = self._need(name)
        try:
            with coll.writes, coll.reading() as shard:
                shard.update(qe.UpdateOperation.set_payload([pid], payload))
                if coll.journal is not None:
                    coll.journal.wrote([pid])
        except Exception as exc:
            raise vector_db_error(exc) from exc

    def delete_ids(self, name: str, ids: list[str]) -> None:
        if not ids:
            return
        coll = self._need(name)
        try:
            with coll.writes, coll.reading() as shard:
                shard.update(qe.UpdateOperation.delete_points(list(ids)))
                if coll.journal is not None:
                    coll.journal.removed(list(ids))
        except Exception as exc:
            raise vector_db_error(exc) from exc

    def sync(self, name: str) -> None:
        # An update is in the WAL (page cache: safe from kill -9) when it returns; flush() msyncs
        # the WAL and fsyncs the segments (~8 ms after a 64-point batch, measured).
        coll = self._get(name)
        if coll is None:
            return
        try:
            with coll.writes, coll.reading() as shard:
                shard.flush()
        except Exception as exc:
            raise vector_db_error(exc) from exc

    def get(self, name: str, ids: list[str], *, with_vectors: bool = False) -> list[Record]:
        coll = self._get(name)
        if coll is None or not ids:
            return []
        try:
            with coll.reading() as shard:
                found = shard.retrieve(list(ids), True, with_vectors)
        except Exception as exc:
            raise vector_db_error(exc) from exc
        return [_record(r) for r in found]

    # -------------------------------------------------------- search

    def _params(self) -> qe.SearchParams:
        return qe.SearchParams(hnsw_ef=self.params.hnsw_ef)

    def query(
        self,
        name: str,
        vector: list[float],
        *,
        limit: int,
        offset: int = 0,
        where: Where | None = None,
        score_threshold: float | None = None,
        with_payload: bool | list[str] = True,
    ) -> list[Record]:
        coll = self._need(name)
        request = qe.QueryRequest(
            limit=limit,
            offset=offset,
            query=qe.Query.Nearest(list(vector)),
            filter=to_filter(where),
            score_threshold=score_threshold,
            with_payload=with_payload,
            params=self._params(),
        )
        try:
            with coll.reading() as shard:
                return [_record(p, score=True) for p in shard.query(request)]
        except Exception as exc:
            raise vector_db_error(exc) from exc

    def query_batch(
        self,
        name: str,
        vectors: list[list[float]],
        *,
        limit: int,
        score_threshold: float | None = None,
        where: Where | None = None,
        breadth: int | None = None,
    ) -> list[list[Record]]:
        coll = self._need(name)
        flt = to_filter(where)
        params = qe.SearchParams(hnsw_ef=breadth) if breadth else self._params()
        requests = [
            qe.QueryRequest(
                limit=limit,
                query=qe.Query.Nearest(list(v)),
                filter=flt,
                score_threshold=score_threshold,
                with_payload=False,
                params=params,
            )
            for v in vectors
        ]
        try:
            with coll.reading() as shard:
                answers = shard.query_batch(qe.QueryBatchRequest(requests))
        except Exception as exc:
            raise vector_db_error(exc) from exc
        return [[_record(p, score=True) for p in answer] for answer in answers]

    def scroll(
        self,
        name: str,
        *,
        where: Where | None = None,
        limit: int = 256,
        start: str | None = None,
        payload: bool | list[str] = True,
        with_vectors: bool = False,
    ) -> tuple[list[Record], str | None]:
        coll = self._need(name)
        request = qe.ScrollRequest(
            offset=start, limit=limit, filter=to_filter(where), with_payload=payload, with_vector=with_vectors
        )
        try:
            with coll.reading() as shard:
                records, next_start = shard.scroll(request)
        except Exception as exc:
            raise vector_db_error(exc) from exc
        return [_record(r) for r in records], (str(next_start) if next_start is not None else None)

    def page(self, name: str, *, limit: int, offset: int) -> list[Record]:
        # Without a vector, a query returns points in id order and takes an offset (no scrolling).
        coll = self._need(name)
        try:
            with coll.reading() as shard:
                found = shard.query(qe.QueryRequest(limit=limit, offset=offset, with_payload=True))
        except Exception as exc:
            raise vector_db_error(exc) from exc
        return [_record(r) for r in found]

    # -------------------------------------------------------- background index builds

    def after_writes(self, name: str) -> None:
        if self._indexer is None or self._closing.is_set():
            return
        with self._idle:
            if name in self._pending:
                # A build under way indexes a copy taken before these writes: without a second
                # look they would stay unindexed until some later job.
                self._recheck.add(name)
                return
            self._pending.add(name)
        self._builds.put(name)

    def wait_for_index(self, name: str, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._idle:
            while name in self._pending:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def _needs_build(self, coll: _Collection) -> bool:
        with coll.reading() as shard:
            info = shard.info()
        points, indexed = int(info.points_count), int(info.indexed_vectors_count)
        if points < self.params.threshold:
            return False
        return points - indexed > max(1, int(points * self.params.rebuild_fraction)) or indexed == 0

    def _index_loop(self) -> None:
        while True:
            name = self._builds.get()
            if name is None:
                return
            coll: _Collection | None = None
            try:
                coll = self._get(name)
                if coll is not None and not self._closing.is_set() and self._needs_build(coll):
                    self._build(coll)
            except Exception as exc:  # a failed build leaves the live shard as it was
                log.warning("index build of %r failed: %s", name, exc)
                if coll is not None:
                    coll.error = str(exc)[:500]
            finally:
                with self._idle:
                    if name in self._recheck and not self._closing.is_set():
                        self._recheck.discard(name)
                        self._builds.put(name)  # still pending: wait_for_index waits for this too
                    else:
                        self._recheck.discard(name)
                        self._pending.discard(name)
                        self._idle.notify_all()

    def _build(self, coll: _Collection) -> None:
        started = time.monotonic()
        target = _next_version(coll.version)
        copy = coll.root / target
        shutil.rmtree(copy, ignore_errors=True)
        coll.building = True
        try:
            with coll.writes:
                coll.shard.flush()
                shutil.copytree(coll.root / coll.version, copy, copy_function=_copy_sparse)
                coll.journal = _Journal()
            self._optimise_in_child(copy, coll.dim)
            if self._closing.is_set() or self._get(coll.name) is not coll:
                raise RuntimeError("the store closed or the collection went during the build")
            fresh = qe.EdgeShard.load(str(copy))
            try:
                with coll.writes:
                    self._replay(coll, fresh)
                    # No write can land meanwhile (coll.writes): the copy must hold what the live
                    # shard holds. A copy that lost its data loads as an empty shard without error.
                    live_n = int(coll.shard.count(qe.CountRequest(exact=True)))
                    fresh_n = int(fresh.count(qe.CountRequest(exact=True)))
                    if fresh_n != live_n:
                        raise RuntimeError(
                            f"the indexed copy holds {fresh_n} points, the live shard {live_n}: not swapped"
                        )
                    fresh.flush()
                    with coll.swap.write():
                        old, old_version = coll.shard, coll.version
                        _write_current(coll.root, target)
                        coll.shard, coll.version, coll.journal = fresh, target, None
                    fresh = None
                with contextlib.suppress(Exception):
                    old.close()
                shutil.rmtree(coll.root / old_version, ignore_errors=True)
            finally:
                if fresh is not None:
                    fresh.close()
            coll.last_build_s = round(time.monotonic() - started, 2)
            coll.error = None
            log.info("collection %r indexed in %.1f s", coll.name, coll.last_build_s)
        except BaseException:
            coll.journal = None
            if coll.version != target:
                shutil.rmtree(copy, ignore_errors=True)
            raise
        finally:
            coll.building = False

    @staticmethod
    def _replay(coll: _Collection, fresh: qe.EdgeShard) -> None:
        journal = coll.journal
        if journal is None:
            return
        written = sorted(journal.written)
        for start in range(0, len(written), 256):
            chunk = written[start : start + 256]
            records = coll.shard.retrieve(chunk, True, True)
            points = [qe.Point(str(r.id), _vector(r.vector), dict(r.payload or {})) for r in records]
            if points:
                fresh.update(qe.UpdateOperation.upsert_points(points))
        if journal.deleted:
            fresh.update(qe.UpdateOperation.delete_points(sorted(journal.deleted)))

    def _optimise_in_child(self, shard_dir: Path, dim: int) -> None:
        command = [
            sys.executable,
            "-m",
            "shoebox.store.build_index",
            str(shard_dir),
            f"--dim={dim}",
            f"--m={self.params.m}",
            f"--ef-construct={self.params.ef_construct}",
        ]
        if self._closing.is_set():
            raise RuntimeError("the store is closing")
        child = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=functools.partial(_child_setup, os.getpid()),
        )
        self._child = child
        try:
            if self._closing.is_set():  # close() began before `_child` was set: it killed nothing
                child.kill()
            _, err = child.communicate()
        finally:
            self._child = None
        if child.returncode != 0:
            tail = err.decode(errors="replace").strip().splitlines()[-1:] or [f"exit {child.returncode}"]
            raise RuntimeError(f"index build failed: {tail[0]}")

    # -------------------------------------------------------- life

    def close(self) -> None:
        self._closing.set()
        child = self._child
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signal.SIGKILL)
        indexer = getattr(self, "_indexer", None)
        if indexer is not None:
            self._builds.put(None)
            indexer.join(timeout=30)
        with self._lock:
            collections, self._collections = list(self._collections.values()), {}
        for coll in collections:
            with coll.writes, coll.swap.write():
                try:
                    coll.shard.flush()
                finally:
                    coll.shard.close()


def _parent_death_signal() -> Any:
    """Linux's prctl(PR_SET_PDEATHSIG), resolved here: a child must not load libraries after fork."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - no prctl in this libc
        return None


_PRCTL = _parent_death_signal()
_PR_SET_PDEATHSIG = 1


def _child_setup(parent: int) -> None:
    """In the build child before exec: below interactive search and ingest, and killed by the
    kernel when the service dies (kill -9 included), so no orphan build keeps writing into a
    `v<N+1>` that the next start removes and may create again for its own build."""
    os.nice(10)
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the service died before the signal was armed
            os._exit(1)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("qdrant-edge-py")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"
