"""`shoebox store export` as a user runs it: a subprocess copying a data dir's embedded store
(Qdrant Edge) to a "server", then the library searched there, directly and through the service.

No Qdrant server can run here. The server is qdrant-client's local mode, reached through the
same `ServerStore` class and client calls as a server URL (`--to-local-path`, a test option).
For the service, the least contrived honest chain is the `local` backend: the export writes
into `<data_dir>/qdrant` with bare names (`--prefix ''`), and the service started with
`SHOEBOX_STORE=local` opens exactly that — `ServerStore(path=<data_dir>/qdrant, prefix='')`,
the server backend's code with the client pointed at a folder instead of a URL — and serves
the exported points next to the catalog that stayed in the data dir.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shoebox.ingest.catalog import Catalog
from shoebox.ingest.metadata import build_payload
from shoebox.store import GeoBox, MatchAny, Range, VectorStore, Where
from shoebox.store.edge import EdgeStore
from shoebox.store.server import ServerStore

DIM = 32
PHOTOS = 500
SCANS = 40


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOEBOX_")}
    return {**env, "COLUMNS": "200"}


def export(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shoebox.cli", "store", "export", *args],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _payload(i: int, sha: str) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "width": 4000,
        "height": 3000,
        "thumbnail": f"{sha[:2]}/{sha}.jpg",
        "camera_make": ["Canon", "Apple"][i % 2],
        "camera_model": ["EOS R5", "iPhone 13"][i % 2],
        "taken_at": f"2021-06-{1 + i % 28:02d}T10:20:30",
        "taken_ts": 1622542830.0 + i * 86400.0,
        "iso": 100 * (1 + i % 4),
    }
    if i % 3:
        meta["gps"] = {"lat": 40.0 + (i % 20), "lon": -5.0 + (i % 15)}
    paths = [f"/photos/{2020 + i % 3}/img_{i:05d}.jpg"] + ([f"/backup/img_{i:05d}.jpg"] if i % 7 == 0 else [])
    return build_payload(sha, paths, 2_000_000 + i, 1.6e9 + i, meta, "ViT-B-32__openai")


def _fill(store: VectorStore, name: str, count: int, dim: int, seed: int) -> None:
    store.ensure_collection(name, dim)
    rng = np.random.default_rng(seed)
    # Clustered, as photo embeddings are: neighbours are close, so top hits are meaningful.
    centres = rng.normal(size=(8, dim))
    points = []
    for i in range(count):
        sha = hashlib.sha256(f"{name}/{i}".encode()).hexdigest()
        vector = centres[i % 8] + 0.3 * rng.normal(size=dim)
        points.append((sha, vector.tolist(), _payload(i, sha)))
    store.upsert(name, points)


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """A data dir as the service leaves it: an edge store with two collections, and its catalog."""
    data = tmp_path / "data"
    edge = EdgeStore(data / "edge", background_index=False)
    try:
        _fill(edge, "photos", PHOTOS, DIM, seed=1)
        _fill(edge, "scans", SCANS, 8, seed=2)
    finally:
        edge.close()
    catalog = Catalog(data / "catalog.sqlite3")
    catalog.add_collection("photos", model_name="ViT-B-32__openai", embedding_dim=DIM)
    catalog.add_collection("scans", model_name="ViT-B-32__openai", embedding_dim=8)
    catalog.close()
    return data


def _queries(count: int, dim: int, seed: int = 3) -> list[list[float]]:
    vectors = np.random.default_rng(seed).normal(size=(count, dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).tolist()


def test_export_copies_the_library_and_the_server_answers_the_same(library: Path, tmp_path: Path) -> None:
    target_dir = tmp_path / "server"
    result = export("--to-local-path", str(target_dir), "--data-dir", str(library))
    assert result.returncode == 0, result.stderr
    assert f"{PHOTOS}/{PHOTOS}" in result.stderr and f"{SCANS}/{SCANS}" in result.stderr  # the progress
    assert "photos" in result.stdout and str(PHOTOS) in result.stdout and "Next:" in result.stdout

    edge = EdgeStore(library / "edge", background_index=False)
    server = ServerStore(path=target_dir, prefix="shoebox__")
    try:
        assert server.list_collections() == ["photos", "scans"]
        assert server.client.collection_exists("shoebox__photos")
        for name, dim in (("photos", DIM), ("scans", 8)):
            assert server.count(name) == edge.count(name)
            assert server.collection_dim(name) == dim
        in_june = Where(
            (
                MatchAny("has_gps", (True,)),
                Range("taken_ts", gte=1622542830.0, lte=1622542830.0 + 200 * 86400.0),
                GeoBox("gps", min_lat=41.0, min_lon=-4.0, max_lat=55.0, max_lon=5.0),
                MatchAny("camera_make", ("Canon",)),
            )
        )
        for vector in _queries(6, DIM):
            for where in (None, in_june):
                want = edge.query("photos", vector, limit=10, where=where)
                got = server.query("photos", vector, limit=10, where=where)
                assert want, "the query should find something"
                assert [r.id for r in got] == [r.id for r in want]
                assert [r.score for r in got] == pytest.approx([r.score for r in want], abs=1e-5)
                assert [r.payload for r in got] == [r.payload for r in want]
    finally:
        edge.close()
        server.close()

    # Again, as JSON: the same points written again, nothing added.
    again = export("--to-local-path", str(target_dir), "--data-dir", str(library), "--json")
    assert again.returncode == 0, again.stderr
    answer = json.loads(again.stdout)
    assert [(c["name"], c["copied"], c["target_count"]) for c in answer["collections"]] == [
        ("photos", PHOTOS, PHOTOS),
        ("scans", SCANS, SCANS),
    ]
    assert answer["source"]["backend"] == "qdrant-edge" and answer["target"]["prefix"] == "shoebox__"


def test_export_of_one_collection_and_a_dim_conflict(library: Path, tmp_path: Path) -> None:
    target_dir = tmp_path / "server"
    only = export("--to-local-path", str(target_dir), "--data-dir", str(library), "-c", "scans", "--json")
    assert only.returncode == 0, only.stderr
    assert [c["name"] for c in json.loads(only.stdout)["collections"]] == ["scans"]

    server = ServerStore(path=target_dir, prefix="shoebox__")
    server.ensure_collection("photos", DIM * 2)
    server.close()
    refused = export("--to-local-path", str(target_dir), "--data-dir", str(library))
    assert refused.returncode == 1
    assert "ERR_CONFLICT" in refused.stderr and "photos" in refused.stderr

    unknown = export("--to-local-path", str(target_dir), "--data-dir", str(library), "-c", "nope")
    assert unknown.returncode == 2 and "no collection 'nope'" in unknown.stderr


def test_export_refuses_while_another_process_holds_the_data_dir(library: Path, tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from shoebox.ingest.context import lock_data_dir; "
            "lock = lock_data_dir(Path(sys.argv[1])); print('locked', flush=True); time.sleep(120)",
            str(library),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        result = export("--to-local-path", str(tmp_path / "server"), "--data-dir", str(library))
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 1
    assert "in use by another Shoebox process" in result.stderr
    assert "stop the Shoebox services first" in result.stderr
    assert not (tmp_path / "server").exists()  # refused before anything was opened


def test_the_next_step_names_the_settings_of_the_server() -> None:
    from shoebox.cli import _export_next_step

    line = _export_next_step("https://qdrant.example:6333", "k", "shoebox__", Path("/srv/shoebox"))
    assert "SHOEBOX_QDRANT_URL=https://qdrant.example:6333 (and SHOEBOX_QDRANT_API_KEY)" in line
    assert "restart" in line and "/srv/shoebox" in line and "served from the server" in line
    assert "SHOEBOX_QDRANT_PREFIX=team_" in _export_next_step("http://q:6333", None, "team_", Path("/d"))


def test_the_service_serves_the_exported_library(services, clients, library: Path) -> None:
    """Export, then the ingestion service on the same data dir answers from the exported points."""
    result = export("--to-local-path", str(library / "qdrant"), "--prefix", "", "--data-dir", str(library))
    assert result.returncode == 0, result.stderr
    edge = EdgeStore(library / "edge", background_index=False)
    try:
        probe = edge.scroll("photos", limit=3, with_vectors=True)[0]
        expected = {
            r.id: [h.id for h in edge.query("photos", r.vector, limit=11) if h.id != r.id][:10] for r in probe
        }
    finally:
        edge.close()

    # No ML service: nothing below needs one (similar uses the stored vectors).
    proc = services("ingest", library, ["http://127.0.0.1:9"], [], env={"SHOEBOX_STORE": "local"})
    api = clients(proc.url)
    health = api.health(timeout=10)
    assert health is not None and health["vector_db"] == "qdrant-local"
    assert health["vector_store"]["location"] == str(library / "qdrant")
    assert api.collections() == ["photos", "scans"]
    info = api.collection_info("photos")
    assert info["points_count"] == PHOTOS and info["embedding_dim"] == DIM
    assert info["model_name"] == "ViT-B-32__openai"
    for pid, want in expected.items():
        assert [h["id"] for h in api.similar(pid, limit=10, collection="photos")["results"]] == want
    page = api.images(per_page=100, collection="scans")
    assert page["total"] == SCANS and len(page["results"]) == SCANS
