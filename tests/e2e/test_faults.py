"""Faults during an ingest, on real service processes on loopback: kill -9 of either service at
random points, an ML service answering 429, 503 or garbage for a while, and a full data disk.

After each, the books must balance and nothing may be half-written: every file on disk is known
to the catalog exactly once, the store holds one point per distinct content, no job is left
running, and the catalog, the store and the embedding cache all open and pass their checks
(`reliability.audit_data_dir`). The kill -9 of the store mid-write is `test_store_durability.py`.

The default run keeps a short version of each; `scripts/test -m long` runs the long kill series
(2,000 files, 10 kills of each service) whose figures the README quotes.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path

import pytest
from reliability import (
    GARBAGE,
    GARBAGE_KINDS,
    TOO_MANY,
    UNAVAILABLE,
    FaultProxy,
    Phase,
    accounting_problems,
    audit_data_dir,
    record_figures,
)

from servers import POLL_S, ShoeboxClient, free_port, write_photos
from shoebox.protocol import Job

# Small ML batches, one in flight: a job long enough to be hit at many points.
SLOW_INGEST = {"SHOEBOX_ML_INFERENCE_BATCH_SIZE": "4", "SHOEBOX_ML_MAX_INFLIGHT": "1"}
PHOTO_SIZE = (96, 72)  # small JPEGs: 2,000 of them ingest in tens of seconds on 2 cores


def _job_when(api: ShoeboxClient, job_id: str, done: int, timeout: float) -> Job:
    """The job once it has `done` files finished (or has ended); tolerates a service being restarted."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            job = api.job(job_id)
            if job.processed_files >= done or job.status.finished:
                return job
        except Exception:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} did not reach {done} files in {timeout} s")
        time.sleep(0.02)


# ---------------------------------------------------------------- kill -9 at random points


