"""Decoding every photo format Shoebox reads, for the model and for renditions; EXIF; thumbnails.

Shared by both services. Content decides the decoder (magic bytes), the extension only breaks
ties that content cannot (TIFF-based camera RAW vs a plain TIFF). Every failure is a
`ShoeboxError` with the contract's code:

- `ERR_FILE_READ`: the file is empty.
- `ERR_UNSUPPORTED_FORMAT`: the content is no image format we read, whatever the extension says
  (a text file named `.jpg` gets this: nothing in it is an image, so it is not a decoding failure).
- `ERR_DECODING_IMAGE`: an image format we read, but corrupt or truncated.
- `ERR_DECODING_RAW`: a camera RAW (by extension or signature) that LibRaw rejects, or whose
  image data is missing (see `_check_raw_structure` and `_check_raw_not_blank`). For RAW
  extensions LibRaw is the judge, so a text file named `.dng` gets this code too.
- `ERR_IMAGE_TOO_LARGE`: more pixels than `max_pixels`, judged from the header before decoding.
"""

from __future__ import annotations

import io
import math
import os
import struct
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

# pillow_heif must be imported before anything that loads pyvips: both bundle libheif.
import pillow_heif
import rawpy
from PIL import Image

from shoebox.protocol import ErrorCode, ShoeboxError

pillow_heif.register_heif_opener()

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

DEFAULT_MAX_PIXELS = 100_000_000
THUMBNAIL_SIZE = 256
# A RAW's embedded preview is used for renditions when it can at least make a thumbnail; tinier
# ones (old cameras' 160x120 thumbnails) give way to a half-size demosaic.
RENDITION_MIN_SIDE = THUMBNAIL_SIZE

EXIF_KEYS = (
    "taken_at", "taken_ts", "camera_make", "camera_model", "lens", "exposure_time", "f_number", "iso",
    "focal_length", "gps_lat", "gps_lon", "orientation",
)  # fmt: skip

_PILLOW_FORMATS = {
    "jpeg": ["JPEG", "MPO"],
    "png": ["PNG"],
    "gif": ["GIF"],
    "bmp": ["BMP"],
    "webp": ["WEBP"],
    "tiff": ["TIFF"],
    "heif": ["HEIF"],
    "avif": ["AVIF", "HEIF"],
}
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
# Camera RAW containers that are not TIFF: Fujifilm, Olympus, Panasonic, Sigma, Minolta, old Canon.
_RAW_SIGNATURES = (
    b"FUJIFILM",
    b"IIRO",
    b"IIRS",
    b"MMOR",
    b"IIU\x00",
    b"FOVb",
    b"\x00MRM",
    b"II\x1a\x00\x00\x00HEAPCCDR",
)
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*")

# EXIF orientation → the transpose that makes the picture upright.
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# LibRaw's `flip` (dcraw's code) → the EXIF orientation it came from.
_FLIP_TO_ORIENTATION = {0: 1, 1: 2, 2: 4, 3: 3, 4: 5, 5: 8, 6: 6, 7: 7}


@dataclass(frozen=True)
class DecodedImage:
    """An upright RGB image, possibly reduced, and the ORIGINAL upright size of the photo."""

    image: Image.Image
    width: int
    height: int


def is_raw(filename: str) -> bool:
    return os.path.splitext(filename)[1].lower() in RAW_EXTENSIONS


def is_supported(filename: str) -> bool:
    ext = os.path.splitext(filename)[1].lower()
    return ext in IMAGE_EXTENSIONS or ext in RAW_EXTENSIONS


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
        box_size = struct.unpack(">I", head[:4])[0]
        brands = {head[i : i + 4] for i in range(8, min(max(box_size, 16), len(head)), 4)}
        if b"crx " in brands:
            return "raw"  # Canon CR3
        if brands & _AVIF_BRANDS:
            return "avif"
        if brands & _HEIF_BRANDS:
            return "heif"
        return None
    if head.startswith(_RAW_SIGNATURES):
        return "raw"
    if head.startswith(_TIFF_SIGNATURES) or head.startswith((b"II+\x00", b"MM\x00+")):
        # DNG, NEF, CR2, ARW, PEF… are TIFF inside; their extension is the only tell.
        return "raw" if is_raw(filename) else "tiff"
    if is_raw(filename):
        return "raw"  # LibRaw also reads headerless and odd formats: let it judge
    return None


# ------------------------------------------------------------------ decoding


