"""Photo metadata from EXIF, in every container Shoebox reads.

Pillow parses the TIFF structures; finding them is ours. JPEG, HEIC/AVIF, PNG, WebP and TIFF
go through Pillow's own `getexif`; TIFF-based RAW (DNG, NEF, CR2, ARW, PEF…) is one TIFF;
ORF and RW2 are TIFF with another magic number; RAF keeps its EXIF in the JPEG its header
points to; CR3 is ISO-BMFF with IFD0, the Exif IFD and the GPS IFD as three TIFF blobs (CMT1,
CMT2, CMT4) in Canon's uuid box. The small parsers below exist because no well-kept library
without a large native dependency reads these: ExifRead (pure Python) stops at TIFF, JPEG,
PNG, WebP, HEIC and JPEG XL; pyexiv2/exiv2 bundle libexiv2; PyExifTool needs Perl's exiftool.
"""

from __future__ import annotations

import io
import math
import os
import struct
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from PIL import Image

from shoebox.imaging.formats import (
    CR3_BRAND,
    ORF_MAGICS,
    RAF_MAGIC,
    RW2_MAGIC,
    TIFF_SIGNATURES,
    ftyp_brands,
    read_source,
    sniff_format,
)
from shoebox.imaging.pillow import PILLOW_FORMATS

EXIF_KEYS = (
    "taken_at", "taken_ts", "camera_make", "camera_model", "lens", "exposure_time", "f_number", "iso",
    "focal_length", "gps_lat", "gps_lon", "orientation",
)  # fmt: skip

_EXIF_IFD, _GPS_IFD = 0x8769, 0x8825
_RW2_JPEG_FROM_RAW = 0x002E  # Panasonic: a JPEG whose own EXIF has what IFD0 lacks
_RAF_JPEG_AT = 84  # Fujifilm's header: big-endian offset and length of the embedded JPEG
_CANON_UUID = bytes.fromhex("85c0b687820f11e08111f4ce462b6a48")
_CR3_BLOBS = {b"CMT1": "ifd0", b"CMT2": "exif", b"CMT4": "gps"}


@dataclass
class _Tags:
    """The three IFDs metadata comes from, as {tag: value} the way Pillow parses them."""

    ifd0: Mapping[int, Any] = field(default_factory=dict)
    exif: Mapping[int, Any] = field(default_factory=dict)
    gps: Mapping[int, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, exif: Image.Exif) -> _Tags:
        return cls(dict(exif), exif.get_ifd(_EXIF_IFD), exif.get_ifd(_GPS_IFD))

    def value(self, tag: int) -> Any:
        """A tag from the Exif IFD, else from IFD0 (TIFF/EP and DNG put some there)."""
        value = self.exif.get(tag)
        return value if value is not None else self.ifd0.get(tag)

    def filled_from(self, other: _Tags) -> _Tags:
        return _Tags({**other.ifd0, **self.ifd0}, {**other.exif, **self.exif}, {**other.gps, **self.gps})


def read_exif(source: bytes | str | os.PathLike[str], filename: str | None = None) -> dict[str, Any]:
    """Photo metadata from EXIF: JPEG, HEIC/AVIF, PNG/WebP, TIFF, TIFF-based RAW (DNG, NEF…),
    ORF, RW2, RAF and CR3.

    Keys (None when absent or unreadable): taken_at (ISO 8601, with the UTC offset when the file
    records one), taken_ts (epoch seconds; a date without an offset is taken as UTC), camera_make,
    camera_model, lens, exposure_time (s), f_number, iso, focal_length (mm), gps_lat, gps_lon
    (signed degrees; 0/0 is treated as missing), orientation (1–8). Never raises.
    """
    result: dict[str, Any] = dict.fromkeys(EXIF_KEYS)
    try:
        tags = _load_tags(*read_source(source, filename))
    except Exception:
        return result
    if tags is None:
        return result
    for key, reader in _READERS.items():
        try:
            result[key] = reader(tags)
        except Exception:
            result[key] = None
    try:
        result["taken_at"], result["taken_ts"] = _taken(tags)
    except Exception:
        pass
    try:
        result["gps_lat"], result["gps_lon"] = _gps(tags.gps)
    except Exception:
        pass
    return result


def _load_tags(data: bytes, name: str) -> _Tags | None:
    if not data:
        return None
    if data.startswith(TIFF_SIGNATURES):
        return _tiff_tags(data)
    if data.startswith(ORF_MAGICS + (RW2_MAGIC,)):
        tags = _tiff_tags((b"MM\x00*" if data[:2] == b"MM" else b"II*\x00") + data[4:])
        embedded = tags.ifd0.get(_RW2_JPEG_FROM_RAW)
        if isinstance(embedded, bytes) and embedded.startswith(b"\xff\xd8"):
            tags = tags.filled_from(_pillow_tags(embedded, "jpeg"))
        return tags
    if data.startswith(RAF_MAGIC):
        offset, length = struct.unpack(">II", data[_RAF_JPEG_AT : _RAF_JPEG_AT + 8])
        return _pillow_tags(data[offset : offset + length], "jpeg")
    if CR3_BRAND in ftyp_brands(data[:64]):
        return _cr3_tags(data)
    kind = sniff_format(data[:64], name)
    if kind is None or kind == "raw":
        return None
    return _pillow_tags(data, kind)


