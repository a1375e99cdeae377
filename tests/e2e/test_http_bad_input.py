"""Bad input over HTTP, to both services as real processes: always a 4xx with API.md's error
body, never a 500, and the service stays up.

One table, one case per kind of bad input and route; requests go out byte for byte (a raw
socket: no client normalises `..` out of a path or refuses a NUL), so the services see exactly
what a hostile client sends.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import pytest

from servers import ServiceProcess, start_ingest
from shoebox.protocol import ErrorCode

MIB = 1024 * 1024
BOUNDARY = "bad-input-boundary"
UUID = "0b6f4d3e-8a8e-4b8e-9d59-0c6a3f7f2a11"
CODES = {code.value for code in ErrorCode}
SECONDS: dict[str, float] = {}  # case id → seconds to its answer, for the report


@dataclass(frozen=True)
class Case:
    kind: str
    service: str  # "ml" or "ingest"
    method: str
    path: str  # sent as it is
    body: bytes = b""
    content_type: str | None = "application/json"
    status: tuple[int, ...] = (422,)
    headers: dict[str, str] = field(default_factory=dict)
    chunked: bool = False

    @property
    def id(self) -> str:
        return f"{self.service}-{self.kind}-{self.method}-{self.path[:48]}"


def js(value: object) -> bytes:
    return json.dumps(value).encode()


def multipart(parts: list[tuple[str, str | None, bytes]]) -> bytes:
    out = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
ML_BATCH = "/api/v1/batch_embed_and_caption_multipart"
TRAVERSALS = ["..", "%2e%2e%2f%2e%2e%2fetc", "..%2f..%2fetc%2fpasswd", "name%00.jpg", "%2fetc%2fpasswd"]
TRAVERSAL_PATHS = ["../../etc", "%2e%2e%2f%2e%2e%2fetc", "/etc", "/tmp/%00x", "%2Fetc%2Fpasswd", "~root"]


def _cases() -> list[Case]:
    cases = [
        # ---------------------------------------------------------------- ML service
        Case("malformed-json", "ml", "POST", "/api/v1/embed_text", b'{"text": "a dog",'),
        Case("malformed-json", "ml", "POST", "/api/v1/batch_embed_and_caption", b"[{]"),
        Case("not-json", "ml", "POST", "/api/v1/embed", b"\xff\xfe\x00garbage"),
        Case("wrong-type", "ml", "POST", "/api/v1/embed_text", js({"text": 5})),
        Case("wrong-type", "ml", "POST", "/api/v1/embed_text", js({"texts": "not a list"})),
        Case("wrong-type", "ml", "POST", "/api/v1/batch_embed_and_caption", js({"images": {"a": 1}})),
        Case("wrong-type", "ml", "POST", "/api/v1/embed", js({"image_base64": ["x"]})),
        Case("empty-body", "ml", "POST", "/api/v1/embed_text", b""),
        Case("no-texts", "ml", "POST", "/api/v1/embed_text", js({"texts": []})),
        Case("too-many-texts", "ml", "POST", "/api/v1/embed_text", js({"texts": ["a"] * 1025})),
        Case("huge-body", "ml", "POST", "/api/v1/embed_text", js({"text": "a" * (5 * MIB)}), status=(413,)),
        Case(
            "huge-body", "ml", "POST", "/api/v1/embed", js({"image_base64": "A" * (70 * MIB)}), status=(413,)
        ),
        Case(
            "huge-body-chunked",
            "ml",
            "POST",
            "/api/v1/embed_text",
            js({"text": "a" * (5 * MIB)}),
            status=(413,),
            chunked=True,
        ),
        Case("not-base64", "ml", "POST", "/api/v1/embed", js({"image_base64": "***not base64***"})),
        Case("not-an-image", "ml", "POST", "/api/v1/embed", js({"image_base64": "aGVsbG8="}), status=(415,)),
        Case("no-images", "ml", "POST", "/api/v1/batch_embed_and_caption", js({"images": []})),
        Case("no-files", "ml", "POST", ML_BATCH, multipart([("unique_ids", None, b"[]")]), MULTIPART),
        Case("no-parts", "ml", "POST", ML_BATCH, f"--{BOUNDARY}--\r\n".encode(), MULTIPART),
        Case(
            "thousands-of-parts",
            "ml",
            "POST",
            ML_BATCH,
            multipart([("files", f"{i}.jpg", b"x") for i in range(5000)]),
            MULTIPART,
            status=(413,),
        ),
        Case(
            "thousands-of-fields",
            "ml",
            "POST",
            ML_BATCH,
            multipart([(f"f{i}", None, b"x") for i in range(5000)]),
            MULTIPART,
            status=(413,),
        ),
        Case("garbage-multipart", "ml", "POST", ML_BATCH, b"\x00\x01garbage", MULTIPART),
        Case("no-boundary", "ml", "POST", ML_BATCH, b"x", "multipart/form-data"),
        Case("wrong-content-type", "ml", "POST", ML_BATCH, b"x", "text/plain"),
        Case("bad-files-header", "ml", "POST", ML_BATCH, b"x", MULTIPART, headers={"X-Shoebox-Files": "-3"}),
        Case(
            "unknown-model",
            "ml",
            "POST",
            "/api/v1/embed_text",
            js({"text": "a", "model": "../../etc/passwd"}),
            status=(404,),
        ),
        Case("unknown-model", "ml", "POST", f"{ML_BATCH}?model=%00..%2f", b"", MULTIPART, status=(404,)),
        Case("unknown-route", "ml", "GET", "/api/v1/../../etc/passwd", None, None, status=(404,)),
        Case("wrong-method", "ml", "DELETE", "/api/v1/capabilities", None, None, status=(405,)),
        # ---------------------------------------------------------------- ingestion service
        Case("malformed-json", "ingest", "POST", "/api/v1/search/text", b'{"query": '),
        Case("malformed-json", "ingest", "POST", "/api/v1/collections", b"{'single': 'quotes'}"),
        Case("malformed-json", "ingest", "POST", "/api/v1/search/query", b"{"),
        Case("malformed-json", "ingest", "POST", "/api/v1/ingest/", b"nope"),
        Case("wrong-type", "ingest", "POST", "/api/v1/search/text", js({"query": ["a"]})),
        Case("wrong-type", "ingest", "POST", "/api/v1/search/text", js({"query": "a", "limit": "ten"})),
        Case("wrong-type", "ingest", "POST", "/api/v1/search/text", js({"query": "a", "filters": "x"})),
        Case("wrong-type", "ingest", "POST", "/api/v1/collections", js({"collection_name": 7})),
        Case("wrong-type", "ingest", "POST", "/api/v1/ingest/", js({"directory_path": None})),
        Case("wrong-type", "ingest", "POST", "/api/v1/search/query", js({"terms": "dog"})),
        Case(
            "huge-body",
            "ingest",
            "POST",
            "/api/v1/collections",
            js({"collection_name": "a" * (2 * MIB)}),
            status=(413,),
        ),
        Case(
            "huge-body-chunked",
            "ingest",
            "POST",
            "/api/v1/search/text",
            js({"query": "a" * (2 * MIB)}),
            status=(413,),
            chunked=True,
        ),
        Case(
            "no-file", "ingest", "POST", "/api/v1/search/image", multipart([("limit", None, b"5")]), MULTIPART
        ),
        Case(
            "thousands-of-parts",
            "ingest",
            "POST",
            "/api/v1/search/image",
            multipart([("file", f"{i}.jpg", b"x") for i in range(5000)]),
            MULTIPART,
            status=(400, 413, 422),
        ),
        Case(
            "thousands-of-parts",
            "ingest",
            "POST",
            "/api/v1/search/query",
            multipart([("files", f"{i}.jpg", b"x") for i in range(5000)]),
            MULTIPART,
            status=(400, 413, 422),
        ),
        Case(
            "empty-upload",
            "ingest",
            "POST",
            "/api/v1/search/image",
            multipart([("file", "a.jpg", b"")]),
            MULTIPART,
            status=(400, 404, 422),
        ),
        Case(
            "garbage-multipart",
            "ingest",
            "POST",
            "/api/v1/search/image",
            b"\x00garbage",
            MULTIPART,
            status=(400, 422),
        ),
    ]
    # Paging: negative, zero and enormous.
    for value in ["-1", "0", "1000001", "99999999999999999999999", "1.5", "abc"]:
        cases += [
            Case(
                "bad-limit",
                "ingest",
                "POST",
                "/api/v1/search/text",
                b'{"query": "a", "limit": ' + value.encode() + b"}",
            ),
            Case("bad-limit", "ingest", "GET", f"/api/v1/images/{UUID}/similar?limit={value}", None, None),
            Case("bad-page", "ingest", "GET", f"/api/v1/images?page={value}", None, None),
            Case("bad-per-page", "ingest", "GET", f"/api/v1/images?per_page={value}", None, None),
            Case("bad-max-groups", "ingest", "GET", f"/api/v1/duplicates?max_groups={value}", None, None),
        ]
    for value in ["-5", "100001", "99999999999999999999999"]:
        cases += [
            Case(
                "bad-offset",
                "ingest",
                "POST",
                "/api/v1/search/text",
                b'{"query": "a", "offset": ' + value.encode() + b"}",
            ),
            Case("bad-offset", "ingest", "GET", f"/api/v1/images/{UUID}/similar?offset={value}", None, None),
            Case(
                "bad-offset",
                "ingest",
                "POST",
                "/api/v1/search/query",
                b'{"terms": [{"text": "a"}], "offset": ' + value.encode() + b"}",
            ),
        ]
    cases += [
        Case("bad-threshold", "ingest", "GET", "/api/v1/duplicates?threshold=-1", None, None),
        Case("bad-threshold", "ingest", "GET", "/api/v1/duplicates?threshold=nan", None, None),
        Case("bad-threshold", "ingest", "GET", "/api/v1/duplicates?phash_distance=65", None, None),
    ]
    # Ids that are not UUIDs.
    for bad_id in ["not-a-uuid", "1", "%00", "..%2f..%2fetc", "%27%20OR%201=1%20--"]:
        for tail in ["info", "thumbnail", "image", "similar"]:
            cases.append(
                Case(
                    "bad-id",
                    "ingest",
                    "GET",
                    f"/api/v1/images/{bad_id}/{tail}",
                    None,
                    None,
                    status=(404, 422),
                )
            )
    cases += [
        Case("bad-id", "ingest", "GET", "/api/v1/ingest/status/not-a-uuid", None, None, status=(404, 422)),
        Case("bad-id", "ingest", "POST", "/api/v1/ingest/not-a-uuid/cancel", None, None, status=(404, 422)),
    ]
    # Path traversal in every route that takes a path or a name.
    for bad in TRAVERSAL_PATHS:
        cases += [
            Case(
                "traversal",
                "ingest",
                "GET",
                f"/api/v1/folders?path={bad}",
                None,
                None,
                status=(403, 404, 422),
            ),
            Case(
                "traversal",
                "ingest",
                "POST",
                "/api/v1/ingest/",
                js(
                    {
                        "directory_path": bad.replace("%2e", ".")
                        .replace("%2f", "/")
                        .replace("%2F", "/")
                        .replace("%00", "\x00")
                    }
                ),
                status=(403, 404, 422),
            ),
        ]
    for bad in TRAVERSALS:
        cases += [
            Case(
                "traversal", "ingest", "GET", f"/api/v1/collections/{bad}/info", None, None, status=(404, 422)
            ),
            Case(
                "traversal",
                "ingest",
                "DELETE",
                f"/api/v1/collections/{bad}",
                None,
                None,
                status=(404, 405, 422),
            ),
            Case(
                "traversal",
                "ingest",
                "POST",
                f"/api/v1/collections/{bad}/prune",
                None,
                None,
                status=(404, 422),
            ),
            Case(
                "traversal",
                "ingest",
                "GET",
                f"/api/v1/collections/{bad}/migrate",
                None,
                None,
                status=(404, 422),
            ),
            Case(
                "traversal",
                "ingest",
                "DELETE",
                f"/api/v1/collections/photos/models/{bad}",
                None,
                None,
                status=(404, 422),
            ),
            Case(
                "traversal",
                "ingest",
                "POST",
                "/api/v1/collections",
                js({"collection_name": bad.replace("%2f", "/").replace("%00", "\x00")}),
            ),
            Case(
                "traversal",
                "ingest",
                "POST",
                "/api/v1/collections/select",
                js({"collection_name": bad.replace("%2f", "/")}),
            ),
            Case(
                "traversal",
                "ingest",
                "POST",
                "/api/v1/search/text",
                js({"query": "a", "collection_name": bad.replace("%2f", "/")}),
                status=(404, 422),
            ),
            Case(
                "traversal",
                "ingest",
                "GET",
                f"/api/v1/images?collection_name={bad}",
                None,
                None,
                status=(404, 422),
            ),
            Case(
                "traversal",
                "ingest",
                "GET",
                f"/api/v1/images/{UUID}/info?collection_name={bad}",
                None,
                None,
                status=(404, 422),
            ),
        ]
    cases += [
        Case(
            "traversal",
            "ingest",
            "POST",
            "/api/v1/collections/photos/prune",
            js({"directory_path": "../../etc"}),
            status=(404, 422),
        ),
        Case(
            "traversal",
            "ingest",
            "POST",
            "/api/v1/collections/photos/prune",
            js({"directory_path": "/tmp/\x00x"}),
            status=(404, 422),
        ),
        Case("unknown-route", "ingest", "GET", "/api/v1/../../../etc/passwd", None, None, status=(404,)),
        Case("wrong-method", "ingest", "PUT", "/api/v1/collections", js({}), status=(405,)),
    ]
    unique: list[Case] = []
    for case in cases:  # a traversal may decode to one already in the table
        if case not in unique:
            unique.append(case)
    return unique


CASES = _cases()


def send(service: ServiceProcess, case: Case) -> tuple[int, dict]:
    """The request as written in `case`, on a fresh connection; (status, JSON body) of the answer."""
    url = urlsplit(service.url)
    body = case.body or b""
    lines = [f"{case.method} {case.path} HTTP/1.1", f"Host: {url.hostname}", "Connection: close"]
    if case.content_type:
        lines.append(f"Content-Type: {case.content_type}")
    lines += [f"{k}: {v}" for k, v in case.headers.items()]
    if case.chunked:
        lines.append("Transfer-Encoding: chunked")
        step = 256 * 1024
        payload = (
            b"".join(
                f"{len(body[i : i + step]):x}\r\n".encode() + body[i : i + step] + b"\r\n"
                for i in range(0, len(body), step)
            )
            + b"0\r\n\r\n"
        )
    else:
        if case.body is not None or case.method in ("POST", "PUT", "DELETE"):
            lines.append(f"Content-Length: {len(body)}")
        payload = body
    with socket.create_connection((url.hostname, url.port), timeout=60) as conn:
        try:
            conn.sendall("\r\n".join(lines).encode() + b"\r\n\r\n" + payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # answered (413) before the whole body went out
        data = b""
        while True:
            try:
                chunk = conn.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head, f"no answer to {case.id}"
    status = int(head.split(b" ", 2)[1])
    headers = head.decode("latin-1").lower()
    if "transfer-encoding: chunked" in headers:
        raise AssertionError(f"{case.id}: a chunked error body")
    return status, json.loads(rest)


@pytest.fixture(scope="module")
def services(
    ml_service: ServiceProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, ServiceProcess]]:
    root = tmp_path_factory.mktemp("bad-input-root")
    ingest = start_ingest(tmp_path_factory.mktemp("bad-input-data"), [ml_service.url], [root])
    try:
        # A collection, selected: the cases get past "no such collection" to the input itself.
        created = httpx.post(
            ingest.url + "/api/v1/collections", json={"collection_name": "photos"}, timeout=30
        )
        assert created.status_code == 201, created.text
        httpx.post(ingest.url + "/api/v1/collections/select", json={"collection_name": "photos"}, timeout=30)
        yield {"ml": ml_service, "ingest": ingest}
    finally:
        ingest.stop()


def report(config: pytest.Config, line: str) -> None:
    """A line on the terminal, past pytest's output capture (figures for the README)."""
    capture = config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\n{line}")


