"""The ingestion service killed -9 while it writes to its embedded store, then restarted.

The catalog (SQLite) and the vector store (Qdrant Edge) are two stores with no transaction
across them; what holds them together is that a point's id is its content hash and that the
catalog records a file only after its point is stored. These tests check that this survives
the worst stop there is: after a kill -9 mid-job and a restart, the job completes, and the
catalog and the store agree exactly, one point per distinct content, none stored twice.
"""

from __future__ import annotations

import hashlib
import shutil
import time
from pathlib import Path

from servers import POLL_S, ShoeboxClient, free_port, write_photos
from shoebox.ingest.catalog import Catalog
from shoebox.protocol import Job
from shoebox.store import point_id
from shoebox.store.edge import EdgeStore

COLLECTION = "durable"
# Small ML batches, one in flight: the store stage upserts many small batches, easy to interrupt.
# A low index threshold: the restarted service opens its store over the threshold and builds an
# HNSW index at start-up, while the resumed job writes (the build's journal and replay, for real).
SLOW_INGEST = {
    "SHOEBOX_ML_INFERENCE_BATCH_SIZE": "2",
    "SHOEBOX_ML_MAX_INFLIGHT": "1",
    "SHOEBOX_INDEX_THRESHOLD": "10",
}


def _points_count(api: ShoeboxClient) -> int:
    r = api.request("GET", f"/api/v1/collections/{COLLECTION}/info")
    return r.json()["points_count"] if r.status_code == 200 else 0


def _wait_points(api: ShoeboxClient, job_id: str, at_least: int, timeout: float = 60.0) -> Job:
    """Wait until the store holds `at_least` points of the job's collection (the job still running)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.job(job_id)
        if job.status.finished:
            return job
        if _points_count(api) >= at_least:
            return job
        time.sleep(0.02)
    raise TimeoutError(f"the store never reached {at_least} points")


def _wait_indexed(api: ShoeboxClient, timeout: float = 90.0) -> dict:
    """The collection's index once no build runs and every point is indexed (or the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        index = api.collection_info(COLLECTION)["index"]
        if (not index["building"] and index["indexed"] == index["points"]) or time.monotonic() > deadline:
            return index
        time.sleep(0.1)


def test_kill_9_while_storing_then_restart_leaves_catalog_and_store_in_agreement(
    services, clients, ml_service, photo_root: Path, tmp_path: Path
) -> None:
    """SIGKILL of the ingestion service while its store stage upserts, then a restart on the same
    data dir: the job resumes and completes; the store holds one point per distinct content;
    every file the catalog knows has its content's point, every point is a content the catalog
    knows, with exactly the catalog's paths; no point is stored twice. Meanwhile, a second
    service started on the data dir in use is refused with a readable message."""
    originals = write_photos(photo_root / "a", 80, size=(160, 120))
    (photo_root / "b").mkdir()
    copies = []
    for path in originals[:12]:  # the same bytes under a second path: one point, two paths
        copy = photo_root / "b" / f"copy_of_{path.name}"
        shutil.copyfile(path, copy)
        copies.append(copy)
    sha_of = {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in [*originals, *copies]}
    contents = set(sha_of.values())
    assert len(contents) == 80 and len(sha_of) == 92

    data, port = tmp_path / "data", free_port()
    first = services("ingest", data, [ml_service.url], [photo_root], port=port, env=SLOW_INGEST)
    api = clients(first.url)

    second = services("ingest", data, [ml_service.url], [photo_root], wait=False)
    assert second.proc.wait(60) != 0, "a second service ran on a data dir in use"
    refusal = second.tail_log()
    assert "in use" in refusal and str(data) in refusal, refusal
    assert first.proc.poll() is None and api.request("GET", "/health").status_code == 200

    job_id = api.ingest(photo_root, COLLECTION)["job_id"]
    before = _wait_points(api, job_id, at_least=15)
    assert before.status == "running", "the job ended before the kill: the test proves nothing"
    stored_at_kill = _points_count(api)
    first.kill9()

    restarted = services("ingest", data, [ml_service.url], [photo_root], port=port, env=SLOW_INGEST)
    job = api.follow(job_id, poll_s=POLL_S, timeout=120, tolerate_unreachable=True)
    assert job.status == "completed", job.logs[-5:]
    assert job.total_files == job.processed_files == 92
    assert job.failed == 0
    assert any("resuming" in line for line in job.logs)
    assert api.collection_info(COLLECTION)["points_count"] == 80
    index = _wait_indexed(api)
    assert index["indexed"] == index["points"] == 80 and index["error"] is None, index
    restarted.stop()  # a clean stop: the catalog and the store are closed, their locks released
    builds = restarted.tail_log(1_000_000).count(f"collection {COLLECTION!r} indexed in")
    print(
        f"\nkilled with >= {stored_at_kill} points stored, {before.processed_files} files recorded; "
        f"index builds after the restart: {builds}"
    )
    assert builds >= 1

    catalog = Catalog(data / "catalog.sqlite3")
    try:
        known = catalog.known_files_under(COLLECTION, str(photo_root))
    finally:
        catalog.close()
    assert {path: kf.sha256 for path, kf in known.items()} == sha_of

    store = EdgeStore(data / "edge", background_index=False)
    try:
        stored: dict[str, dict] = {}
        for page in store.iter_points(COLLECTION):
            for rec in page:
                sha = rec.payload["sha256"]
                assert sha not in stored, f"content {sha} stored twice"
                assert rec.id == point_id(sha)
                assert rec.vector, "a point without its vector"
                stored[sha] = rec.payload
        assert store.count(COLLECTION) == len(stored) == 80
    finally:
        store.close()
    assert set(stored) == contents, "catalog and store disagree on the contents"
    for sha, payload in stored.items():
        paths_in_catalog = sorted(path for path, s in sha_of.items() if s == sha)
        assert payload["paths"] == paths_in_catalog, f"paths of {sha} differ from the catalog's"