def _tiff_tags(data: bytes) -> _Tags:
    # TIFF-based RAWs often have an IFD0 Pillow cannot open as a picture; their tags still parse.
    exif = Image.Exif()
    exif.load(data)
    return _Tags.of(exif)


def _pillow_tags(data: bytes, kind: str) -> _Tags:
    with Image.open(io.BytesIO(data), formats=PILLOW_FORMATS[kind]) as img:
        # Pillow's PNG getexif() decodes every pixel to look for an eXIf chunk after the image
        # data: skip that second decode when the file holds no such chunk at all.
        if kind == "png" and b"eXIf" not in data and not {"exif", "Raw profile type exif"} & img.info.keys():
            return _Tags()
        return _Tags.of(img.getexif())


def _cr3_tags(data: bytes) -> _Tags:
    """CR3: moov → uuid 85c0b687-820f-11e0-8111-f4ce462b6a48 → CMT1/CMT2/CMT4, each a whole TIFF
    (header and one IFD) holding IFD0, the Exif IFD and the GPS IFD respectively."""
    ifds: dict[str, Mapping[int, Any]] = {}
    for kind, start, end in _boxes(data, 0, len(data)):
        if kind != b"moov":
            continue
        for child, child_start, child_end in _boxes(data, start, end):
            if child != b"uuid" or data[child_start : child_start + 16] != _CANON_UUID:
                continue
            for blob, blob_start, blob_end in _boxes(data, child_start + 16, child_end):
                if blob in _CR3_BLOBS:
                    exif = Image.Exif()
                    exif.load(data[blob_start:blob_end])
                    ifds[_CR3_BLOBS[blob]] = dict(exif)
    return _Tags(**ifds)


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, payload end) of the ISO-BMFF boxes in data[start:end]; a box cut
    short by the end of the file keeps what it has."""
    at = start
    while at + 8 <= end:
        size, kind = struct.unpack(">I4s", data[at : at + 8])
        header = 8
        if size == 1:
            size, header = struct.unpack(">Q", data[at + 8 : at + 16])[0], 16
        elif size == 0:
            size = end - at
        if size < header:
            return
        yield kind, at + header, min(at + size, end)
        at += size


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value).replace("\x00", "").strip()
    return text or None


def _number(value: Any) -> float | None:
    if isinstance(value, (tuple, list)):
        value = value[0] if value else None
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _positive(value: Any) -> float | None:
    number = _number(value)
    return number if number is not None and number > 0 else None


def _orientation(tags: _Tags) -> int | None:
    value = _number(tags.ifd0.get(0x0112))
    return int(value) if value is not None and 1 <= int(value) <= 8 else None


def _iso(tags: _Tags) -> int | None:
    number = _positive(tags.value(0x8827))
    return int(number) if number is not None else None


_READERS: dict[str, Callable[[_Tags], Any]] = {
    "camera_make": lambda tags: _text(tags.ifd0.get(0x010F)),
    "camera_model": lambda tags: _text(tags.ifd0.get(0x0110)),
    "lens": lambda tags: _text(tags.value(0xA434)),
    "exposure_time": lambda tags: _positive(tags.value(0x829A)),
    "f_number": lambda tags: _positive(tags.value(0x829D)),
    "iso": _iso,
    "focal_length": lambda tags: _positive(tags.value(0x920A)),
    "orientation": _orientation,
}


def _taken(tags: _Tags) -> tuple[str | None, float | None]:
    for tag, offset_tag, subsec_tag in (
        (0x9003, 0x9011, 0x9291),
        (0x9004, 0x9012, 0x9292),
        (0x0132, 0x9010, 0x9290),
    ):
        text = _text(tags.value(tag))
        if not text:
            continue
        try:
            stamp = datetime.strptime(text[:19].replace("-", ":").replace("T", " "), "%Y:%m:%d %H:%M:%S")
        except ValueError:
            continue
        subsec = _text(tags.value(subsec_tag))
        if subsec and subsec.isdigit():
            stamp = stamp.replace(microsecond=int(subsec[:6].ljust(6, "0")))
        offset = _utc_offset(_text(tags.value(offset_tag)))
        aware = stamp.replace(tzinfo=offset or timezone.utc)
        return (aware.isoformat() if offset else stamp.isoformat()), aware.timestamp()
    return None, None


def _utc_offset(text: str | None) -> timezone | None:
    if not text or len(text) < 6 or text[0] not in "+-" or text[3] != ":":
        return None
    try:
        hours, minutes = int(text[1:3]), int(text[4:6])
    except ValueError:
        return None
    delta = timedelta(hours=hours, minutes=minutes)
    return timezone(delta if text[0] == "+" else -delta)


def _gps(gps: Mapping[int, Any]) -> tuple[float | None, float | None]:
    lat = _degrees(gps.get(2), gps.get(1), "S")
    lon = _degrees(gps.get(4), gps.get(3), "W")
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180) or (lat == 0 and lon == 0):
        return None, None
    return lat, lon


def _degrees(value: Any, ref: Any, negative: str) -> float | None:
    if value is None:
        return None
    parts = [float(v) for v in (value if isinstance(value, (tuple, list)) else (value,))]
    if not parts or not all(math.isfinite(p) for p in parts):
        return None
    degrees = sum(p / 60**i for i, p in enumerate(parts[:3]))
    return -degrees if (_text(ref) or "").upper().startswith(negative) else degrees
