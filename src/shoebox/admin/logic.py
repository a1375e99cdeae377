"""What the admin pages compute, apart from Streamlit (so it can be tested on its own)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import date, datetime, timezone
from typing import Any

from shoebox.protocol import Job

ORIGINAL_RULE = (
    "The original is the copy with the largest resolution (width × height), then the largest "
    "file, then the shallowest path (fewest folders deep), then the first path in alphabetical order; "
    "the others are marked as copies."
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


def cut_and_sort(hits: list[dict[str, Any]], min_score: float, by: str) -> list[dict[str, Any]]:
    """Keep the hits at or above `min_score`; `by` "date" sorts them by date taken (undated last)."""
    kept = [h for h in hits if h.get("score") is None or h["score"] >= min_score]
    if by == "date":
        kept.sort(key=lambda h: (taken_ts(h) is None, taken_ts(h) or 0.0))
    return kept


def taken_ts(hit: dict[str, Any]) -> float | None:
    ts = (hit.get("payload") or {}).get("taken_ts")
    return float(ts) if isinstance(ts, (int, float)) else None


def pick_original(copies: list[dict[str, Any]]) -> int:
    """The index of the original among copies `{"path", "width", "height", "size"}` (ORIGINAL_RULE)."""

    def key(i: int) -> tuple:
        c = copies[i]
        pixels = (c.get("width") or 0) * (c.get("height") or 0)
        path = str(c.get("path") or "")
        return (-pixels, -(c.get("size") or 0), path.count("/"), path)

    return min(range(len(copies)), key=key) if copies else -1


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