@pytest.fixture(scope="module", autouse=True)
def report_count(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    kinds = len({c.kind for c in CASES})
    line = f"HTTP bad input: {len(CASES)} cases of {kinds} kinds over both services"
    if SECONDS:
        slowest = max(SECONDS, key=SECONDS.__getitem__)
        line += f"; {len(SECONDS)} answered, slowest {SECONDS[slowest]:.2f} s ({slowest})"
    report(request.config, line)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_answers_4xx_with_an_error_body(services: dict[str, ServiceProcess], case: Case) -> None:
    began = time.perf_counter()
    status, body = send(services[case.service], case)
    SECONDS[f"#{CASES.index(case)} {case.id}"] = time.perf_counter() - began
    assert status in case.status, (status, body)
    error = body["error"]
    assert error["code"] in CODES, body
    assert isinstance(error["message"], str) and error["message"], body


def test_both_services_stay_up_after_the_bad_input(services: dict[str, ServiceProcess]) -> None:
    for service in services.values():
        assert service.proc.poll() is None
        assert service.wait_healthy(timeout=5)["status"] == "ok"


def test_the_table_has_cases_of_every_kind_of_the_issue() -> None:
    kinds = {c.kind for c in CASES}
    for kind in [
        "malformed-json",
        "wrong-type",
        "huge-body",
        "not-base64",
        "no-files",
        "thousands-of-parts",
        "bad-limit",
        "bad-offset",
        "bad-page",
        "bad-id",
        "traversal",
    ]:
        assert kind in kinds
    assert {c.service for c in CASES if c.kind == "huge-body"} == {"ml", "ingest"}
