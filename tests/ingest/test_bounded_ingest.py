"""Ingest resources bounded per process: one byte budget and a cap on running jobs for all jobs,
a scan whose prefetch does not grow with the tree, files never read through a link swapped in
after the scan, and job details pruned by housekeeping.

In-process (the service's context with a stand-in ML client), so that the moments that matter
(a swap between scan and read, a job held in the embed stage) are made to happen, not hoped for.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from test_pipeline_failsafe import FakeML, _folder, _run, open_service  # noqa: F401  (shared fixture)

from shoebox.devtools import photos
from shoebox.ingest import scan
from shoebox.ingest.catalog import Catalog, FileOutcome
from shoebox.ingest.context import ServiceContext
from shoebox.protocol import ErrorCode, JobStatus, Outcome


@pytest.fixture
def service(open_service, tmp_path: Path) -> Callable[..., ServiceContext]:  # noqa: F811  (imported fixture)
    """The fail-safe tests' service, its allowed root a folder of tmp_path: what is beside it is outside."""

    def open_(ml: Any, **overrides: Any) -> ServiceContext:
        return open_service(ml, **{"ingest_roots": [tmp_path / "root"], **overrides})

    return open_


def _wait(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_a_file_swapped_for_a_link_out_of_the_roots_after_the_scan_is_not_read(
    service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _folder(tmp_path / "root", n=3)
    secret = tmp_path / "outside" / "secret.jpg"
    secret.parent.mkdir()
    photos.write_jpeg(secret, photos.synthetic_photo(64, 48, seed=99))
    swapped = folder / "img_001.jpg"
    real_list = scan.FolderScanner._list

    def list_then_swap(self: scan.FolderScanner, directory: str) -> Any:
        listing = real_list(self, directory)  # the file is stat-ed as a regular file here…
        if directory == str(folder):
            swapped.unlink()  # …and is a link out of the roots by the time it is read
            swapped.symlink_to(secret)
        return listing

    monkeypatch.setattr(scan.FolderScanner, "_list", list_then_swap)
    ctx = service(FakeML())
    job = _run(ctx, folder)

    assert job.status == JobStatus.COMPLETED_WITH_ERRORS
    assert [(e.file, e.code) for e in job.errors] == [(str(swapped), ErrorCode.PATH_NOT_ALLOWED)]
    secret_sha = hashlib.sha256(secret.read_bytes()).hexdigest()
    assert ctx.store.retrieve("lib", [secret_sha]) == {}
    assert job.indexed == 2


def test_two_jobs_at_once_never_hold_more_than_the_process_byte_budget(service, tmp_path: Path) -> None:
    a = _folder(tmp_path / "root", n=12, name="a")
    b = _folder(tmp_path / "root", n=12, name="b")
    one_file = max(p.stat().st_size for p in a.iterdir())
    limit = 3 * one_file
    ml = FakeML("stall")  # batches wait, so the files read pile up against the budget
    ctx = service(ml, inflight_bytes_limit=limit, max_concurrent_jobs=2)
    jobs = [ctx.jobs.submit(str(a), "col-a"), ctx.jobs.submit(str(b), "col-b")]
    _wait(lambda: ctx.jobs.stats()["running_jobs"] == 2)
    _wait(lambda: ctx.jobs.limits.budget.used > 2 * one_file)
    time.sleep(0.3)  # both jobs keep reading as far as the budget lets them
    ml.release.set()
    ml.mode = "ok"
    for job in jobs:
        _wait(lambda j=job: ctx.catalog.get_job(j.job_id).status.finished)
    assert ctx.jobs.limits.budget.peak <= limit
    assert ctx.jobs.limits.budget.used == 0
    assert all(ctx.catalog.get_job(j.job_id).status == JobStatus.COMPLETED for j in jobs)


def test_a_job_beyond_the_concurrent_job_cap_waits_pending(service, tmp_path: Path) -> None:
    folders = [_folder(tmp_path / "root", n=4, name=f"f{i}") for i in range(3)]
    ml = FakeML("stall")
    ctx = service(ml, max_concurrent_jobs=2)
    jobs = [ctx.jobs.submit(str(f), f"col-{i}") for i, f in enumerate(folders)]
    _wait(lambda: ctx.jobs.stats()["running_jobs"] == 2)
    time.sleep(0.3)
    statuses = [ctx.catalog.job_status(j.job_id) for j in jobs]
    assert statuses == [JobStatus.RUNNING, JobStatus.RUNNING, JobStatus.PENDING]
    assert ctx.jobs.stats()["queued_jobs"] == 1
    ml.mode = "ok"
    ml.release.set()
    for job in jobs:
        _wait(lambda j=job: ctx.catalog.get_job(j.job_id).status == JobStatus.COMPLETED)


def test_a_cancelled_job_gives_its_bytes_back_to_the_shared_budget(service, tmp_path: Path) -> None:
    folder = _folder(tmp_path / "root", n=8)
    ml = FakeML("stall")
    ctx = service(ml)
    job = ctx.jobs.submit(str(folder), "lib")
    _wait(lambda: ctx.jobs.limits.budget.used > 0)
    ml.release.set()
    ctx.jobs.cancel(job.job_id)
    ctx.jobs.wait(job.job_id, 10.0)
    assert ctx.jobs.limits.budget.used == 0


def test_the_scan_prefetches_a_bounded_number_of_folder_listings(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    expected = []
    for d in range(60):
        folder = root / f"d{d:03d}"
        folder.mkdir(parents=True)
        for i in range(3):
            (folder / f"{i}.jpg").touch()
            expected.append(str(folder / f"{i}.jpg"))
    scanner = scan.FolderScanner([".jpg"], [root], workers=2, prefetch=4)
    found = [f.path for f in scanner.scan(root)]
    assert found == expected  # same deterministic order as before
    assert scanner.peak_prefetched <= 4


def _finished_job(catalog: Catalog, job_id: str) -> None:
    catalog.create_job(job_id, "c", "/p")
    catalog.log(job_id, "a line")
    catalog.record(job_id, "c", [FileOutcome(f"/p/{job_id}.jpg", Outcome.FAILED, "ERR_FILE_READ", "bad")])
    catalog.set_job_status(job_id, JobStatus.COMPLETED_WITH_ERRORS)


def test_details_of_jobs_beyond_the_newest_n_are_pruned_and_their_counters_kept(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    for job_id in ("j1", "j2", "j3"):
        _finished_job(catalog, job_id)
    assert catalog.prune_job_details(keep=1, max_age_days=30) == 2
    old, newest = catalog.get_job("j1"), catalog.get_job("j3")
    assert old.errors == [] and old.logs == [] and old.failed == 1
    assert len(newest.errors) == 1 and newest.logs
    assert catalog.prune_job_details(keep=1, max_age_days=30) == 0  # nothing left to prune
    catalog.close()


def test_details_of_jobs_older_than_the_age_limit_are_pruned(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "catalog.sqlite3")
    _finished_job(catalog, "j1")
    assert catalog.prune_job_details(keep=10, max_age_days=30) == 0
    time.sleep(0.01)
    assert catalog.prune_job_details(keep=10, max_age_days=0) == 1
    assert catalog.get_job("j1").errors == []
    catalog.close()


def test_a_file_replaced_by_a_fifo_fails_without_blocking_the_read(tmp_path: Path) -> None:
    from shoebox.ingest.stages import read_file
    from shoebox.protocol import ShoeboxError

    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ShoeboxError) as err:
        read_file(str(fifo), [str(tmp_path)])
    assert err.value.code == ErrorCode.FILE_READ
