"""With SHOEBOX_API_KEY set, every route of both services refuses a missing or wrong key.

The routes are not listed here: they are read from each running service's OpenAPI schema and
from the app's own route table, so a route added tomorrow is checked the day it is added. The
only paths open without the key are `shoebox.http.PUBLIC_PATHS` (the liveness probe and the
OpenAPI pages); anything else — unknown paths and path tricks included — answers 401.
"""

from __future__ import annotations

import http.client
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from starlette.routing import Mount

sys.path.insert(0, str(Path(__file__).resolve().parent))

from servers import ServiceProcess, start_ingest, start_ml  # noqa: E402
from shoebox.http import PUBLIC_PATHS  # noqa: E402

KEY = "test-key-Zq8v"
WRONG = {"missing": {}, "wrong": {"X-API-Key": KEY + "x"}, "empty": {"X-API-Key": ""}}
# Every method a client might try; the schema's own methods are added per path.
EXTRA_METHODS = ("HEAD", "OPTIONS")
SERVICES = ("ml", "ingest")


@pytest.fixture(scope="module")
def secured(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServiceProcess]]:
    base = tmp_path_factory.mktemp("auth")
    photos = base / "photos"
    photos.mkdir()
    ml = start_ml(tiny_model_dir, base / "ml", api_key=KEY)
    try:
        ingest = start_ingest(base / "data", [ml.url], [photos], api_key=KEY, ml_api_key=KEY)
    except BaseException:
        ml.stop()
        raise
    yield {"ml": ml, "ingest": ingest}
    ingest.stop()
    ml.stop()
    HTTP.close()


# One client for the module: a new httpx client per request costs more than the request.
HTTP = httpx.Client(timeout=60)


