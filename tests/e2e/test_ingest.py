"""Ingesting folders through the HTTP API: outcomes, change detection, copies, roots, models, auth."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from servers import FOLLOW, REQUEST_TIMEOUT_S, Library, ShoeboxClient, build_library, free_port, write_photos
from shoebox.client import APIError


def _points(api: ShoeboxClient, collection: str) -> list[dict]:
    return [hit["payload"] for hit in api.images(per_page=500, collection=collection)["results"]]


def test_mixed_folder_ends_with_exact_outcomes_and_error_codes(
    ingest: ShoeboxClient, photo_root: Path
) -> None:
    lib: Library = build_library(photo_root)
    job = ingest.ingest_and_follow(photo_root, "mixed", **FOLLOW)

    assert job.status == "completed_with_errors"
    assert job.total_files == job.processed_files == lib.total
    assert job.indexed == len(lib.good)
    assert job.cached == len(lib.copies)  # same bytes as an indexed file: its vector is reused
    assert job.unchanged == 0
    assert {Path(e.file).name: e.code.value for e in job.errors} == lib.bad
    assert ingest.collection_info("mixed")["points_count"] == len(lib.good)


def test_payload_has_the_contract_fields_and_both_paths_of_a_copy(
    ingest: ShoeboxClient, photo_root: Path
) -> None:
    lib = build_library(photo_root)
    ingest.ingest_and_follow(photo_root, "payload", **FOLLOW)
    payloads = {Path(path).name: p for p in _points(ingest, "payload") for path in p["paths"]}

    plain = payloads["plain.JPG"]
    assert plain is payloads["same_as_plain.jpg"]
    assert plain["paths"] == sorted([str(lib.good[1]), str(lib.copies[0])])
    assert plain["path"] == plain["paths"][0]
    assert str(photo_root) in plain["folders"]
    exif = payloads["with_exif.jpg"]
    assert (exif["camera_make"], exif["format"], exif["width"], exif["height"]) == ("Canon", "jpg", 400, 300)
    assert exif["taken_ts"] is not None and exif["taken_at"].startswith("2021-06-01")
    assert payloads["with_preview.dng"]["format"] == "dng"
    assert payloads["phone.heic"]["format"] == "heic"
    assert all(p["thumbnail"] and p["model_name"] for p in payloads.values())


def test_reingest_of_an_unchanged_folder_needs_no_ml_service(
    services, clients, ml_service, photo_root: Path, tmp_path: Path
) -> None:
    build_library(photo_root)
    data = tmp_path / "data"
    first = services("ingest", data, [ml_service.url], [photo_root])
    done = clients(first.url).ingest_and_follow(photo_root, "again", **FOLLOW)
    first.stop()

    # Same catalog and store, but no ML service anywhere: any ML call would fail the files.
    offline = services("ingest", data, [f"http://127.0.0.1:{free_port()}"], [photo_root])
    again = clients(offline.url).ingest_and_follow(photo_root, "again", **FOLLOW)
    assert again.status == "completed_with_errors"  # the bad files fail again, nothing else
    assert again.unchanged == done.indexed + done.cached
    assert again.indexed == again.cached == 0
    assert again.failed == done.failed


def test_modified_file_is_embedded_again_and_replaces_its_old_point(
    ingest: ShoeboxClient, photo_root: Path
) -> None:
    from shoebox.devtools import photos

    paths = write_photos(photo_root, 3)
    ingest.ingest_and_follow(photo_root, "mod", **FOLLOW)
    old = {p["path"]: p["sha256"] for p in _points(ingest, "mod")}
    photos.write_jpeg(paths[0], photos.synthetic_photo(320, 240, seed=99))

    job = ingest.ingest_and_follow(photo_root, "mod", **FOLLOW)
    assert (job.indexed, job.unchanged, job.cached) == (1, 2, 0)
    new = {p["path"]: p["sha256"] for p in _points(ingest, "mod")}
    assert len(new) == 3 and new[str(paths[0])] != old[str(paths[0])]


def test_copied_file_adds_a_path_to_the_existing_point(ingest: ShoeboxClient, photo_root: Path) -> None:
    paths = write_photos(photo_root / "a", 2)
    ingest.ingest_and_follow(photo_root, "copy", **FOLLOW)
    copy = photo_root / "b" / "copy.jpg"
    copy.parent.mkdir()
    shutil.copyfile(paths[0], copy)

    job = ingest.ingest_and_follow(photo_root, "copy", **FOLLOW)
    assert (job.cached, job.unchanged, job.indexed) == (1, 2, 0)
    points = _points(ingest, "copy")
    assert len(points) == 2
    (both,) = [p for p in points if len(p["paths"]) == 2]
    assert sorted(both["paths"]) == [str(paths[0]), str(copy)]


def test_deleted_file_leaves_the_collection_on_the_next_ingest(
    ingest: ShoeboxClient, photo_root: Path
) -> None:
    paths = write_photos(photo_root, 3)
    shutil.copyfile(paths[1], photo_root / "copy_of_1.jpg")
    ingest.ingest_and_follow(photo_root, "gone", **FOLLOW)
    paths[0].unlink()
    (photo_root / "copy_of_1.jpg").unlink()

    job = ingest.ingest_and_follow(photo_root, "gone", **FOLLOW)
    assert (job.total_files, job.unchanged) == (2, 2)
    assert sorted(p["paths"] for p in _points(ingest, "gone")) == [[str(paths[1])], [str(paths[2])]]


def test_two_jobs_on_one_collection_run_one_after_the_other(ingest: ShoeboxClient, photo_root: Path) -> None:
    write_photos(photo_root / "one", 12, seed=0)
    write_photos(photo_root / "two", 12, seed=100)
    first = ingest.ingest(photo_root / "one", "shared")["job_id"]
    second = ingest.ingest(photo_root / "two", "shared")["job_id"]
    a, b = ingest.follow(first, **FOLLOW), ingest.follow(second, **FOLLOW)

    assert a.status == b.status == "completed"
    assert b.started_at >= a.finished_at
    assert ingest.collection_info("shared")["points_count"] == 24


def test_folder_outside_the_allowed_roots_is_refused(
    ingest: ShoeboxClient, photo_root: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (photo_root / "escape").symlink_to(outside)
    for path in (outside, photo_root / ".." / "elsewhere", photo_root / "escape"):
        r = ingest.request("POST", "/api/v1/ingest/", json={"directory_path": str(path)})
        assert r.status_code == 403, r.text
        assert r.json()["error"]["code"] == "ERR_PATH_NOT_ALLOWED"


def test_dead_ml_endpoint_in_the_list_is_skipped_for_a_live_one(
    services, clients, ml_service, photo_root: Path, tmp_path: Path
) -> None:
    write_photos(photo_root, 4)
    dead = f"http://127.0.0.1:{free_port()}"
    proc = services("ingest", tmp_path / "data", [dead, ml_service.url], [photo_root])
    job = clients(proc.url).ingest_and_follow(photo_root, "two-ml", **FOLLOW)
    assert (job.status, job.indexed) == ("completed", 4)


def test_missing_folder_is_not_found(ingest: ShoeboxClient, photo_root: Path) -> None:
    r = ingest.request("POST", "/api/v1/ingest/", json={"directory_path": str(photo_root / "nope")})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "ERR_PATH_NOT_FOUND"


def test_ingesting_with_another_model_is_refused(
    services, clients, ml_service, tiny_model_dir: Path, photo_root: Path, tmp_path: Path
) -> None:
    write_photos(photo_root, 2)
    other_model = shutil.copytree(tiny_model_dir, tmp_path / "another-model")
    other_ml = services("ml", other_model, tmp_path / "ml-other")
    data = tmp_path / "data"
    proc = services("ingest", data, [ml_service.url], [photo_root])
    clients(proc.url).ingest_and_follow(photo_root, "fixed", **FOLLOW)
    proc.stop()

    proc = services("ingest", data, [other_ml.url], [photo_root])
    with pytest.raises(APIError) as refused:
        clients(proc.url).ingest(photo_root, "fixed")
    assert refused.value.status == 409
    assert refused.value.code == "ERR_MODEL_MISMATCH"
    assert "another-model" in refused.value.message


def test_api_key_is_required_on_the_ingest_api_and_sent_to_the_ml_service(
    services, clients, tiny_model_dir: Path, photo_root: Path, tmp_path: Path
) -> None:
    write_photos(photo_root, 2)
    ml = services("ml", tiny_model_dir, tmp_path / "ml-key", api_key="ml-secret")
    proc = services(
        "ingest", tmp_path / "data", [ml.url], [photo_root], api_key="ingest-secret", ml_api_key="ml-secret"
    )
    anonymous, wrong = clients(proc.url), clients(proc.url, "nope")
    assert anonymous.request("GET", "/api/v1/collections").status_code == 401
    with pytest.raises(APIError) as refused:
        wrong.jobs()
    assert refused.value.code == "ERR_UNAUTHORIZED"
    assert anonymous.request("GET", "/health").status_code == 200

    job = clients(proc.url, "ingest-secret").ingest_and_follow(photo_root, "keyed", **FOLLOW)
    assert (job.status, job.indexed) == ("completed", 2)


def test_job_list_is_newest_first_and_cache_clear_counts_entries(
    ingest: ShoeboxClient, photo_root: Path
) -> None:
    write_photos(photo_root, 3)
    first = ingest.ingest_and_follow(photo_root, "one", **FOLLOW)
    time.sleep(0.01)
    second = ingest.ingest_and_follow(photo_root, "two", **FOLLOW)
    jobs = ingest.jobs()
    assert [j.job_id for j in jobs[:2]] == [second.job_id, first.job_id]
    assert second.cached == 3  # another collection, same model: the embedding cache answers
    assert ingest.clear_cache() == {"cleared": 3}


def test_collections_can_be_created_selected_described_and_deleted(
    ingest: ShoeboxClient, photo_root: Path
) -> None:
    write_photos(photo_root, 2)
    assert ingest.request("POST", "/api/v1/collections", json={"collection_name": "trips"}).status_code == 201
    with pytest.raises(APIError) as again:
        ingest.create_collection("trips")
    assert again.value.status == 409 and again.value.code == "ERR_CONFLICT"
    assert ingest.select_collection("trips") == {"selected_collection": "trips"}

    # No collection named: the selected one. The submit's own answer, as sent.
    submitted = ingest.request("POST", "/api/v1/ingest/", json={"directory_path": str(photo_root)})
    assert submitted.status_code == 202, submitted.text
    assert submitted.json()["collection_name"] == "trips"
    job = ingest.follow(submitted.json()["job_id"], **FOLLOW)
    assert job.collection_name == "trips"
    info = ingest.collection_info("trips")
    assert info["points_count"] == 2
    assert info["model_name"] and info["embedding_dim"] > 0 and info["created_at"]
    assert ingest.collections() == ["trips"]
    health = ingest.health(timeout=REQUEST_TIMEOUT_S)
    assert health is not None
    assert health["ml"]["reachable"] is True and health["vector_db"] == "qdrant-edge"

    assert ingest.delete_collection("trips") == {"deleted": "trips"}
    assert ingest.collections() == []
    with pytest.raises(APIError) as gone:
        ingest.delete_collection("trips")
    assert gone.value.status == 404