def decode_for_model(data: bytes, filename: str, *, min_side: int, max_pixels: int) -> DecodedImage:
    """Decode for embedding: upright RGB whose short side is at least `min_side`, but not much more.

    JPEG is decoded by libjpeg's DCT scaling (`draft`) straight to between 1× and 2× `min_side`;
    HEIC uses its embedded thumbnail when that is a big enough scaled copy; other formats are
    decoded whole then box-reduced. RAW uses the embedded preview when its
    short side is at least `min_side`, else a half-size demosaic, never a full demosaic.
    Images smaller than `min_side` come back at their own size. Raises `ShoeboxError`.
    """
    return _decode(data, filename, min_side=min_side, max_pixels=max_pixels)


def decode_full(
    source: bytes | str | os.PathLike[str], filename: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """The whole picture, upright RGB, for renditions and thumbnails.

    RAW gives its embedded preview when that is at least RENDITION_MIN_SIDE on its short side,
    else a half-size demosaic. Raises `ShoeboxError`.
    """
    data, name = _read_source(source, filename)
    return _decode(data, name, min_side=None, max_pixels=max_pixels).image


def make_thumbnail(img: Image.Image, size: int = THUMBNAIL_SIZE, quality: int = 85) -> bytes:
    """A JPEG whose long side is at most `size` (smaller images are not enlarged)."""
    thumb = img.convert("RGB") if img.mode != "RGB" else img.copy()
    thumb.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=3.0)
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def _read_source(source: bytes | str | os.PathLike[str], filename: str | None) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), filename or ""
    path = Path(source)
    try:
        return path.read_bytes(), filename or path.name
    except OSError as exc:
        raise ShoeboxError(ErrorCode.FILE_READ, f"cannot read {path}: {exc.strerror or exc}") from exc


def _decode(data: bytes, filename: str, *, min_side: int | None, max_pixels: int) -> DecodedImage:
    if not data:
        raise ShoeboxError(ErrorCode.FILE_READ, f"{filename or 'file'}: the file is empty (0 bytes)")
    kind = sniff_format(data[:64], filename)
    if kind is None:
        raise ShoeboxError(
            ErrorCode.UNSUPPORTED_FORMAT,
            f"{filename or 'file'}: the content is not an image format Shoebox reads",
        )
    if kind == "raw":
        return _decode_raw(data, filename, min_side=min_side, max_pixels=max_pixels)
    return _decode_pillow(data, filename, kind, min_side=min_side, max_pixels=max_pixels)


def _allow_pixels(max_pixels: int) -> None:
    # Pillow's own bomb guard is process-wide; ours is per call and checked from the header. Keep
    # Pillow's above ours so it never refuses what the caller allows, and still stops the absurd.
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels


def _too_large(filename: str, width: int, height: int, max_pixels: int) -> ShoeboxError:
    return ShoeboxError(
        ErrorCode.IMAGE_TOO_LARGE,
        f"{filename or 'image'}: {width}x{height} is {width * height:,} pixels, over the limit of {max_pixels:,}",
    )


def _open_pillow(data: bytes, filename: str, kind: str, max_pixels: int) -> Image.Image:
    """Open lazily (header only) and refuse oversized images before a single pixel is decoded."""
    _allow_pixels(max_pixels)
    try:
        img = Image.open(io.BytesIO(data), formats=_PILLOW_FORMATS[kind])
    except Image.DecompressionBombError as exc:
        raise ShoeboxError(ErrorCode.IMAGE_TOO_LARGE, f"{filename or 'image'}: {exc}") from exc
    except Exception as exc:
        raise ShoeboxError(
            ErrorCode.DECODING_IMAGE, f"{filename or 'image'}: cannot read the {kind.upper()} header: {exc}"
        ) from exc
    width, height = img.size
    if width * height > max_pixels:
        raise _too_large(filename, width, height, max_pixels)
    return img


def _orientation_of(img: Image.Image) -> int:
    try:
        value = int(img.getexif().get(0x0112, 1))
    except Exception:
        return 1
    return value if value in _TRANSPOSE else 1


