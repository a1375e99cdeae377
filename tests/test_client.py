"""The ingestion service's client (`shoebox.client`) against canned answers (httpx.MockTransport).

What the live services cannot show on demand: every kind of error answer, a service that does
not answer at all, a foreign service on the port, and how `follow` polls, stops and times out.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
import pytest

from shoebox.client import FINISHED, APIError, ShoeboxClient
from shoebox.protocol import Job

URL = "http://shoebox.test"
Handler = Callable[[httpx.Request], httpx.Response]


def _job(status: str, processed: int = 0, **extra) -> dict:
    return {
        "job_id": "j1",
        "collection_name": "photos",
        "directory_path": "/photos",
        "status": status,
        "total_files": 3,
        "processed_files": processed,
        "created_at": "2024-01-01T00:00:00Z",
        **extra,
    }


@pytest.fixture
def client_for() -> Iterator[Callable[..., ShoeboxClient]]:
    """`client_for(handler, api_key=None)`: a client whose requests `handler` answers; closed after."""
    made: list[ShoeboxClient] = []

    def make(handler: Handler, api_key: str | None = None) -> ShoeboxClient:
        made.append(ShoeboxClient(URL, api_key, transport=httpx.MockTransport(handler)))
        return made[-1]

    yield make
    for client in made:
        client.close()


def _polls(*answers: dict | Exception) -> tuple[Handler, list[httpx.Request]]:
    """A handler answering the job status polls in turn (the last one forever); an exception is raised."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/api/v1/ingest/status/j1"
        answer = answers[min(len(seen), len(answers) - 1)]
        seen.append(request)
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(200, json=answer)

    return handler, seen


# ---------------------------------------------------------------- errors


def test_an_error_body_becomes_an_api_error_with_its_code_status_and_detail(client_for) -> None:
    body = {"error": {"code": "ERR_MODEL_MISMATCH", "message": "another model", "expected": "a", "got": "b"}}
    client = client_for(lambda request: httpx.Response(409, json=body))
    with pytest.raises(APIError) as raised:
        client.ingest("/photos", "photos")
    error = raised.value
    assert (error.code, error.message, error.status) == ("ERR_MODEL_MISMATCH", "another model", 409)
    assert error.detail == {"expected": "a", "got": "b"}
    assert str(error) == "ERR_MODEL_MISMATCH: another model"


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(502, text="<html>Bad Gateway</html>"),
        httpx.Response(502, json={"detail": "not ours"}),
        httpx.Response(502, json={"error": "a string, not our error object"}),
        httpx.Response(502, json=["a", "list"]),
    ],
    ids=["html", "other-json", "error-string", "list"],
)
def test_an_error_answer_that_is_not_ours_is_http_and_its_status(client_for, answer) -> None:
    client = client_for(lambda request: answer)
    with pytest.raises(APIError) as raised:
        client.collections()
    assert (raised.value.code, raised.value.status) == ("HTTP_502", 502)
    assert raised.value.message == answer.text[:300]


def test_a_success_answer_that_is_not_json_is_an_error(client_for) -> None:
    client = client_for(lambda request: httpx.Response(200, text="<html>captive portal</html>"))
    with pytest.raises(APIError) as raised:
        client.collections()
    assert (raised.value.code, raised.value.status) == ("HTTP_200", 200)


def test_a_redirect_is_not_taken_for_an_empty_answer(client_for) -> None:
    moved = httpx.Response(307, headers={"location": f"{URL}/api/v1/ingest"})
    client = client_for(lambda request: moved)
    with pytest.raises(APIError) as raised:
        client.ingest("/photos")
    assert (raised.value.code, raised.value.status) == ("HTTP_307", 307)


def test_no_service_at_all_is_err_connection(client_for) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client = client_for(refuse)
    for call in (client.collections, lambda: client.thumbnail("x"), lambda: client.job("j1")):
        with pytest.raises(APIError) as raised:
            call()
        assert raised.value.code == "ERR_CONNECTION" and raised.value.status == 0
        assert URL in raised.value.message and "connection refused" in raised.value.message
    # The raw request leaves the transport error to its caller.
    with pytest.raises(httpx.ConnectError):
        client.request("GET", "/health")


