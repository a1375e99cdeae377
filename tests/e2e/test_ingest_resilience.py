"""Ingest jobs under trouble: cancel, kill -9 of the service, the ML service dying or saturated."""

from __future__ import annotations

import time
from pathlib import Path

from servers import FOLLOW, POLL_S, ShoeboxClient, free_port, write_photos
from shoebox.protocol import Job

# Small batches and one in flight make a job long enough to interrupt on a fast machine.
SLOW_INGEST = {"SHOEBOX_ML_INFERENCE_BATCH_SIZE": "2", "SHOEBOX_ML_MAX_INFLIGHT": "1"}


def _wait_progress(api: ShoeboxClient, job_id: str, at_least: int, timeout: float = 60.0) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.job(job_id)
        if job.processed_files >= at_least or job.status.finished:
            return job
        time.sleep(0.02)
    raise TimeoutError(f"job {job_id} did not reach {at_least} files")


def test_cancel_stops_the_job_promptly_and_a_new_ingest_completes_it(
    services, clients, ml_service, photo_root: Path, tmp_path: Path
) -> None:
    write_photos(photo_root, 120, size=(160, 120))
    proc = services("ingest", tmp_path / "data", [ml_service.url], [photo_root], env=SLOW_INGEST)
    api = clients(proc.url)
    job_id = api.ingest(photo_root, "cancel")["job_id"]
    _wait_progress(api, job_id, 4)

    started = time.monotonic()
    r = api.request("POST", f"/api/v1/ingest/{job_id}/cancel")
    cancelled = api.follow(job_id, poll_s=POLL_S, timeout=10)
    assert r.status_code == 200
    assert cancelled.status == "cancelled"
    assert time.monotonic() - started < 8  # generous for loaded CI machines; typically well under 1 s
    assert cancelled.processed_files < 120
    # Consistent: every file counted as finished is in the collection, no more.
    assert api.collection_info("cancel")["points_count"] == cancelled.indexed + cancelled.cached

    done = api.ingest_and_follow(photo_root, "cancel", **FOLLOW)
    assert done.status == "completed"
    assert done.unchanged + done.indexed == 120
    assert api.collection_info("cancel")["points_count"] == 120


def test_kill_9_mid_job_then_restart_resumes_to_exact_counts(
    services, clients, ml_service, photo_root: Path, tmp_path: Path
) -> None:
    write_photos(photo_root, 120, size=(160, 120))
    data, port = tmp_path / "data", free_port()
    proc = services("ingest", data, [ml_service.url], [photo_root], port=port, env=SLOW_INGEST)
    api = clients(proc.url)
    job_id = api.ingest(photo_root, "crash")["job_id"]
    before = _wait_progress(api, job_id, 10)
    assert before.status == "running"
    proc.kill9()

    services("ingest", data, [ml_service.url], [photo_root], port=port)
    job = api.follow(job_id, **FOLLOW, tolerate_unreachable=True)
    assert job.status == "completed"
    assert job.total_files == job.processed_files == 120
    # Files embedded but not yet recorded at the kill are found in the store again: reused, not re-embedded.
    assert job.indexed + job.cached == 120 and job.failed == 0
    assert api.collection_info("crash")["points_count"] == 120
    assert any("resuming" in line for line in job.logs)


def test_clean_stop_mid_job_leaves_it_running_and_the_next_start_finishes_it(
    services, clients, ml_service, photo_root: Path, tmp_path: Path
) -> None:
    write_photos(photo_root, 60, size=(160, 120))
    data, port = tmp_path / "data", free_port()
    proc = services("ingest", data, [ml_service.url], [photo_root], port=port, env=SLOW_INGEST)
    api = clients(proc.url)
    job_id = api.ingest(photo_root, "stop")["job_id"]
    _wait_progress(api, job_id, 6)
    proc.stop()  # SIGINT: the job must not be marked cancelled or failed

    services("ingest", data, [ml_service.url], [photo_root], port=port)
    job = api.follow(job_id, **FOLLOW, tolerate_unreachable=True)
    assert job.status == "completed"
    assert job.indexed + job.cached == 60
    assert api.collection_info("stop")["points_count"] == 60


def test_ml_service_killed_mid_job_then_restarted_lets_the_job_recover(
    services, clients, tiny_model_dir: Path, photo_root: Path, tmp_path: Path
) -> None:
    write_photos(photo_root, 60, size=(160, 120))
    ml_port = free_port()
    ml = services("ml", tiny_model_dir, tmp_path / "ml", port=ml_port)
    proc = services("ingest", tmp_path / "data", [ml.url], [photo_root], env=SLOW_INGEST)
    api = clients(proc.url)
    job_id = api.ingest(photo_root, "mlcrash")["job_id"]
    before = _wait_progress(api, job_id, 6)
    assert before.status == "running" and before.processed_files < 60
    ml.kill9()
    time.sleep(1.0)
    services("ml", tiny_model_dir, tmp_path / "ml", port=ml_port)

    job = api.follow(job_id, **FOLLOW)
    assert job.status == "completed", job.logs
    assert job.indexed == 60 and job.failed == 0


def test_ml_service_down_past_the_bound_fails_the_job_with_every_file_accounted(
    services, clients, photo_root: Path, tmp_path: Path
) -> None:
    write_photos(photo_root, 5)
    dead_ml = f"http://127.0.0.1:{free_port()}"
    proc = services(
        "ingest", tmp_path / "data", [dead_ml], [photo_root], env={"SHOEBOX_ML_UNAVAILABLE_TIMEOUT_S": "1.5"}
    )
    job = clients(proc.url).ingest_and_follow(photo_root, "noml", poll_s=POLL_S, timeout=60)
    assert job.status == "failed"
    assert job.processed_files == job.total_files == job.failed == 5
    assert {e.code.value for e in job.errors} == {"ERR_ML_UNAVAILABLE"}


def test_busy_ml_service_429_is_waited_out_not_failed(
    services, clients, tiny_model_dir: Path, photo_root: Path, tmp_path: Path
) -> None:
    write_photos(photo_root, 40, size=(160, 120))
    ml = services(
        "ml", tiny_model_dir, tmp_path / "ml-busy", env={"SHOEBOX_MAX_QUEUE": "4"}, safe_clip_batch=4
    )
    proc = services(
        "ingest",
        tmp_path / "data",
        [ml.url],
        [photo_root],
        env={"SHOEBOX_ML_INFERENCE_BATCH_SIZE": "4", "SHOEBOX_ML_MAX_INFLIGHT": "4"},
    )
    job = clients(proc.url).ingest_and_follow(photo_root, "busy", **FOLLOW)
    assert job.status == "completed"
    assert job.indexed == 40
    assert " 429 " in ml.tail_log(1_000_000), "the ML service never answered busy: the test proves nothing"
