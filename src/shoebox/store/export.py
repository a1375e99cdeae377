"""Copy collections from one store to another, point for point (the move to a Qdrant server).

Every point is re-written as it is stored: same id, same payload, same (already L2-normalised)
vector, through `VectorStore.write` — never `upsert`, which derives ids from content hashes
and normalises again. Ids are kept, so copying twice writes the same points again (idempotent),
and a target that already holds the collection with the same dimension is simply topped up.

Used by `shoebox store export` (the embedded store of a data dir → a server) and by the
one-time import of libraries of earlier versions (qdrant-client local mode → Qdrant Edge).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from shoebox.protocol import ErrorCode, ShoeboxError
from shoebox.store.base import Record, VectorStore


@dataclass(frozen=True)
class CopyReport:
    """What one collection's copy did: points written, what each side counts after it, how long."""

    name: str
    copied: int
    source_count: int
    target_count: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.copied / self.seconds if self.seconds > 0 else 0.0


def check_target(source: VectorStore, target: VectorStore, name: str) -> int:
    """The source collection's dim, once the target is known to accept it (absent or same dim)."""
    dim = source.collection_dim(name)
    if dim is None:
        raise ShoeboxError(ErrorCode.NOT_FOUND, f"no collection {name!r} in the source store")
    existing = target.collection_dim(name)
    if existing is not None and existing != dim:
        raise ShoeboxError(
            ErrorCode.CONFLICT,
            f"the target already has a collection {name!r} of dimension {existing}, the source's is {dim}: "
            "delete it there (or export under another prefix) first",
        )
    return dim


def copy_collection(
    source: VectorStore,
    target: VectorStore,
    name: str,
    *,
    progress: Callable[[int, int], None] | None = None,
    page: int = 512,
) -> int:
    """Copy every point of `name` from `source` into `target` (creating it with the source's dim).

    `progress(done, total)` is called after each page. Returns the number of points copied;
    raises ShoeboxError(ERR_CONFLICT) before writing anything when the target holds `name`
    with another dimension, and ShoeboxError(ERR_VECTOR_DB) when, at the end, the target
    counts fewer points than the source.
    """
    return _copy(source, target, name, progress=progress, page=page).copied


def _copy(
    source: VectorStore,
    target: VectorStore,
    name: str,
    *,
    progress: Callable[[int, int], None] | None,
    page: int,
) -> CopyReport:
    started = time.monotonic()
    dim = check_target(source, target, name)
    total = source.count(name)
    target.ensure_collection(name, dim)
    done = 0
    if progress is not None:
        progress(0, total)
    for records in source.iter_points(name, page=page):
        for record in records:
            if record.vector is None or len(record.vector) != dim:
                raise ShoeboxError(
                    ErrorCode.VECTOR_DB,
                    f"point {record.id} of {name!r} has no single vector of dimension {dim}: cannot copy it",
                )
        target.write(name, [Record(id=r.id, payload=r.payload, vector=r.vector) for r in records])
        done += len(records)
        if progress is not None:
            progress(done, max(total, done))
    source_count = source.count(name)
    target_count = target.count(name)
    if target_count < source_count:
        raise ShoeboxError(
            ErrorCode.VECTOR_DB,
            f"copy of {name!r} incomplete: the target counts {target_count} points, the source {source_count}",
        )
    return CopyReport(
        name=name,
        copied=done,
        source_count=source_count,
        target_count=target_count,
        seconds=time.monotonic() - started,
    )


def copy_store(
    source: VectorStore,
    target: VectorStore,
    names: Iterable[str] | None = None,
    *,
    progress: Callable[[str, int, int], None] | None = None,
    page: int = 512,
) -> list[CopyReport]:
    """Copy the collections `names` (default: all of the source's), one after the other.

    Every target is checked for a dimension conflict before the first point is written, so a
    conflict refuses the whole copy rather than leaving it half done. `progress(name, done, total)`.
    """
    chosen = list(names) if names is not None else source.list_collections()
    for name in chosen:
        check_target(source, target, name)
    reports = []
    for name in chosen:
        step = None if progress is None else (lambda done, total, _n=name: progress(_n, done, total))
        reports.append(_copy(source, target, name, progress=step, page=page))
    return reports
