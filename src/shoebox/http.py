"""FastAPI plumbing both services share: the error body of API.md and optional API-key auth."""

from __future__ import annotations

import hmac
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException

from shoebox.protocol import ErrorCode, ShoeboxError

log = logging.getLogger(__name__)

_STATUS_CODES = {
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.PATH_NOT_ALLOWED,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.VALIDATION,
    409: ErrorCode.CONFLICT,
    413: ErrorCode.IMAGE_TOO_LARGE,
    422: ErrorCode.VALIDATION,
    429: ErrorCode.BUSY,
}


def error_response(exc: ShoeboxError) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers or None)


def install_error_handlers(app: FastAPI) -> None:
    """Every 4xx/5xx answers `{"error": {"code", "message"}}`: no HTML pages, no tracebacks."""

    @app.exception_handler(ShoeboxError)
    async def _shoebox(_: Request, exc: ShoeboxError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", "")} for e in exc.errors()]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        message = f"{'.'.join(first['loc'])}: {first['msg']}" if first["loc"] else first["msg"]
        return error_response(ShoeboxError(ErrorCode.VALIDATION, message, errors=errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(
            exc.status_code, ErrorCode.INTERNAL if exc.status_code >= 500 else ErrorCode.VALIDATION
        )
        err = ShoeboxError(code, str(exc.detail), status=exc.status_code)
        if exc.headers:
            err.headers = dict(exc.headers)
        return error_response(err)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        from shoebox.ingest.diskspace import is_disk_full

        if is_disk_full(exc):  # ENOSPC outside a job (a route writing the catalog): say so
            log.error("data disk full: %s", exc)
            return error_response(ShoeboxError(ErrorCode.DISK_FULL, f"data disk full: {exc}"))
        log.exception("unhandled error")
        return error_response(ShoeboxError(ErrorCode.INTERNAL, f"internal error: {type(exc).__name__}"))


# The only paths a client may call without the key when one is set, matched exactly (no prefix, no
# normalisation): the liveness probe, and the OpenAPI page and schema, which describe the API of
# this open-source project and hold no data. Everything else — every /api/v1 route, a route added
# tomorrow, an unknown path, `//api/v1/…`, `/api/v1/../…` — needs the key: auth fails closed.
PUBLIC_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
API_KEY_HEADER = "X-API-Key"


class APIKeyMiddleware:
    """Plain ASGI (not BaseHTTPMiddleware, which hides client disconnects from the app)."""

    def __init__(self, app, api_key: str) -> None:
        self.app = app
        self.expected = api_key.encode()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan" or (scope["type"] == "http" and scope["path"] in PUBLIC_PATHS):
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope.get("headers", ()):
            if name == b"x-api-key":
                given = value
                break
        if hmac.compare_digest(given, self.expected):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "http":
            response = error_response(ShoeboxError(ErrorCode.UNAUTHORIZED, "missing or wrong X-API-Key"))
            await response(scope, receive, send)
        else:  # a websocket (no route takes one): closed before the handshake, which the server answers 403
            await send({"type": "websocket.close", "code": 1008})


def install_api_key(app: FastAPI, api_key: str | None) -> None:
    """When a key is set, every path but `PUBLIC_PATHS` needs `X-API-Key` (constant-time compare).

    The OpenAPI schema then declares the header, so the /docs page's "Authorize" button sends it.
    """
    if not api_key:
        return
    app.add_middleware(APIKeyMiddleware, api_key=api_key)
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        schema = generate()
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        if "APIKey" not in schemes:
            schemes["APIKey"] = {"type": "apiKey", "in": "header", "name": API_KEY_HEADER}
            schema["security"] = [{"APIKey": []}]
            for path, operations in schema.get("paths", {}).items():
                if path in PUBLIC_PATHS:
                    for operation in operations.values():
                        operation["security"] = []
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def add_openapi_schemas(app: FastAPI, models: list[type[BaseModel]]) -> None:
    """List models in the OpenAPI components that routes reading their own body refer to by name
    (a route taking JSON or multipart cannot declare its body as a parameter)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            _, defs = models_json_schema(
                [(m, "validation") for m in models], ref_template="#/components/schemas/{model}"
            )
            schema.setdefault("components", {}).setdefault("schemas", {}).update(defs.get("$defs", {}))
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
