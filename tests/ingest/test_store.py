"""The vector store on embedded Qdrant: content ids, idempotent upserts, path merges."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shoebox.ingest.config import IngestSettings
from shoebox.ingest.store import VectorStore, point_id

SHA_A = "a" * 64
SHA_B = "b" * 64


def _store(tmp_path: Path) -> VectorStore:
    store = VectorStore(IngestSettings(data_dir=tmp_path))
    store.ensure_collection("c", 4)
    return store


def test_point_id_is_a_stable_uuid_of_the_content_hash() -> None:
    assert point_id(SHA_A) == point_id(SHA_A.upper())
    assert point_id(SHA_A) != point_id(SHA_B)
    assert len(point_id(SHA_A)) == 36


def test_upserting_the_same_content_twice_keeps_one_point(tmp_path: Path) -> None:
    store = _store(tmp_path)
    vec = list(np.ones(4, np.float32))
    store.upsert("c", [(SHA_A, vec, {"paths": ["/p/a.jpg"]})])
    store.upsert("c", [(SHA_A, vec, {"paths": ["/p/a.jpg"]})])
    assert store.count("c") == 1


def test_retrieve_answers_only_existing_points_with_their_payload(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.upsert("c", [(SHA_A, [1.0, 0, 0, 0], {"paths": ["/p/a.jpg"]})])
    found = store.retrieve("c", [SHA_A, SHA_B], with_vectors=True)
    assert list(found) == [SHA_A]
    assert found[SHA_A].payload["paths"] == ["/p/a.jpg"]
    assert found[SHA_A].vector is not None and len(found[SHA_A].vector) == 4


def test_embedded_store_reopens_with_its_points(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.upsert("c", [(SHA_A, [1.0, 0, 0, 0], {"paths": ["/p/a.jpg"]})])
    store.close()
    assert VectorStore(IngestSettings(data_dir=tmp_path)).count("c") == 1
