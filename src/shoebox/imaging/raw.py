"""Camera RAW through LibRaw (rawpy): the embedded preview when it is big enough, else the
Bayer sensor binned to the size asked for (`binned_sensor`) or a half-size demosaic, never a
full demosaic; and the checks that catch RAWs whose sensor data is missing, which LibRaw may
"decode" to garbage without an error."""

from __future__ import annotations

import io
import struct
from typing import Any

import numpy as np
import rawpy
from PIL import Image

from shoebox.imaging.decoded import DecodedImage, finish, orientation_of, too_large, upright_size
from shoebox.imaging.formats import TIFF_SIGNATURES
from shoebox.imaging.pillow import draft_towards
from shoebox.imaging.renditions import THUMBNAIL_SIZE
from shoebox.protocol import ErrorCode, ShoeboxError

# A RAW's embedded preview is used for renditions when it can at least make a thumbnail; tinier
# ones (old cameras' 160x120 thumbnails) give way to a half-size demosaic.
RENDITION_MIN_SIDE = THUMBNAIL_SIZE

# LibRaw's `flip` (dcraw's code) → the EXIF orientation it came from.
_FLIP_TO_ORIENTATION = {0: 1, 1: 2, 2: 4, 3: 3, 4: 5, 5: 8, 6: 6, 7: 7}
# PhotometricInterpretation of sensor data: CFA (TIFF/EP, DNG) and LinearRaw (DNG).
_RAW_PHOTOMETRICS = (32803, 34892)
_DNG_VERSION = 50706


def raw_error(filename: str, message: str) -> ShoeboxError:
    return ShoeboxError(ErrorCode.DECODING_RAW, f"{filename or 'RAW file'}: {message}")


def decode_raw(data: bytes, filename: str, *, min_side: int | None, max_pixels: int) -> DecodedImage:
    check_raw_structure(data, filename)
    try:
        raw = rawpy.imread(io.BytesIO(data))
    except Exception as exc:
        raise raw_error(filename, f"LibRaw cannot read it: {_libraw_message(exc)}") from exc
    with raw:
        sizes = raw.sizes
        if sizes.raw_width * sizes.raw_height > max_pixels:
            raise too_large(filename, sizes.raw_width, sizes.raw_height, max_pixels)
        orientation = _FLIP_TO_ORIENTATION.get(sizes.flip, 1)
        width, height = upright_size(sizes.width, sizes.height, orientation)
        if width <= 0 or height <= 0:
            raise raw_error(filename, "LibRaw found no image in it")
        preview = _preview(raw, min_side, orientation, max_pixels)
        if preview is not None:
            return DecodedImage(finish(preview[0], preview[1], min_side), width, height)
        try:
            check_raw_not_blank(raw.raw_image_visible, filename)
            small = binned_sensor(raw, min_side) if min_side else None
            if small is not None:  # still in the sensor's orientation
                return DecodedImage(finish(small, orientation, min_side), width, height)
            # One channel for a monochrome sensor (Leica Monochrom, achromatic backs), else three.
            demosaiced = _bitmap(raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8))
        except ShoeboxError:
            raise
        except Exception as exc:
            raise raw_error(filename, f"LibRaw cannot decode its image data: {_libraw_message(exc)}") from exc
    # LibRaw has already applied `flip` to the demosaiced image.
    return DecodedImage(finish(demosaiced, 1, min_side), width, height)


# Rec. 709 transfer curve, LibRaw's default output gamma (2.222, slope 4.5).
_GAMMA_LINEAR_BELOW, _GAMMA_SLOPE, _GAMMA_POWER = 0.018, 4.5, 0.45
# LibRaw's default auto-brightening: this share of the pixels ends up at or above white.
_AUTO_BRIGHT_QUANTILE = 0.999


