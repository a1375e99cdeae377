"""Bounded resources of the ML service: body caps before any parsing, admission before reading,
and the ingestion's ML client sizing its batches to what the service takes."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shoebox.devtools import photos
from shoebox.ingest.config import IngestSettings
from shoebox.ingest.ml_client import BatchFile, MLClient
from shoebox.launcher import ServiceProcess, start_service

MULTIPART = "/api/v1/batch_embed_and_caption_multipart"
BATCH_JSON = "/api/v1/batch_embed_and_caption"
BOUNDARY = "limits-boundary"
MAX_JSON_BYTES = 1_000_000
MAX_REQUEST_BYTES = 4_000_000
MAX_QUEUE = 4
MAX_BATCH_FILES = 16


@pytest.fixture(scope="module")
def service(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    work = tmp_path_factory.mktemp("ml-limits")
    env = {
        "SHOEBOX_MODEL_DIR": str(tiny_model_dir),
        "SHOEBOX_OFFLINE": "1",
        "SHOEBOX_API_KEY": "",
        "SHOEBOX_PROBE_CACHE_DIR": str(work / "probe"),
        "SHOEBOX_SAFE_CLIP_BATCH": "2",
        "SHOEBOX_DECODE_WORKERS": "1",
        "SHOEBOX_INTRA_OP_THREADS": "1",
        "SHOEBOX_MAX_JSON_BYTES": str(MAX_JSON_BYTES),
        "SHOEBOX_MAX_REQUEST_BYTES": str(MAX_REQUEST_BYTES),
        "SHOEBOX_MAX_QUEUE": str(MAX_QUEUE),
        "SHOEBOX_MAX_BATCH_FILES": str(MAX_BATCH_FILES),
    }
    proc = start_service("ml", env=env, log_path=work / "ml.log")
    try:
        proc.wait_healthy(90, require="model_loaded")
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return photos.jpeg_bytes(photos.synthetic_photo(160, 120, seed=5))


def open_request(
    service: ServiceProcess, path: str, headers: dict[str, str], first_bytes: bytes = b""
) -> socket.socket:
    """A request whose headers (and maybe the first bytes of its body) are sent, the rest never."""
    url = httpx.URL(service.url)
    conn = socket.create_connection((url.host, url.port), timeout=10)
    head = f"POST {path} HTTP/1.1\r\nHost: {url.host}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()
    )
    conn.sendall(head.encode() + b"\r\n" + first_bytes)
    return conn


def read_answer(conn: socket.socket) -> tuple[int, dict[str, str], dict]:
    """The status, headers and JSON body of the answer on `conn`."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        assert chunk, f"the connection closed without an answer: {data!r}"
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    while len(rest) < int(headers["content-length"]):
        chunk = conn.recv(65536)
        assert chunk
        rest += chunk
    return int(lines[0].split()[1]), headers, json.loads(rest)


def multipart_head(n_files: int | None, length: int) -> dict[str, str]:
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}", "Content-Length": str(length)}
    if n_files is not None:
        headers["X-Shoebox-Files"] = str(n_files)
    return headers


def first_part(filename: str = "a.jpg") -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="files"; filename="{filename}"\r\n\r\n'
    ).encode() + b"\xff\xd8"


def test_a_json_body_declared_over_its_cap_is_refused_before_it_is_read(service: ServiceProcess) -> None:
    headers = {"Content-Type": "application/json", "Content-Length": str(10**9)}
    with open_request(service, BATCH_JSON, headers, b'{"images": [') as conn:
        status, answer_headers, body = read_answer(conn)
    assert status == 413
    assert body["error"]["code"] == "ERR_VALIDATION"
    assert body["error"]["max_body_bytes"] == MAX_JSON_BYTES
    assert "SHOEBOX_MAX_JSON_BYTES" in body["error"]["message"]
    assert answer_headers["connection"] == "close"