def test_a_binary_answer_comes_with_its_content_type_and_errors_map_the_same(client_for) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/image"):
            return httpx.Response(200, content=b"\x89PNG...", headers={"content-type": "image/png"})
        return httpx.Response(404, json={"error": {"code": "ERR_NOT_FOUND", "message": "no image"}})

    client = client_for(handler)
    assert client.image("abc") == (b"\x89PNG...", "image/png")
    with pytest.raises(APIError) as raised:
        client.thumbnail("abc")
    assert (raised.value.code, raised.value.status) == ("ERR_NOT_FOUND", 404)


# ---------------------------------------------------------------- requests as sent


def test_the_api_key_is_sent_on_every_request_and_none_without_one(client_for) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=[])

    client_for(handler, "s3cret").collections()
    client_for(handler, "s3cret").content("/api/v1/images/x/thumbnail")
    client_for(handler).collections()
    client_for(handler, "").collections()  # an empty key (an unset variable) is no key
    assert [r.headers.get("x-api-key") for r in seen] == ["s3cret", "s3cret", None, None]


def test_requests_go_to_the_routes_of_api_md(client_for) -> None:
    seen: list[tuple[str, str, dict, bytes]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path, dict(request.url.params), request.content))
        if request.url.path.startswith("/api/v1/ingest/status") or request.url.path.endswith("/cancel"):
            return httpx.Response(200, json=_job("running"))
        if request.url.path == "/api/v1/ingest/jobs":
            return httpx.Response(200, json=[_job("completed")])
        return httpx.Response(200, json={"ok": True})

    client = client_for(handler)
    assert client.ingest("/photos", "trips") == {"ok": True}
    assert isinstance(client.job("j1"), Job) and client.cancel("j1").status == "running"
    assert [j.status for j in client.jobs()] == ["completed"]
    client.clear_cache()
    client.query_cache()
    client.prune("trips")
    client.similar("abc", limit=5, collection="trips")
    client.duplicates(threshold=0.9, collection="trips")
    client.images(page=2, per_page=10)
    client.search_text("a beach", limit=3, filters={"has_gps": True}, collection="trips")
    assert [(m, p) for m, p, _, _ in seen] == [
        ("POST", "/api/v1/ingest/"),
        ("GET", "/api/v1/ingest/status/j1"),
        ("POST", "/api/v1/ingest/j1/cancel"),
        ("GET", "/api/v1/ingest/jobs"),
        ("POST", "/api/v1/collections/cache/clear"),
        ("GET", "/api/v1/search/cache"),
        ("POST", "/api/v1/collections/trips/prune"),
        ("GET", "/api/v1/images/abc/similar"),
        ("GET", "/api/v1/duplicates"),
        ("GET", "/api/v1/images"),
        ("POST", "/api/v1/search/text"),
    ]
    assert json.loads(seen[0][3]) == {"directory_path": "/photos", "collection_name": "trips"}
    assert json.loads(seen[6][3]) == {}
    assert seen[7][2] == {"limit": "5", "offset": "0", "collection_name": "trips"}
    assert seen[8][2] == {"threshold": "0.9", "collection_name": "trips"}
    assert seen[9][2] == {"page": "2", "per_page": "10"}
    assert json.loads(seen[10][3]) == {
        "query": "a beach",
        "limit": 3,
        "offset": 0,
        "filters": {"has_gps": True},
        "collection_name": "trips",
    }


def test_search_by_image_sends_a_form_with_the_file_and_filters_as_json(client_for) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"results": []})

    client_for(handler).search_image(b"JPEGBYTES", "q.jpg", limit=2, filters={"format": ["png"]})
    (request,) = seen
    assert request.url.path == "/api/v1/search/image"
    assert request.headers["content-type"].startswith("multipart/form-data")
    body = request.content
    assert b'name="file"; filename="q.jpg"' in body and b"JPEGBYTES" in body
    assert b'name="limit"\r\n\r\n2\r\n' in body
    assert b'name="filters"\r\n\r\n{"format": ["png"]}\r\n' in body


# ---------------------------------------------------------------- health