def binned_sensor(raw: Any, min_side: int) -> Image.Image | None:
    """A small RGB rendition straight from a 2×2 Bayer sensor: each output pixel averages
    (2f)×(2f) sensor pixels (f as large as keeps the short side ≥ `min_side`), then black level,
    camera white balance, the camera→sRGB matrix, auto-brightening and gamma as LibRaw applies
    them. None for other sensors (X-Trans, Foveon, 4-colour, linear DNG): they take LibRaw's
    half-size demosaic.

    Written by hand because LibRaw's smallest output is half size: a 12 MP half-size demosaic
    costs ≈ 140 ms here, this ≈ 50 ms (mostly the unpack), for a picture the model shrinks to
    224 px anyway. Mean difference from LibRaw's half-size output, resized alike: ≈ 2/255.
    """
    pattern = raw.raw_pattern
    if (
        raw.raw_type != rawpy.RawType.Flat
        or raw.num_colors != 3
        or pattern is None
        or pattern.shape != (2, 2)
        or sorted(int(c) for c in pattern.flat) != [0, 1, 2, 3]
    ):
        return None
    img = raw.raw_image_visible
    h, w = img.shape
    f = min(h, w) // 2 // min_side
    if f < 1:
        return None
    rows, cols = h // (2 * f), w // (2 * f)
    # Sum f×f Bayer cells in two cheap steps (rows, then columns): (rows, 2, cols, 2) sums.
    cells = (
        img[: rows * 2 * f, : cols * 2 * f]
        .reshape(rows, f, 2, cols * 2 * f)
        .sum(axis=1, dtype=np.uint32)
        .reshape(rows, 2, cols, f, 2)
        .sum(axis=3)
    )
    black = np.asarray(raw.black_level_per_channel, np.float32)
    rgb = np.zeros((rows, cols, 3), np.float32)
    for dy in range(2):
        for dx in range(2):
            c = int(pattern[dy, dx])  # LibRaw colour index: 0 R, 1 G, 2 B, 3 second G
            rgb[..., (0, 1, 2, 1)[c]] += cells[:, dy, :, dx] / (f * f) - black[c]
    rgb[..., 1] /= 2
    wb = np.asarray(raw.camera_whitebalance[:3], np.float32)
    if not (wb > 0).all():
        wb = np.asarray(raw.daylight_whitebalance[:3], np.float32)
    wb = wb / wb[1] if (wb > 0).all() else np.ones(3, np.float32)
    rgb *= wb / max(float(raw.white_level) - float(black.mean()), 1.0)
    matrix = np.asarray(raw.color_matrix, np.float32)[:, :3]
    if np.abs(matrix).sum() > 0:
        rgb = rgb @ matrix.T
    np.clip(rgb, 0.0, 1.0, out=rgb)
    white = float(np.quantile(rgb, _AUTO_BRIGHT_QUANTILE))
    if white > 0:
        rgb = np.clip(rgb / white, 0.0, 1.0)
    curve = np.where(
        rgb < _GAMMA_LINEAR_BELOW,
        _GAMMA_SLOPE * rgb,
        (1 + 0.099) * np.power(rgb, _GAMMA_POWER) - 0.099,
    )
    return Image.fromarray((np.clip(curve, 0.0, 1.0) * 255 + 0.5).astype(np.uint8))


def _libraw_message(exc: Exception) -> str:
    text = str(exc.args[0] if exc.args else exc)
    if text.startswith("b'") or text.startswith('b"'):
        text = text[2:-1]
    return text or type(exc).__name__


def _preview(
    raw: Any, min_side: int | None, flip_orientation: int, max_pixels: int
) -> tuple[Image.Image, int] | None:
    """The embedded preview (loaded, with the orientation still to apply) if its short side is at
    least `min_side` (RENDITION_MIN_SIDE for a full decode); None sends the caller to the sensor data.

    LibRaw hands back either a JPEG (drafted down towards `min_side`) or an uncompressed bitmap
    (8 or 16 bits, 1 or 3 channels), both stored the way the sensor is: `flip` applies to them.
    """
    need = min_side or RENDITION_MIN_SIDE
    try:
        thumb = raw.extract_thumb()
    except Exception:
        return None  # no preview, or one LibRaw will not unpack (its data lies past the end of the file)
    try:
        if thumb.format == rawpy.ThumbFormat.JPEG:
            img = Image.open(io.BytesIO(thumb.data), formats=["JPEG", "MPO"])
            # A camera's preview is stored sideways like its raw; only its own EXIF may say otherwise.
            own = orientation_of(img)
            orientation = own if own != 1 else flip_orientation
        elif thumb.format == rawpy.ThumbFormat.BITMAP:
            img = _bitmap(np.asarray(thumb.data))
            orientation = flip_orientation
        else:
            return None
        width, height = img.size
        if min(width, height) < need or width * height > max_pixels:
            return None
        if min_side:
            draft_towards(img, min_side)
        img.load()
        return img, orientation
    except Exception:
        return None  # a broken preview is not a broken RAW: fall back to the sensor data


