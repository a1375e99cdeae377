"""Never wipe a library by accident: files that vanish in bulk go offline, only a prune removes them.

Both services as real processes (tiny model, embedded Qdrant, SQLite), driven over HTTP and
through the `shoebox` CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from servers import FOLLOW, ShoeboxClient, write_photos


def _cli(api: ShoeboxClient, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOEBOX_")}
    return subprocess.run(
        [sys.executable, "-m", "shoebox.cli", *args],
        env={**env, "SHOEBOX_URL": api.url, "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_an_emptied_folder_keeps_its_photos_offline_until_they_return(
    ingest: ShoeboxClient, photo_root: Path
) -> None:
    share = photo_root / "nas"
    share.mkdir()
    files = write_photos(share, 12)
    first = ingest.ingest_and_follow(share, "lib", **FOLLOW)
    assert first.status == "completed" and first.indexed == 12

    # The share "did not mount": the folder is there but empty.
    parked = photo_root.parent / "parked"
    shutil.move(str(share), parked)
    share.mkdir()
    job = ingest.ingest_and_follow(share, "lib", **FOLLOW)
    assert job.status == "completed"
    assert job.total_files == job.processed_files == 0
    assert job.offline == 12
    (warning,) = job.warnings
    assert warning.code == "ERR_FILES_OFFLINE" and warning.count == 12
    assert "empty" in warning.message
    info = ingest.collection_info("lib")
    assert info["points_count"] == 12 and info["offline_count"] == 12

    # Mounted again: every file is back, unchanged, and online.
    share.rmdir()
    shutil.move(str(parked), share)
    back = ingest.ingest_and_follow(share, "lib", **FOLLOW)
    assert back.unchanged == 12 and back.offline == 0 and back.warnings == []
    assert ingest.collection_info("lib")["offline_count"] == 0

    # A handful really deleted still leave the index as before.
    for f in files[:2]:
        f.unlink()
    few = ingest.ingest_and_follow(share, "lib", **FOLLOW)
    assert few.offline == 0 and few.unchanged == 10
    assert ingest.collection_info("lib")["points_count"] == 10


def test_a_bulk_vanishing_goes_offline_and_prune_removes_it_over_http_and_the_cli(
    ingest: ShoeboxClient, photo_root: Path
) -> None:
    folder = photo_root / "albums"
    folder.mkdir()
    files = write_photos(folder / "a", 15, seed=100) + write_photos(folder / "b", 15, seed=200)
    assert ingest.ingest_and_follow(folder, "albums", **FOLLOW).indexed == 30

    shutil.rmtree(folder / "a")  # 15 of 30 (50 % > 20 %, and more than 10 files) at once
    job = ingest.ingest_and_follow(folder, "albums", **FOLLOW)
    assert job.offline == 15 and job.unchanged == 15
    assert "vanished at once" in job.warnings[0].message
    assert ingest.collection_info("albums")["points_count"] == 30

    # A prune limited to another folder removes nothing.
    r = ingest.request("POST", "/api/v1/collections/albums/prune", json={"directory_path": str(folder / "b")})
    assert r.status_code == 200 and r.json()["pruned_files"] == 0
    r = ingest.request("POST", "/api/v1/collections/albums/prune", json={"directory_path": "relative/path"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "ERR_VALIDATION"
    r = ingest.request("POST", "/api/v1/collections/nope/prune", json={})
    assert r.status_code == 404 and r.json()["error"]["code"] == "ERR_NOT_FOUND"

    result = _cli(ingest, "prune", "--collection", "albums", "--yes", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "collection_name": "albums",
        "pruned_files": 15,
        "deleted_points": 15,
    }
    info = ingest.collection_info("albums")
    assert info["points_count"] == 15 and info["offline_count"] == 0
    assert len(files) == 30


def test_the_cli_summary_shows_the_offline_warning(ingest: ShoeboxClient, photo_root: Path) -> None:
    folder = photo_root / "cam"
    folder.mkdir()
    write_photos(folder, 3)
    assert ingest.ingest_and_follow(folder, "cam", **FOLLOW).indexed == 3
    for f in folder.iterdir():
        f.unlink()
    result = _cli(ingest, "ingest", str(folder), "--collection", "cam")
    assert result.returncode == 0, result.stderr
    assert "ERR_FILES_OFFLINE" in result.stderr and "offline" in result.stdout
