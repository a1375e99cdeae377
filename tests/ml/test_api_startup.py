"""Start-up: the measured safe batch is cached per model and device; a missing model is one clear line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from shoebox.launcher import ServiceProcess


def test_the_probed_safe_batch_is_cached_as_json(ml_service: ServiceProcess, ml_probe_dir: Path) -> None:
    capabilities = httpx.get(ml_service.url + "/api/v1/capabilities").json()
    (cache_file,) = ml_probe_dir.glob("*.json")
    cached = json.loads(cache_file.read_text())
    assert cached["safe_clip_batch"] == capabilities["safe_clip_batch"]
    assert cached["key"]["model_name"] == capabilities["model_name"]
    assert cached["key"]["device"] == "cpu"
    assert cached["key"]["runtime_version"].startswith("onnxruntime-")
    assert capabilities["probe_source"] == "probe"


def test_a_restart_reads_the_cached_probe_instead_of_measuring_again(
    ml_service: ServiceProcess, launch_ml: Callable[..., ServiceProcess], ml_probe_dir: Path, tmp_path: Path
) -> None:
    first = httpx.get(ml_service.url + "/api/v1/capabilities").json()
    log = tmp_path / "restart.log"
    second = launch_ml(ml_probe_dir, log)
    capabilities = httpx.get(second.url + "/api/v1/capabilities").json()
    assert capabilities["probe_source"] == "cache"
    assert capabilities["safe_clip_batch"] == first["safe_clip_batch"]
    assert "read from the probe cache" in log.read_text()
    assert "measuring safe_clip_batch" not in log.read_text()


def test_the_safe_batch_setting_skips_the_probe(secured_ml_service: ServiceProcess) -> None:
    headers = {"X-API-Key": secured_ml_service.env["SHOEBOX_API_KEY"]}
    capabilities = httpx.get(secured_ml_service.url + "/api/v1/capabilities", headers=headers).json()
    assert capabilities["safe_clip_batch"] == 2
    assert capabilities["probe_source"] == "setting"


def test_no_model_is_one_clear_line_and_a_failing_exit(tmp_path: Path) -> None:
    env = {
        "SHOEBOX_MODEL_DIR": str(tmp_path / "no-such-model"),
        "SHOEBOX_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "shoebox.ml", "--port", "1"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr
    assert "SHOEBOX_MODEL_DIR" in errors[0]
    assert "Traceback" not in result.stderr