def _bitmap(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.dtype == np.uint16:
        array = array >> 8
    return Image.fromarray(array.astype(np.uint8, copy=False))


def check_raw_not_blank(raw_image: np.ndarray, filename: str) -> None:
    """A sensor never records one value everywhere: a uniform raw means LibRaw read no data.

    That is what LibRaw returns for files whose compressed image data was stripped or zeroed
    (it "decodes" them without an error).
    """
    if raw_image.size == 0:
        raise raw_error(filename, "RAW image data missing: LibRaw found no pixels")
    sample = raw_image[::17, ::13]
    if sample.min() != sample.max():
        return
    low, high = int(raw_image.min()), int(raw_image.max())
    if low == high:
        raise raw_error(
            filename,
            f"RAW image data missing or blank: every sensor value is {low}, the image data was stripped",
        )


def is_tiff_raw(data: bytes) -> bool:
    """A TIFF that holds sensor data (CFA or LinearRaw) or says it is a DNG, whatever its name:
    older cameras wrote TIFF-based RAWs as .tif. Reads headers only."""
    if not data.startswith(TIFF_SIGNATURES):
        return False
    try:
        ifds = tiff_ifds(data)
    except (struct.error, ValueError, IndexError):
        return False
    return any(_DNG_VERSION in tags or _first(tags, 262, 0) in _RAW_PHOTOMETRICS for tags in ifds)


def check_raw_structure(data: bytes, filename: str) -> None:
    """Refuse TIFF-based RAWs (DNG, NEF, CR2, ARW, PEF…) whose sensor data is not in the file.

    The raw IFDs (PhotometricInterpretation CFA or LinearRaw) say where their strips or tiles
    lie and how long they are. Data past the end of the file means a truncated copy or stripped
    image data; LibRaw may "decode" such a file to garbage without an error. For DNG's two
    lossless encodings we also know a floor: uncompressed data is exactly width × height ×
    samples × bits / 8, and lossless JPEG spends at least one bit on every sample (exiftool's
    stripped sample keeps a 22-byte stub for 8 MP). Only headers are read: this costs microseconds.
    """
    if not data.startswith(TIFF_SIGNATURES):
        return
    try:
        ifds = tiff_ifds(data)
    except (struct.error, ValueError, IndexError):
        return  # not a TIFF we can walk: LibRaw decides
    size = len(data)
    # Only DNG's specification ties the byte counts to the pixel format; other makers' TIFFs vary.
    is_dng = any(_DNG_VERSION in tags for tags in ifds)
    for tags in ifds:
        if _first(tags, 262, 0) not in _RAW_PHOTOMETRICS:
            continue
        offsets = tags.get(273) or tags.get(324) or []
        counts = tags.get(279) or tags.get(325) or []
        if not offsets or len(offsets) != len(counts):
            continue
        end = max(o + c for o, c in zip(offsets, counts, strict=True))
        if end > size:
            raise raw_error(
                filename,
                f"RAW image data missing or truncated: the file is {size:,} bytes, its image data ends at {end:,}",
            )
        if not is_dng:
            continue
        width, height = _first(tags, 256, 0), _first(tags, 257, 0)
        samples = _first(tags, 277, 1)
        bits = _first(tags, 258, 16)
        compression = _first(tags, 259, 1)
        if compression == 1:
            floor = width * height * samples * bits // 8
        elif compression == 7:
            floor = width * height * samples // 8
        else:
            continue
        stored = sum(counts)
        if stored < floor * 0.99:
            raise raw_error(
                filename,
                f"RAW image data missing or truncated: {stored:,} bytes cannot hold {width}x{height} pixels "
                f"(at least {floor:,} bytes needed)",
            )


def _first(tags: dict[int, list[int]], tag: int, default: int) -> int:
    """A tag's first value; `default` when it is absent or holds no value (a count of 0)."""
    values = tags.get(tag)
    return values[0] if values else default


_TIFF_TYPE_FORMATS = {1: "B", 3: "H", 4: "I", 13: "I", 16: "Q"}
_TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8}


def tiff_ifds(data: bytes, limit: int = 64) -> list[dict[int, list[int]]]:
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
