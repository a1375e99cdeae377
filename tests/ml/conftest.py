"""The ML service as users run it: `python -m shoebox.ml` on loopback, on the tiny random-weight model."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shoebox.launcher import ServiceProcess, start_service

API_KEY = "test-api-key"
# A file above this many bytes is refused by the main test instance before it is decoded.
UPLOAD_LIMIT = 3_000_000
MAX_BATCH_FILES = 64
# The flood instance: a queue of a few images, so a handful of concurrent requests overflow it.
FLOOD_MAX_QUEUE = 8


def ml_env(tiny_model_dir: Path, probe_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "SHOEBOX_MODEL_DIR": str(tiny_model_dir),
        "SHOEBOX_PROBE_CACHE_DIR": str(probe_dir),
        "SHOEBOX_API_KEY": "",
        "SHOEBOX_OFFLINE": "1",
        **extra,
    }


def start_ml(env: dict[str, str], log_path: Path, timeout: float = 60.0) -> ServiceProcess:
    service = start_service("ml", env=env, log_path=log_path)
    try:
        service.wait_healthy(timeout, require="model_loaded")
    except BaseException:
        service.stop()
        raise
    return service


@pytest.fixture(scope="session")
def ml_limits() -> dict[str, int]:
    """The limits `ml_service` runs with."""
    return {
        "max_upload_bytes": UPLOAD_LIMIT,
        "max_batch_files": MAX_BATCH_FILES,
        "flood_max_queue": FLOOD_MAX_QUEUE,
    }


@pytest.fixture(scope="session")
def ml_probe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("probe-cache")


@pytest.fixture(scope="session")
def ml_service(
    tiny_model_dir: Path, ml_probe_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """No API key, safe batch probed at start-up (and cached in `ml_probe_dir`)."""
    logs = tmp_path_factory.mktemp("ml-logs")
    env = ml_env(
        tiny_model_dir,
        ml_probe_dir,
        SHOEBOX_MAX_UPLOAD_BYTES=str(UPLOAD_LIMIT),
        SHOEBOX_MAX_BATCH_FILES=str(MAX_BATCH_FILES),
        SHOEBOX_MAX_IMAGE_PIXELS=str(60_000_000),
    )
    service = start_ml(env, logs / "ml.log")
    yield service
    service.stop()


@pytest.fixture(scope="session")
def secured_ml_service(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    """With an API key and a tiny queue, for the auth and flood tests."""
    logs = tmp_path_factory.mktemp("ml-secured-logs")
    env = ml_env(
        tiny_model_dir,
        tmp_path_factory.mktemp("probe-secured"),
        SHOEBOX_API_KEY=API_KEY,
        SHOEBOX_MAX_QUEUE=str(FLOOD_MAX_QUEUE),
        SHOEBOX_SAFE_CLIP_BATCH="2",
        SHOEBOX_DECODE_WORKERS="1",
    )
    service = start_ml(env, logs / "ml.log")
    yield service
    service.stop()


@pytest.fixture
def launch_ml(tiny_model_dir: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Start another instance on the tiny model: `launch_ml(probe_dir, log_path, SHOEBOX_X="…")`."""
    started: list[ServiceProcess] = []

    def launch(probe_dir: Path, log_path: Path, **env: str) -> ServiceProcess:
        service = start_ml(ml_env(tiny_model_dir, probe_dir, **env), log_path)
        started.append(service)
        return service

    yield launch
    for service in started:
        service.stop()


@pytest.fixture(scope="session")
def family_model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny random-weight model of every CLIP family (the torch-free builder), built once per session."""
    from shoebox.ml.models.families import FAMILIES
    from shoebox.ml.models.onnx_testmodel import build_onnx_test_model

    root = tmp_path_factory.mktemp("family-models")
    return {
        family: build_onnx_test_model("tiny", root / f"tiny-{family}", seed=0, family=family, fp16=False)
        for family in FAMILIES
    }
