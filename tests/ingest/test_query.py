"""Combined queries on vectors we control: the weighted-sum formula, negative terms, the relevance
cutoff and the date sort, on every store backend."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from shoebox.ingest.query import CombinedQuery, combine, rank
from shoebox.protocol import ShoeboxError
from shoebox.store import Record, VectorStore
from stores import BACKENDS, open_backend

DIM = 8
COLLECTION = "photos"


def _axis(i: int) -> np.ndarray:
    v = np.zeros(DIM)
    v[i] = 1.0
    return v


def _unit(v: np.ndarray) -> list[float]:
    return (v / np.linalg.norm(v)).astype(np.float32).tolist()


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> VectorStore:
    s = open_backend(request.param, tmp_path)
    s.ensure_collection(COLLECTION, DIM)
    yield s
    s.close()


def _put(store: VectorStore, points: dict[str, tuple[np.ndarray, float | None]]) -> dict[str, str]:
    """name → (direction, taken_ts); returns name → id."""
    ids = {name: str(uuid.uuid4()) for name in points}
    store.write(
        COLLECTION,
        [
            Record(
                id=ids[name],
                vector=_unit(v),
                payload={"filename": name, "path": f"/l/{name}", "taken_ts": ts},
            )
            for name, (v, ts) in points.items()
        ],
    )
    return ids


def test_combined_vector_is_the_normalised_weighted_sum_of_normalised_terms():
    a, b = [3.0, 0.0, 0.0], [0.0, 0.5, 0.0]  # norms 3 and 0.5: each is normalised first
    q = np.array(combine([a, b], [2.0, 1.0]))
    expected = np.array([2.0, 1.0, 0.0]) / np.sqrt(5.0)
    assert np.allclose(q, expected, atol=1e-6)
    assert np.isclose(np.linalg.norm(q), 1.0, atol=1e-6)


def test_a_negative_weight_points_the_query_away_from_its_term():
    q = np.array(combine([[1.0, 0.0], [1.0, 1.0]], [1.0, -1.0]))
    # e1 − (e1+e2)/√2, normalised
    raw = np.array([1.0 - 1 / np.sqrt(2), -1 / np.sqrt(2)])
    assert np.allclose(q, raw / np.linalg.norm(raw), atol=1e-6)
    assert q[1] < 0


def test_terms_that_cancel_out_are_refused():
    with pytest.raises(ShoeboxError) as raised:
        combine([[1.0, 2.0], [2.0, 4.0]], [1.0, -1.0])
    assert raised.value.code.value == "ERR_VALIDATION"


def test_weights_move_ranks_as_the_formula_says(store):
    # dog = axis 0, beach = axis 1; photos lean one way or the other.
    ids = _put(
        store,
        {
            "mostly_dog": (3 * _axis(0) + _axis(1), None),
            "mostly_beach": (_axis(0) + 3 * _axis(1), None),
            "people": (_axis(2), None),
        },
    )
    dog, beach = _unit(_axis(0)), _unit(_axis(1))

    def order(weights: list[float]) -> list[str]:
        hits = rank(store, COLLECTION, combine([dog, beach], weights), limit=3).hits
        return [h.filename for h in hits]

    assert order([2.0, 1.0])[0] == "mostly_dog"
    assert order([1.0, 2.0])[0] == "mostly_beach"
    # The scores are the cosines with the combined vector, as computed here.
    q = np.array(combine([dog, beach], [2.0, 1.0]))
    hits = rank(store, COLLECTION, q.tolist(), limit=3).hits
    for h in hits:
        name = h.filename
        v = np.array(
            _unit(
                {
                    "mostly_dog": 3 * _axis(0) + _axis(1),
                    "mostly_beach": _axis(0) + 3 * _axis(1),
                    "people": _axis(2),
                }[name]
            )
        )
        assert h.score == pytest.approx(float(v @ q), abs=1e-4)
    assert ids


def test_a_negative_term_sinks_what_it_names(store):
    _put(
        store,
        {
            "beach_with_people": (_axis(1) + _axis(2), None),
            "empty_beach": (_axis(1) + 0.2 * _axis(3), None),
        },
    )
    beach, people = _unit(_axis(1)), _unit(_axis(2))
    plain = [h.filename for h in rank(store, COLLECTION, combine([beach, people], [1.0, 1.0]), limit=2).hits]
    without = [
        h.filename for h in rank(store, COLLECTION, combine([beach, people], [1.0, -1.0]), limit=2).hits
    ]
    assert plain[0] == "beach_with_people"
    assert without[0] == "empty_beach"


def test_score_threshold_cuts_the_tail(store):
    # Cosines with the query axis 0: 1.0, 0.8, 0.6, 0.0.
    _put(
        store,
        {
            "a": (_axis(0), None),
            "b": (0.8 * _axis(0) + 0.6 * _axis(1), None),
            "c": (0.6 * _axis(0) + 0.8 * _axis(1), None),
            "d": (_axis(1), None),
        },
    )
    q = _unit(_axis(0))
    assert [h.filename for h in rank(store, COLLECTION, q, limit=10, score_threshold=0.7).hits] == ["a", "b"]
    assert len(rank(store, COLLECTION, q, limit=10, score_threshold=0.5).hits) == 3
    dated = rank(store, COLLECTION, q, limit=10, score_threshold=0.7, sort="date_taken")
    assert dated.total == 2


def _dated_library(store: VectorStore) -> None:
    rng = np.random.default_rng(4)
    points = {}
    for i in range(30):
        ts = (
            None if i % 7 == 0 else 1_600_000_000.0 + (i * 7919 % 30) * 86400 + (i % 3) * 0
        )  # some equal dates
        if i in (5, 6):
            ts = 1_600_000_000.0  # a tie on the date
        points[f"p{i:02d}"] = (_axis(0) + 0.5 * rng.normal(size=DIM), ts)
    _put(store, points)


def test_date_sort_orders_by_date_taken_with_undated_last(store):
    _dated_library(store)
    q = _unit(_axis(0))
    for sort, newest_first in (("date_taken", False), ("-date_taken", True)):
        ranked = rank(store, COLLECTION, q, limit=100, sort=sort)
        dates = [h.payload.get("taken_ts") for h in ranked.hits]
        known = [d for d in dates if d is not None]
        assert known == sorted(known, reverse=newest_first)
        first_undated = dates.index(None)
        assert all(d is None for d in dates[first_undated:]), "undated photos go last in both directions"
        assert ranked.total == 30
        assert all(h.score is not None for h in ranked.hits)


def test_date_sort_orders_only_the_top_k_most_relevant(store):
    _dated_library(store)
    q = _unit(_axis(0))
    top = {h.id for h in rank(store, COLLECTION, q, limit=5).hits}
    ranked = rank(store, COLLECTION, q, limit=100, sort="date_taken", top_k=5)
    assert {h.id for h in ranked.hits} == top
    assert ranked.total == 5


@pytest.mark.parametrize("sort", ["relevance", "date_taken", "-date_taken"])
def test_pages_are_stable_under_every_sort(store, sort):
    _dated_library(store)
    q = _unit(_axis(0))
    whole = [h.id for h in rank(store, COLLECTION, q, limit=30, sort=sort).hits]
    pages = [
        h.id
        for offset in range(0, 30, 4)
        for h in rank(store, COLLECTION, q, limit=4, offset=offset, sort=sort).hits
    ]
    assert pages == whole
    assert len(set(pages)) == 30
    again = [
        h.id
        for offset in range(0, 30, 4)
        for h in rank(store, COLLECTION, q, limit=4, offset=offset, sort=sort).hits
    ]
    assert again == pages


def test_query_body_validates_terms():
    ok = CombinedQuery.model_validate({"terms": [{"text": " dog "}, {"text": "people", "weight": -1}]})
    assert ok.terms[0].text == "dog" and ok.terms[1].weight == -1
    for bad in (
        {"terms": []},
        {"terms": [{"text": "dog", "image_id": str(uuid.uuid4())}]},
        {"terms": [{"weight": 2}]},
        {"terms": [{"text": "dog", "weight": 0}]},
        {"terms": [{"image_id": "not-a-uuid"}]},
        {"terms": [{"text": "dog"}], "sort": "size"},
        {"terms": [{"text": "dog"}], "score_threshold": 2},
        {"terms": [{"text": "dog"}] * 17},
        {"terms": [{"text": "dog"}], "top_k": 0},
    ):
        with pytest.raises(ValueError):
            CombinedQuery.model_validate(bad)
