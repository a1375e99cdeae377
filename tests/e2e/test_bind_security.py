"""Where the services listen: loopback by default; any other address only with an API key or --insecure.

Every server here that binds a wildcard address is only ever talked to on loopback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from servers import free_port
from shoebox.launcher import ServiceProcess, start_service

KEY = "bind-test-key"
REFUSAL_TIMEOUT_S = 30  # far more than the check takes: it runs before any model or data dir
WILDCARDS = ["0.0.0.0", "::"]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOEBOX_")}
    return {**env, "COLUMNS": "200", **extra}


def _service_env(kind: str, tmp_path: Path, tiny_model_dir: Path, **extra: str) -> dict[str, str]:
    if kind == "ml":
        env = {
            "SHOEBOX_MODEL_DIR": str(tiny_model_dir),
            "SHOEBOX_OFFLINE": "1",
            "SHOEBOX_DEVICE": "cpu",
            "SHOEBOX_SAFE_CLIP_BATCH": "8",
            "SHOEBOX_PROBE_CACHE_DIR": str(tmp_path / "probe"),
            "SHOEBOX_INTRA_OP_THREADS": "1",
        }
    else:  # no ML service needed: the ingestion service starts and answers /health without one
        env = {"SHOEBOX_DATA_DIR": str(tmp_path / "data"), "SHOEBOX_ML_URLS": "http://127.0.0.1:9"}
    return {**env, "SHOEBOX_API_KEY": "", **extra}


def _listening_ips(pid: int, port: int) -> set[str]:
    """The addresses process `pid` (or one of its children) listens on at `port`."""
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return {
        c.laddr.ip
        for p in procs
        for c in p.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    }


def _refused(result: subprocess.CompletedProcess, host: str) -> None:
    assert result.returncode != 0
    assert f"refusing to listen on {host} without SHOEBOX_API_KEY" in result.stderr
    assert "--insecure" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize("host", [*WILDCARDS, "192.0.2.10"])
@pytest.mark.parametrize("kind", ["ml", "ingest"])
def test_a_service_refuses_a_non_loopback_bind_without_a_key(kind: str, host: str, tmp_path: Path) -> None:
    # A model folder that does not exist: a service that got as far as the model would say so instead.
    env = _clean_env(SHOEBOX_MODEL_DIR=str(tmp_path / "no-model"), SHOEBOX_DATA_DIR=str(tmp_path / "data"))
    result = subprocess.run(
        [sys.executable, "-m", f"shoebox.{kind}", "--host", host, "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=REFUSAL_TIMEOUT_S,
    )
    _refused(result, host)
    assert not (tmp_path / "data").exists()  # the ingestion service did not even create its data dir


@pytest.mark.parametrize("kind", ["ml", "ingest"])
def test_a_service_binds_loopback_by_default(kind: str, tmp_path: Path, tiny_model_dir: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", f"shoebox.{kind}", "--port", str(port)],
        env=_clean_env(**_service_env(kind, tmp_path, tiny_model_dir)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    service = ServiceProcess(kind=kind, host="127.0.0.1", port=port, proc=proc)
    try:
        service.wait_healthy(timeout=90)
        assert _listening_ips(proc.pid, port) == {"127.0.0.1"}
    finally:
        service.stop()


@pytest.mark.parametrize("kind", ["ml", "ingest"])
def test_a_service_with_insecure_binds_the_wildcard_and_warns(kind: str, tmp_path: Path, tiny_model_dir: Path) -> None:
    log = tmp_path / "service.log"
    service = start_service(
        kind, host="0.0.0.0", env=_service_env(kind, tmp_path, tiny_model_dir), log_path=log, insecure=True
    )
    try:
        assert service.url.startswith("http://127.0.0.1:")  # talked to on loopback only
        service.wait_healthy(timeout=90)
        assert _listening_ips(service.proc.pid, service.port) == {"0.0.0.0"}
        assert "WARNING: INSECURE" in log.read_text()
    finally:
        service.stop()


@pytest.mark.parametrize("kind", ["ml", "ingest"])
def test_a_service_with_a_key_binds_the_wildcard(kind: str, tmp_path: Path, tiny_model_dir: Path) -> None:
    log = tmp_path / "service.log"
    env = _service_env(kind, tmp_path, tiny_model_dir, SHOEBOX_API_KEY=KEY)
    service = start_service(kind, host="0.0.0.0", env=env, log_path=log)
    try:
        service.wait_healthy(timeout=90)
        assert _listening_ips(service.proc.pid, service.port) == {"0.0.0.0"}
        assert httpx.get(service.url + "/api/v1/nothing", timeout=10).status_code == 401
        assert "INSECURE" not in log.read_text()
    finally:
        service.stop()


# ------------------------------------------------------------------------------ shoebox up


def _up_env(tiny_model_dir: Path, tmp_path: Path, port: int, **extra: str) -> dict[str, str]:
    return _clean_env(
        SHOEBOX_URL=f"http://127.0.0.1:{port}",
        SHOEBOX_MODEL_DIR=str(tiny_model_dir),
        SHOEBOX_DATA_DIR=str(tmp_path / "data"),
        SHOEBOX_SAFE_CLIP_BATCH="8",
        SHOEBOX_PROBE_CACHE_DIR=str(tmp_path / "probe"),
        **extra,
    )


def _serve_up(env: dict[str, str], *args: str) -> tuple[subprocess.Popen, str]:
    """`shoebox up ARGS`, read until it says it serves: (process, what it printed)."""
    up = subprocess.Popen(
        [sys.executable, "-m", "shoebox.cli", "up", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    printed = []
    for line in up.stdout:
        printed.append(line)
        if "Press Ctrl-C" in line:
            break
    return up, "".join(printed)


def _stop(up: subprocess.Popen) -> str:
    up.send_signal(signal.SIGINT)
    try:
        _, stderr = up.communicate(timeout=60)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    return stderr


def test_up_refuses_a_wildcard_bind_without_a_key(tmp_path: Path) -> None:
    port = free_port()
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "shoebox.cli", "up", "--host", "0.0.0.0"],
        env=_up_env(tmp_path / "no-model", tmp_path, port),
        capture_output=True,
        text=True,
        timeout=REFUSAL_TIMEOUT_S,
    )
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0 without SHOEBOX_API_KEY" in " ".join(result.stderr.split())
    assert time.monotonic() - started < REFUSAL_TIMEOUT_S
    assert not (tmp_path / "data").exists()


def test_up_refuses_a_wildcard_ui_without_a_password(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "shoebox.cli", "up", "--host", "0.0.0.0", "--ui"],
        env=_up_env(tmp_path / "no-model", tmp_path, free_port(), SHOEBOX_API_KEY=KEY),
        capture_output=True,
        text=True,
        timeout=REFUSAL_TIMEOUT_S,
    )
    assert result.returncode == 2
    assert "without SHOEBOX_UI_PASSWORD" in " ".join(result.stderr.split())


def test_up_binds_loopback_by_default(tiny_model_dir: Path, tmp_path: Path) -> None:
    port, ml_port = free_port(), free_port()
    up, _ = _serve_up(_up_env(tiny_model_dir, tmp_path, port), "--ml-port", str(ml_port))
    try:
        assert _listening_ips(up.pid, port) == {"127.0.0.1"}
        assert _listening_ips(up.pid, ml_port) == {"127.0.0.1"}
    finally:
        _stop(up)


def test_up_with_insecure_binds_the_wildcard_and_warns(tiny_model_dir: Path, tmp_path: Path) -> None:
    port, ml_port = free_port(), free_port()
    env = _up_env(tiny_model_dir, tmp_path, port)
    up, printed = _serve_up(env, "--host", "0.0.0.0", "--insecure", "--ml-port", str(ml_port))
    try:
        assert _listening_ips(up.pid, port) == {"0.0.0.0"}
        assert _listening_ips(up.pid, ml_port) == {"127.0.0.1"}  # only the ingestion service calls it
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/collections", timeout=10).status_code == 200
        assert "NONE, --insecure" in printed
    finally:
        stderr = _stop(up)
    assert "WARNING: INSECURE" in stderr


def test_up_with_a_key_binds_the_wildcard_and_requires_it(tiny_model_dir: Path, tmp_path: Path) -> None:
    port, ml_port = free_port(), free_port()
    env = _up_env(tiny_model_dir, tmp_path, port, SHOEBOX_API_KEY=KEY)
    up, _ = _serve_up(env, "--host", "0.0.0.0", "--ml-port", str(ml_port))
    try:
        assert _listening_ips(up.pid, port) == {"0.0.0.0"}
        url = f"http://127.0.0.1:{port}/api/v1/collections"
        assert httpx.get(url, timeout=10).status_code == 401
        assert httpx.get(url, headers={"X-API-Key": KEY}, timeout=10).status_code == 200
    finally:
        stderr = _stop(up)
    assert "INSECURE" not in stderr