def _schema(service: ServiceProcess) -> dict:
    response = HTTP.get(service.url + "/openapi.json", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def _fill(path: str, operations: dict) -> str:
    """The path with each `{param}` replaced by a syntactically valid value (per the schema's type)."""
    for operation in operations.values():
        for param in operation.get("parameters", []):
            if param["in"] == "path":
                kind = param.get("schema", {}).get("type")
                path = path.replace("{" + param["name"] + "}", "1" if kind == "integer" else "0" * 64)
    return path


def _schema_requests(service: ServiceProcess) -> list[tuple[str, str]]:
    """(method, concrete path) for every operation of the served schema, plus HEAD and OPTIONS."""
    found = []
    for path, operations in _schema(service)["paths"].items():
        concrete = _fill(path, operations)
        methods = [m.upper() for m in operations if m.upper() not in ("PARAMETERS",)]
        found += [(m, concrete) for m in dict.fromkeys([*methods, *EXTRA_METHODS])]
    assert len(found) > 10
    return found


def _app_routes(kind: str) -> list[tuple[str, frozenset[str]]]:
    """Every route the service's app holds, schema or not (the docs pages, mounts), walked in-process."""
    if kind == "ml":
        from shoebox.ml.app import create_app
        from shoebox.ml.config import MLSettings

        app = create_app(MLSettings(api_key=KEY))
    else:
        from shoebox.ingest.app import create_app
        from shoebox.ingest.config import IngestSettings

        app = create_app(IngestSettings(api_key=KEY))

    def walk(routes, prefix: str = "") -> Iterator[tuple[str, frozenset[str]]]:
        for route in routes:
            included = getattr(route, "original_router", None)  # FastAPI's include_router wrapper
            if included is not None:
                yield from walk(included.routes, prefix + getattr(route.include_context, "prefix", ""))
            elif isinstance(route, Mount):
                yield prefix + route.path + "/anything", frozenset({"GET"})
            else:
                # `{model:path}` in the route table is `{model}` in the schema
                path = re.sub(r"\{(\w+):\w+\}", r"{\1}", prefix + route.path)
                yield path, frozenset(getattr(route, "methods", None) or {"GET"})

    return list(walk(app.routes))


def _is_api_error(body: bytes, code: str) -> bool:
    try:
        error = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return error.get("code") == code and isinstance(error.get("message"), str) and error["message"] != ""


def _refuses(service: ServiceProcess, method: str, path: str, headers: dict) -> str | None:
    """None when the request answers 401 ERR_UNAUTHORIZED (API.md body); else what it answered."""
    response = HTTP.request(method, service.url + path, headers=headers, timeout=30)
    if response.status_code != 401:
        return f"{method} {path}: {response.status_code}"
    if method != "HEAD" and not _is_api_error(response.content, "ERR_UNAUTHORIZED"):
        return f"{method} {path}: 401 with body {response.text[:200]!r}"
    return None


@pytest.mark.parametrize("kind", SERVICES)
@pytest.mark.parametrize("how", list(WRONG))
def test_every_schema_route_refuses_a_missing_or_wrong_key(secured, kind: str, how: str) -> None:
    service = secured[kind]
    requests = [(m, p) for m, p in _schema_requests(service) if p not in PUBLIC_PATHS]
    failures = [f for m, p in requests if (f := _refuses(service, m, p, WRONG[how])) is not None]
    assert not failures, f"{len(failures)} of {len(requests)} requests not refused:\n" + "\n".join(failures)


@pytest.mark.parametrize("kind", SERVICES)
def test_every_api_route_is_in_the_protected_set(secured, kind: str) -> None:
    """No /api/v1 route hides in the public allow-list; the allow-list names no /api path at all."""
    paths = list(_schema(secured[kind])["paths"])
    assert [p for p in paths if p.startswith("/api/v1")], paths
    assert not [p for p in PUBLIC_PATHS if p.lower().startswith("/api")]


@pytest.mark.parametrize("kind", SERVICES)
def test_every_schema_route_accepts_the_key(secured, kind: str) -> None:
    """The key opens every route (so the refusals above are the key's doing, not a broken route)."""
    service = secured[kind]
    answers = {
        (m, p): HTTP.request(m, service.url + p, headers={"X-API-Key": KEY}, timeout=60).status_code
        for m, p in _schema_requests(service)
        if m != "OPTIONS"
    }
    assert not [k for k, status in answers.items() if status == 401], answers
    assert not [k for k, status in answers.items() if status >= 500], answers


@pytest.mark.parametrize("kind", SERVICES)
def test_routes_outside_the_schema_are_public_or_refused(secured, kind: str) -> None:
    service = secured[kind]
    schema_paths = set(_schema(service)["paths"])
    routes = _app_routes(kind)
    # The walk sees every route the schema lists: it cannot miss one silently.
    assert schema_paths <= {path for path, _ in routes}
    failures = []
    for path, methods in routes:
        if path in schema_paths:
            continue
        for method in methods:
            if path in PUBLIC_PATHS:
                status = HTTP.request(method, service.url + path, timeout=30).status_code
                if status != 200:
                    failures.append(f"public {method} {path}: {status}")
            elif (f := _refuses(service, method, path, {})) is not None:
                failures.append(f)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("kind", SERVICES)
@pytest.mark.parametrize("path", sorted(PUBLIC_PATHS))
def test_a_public_path_answers_without_a_key(secured, kind: str, path: str) -> None:
    assert HTTP.get(secured[kind].url + path, timeout=30).status_code == 200


@pytest.mark.parametrize("kind", SERVICES)
@pytest.mark.parametrize("path", ["/", "/nope", "/api/v2/collections", "/api/v1", "/health/extra", "/_internal"])
def test_an_unknown_path_is_refused_not_404(secured, kind: str, path: str) -> None:
    """Auth fails closed: without the key nobody learns which paths exist."""
    assert _refuses(secured[kind], "GET", path, {}) is None


def test_the_schema_declares_the_key_header(secured) -> None:
    """The /docs page's Authorize button sends X-API-Key; /health is marked open."""
    schema = _schema(secured["ingest"])
    assert schema["components"]["securitySchemes"]["APIKey"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
    }
    assert schema["security"] == [{"APIKey": []}]
    assert schema["paths"]["/health"]["get"]["security"] == []


# Raw request targets that try to reach a protected route past a prefix or allow-list check.
# Sent byte for byte (http.client does not normalise `..`, `//` or percent-escapes as httpx does).
PROTECTED = {"ml": "/api/v1/capabilities", "ingest": "/api/v1/collections"}
TRICKS = {
    "double-slash": "/{p}",
    "dot-dot": "/api/v1/../{p}",
    "health-dot-dot": "/health/../{p}",
    "health-encoded-dot-dot": "/health/..%2F{p}",
    "dot-segment": "/api/v1/./{q}",
    "encoded-slash": "/api%2Fv1/{q}",
    "encoded-letter": "/%61pi/v1/{q}",
    "trailing-slash": "/{p}/",
    "upper-case": "/API/v1/{q}",
    "query-says-health": "/{p}?next=/health",
    "fragment-health": "/{p}#/health",
    "health-prefix": "/health{p_abs}",
    "docs-prefix": "/docs/..%2F{p}",
    "null-byte": "/{p}%00",
    "absolute-form": "http://127.0.0.1{p_abs}",
}


def _raw(service: ServiceProcess, method: str, target: str) -> tuple[int, bytes]:
    parts = urlsplit(service.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.putrequest(method, target, skip_accept_encoding=True)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


@pytest.mark.parametrize("kind", SERVICES)
@pytest.mark.parametrize("trick", list(TRICKS))
def test_a_path_trick_does_not_bypass_the_key(secured, kind: str, trick: str) -> None:
    protected = PROTECTED[kind]
    target = TRICKS[trick].format(p=protected[1:], q=protected[len("/api/v1/") :], p_abs=protected)
    status, body = _raw(secured[kind], "GET", target)
    assert status in (400, 401), (target, status, body[:200])
    if status == 401:
        assert _is_api_error(body, "ERR_UNAUTHORIZED"), body[:200]


@pytest.mark.parametrize("kind", SERVICES)
@pytest.mark.parametrize("method", ["HEAD", "OPTIONS", "TRACE", "PATCH", "PUT"])
def test_any_method_on_a_protected_route_is_refused(secured, kind: str, method: str) -> None:
    status, body = _raw(secured[kind], method, PROTECTED[kind])
    assert status == 401
    if method != "HEAD":
        assert _is_api_error(body, "ERR_UNAUTHORIZED"), body[:200]
