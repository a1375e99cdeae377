"""Duplicates in tiers: the same bytes, the same picture, near-duplicates, and bursts.

- **exact**: the same bytes under several paths. A content is one point, so these are the
  points whose `paths` hold more than one path (the engine's `values_count` filter).
- **same_picture**: distinct files of one picture (re-encoded, resized, metadata stripped,
  converted to another format): their perceptual hashes (`imaging.fingerprint`, computed at
  ingest from the decode the ingest already does) differ by at most `phash_distance` bits.
- **bursts**: near-duplicates (cosine ≥ `burst_threshold`) taken by the same camera (make and
  model) within `burst_seconds` of each other.
- **near**: the rest of the pairs at cosine ≥ `threshold`.

Each pair of distinct photos lands in the first tier it qualifies for, in the order
same_picture → bursts → near, and each tier's groups are the connected components of its pairs.
In the tiers below it, a group stands as one photo, its copy to keep: a near group therefore never
lists two copies of one picture or two shots of one burst. The embedding pairs come
from one batched neighbour search per photo inside the engine; the hash pairs from an exact
multi-index search over the hashes, in memory (64 bits a photo: 4 MB at 500,000 photos).

Every group names a suggested copy to keep (`keep_rule` in the answer says how it was chosen).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from shoebox.imaging.fingerprint import close_pairs, hashes_to_array
from shoebox.imaging.formats import RAW_EXTENSIONS
from shoebox.ingest.search import thumbnail_url
from shoebox.protocol import ErrorCode, ShoeboxError
from shoebox.store import MoreValuesThan, Record, VectorStore, Where

DEFAULT_NEAR_THRESHOLD = 0.95
DEFAULT_PHASH_DISTANCE = 6
DEFAULT_BURST_SECONDS = 2.0
DEFAULT_BURST_THRESHOLD = 0.90
MAX_PHASH_DISTANCE = 16
# Groups per tier in one answer (the duplicates route's max_groups): its default and its bound.
DEFAULT_MAX_GROUPS = 1000
MAX_GROUPS = 10_000
# Neighbours asked per point when grouping near-duplicates: a burst of copies larger than this
# is still one group, because union-find joins it through the copies' own neighbours.
NEIGHBOURS = 16
# HNSW breadth of the duplicate scan's queries: its neighbours are very close (cosine >= 0.9),
# which a narrow search finds; at 100,000 points it costs 1.3 ms a point against 2.0 at 128.
BREADTH = 32
_SCROLL_PAGE = 256
# Queries per batch call: the engine plans a batch as one pass over the segments; local mode
# holds its lock for a whole call, so searches wait behind it no longer than one batch.
_QUERY_BATCH = 64
# What the scan reads of each point: enough to describe a member and to judge a burst.
_MEMBER_KEYS = [
    "path",
    "paths",
    "size",
    "width",
    "height",
    "format",
    "taken_at",
    "taken_ts",
    "camera_make",
    "camera_model",
    "phash",
    "sharpness",
]

KEEP_RULE = (
    "same_picture and near: the most pixels, then the original format (camera RAW, then JPEG/HEIC, "
    "then TIFF/PNG, then WebP/AVIF/GIF and the rest), then the copy with camera metadata (date, "
    "camera), then the largest file, then the lowest id. bursts: the sharpest shot (variance of the "
    "Laplacian), then the same rule. exact: the path in the fewest folders, then the first in "
    "alphabetical order."
)
# Formats cameras write come before formats that are usually exports or web derivatives.
_FORMAT_RANK = {
    **{ext.lstrip("."): 0 for ext in RAW_EXTENSIONS},
    **dict.fromkeys(("jpg", "jpeg", "jpe", "jfif", "heic", "heif", "hif"), 1),
    **dict.fromkeys(("tif", "tiff", "png"), 2),
}
_OTHER_FORMAT_RANK = 3


# ---------------------------------------------------------------- the answer


class Member(BaseModel):
    id: str
    path: str
    paths: list[str]
    size: int | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    taken_at: str | None = None
    camera: str | None = None
    sharpness: float | None = None
    thumbnail_url: str


class Group(BaseModel):
    members: list[Member]
    keep: str = Field(description="The id of the suggested copy to keep (exact: its id, see keep_path).")
    keep_path: str = Field(description="The path of the suggested copy to keep.")
    min_score: float | None = Field(
        default=None, description="near and bursts: the lowest cosine of the pairs that joined the group."
    )
    max_distance: int | None = Field(
        default=None,
        description="same_picture: the largest hash distance (bits) of the pairs that joined it.",
    )
    seconds: float | None = Field(default=None, description="bursts: from the first shot to the last.")


class TierGroups(BaseModel):
    exact: list[Group] = Field(default_factory=list)
    same_picture: list[Group] = Field(default_factory=list)
    near: list[Group] = Field(default_factory=list)
    bursts: list[Group] = Field(default_factory=list)


class Thresholds(BaseModel):
    threshold: float
    phash_distance: int
    burst_seconds: float
    burst_threshold: float


class Duplicates(BaseModel):
    """The tiers as lists of ids (API.md's shape), and in `groups` the same groups, in the same order,
    with their members described and a copy to keep."""

    exact: list[list[str]] = Field(description="One group per content held by several paths: [id].")
    same_picture: list[list[str]] = Field(description="Distinct files of one picture (perceptual hash).")
    near: list[list[str]] = Field(
        description="Distinct images with cosine >= threshold, not in a tier above."
    )
    bursts: list[list[str]] = Field(description="Near-duplicates by one camera within burst_seconds.")
    groups: TierGroups
    thresholds: Thresholds
    threshold: float = Field(description="The near-duplicate cosine threshold (= thresholds.threshold).")
    keep_rule: str = KEEP_RULE
    without_phash: int = Field(
        0, description="Photos with no perceptual hash (ingested before it existed): not in same_picture."
    )
    seconds: dict[str, float] = Field(default_factory=dict, description="Time each tier's scan took.")
    truncated: bool = Field(
        default=False, description="A tier had more groups than max_groups: only the first are listed."
    )
    total_groups: dict[str, int] = Field(
        default_factory=dict, description="Groups each tier found (listed or not)."
    )

    def capped(self, max_groups: int) -> Duplicates:
        """At most `max_groups` groups per tier, in order, `truncated` set when any tier had more."""
        tiers = ("exact", "same_picture", "near", "bursts")
        totals = {tier: len(getattr(self, tier)) for tier in tiers}
        update: dict[str, Any] = {"total_groups": totals, "truncated": max(totals.values()) > max_groups}
        if update["truncated"]:
            update.update({tier: getattr(self, tier)[:max_groups] for tier in tiers})
            update["groups"] = TierGroups(
                **{tier: getattr(self.groups, tier)[:max_groups] for tier in tiers}
            )
        return self.model_copy(update=update)


@dataclass(frozen=True)
class Params:
    threshold: float = DEFAULT_NEAR_THRESHOLD
    phash_distance: int = DEFAULT_PHASH_DISTANCE
    burst_seconds: float = DEFAULT_BURST_SECONDS
    burst_threshold: float = DEFAULT_BURST_THRESHOLD

    def check(self) -> Params:
        if not 0.0 < self.threshold <= 1.0:
            raise ShoeboxError(ErrorCode.VALIDATION, f"threshold must be in (0, 1], got {self.threshold}")
        if not 0.0 < self.burst_threshold <= 1.0:
            raise ShoeboxError(
                ErrorCode.VALIDATION, f"burst_threshold must be in (0, 1], got {self.burst_threshold}"
            )
        if not 0 <= self.phash_distance <= MAX_PHASH_DISTANCE:
            raise ShoeboxError(
                ErrorCode.VALIDATION,
                f"phash_distance must be in [0, {MAX_PHASH_DISTANCE}], got {self.phash_distance}",
            )
        if not 0.0 <= self.burst_seconds <= 3600.0:
            raise ShoeboxError(
                ErrorCode.VALIDATION, f"burst_seconds must be in [0, 3600], got {self.burst_seconds}"
            )
        return self


# ---------------------------------------------------------------- grouping


class _Components:
    """Union-find over string ids, with the worst pair score of each component."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def root(self, x: str) -> str:
        parent = self.parent
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def join(self, a: str, b: str) -> None:
        ra, rb = self.root(a), self.root(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def groups(self) -> list[list[str]]:
        """The components of two or more, biggest first, then by their first id."""
        found: dict[str, list[str]] = {}
        for x in self.parent:
            found.setdefault(self.root(x), []).append(x)
        ordered = [sorted(g) for g in found.values() if len(g) > 1]
        ordered.sort(key=lambda g: (-len(g), g[0]))
        return ordered


def group_pairs(pairs: Iterable[tuple[str, str]]) -> list[list[str]]:
    """Connected components of the pairs, biggest first."""
    components = _Components()
    for a, b in pairs:
        components.join(a, b)
    return components.groups()


def exact_duplicates(store: VectorStore, collection: str) -> list[Record]:
    """Contents stored under more than one path (one point, several `paths`)."""
    several_paths = Where((MoreValuesThan("paths", 1),))
    found: list[Record] = []
    start: str | None = None
    while True:
        records, start = store.scroll(
            collection, where=several_paths, limit=_SCROLL_PAGE, start=start, payload=_MEMBER_KEYS
        )
        found += records
        if start is None:
            return found


def neighbour_pairs(
    store: VectorStore,
    collection: str,
    threshold: float,
    *,
    neighbours: int = NEIGHBOURS,
    payload: list[str] | None = None,
    seen: dict[str, dict[str, Any]] | None = None,
) -> Iterator[tuple[str, str, float]]:
    """Pairs of points with cosine ≥ threshold, found by the engine's batched neighbour queries.

    Each point's stored vector is the query; its match with itself is dropped here. Each pair
    comes once (from its lower id). With `seen`, every point's payload (`payload` keys) is
    gathered into it on the way, so the tiers need one pass over the collection.
    """
    for page in store.iter_points(collection, page=_SCROLL_PAGE, payload=payload or False):
        if seen is not None:
            seen.update({r.id: r.payload for r in page})
        for start in range(0, len(page), _QUERY_BATCH):
            batch = [r for r in page[start : start + _QUERY_BATCH] if r.vector is not None]
            answers = store.query_batch(
                collection,
                [r.vector for r in batch],
                limit=neighbours + 1,
                score_threshold=threshold,
                breadth=BREADTH,
            )
            for record, answer in zip(batch, answers, strict=True):
                for neighbour in answer:
                    if neighbour.id > record.id and neighbour.score is not None:
                        yield record.id, neighbour.id, neighbour.score


def _camera(payload: dict[str, Any]) -> str | None:
    make, model = payload.get("camera_make"), payload.get("camera_model")
    if not make and not model:
        return None
    return " ".join(str(v) for v in (make, model) if v)


def _is_burst(a: dict[str, Any], b: dict[str, Any], seconds: float) -> bool:
    camera = _camera(a)
    ta, tb = a.get("taken_ts"), b.get("taken_ts")
    return (
        camera is not None
        and camera == _camera(b)
        and isinstance(ta, (int, float))
        and isinstance(tb, (int, float))
        and abs(ta - tb) <= seconds
    )


def _member(pid: str, payload: dict[str, Any], path: str | None = None) -> Member:
    paths = list(payload.get("paths") or [])
    main = path or payload.get("path") or (paths[0] if paths else "")
    return Member(
        id=pid,
        path=main,
        paths=paths,
        size=payload.get("size"),
        width=payload.get("width"),
        height=payload.get("height"),
        format=payload.get("format"),
        taken_at=payload.get("taken_at"),
        camera=_camera(payload),
        sharpness=payload.get("sharpness"),
        thumbnail_url=thumbnail_url(pid),
    )


def keep_order(member: Member) -> tuple:
    """Sort key of the keep rule: the first member in this order is the copy to keep."""
    pixels = (member.width or 0) * (member.height or 0)
    fmt_rank = _FORMAT_RANK.get((member.format or "").lower(), _OTHER_FORMAT_RANK)
    has_metadata = member.taken_at is not None or member.camera is not None
    return (-pixels, fmt_rank, not has_metadata, -(member.size or 0), member.id)


def _burst_order(member: Member) -> tuple:
    return (-(member.sharpness if member.sharpness is not None else -1.0), *keep_order(member))


def _exact_group(record: Record) -> Group:
    paths = sorted(record.payload.get("paths") or [])
    members = [_member(record.id, record.payload, path) for path in paths]
    keep = min(paths, key=lambda p: (p.count(os.sep), p))
    return Group(members=members, keep=record.id, keep_path=keep)


def _group(ids: list[str], payloads: dict[str, dict[str, Any]], order: Any, **extra: Any) -> Group:
    members = [_member(pid, payloads.get(pid, {})) for pid in ids]
    best = min(members, key=order)
    return Group(members=members, keep=best.id, keep_path=best.path, **extra)


def _stand_ins(tier: list[list[str]], groups: list[Group]) -> dict[str, str]:
    """Each member of a tier's groups -> the id of its group's copy to keep."""
    return {pid: group.keep for ids, group in zip(tier, groups, strict=True) for pid in ids}


def _represented(
    pairs: Iterable[tuple[str, str, float]] | dict[tuple[str, str], float], stand_in: dict[str, str]
) -> dict[tuple[str, str], float]:
    """The pairs with every photo replaced by its stand-in; pairs inside one group vanish, and of
    the pairs that become one, the closest score stays."""
    items = pairs.items() if isinstance(pairs, dict) else (((a, b), s) for a, b, s in pairs)
    out: dict[tuple[str, str], float] = {}
    for (a, b), score in items:
        a, b = stand_in.get(a, a), stand_in.get(b, b)
        if a == b:
            continue
        pair = (a, b) if a < b else (b, a)
        if score > out.get(pair, -2.0):
            out[pair] = score
    return out


# ---------------------------------------------------------------- the scan


def find_duplicates(store: VectorStore, collection: str, params: Params | None = None) -> Duplicates:
    """Every tier over the whole collection: one pass of neighbour queries, one pass over the hashes."""
    params = (params or Params()).check()
    seconds: dict[str, float] = {}

    started = time.perf_counter()
    exact = exact_duplicates(store, collection)
    seconds["exact"] = time.perf_counter() - started

    started = time.perf_counter()
    payloads: dict[str, dict[str, Any]] = {}
    embedding_pairs = list(
        neighbour_pairs(
            store,
            collection,
            min(params.threshold, params.burst_threshold),
            payload=_MEMBER_KEYS,
            seen=payloads,
        )
    )
    seconds["neighbours"] = time.perf_counter() - started

    started = time.perf_counter()
    hashed = [(pid, p["phash"]) for pid, p in payloads.items() if isinstance(p.get("phash"), str)]
    picture = _Components()
    distance_of: dict[tuple[str, str], int] = {}
    if hashed:
        hashes = hashes_to_array([h for _, h in hashed])
        for i, j, distance in close_pairs(hashes, params.phash_distance):
            a, b = sorted((hashed[i][0], hashed[j][0]))
            picture.join(a, b)
            distance_of[(a, b)] = distance
    same_picture = picture.groups()
    seconds["same_picture"] = time.perf_counter() - started

    started = time.perf_counter()
    # A group of a tier above stands in the tiers below as one photo, its copy to keep: a near
    # group never lists two copies of one picture or two shots of one burst, and a photo that
    # looks like a burst is shown next to the burst's best shot.
    picture_groups = [_group(g, payloads, keep_order) for g in same_picture]
    embedding_pairs = _represented(embedding_pairs, _stand_ins(same_picture, picture_groups))
    burst_pairs = {
        pair: score
        for pair, score in embedding_pairs.items()
        if score >= params.burst_threshold and _is_burst(payloads[pair[0]], payloads[pair[1]], params.burst_seconds)
    }
    bursts = group_pairs(burst_pairs)
    burst_groups = [_group(g, payloads, _burst_order) for g in bursts]
    rest = {pair: score for pair, score in embedding_pairs.items() if pair not in burst_pairs}
    near_pairs = {
        pair: score
        for pair, score in _represented(rest, _stand_ins(bursts, burst_groups)).items()
        if score >= params.threshold
    }
    near = group_pairs(near_pairs)
    seconds["near_and_bursts"] = time.perf_counter() - started

    def worst(pairs: dict[tuple[str, str], Any], tier: list[list[str]], pick: Any) -> list[Any]:
        # One pass over the pairs, not one per group: a library may hold thousands of groups.
        group_of = {pid: n for n, group in enumerate(tier) for pid in group}
        values: list[list[Any]] = [[] for _ in tier]
        for (a, _), value in pairs.items():
            if a in group_of:
                values[group_of[a]].append(value)
        return [pick(v) if v else None for v in values]

    def span(group: list[str]) -> float | None:
        known = [t for p in group if isinstance(t := payloads[p].get("taken_ts"), (int, float))]
        return round(max(known) - min(known), 3) if known else None

    groups = TierGroups(
        exact=[_exact_group(r) for r in exact],
        same_picture=[
            g.model_copy(update={"max_distance": d})
            for g, d in zip(picture_groups, worst(distance_of, same_picture, max), strict=True)
        ],
        near=[
            _group(g, payloads, keep_order, min_score=s)
            for g, s in zip(near, worst(near_pairs, near, min), strict=True)
        ],
        bursts=[
            g.model_copy(update={"min_score": s, "seconds": span(ids)})
            for g, ids, s in zip(burst_groups, bursts, worst(burst_pairs, bursts, min), strict=True)
        ],
    )
    return Duplicates(
        exact=[[r.id] for r in exact],
        same_picture=same_picture,
        near=near,
        bursts=bursts,
        groups=groups,
        thresholds=Thresholds(**params.__dict__),
        threshold=params.threshold,
        without_phash=len(payloads) - len(hashed),
        seconds={k: round(v, 3) for k, v in seconds.items()},
    )


def empty(params: Params | None = None) -> Duplicates:
    params = (params or Params()).check()
    return Duplicates(
        exact=[],
        same_picture=[],
        near=[],
        bursts=[],
        groups=TierGroups(),
        thresholds=Thresholds(**params.__dict__),
        threshold=params.threshold,
    )
