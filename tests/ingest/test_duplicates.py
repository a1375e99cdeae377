"""Duplicate tiers on vectors and payloads we control, on every store backend: which pair lands in
which tier, the thresholds, and the suggested copy to keep."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

from shoebox.ingest.duplicates import Params, find_duplicates, group_pairs
from shoebox.protocol import ShoeboxError
from shoebox.store import Record, VectorStore
from stores import BACKENDS, open_backend

DIM = 16
COLLECTION = "photos"
RNG = np.random.default_rng(12)


def _unit(v: np.ndarray) -> list[float]:
    return (v / np.linalg.norm(v)).astype(np.float32).tolist()


def _flip(phash: str, bits: int) -> str:
    """The hash with its `bits` lowest bits flipped."""
    return f"{int(phash, 16) ^ ((1 << bits) - 1):016x}"


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> VectorStore:
    s = open_backend(request.param, tmp_path)
    s.ensure_collection(COLLECTION, DIM)
    yield s
    s.close()


def _put(store: VectorStore, photos: dict[str, tuple[np.ndarray, dict]]) -> dict[str, str]:
    ids = {name: str(uuid.uuid4()) for name in photos}
    records = []
    for name, (vector, extra) in photos.items():
        path = extra.pop("path", f"/lib/{name}")
        payload = {
            "path": path,
            "paths": extra.pop("paths", [path]),
            "filename": name,
            "format": name.rsplit(".")[-1],
        }
        records.append(Record(id=ids[name], vector=_unit(vector), payload={**payload, **extra}))
    store.write(COLLECTION, records)
    return ids


def _named(ids: dict[str, str], groups: list[list[str]]) -> list[set[str]]:
    by_id = {v: k for k, v in ids.items()}
    return [{by_id[i] for i in g} for g in groups]


BASE_HASH = "c3d1a5b7e9f00f1e"


def test_each_pair_lands_in_the_first_tier_it_qualifies_for(store):
    scene, other, third = RNG.normal(size=DIM), RNG.normal(size=DIM), RNG.normal(size=DIM)
    close = lambda v: v + RNG.normal(scale=0.01, size=DIM)  # noqa: E731
    ids = _put(
        store,
        {
            # one picture in two files: close hashes (and, naturally, close vectors)
            "a.jpg": (scene, {"phash": BASE_HASH, "width": 4000, "height": 3000}),
            "a_small.jpg": (close(scene), {"phash": _flip(BASE_HASH, 3), "width": 400, "height": 300}),
            # a burst: one camera, one second apart, close vectors, different hashes
            "b1.jpg": (
                other,
                {"phash": "0f0f0f0f0f0f0f0f", "camera_make": "SONY", "camera_model": "A7", "taken_ts": 100.0},
            ),
            "b2.jpg": (
                close(other),
                {"phash": "f0f0f0f0f0f0f0f0", "camera_make": "SONY", "camera_model": "A7", "taken_ts": 101.0},
            ),
            # near-duplicates: close vectors, different hashes, no burst (different cameras)
            "n1.jpg": (third, {"phash": "00ff00ff00ff00ff", "camera_make": "Canon", "taken_ts": 100.0}),
            "n2.jpg": (
                close(third),
                {"phash": "ff00ff00ff00ff00", "camera_make": "NIKON", "taken_ts": 100.0},
            ),
            # alone
            "single.jpg": (RNG.normal(size=DIM), {"phash": "123456789abcdef0"}),
        },
    )
    found = find_duplicates(store, COLLECTION, Params(threshold=0.98, burst_threshold=0.98))
    assert _named(ids, found.same_picture) == [{"a.jpg", "a_small.jpg"}]
    assert _named(ids, found.bursts) == [{"b1.jpg", "b2.jpg"}]
    assert _named(ids, found.near) == [{"n1.jpg", "n2.jpg"}]
    assert found.exact == []
    [picture] = found.groups.same_picture
    assert picture.max_distance == 3
    assert picture.keep == ids["a.jpg"]
    [burst] = found.groups.bursts
    assert burst.seconds == 1.0 and burst.min_score is not None and burst.min_score >= 0.98


def test_hash_distance_threshold_is_inclusive_and_cuts_beyond(store):
    ids = _put(
        store,
        {
            "a.jpg": (RNG.normal(size=DIM), {"phash": BASE_HASH}),
            "b.jpg": (RNG.normal(size=DIM), {"phash": _flip(BASE_HASH, 6)}),
            "c.jpg": (RNG.normal(size=DIM), {"phash": _flip(BASE_HASH, 7)}),
        },
    )
    at_six = find_duplicates(store, COLLECTION, Params(phash_distance=6))
    # a–b differ by 6 bits, a–c by 7, b–c by 1: all one picture through b.
    assert _named(ids, at_six.same_picture) == [{"a.jpg", "b.jpg", "c.jpg"}]
    at_zero = find_duplicates(store, COLLECTION, Params(phash_distance=0))
    assert at_zero.same_picture == []
    at_five = find_duplicates(store, COLLECTION, Params(phash_distance=5))
    assert _named(ids, at_five.same_picture) == [{"b.jpg", "c.jpg"}]


def test_a_burst_needs_one_camera_and_shots_within_the_window(store):
    base = RNG.normal(size=DIM)
    shot = lambda: base + RNG.normal(scale=0.01, size=DIM)  # noqa: E731
    cam = {"camera_make": "Apple", "camera_model": "iPhone 12"}
    ids = _put(
        store,
        {
            "s0.jpg": (shot(), {**cam, "taken_ts": 0.0, "phash": "0000000000000000"}),
            "s1.jpg": (shot(), {**cam, "taken_ts": 1.0, "phash": "00000000ffffffff"}),
            "s2.jpg": (shot(), {**cam, "taken_ts": 2.0, "phash": "ffffffff00000000"}),
            "later.jpg": (shot(), {**cam, "taken_ts": 60.0, "phash": "ffffffffffffffff"}),
            "undated.jpg": (shot(), {**cam, "phash": "0f0f0f0f0f0f0f0f"}),
            "other_cam.jpg": (
                shot(),
                {
                    "camera_make": "Apple",
                    "camera_model": "iPhone 15",
                    "taken_ts": 1.5,
                    "phash": "f0f0f0f0f0f0f0f0",
                },
            ),
        },
    )
    found = find_duplicates(store, COLLECTION, Params(threshold=0.9, burst_threshold=0.9, burst_seconds=1.0))
    assert _named(ids, found.bursts) == [{"s0.jpg", "s1.jpg", "s2.jpg"}]  # chained, each one second apart
    assert found.groups.bursts[0].seconds == 2.0
    # The rest look alike but are no burst: near-duplicates, the burst not repeated among them.
    [near] = _named(ids, found.near)
    assert {"later.jpg", "undated.jpg", "other_cam.jpg"} <= near
    tight = find_duplicates(store, COLLECTION, Params(threshold=0.9, burst_threshold=0.9, burst_seconds=0.5))
    assert tight.bursts == []


def test_the_sharpest_shot_of_a_burst_is_the_one_to_keep(store):
    base = RNG.normal(size=DIM)
    cam = {"camera_make": "SONY", "camera_model": "A7"}
    ids = _put(
        store,
        {
            f"s{i}.jpg": (
                base + RNG.normal(scale=0.01, size=DIM),
                {
                    **cam,
                    "taken_ts": float(i),
                    "sharpness": s,
                    "phash": f"{i:016x}" if i else "ffffffffffffffff",
                    "width": 6000,
                    "height": 4000,
                },
            )
            for i, s in enumerate([10.0, 250.0, 90.0])
        },
    )
    # s1 and s2 hash 2 bits apart: a zero hash distance keeps the burst out of same_picture.
    [burst] = find_duplicates(store, COLLECTION, Params(phash_distance=0, burst_threshold=0.9)).groups.bursts
    assert burst.keep == ids["s1.jpg"]


def test_keep_prefers_resolution_then_original_format_then_metadata_then_size(store):
    h = BASE_HASH
    ids = _put(
        store,
        {
            "big.png": (RNG.normal(size=DIM), {"phash": h, "width": 4000, "height": 3000, "size": 9_000_000}),
            "big.dng": (
                RNG.normal(size=DIM),
                {"phash": h, "width": 4000, "height": 3000, "size": 20_000_000},
            ),
            "big.jpg": (
                RNG.normal(size=DIM),
                {
                    "phash": h,
                    "width": 4000,
                    "height": 3000,
                    "size": 3_000_000,
                    "taken_at": "2021-01-01T00:00:00",
                },
            ),
            "small.dng": (
                RNG.normal(size=DIM),
                {"phash": h, "width": 2000, "height": 1500, "size": 30_000_000},
            ),
        },
    )
    [group] = find_duplicates(store, COLLECTION).groups.same_picture
    assert group.keep == ids["big.dng"]
    assert group.keep_path == "/lib/big.dng"
    store.delete_ids(COLLECTION, [ids["big.dng"]])
    [group] = find_duplicates(store, COLLECTION).groups.same_picture
    assert group.keep == ids["big.jpg"], "JPEG over PNG at the same resolution"


def test_exact_duplicates_list_one_member_per_path_and_keep_the_shallowest(store):
    ids = _put(
        store,
        {
            "x.jpg": (
                RNG.normal(size=DIM),
                {
                    "path": "/a/x.jpg",
                    "paths": ["/a/backup/old/x.jpg", "/a/x.jpg"],
                    "size": 1234,
                    "width": 10,
                    "height": 10,
                },
            )
        },
    )
    found = find_duplicates(store, COLLECTION)
    assert found.exact == [[ids["x.jpg"]]]
    [group] = found.groups.exact
    assert [m.path for m in group.members] == ["/a/backup/old/x.jpg", "/a/x.jpg"]
    assert group.keep_path == "/a/x.jpg"
    assert all(m.id == ids["x.jpg"] and m.size == 1234 for m in group.members)


def test_photos_without_a_hash_are_counted_not_grouped(store):
    _put(store, {"old.jpg": (RNG.normal(size=DIM), {}), "older.jpg": (RNG.normal(size=DIM), {})})
    found = find_duplicates(store, COLLECTION)
    assert found.same_picture == [] and found.without_phash == 2


def test_out_of_range_parameters_are_refused(store):
    for params in (
        Params(threshold=0),
        Params(phash_distance=17),
        Params(burst_seconds=-1),
        Params(burst_threshold=1.5),
    ):
        with pytest.raises(ShoeboxError):
            find_duplicates(store, COLLECTION, params)


def test_groups_are_connected_components_biggest_first():
    assert group_pairs([("c", "d"), ("a", "b"), ("b", "e")]) == [["a", "b", "e"], ["c", "d"]]