def test_a_chunked_json_body_past_its_cap_is_cut_off_with_413(service: ServiceProcess) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"images": [{"unique_id": "1", "filename": "a.jpg", "image_base64": "'
        for _ in range(64):  # 2 MiB of base64, twice the cap, with no Content-Length
            yield b"A" * 32768
        yield b'"}]}'

    response = httpx.post(
        service.url + BATCH_JSON, content=chunks(), headers={"Content-Type": "application/json"}, timeout=30
    )
    assert response.status_code == 413
    assert response.json()["error"]["max_body_bytes"] == MAX_JSON_BYTES


def test_a_json_batch_under_its_cap_is_embedded(service: ServiceProcess, jpeg: bytes) -> None:
    image = {"unique_id": "1", "filename": "a.jpg", "image_base64": base64.b64encode(jpeg).decode()}
    response = httpx.post(service.url + BATCH_JSON, json={"images": [image]}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["embedding"]


def test_a_multipart_body_declared_over_the_request_cap_is_refused_before_it_is_read(
    service: ServiceProcess,
) -> None:
    with open_request(service, MULTIPART, multipart_head(1, MAX_REQUEST_BYTES + 1), first_part()) as conn:
        status, _, body = read_answer(conn)
    assert status == 413
    assert body["error"]["max_body_bytes"] == MAX_REQUEST_BYTES


def test_more_declared_files_than_the_queue_holds_are_refused_before_the_body_is_read(
    service: ServiceProcess,
) -> None:
    with open_request(service, MULTIPART, multipart_head(MAX_QUEUE + 1, 100_000), first_part()) as conn:
        status, _, body = read_answer(conn)
    assert status == 413
    assert body["error"]["code"] == "ERR_VALIDATION"
    assert body["error"]["max_queue"] == MAX_QUEUE


def test_a_files_header_that_is_no_count_is_a_validation_error(service: ServiceProcess, jpeg: bytes) -> None:
    response = httpx.post(
        service.url + MULTIPART,
        files=[("files", ("a.jpg", jpeg, "image/jpeg"))],
        headers={"X-Shoebox-Files": "many"},
        timeout=30,
    )
    assert response.status_code == 422
    assert "X-Shoebox-Files" in response.json()["error"]["message"]


def test_declared_files_hold_their_queue_room_while_the_body_is_read_so_a_full_queue_answers_429(
    service: ServiceProcess,
) -> None:
    # A slow upload declares the whole queue and sends only its first bytes.
    with open_request(service, MULTIPART, multipart_head(MAX_QUEUE, 1_000_000), first_part()):
        deadline = time.monotonic() + 10
        while httpx.get(service.url + "/health").json()["queue_depth"] < MAX_QUEUE:
            assert time.monotonic() < deadline, "the slow upload never reserved its room"
            time.sleep(0.01)
        with open_request(service, MULTIPART, multipart_head(1, 1_000_000), first_part()) as other:
            status, headers, body = read_answer(other)
    assert status == 429
    assert body["error"]["code"] == "ERR_BUSY"
    assert int(headers["retry-after"]) >= 1


def test_an_abandoned_upload_gives_its_queue_room_back(service: ServiceProcess, jpeg: bytes) -> None:
    with open_request(service, MULTIPART, multipart_head(MAX_QUEUE, 1_000_000), first_part()):
        pass  # the client goes away mid-body
    response = None
    for _ in range(50):
        response = httpx.post(
            service.url + MULTIPART,
            files=[("files", (f"{i}.jpg", jpeg, "image/jpeg")) for i in range(MAX_QUEUE)],
            headers={"X-Shoebox-Files": str(MAX_QUEUE)},
            timeout=30,
        )
        if response.status_code != 429:
            break
    assert response is not None and response.status_code == 200, response.text
    assert httpx.get(service.url + "/health").json()["queue_depth"] == 0


def test_capabilities_say_how_many_files_a_batch_may_hold(service: ServiceProcess) -> None:
    caps = httpx.get(service.url + "/api/v1/capabilities").json()
    assert caps["max_batch_files"] == MAX_BATCH_FILES
    assert caps["max_queue"] == MAX_QUEUE


# ---------------------------------------------------------------- the ingestion's ML client


def capabilities(**overrides: object) -> dict:
    return {
        "safe_clip_batch": 64,
        "max_batch": 256,
        "model_name": "m",
        "model_id": "m@1",
        "embedding_dim": 4,
        "device": "cpu",
        "dtype": "fp32",
        "image_formats": ["jpg"],
        "raw_formats": ["dng"],
        "max_queue": 512,
        **overrides,
    }


def mock_client(caps: dict, seen: list[httpx.Request] | None = None) -> MLClient:
    def handle(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        if request.url.path == "/api/v1/capabilities":
            return httpx.Response(200, json=caps)
        results = [
            {"unique_id": str(i), "filename": "x.jpg", "embedding": [1, 0, 0, 0]}
            for i in range(int(request.headers["X-Shoebox-Files"]))
        ]
        return httpx.Response(200, json={"results": results, "model_name": "m", "device_used": "cpu"})

    settings = IngestSettings(ml_urls=["http://ml.test"], ml_inference_batch_size=128)
    client = MLClient(settings, transport=httpx.MockTransport(handle))
    client.capabilities()
    return client


@pytest.mark.parametrize(
    ("caps", "expected"),
    [
        ({}, 64),  # the safe batch
        ({"max_queue": 8}, 8),  # the whole queue: a larger batch is refused with 413
        ({"max_batch_files": 5}, 5),  # files per request
        ({"max_queue": 10, "max_batch_files": 12, "safe_clip_batch": 200}, 10),
    ],
)
def test_the_client_batch_fits_the_services_safe_batch_queue_and_files_per_request(
    caps: dict, expected: int
) -> None:
    client = mock_client(capabilities(**caps))
    try:
        assert client.batch_size() == expected
    finally:
        client.close()


def test_the_client_declares_its_batch_file_count(jpeg: bytes) -> None:
    seen: list[httpx.Request] = []
    client = mock_client(capabilities(), seen)
    try:
        files = [BatchFile(str(i), f"{i}.jpg", jpeg) for i in range(3)]
        items, _ = client.embed_batch(files)
    finally:
        client.close()
    batch = [r for r in seen if r.url.path == MULTIPART]
    assert [r.headers["X-Shoebox-Files"] for r in batch] == ["3"]
    assert [i.unique_id for i in items] == ["0", "1", "2"]
