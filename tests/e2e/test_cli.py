"""The `shoebox` CLI as a user runs it: a subprocess talking to live services over HTTP."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from servers import ServiceProcess, free_port, start_ingest

CLI_TIMEOUT = 180


@dataclass
class CLI:
    env: dict[str, str]
    root: Path

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "shoebox.cli", *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def json(self, *args: str) -> object:
        result = self.run(*args, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOEBOX_")}
    return {**env, "COLUMNS": "200", **extra}


def _write_folders(root: Path) -> None:
    from shoebox.devtools import photos

    good = root / "good"
    good.mkdir(parents=True)
    for seed in range(3):
        photos.write_jpeg(good / f"photo_{seed}.jpg", photos.synthetic_photo(256, 192, seed=seed))
    shutil.copyfile(good / "photo_0.jpg", good / "photo_0_copy.jpg")
    bad = root / "with_bad"
    bad.mkdir()
    photos.write_jpeg(bad / "fine.jpg", photos.synthetic_photo(256, 192, seed=10))
    photos.write_text_as_jpg(bad / "broken.jpg")


@pytest.fixture(scope="module")
def cli(ml_service: ServiceProcess, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CLI]:
    base = tmp_path_factory.mktemp("cli")
    root = base / "photos"
    _write_folders(root)
    proc = start_ingest(base / "data", [ml_service.url], [root])
    runner = CLI(_clean_env(SHOEBOX_URL=proc.url), root)
    result = runner.run("ingest", str(root / "good"), "--json")
    assert result.returncode == 0, result.stderr
    assert runner.run("ingest", str(root / "with_bad"), "--json").returncode == 1
    yield runner
    proc.stop()


def test_ingest_json_reports_the_finished_job(cli):
    job = cli.json("ingest", str(cli.root / "good"))
    assert job["status"] == "completed"
    assert job["unchanged"] == 4 and job["failed"] == 0


def test_ingest_exits_non_zero_when_a_file_fails(cli):
    result = cli.run("ingest", str(cli.root / "with_bad"))
    assert result.returncode == 1
    # Errors grouped by code: the code (decoding or unsupported, as the sniffer decides) and the file.
    assert "errors by code" in result.stdout
    assert re.search(r"ERR_(DECODING_IMAGE|UNSUPPORTED_FORMAT)\W+1\W+broken\.jpg", result.stdout), result.stdout


def test_ingest_of_a_missing_folder_is_a_usage_error(cli):
    result = cli.run("ingest", str(cli.root / "nope"))
    assert result.returncode == 2
    assert "not a folder" in result.stderr


def test_ingest_of_a_folder_the_running_service_does_not_allow_explains_how(cli, tmp_path):
    result = cli.run("ingest", str(tmp_path))
    assert result.returncode == 2
    assert "does not allow" in result.stderr and "--allow" in result.stderr


def test_search_json_parses_into_hits(cli):
    answer = cli.json("search", "a landscape", "--limit", "2")
    hits = answer["results"]
    assert len(hits) == 2
    assert {"id", "score", "filename", "path", "thumbnail_url", "payload"} <= set(hits[0])


def test_search_filters_reach_the_service(cli):
    answer = cli.json("search", "anything", "--folder", str(cli.root / "with_bad"))
    assert [h["filename"] for h in answer["results"]] == ["fine.jpg"]


def test_search_table_lists_the_files(cli):
    result = cli.run("search", "a landscape", "--limit", "5")
    assert result.returncode == 0, result.stderr
    assert "photo_1.jpg" in result.stdout


def test_search_with_the_test_model_warns_that_results_are_meaningless(cli):
    result = cli.run("search", "a landscape")
    assert "RANDOM TEST MODEL" in result.stderr


def test_similar_uploads_a_file(cli):
    answer = cli.json("similar", str(cli.root / "good" / "photo_2.jpg"), "--limit", "1")
    assert answer["results"][0]["filename"] == "photo_2.jpg"


def test_duplicates_json_lists_the_copy(cli):
    answer = cli.json("duplicates")
    [group] = answer["groups"]["exact"]
    assert sorted(Path(m["path"]).name for m in group["members"]) == ["photo_0.jpg", "photo_0_copy.jpg"]
    assert group["keep_path"] in {m["path"] for m in group["members"]}


def test_status_json_lists_jobs(cli):
    answer = cli.json("status")
    assert answer["health"]["status"] == "ok"
    assert answer["jobs"] and all("job_id" in job for job in answer["jobs"])


def test_status_of_one_job_json(cli):
    job_id = cli.json("status")["jobs"][0]["job_id"]
    assert cli.json("status", job_id)["job_id"] == job_id


def test_status_of_an_unknown_job_fails_with_its_code(cli):
    result = cli.run("status", "no-such-job")
    assert result.returncode == 1
    assert "ERR_NOT_FOUND" in result.stderr


def test_collections_list_json(cli):
    rows = cli.json("collections", "list")
    assert "shoebox" in {row["name"] for row in rows}
    assert all("points_count" in row for row in rows)


def test_collections_create_select_delete(cli):
    assert cli.json("collections", "create", "holidays") == {"collection_name": "holidays"}
    assert cli.json("collections", "select", "holidays") == {"selected_collection": "holidays"}
    rows = {row["name"]: row for row in cli.json("collections", "list")}
    assert rows["holidays"]["selected"] is True
    cli.json("collections", "select", "shoebox")
    assert cli.json("collections", "delete", "holidays") == {"deleted": "holidays"}


def test_api_key_is_sent_from_the_environment(ml_service, tmp_path):
    proc = start_ingest(tmp_path / "data", [ml_service.url], [tmp_path], api_key="s3cret")
    try:
        keyed = CLI(_clean_env(SHOEBOX_URL=proc.url, SHOEBOX_API_KEY="s3cret"), tmp_path)
        assert keyed.json("collections", "list") == []
        result = keyed.run("collections", "list", env={"SHOEBOX_API_KEY": "wrong"})
        assert result.returncode == 1
        assert "ERR_UNAUTHORIZED" in result.stderr
    finally:
        proc.stop()


def test_cli_starts_its_own_services_when_none_answers_and_stops_them(tiny_model_dir, tmp_path):
    from shoebox.devtools import photos

    folder = tmp_path / "photos"
    folder.mkdir()
    photos.write_jpeg(folder / "one.jpg", photos.synthetic_photo(200, 150, seed=1))
    port = free_port()
    env = _clean_env(
        SHOEBOX_URL=f"http://127.0.0.1:{port}",
        SHOEBOX_MODEL_DIR=str(tiny_model_dir),
        SHOEBOX_DATA_DIR=str(tmp_path / "data"),
        SHOEBOX_SAFE_CLIP_BATCH="8",
        SHOEBOX_PROBE_CACHE_DIR=str(tmp_path / "probe"),
    )
    result = subprocess.run(
        [sys.executable, "-m", "shoebox.cli", "ingest", str(folder), "--json"],
        env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["indexed"] == 1
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)


def test_demo_runs_the_main_job_with_the_test_model_fallback(tmp_path):
    # No model anywhere and offline: one line says so, the test model is built, a banner warns.
    env = _clean_env(
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        XDG_DATA_HOME=str(tmp_path / "data"),
        SHOEBOX_OFFLINE="1",
        SHOEBOX_SAFE_CLIP_BATCH="8",
        SHOEBOX_PROBE_CACHE_DIR=str(tmp_path / "probe"),
        SHOEBOX_URL=f"http://127.0.0.1:{free_port()}",
        COLUMNS="250",  # wide enough that no path in the tables is folded
    )
    result = subprocess.run(
        [sys.executable, "-m", "shoebox.cli", "demo", "--query", "a beach", "--limit", "3"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "No real CLIP model" in result.stderr
    assert "RANDOM TEST MODEL" in result.stderr
    assert "completed" in result.stdout
    assert "“a beach”" in result.stdout
    # The sample's exact copy (one content, two paths) and its resized copy, in their tiers.
    exact = result.stdout.split("exact duplicates", 1)[1].split("the same picture", 1)[0]
    assert "1 groups" in exact and "IMG_0412.jpg" in exact
    same_picture = result.stdout.split("the same picture", 1)[1].split("bursts", 1)[0]
    assert "DSC_1022_small.jpg" in same_picture


def _start_up(tiny_model_dir: Path, tmp_path: Path, port: int, *args: str) -> tuple[subprocess.Popen, list[str]]:
    """`shoebox up ARGS` on loopback with the tiny model, read until it says it serves: (process, lines)."""
    env = _clean_env(
        SHOEBOX_URL=f"http://127.0.0.1:{port}",
        SHOEBOX_MODEL_DIR=str(tiny_model_dir),
        SHOEBOX_DATA_DIR=str(tmp_path / "data"),
        SHOEBOX_SAFE_CLIP_BATCH="8",
        SHOEBOX_PROBE_CACHE_DIR=str(tmp_path / "probe"),
    )
    up = subprocess.Popen(
        [sys.executable, "-m", "shoebox.cli", "up", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    printed: list[str] = []
    # `up` prints its URLs once both services are healthy, then serves until interrupted.
    for line in up.stdout:
        printed.append(line)
        if "Press Ctrl-C" in line:
            break
    return up, printed


def test_up_serves_until_interrupted_then_stops_both_services(tiny_model_dir, tmp_path):
    port, ml_port = free_port(), free_port()
    up, printed = _start_up(tiny_model_dir, tmp_path, port, "--ml-port", str(ml_port))
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
        assert httpx.get(f"http://127.0.0.1:{ml_port}/health", timeout=2).json()["model_loaded"] is True
        up.send_signal(signal.SIGINT)
        _, stderr = up.communicate(timeout=60)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert up.returncode == 0, stderr
    assert f"http://127.0.0.1:{port}" in "".join(printed)
    assert "stopped." in stderr
    for url in (f"http://127.0.0.1:{port}/health", f"http://127.0.0.1:{ml_port}/health"):
        with pytest.raises(httpx.TransportError):
            httpx.get(url, timeout=2)


def test_up_with_ui_starts_the_admin_ui_prints_its_url_and_stops_it(tiny_model_dir, tmp_path):
    pytest.importorskip("streamlit")
    port, ml_port, ui_port = free_port(), free_port(), free_port()
    ui = f"http://127.0.0.1:{ui_port}"
    up, printed = _start_up(
        tiny_model_dir, tmp_path, port, "--ui", "--ml-port", str(ml_port), "--ui-port", str(ui_port)
    )
    try:
        assert ui in "".join(printed)
        deadline = time.monotonic() + 60
        while True:  # Streamlit takes a moment after `up` has printed its table
            try:
                if httpx.get(ui + "/_stcore/health", timeout=2).text.strip() == "ok":
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the admin UI did not answer"
            time.sleep(0.3)
        up.send_signal(signal.SIGINT)
        _, stderr = up.communicate(timeout=60)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
    assert up.returncode == 0, stderr
    with pytest.raises(httpx.TransportError):
        httpx.get(ui + "/_stcore/health", timeout=2)
