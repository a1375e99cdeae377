"""Optional API-key auth: every /api/v1 route needs X-API-Key when a key is set; /health stays open."""

from __future__ import annotations

import base64
import io

import httpx
import pytest
from PIL import Image

from shoebox.launcher import ServiceProcess


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(buffer, "JPEG")
    return buffer.getvalue()


JPEG = _jpeg()
JPEG_B64 = base64.b64encode(JPEG).decode()

# (method, path, request arguments) for every /api/v1 route of the ML service.
ROUTES = [
    ("GET", "/api/v1/capabilities", {}),
    ("POST", "/api/v1/embed_text", {"json": {"text": "a cat"}}),
    ("POST", "/api/v1/embed", {"json": {"image_base64": JPEG_B64, "filename": "a.jpg"}}),
    (
        "POST",
        "/api/v1/batch_embed_and_caption",
        {"json": {"images": [{"unique_id": "a", "image_base64": JPEG_B64, "filename": "a.jpg"}]}},
    ),
    (
        "POST",
        "/api/v1/batch_embed_and_caption_multipart",
        {"files": [("files", ("a.jpg", JPEG, "image/jpeg"))]},
    ),
]
ROUTE_IDS = [path for _, path, _ in ROUTES]


def call(service: ServiceProcess, method: str, path: str, kwargs: dict, key: str | None) -> httpx.Response:
    headers = {"X-API-Key": key} if key is not None else {}
    return httpx.request(method, service.url + path, headers=headers, timeout=30, **kwargs)


@pytest.mark.parametrize(("method", "path", "kwargs"), ROUTES, ids=ROUTE_IDS)
def test_a_route_without_the_key_is_401(
    secured_ml_service: ServiceProcess, method: str, path: str, kwargs: dict
) -> None:
    response = call(secured_ml_service, method, path, kwargs, key=None)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "ERR_UNAUTHORIZED"


@pytest.mark.parametrize(("method", "path", "kwargs"), ROUTES, ids=ROUTE_IDS)
def test_a_route_with_a_wrong_key_is_401(
    secured_ml_service: ServiceProcess, method: str, path: str, kwargs: dict
) -> None:
    response = call(
        secured_ml_service, method, path, kwargs, key=secured_ml_service.env["SHOEBOX_API_KEY"] + "x"
    )
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "ERR_UNAUTHORIZED"


@pytest.mark.parametrize(("method", "path", "kwargs"), ROUTES, ids=ROUTE_IDS)
def test_a_route_with_the_key_answers(
    secured_ml_service: ServiceProcess, method: str, path: str, kwargs: dict
) -> None:
    response = call(secured_ml_service, method, path, kwargs, key=secured_ml_service.env["SHOEBOX_API_KEY"])
    assert response.status_code == 200, response.text


def test_health_needs_no_key(secured_ml_service: ServiceProcess) -> None:
    response = httpx.get(secured_ml_service.url + "/health")
    assert response.status_code == 200
    assert response.json()["model_loaded"] is True
