"""Search building blocks on every store backend (Qdrant Edge; qdrant-client's local mode standing
in for a server), with vectors and payloads we control."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from shoebox.ingest.search import (
    QueryEmbeddingCache,
    SearchFilters,
    list_page,
    search_similar,
    search_vector,
)
from shoebox.protocol import ShoeboxError
from shoebox.store import Record, VectorStore
from stores import BACKENDS, open_backend

DIM = 16
COLLECTION = "photos"


def _unit(v: np.ndarray) -> list[float]:
    return (v / np.linalg.norm(v)).astype(np.float32).tolist()


def _payload(name: str, folder: str, **extra: object) -> dict:
    path = f"{folder}/{name}"
    parts = Path(folder).parts
    folders = ["/" + "/".join(parts[1 : i + 1]) for i in range(1, len(parts))]
    payload = {
        "paths": [path],
        "path": path,
        "folders": folders,
        "filename": name,
        "format": name.rsplit(".", 1)[1].lower(),
        "taken_ts": None,
        "camera_make": None,
        "camera_model": None,
        "has_gps": False,
    }
    payload.update(extra)
    return payload


@pytest.fixture(params=BACKENDS)
def client(request: pytest.FixtureRequest, tmp_path: Path) -> VectorStore:
    store = open_backend(request.param, tmp_path)
    store.ensure_collection(COLLECTION, DIM)
    yield store
    store.close()


def _upsert(client: VectorStore, points: list[tuple[list[float], dict]]) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in points]
    client.write(COLLECTION, [Record(id=i, vector=v, payload=p) for i, (v, p) in zip(ids, points, strict=True)])
    return ids


@pytest.fixture
def library(client: VectorStore) -> dict[str, str]:
    """Six photos whose metadata differ one field at a time; returns filename → id."""
    rng = np.random.default_rng(1)
    photos = [
        _payload("beach.jpg", "/lib/2019/summer", taken_ts=1561939200.0, camera_make="Canon",
                 camera_model="Canon EOS 5D", has_gps=True, gps={"lat": 43.3, "lon": 5.4}),
        _payload("city.jpeg", "/lib/2019/winter", taken_ts=1576800000.0, camera_make="NIKON CORPORATION",
                 camera_model="NIKON D750", has_gps=True, gps={"lat": 48.85, "lon": 2.35}),
        _payload("cat.png", "/lib/2020", taken_ts=None),
        _payload("forest.dng", "/lib/2021/raw", taken_ts=1622505600.0, camera_make="Canon",
                 camera_model="Canon EOS R5", has_gps=True, gps={"lat": 61.0, "lon": 25.0}),
        _payload("lake.heic", "/lib/2021/phone", taken_ts=1625097600.0, camera_make="Apple",
                 camera_model="iPhone 12", has_gps=False),
        _payload("mountain.jpg", "/other", taken_ts=1630454400.0, camera_make="Canon",
                 camera_model="Canon EOS 5D", has_gps=False),
    ]
    ids = _upsert(client, [(_unit(rng.normal(size=DIM)), p) for p in photos])
    return {p["filename"]: i for p, i in zip(photos, ids, strict=True)}


def _names(client: VectorStore, filters: dict) -> set[str]:
    hits = search_vector(
        client, COLLECTION, _unit(np.ones(DIM)), limit=50, filters=SearchFilters.model_validate(filters)
    )
    return {h.filename for h in hits}


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"taken_after": "2021-01-01"}, {"forest.dng", "lake.heic", "mountain.jpg"}),
        ({"taken_before": "2019-12-20"}, {"beach.jpg", "city.jpeg"}),
        ({"taken_after": "2019-07-01T00:00:00", "taken_before": "2021-06-01"}, {"beach.jpg", "city.jpeg", "forest.dng"}),
        ({"camera_make": "canon"}, {"beach.jpg", "forest.dng", "mountain.jpg"}),
        ({"camera_model": ["Canon EOS 5D", "iPhone 12"]}, {"beach.jpg", "mountain.jpg", "lake.heic"}),
        ({"format": "jpg"}, {"beach.jpg", "city.jpeg", "mountain.jpg"}),
        ({"format": [".DNG", "heif"]}, {"forest.dng", "lake.heic"}),
        ({"folder": "/lib/2021/"}, {"forest.dng", "lake.heic"}),
        ({"folder": "/lib/20"}, set()),
        ({"has_gps": True}, {"beach.jpg", "city.jpeg", "forest.dng"}),
        ({"has_gps": False}, {"cat.png", "lake.heic", "mountain.jpg"}),
        ({"gps_bbox": {"min_lat": 40, "min_lon": 0, "max_lat": 50, "max_lon": 10}}, {"beach.jpg", "city.jpeg"}),
        ({"camera_make": "Canon", "has_gps": True, "taken_before": "2020-01-01"}, {"beach.jpg"}),
    ],
)
def test_filters_narrow_search_inside_the_engine(client, library, filters, expected):
    assert _names(client, filters) == expected


def test_filters_reject_unknown_fields_and_bad_dates():
    with pytest.raises(ValueError):
        SearchFilters.model_validate({"camera": "Canon"})
    with pytest.raises(ValueError):
        SearchFilters.model_validate({"taken_after": "yesterday"})
    with pytest.raises(ValueError):
        SearchFilters.model_validate({"gps_bbox": {"min_lat": 50, "min_lon": 0, "max_lat": 40, "max_lon": 10}})


def test_search_pages_do_not_overlap_and_follow_score_order(client, library):
    query = _unit(np.ones(DIM))
    everything = search_vector(client, COLLECTION, query, limit=6)
    pages = [search_vector(client, COLLECTION, query, limit=2, offset=o) for o in (0, 2, 4)]
    assert [h.id for page in pages for h in page] == [h.id for h in everything]
    assert [h.score for h in everything] == sorted((h.score for h in everything), reverse=True)


def test_similar_uses_stored_vector_and_excludes_itself(client, library):
    hits = search_similar(client, COLLECTION, library["cat.png"], limit=10)
    assert len(hits) == 5
    assert library["cat.png"] not in {h.id for h in hits}


def test_similar_pages_follow_each_other_without_the_image_itself(client, library):
    cat = library["cat.png"]
    whole = [h.id for h in search_similar(client, COLLECTION, cat, limit=5)]
    pages = [h.id for o in (0, 2, 4) for h in search_similar(client, COLLECTION, cat, limit=2, offset=o)]
    assert pages == whole


def test_similar_of_an_unknown_point_is_not_found(client, library):
    with pytest.raises(ShoeboxError) as raised:
        search_similar(client, COLLECTION, str(uuid.uuid4()), limit=3)
    assert raised.value.code.value == "ERR_NOT_FOUND"


def test_listing_pages_are_stable_and_complete(client, library):
    seen = []
    for page in (1, 2, 3):
        total, hits = list_page(client, COLLECTION, page=page, per_page=2)
        assert total == 6
        seen += [h.id for h in hits]
    assert sorted(seen) == sorted(library.values())
    assert seen == [h.id for h in list_page(client, COLLECTION, page=1, per_page=6)[1]]


def test_query_cache_answers_repeats_and_evicts_least_recent():
    cache = QueryEmbeddingCache(max_entries=2)
    cache.put("m", "cat", [1.0])
    cache.put("m", "dog", [2.0])
    assert cache.get("m", "cat") == [1.0]
    cache.put("m", "bird", [3.0])
    assert cache.get("m", "dog") is None
    assert cache.get("other-model", "cat") is None
    assert cache.stats() == {"entries": 2, "hits": 1, "misses": 2}
