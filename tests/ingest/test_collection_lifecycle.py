"""Collections and the store, through the job runner: deletes only what Shoebox registered and
never under a running job; an index is built in the background after a job.

In process, with the real catalog, Qdrant Edge store and decoders; the ML side is the fake
client of the fail-safe tests (an external boundary).
"""

# ruff: noqa: F811  (`open_service` is the fail-safe tests' fixture, imported to share it)
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from test_pipeline_failsafe import N_FILES, FakeML, _folder, _run, open_service  # noqa: F401

from shoebox.devtools import photos
from shoebox.ingest import search
from shoebox.protocol import Capabilities, ErrorCode, Item, JobStatus, ShoeboxError

WIDE = 256  # wide enough vectors that even ten points make a segment Edge indexes


class WideFakeML(FakeML):
    def capabilities(self, timeout: float = 3.0) -> Capabilities:
        return super().capabilities(timeout).model_copy(update={"embedding_dim": WIDE})

    def embed_batch(self, files, *, should_stop=None, model=None):  # type: ignore[no-untyped-def]
        items, model = super().embed_batch(files, should_stop=should_stop, model=model)
        rng = np.random.default_rng(len(items))
        wide = [
            Item(**{**item.model_dump(), "embedding": list(rng.normal(size=WIDE))}) for item in items
        ]
        return wide, model


def _other_photos(root: Path, n: int = 3) -> Path:
    """Photos whose bytes differ from `_folder`'s, so they need the ML service."""
    root.mkdir(parents=True)
    for i in range(n):
        photos.write_jpeg(root / f"new_{i}.jpg", photos.synthetic_photo(64, 48, seed=1000 + i))
    return root


def _wait_running(ctx, job_id: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = ctx.catalog.get_job(job_id)
        if job is not None and job.status == JobStatus.RUNNING and ctx.store.collection_exists("lib"):
            return
        time.sleep(0.05)
    raise AssertionError("the job did not start")


def test_a_collection_with_a_running_job_cannot_be_deleted(open_service, tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    ml = FakeML("ok")
    ctx = open_service(ml)
    _run(ctx, folder)  # the collection exists with points
    ml.mode = "stall"
    more = _other_photos(tmp_path / "photos" / "more")
    job = ctx.jobs.submit(str(more), "lib")
    _wait_running(ctx, job.job_id)
    with pytest.raises(ShoeboxError) as refused:
        ctx.jobs.delete_collection("lib")
    assert refused.value.code == ErrorCode.CONFLICT
    assert ctx.store.count("lib") == N_FILES  # untouched
    ml.release.set()
    ctx.jobs.wait(job.job_id, 30)
    ctx.jobs.delete_collection("lib")
    assert not ctx.store.collection_exists("lib")
    assert ctx.catalog.get_collection("lib") is None


def test_a_store_collection_shoebox_did_not_register_is_never_deleted(open_service) -> None:
    ctx = open_service(FakeML())
    ctx.store.ensure_collection("foreign", 4)
    ctx.store.upsert("foreign", [("f" * 64, [1.0, 0, 0, 0], {"owner": "someone else"})])
    with pytest.raises(ShoeboxError) as refused:
        ctx.jobs.delete_collection("foreign")
    assert refused.value.code == ErrorCode.NOT_FOUND
    assert ctx.store.count("foreign") == 1


def test_an_index_is_built_in_the_background_after_a_job(open_service, tmp_path: Path) -> None:
    ctx = open_service(WideFakeML(), index_threshold=5)
    assert ctx.store.kind == "qdrant-edge"
    job = _run(ctx, _folder(tmp_path))
    assert job.status == JobStatus.COMPLETED
    assert ctx.store.wait_for_index("lib", timeout=120)
    status = ctx.store.index_status("lib")
    assert status.points == N_FILES and status.indexed == N_FILES and not status.exact
    assert status.last_build_s is not None and status.error is None
    # The swapped-in shard answers like the old one.
    some = ctx.store.page("lib", limit=1, offset=0)[0]
    hits = search.search_similar(ctx.store, "lib", some.id, limit=N_FILES)
    assert len(hits) == N_FILES - 1 and some.id not in {h.id for h in hits}


def test_a_small_collection_stays_exact(open_service, tmp_path: Path) -> None:
    ctx = open_service(FakeML())  # default threshold: 20,000 points
    _run(ctx, _folder(tmp_path))
    assert ctx.store.wait_for_index("lib", timeout=30)
    status = ctx.store.index_status("lib")
    assert status.exact and status.indexed == 0 and status.last_build_s is None
