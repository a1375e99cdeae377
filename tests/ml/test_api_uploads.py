"""The multipart batch endpoint reads its body as a stream, within per-request limits (ml/uploads.py)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from starlette.formparsers import MultiPartParser

from shoebox.devtools import photos
from shoebox.launcher import ServiceProcess
from shoebox.ml.app import create_app
from shoebox.ml.config import MLSettings

MULTIPART = "/api/v1/batch_embed_and_caption_multipart"
BOUNDARY = "shoebox-test-boundary"


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return photos.jpeg_bytes(photos.synthetic_photo(320, 240, seed=11))


def body(parts: list[tuple[str, str | None, bytes]], closing: bool = True) -> bytes:
    """A multipart/form-data body by hand: (field name, filename or None, content) per part."""
    out = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (
            f'; filename="{filename}"' if filename is not None else ""
        )
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    return out + (f"--{BOUNDARY}--\r\n".encode() if closing else b"")


def post_raw(
    service: ServiceProcess, content: bytes | Iterator[bytes], content_type: str | None = None
) -> httpx.Response:
    headers = {"Content-Type": content_type or f"multipart/form-data; boundary={BOUNDARY}"}
    return httpx.post(service.url + MULTIPART, content=content, headers=headers, timeout=60)


def assert_validation_error(response: httpx.Response, status: int = 422) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == "ERR_VALIDATION"
    assert error["message"]
    return error


def test_unique_ids_after_the_files_and_utf8_filenames_are_read(
    ml_service: ServiceProcess, jpeg: bytes
) -> None:
    parts = [
        ("files", "été à la plage.jpg", jpeg),
        ("files", "b.jpg", jpeg),
        ("unique_ids", None, b'["x", "y"]'),
    ]
    response = post_raw(ml_service, body(parts))
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [(r["unique_id"], r["filename"]) for r in results] == [("x", "été à la plage.jpg"), ("y", "b.jpg")]
    assert all(r["error"] is None and r["embedding"] for r in results)


def test_a_chunked_body_without_content_length_is_read(ml_service: ServiceProcess, jpeg: bytes) -> None:
    data = body([("files", "a.jpg", jpeg), ("files", "b.jpg", jpeg)])
    response = post_raw(ml_service, iter([data[i : i + 1000] for i in range(0, len(data), 1000)]))
    assert response.status_code == 200, response.text
    assert [r["error"] for r in response.json()["results"]] == [None, None]


def test_a_part_over_the_upload_limit_fails_only_its_item(
    ml_service: ServiceProcess, jpeg: bytes, ml_limits: dict[str, int]
) -> None:
    big = jpeg + b"\0" * ml_limits["max_upload_bytes"]
    response = post_raw(ml_service, body([("files", "big.jpg", big), ("files", "ok.jpg", jpeg)]))
    assert response.status_code == 200, response.text
    big_item, ok_item = response.json()["results"]
    assert big_item["embedding"] is None
    assert big_item["error"]["code"] == "ERR_IMAGE_TOO_LARGE"
    assert str(ml_limits["max_upload_bytes"]) in big_item["error"]["message"]
    assert ok_item["error"] is None and ok_item["embedding"]


def test_other_fields_and_files_under_other_names_are_ignored(
    ml_service: ServiceProcess, jpeg: bytes
) -> None:
    parts = [("note", None, b"hello"), ("attachment", "x.jpg", jpeg), ("files", "a.jpg", jpeg)]
    response = post_raw(ml_service, body(parts))
    assert response.status_code == 200, response.text
    assert [r["filename"] for r in response.json()["results"]] == ["a.jpg"]


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"--x\r\nContent-Disposition: form-data; name=files\r\n\r\nabc\r\n--x--\r\n", "multipart/form-data"),
        (b"just some bytes, no multipart at all", None),
        (b'{"images": []}', "application/json"),
        (body([("files", "a.jpg", b"\xff\xd8 half a file")], closing=False), None),
        (f"--{BOUNDARY}\r\nno-colon-here\r\n\r\nabc\r\n--{BOUNDARY}--\r\n".encode(), None),
        (body([("files", None, b"a form field, not a file")]), None),
    ],
    ids=[
        "no-boundary",
        "garbage",
        "not-multipart",
        "no-closing-boundary",
        "bad-part-header",
        "files-not-a-file",
    ],
)
def test_a_malformed_multipart_body_is_a_validation_error(
    ml_service: ServiceProcess, content: bytes, content_type: str | None
) -> None:
    assert_validation_error(post_raw(ml_service, content, content_type))


def test_unique_ids_that_are_not_json_are_a_validation_error(ml_service: ServiceProcess, jpeg: bytes) -> None:
    response = post_raw(ml_service, body([("files", "a.jpg", jpeg), ("unique_ids", None, b"[not json")]))
    assert "unique_ids" in assert_validation_error(response)["message"]


def test_too_many_files_are_refused_with_413_while_the_body_is_read(
    ml_service: ServiceProcess, ml_limits: dict[str, int]
) -> None:
    n = ml_limits["max_batch_files"] + 1
    response = post_raw(ml_service, body([("files", f"{i}.jpg", b"x") for i in range(n)]))
    error = assert_validation_error(response, status=413)
    assert error["max_batch_files"] == ml_limits["max_batch_files"]


def launch_quick(launch_ml: Callable[..., ServiceProcess], tmp_path: Path, **env: str) -> ServiceProcess:
    """Another instance on the tiny model, with a set batch (no probe) and the given settings."""
    return launch_ml(tmp_path / "probe", tmp_path / "ml.log", SHOEBOX_SAFE_CLIP_BATCH="4", **env)


@pytest.fixture
def small_body_service(launch_ml: Callable[..., ServiceProcess], tmp_path: Path) -> ServiceProcess:
    return launch_quick(launch_ml, tmp_path, SHOEBOX_MAX_REQUEST_BYTES="200000")


def test_a_body_over_the_request_limit_is_refused_with_413(
    small_body_service: ServiceProcess, jpeg: bytes
) -> None:
    data = body([("files", "a.jpg", jpeg), ("files", "pad.jpg", b"\0" * 250_000)])
    declared = assert_validation_error(post_raw(small_body_service, data), status=413)
    assert declared["max_request_bytes"] == 200_000
    # Without a Content-Length the count of bytes received decides.
    chunked = post_raw(small_body_service, iter([data[i : i + 16_384] for i in range(0, len(data), 16_384)]))
    assert assert_validation_error(chunked, status=413)["max_request_bytes"] == 200_000
    # Under the limit the same service answers.
    ok = post_raw(small_body_service, body([("files", "a.jpg", jpeg)]))
    assert ok.status_code == 200, ok.text


def test_the_service_leaves_starlettes_multipart_parser_alone(tmp_path: Path) -> None:
    before = MultiPartParser.spool_max_size
    create_app(MLSettings(probe_cache_dir=tmp_path, max_upload_bytes=512 * 1024**2))
    assert MultiPartParser.spool_max_size == before == 1024 * 1024


def test_the_openapi_docs_describe_the_multipart_fields(ml_service: ServiceProcess) -> None:
    operation = httpx.get(ml_service.url + "/openapi.json").json()["paths"][MULTIPART]["post"]
    schema = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert schema["properties"]["files"]["items"]["format"] == "binary"
    assert "unique_ids" in schema["properties"]
    assert schema["required"] == ["files"]
    assert json.dumps(operation["responses"]["200"])  # the BatchResponse model is still documented


def test_a_full_queue_answers_429_before_the_body_is_read(
    launch_ml: Callable[..., ServiceProcess], tmp_path: Path
) -> None:
    service = launch_quick(launch_ml, tmp_path, SHOEBOX_MAX_QUEUE="4", SHOEBOX_DECODE_WORKERS="1")
    slow_png = photos.write_png(
        tmp_path / "slow.png", photos.synthetic_photo(2400, 1800, seed=3)
    ).read_bytes()
    with ThreadPoolExecutor(1) as pool:
        # Four slow PNGs on one decode worker hold the whole queue for a second or more.
        bulk = pool.submit(
            httpx.post,
            service.url + MULTIPART,
            files=[("files", (f"{i}.png", slow_png, "image/png")) for i in range(4)],
            timeout=60,
        )
        deadline = time.monotonic() + 10
        while httpx.get(service.url + "/health").json()["queue_depth"] < 4:
            assert time.monotonic() < deadline and not bulk.done(), "the bulk request never filled the queue"
            time.sleep(0.01)
        # Headers and the first bytes of a 100 MB body; the answer comes without the rest.
        url = httpx.URL(service.url)
        with socket.create_connection((url.host, url.port), timeout=10) as conn:
            head = (
                f"POST {MULTIPART} HTTP/1.1\r\nHost: {url.host}\r\nContent-Length: 100000000\r\n"
                f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n"
            )
            conn.sendall(head.encode() + body([("files", "a.jpg", b"\xff\xd8")], closing=False)[:-2])
            status_line = conn.recv(65536).split(b"\r\n", 1)[0]
        assert b" 429 " in status_line, status_line
        assert bulk.result().status_code == 200
