"""What a file is: the extensions Shoebox reads, and the decoder its bytes call for."""

from __future__ import annotations

import os
import struct
from pathlib import Path

from shoebox.protocol import ErrorCode, ShoeboxError

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".jpe",
        ".jfif",
        ".png",
        ".webp",
        ".tif",
        ".tiff",
        ".bmp",
        ".gif",
        ".heic",
        ".heif",
        ".hif",
        ".avif",
    }
)
RAW_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".dng", ".nef", ".nrw", ".cr2", ".cr3", ".crw", ".arw", ".srf", ".sr2", ".raf", ".orf", ".rw2",
        ".rwl", ".pef", ".srw", ".x3f", ".3fr", ".fff", ".iiq", ".mos", ".mef", ".mrw", ".erf", ".kdc",
        ".dcr", ".k25", ".raw", ".gpr",
    }
)  # fmt: skip

_HEIF_BRANDS = {
    b"heic",
    b"heix",
    b"hevc",
    b"hevx",
    b"heim",
    b"heis",
    b"hevm",
    b"hevs",
    b"mif1",
    b"msf1",
    b"mif2",
}
_AVIF_BRANDS = {b"avif", b"avis"}
CR3_BRAND = b"crx "
# Camera RAW containers that are not TIFF: Fujifilm, Olympus, Panasonic, Sigma, Minolta, old Canon.
RAF_MAGIC = b"FUJIFILM"
ORF_MAGICS = (b"IIRO", b"IIRS", b"MMOR")
RW2_MAGIC = b"IIU\x00"
_RAW_SIGNATURES = (RAF_MAGIC, *ORF_MAGICS, RW2_MAGIC, b"FOVb", b"\x00MRM", b"II\x1a\x00\x00\x00HEAPCCDR")
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*")


def is_raw(filename: str) -> bool:
    return os.path.splitext(filename)[1].lower() in RAW_EXTENSIONS


def is_supported(filename: str) -> bool:
    ext = os.path.splitext(filename)[1].lower()
    return ext in IMAGE_EXTENSIONS or ext in RAW_EXTENSIONS


def ftyp_brands(head: bytes) -> set[bytes]:
    """The major and compatible brands of an ISO-BMFF `ftyp` box at the start of `head`."""
    if head[4:8] != b"ftyp" or len(head) < 12:
        return set()
    box_size = struct.unpack(">I", head[:4])[0]
    return {head[i : i + 4] for i in range(8, min(max(box_size, 16), len(head)), 4)}


def sniff_format(head: bytes, filename: str = "") -> str | None:
    """The decoder for these bytes: "jpeg", "png", "gif", "bmp", "webp", "tiff", "heif", "avif",
    "raw", or None when the content is no format we read."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head.startswith(b"BM") and len(head) >= 26:
        return "bmp"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp":
        brands = ftyp_brands(head)
        if CR3_BRAND in brands:
            return "raw"
        if brands & _AVIF_BRANDS:
            return "avif"
        if brands & _HEIF_BRANDS:
            return "heif"
        return None
    if head.startswith(_RAW_SIGNATURES):
        return "raw"
    if head.startswith(TIFF_SIGNATURES) or head.startswith((b"II+\x00", b"MM\x00+")):
        # DNG, NEF, CR2, ARW, PEF… are TIFF inside; their extension is the only tell.
        return "raw" if is_raw(filename) else "tiff"
    if is_raw(filename):
        return "raw"  # LibRaw also reads headerless and odd formats: let it judge
    return None


def read_source(source: bytes | str | os.PathLike[str], filename: str | None) -> tuple[bytes, str]:
    """The bytes and the file name (for messages and extension tie-breaks) of a path or of bytes."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), filename or ""
    path = Path(source)
    try:
        return path.read_bytes(), filename or path.name
    except OSError as exc:
        raise ShoeboxError(ErrorCode.FILE_READ, f"cannot read {path}: {exc.strerror or exc}") from exc
