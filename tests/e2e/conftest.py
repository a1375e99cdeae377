"""Fixtures of the end-to-end tests: both services as real processes, generated photo folders."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from servers import ServiceProcess, ShoeboxClient, connect, start_ingest, start_ml  # noqa: E402


@pytest.fixture(scope="session")
def e2e_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def ml_service(tiny_model_dir: Path, e2e_dir: Path) -> Iterator[ServiceProcess]:
    """One ML service on the tiny model shared by the tests that do not stop or starve it."""
    proc = start_ml(tiny_model_dir, e2e_dir / "ml-shared")
    yield proc
    proc.stop()


@pytest.fixture
def photo_root(tmp_path: Path) -> Path:
    """The allowed ingest root of one test (SHOEBOX_INGEST_ROOTS)."""
    root = tmp_path / "photos"
    root.mkdir()
    return root


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Start processes (`start_ml` / `start_ingest` signatures); all are stopped after the test."""
    started: list[ServiceProcess] = []

    def start(kind: str, *args, **kwargs) -> ServiceProcess:
        proc = (start_ml if kind == "ml" else start_ingest)(*args, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in reversed(started):
        proc.stop()


@pytest.fixture
def clients() -> Iterator[Callable[..., ShoeboxClient]]:
    """Clients of ingestion services (`clients(url, api_key=None)`); all closed after the test."""
    made: list[ShoeboxClient] = []

    def make(url: str, api_key: str | None = None) -> ShoeboxClient:
        made.append(connect(url, api_key))
        return made[-1]

    yield make
    for client in made:
        client.close()


@pytest.fixture
def ingest(services, clients, ml_service: ServiceProcess, photo_root: Path, tmp_path: Path) -> ShoeboxClient:
    """A client of an ingestion service (fresh data dir) on the shared ML service, allowed to read `photo_root`."""
    proc = services("ingest", tmp_path / "data", [ml_service.url], [photo_root])
    return clients(proc.url)
