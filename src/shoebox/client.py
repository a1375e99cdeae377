"""One client of the ingestion service's HTTP API, on httpx: the CLI, the admin UI, the tests
and the benchmarks all use it.

- Every error body of API.md (`{"error": {"code", "message", …}}`) becomes one exception,
  `APIError`, carrying the code, the HTTP status and the extra fields; a service that cannot
  be reached is `APIError("ERR_CONNECTION")`, an answer that is not ours `HTTP_<status>`.
- The API key is sent as `X-API-Key`; timeouts are explicit (connect apart from read).
- Jobs come back as `protocol.Job`; `follow` polls one to its end, calling back on each change.
- `request` answers the raw `httpx.Response`, for callers that look at status codes and
  headers themselves (tests of the HTTP contract).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from shoebox.protocol import Job, JobStatus

DEFAULT_URL = "http://127.0.0.1:8002"
FINISHED = frozenset(s.value for s in JobStatus if s.finished)


class APIError(Exception):
    """An error answer of the API (its `code`), or no answer at all (`ERR_CONNECTION`)."""

    def __init__(self, code: str, message: str, status: int = 0, **detail: Any) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.detail = detail

    @classmethod
    def from_response(cls, response: httpx.Response) -> APIError:
        try:
            error = response.json()["error"]
            extra = {k: v for k, v in error.items() if k not in ("code", "message")}
            return cls(str(error["code"]), str(error.get("message", "")), response.status_code, **extra)
        except (ValueError, KeyError, TypeError, AttributeError):  # not our body (`"error": "…"` too)
            return cls(f"HTTP_{response.status_code}", response.text[:300], response.status_code)


class ShoeboxClient:
    """A client of one ingestion service. Use as a context manager, or call `close()`."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        api_key: str | None = None,
        *,
        timeout: float = 120.0,
        connect_timeout: float = 5.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key or None
        headers = {"X-API-Key": self.api_key} if self.api_key else {}
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=connect_timeout),
            transport=transport,
        )

    def __enter__(self) -> ShoeboxClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------ plumbing

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """The raw answer (no error mapping); transport errors propagate as httpx errors."""
        return self._http.request(method, path, **kwargs)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        """The answer's JSON; an error answer raises APIError with its code."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise APIError("ERR_CONNECTION", f"{self.url}: {exc}") from exc
        if not response.is_success:  # a redirect is not followed: its empty body is no answer either
            raise APIError.from_response(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise APIError(
                f"HTTP_{response.status_code}", "the answer is not JSON", response.status_code
            ) from None

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.call("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.call("DELETE", path, **kwargs)

    def content(self, path: str, **kwargs: Any) -> tuple[bytes, str]:
        """A binary answer (an image) and its content type."""
        try:
            response = self._http.get(path, **kwargs)
        except httpx.HTTPError as exc:
            raise APIError("ERR_CONNECTION", f"{self.url}: {exc}") from exc
        if not response.is_success:
            raise APIError.from_response(response)
        return response.content, response.headers.get("content-type", "application/octet-stream")

    # ------------------------------------------------------------ service

    def health(self, timeout: float = 2.0) -> dict[str, Any] | None:
        """The ingestion service's health, or None when nothing (or something else) answers."""
        try:
            response = self._http.get("/health", timeout=timeout)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return None
        try:
            body = response.json()
        except ValueError:
            return None
        # Anything else answering on the port is not ours.
        return body if isinstance(body, dict) and "vector_db" in body else None

    # ------------------------------------------------------------ collections

    def collections(self) -> list[str]:
        return list(self.get("/api/v1/collections"))

    def create_collection(self, name: str, model: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"collection_name": name}
        if model is not None:
            body["model"] = model
        return self.post("/api/v1/collections", json=body)

    # ------------------------------------------------------------ models of a collection

    def migrate(self, name: str, model: str) -> dict[str, Any]:
        """Start re-embedding collection `name` with `model` (a rollback when it keeps that model)."""
        return self.post(f"/api/v1/collections/{name}/migrate", json={"model": model})

    def migration(self, name: str) -> dict[str, Any]:
        return self.get(f"/api/v1/collections/{name}/migrate")

    def cancel_migration(self, name: str) -> dict[str, Any]:
        return self.delete(f"/api/v1/collections/{name}/migrate")

    def drop_model(self, name: str, model: str) -> dict[str, Any]:
        """Delete the collection's kept embeddings by `model` (no rollback to it afterwards)."""
        return self.delete(f"/api/v1/collections/{name}/models/{quote(model, safe='')}")

    def follow_migration(
        self,
        name: str,
        *,
        poll_s: float = 0.5,
        timeout: float | None = None,
        on_update: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll the collection's migration until it ends (completed, failed or cancelled)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.migration(name)
            if on_update is not None:
                on_update(status)
            if status["status"] in ("completed", "failed", "cancelled"):
                return status
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"migration of {name} still {status['status']} after {timeout} s")
            time.sleep(poll_s)

    def delete_collection(self, name: str) -> dict[str, Any]:
        return self.delete(f"/api/v1/collections/{name}")

    def select_collection(self, name: str) -> dict[str, Any]:
        return self.post("/api/v1/collections/select", json={"collection_name": name})

    def collection_info(self, name: str) -> dict[str, Any]:
        return self.get(f"/api/v1/collections/{name}/info")

    def prune(self, name: str, directory: Path | str | None = None) -> dict[str, Any]:
        body = {"directory_path": str(directory)} if directory else {}
        return self.post(f"/api/v1/collections/{name}/prune", json=body)

    def clear_cache(self) -> dict[str, Any]:
        """Empty the embedding cache (vectors by content hash, across collections): `{"cleared": n}`."""
        return self.post("/api/v1/collections/cache/clear")

    # ------------------------------------------------------------ jobs

    def ingest(self, directory: Path | str, collection: str | None = None) -> dict[str, Any]:
        """Start a job: `{"job_id", "status", "message", "collection_name"}` (202)."""
        body: dict[str, Any] = {"directory_path": str(directory)}
        if collection:
            body["collection_name"] = collection
        return self.post("/api/v1/ingest/", json=body)

    def job(self, job_id: str) -> Job:
        return Job.model_validate(self.get(f"/api/v1/ingest/status/{job_id}"))

    def jobs(self) -> list[Job]:
        return [Job.model_validate(j) for j in self.get("/api/v1/ingest/jobs")]

    def cancel(self, job_id: str) -> Job:
        return Job.model_validate(self.post(f"/api/v1/ingest/{job_id}/cancel"))

    def follow(
        self,
        job_id: str,
        *,
        poll_s: float = 0.5,
        timeout: float | None = None,
        until: Iterable[str] = FINISHED,
        on_update: Callable[[Job], None] | None = None,
        tolerate_unreachable: bool = False,
    ) -> Job:
        """Poll a job until its status is in `until` (default: finished) and answer it.

        `on_update` sees every poll's job (progress bars). With `tolerate_unreachable`, a
        service that is briefly down (restarting) is waited for instead of raising. Past
        `timeout` seconds without a wanted status: TimeoutError.
        """
        wanted = {getattr(s, "value", s) for s in until}  # JobStatus members or their strings
        deadline = None if timeout is None else time.monotonic() + timeout
        status = "unreachable"
        while True:
            try:
                job = self.job(job_id)
            except APIError as exc:
                if not (tolerate_unreachable and exc.code == "ERR_CONNECTION"):
                    raise
                status = "unreachable"
            else:
                status = job.status.value
                if on_update is not None:
                    on_update(job)
                if status in wanted:
                    return job
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {status} after {timeout} s")
            time.sleep(poll_s)

    def ingest_and_follow(self, directory: Path | str, collection: str | None = None, **follow: Any) -> Job:
        return self.follow(self.ingest(directory, collection)["job_id"], **follow)

    # ------------------------------------------------------------ search and browse

    def search_text(
        self,
        query: str,
        *,
        limit: int = 20,
        offset: int = 0,
        filters: dict[str, Any] | None = None,
        collection: str | None = None,
    ) -> dict[str, Any]:
        """`{"results", "collection_name", "model_name", "warnings"}`: `warnings` lists a
        W_QUERY_LANGUAGE warning when the text is clearly not English and the model is English-only."""
        body: dict[str, Any] = {"query": query, "limit": limit, "offset": offset}
        if filters:
            body["filters"] = filters
        if collection:
            body["collection_name"] = collection
        return self.post("/api/v1/search/text", json=body)

    def search_image(
        self,
        image: bytes,
        filename: str,
        *,
        limit: int = 20,
        offset: int = 0,
        filters: dict[str, Any] | None = None,
        collection: str | None = None,
    ) -> dict[str, Any]:
        data: dict[str, Any] = {"limit": str(limit), "offset": str(offset)}
        if filters:
            data["filters"] = json.dumps(filters)
        if collection:
            data["collection_name"] = collection
        # The name is only a hint for the format; the service never writes it anywhere.
        return self.post("/api/v1/search/image", data=data, files={"file": (filename, image)})

    def search_query(
        self,
        terms: list[dict[str, Any]],
        *,
        uploads: list[tuple[str, bytes]] | None = None,
        limit: int = 20,
        offset: int = 0,
        filters: dict[str, Any] | None = None,
        score_threshold: float | None = None,
        sort: str = "relevance",
        top_k: int | None = None,
        collection: str | None = None,
    ) -> dict[str, Any]:
        """A combined query: `terms` like `{"text": "beach"}`, `{"image_id": id, "weight": -1}` or
        `{"image_upload": i}` (the i-th of `uploads`, as `(filename, bytes)`); see POST /api/v1/search/query.
        The answer's `warnings` holds one W_QUERY_LANGUAGE warning per language of its texts, as search_text."""
        body: dict[str, Any] = {"terms": terms, "limit": limit, "offset": offset, "sort": sort}
        for key, value in (
            ("filters", filters),
            ("score_threshold", score_threshold),
            ("top_k", top_k),
            ("collection_name", collection),
        ):
            if value is not None:
                body[key] = value
        if not uploads:
            return self.post("/api/v1/search/query", json=body)
        files = [("files", (name, data)) for name, data in uploads]
        return self.post("/api/v1/search/query", data={"query": json.dumps(body)}, files=files)

    def similar(
        self, image_id: str, *, limit: int = 20, offset: int = 0, collection: str | None = None
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if collection:
            params["collection_name"] = collection
        return self.get(f"/api/v1/images/{image_id}/similar", params=params)

    def query_cache(self) -> dict[str, Any]:
        """The query-embedding cache's counters: `{"entries", "hits", "misses"}`."""
        return self.get("/api/v1/search/cache")

    def duplicates(
        self,
        *,
        threshold: float | None = None,
        phash_distance: int | None = None,
        burst_seconds: float | None = None,
        burst_threshold: float | None = None,
        collection: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Duplicates in tiers (exact, same_picture, near, bursts); a whole-library scan, so no
        timeout by default."""
        params: dict[str, Any] = {}
        for key, value in (
            ("threshold", threshold),
            ("phash_distance", phash_distance),
            ("burst_seconds", burst_seconds),
            ("burst_threshold", burst_threshold),
            ("collection_name", collection),
        ):
            if value is not None:
                params[key] = value
        return self.get("/api/v1/duplicates", params=params, timeout=timeout)

    def images(self, *, page: int = 1, per_page: int = 50, collection: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"page": page, "per_page": per_page}
        if collection:
            params["collection_name"] = collection
        return self.get("/api/v1/images", params=params)

    def image_info(self, image_id: str, collection: str | None = None) -> dict[str, Any]:
        params = {"collection_name": collection} if collection else {}
        return self.get(f"/api/v1/images/{image_id}/info", params=params)

    def thumbnail(self, image_id: str) -> bytes:
        return self.content(f"/api/v1/images/{image_id}/thumbnail")[0]

    def image(self, image_id: str) -> tuple[bytes, str]:
        return self.content(f"/api/v1/images/{image_id}/image")

    # ------------------------------------------------------------ folders (a picker)

    def folders(self, path: Path | str | None = None) -> dict[str, Any]:
        """`{"roots", "path", "folders": [{"name", "path"}]}`: the allowed roots (no path) or a folder's subfolders."""
        params = {"path": str(path)} if path else {}
        return self.get("/api/v1/folders", params=params)
