"""The admin app's configuration (env), its clients and the one way pages call the API."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import streamlit as st

from shoebox.client import APIError, ShoeboxClient

T = TypeVar("T")

DEFAULT_URL = "http://127.0.0.1:8002"
DEFAULT_ML_URL = "http://127.0.0.1:8001"
# st.image's "fill the column": `width="stretch"` in recent Streamlit, `use_container_width` before.
STRETCH: dict[str, Any] = (
    {"width": "stretch"} if '"stretch"' in (st.image.__doc__ or "") else {"use_container_width": True}
)


@dataclass(frozen=True)
class Config:
    url: str
    api_key: str | None
    ml_url: str
    ml_api_key: str | None

    @classmethod
    def from_env(cls) -> Config:
        return cls(
            url=os.environ.get("SHOEBOX_URL") or DEFAULT_URL,
            api_key=os.environ.get("SHOEBOX_API_KEY") or None,
            ml_url=os.environ.get("SHOEBOX_ML_URL") or DEFAULT_ML_URL,
            ml_api_key=os.environ.get("SHOEBOX_ML_API_KEY") or None,
        )


@st.cache_resource(show_spinner=False)
def _client(url: str, api_key: str | None) -> ShoeboxClient:
    return ShoeboxClient(url, api_key, timeout=120.0)


def client() -> ShoeboxClient:
    cfg = Config.from_env()
    return _client(cfg.url, cfg.api_key)


def ml_client() -> ShoeboxClient:
    cfg = Config.from_env()
    return _client(cfg.ml_url, cfg.ml_api_key)


def show_error(exc: BaseException, what: str = "") -> None:
    prefix = f"{what}: " if what else ""
    if isinstance(exc, APIError):
        status = f" (HTTP {exc.status})" if exc.status else ""
        st.error(f"{prefix}**{exc.code}**{status} — {exc.message}")
    else:  # never a traceback in the page
        st.error(f"{prefix}**{type(exc).__name__}** — {exc}")


def call(
    fn: Callable[..., T], *args: Any, spinner: str | None = None, what: str = "", **kwargs: Any
) -> T | None:
    """`fn(*args, **kwargs)`, under a spinner when named; an error is shown (st.error) and answers None."""
    try:
        if spinner:
            with st.spinner(spinner):
                return fn(*args, **kwargs)
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - the page shows every failure as a message
        show_error(exc, what)
        return None


def collection() -> str | None:
    """The collection the pages use (chosen on the Collections page), or None: the service's selected one."""
    return st.session_state.get("collection")


def thumbnail(image_id: str) -> bytes | None:
    """Thumbnail bytes (cached for the session: an id names immutable content)."""
    cache: dict[str, bytes | None] = st.session_state.setdefault("_thumbs", {})
    if image_id not in cache:
        try:
            cache[image_id] = client().thumbnail(image_id)
        except APIError:
            cache[image_id] = None
        if len(cache) > 2000:
            cache.pop(next(iter(cache)))
    return cache[image_id]
