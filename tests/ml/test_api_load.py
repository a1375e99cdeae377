"""Under load: a full queue answers 429 at once, searches are not stuck behind bulk batches,
and a client that goes away does not leave its work queued."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from shoebox.devtools import photos
from shoebox.launcher import ServiceProcess

MULTIPART = "/api/v1/batch_embed_and_caption_multipart"


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return photos.jpeg_bytes(photos.synthetic_photo(1024, 768, seed=7))


@pytest.fixture(scope="module")
def slow_png(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A PNG that takes tens of milliseconds to decode (PNG has no draft mode, unlike JPEG)."""
    path = photos.write_png(
        tmp_path_factory.mktemp("slow") / "slow.png", photos.synthetic_photo(1200, 900, seed=8)
    )
    return path.read_bytes()


def parts(data: bytes, n: int, name: str = "photo.jpg") -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("files", (f"{i}-{name}", data, "application/octet-stream")) for i in range(n)]


async def flood(
    url: str, files: list, requests: int, headers: dict[str, str] | None = None
) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as client:
        return await asyncio.gather(*(client.post(MULTIPART, files=files) for _ in range(requests)))


def queue_depth(service: ServiceProcess) -> int:
    return httpx.get(service.url + "/health").json()["queue_depth"]


def wait_for_empty_queue(service: ServiceProcess, timeout: float) -> float:
    began = time.monotonic()
    while queue_depth(service) != 0:
        if time.monotonic() - began > timeout:
            raise AssertionError(f"queue still holds {queue_depth(service)} images after {timeout}s")
        time.sleep(0.02)
    return time.monotonic() - began


def test_a_flood_beyond_the_queue_gets_429_with_retry_after_and_never_a_5xx(
    secured_ml_service: ServiceProcess, jpeg: bytes, ml_limits: dict[str, int]
) -> None:
    headers = {"X-API-Key": secured_ml_service.env["SHOEBOX_API_KEY"]}
    per_request = ml_limits["flood_max_queue"] // 2
    responses = asyncio.run(flood(secured_ml_service.url, parts(jpeg, per_request), 24, headers))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429}, statuses
    assert 200 in statuses
    busy = [r for r in responses if r.status_code == 429]
    assert busy, statuses
    for response in busy:
        assert response.json()["error"]["code"] == "ERR_BUSY"
        assert int(response.headers["Retry-After"]) >= 1
    for response in responses:
        if response.status_code == 200:
            assert all(item["error"] is None for item in response.json()["results"])
    wait_for_empty_queue(secured_ml_service, timeout=10)


def test_a_request_larger_than_the_queue_is_refused_as_too_large(
    secured_ml_service: ServiceProcess, jpeg: bytes, ml_limits: dict[str, int]
) -> None:
    headers = {"X-API-Key": secured_ml_service.env["SHOEBOX_API_KEY"]}
    response = httpx.post(
        secured_ml_service.url + MULTIPART,
        files=parts(jpeg, ml_limits["flood_max_queue"] + 1),
        headers=headers,
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "ERR_VALIDATION"


def test_a_text_query_during_a_bulk_flood_answers_long_before_the_flood_ends(
    ml_service: ServiceProcess, jpeg: bytes
) -> None:
    async def main() -> tuple[float, float, list[httpx.Response]]:
        began = time.monotonic()
        bulk = asyncio.create_task(flood(ml_service.url, parts(jpeg, 32), 12))
        await asyncio.sleep(0.3)  # the flood is being decoded and embedded
        async with httpx.AsyncClient(base_url=ml_service.url, timeout=60) as client:
            asked = time.monotonic()
            response = await client.post("/api/v1/embed_text", json={"text": "a dog"})
            text_latency = time.monotonic() - asked
        assert response.status_code == 200
        responses = await bulk
        return text_latency, time.monotonic() - began, responses

    text_latency, flood_seconds, responses = asyncio.run(main())
    assert all(r.status_code == 200 for r in responses)
    assert text_latency < flood_seconds / 3, (text_latency, flood_seconds)


# With a key the API-key middleware sits between the server and the endpoint: the disconnect
# must reach the endpoint through it too.
@pytest.mark.parametrize("api_key", ["", "secret"], ids=["no-key", "behind-api-key-middleware"])
def test_a_client_that_disconnects_does_not_keep_its_work_queued(
    launch_ml: Callable[..., ServiceProcess], slow_png: bytes, tmp_path: Path, api_key: str
) -> None:
    # One decode worker makes the request slow enough to walk away from in the middle.
    service = launch_ml(
        tmp_path / "probe",
        tmp_path / "ml.log",
        SHOEBOX_DECODE_WORKERS="1",
        SHOEBOX_SAFE_CLIP_BATCH="8",
        SHOEBOX_API_KEY=api_key,
    )
    headers = {"X-API-Key": api_key} if api_key else {}
    files = parts(slow_png, 40, "slow.png")
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(service.url + MULTIPART, files=files, headers=headers, timeout=httpx.Timeout(60, read=0.3))
    left = time.monotonic()
    wait_for_empty_queue(service, timeout=10)
    drained = time.monotonic() - left
    # Nothing is admitted any more and nothing was embedded: the abandoned work was dropped, not finished.
    assert httpx.get(service.url + "/health").json()["images_embedded"] == 0
    assert "client disconnected" in service.tail_log(20_000)
    # Control: the same request, waited for, takes much longer than the abandoned one took to drain.
    began = time.monotonic()
    response = httpx.post(service.url + MULTIPART, files=files, headers=headers, timeout=120)
    full = time.monotonic() - began
    assert response.status_code == 200
    assert all(item["error"] is None for item in response.json()["results"])
    assert drained < full / 2, (drained, full)
