"""The store interface, on every backend: content ids, idempotent upserts, filters, paging, names."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from shoebox.protocol import ShoeboxError
from shoebox.store import GeoBox, MatchAny, MoreValuesThan, Range, Record, VectorStore, Where, point_id
from shoebox.store.server import ServerStore
from stores import BACKENDS, open_backend

SHA_A = "a" * 64
SHA_B = "b" * 64


@pytest.fixture(params=BACKENDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def store(kind: str, tmp_path: Path) -> VectorStore:
    opened = open_backend(kind, tmp_path)
    opened.ensure_collection("c", 4)
    yield opened
    opened.close()


def test_point_id_is_a_stable_uuid_of_the_content_hash() -> None:
    assert point_id(SHA_A) == point_id(SHA_A.upper())
    assert point_id(SHA_A) != point_id(SHA_B)
    assert len(point_id(SHA_A)) == 36


def test_upserting_the_same_content_twice_keeps_one_point(store: VectorStore) -> None:
    vec = list(np.ones(4, np.float32))
    store.upsert("c", [(SHA_A, vec, {"paths": ["/p/a.jpg"]})])
    store.upsert("c", [(SHA_A, vec, {"paths": ["/p/a.jpg"]})])
    assert store.count("c") == 1


def test_retrieve_answers_only_existing_points_with_their_payload(store: VectorStore) -> None:
    store.upsert("c", [(SHA_A, [3.0, 0, 0, 4.0], {"paths": ["/p/a.jpg"]})])
    found = store.retrieve("c", [SHA_A, SHA_B], with_vectors=True)
    assert list(found) == [SHA_A]
    assert found[SHA_A].payload["paths"] == ["/p/a.jpg"]
    assert found[SHA_A].vector == pytest.approx([0.6, 0, 0, 0.8])  # stored L2-normalised


def test_store_reopens_with_its_points(kind: str, tmp_path: Path) -> None:
    store = open_backend(kind, tmp_path)
    store.ensure_collection("c", 4)
    store.upsert("c", [(SHA_A, [1.0, 0, 0, 0], {"paths": ["/p/a.jpg"]})])
    store.close()
    again = open_backend(kind, tmp_path)
    try:
        assert again.count("c") == 1
        assert again.collection_dim("c") == 4
        assert again.list_collections() == ["c"]
    finally:
        again.close()


def test_set_payload_merges_and_delete_removes(store: VectorStore) -> None:
    store.upsert("c", [(SHA_A, [1.0, 0, 0, 0], {"paths": ["/a"], "format": "jpg"})])
    store.set_payload("c", SHA_A, {"paths": ["/a", "/b"]})
    assert store.retrieve("c", [SHA_A])[SHA_A].payload == {"paths": ["/a", "/b"], "format": "jpg"}
    store.delete("c", [SHA_A])
    assert store.count("c") == 0


def _library(store: VectorStore) -> dict[str, str]:
    rows = {
        "a": (
            [1.0, 0, 0, 0],
            {
                "camera_make": "Canon",
                "has_gps": True,
                "gps": {"lat": 43.3, "lon": 5.4},
                "taken_ts": 100.0,
                "paths": ["/x/a", "/y/a"],
                "folders": ["/x"],
            },
        ),
        "b": (
            [0.9, 0.1, 0, 0],
            {
                "camera_make": "Nikon",
                "has_gps": False,
                "taken_ts": 200.0,
                "paths": ["/x/b"],
                "folders": ["/x"],
            },
        ),
        "c": (
            [0, 1.0, 0, 0],
            {
                "camera_make": "Canon",
                "has_gps": False,
                "taken_ts": 300.0,
                "paths": ["/z/c"],
                "folders": ["/z"],
            },
        ),
    }
    ids = {}
    for name, (vec, payload) in rows.items():
        sha = name * 64
        store.upsert("c", [(sha, vec, payload)])
        ids[name] = point_id(sha)
    return ids


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        (Where((MatchAny("camera_make", ("Canon",)),)), {"a", "c"}),
        (Where((MatchAny("camera_make", ("Canon", "Nikon")),)), {"a", "b", "c"}),
        (Where((MatchAny("has_gps", (True,)),)), {"a"}),  # booleans match (see edge.py on MatchValue)
        (Where((MatchAny("has_gps", (False,)),)), {"b", "c"}),
        (Where((Range("taken_ts", gte=150.0, lte=300.0),)), {"b", "c"}),
        (Where((GeoBox("gps", 40, 0, 50, 10),)), {"a"}),
        (Where((MoreValuesThan("paths", 1),)), {"a"}),
        (Where((MatchAny("folders", ("/x",)), Range("taken_ts", lte=150.0))), {"a"}),
    ],
)
def test_filters_are_evaluated_by_the_engine(store: VectorStore, where: Where, expected: set[str]) -> None:
    ids = _library(store)
    names = {v: k for k, v in ids.items()}
    hits = store.query("c", [1.0, 0, 0, 0], limit=10, where=where)
    assert {names[h.id] for h in hits} == expected
    assert store.count("c", where) == len(expected)
    records, _ = store.scroll("c", where=where)
    assert {names[r.id] for r in records} == expected


def test_query_scores_threshold_and_batches(store: VectorStore) -> None:
    ids = _library(store)
    hits = store.query("c", [1.0, 0, 0, 0], limit=3)
    assert [h.id for h in hits] == [ids["a"], ids["b"], ids["c"]]
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert [h.id for h in store.query("c", [1.0, 0, 0, 0], limit=3, score_threshold=0.5)] == [
        ids["a"],
        ids["b"],
    ]
    assert [h.id for h in store.query("c", [1.0, 0, 0, 0], limit=1, offset=1)] == [ids["b"]]
    answers = store.query_batch("c", [[1.0, 0, 0, 0], [0, 1.0, 0, 0]], limit=1)
    assert [[h.id for h in a] for a in answers] == [[ids["a"]], [ids["c"]]]


def test_scroll_and_page_walk_every_point_once_in_id_order(store: VectorStore) -> None:
    shas = [f"{i:064x}" for i in range(23)]
    store.upsert("c", [(s, [1.0, float(i), 0, 0], {"i": i}) for i, s in enumerate(shas)])
    seen, start = [], None
    while True:
        records, start = store.scroll("c", limit=5, start=start)
        seen += [r.id for r in records]
        if start is None:
            break
    assert seen == sorted(point_id(s) for s in shas)
    paged = [r.id for offset in range(0, 23, 10) for r in store.page("c", limit=10, offset=offset)]
    assert paged == seen
    assert [len(p) for p in store.iter_points("c", page=10)] == [10, 10, 3]


def test_collections_are_created_listed_and_deleted_by_name(store: VectorStore) -> None:
    store.ensure_collection("other", 8)
    assert store.list_collections() == ["c", "other"]
    assert store.collection_dim("other") == 8
    store.delete_collection("other")
    assert store.list_collections() == ["c"]
    assert not store.collection_exists("other")
    store.delete_collection("never-was")  # deleting what is not there is no error


@pytest.mark.parametrize("name", ["../x", "a/b", "", ".hidden", "x" * 200])
def test_names_that_could_escape_are_refused(store: VectorStore, name: str) -> None:
    with pytest.raises(ShoeboxError) as raised:
        store.ensure_collection(name, 4)
    assert raised.value.code.value == "ERR_VALIDATION"


def test_a_server_store_lists_and_deletes_only_its_prefixed_collections(tmp_path: Path) -> None:
    shared = ServerStore(path=tmp_path / "shared", prefix="shoebox__")
    try:
        # Another application's collection on the same server, named like one of ours.
        from qdrant_client import models as qm

        shared.client.create_collection(
            "photos", vectors_config=qm.VectorParams(size=4, distance=qm.Distance.DOT)
        )
        shared.ensure_collection("photos", 4)
        assert shared.list_collections() == ["photos"]
        assert sorted(c.name for c in shared.client.get_collections().collections) == [
            "photos",
            "shoebox__photos",
        ]
        shared.delete_collection("photos")
        assert [c.name for c in shared.client.get_collections().collections] == ["photos"]
    finally:
        shared.close()


def test_a_failing_backend_raises_one_vector_db_error(store: VectorStore) -> None:
    with pytest.raises(ShoeboxError) as raised:
        store.upsert("c", [(SHA_A, [1.0, 0.0], {})])  # wrong dimension
    assert raised.value.code.value == "ERR_VECTOR_DB"


def test_unknown_ids_are_absent_not_errors(store: VectorStore) -> None:
    assert store.get("c", [str(uuid.uuid4())]) == []
    assert store.get("missing-collection", [str(uuid.uuid4())]) == []


def test_writes_arrive_as_records(store: VectorStore) -> None:
    pid = str(uuid.uuid4())
    store.write("c", [Record(id=pid, vector=[0, 0, 1.0, 0], payload={"k": "v"})])
    [rec] = store.get("c", [pid], with_vectors=True)
    assert rec.payload == {"k": "v"} and rec.vector == pytest.approx([0, 0, 1.0, 0])
