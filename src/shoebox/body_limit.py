"""A cap on request bodies, per route, for both services: plain ASGI, in front of any parsing.

- A `Content-Length` above the route's cap answers 413 at once; nothing of the body is read.
- A body without one (chunked) or one that lies is counted as it arrives: past the cap the
  app's reads fail, whatever it answered is dropped, and the client gets the 413 instead.

The answer is 413 `ERR_VALIDATION` with `max_body_bytes` (and the cap again under its setting's
name, e.g. `max_request_bytes`), the message naming that setting:
it is the request as a whole that is refused (a file too large inside an accepted batch stays
its own item's `ERR_IMAGE_TOO_LARGE`). Plain ASGI rather than BaseHTTPMiddleware, which would
read the body itself and hide client disconnects from the app.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shoebox.http import error_response
from shoebox.protocol import ErrorCode, ShoeboxError

KIB = 1024
MIB = 1024 * KIB
# Bodies of the routes no rule names (JSON of a few fields, or nothing at all).
DEFAULT_BODY_BYTES = 1 * MIB


@dataclass(frozen=True)
class BodyLimit:
    max_bytes: int
    setting: str = ""  # the env var that sets it, named in the error message

    def error(self) -> ShoeboxError:
        detail = {"max_body_bytes": self.max_bytes}
        if self.setting:  # also under the setting's own name: SHOEBOX_MAX_JSON_BYTES → max_json_bytes
            detail[self.setting.lower().removeprefix("shoebox_")] = self.max_bytes
        by = f" ({self.setting})" if self.setting else ""
        return ShoeboxError(
            ErrorCode.VALIDATION, f"request body exceeds {self.max_bytes} bytes{by}", status=413, **detail
        )


class BodyTooLarge(ShoeboxError):
    """Raised by the counted `receive` once the body passes its cap."""

    def __init__(self, limit: BodyLimit) -> None:
        err = limit.error()
        super().__init__(err.code, err.message, status=413, **err.detail)


# A route's cap from its method and path; None = not capped.
LimitFor = Callable[[str, str], "BodyLimit | None"]


def route_limits(routes: dict[str, BodyLimit], default: BodyLimit | None) -> LimitFor:
    """Exact paths → their cap; every other path (and method) → `default`."""

    def limit_for(method: str, path: str) -> BodyLimit | None:
        return routes.get(path.rstrip("/") or "/", default)

    return limit_for


async def _answer(limit: BodyLimit, send: Any) -> None:
    response = error_response(limit.error())
    # The rest of the body is not read: the connection cannot carry another request.
    response.headers["Connection"] = "close"
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> dict[str, Any]:
    return {"type": "http.disconnect"}


def _content_length(scope: dict[str, Any]) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimitMiddleware:
    def __init__(self, app: Any, limit_for: LimitFor) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("method", "GET"), scope.get("path", "/"))
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > limit.max_bytes:
            await _answer(limit, send)
            return

        received = 0
        exceeded = False
        started = False

        async def counted_receive() -> dict[str, Any]:
            nonlocal received, exceeded
            if exceeded:
                raise BodyTooLarge(limit)
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit.max_bytes:
                    exceeded = True
                    raise BodyTooLarge(limit)
            return message

        async def guarded_send(message: dict[str, Any]) -> None:
            nonlocal started
            if exceeded and not started:
                return  # whatever the app made of the cut-off body: the 413 goes out instead
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not exceeded:
                raise
        if exceeded and not started:
            await _answer(limit, send)


def install_body_limit(app: Any, limit_for: LimitFor) -> None:
    """Cap request bodies per route (see the module's docstring). Add it before the API-key
    middleware, so that auth is checked first."""
    app.add_middleware(BodyLimitMiddleware, limit_for=limit_for)