def _upright_size(width: int, height: int, orientation: int) -> tuple[int, int]:
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _finish(img: Image.Image, orientation: int, min_side: int | None) -> Image.Image:
    """RGB, upright, and box-reduced to no less than `min_side` (cheap, and anti-aliased)."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # Pillow clips (not scales) 16-bit greyscale to 8 bits; scale it ourselves.
        arr = np.asarray(img, dtype=np.int64)
        if arr.max() > 255:
            arr = arr >> 8
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if img.mode != "RGB":
        img = img.convert("RGB")
    if min_side:
        factor = min(img.size) // min_side
        if factor >= 2:
            img = img.reduce(factor)
    if orientation in _TRANSPOSE:
        img = img.transpose(_TRANSPOSE[orientation])
    return img


def _decode_pillow(
    data: bytes, filename: str, kind: str, *, min_side: int | None, max_pixels: int
) -> DecodedImage:
    img = _open_pillow(data, filename, kind, max_pixels)
    width, height = img.size
    # pillow-heif hands back HEIF/AVIF already rotated (and orientation 1 in its EXIF).
    orientation = _orientation_of(img)
    try:
        # JPEG: libjpeg's DCT scaling; HEIF: pillow-heif picks an embedded thumbnail that is a
        # scaled copy of the image (phones store one); other formats ignore draft.
        if min_side and min(width, height) > min_side:
            scale = min_side / min(width, height)
            img.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
        img.seek(0)  # first frame of a GIF / first page of a TIFF
        img.load()
        img = _finish(img, orientation, min_side)
    except ShoeboxError:
        raise
    except Exception as exc:
        raise ShoeboxError(
            ErrorCode.DECODING_IMAGE, f"{filename or 'image'}: corrupt or truncated {kind.upper()}: {exc}"
        ) from exc
    return DecodedImage(img, *_upright_size(width, height, orientation))


# ------------------------------------------------------------------ RAW


def _raw_error(filename: str, message: str) -> ShoeboxError:
    return ShoeboxError(ErrorCode.DECODING_RAW, f"{filename or 'RAW file'}: {message}")


def _decode_raw(data: bytes, filename: str, *, min_side: int | None, max_pixels: int) -> DecodedImage:
    _check_raw_structure(data, filename)
    try:
        raw = rawpy.imread(io.BytesIO(data))
    except Exception as exc:
        raise _raw_error(filename, f"LibRaw cannot read it: {_libraw_message(exc)}") from exc
    with raw:
        sizes = raw.sizes
        if sizes.raw_width * sizes.raw_height > max_pixels:
            raise _too_large(filename, sizes.raw_width, sizes.raw_height, max_pixels)
        orientation = _FLIP_TO_ORIENTATION.get(sizes.flip, 1)
        width, height = _upright_size(sizes.width, sizes.height, orientation)
        if width <= 0 or height <= 0:
            raise _raw_error(filename, "LibRaw found no image in it")
        preview = _raw_preview(raw, min_side, orientation, max_pixels)
        if preview is not None:
            return DecodedImage(_finish(preview[0], preview[1], min_side), width, height)
        try:
            _check_raw_not_blank(raw.raw_image_visible, filename)
            rgb = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)
        except ShoeboxError:
            raise
        except Exception as exc:
            raise _raw_error(
                filename, f"LibRaw cannot decode its image data: {_libraw_message(exc)}"
            ) from exc
    # LibRaw has already applied `flip` to the demosaiced image.
    return DecodedImage(_finish(Image.fromarray(rgb), 1, min_side), width, height)


def _libraw_message(exc: Exception) -> str:
    text = str(exc.args[0] if exc.args else exc)
    if text.startswith("b'") or text.startswith('b"'):
        text = text[2:-1]
    return text or type(exc).__name__


def _raw_preview(
    raw: Any, min_side: int | None, flip_orientation: int, max_pixels: int
) -> tuple[Image.Image, int] | None:
    """The embedded preview (loaded, with the orientation still to apply) if its short side is at
    least `min_side` (RENDITION_MIN_SIDE for a full decode), JPEG drafted down towards `min_side`."""
    need = min_side or RENDITION_MIN_SIDE
    try:
        thumb = raw.extract_thumb()
    except Exception:
        return None  # no preview, or one LibRaw cannot unpack: demosaic instead
    try:
        if thumb.format == rawpy.ThumbFormat.JPEG:
            img = Image.open(io.BytesIO(thumb.data), formats=["JPEG", "MPO"])
            width, height = img.size
            if min(width, height) < need or width * height > max_pixels:
                return None
            # A camera's preview is stored sideways like its raw; only its own EXIF may say otherwise.
            own = _orientation_of(img)
            orientation = own if own != 1 else flip_orientation
            if min_side:
                scale = min_side / min(width, height)
                img.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
            img.load()
            return img, orientation
        if thumb.format == rawpy.ThumbFormat.BITMAP:
            array = np.asarray(thumb.data)
            if min(array.shape[:2]) < need:
                return None
            return Image.fromarray(
                array.astype(np.uint8) if array.dtype != np.uint8 else array
            ), flip_orientation
    except Exception:
        return None  # a broken preview is not a broken RAW: fall back to the sensor data
    return None


def _check_raw_not_blank(raw_image: np.ndarray, filename: str) -> None:
    """A sensor never records one value everywhere: a uniform raw means LibRaw read no data.

    That is what LibRaw returns for files whose compressed image data was stripped or zeroed
    (it "decodes" them without an error).
    """
    if raw_image.size == 0:
        raise _raw_error(filename, "RAW image data missing: LibRaw found no pixels")
    sample = raw_image[::17, ::13]
    if sample.min() != sample.max():
        return
    low, high = int(raw_image.min()), int(raw_image.max())
    if low == high:
        raise _raw_error(
            filename,
            f"RAW image data missing or blank: every sensor value is {low}, the image data was stripped",
        )


def _check_raw_structure(data: bytes, filename: str) -> None:
    """Refuse TIFF-based RAWs (DNG, NEF, CR2, ARW, PEF…) whose sensor data is not in the file.

    The raw IFDs (PhotometricInterpretation CFA or LinearRaw) say where their strips or tiles
    lie and how long they are. Data past the end of the file means a truncated copy or stripped
    image data; LibRaw may "decode" such a file to garbage without an error. For DNG's two
    lossless encodings we also know a floor: uncompressed data is exactly width × height ×
    samples × bits / 8, and lossless JPEG spends at least one bit on every sample (exiftool's
    stripped sample keeps a 22-byte stub for 8 MP). Only headers are read: this costs microseconds.
    """
    if not data.startswith(_TIFF_SIGNATURES):
        return
    try:
        ifds = _tiff_ifds(data)
    except (struct.error, ValueError, IndexError):
        return  # not a TIFF we can walk: LibRaw decides
    size = len(data)
    # Only DNG's specification ties the byte counts to the pixel format; other makers' TIFFs vary.
    is_dng = any(50706 in tags for tags in ifds)
    for tags in ifds:
        if tags.get(262, [0])[0] not in (32803, 34892):
            continue
        offsets = tags.get(273) or tags.get(324) or []
        counts = tags.get(279) or tags.get(325) or []
        if not offsets or len(offsets) != len(counts):
            continue
        end = max(o + c for o, c in zip(offsets, counts, strict=True))
        if end > size:
            raise _raw_error(
                filename,
                f"RAW image data missing or truncated: the file is {size:,} bytes, its image data ends at {end:,}",
            )
        width, height = tags.get(256, [0])[0], tags.get(257, [0])[0]
        samples = tags.get(277, [1])[0]
        bits = tags.get(258, [16])[0]
        compression = tags.get(259, [1])[0]
        stored = sum(counts)
        if not is_dng:
            continue
        if compression == 1:
            floor = width * height * samples * bits // 8
        elif compression == 7:
            floor = width * height * samples // 8
        else:
            continue
        if stored < floor * 0.99:
            raise _raw_error(
                filename,
                f"RAW image data missing or truncated: {stored:,} bytes cannot hold {width}x{height} pixels "
                f"(at least {floor:,} bytes needed)",
            )


_TIFF_TYPE_FORMATS = {1: "B", 3: "H", 4: "I", 13: "I", 16: "Q"}
_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8}


def _tiff_ifds(data: bytes, limit: int = 64) -> list[dict[int, list[int]]]:
    """Integer tags of every IFD of a classic TIFF: the IFD0 chain and SubIFDs, recursively."""
    endian = "<" if data[:2] == b"II" else ">"
    first = struct.unpack(endian + "I", data[4:8])[0]
    pending, seen, ifds = [first], set(), []
    while pending and len(ifds) < limit:
        offset = pending.pop(0)
        if offset in seen or not 8 <= offset < len(data) - 2:
            continue
        seen.add(offset)
        (count,) = struct.unpack(endian + "H", data[offset : offset + 2])
        tags: dict[int, list[int]] = {}
        for i in range(count):
            entry = data[offset + 2 + 12 * i : offset + 14 + 12 * i]
            tag, kind, n = struct.unpack(endian + "HHI", entry[:8])
            fmt = _TIFF_TYPE_FORMATS.get(kind)
            if fmt is None or n > 1_000_000:
                continue
            length = _TIFF_TYPE_SIZES[kind] * n
            if length <= 4:
                raw = entry[8 : 8 + length]
            else:
                (at,) = struct.unpack(endian + "I", entry[8:12])
                raw = data[at : at + length]
                if len(raw) < length:
                    continue
            tags[tag] = list(struct.unpack(endian + fmt * n, raw))
        ifds.append(tags)
        pending.extend(tags.get(330, []))
        next_at = offset + 2 + 12 * count
        if next_at + 4 <= len(data):
            pending.append(struct.unpack(endian + "I", data[next_at : next_at + 4])[0])
    return ifds


# ------------------------------------------------------------------ EXIF


def read_exif(source: bytes | str | os.PathLike[str], filename: str | None = None) -> dict[str, Any]:
    """Photo metadata from EXIF: JPEG, HEIC/AVIF, PNG/WebP, TIFF and TIFF-based RAW (DNG, NEF…).

    Keys (None when absent or unreadable): taken_at (ISO 8601, with the UTC offset when the file
    records one), taken_ts (epoch seconds; a date without an offset is taken as UTC), camera_make,
    camera_model, lens, exposure_time (s), f_number, iso, focal_length (mm), gps_lat, gps_lon
    (signed degrees; 0/0 is treated as missing), orientation (1–8). Never raises.
    """
    result: dict[str, Any] = dict.fromkeys(EXIF_KEYS)
    try:
        exif = _load_exif(source, filename)
    except Exception:
        return result
    if exif is None:
        return result
    for key, reader in _EXIF_READERS.items():
        try:
            result[key] = reader(exif)
        except Exception:
            result[key] = None
    try:
        result["taken_at"], result["taken_ts"] = _taken(exif)
    except Exception:
        pass
    try:
        result["gps_lat"], result["gps_lon"] = _gps(exif)
    except Exception:
        pass
    return result


def _load_exif(source: bytes | str | os.PathLike[str], filename: str | None) -> Image.Exif | None:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        data = Path(source).read_bytes()
    name = filename or ("" if isinstance(source, (bytes, bytearray, memoryview)) else Path(source).name)
    if not data:
        return None
    if data.startswith(_TIFF_SIGNATURES):
        # TIFF-based RAWs often have an IFD0 Pillow cannot open as a picture; their tags still parse.
        exif = Image.Exif()
        exif.load(data)
        return exif
    kind = sniff_format(data[:64], name)
    if kind is None or kind == "raw":
        return None
    with Image.open(io.BytesIO(data), formats=_PILLOW_FORMATS[kind]) as img:
        return img.getexif()


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


def _exif_value(exif: Image.Exif, tag: int) -> Any:
    """A tag from the Exif IFD, else from IFD0 (TIFF/EP and DNG put some there)."""
    value = exif.get_ifd(0x8769).get(tag)
    return value if value is not None else exif.get(tag)


def _orientation(exif: Image.Exif) -> int | None:
    value = exif.get(0x0112)
    if isinstance(value, (tuple, list)):
        value = value[0] if value else None
    return int(value) if value is not None and 1 <= int(value) <= 8 else None


def _positive(value: Any) -> float | None:
    number = _number(value)
    return number if number is not None and number > 0 else None


def _iso(exif: Image.Exif) -> int | None:
    number = _number(_exif_value(exif, 0x8827))
    return int(number) if number is not None and number > 0 else None


_EXIF_READERS = {
    "camera_make": lambda exif: _text(exif.get(0x010F)),
    "camera_model": lambda exif: _text(exif.get(0x0110)),
    "lens": lambda exif: _text(_exif_value(exif, 0xA434)),
    "exposure_time": lambda exif: _positive(_exif_value(exif, 0x829A)),
    "f_number": lambda exif: _positive(_exif_value(exif, 0x829D)),
    "iso": _iso,
    "focal_length": lambda exif: _positive(_exif_value(exif, 0x920A)),
    "orientation": _orientation,
}


def _taken(exif: Image.Exif) -> tuple[str | None, float | None]:
    for tag, offset_tag, subsec_tag in (
        (0x9003, 0x9011, 0x9291),
        (0x9004, 0x9012, 0x9292),
        (0x0132, 0x9010, 0x9290),
    ):
        text = _text(_exif_value(exif, tag))
        if not text:
            continue
        try:
            stamp = datetime.strptime(text[:19].replace("-", ":").replace("T", " "), "%Y:%m:%d %H:%M:%S")
        except ValueError:
            continue
        subsec = _text(_exif_value(exif, subsec_tag))
        if subsec and subsec.isdigit():
            stamp = stamp.replace(microsecond=int(subsec[:6].ljust(6, "0")))
        offset = _text(_exif_value(exif, offset_tag))
        aware = stamp.replace(tzinfo=_utc_offset(offset) or timezone.utc)
        return (aware.isoformat() if _utc_offset(offset) else stamp.isoformat()), aware.timestamp()
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


def _gps(exif: Image.Exif) -> tuple[float | None, float | None]:
    gps = exif.get_ifd(0x8825)
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
