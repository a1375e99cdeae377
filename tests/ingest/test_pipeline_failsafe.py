"""A job always ends and accounts for every file, whatever the ML service, the cache or the catalog do.

In process, with the real catalog (SQLite), embedded Qdrant, embedding cache and decoders; only
the ML service — an external boundary — is replaced: by a fake client that raises or stalls, or
by the real client talking to an HTTP transport that answers too few results or garbage.
Each test checks that the job ends, that `processed_files == total_files` with a code on every
failure, and that the collection is free again (a second job on it completes).
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from shoebox.devtools import photos
from shoebox.ingest.config import IngestSettings
from shoebox.ingest.context import ServiceContext
from shoebox.ingest.ml_client import BatchFile, MLClient
from shoebox.protocol import Capabilities, ErrorCode, Item, Job, JobStatus

DIM = 8
N_FILES = 10


class FakeML:
    """Stands in for `MLClient`: deterministic vectors from the bytes, or the failure asked for."""

    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.release = threading.Event()  # ends a stall
        self.calls = 0

    def capabilities(self, timeout: float = 3.0) -> Capabilities:
        return Capabilities(
            safe_clip_batch=4,
            max_batch=64,
            model_name="fake-model",
            embedding_dim=DIM,
            device="cpu",
            dtype="fp32",
            image_formats=["jpg", "png"],
            raw_formats=["dng"],
            max_queue=64,
            input_size=32,
        )

    def batch_size(self, model: str | None = None) -> int:
        return 4

    def embed_batch(
        self,
        files: list[BatchFile],
        *,
        should_stop: Callable[[], bool] | None = None,
        model: str | None = None,
    ) -> tuple[list[Item], str]:
        self.calls += 1
        if self.mode == "raise":
            raise RuntimeError("the client blew up")
        if self.mode == "stall":
            self.release.wait(30)
        items = [
            Item(unique_id=f.unique_id, filename=f.filename, embedding=_vector(f.data), width=32, height=32)
            for f in files
        ]
        return items, "fake-model"

    def close(self) -> None:
        self.release.set()


def _vector(data: bytes) -> list[float]:
    seed = int.from_bytes(hashlib.sha256(data).digest()[:4], "little")
    v = np.random.default_rng(seed).normal(size=DIM)
    return list(v / np.linalg.norm(v))


def _folder(root: Path, n: int = N_FILES, name: str = "photos") -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        photos.write_jpeg(folder / f"img_{i:03d}.jpg", photos.synthetic_photo(64, 48, seed=i))
    return folder


@pytest.fixture
def open_service(tmp_path: Path) -> Iterator[Callable[..., ServiceContext]]:
    opened: list[ServiceContext] = []

    def open_(ml: Any, **overrides: Any) -> ServiceContext:
        settings = IngestSettings(
            **{
                "data_dir": tmp_path / "data",
                "ingest_roots": [tmp_path],
                "hash_workers": 2,
                "prepare_workers": 2,
                **overrides,
            }
        )
        ctx = ServiceContext.open(settings, ml=ml)
        opened.append(ctx)
        return ctx

    yield open_
    for ctx in opened:
        ctx.ml.close()
        ctx.close()


def _run(ctx: ServiceContext, folder: Path, collection: str = "lib", timeout: float = 60.0) -> Job:
    job = ctx.jobs.submit(str(folder), collection)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = ctx.catalog.get_job(job.job_id)
        assert current is not None
        if current.status.finished:
            ctx.jobs.wait(job.job_id, 5.0)
            return current
        time.sleep(0.05)
    raise AssertionError(f"job did not end in {timeout} s: {ctx.catalog.get_job(job.job_id)}")


def _assert_accounted(job: Job, total: int) -> None:
    assert job.status.finished
    assert job.total_files == job.processed_files == total, job
    assert job.indexed + job.cached + job.unchanged + job.failed == total
    assert all(e.code for e in job.errors) and len(job.errors) == job.failed


def _assert_collection_free(ctx: ServiceContext, folder: Path, ml: FakeML) -> None:
    ml.mode = "ok"
    again = _run(ctx, folder)
    assert again.status == JobStatus.COMPLETED, again.logs
    _assert_accounted(again, N_FILES)


def test_a_healthy_job_indexes_every_file_once(open_service, tmp_path: Path) -> None:
    ml = FakeML()
    ctx = open_service(ml)
    folder = _folder(tmp_path)
    job = _run(ctx, folder)
    assert job.status == JobStatus.COMPLETED
    assert job.indexed == N_FILES
    _assert_accounted(job, N_FILES)
    assert ctx.store.count("lib") == N_FILES


def test_a_client_that_raises_fails_each_file_with_a_code(open_service, tmp_path: Path) -> None:
    ml = FakeML("raise")
    ctx = open_service(ml)
    folder = _folder(tmp_path)
    job = _run(ctx, folder)
    assert job.status == JobStatus.COMPLETED_WITH_ERRORS
    _assert_accounted(job, N_FILES)
    assert {e.code for e in job.errors} == {ErrorCode.ML_UNAVAILABLE}
    _assert_collection_free(ctx, folder, ml)


def _client_answering(tmp_path: Path, batch_answer: Callable[[httpx.Request], httpx.Response]) -> MLClient:
    """The real ML client, its HTTP answered by `batch_answer` (capabilities: FakeML's)."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/capabilities"):
            return httpx.Response(200, json=FakeML().capabilities().model_dump())
        return batch_answer(request)

    client = MLClient(IngestSettings(data_dir=tmp_path / "unused", ml_url="http://ml.invalid"))
    client._http = httpx.Client(transport=httpx.MockTransport(handler))
    return client


def test_an_answer_with_too_few_results_fails_only_the_missing_files(open_service, tmp_path: Path) -> None:
    short = {"answers": True}

    def half_the_results(request: httpx.Request) -> httpx.Response:
        ids = json.loads(re.search(rb'name="unique_ids"\r\n\r\n(.*?)\r\n', request.content).group(1))
        results = [
            {"unique_id": uid, "filename": "x.jpg", "embedding": _vector(uid.encode())}
            for uid in (ids[: len(ids) // 2] if short["answers"] else ids)
        ]
        return httpx.Response(
            200, json={"results": results, "model_name": "fake-model", "device_used": "cpu"}
        )

    ctx = open_service(_client_answering(tmp_path, half_the_results))
    folder = _folder(tmp_path)
    job = _run(ctx, folder)
    _assert_accounted(job, N_FILES)
    assert job.indexed > 0 and job.failed > 0
    assert {e.code for e in job.errors} == {ErrorCode.ML_UNAVAILABLE}
    assert all("no result for this file" in e.message for e in job.errors)
    assert ctx.store.count("lib") == job.indexed
    short["answers"] = False  # the collection is free again, and the missing files get done
    again = _run(ctx, folder)
    assert again.status == JobStatus.COMPLETED, again.logs
    _assert_accounted(again, N_FILES)


def test_a_stalled_ml_request_is_abandoned_at_its_deadline(open_service, tmp_path: Path) -> None:
    ml = FakeML("stall")
    ctx = open_service(ml, ml_batch_deadline_s=1.0)
    folder = _folder(tmp_path)
    started = time.monotonic()
    job = _run(ctx, folder)
    assert time.monotonic() - started < 20
    _assert_accounted(job, N_FILES)
    assert job.failed == N_FILES and {e.code for e in job.errors} == {ErrorCode.ML_UNAVAILABLE}
    ml.release.set()  # the late answers must change nothing
    time.sleep(0.3)
    assert ctx.catalog.get_job(job.job_id).failed == N_FILES
    _assert_collection_free(ctx, folder, ml)


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(200, text="<html>proxy error</html>"),
        httpx.Response(200, json={"unexpected": True}),
        httpx.Response(200, json={"results": [{"nonsense": 1}], "model_name": "m"}),
        httpx.Response(200, json={"results": "not a list", "model_name": "m"}),
    ],
    ids=["not-json", "no-results", "bad-items", "results-not-a-list"],
)
def test_garbage_from_the_ml_service_fails_the_batch_not_the_service(
    open_service, tmp_path: Path, answer: httpx.Response
) -> None:
    def garbage(request: httpx.Request) -> httpx.Response:
        return httpx.Response(answer.status_code, content=answer.content, headers=answer.headers)

    ctx = open_service(_client_answering(tmp_path, garbage))
    job = _run(ctx, _folder(tmp_path))
    assert job.status == JobStatus.COMPLETED_WITH_ERRORS
    _assert_accounted(job, N_FILES)
    assert {e.code for e in job.errors} == {ErrorCode.ML_UNAVAILABLE}
    assert all("malformed answer" in e.message for e in job.errors)


def test_a_broken_embedding_cache_ends_the_job_with_every_file_failed(
    open_service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ml = FakeML()
    ctx = open_service(ml)
    folder = _folder(tmp_path)

    def broken_get(*args: Any, **kwargs: Any) -> None:
        raise sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.setattr(ctx.cache, "get", broken_get)
    job = _run(ctx, folder)
    assert job.status == JobStatus.FAILED
    _assert_accounted(job, N_FILES)
    assert {e.code for e in job.errors} == {ErrorCode.INTERNAL}
    assert any("dedupe stage" in line for line in job.logs)
    monkeypatch.undo()
    _assert_collection_free(ctx, folder, ml)


def test_failing_catalog_writes_end_the_job_and_the_books_still_balance(
    open_service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ml = FakeML()
    ctx = open_service(ml)
    folder = _folder(tmp_path)
    real_record = ctx.catalog.record
    failures = {"left": 1}

    def flaky_record(*args: Any, **kwargs: Any) -> None:
        if failures["left"] and args[2]:  # the store stage's first batch of outcomes
            failures["left"] -= 1
            raise sqlite3.OperationalError("disk I/O error")
        real_record(*args, **kwargs)

    monkeypatch.setattr(ctx.catalog, "record", flaky_record)
    job = _run(ctx, folder)
    assert job.status == JobStatus.FAILED
    _assert_accounted(job, N_FILES)
    assert {e.code for e in job.errors} == {ErrorCode.INTERNAL}
    assert any("store stage" in line and "disk I/O error" in line for line in job.logs)
    _assert_collection_free(ctx, folder, ml)


def test_a_crashing_batch_sender_fails_its_files_through_its_checked_future(
    open_service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shoebox.ingest import stages

    def crash(ctx: Any, batch: Any) -> list[Any]:
        raise KeyError("a bug in the sender")

    ml = FakeML()
    ctx = open_service(ml)
    folder = _folder(tmp_path)
    monkeypatch.setattr(stages, "send_batch", crash)
    job = _run(ctx, folder)
    assert job.status == JobStatus.COMPLETED_WITH_ERRORS
    _assert_accounted(job, N_FILES)
    assert {e.code for e in job.errors} == {ErrorCode.INTERNAL}
    monkeypatch.undo()
    _assert_collection_free(ctx, folder, ml)


def test_each_new_file_is_read_once_and_decoded_from_the_bytes_hashed(
    open_service, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import builtins
    import os

    folder = _folder(tmp_path)
    real_folder = os.path.realpath(folder)
    opened: list[str] = []
    real_open, real_os_open = builtins.open, os.open

    def counting_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if str(file).startswith((str(folder), real_folder)):
            opened.append(os.path.realpath(file))
        return real_open(file, *args, **kwargs)

    def counting_os_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if str(file).startswith((str(folder), real_folder)):
            opened.append(os.path.realpath(file))
        return real_os_open(file, *args, **kwargs)

    ml = FakeML()
    ctx = open_service(ml)
    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(os, "open", counting_os_open)
    job = _run(ctx, folder)
    monkeypatch.undo()
    assert job.status == JobStatus.COMPLETED
    # Each file opened exactly once.
    assert sorted(opened) == sorted(os.path.realpath(p) for p in folder.iterdir())
    # The vector stored under a hash is the one of the bytes with that hash.
    for p in folder.iterdir():
        sha = hashlib.sha256(p.read_bytes()).hexdigest()
        point = ctx.store.retrieve("lib", [sha], with_vectors=True)[sha]
        assert point.payload["paths"] == [str(p)]


def test_the_catalog_rolls_back_a_transaction_whose_commit_fails(tmp_path: Path) -> None:
    from shoebox.ingest.catalog import Catalog

    catalog = Catalog(tmp_path / "c.sqlite3")
    catalog.create_job("j", "c", "/p")
    real = catalog._conn

    class FailingCommit:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        def execute(self, sql: str, *args: Any) -> Any:
            if sql == "COMMIT":
                raise sqlite3.OperationalError("disk full")
            return real.execute(sql, *args)

    catalog._conn = FailingCommit()  # type: ignore[assignment]
    with pytest.raises(sqlite3.OperationalError):
        catalog.set_meta("k", "v")
    assert not real.in_transaction
    catalog._conn = real
    assert catalog.get_meta("k") is None
    catalog.set_meta("k", "w")  # the connection is usable again
    assert catalog.get_meta("k") == "w"
