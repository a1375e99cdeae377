"""What the admin pages compute, apart from Streamlit (so it can be tested on its own)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import date, datetime, timezone
from typing import Any

from shoebox.protocol import Job

# The search page's sort choices and what the API calls them (POST /api/v1/search/query `sort`).
SORTS = {"relevance": "relevance", "oldest first": "date_taken", "newest first": "-date_taken"}
# The minimum-score slider's lowest value, which means "no minimum" (no score_threshold sent).
SCORE_OFF = -1.0

# The duplicate tiers, in the order the page shows them: (answer key, title, what it holds).
TIERS = (
    ("exact", "Exact copies", "The same bytes at several paths (one photo, several files)."),
    (
        "same_picture",
        "Same picture",
        "Different files of one picture (resized, re-encoded, converted, metadata stripped): "
        "perceptual hashes at most {phash_distance} bits apart.",
    ),
    (
        "bursts",
        "Bursts",
        "Shots by the same camera within {burst_seconds:g} s of each other that look alike "
        "(cosine ≥ {burst_threshold:.2f}).",
    ),
    (
        "near",
        "Near duplicates",
        "Other photos that look alike (cosine ≥ {threshold:.2f}), not in a tier above.",
    ),
)


def build_filters(
    *,
    taken_after: date | None = None,
    taken_before: date | None = None,
    camera_make: str = "",
    formats: Iterable[str] = (),
    folder: str = "",
    has_gps: str = "any",
) -> dict[str, Any]:
    """The search filters (SearchFilters of the API) of the form's values; empty ones left out."""
    filters: dict[str, Any] = {}
    if taken_after:
        filters["taken_after"] = taken_after.isoformat()
    if taken_before:
        filters["taken_before"] = taken_before.isoformat()
    makes = [m.strip() for m in camera_make.split(",") if m.strip()]
    if makes:
        filters["camera_make"] = makes
    fmts = [f.lower().lstrip(".") for f in formats if f]
    if fmts:
        filters["format"] = fmts
    if folder.strip():
        filters["folder"] = folder.strip()
    if has_gps in ("yes", "no"):
        filters["has_gps"] = has_gps == "yes"
    return filters


def query_terms(text: str = "", not_like: str = "", *, upload: bool = False) -> list[dict[str, Any]]:
    """The terms of a combined query (POST /api/v1/search/query): the description, the uploaded
    photo (upload 0), and "not like" as a text of weight −1. Empty boxes are left out."""
    terms: list[dict[str, Any]] = []
    if text.strip():
        terms.append({"text": text.strip(), "weight": 1.0})
    if upload:
        terms.append({"image_upload": 0, "weight": 1.0})
    if not_like.strip():
        terms.append({"text": not_like.strip(), "weight": -1.0})
    return terms


def search_warning(warning: dict[str, Any], collection: str | None) -> str:
    """A search answer's warning as the page shows it: the message, and for a query in another
    language the multilingual models and how to switch the collection to one."""
    text = f"**{warning.get('code', 'warning')}** — {warning.get('message', '')}"
    models = warning.get("suggested_models") or []
    if models:
        text += (
            "\n\nMultilingual models: " + ", ".join(f"`{m}`" for m in models) + ". To switch this "
            f"collection: `shoebox collections migrate {collection or 'NAME'} --model {models[0]}`"
        )
    return text


def score_threshold(min_score: float) -> float | None:
    """The slider's value as the API's score_threshold: None (no cut) at its lowest value."""
    return None if min_score <= SCORE_OFF else float(min_score)


def has_next_page(shown: int, per_page: int, offset: int, total: int | None) -> bool:
    """Whether a page follows: `total` (date sorts) says where the hits end; without it, a full
    page means there may be more."""
    if total is not None:
        return offset + per_page < total
    return shown >= per_page


def resolution(item: dict[str, Any]) -> str:
    w, h = item.get("width"), item.get("height")
    return f"{w}×{h}" if w and h else "?×?"


def group_note(tier: str, group: dict[str, Any]) -> str:
    """What joined a duplicate group, from the figures the server gives with it."""
    count = len(group.get("members") or [])
    parts = [f"{count} paths" if tier == "exact" else f"{count} photos"]
    if group.get("max_distance") is not None:
        parts.append(f"hash distance ≤ {group['max_distance']} bits")
    if group.get("min_score") is not None:
        parts.append(f"lowest cosine {group['min_score']:.3f}")
    if group.get("seconds") is not None:
        parts.append(f"over {group['seconds']:g} s")
    return " · ".join(parts)


def map_url(gps: dict[str, Any] | None) -> str | None:
    if not gps or gps.get("lat") is None or gps.get("lon") is None:
        return None
    lat, lon = float(gps["lat"]), float(gps["lon"])
    return f"https://www.openstreetmap.org/?mlat={lat:.6f}&mlon={lon:.6f}#map=16/{lat:.6f}/{lon:.6f}"


def _parse(ts: str | None) -> datetime | None:
    if not ts:
        return None
    try:
        moment = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def job_rate(job: Job, now: datetime | None = None) -> tuple[float | None, float | None]:
    """Files per second since the job started, and the seconds left at that pace (None: unknown)."""
    started = _parse(job.started_at)
    if started is None:
        return None, None
    end = _parse(job.finished_at) or now or datetime.now(timezone.utc)
    elapsed = (end - started).total_seconds()
    if elapsed <= 0 or job.processed_files <= 0:
        return None, None
    rate = job.processed_files / elapsed
    left = max(job.total_files - job.processed_files, 0)
    return rate, left / rate


def errors_by_code(job: Job) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = defaultdict(list)
    for err in job.errors:
        grouped[getattr(err.code, "value", str(err.code))].append(f"{err.file} — {err.message}")
    return dict(sorted(grouped.items()))


def human_size(n: int | float | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"


def human_seconds(s: float | None) -> str:
    if s is None:
        return "?"
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"
