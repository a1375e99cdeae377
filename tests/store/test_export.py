"""Copying collections between stores (`shoebox.store.export`), and the one-time import of the
libraries of earlier versions (qdrant-client local mode under `<data_dir>/qdrant`) into Qdrant Edge.

The server side is qdrant-client's local mode driven through `ServerStore`, with the prefix a
server gets (`shoebox__`): no Qdrant server can run here, and local mode answers the same calls.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shoebox.ingest.config import IngestSettings
from shoebox.ingest.metadata import build_payload
from shoebox.protocol import ErrorCode, ShoeboxError
from shoebox.store import IMPORTED_MARKER, IMPORTING_MARKER, VectorStore, open_store
from shoebox.store.edge import EdgeStore
from shoebox.store.export import copy_collection, copy_store
from shoebox.store.server import ServerStore

DIM = 16


def photo_payload(i: int, sha: str) -> dict[str, Any]:
    """A payload as the ingest pipeline builds it: several paths, EXIF, sometimes GPS (a nested dict)."""
    meta: dict[str, Any] = {
        "width": 4000 + i,
        "height": 3000,
        "thumbnail": f"{sha[:2]}/{sha}.jpg",
        "camera_make": ["Canon", "NIKON CORPORATION", "Apple"][i % 3],
        "camera_model": ["EOS R5", "NIKON Z 6", "iPhone 13"][i % 3],
        "taken_at": f"2021-06-{1 + i % 28:02d}T10:20:30",
        "taken_ts": 1622542830.0 + i * 3600.5,
        "iso": 100 * (1 + i % 8),
        "lens": None,
    }
    if i % 2:
        meta["gps"] = {"lat": 48.8566 + i / 1000, "lon": 2.3522 - i / 1000}
    paths = [f"/photos/{2020 + i % 4}/trip/img_{i:05d}.jpg"]
    if i % 5 == 0:
        paths.append(f"/backup/copies/img_{i:05d}.JPG")
    return build_payload(sha, paths, 1_000_000 + i, 1.6e9 + i, meta, "ViT-B-32__openai")


def fill(store: VectorStore, name: str, count: int, *, dim: int = DIM, seed: int = 0, first: int = 0) -> None:
    store.ensure_collection(name, dim)
    rng = np.random.default_rng(seed)
    points = []
    for i in range(first, first + count):
        sha = hashlib.sha256(f"{name}-{i}".encode()).hexdigest()
        points.append((sha, rng.normal(size=dim).tolist(), photo_payload(i, sha)))
    store.upsert(name, points)


def snapshot(store: VectorStore, name: str) -> dict[str, tuple[dict[str, Any], list[float]]]:
    found: dict[str, tuple[dict[str, Any], list[float]]] = {}
    for page in store.iter_points(name, page=100):
        for record in page:
            assert record.vector is not None
            found[record.id] = (record.payload, record.vector)
    return found


def same_payload(got: Any, want: Any) -> bool:
    """Deep equality, floats to the last bit but one: Qdrant Edge reads a payload float through
    its JSON layer, which may land one ulp away (1.8771999999999998 comes back as 1.8772)."""
    if isinstance(want, float) and isinstance(got, float):
        return got == pytest.approx(want, rel=1e-15, abs=0)
    if isinstance(want, dict) and isinstance(got, dict):
        return got.keys() == want.keys() and all(same_payload(got[k], want[k]) for k in want)
    if isinstance(want, list) and isinstance(got, list):
        return len(got) == len(want) and all(same_payload(g, w) for g, w in zip(got, want, strict=True))
    return type(got) is type(want) and got == want


def assert_same_points(source: VectorStore, target: VectorStore, name: str) -> None:
    have, got = snapshot(source, name), snapshot(target, name)
    assert set(got) == set(have)
    for pid, (payload, vector) in have.items():
        assert got[pid][0] == payload  # deep equality: nested gps dicts, lists of paths and folders
        assert got[pid][1] == pytest.approx(vector, abs=1e-6)


@pytest.fixture
def edge(tmp_path: Path) -> EdgeStore:
    store = EdgeStore(tmp_path / "edge", background_index=False)
    yield store
    store.close()


@pytest.fixture
def server(tmp_path: Path) -> ServerStore:
    store = ServerStore(path=tmp_path / "server", prefix="shoebox__")
    yield store
    store.close()


# ---------------------------------------------------------------- copy_collection / copy_store


def test_copy_keeps_every_id_payload_and_vector(edge: EdgeStore, server: ServerStore) -> None:
    fill(edge, "photos", 300)
    calls: list[tuple[int, int]] = []
    copied = copy_collection(edge, server, "photos", progress=lambda d, t: calls.append((d, t)), page=64)
    assert copied == 300
    assert server.count("photos") == 300
    assert server.collection_dim("photos") == DIM
    assert server.client.collection_exists("shoebox__photos")  # under the server's prefix
    assert_same_points(edge, server, "photos")
    # Pages of 64, reported as they land, ending at the total.
    assert calls[0] == (0, 300) and calls[-1] == (300, 300)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls) and len(calls) == 1 + 5
    # The payloads made it with their shapes (a geo field is what the gps filter needs).
    with_gps = [p for p, _ in snapshot(server, "photos").values() if p["has_gps"]]
    assert len(with_gps) == 150 and all(set(p["gps"]) == {"lat", "lon"} for p in with_gps)


def test_copying_again_is_idempotent_and_tops_up(edge: EdgeStore, server: ServerStore) -> None:
    fill(edge, "photos", 120)
    copy_collection(edge, server, "photos")
    assert copy_collection(edge, server, "photos") == 120
    assert server.count("photos") == 120  # the same ids, written again
    fill(edge, "photos", 30, seed=1, first=120)
    copy_collection(edge, server, "photos")
    assert server.count("photos") == 150
    assert_same_points(edge, server, "photos")


def test_a_target_collection_of_another_dim_is_refused(edge: EdgeStore, server: ServerStore) -> None:
    fill(edge, "photos", 10)
    server.ensure_collection("photos", DIM * 2)
    with pytest.raises(ShoeboxError) as caught:
        copy_collection(edge, server, "photos")
    assert caught.value.code == ErrorCode.CONFLICT
    assert "dimension 32" in caught.value.message and "16" in caught.value.message
    assert server.count("photos") == 0 and server.collection_dim("photos") == DIM * 2


def test_a_missing_source_collection_is_not_found(edge: EdgeStore, server: ServerStore) -> None:
    with pytest.raises(ShoeboxError) as caught:
        copy_collection(edge, server, "nope")
    assert caught.value.code == ErrorCode.NOT_FOUND
    assert not server.collection_exists("nope")


def test_copy_store_copies_every_collection(edge: EdgeStore, server: ServerStore) -> None:
    fill(edge, "photos", 50)
    fill(edge, "scans", 20, dim=8)
    seen: dict[str, int] = {}
    reports = copy_store(edge, server, progress=lambda n, d, t: seen.__setitem__(n, d))
    assert [(r.name, r.copied, r.source_count, r.target_count) for r in reports] == [
        ("photos", 50, 50, 50),
        ("scans", 20, 20, 20),
    ]
    assert seen == {"photos": 50, "scans": 20}
    assert server.list_collections() == ["photos", "scans"]
    assert server.collection_dim("scans") == 8
    for name in ("photos", "scans"):
        assert_same_points(edge, server, name)


def test_copy_store_refuses_a_conflict_before_writing_anything(edge: EdgeStore, server: ServerStore) -> None:
    fill(edge, "a_photos", 10)
    fill(edge, "b_scans", 10, dim=8)
    server.ensure_collection("b_scans", 4)
    with pytest.raises(ShoeboxError) as caught:
        copy_store(edge, server)
    assert caught.value.code == ErrorCode.CONFLICT
    assert not server.collection_exists("a_photos")  # the first collection was not copied either


def test_the_copy_answers_searches_like_the_source(edge: EdgeStore, server: ServerStore) -> None:
    fill(edge, "photos", 400)
    copy_collection(edge, server, "photos")
    rng = np.random.default_rng(7)
    for _ in range(5):
        vector = rng.normal(size=DIM)
        vector = (vector / np.linalg.norm(vector)).tolist()
        want = edge.query("photos", vector, limit=10)
        got = server.query("photos", vector, limit=10)
        assert [r.id for r in got] == [r.id for r in want]
        assert [r.score for r in got] == pytest.approx([r.score for r in want], abs=1e-5)
        assert [r.payload for r in got] == [r.payload for r in want]


# ---------------------------------------------------------------- the library of an earlier version


def _settings(data_dir: Path) -> IngestSettings:
    # The default backend (auto → edge: no server configured), whatever the environment says.
    return IngestSettings(data_dir=data_dir, store="auto", qdrant_url=None)


def _legacy_library(data_dir: Path, collections: dict[str, int]) -> None:
    old = ServerStore(path=data_dir / "qdrant", prefix="")  # bare names, as earlier versions kept them
    try:
        for seed, (name, count) in enumerate(collections.items()):
            fill(old, name, count, seed=seed)
    finally:
        old.close()


def _legacy_snapshot(data_dir: Path, name: str) -> dict[str, tuple[dict[str, Any], list[float]]]:
    old = ServerStore(path=data_dir / "qdrant", prefix="")
    try:
        return snapshot(old, name)
    finally:
        old.close()


def test_a_legacy_library_is_imported_into_edge_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = tmp_path / "data"
    _legacy_library(data, {"shoebox": 700, "holidays": 40})
    caplog.set_level("INFO", logger="shoebox.store")
    store = open_store(_settings(data), background_index=False)
    try:
        assert store.kind == "qdrant-edge"
        assert store.list_collections() == ["holidays", "shoebox"]
        for name, count in (("shoebox", 700), ("holidays", 40)):
            assert store.count(name) == count
            assert store.collection_dim(name) == DIM
            old = _legacy_snapshot(data, name)
            new = snapshot(store, name)
            assert set(new) == set(old)
            for pid, (payload, vector) in old.items():
                assert same_payload(new[pid][0], payload), (new[pid][0], payload)
                assert new[pid][1] == pytest.approx(vector, abs=1e-6)
    finally:
        store.close()
    imported = [r.getMessage() for r in caplog.records if "imported collection" in r.getMessage()]
    assert len(imported) == 2 and any("700 points in" in line for line in imported)
    # The old folder stays as it was, marked.
    assert (data / "qdrant" / IMPORTED_MARKER).is_file()
    assert not (data / "qdrant" / IMPORTING_MARKER).exists()
    assert len(_legacy_snapshot(data, "shoebox")) == 700

    # Reopening imports nothing again: a collection deleted from edge since stays deleted.
    store = open_store(_settings(data), background_index=False)
    store.delete_collection("holidays")
    store.close()
    caplog.clear()
    store = open_store(_settings(data), background_index=False)
    try:
        assert store.list_collections() == ["shoebox"]
        assert store.count("shoebox") == 700
    finally:
        store.close()
    assert not [r for r in caplog.records if "import" in r.getMessage()]


def test_the_import_leaves_alone_what_edge_already_has(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _legacy_library(data, {"shoebox": 30, "old_only": 12})
    edge = EdgeStore(data / "edge", background_index=False)
    fill(edge, "shoebox", 5, seed=9, first=1000)
    edge.close()
    store = open_store(_settings(data), background_index=False)
    try:
        assert store.count("shoebox") == 5  # edge's own collection, not merged with the old one
        assert store.count("old_only") == 12
    finally:
        store.close()


def test_a_failed_import_loses_nothing_and_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    _legacy_library(data, {"shoebox": 1200})
    real_write = EdgeStore.write
    writes = {"n": 0}

    def failing_write(self: EdgeStore, name: str, records: list) -> None:
        writes["n"] += 1
        if writes["n"] == 2:  # one page of 512 is in, then the disk fills up
            raise OSError(28, "No space left on device")
        real_write(self, name, records)

    monkeypatch.setattr(EdgeStore, "write", failing_write)
    with pytest.raises(ShoeboxError) as caught:
        open_store(_settings(data), background_index=False)
    assert caught.value.code == ErrorCode.VECTOR_DB
    assert "No space left on device" in caught.value.message and "untouched" in caught.value.message
    monkeypatch.setattr(EdgeStore, "write", real_write)

    # Nothing half-imported in edge, no marker, the old data whole; and the edge store was closed.
    edge = EdgeStore(data / "edge", background_index=False)
    assert edge.list_collections() == []
    edge.close()
    assert not (data / "qdrant" / IMPORTED_MARKER).exists()
    assert len(_legacy_snapshot(data, "shoebox")) == 1200

    store = open_store(_settings(data), background_index=False)
    try:
        assert store.count("shoebox") == 1200
    finally:
        store.close()
    assert (data / "qdrant" / IMPORTED_MARKER).is_file()


def test_an_import_cut_off_by_a_kill_is_redone(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _legacy_library(data, {"shoebox": 100})
    # What a kill -9 half-way leaves: part of the collection in edge, the in-progress marker.
    old = ServerStore(path=data / "qdrant", prefix="")
    records, _ = old.scroll("shoebox", limit=30, with_vectors=True)
    old.close()
    edge = EdgeStore(data / "edge", background_index=False)
    edge.ensure_collection("shoebox", DIM)
    edge.write("shoebox", records)
    edge.close()
    (data / "qdrant" / IMPORTING_MARKER).write_text("shoebox")

    store = open_store(_settings(data), background_index=False)
    try:
        assert store.count("shoebox") == 100
    finally:
        store.close()
    assert not (data / "qdrant" / IMPORTING_MARKER).exists()


def test_no_legacy_folder_means_no_import(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    store = open_store(_settings(data), background_index=False)
    store.close()
    assert not (data / "qdrant").exists()
