"""The SQLite catalog: durable jobs, counters that match outcomes, fast known-file loads."""

from __future__ import annotations

import time
from pathlib import Path

from shoebox.ingest.catalog import Catalog, FileOutcome
from shoebox.protocol import JobStatus


def test_job_counters_equal_recorded_outcomes_and_survive_reopen(tmp_path: Path) -> None:
    db = tmp_path / "catalog.sqlite3"
    catalog = Catalog(db)
    catalog.create_job("j1", "c", "/photos")
    catalog.set_total("j1", 4, scan_done=True)
    catalog.record(
        "j1",
        "c",
        [
            FileOutcome("/photos/a.jpg", "indexed"),
            FileOutcome("/photos/b.jpg", "cached"),
            FileOutcome("/photos/c.jpg", "unchanged"),
            FileOutcome("/photos/d.jpg", "failed", "ERR_DECODING_IMAGE", "bad"),
        ],
    )
    catalog.close()

    job = Catalog(db).get_job("j1")
    assert job is not None
    assert (job.indexed, job.cached, job.unchanged, job.failed) == (1, 1, 1, 1)
    assert job.processed_files == job.total_files == 4
    assert job.progress == 1.0
    assert [(e.file, e.code.value) for e in job.errors] == [("/photos/d.jpg", "ERR_DECODING_IMAGE")]


def test_recording_a_file_twice_in_one_job_counts_it_once(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    catalog.create_job("j1", "c", "/p")
    catalog.record("j1", "c", [FileOutcome("/p/a.jpg", "indexed")])
    catalog.record("j1", "c", [FileOutcome("/p/a.jpg", "cached")])
    job = catalog.get_job("j1")
    assert job is not None and (job.indexed, job.cached) == (1, 0)


def test_known_files_under_a_folder_excludes_sibling_prefixes(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    catalog.create_job("j", "c", "/p")
    known = [("/p/a.jpg", 1, 10, "s1"), ("/p/sub/b.jpg", 2, 20, "s2"), ("/p2/c.jpg", 3, 30, "s3")]
    catalog.record("j", "c", [], known)
    assert sorted(catalog.known_files_under("c", "/p")) == ["/p/a.jpg", "/p/sub/b.jpg"]
    assert catalog.known_files_under("other", "/p") == {}


def test_ten_thousand_outcomes_and_known_files_load_in_well_under_a_second(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    catalog.create_job("j", "c", "/p")
    rows = [(f"/p/{i:05d}.jpg", i, i, f"{i:064x}") for i in range(10_000)]
    start = time.perf_counter()
    for i in range(0, 10_000, 256):
        chunk = rows[i : i + 256]
        catalog.record("j", "c", [FileOutcome(r[0], "indexed") for r in chunk], chunk)
    known = catalog.known_files_under("c", "/p")
    elapsed = time.perf_counter() - start
    assert len(known) == 10_000
    assert elapsed < 2.0


def test_unfinished_jobs_are_listed_oldest_first(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    for job_id in ("a", "b", "c"):
        catalog.create_job(job_id, "col", "/p")
    catalog.set_job_status("a", JobStatus.RUNNING)
    catalog.set_job_status("b", JobStatus.COMPLETED)
    assert [j[0] for j in catalog.unfinished_jobs()] == ["a", "c"]
    assert [j.job_id for j in catalog.list_jobs()] == ["c", "b", "a"]


def test_finished_job_keeps_its_counters_and_errors_but_drops_successful_rows(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "c.db")
    catalog.create_job("j", "c", "/p")
    catalog.record(
        "j",
        "c",
        [FileOutcome("/p/a.jpg", "indexed"), FileOutcome("/p/b.jpg", "failed", "ERR_FILE_READ", "x")],
    )
    catalog.set_job_status("j", JobStatus.COMPLETED_WITH_ERRORS)
    job = catalog.get_job("j")
    assert job is not None and (job.indexed, job.failed, len(job.errors)) == (1, 1, 1)
    assert catalog.done_paths("j") == {"/p/b.jpg"}