@pytest.mark.parametrize(
    ("n_files", "kills_each"),
    [
        pytest.param(200, 1, id="200-files-1-kill-each"),
        pytest.param(2000, 10, id="2000-files-10-kills-each", marks=pytest.mark.long),
    ],
)
def test_kill_9_of_either_service_at_random_points_loses_no_file(
    n_files: int, kills_each: int, services, clients, tiny_model_dir: Path, photo_root: Path, tmp_path: Path
) -> None:
    """SIGKILL of the ML service and of the ingestion service, each `kills_each` times at random
    points of one ingest, each followed by a restart on the same port (and data dir): the job goes
    on (ML: the ingest's client retries; ingestion: the job resumes at start-up) and ends
    `completed` with every file indexed once, no file failed, nothing recorded lost."""
    seed = int(os.environ.get("SHOEBOX_FAULT_SEED") or time.time_ns() % 1_000_000)
    rng = random.Random(seed)
    write_photos(photo_root, n_files, size=PHOTO_SIZE)
    data, ml_dir = tmp_path / "data", tmp_path / "ml"
    ml_port, ingest_port = free_port(), free_port()
    ml = services("ml", tiny_model_dir, ml_dir, port=ml_port)
    ingest = services("ingest", data, [ml.url], [photo_root], port=ingest_port, env=SLOW_INGEST)
    api = clients(ingest.url)

    kinds = ["ml"] * kills_each + ["ingest"] * kills_each
    rng.shuffle(kinds)
    targets = sorted(rng.sample(range(n_files // 20, n_files * 7 // 10), len(kinds)))
    started = time.monotonic()
    job_id = api.ingest(photo_root, "kills")["job_id"]
    kills: list[dict] = []
    for kind, target in zip(kinds, targets, strict=True):
        before = _job_when(api, job_id, target, timeout=180)
        assert not before.status.finished, f"the job ended before kill {len(kills) + 1} (seed {seed})"
        killed_at = time.monotonic()
        if kind == "ml":
            ml.kill9()
            ml = services("ml", tiny_model_dir, ml_dir, port=ml_port)
        else:
            ingest.kill9()
            ingest = services("ingest", data, [ml.url], [photo_root], port=ingest_port, env=SLOW_INGEST)
        # Nothing recorded before the kill may be gone after it (a restarted service reads its books).
        first_seen = _job_when(api, job_id, 0, timeout=60)
        after = _job_when(api, job_id, before.processed_files + 1, timeout=180)
        kills.append(
            {
                "service": kind,
                "files_done": before.processed_files,
                "recovery_s": round(time.monotonic() - killed_at, 2),
                "files_lost": max(0, before.processed_files - first_seen.processed_files)
                + (after.failed - before.failed),
            }
        )

    job = api.follow(job_id, poll_s=POLL_S, timeout=300, tolerate_unreachable=True)
    elapsed = time.monotonic() - started
    ingest.stop()  # a clean stop: the audit opens the catalog, the store and the cache itself
    audit = audit_data_dir(data, "kills", photo_root)
    record_figures(
        "kill9",
        {
            "files": n_files,
            "seed": seed,
            "kills": kills,
            "ml_kills": kinds.count("ml"),
            "ingest_kills": kinds.count("ingest"),
            "recovery_s_max": max(k["recovery_s"] for k in kills),
            "recovery_s_mean": round(sum(k["recovery_s"] for k in kills) / len(kills), 2),
            "files_lost": sum(k["files_lost"] for k in kills),
            "job_s": round(elapsed, 1),
            "points": audit.points,
            "distinct_contents": audit.distinct_contents,
        },
    )
    assert job.status == "completed", (seed, job.logs[-5:])
    assert accounting_problems(job, n_files) == []
    assert job.failed == 0 and job.indexed + job.cached == n_files
    assert [k for k in kills if k["files_lost"]] == [], seed
    assert audit.problems == [], (seed, audit.problems)
    assert audit.known_files == audit.files_on_disk == n_files
    assert audit.points == audit.distinct_contents == n_files


# ---------------------------------------------------------------- an ML service answering faults


def test_ml_answering_429_then_503_then_garbage_for_a_short_window_loses_no_file(
    services, clients, tiny_model_dir: Path, photo_root: Path, tmp_path: Path
) -> None:
    """Between the two services, a proxy answers every request with 429 (Retry-After), then 503,
    then malformed answers (not JSON, a truncated body, a wrong shape) for a window shorter than
    `SHOEBOX_ML_UNAVAILABLE_TIMEOUT_S`, mid-ingest: the ingest waits it out and indexes every file."""
    n_files = 120
    write_photos(photo_root, n_files, size=PHOTO_SIZE)
    ml = services("ml", tiny_model_dir, tmp_path / "ml")
    window = [Phase(TOO_MANY, requests=2), Phase(UNAVAILABLE, requests=3), Phase(GARBAGE, requests=3)]
    with FaultProxy(ml.url, window, arm_after=3) as proxy:
        ingest = services(
            "ingest",
            tmp_path / "data",
            [proxy.url],
            [photo_root],
            env={**SLOW_INGEST, "SHOEBOX_ML_UNAVAILABLE_TIMEOUT_S": "30"},
        )
        api = clients(ingest.url)
        started = time.monotonic()
        job = api.ingest_and_follow(photo_root, "faults", poll_s=POLL_S, timeout=120)
        elapsed = time.monotonic() - started
        served = dict(proxy.served)
    ingest.stop()
    audit = audit_data_dir(tmp_path / "data", "faults", photo_root)
    record_figures(
        "ml_faults_short_window",
        {
            "files": n_files,
            "window_s": proxy.window_s,
            "served": served,
            "job_s": round(elapsed, 1),
            "failed": job.failed,
            "points": audit.points,
        },
    )
    for fault in (TOO_MANY, UNAVAILABLE, *GARBAGE_KINDS):
        assert served.get(fault, 0) >= 1, (
            f"the proxy never answered {fault}: the test proves nothing ({served})"
        )
    assert job.status == "completed", job.logs[-5:]
    assert job.indexed == n_files and job.failed == 0
    assert accounting_problems(job, n_files) == []
    assert audit.problems == []
    assert audit.points == n_files


def test_ml_failing_past_the_unavailable_timeout_fails_the_rest_with_err_ml_unavailable_then_a_reingest_indexes_them(
    services, clients, tiny_model_dir: Path, photo_root: Path, tmp_path: Path
) -> None:
    """A window of 503s and garbage longer than `SHOEBOX_ML_UNAVAILABLE_TIMEOUT_S`: the job fails,
    its unfinished files under `ERR_ML_UNAVAILABLE` and only that, every file accounted for; once
    the ML service answers again, a new ingest of the folder indexes exactly those files."""
    n_files = 120
    write_photos(photo_root, n_files, size=PHOTO_SIZE)
    ml = services("ml", tiny_model_dir, tmp_path / "ml")
    window = [Phase(UNAVAILABLE, seconds=4.0), Phase(GARBAGE, seconds=4.0)]
    with FaultProxy(ml.url, window, arm_after=3) as proxy:
        ingest = services(
            "ingest",
            tmp_path / "data",
            [proxy.url],
            [photo_root],
            env={**SLOW_INGEST, "SHOEBOX_ML_UNAVAILABLE_TIMEOUT_S": "2"},
        )
        api = clients(ingest.url)
        first = api.ingest_and_follow(photo_root, "outage", poll_s=POLL_S, timeout=120)
        deadline = time.monotonic() + 30
        while not proxy.window_over() and time.monotonic() < deadline:
            time.sleep(0.1)
        again = api.ingest_and_follow(photo_root, "outage", poll_s=POLL_S, timeout=120)
        served = dict(proxy.served)
    ingest.stop()
    audit = audit_data_dir(tmp_path / "data", "outage", photo_root)
    record_figures(
        "ml_faults_long_window",
        {
            "files": n_files,
            "window_s": proxy.window_s,
            "timeout_s": 2,
            "served": served,
            "failed_first": first.failed,
            "indexed_first": first.indexed,
            "indexed_again": again.indexed,
        },
    )
    assert first.status == "failed"
    assert accounting_problems(first, n_files) == []
    assert 0 < first.failed < n_files, "the window did not fall mid-job: the test proves nothing"
    assert {e.code.value for e in first.errors} == {"ERR_ML_UNAVAILABLE"}
    assert again.status == "completed", again.logs[-5:]
    assert again.indexed == first.failed and again.unchanged == first.indexed
    assert audit.problems == []
    assert audit.points == n_files


# ---------------------------------------------------------------- a full data disk


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 40 MiB tmpfs, unmounted after the test (needs root and mount)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {r.stderr.strip()}")
    try:
        yield mount_point
    finally:
        for _ in range(20):  # the service may still be closing its files
            if subprocess.run(["umount", str(mount_point)], capture_output=True).returncode == 0:
                break
            time.sleep(0.5)


def test_data_disk_full_fails_the_ingest_with_err_disk_full_keeps_search_up_and_recovers(
    services, clients, tiny_model_dir: Path, photo_root: Path, tmp_path: Path, small_disk: Path
) -> None:
    """The data dir on a small tmpfs that a filler file fills mid-ingest: the job ends `failed`, its
    unfinished files under `ERR_DISK_FULL` (never a crash of the service: the embedded store writes
    through mmap, where a full disk is a SIGBUS); searches still answer 200 on what is indexed; once
    the filler is deleted, a new ingest completes and the books and stores are whole."""
    n_files = 200
    write_photos(photo_root, n_files, size=PHOTO_SIZE)
    ml = services("ml", tiny_model_dir, tmp_path / "ml")
    ingest = services(
        "ingest",
        small_disk,
        [ml.url],
        [photo_root],
        env={**SLOW_INGEST, "SHOEBOX_MIN_FREE_MB": "8"},  # a 40 MiB disk: the default margin is 128
        log_dir=tmp_path,
    )
    api = clients(ingest.url)
    job_id = api.ingest(photo_root, "full")["job_id"]
    before = _job_when(api, job_id, n_files // 4, timeout=120)
    assert not before.status.finished, "the job ended before the disk filled: the test proves nothing"
    filler = small_disk / "filler"
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    with open(filler, "wb") as fh:  # leave 1 MiB: less than the store needs to write safely
        fh.write(b"\0" * max(0, free - 2**20))
    job = api.follow(job_id, poll_s=POLL_S, timeout=120)

    assert ingest.proc.poll() is None, f"the service died: {ingest.tail_log()}"
    search = api.request("POST", "/api/v1/search/text", json={"query": "a photo", "collection_name": "full"})
    points_while_full = api.collection_info("full")["points_count"]
    record_figures(
        "disk_full",
        {
            "files": n_files,
            "done_when_filled": before.processed_files,
            "indexed": job.indexed,
            "failed": job.failed,
            "codes": sorted({e.code.value for e in job.errors}),
            "search_status_while_full": search.status_code,
            "points_while_full": points_while_full,
        },
    )
    assert job.status == "failed", job.logs[-5:]
    assert accounting_problems(job, n_files) == []
    assert job.failed > 0 and {e.code.value for e in job.errors} == {"ERR_DISK_FULL"}
    assert any("disk" in line for line in job.logs[-3:]), job.logs[-3:]
    assert search.status_code == 200 and search.json()["results"]
    assert points_while_full == job.indexed

    # Space returns. The disk also grows: on tmpfs, reading the store's preallocated (sparse) files
    # through mmap allocates them, so the audit's own opening of the store needs their full size.
    filler.unlink()
    subprocess.run(["mount", "-o", "remount,size=256m", str(small_disk)], check=True)
    again = api.ingest_and_follow(photo_root, "full", poll_s=POLL_S, timeout=120)
    assert again.status == "completed", again.logs[-5:]
    assert again.indexed + again.cached == job.failed and again.unchanged == job.indexed
    ingest.stop()
    audit = audit_data_dir(small_disk, "full", photo_root)
    assert audit.problems == []
    assert audit.points == n_files
