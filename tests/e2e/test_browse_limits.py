"""Browse routes under load and tampering, through HTTP on real services.

A full decode (RAW, HEIC, TIFF rendition, lost thumbnail) happens once per content, and never
more than `browse_decode_concurrency` at once; a file is served only while its real path is
inside the allowed roots; `immutable` only for bytes that are still the indexed ones; the event
loop answers /health while decodes run; housekeeping prunes orphaned thumbnails and old job
details.
"""

from __future__ import annotations

import os
import shutil
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from servers import FOLLOW, ServiceProcess, ShoeboxClient, write_photos
from shoebox.devtools import photos


def _tiff(path: Path, width: int, height: int, seed: int) -> Path:
    """A big TIFF, fast to make (a small synthetic photo scaled up), slow to decode (deflate)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    photos.synthetic_photo(160, 120, seed=seed).resize((width, height)).save(path, compression="tiff_deflate")
    return path


@pytest.fixture
def browse(
    services, clients, ml_service: ServiceProcess, photo_root: Path, tmp_path: Path
) -> Iterator[Callable[..., tuple[ShoeboxClient, httpx.Client]]]:
    """Start an ingestion service (extra env), ingest `photo_root` into `lib`; its client and a raw HTTP client."""
    raw: list[httpx.Client] = []

    def start(env: dict[str, str] | None = None) -> tuple[ShoeboxClient, httpx.Client]:
        proc = services("ingest", tmp_path / "data", [ml_service.url], [photo_root], env=env)
        client = clients(proc.url)
        client.follow(client.ingest(photo_root, "lib")["job_id"], **FOLLOW)
        raw.append(httpx.Client(base_url=proc.url, timeout=60))
        return client, raw[-1]

    yield start
    for http in raw:
        http.close()


def _ids(client: ShoeboxClient, collection: str = "lib") -> dict[str, str]:
    """File name → image id, of every image of the collection."""
    return {Path(h["path"]).name: h["id"] for h in client.images(collection=collection, per_page=500)["results"]}


def _browse_stats(http: httpx.Client) -> dict[str, Any]:
    return http.get("/health").json()["browse"]


def test_a_rendition_is_decoded_once_then_served_from_the_cache(browse, photo_root: Path) -> None:
    _tiff(photo_root / "scan.tif", 1200, 900, seed=1)
    client, http = browse()
    image_id = _ids(client)["scan.tif"]
    first = http.get(f"/api/v1/images/{image_id}/image")
    second = http.get(f"/api/v1/images/{image_id}/image")
    assert first.status_code == second.status_code == 200
    assert (first.headers["x-rendition-cache"], second.headers["x-rendition-cache"]) == ("miss", "hit")
    assert first.content == second.content and first.content[:2] == b"\xff\xd8"
    assert "immutable" in second.headers["cache-control"]
    assert _browse_stats(http)["decodes"] == 1


def test_full_decodes_at_once_never_exceed_the_decode_limit(browse, photo_root: Path) -> None:
    for i in range(6):
        _tiff(photo_root / f"big_{i}.tif", 2400, 1800, seed=i)
    client, http = browse({"SHOEBOX_BROWSE_DECODE_CONCURRENCY": "2", "SHOEBOX_BROWSE_DECODE_WAIT_S": "120"})
    ids = list(_ids(client).values())
    with ThreadPoolExecutor(len(ids)) as pool:
        answers = list(pool.map(lambda i: http.get(f"/api/v1/images/{i}/image"), ids))
    assert [a.status_code for a in answers] == [200] * len(ids)
    stats = _browse_stats(http)
    assert stats["decodes"] == len(ids)
    assert 1 <= stats["decoding_peak"] <= 2


def test_a_request_that_waits_past_the_decode_wait_gets_busy_with_retry_after(browse, photo_root: Path) -> None:
    for i in range(4):
        _tiff(photo_root / f"huge_{i}.tif", 5000, 3750, seed=i)
    client, http = browse({"SHOEBOX_BROWSE_DECODE_CONCURRENCY": "1", "SHOEBOX_BROWSE_DECODE_WAIT_S": "0.05"})
    ids = list(_ids(client).values())
    with ThreadPoolExecutor(len(ids)) as pool:
        answers = list(pool.map(lambda i: http.get(f"/api/v1/images/{i}/image"), ids))
    busy = [a for a in answers if a.status_code == 503]
    assert busy and any(a.status_code == 200 for a in answers)
    assert busy[0].json()["error"]["code"] == "ERR_BUSY"
    assert int(busy[0].headers["retry-after"]) >= 1


def test_health_answers_at_once_while_full_decodes_run(browse, photo_root: Path) -> None:
    for i in range(2):
        _tiff(photo_root / f"huge_{i}.tif", 6000, 4500, seed=i)
    client, http = browse({"SHOEBOX_BROWSE_DECODE_CONCURRENCY": "2"})
    ids = list(_ids(client).values())
    done = threading.Event()
    decode_s: list[float] = []

    def fetch_all() -> None:
        start = time.monotonic()
        with ThreadPoolExecutor(len(ids)) as pool:
            list(pool.map(lambda i: http.get(f"/api/v1/images/{i}/image"), ids))
        decode_s.append(time.monotonic() - start)
        done.set()

    threading.Thread(target=fetch_all, daemon=True).start()
    time.sleep(0.1)
    latencies = []
    while not done.is_set():
        start = time.monotonic()
        assert http.get("/health").status_code == 200
        latencies.append(time.monotonic() - start)
        time.sleep(0.05)
    done.wait(60)
    assert decode_s[0] > 0.5 and len(latencies) >= 3  # the decodes were slow enough to mean something
    assert statistics.median(latencies) < 0.2


def test_a_stored_path_swapped_for_a_link_out_of_the_roots_is_refused(browse, photo_root: Path, tmp_path: Path) -> None:
    [photo] = write_photos(photo_root, 1)
    client, http = browse()
    image_id = _ids(client)[photo.name]
    outside = tmp_path / "outside" / "secret.jpg"
    outside.parent.mkdir()
    shutil.copyfile(photo, outside)  # same size: only the real path can tell
    photo.unlink()
    photo.symlink_to(outside)
    answer = http.get(f"/api/v1/images/{image_id}/image")
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "ERR_PATH_NOT_ALLOWED"


def test_the_next_stored_path_is_served_when_one_leads_out_of_the_roots(
    browse, photo_root: Path, tmp_path: Path
) -> None:
    [photo] = write_photos(photo_root, 1)
    copy = photo_root / "z_copy.jpg"
    shutil.copyfile(photo, copy)
    client, http = browse()
    image_id = _ids(client)[photo.name]
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"\xff\xd8 not the photo " + b"x" * (photo.stat().st_size - 17))
    photo.unlink()
    photo.symlink_to(outside)
    answer = http.get(f"/api/v1/images/{image_id}/image")
    assert answer.status_code == 200
    assert answer.content == copy.read_bytes()


def test_a_file_touched_since_the_ingest_is_not_sent_as_immutable(browse, photo_root: Path) -> None:
    [photo] = write_photos(photo_root, 1)
    client, http = browse()
    image_id = _ids(client)[photo.name]
    assert "immutable" in http.get(f"/api/v1/images/{image_id}/image").headers["cache-control"]
    st = photo.stat()
    os.utime(photo, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    answer = http.get(f"/api/v1/images/{image_id}/image")
    assert answer.status_code == 200
    assert "immutable" not in answer.headers["cache-control"]
    assert "no-cache" in answer.headers["cache-control"]


def test_a_lost_thumbnail_is_remade_once_and_written_back(browse, photo_root: Path, tmp_path: Path) -> None:
    [photo] = write_photos(photo_root, 1)
    client, http = browse()
    image_id = _ids(client)[photo.name]
    [thumb] = (tmp_path / "data" / "thumbs").rglob("*.jpg")
    thumb.unlink()
    first = http.get(f"/api/v1/images/{image_id}/thumbnail")
    assert first.status_code == 200 and first.headers["x-rendition-cache"] == "miss"
    assert thumb.is_file()
    second = http.get(f"/api/v1/images/{image_id}/thumbnail")
    assert second.headers["x-rendition-cache"] == "hit" and second.content == first.content


def test_deleting_a_collection_deletes_the_thumbnails_no_other_collection_holds(
    browse, photo_root: Path, tmp_path: Path
) -> None:
    shared = write_photos(photo_root / "shared", 2, seed=0)
    own = write_photos(photo_root / "own", 2, seed=100)
    client, _ = browse({"SHOEBOX_THUMBNAIL_GRACE_S": "0"})  # `lib` holds both folders
    client.follow(client.ingest(photo_root / "shared", "other")["job_id"], **FOLLOW)
    thumbs = tmp_path / "data" / "thumbs"
    assert len(list(thumbs.rglob("*.jpg"))) == len(shared) + len(own)
    client.delete_collection("lib")
    deadline = time.monotonic() + 20
    while len(list(thumbs.rglob("*.jpg"))) > len(shared) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(list(thumbs.rglob("*.jpg"))) == len(shared)
    for image_id in _ids(client, "other").values():
        assert client.thumbnail(image_id)[:2] == b"\xff\xd8"


def test_details_of_jobs_beyond_the_newest_n_are_pruned_after_a_job(browse, photo_root: Path) -> None:
    write_photos(photo_root, 1)
    photos.write_zero_byte(photo_root / "empty.jpg")
    client, _ = browse({"SHOEBOX_JOB_DETAILS_KEEP": "1"})
    [first] = client.jobs()
    second = client.follow(client.ingest(photo_root, "lib")["job_id"], **FOLLOW)
    assert second.failed == 1 and second.errors and second.logs
    deadline = time.monotonic() + 20
    while client.job(first.job_id).logs and time.monotonic() < deadline:
        time.sleep(0.1)
    old = client.job(first.job_id)
    assert old.logs == [] and old.errors == [] and old.failed == 1
    assert client.job(second.job_id).errors
