"""What the ingest stores about a photo: content metadata (EXIF, size, thumbnail) and the point payload.

Content metadata depends on the bytes only, so it is cached with the embedding; the payload
adds what depends on where the bytes live (paths, folders, mtime). The payload keys are the
contract the search routes filter and display on.
"""

from __future__ import annotations

import math
import os
from typing import Any

# EXIF keys kept in the payload (from imaging.read_exif), each under the name search uses.
_EXIF_KEYS = {
    "taken_at": ("taken_at", "date_taken", "datetime_original"),
    "taken_ts": ("taken_ts", "date_taken_ts", "timestamp", "epoch"),
    "camera_make": ("camera_make", "make"),
    "camera_model": ("camera_model", "model"),
    "lens": ("lens", "lens_model"),
    "exposure_time": ("exposure_time",),
    "f_number": ("f_number",),
    "iso": ("iso",),
    "focal_length": ("focal_length",),
    "orientation": ("orientation",),
}


def file_format(filename: str) -> str:
    """Lowercase extension without the dot: "jpg", "dng", "heic"."""
    return os.path.splitext(filename)[1].lower().lstrip(".")


def folders_of(path: str) -> list[str]:
    """Every ancestor folder of a path, nearest first ("/a/b/c.jpg" → ["/a/b", "/a", "/"])."""
    folders = []
    parent = os.path.dirname(path)
    while True:
        folders.append(parent)
        up = os.path.dirname(parent)
        if up == parent:
            break
        parent = up
    return folders


def _clean(value: Any) -> Any:
    """JSON-safe scalars only (EXIF rationals, bytes, NaN and the like would break the payload)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value.strip("\x00 ").strip() or None if isinstance(value, str) else value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    try:
        f = float(value)
        return f if math.isfinite(f) else None
    except (TypeError, ValueError):
        return str(value)


def content_meta(
    exif: dict[str, Any],
    width: int | None,
    height: int | None,
    thumbnail: str | None,
    fingerprint: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Metadata of the bytes themselves, normalised to the payload's keys (`fingerprint`: the
    perceptual hash `phash` and `sharpness` of imaging.fingerprint)."""
    meta: dict[str, Any] = {"width": width, "height": height, "thumbnail": thumbnail}
    meta.update({k: (fingerprint or {}).get(k) for k in ("phash", "sharpness")})
    for key, candidates in _EXIF_KEYS.items():
        meta[key] = next((_clean(exif[c]) for c in candidates if exif.get(c) is not None), None)
    if meta["taken_ts"] is not None:
        meta["taken_ts"] = float(meta["taken_ts"])
    if meta["iso"] is not None:
        try:
            meta["iso"] = int(meta["iso"])
        except (TypeError, ValueError):
            meta["iso"] = None
    lat = exif.get("gps_lat", exif.get("gps_latitude", exif.get("latitude")))
    lon = exif.get("gps_lon", exif.get("gps_longitude", exif.get("longitude")))
    gps = exif.get("gps")
    if isinstance(gps, dict):
        lat, lon = gps.get("lat", lat), gps.get("lon", lon)
    lat, lon = _clean(lat), _clean(lon)
    if isinstance(lat, float) and isinstance(lon, float) and -90 <= lat <= 90 and -180 <= lon <= 180:
        meta["gps"] = {"lat": lat, "lon": lon}
    return meta


def build_payload(
    sha256: str, paths: list[str], size: int, mtime: float, meta: dict[str, Any], model_name: str
) -> dict[str, Any]:
    paths = sorted(set(paths))
    first = paths[0]
    folders = sorted({f for p in paths for f in folders_of(p)})
    payload: dict[str, Any] = {
        "sha256": sha256,
        "paths": paths,
        "path": first,
        "folders": folders,
        "filename": os.path.basename(first),
        "size": size,
        "mtime": mtime,
        "format": file_format(first),
        "model_name": model_name,
        **{k: v for k, v in meta.items() if k != "gps"},
        "has_gps": "gps" in meta,
    }
    if "gps" in meta:
        payload["gps"] = meta["gps"]
    return payload


def with_paths(payload: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    """The same payload with another set of paths (a copy found, or a path whose content changed)."""
    paths = sorted(set(paths))
    return {
        **payload,
        "paths": paths,
        "path": paths[0],
        "filename": os.path.basename(paths[0]),
        "folders": sorted({f for p in paths for f in folders_of(p)}),
        "format": file_format(paths[0]),
    }