def test_health_is_the_services_body_or_none_when_it_is_not_ours(client_for) -> None:
    ours = {"status": "ok", "vector_db": "qdrant-edge", "ml": {"reachable": True}}
    assert client_for(lambda request: httpx.Response(200, json=ours)).health() == ours
    foreign = client_for(lambda request: httpx.Response(200, json={"status": "ok"}))  # another app
    assert foreign.health() is None
    assert client_for(lambda request: httpx.Response(200, text="It works!")).health() is None
    assert client_for(lambda request: httpx.Response(200, json=["vector_db"])).health() is None
    assert client_for(lambda request: httpx.Response(503, json=ours)).health() is None

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    assert client_for(refuse).health() is None


# ---------------------------------------------------------------- follow


def test_follow_reports_every_poll_and_stops_at_a_finished_status(client_for) -> None:
    handler, seen = _polls(_job("pending"), _job("running", 1), _job("running", 2), _job("completed", 3))
    updates: list[Job] = []
    job = client_for(handler).follow("j1", poll_s=0, on_update=updates.append)
    assert job.status == "completed" and job.processed_files == 3
    assert [(u.status.value, u.processed_files) for u in updates] == [
        ("pending", 0),
        ("running", 1),
        ("running", 2),
        ("completed", 3),
    ]
    assert len(seen) == 4  # no poll after the finished one


@pytest.mark.parametrize("status", sorted(FINISHED))
def test_follow_stops_at_each_finished_status(client_for, status: str) -> None:
    handler, seen = _polls(_job("running"), _job(status))
    assert client_for(handler).follow("j1", poll_s=0).status == status
    assert len(seen) == 2


def test_follow_until_a_chosen_status(client_for) -> None:
    handler, seen = _polls(_job("pending"), _job("pending"), _job("running"), _job("completed"))
    assert client_for(handler).follow("j1", poll_s=0, until={"running"}).status == "running"
    assert len(seen) == 3


def test_follow_gives_up_after_its_timeout(client_for) -> None:
    handler, seen = _polls(_job("running", 1))
    with pytest.raises(TimeoutError, match="j1 still running after 0.05 s"):
        client_for(handler).follow("j1", poll_s=0.01, timeout=0.05)
    assert len(seen) >= 2


def test_follow_raises_an_unreachable_service_unless_told_to_wait_for_it(client_for) -> None:
    down = httpx.ConnectError("connection refused")
    handler, _ = _polls(_job("running", 1), down, _job("completed", 3))
    with pytest.raises(APIError) as raised:
        client_for(handler).follow("j1", poll_s=0)
    assert raised.value.code == "ERR_CONNECTION"

    # A restart between polls: down for a few polls, then the job again, finished.
    handler, seen = _polls(
        _job("running", 1), down, httpx.ReadTimeout("read timed out"), down, _job("completed", 3)
    )
    updates: list[Job] = []
    job = client_for(handler).follow("j1", poll_s=0, tolerate_unreachable=True, on_update=updates.append)
    assert job.status == "completed" and len(seen) == 5
    assert [u.status.value for u in updates] == ["running", "completed"]  # only the answers


def test_follow_tolerates_no_other_error_and_times_out_while_unreachable(client_for) -> None:
    gone = {"error": {"code": "ERR_NOT_FOUND", "message": "no job j1"}}
    client = client_for(lambda request: httpx.Response(404, json=gone))
    with pytest.raises(APIError) as raised:
        client.follow("j1", poll_s=0, tolerate_unreachable=True)
    assert raised.value.code == "ERR_NOT_FOUND"

    handler, _ = _polls(_job("running"), httpx.ConnectError("refused"))
    with pytest.raises(TimeoutError, match="still unreachable"):
        client_for(handler).follow("j1", poll_s=0.01, timeout=0.05, tolerate_unreachable=True)


def test_ingest_and_follow_follows_the_job_it_started(client_for) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(
                202, json={"job_id": "j1", "status": "pending", "collection_name": "photos"}
            )
        return httpx.Response(200, json=_job("completed", 3))

    job = client_for(handler).ingest_and_follow("/photos", "photos", poll_s=0)
    assert (job.job_id, job.status, job.processed_files) == ("j1", "completed", 3)
