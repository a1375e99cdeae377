"""Generated photos for tests, benchmarks and demos: every format Shoebox reads, and broken files.

Photos are synthetic but photo-like (sky gradient, hills, sun, shapes, texture and sensor
noise), so JPEG sizes, decode times and thumbnails behave like real ones. DNGs are real
CFA raws (12-bit RGGB Bayer, linear, with colour matrix and white balance) that LibRaw
demosaics, with each preview shape cameras write (JPEG, RGB bitmap, a tiny one, none) or a
broken one, and also as a non-DNG TIFF-based RAW. CR3, RAF, ORF and RW2 containers carry
EXIF only, for metadata tests.

Needs numpy and Pillow; `write_heic` needs pillow-heif.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageOps
from PIL.TiffImagePlugin import IFDRational

PathLike = str | Path

EXIF_IFD = 0x8769
GPS_IFD = 0x8825

# The camera's white balance gains as written by write_dng: a sensor sees green strongest.
DNG_WB_GAINS = (2.0, 1.0, 1.6)
DNG_BLACK_LEVEL = 256
DNG_WHITE_LEVEL = 4095

# XYZ (D65) → linear sRGB, so a DNG "camera" whose native space is linear sRGB round-trips.
_XYZ_TO_SRGB = np.array(
    [
        [3.2404542, -1.5371385, -0.4985314],
        [-0.9692660, 1.8760108, 0.0415560],
        [0.0556434, -0.2040259, 1.0572252],
    ]
)


# ------------------------------------------------------------------ synthetic photos


def synthetic_photo(width: int, height: int, seed: int = 0) -> Image.Image:
    """A landscape-like RGB photo: sky gradient, hills, sun, shapes, texture and noise (never flat)."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]

    sky_top = rng.uniform([10, 40, 110], [90, 120, 200]).astype(np.float32)
    sky_low = rng.uniform([150, 170, 190], [250, 230, 245]).astype(np.float32)
    ground_near = rng.uniform([20, 40, 10], [90, 110, 50]).astype(np.float32)
    ground_far = rng.uniform([60, 90, 40], [150, 160, 110]).astype(np.float32)

    level = rng.uniform(0.45, 0.65)
    horizon = (
        level
        + 0.07 * np.sin(2 * np.pi * (x * rng.uniform(0.6, 1.8) + rng.uniform()))
        + 0.025 * np.sin(2 * np.pi * (x * rng.uniform(3, 7) + rng.uniform()))
    )
    sky_t = np.clip(y / np.maximum(horizon, 1e-3), 0, 1)[..., None]
    ground_t = np.clip((y - horizon) / np.maximum(1 - horizon, 1e-3), 0, 1)[..., None]
    sky = sky_top * (1 - sky_t) + sky_low * sky_t
    ground = ground_far * (1 - ground_t) + ground_near * ground_t
    arr = np.where((y < horizon)[..., None], sky, ground)

    # A sun with a soft glow, somewhere in the sky.
    cx, cy = rng.uniform(0.1, 0.9) * width, rng.uniform(0.05, 0.3) * height
    radius = rng.uniform(0.03, 0.07) * min(width, height)
    dist = np.sqrt((x * (width - 1) - cx) ** 2 + (y * (height - 1) - cy) ** 2)
    glow = np.clip(1.0 - (dist - radius) / (radius * 4), 0, 1) ** 2
    arr = arr + glow[..., None] * np.array([90, 70, 30], dtype=np.float32)
    arr = np.where((dist < radius)[..., None], np.array([255, 245, 210], dtype=np.float32), arr)

    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    unit = min(width, height)
    for _ in range(int(rng.integers(6, 14))):
        colour = tuple(int(c) for c in rng.integers(0, 200, 3))
        px, py = rng.uniform(0, width), rng.uniform(0.35, 1.0) * height
        size = rng.uniform(0.03, 0.15) * unit
        kind = rng.integers(0, 3)
        if kind == 0:  # tree-like: trunk and crown
            draw.rectangle([px - size * 0.08, py - size, px + size * 0.08, py], fill=(70, 45, 25))
            draw.ellipse([px - size * 0.5, py - size * 1.8, px + size * 0.5, py - size * 0.7], fill=colour)
        elif kind == 1:  # rock or building
            draw.rectangle([px - size, py - size * 0.8, px + size, py], fill=colour)
        else:
            points = [(px + rng.uniform(-size, size), py - rng.uniform(0, size * 1.5)) for _ in range(5)]
            draw.polygon(points, fill=colour)
    img = img.filter(ImageFilter.GaussianBlur(radius=max(0.5, unit / 900)))

    # Low-frequency mottling plus per-pixel sensor noise: real photos are never smooth.
    arr = np.asarray(img, dtype=np.float32)
    coarse = rng.standard_normal((height // 24 + 2, width // 24 + 2, 3), dtype=np.float32)
    coarse_img = Image.fromarray(np.clip(coarse * 40 + 128, 0, 255).astype(np.uint8)).resize(
        (width, height), Image.Resampling.BILINEAR
    )
    arr += (np.asarray(coarse_img, dtype=np.float32) - 128) * 0.25
    arr += rng.standard_normal((height, width, 1), dtype=np.float32) * 4.0
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def photo_from_file(path: PathLike, long_side: int, noise: float = 2.0, seed: int = 0) -> Image.Image:
    """A real photo, upright, scaled (up or down) to `long_side`, with a little sensor noise.

    Upscaled photos are too smooth to behave like camera files (JPEG sizes, RAW statistics);
    the noise brings that back. Benchmarks make 12 MP JPEG and DNG corpora this way.
    """
    with Image.open(path) as opened:
        img = ImageOps.exif_transpose(opened).convert("RGB")
    scale = long_side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    img = img.resize(size, Image.Resampling.BICUBIC)
    if noise > 0:
        rng = np.random.default_rng(seed)
        arr = np.asarray(img, dtype=np.float32)
        arr += rng.standard_normal((img.height, img.width, 1), dtype=np.float32) * noise
        img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    return img


# ------------------------------------------------------------------ EXIF


def _rational(value: float, precision: int = 10000) -> IFDRational:
    return IFDRational(round(value * precision), precision)


def _dms(value: float) -> tuple[IFDRational, IFDRational, IFDRational]:
    value = abs(value)
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = (value - degrees - minutes / 60) * 3600
    return IFDRational(degrees, 1), IFDRational(minutes, 1), _rational(seconds, 1000)


def _exif_datetime(value: datetime | str) -> str:
    return value.strftime("%Y:%m:%d %H:%M:%S") if isinstance(value, datetime) else value


def make_exif(fields: Mapping[str, Any]) -> Image.Exif:
    """EXIF from the keys `imaging.read_exif` returns (taken_at, camera_make, camera_model, lens,
    exposure_time, f_number, iso, focal_length, gps_lat, gps_lon, orientation), so values round-trip.
    `taken_at` is a datetime or an EXIF "YYYY:MM:DD HH:MM:SS" string."""
    exif = Image.Exif()
    if fields.get("camera_make") is not None:
        exif[0x010F] = str(fields["camera_make"])
    if fields.get("camera_model") is not None:
        exif[0x0110] = str(fields["camera_model"])
    if fields.get("orientation") is not None:
        exif[0x0112] = int(fields["orientation"])
    ifd = exif.get_ifd(EXIF_IFD)
    if fields.get("taken_at") is not None:
        stamp = _exif_datetime(fields["taken_at"])
        exif[0x0132] = stamp
        ifd[0x9003] = stamp
        ifd[0x9004] = stamp
    if fields.get("exposure_time") is not None:
        ifd[0x829A] = _rational(float(fields["exposure_time"]), 100000)
    if fields.get("f_number") is not None:
        ifd[0x829D] = _rational(float(fields["f_number"]), 100)
    if fields.get("iso") is not None:
        ifd[0x8827] = int(fields["iso"])
    if fields.get("focal_length") is not None:
        ifd[0x920A] = _rational(float(fields["focal_length"]), 100)
    if fields.get("lens") is not None:
        ifd[0xA434] = str(fields["lens"])
    if fields.get("gps_lat") is not None and fields.get("gps_lon") is not None:
        gps = exif.get_ifd(GPS_IFD)
        gps[0x0000] = b"\x02\x03\x00\x00"
        gps[0x0001] = "N" if fields["gps_lat"] >= 0 else "S"
        gps[0x0002] = _dms(float(fields["gps_lat"]))
        gps[0x0003] = "E" if fields["gps_lon"] >= 0 else "W"
        gps[0x0004] = _dms(float(fields["gps_lon"]))
    return exif


# ------------------------------------------------------------------ writers of good files


def jpeg_bytes(img: Image.Image, *, exif: Mapping[str, Any] | None = None, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    options: dict[str, Any] = {"quality": quality}
    if exif:
        options["exif"] = make_exif(exif).tobytes()
    img.convert("RGB").save(buffer, format="JPEG", **options)
    return buffer.getvalue()


def write_jpeg(
    path: PathLike, img: Image.Image, *, exif: Mapping[str, Any] | None = None, quality: int = 90
) -> Path:
    """A JPEG, optionally with EXIF (keys as `make_exif` takes: date, make/model, GPS, orientation…)."""
    path = Path(path)
    path.write_bytes(jpeg_bytes(img, exif=exif, quality=quality))
    return path


def write_png(path: PathLike, img: Image.Image) -> Path:
    path = Path(path)
    img.save(path, format="PNG")
    return path


def write_webp(path: PathLike, img: Image.Image, quality: int = 85) -> Path:
    path = Path(path)
    img.convert("RGB").save(path, format="WEBP", quality=quality)
    return path


def write_heic(
    path: PathLike,
    img: Image.Image,
    *,
    exif: Mapping[str, Any] | None = None,
    quality: int = 80,
    thumbnail: int | None = None,
) -> Path:
    """A HEIC; `thumbnail` embeds a scaled copy with that long side, as phones do (iPhones: 320)."""
    import pillow_heif

    path = Path(path)
    heif = pillow_heif.from_pillow(img.convert("RGB"))
    # x265's default preset spends ~2 s on a VGA picture; tests write many of them.
    options: dict[str, Any] = {"quality": quality, "enc_params": {"preset": "ultrafast"}}
    if thumbnail:
        options["thumbnails"] = [thumbnail]
    if exif:
        options["exif"] = make_exif(exif).tobytes()
    heif.save(path, **options)
    return path


# The preview shapes write_dng makes: what cameras embed, and how previews go wrong.
DNG_PREVIEWS = ("jpeg", "bitmap", "tiny", "broken", "broken-bitmap", "none")
TINY_PREVIEW_LONG_SIDE = 160  # old cameras' 160x120 thumbnail, below any model's input


def write_dng(
    path: PathLike,
    rgb: np.ndarray | Image.Image,
    *,
    preview: bool | str = True,
    preview_long_side: int = 1024,
    preview_image: Image.Image | None = None,
    make: str = "Shoebox",
    model: str = "Synthetic Bayer",
    taken_at: datetime | str | None = None,
    orientation: int = 1,
    lossless_jpeg: bool = False,
    dng: bool = True,
) -> Path:
    """A real CFA DNG of `rgb` (HxWx3 uint8/uint16 sRGB): linear 12-bit RGGB Bayer.

    The raw is uncompressed, or with `lossless_jpeg` compressed as most cameras' DNGs are
    (Compression 7, ITU T.81 lossless, predictor 1; slow in Python: keep such images small).

    `preview` is one of DNG_PREVIEWS (True is "jpeg", False "none"):

    - "jpeg": IFD0 is a JPEG preview (NewSubFileType 1, long side `preview_long_side`) and the raw
      sits in a SubIFD, as cameras and Adobe's converter write them; LibRaw's extract_thumb
      returns that JPEG.
    - "bitmap": the same with an uncompressed 8-bit RGB strip (extract_thumb gives a BITMAP).
    - "tiny": a JPEG preview of TINY_PREVIEW_LONG_SIDE (160x120 for 4:3), whatever the long side.
    - "broken": a JPEG preview whose headers are intact but whose scan is garbage.
    - "broken-bitmap": a bitmap preview whose strip points past the end of the file.
    - "none": IFD0 is the raw itself and the file has no thumbnail at all.

    `preview_image` embeds another picture as the preview (tests use it to tell which was
    decoded). Odd widths/heights lose their last column/row (the Bayer pattern needs 2x2 cells).
    `dng=False` leaves out DNGVersion (and UniqueCameraModel): a TIFF/EP-like CFA file, which
    LibRaw reads as a generic TIFF-based RAW, as it reads NEF, PEF or old Kodak files (it still
    honours the colour, level and white-balance tags); name it .nef, .pef… or .tif.
    Written with a small TIFF writer of our own: tifffile cannot store a ready-made JPEG strip
    without imagecodecs. A 12 MP file takes a few tenths of a second.
    """
    path = Path(path)
    path.write_bytes(
        _dng_bytes(
            rgb,
            preview=preview,
            preview_long_side=preview_long_side,
            preview_image=preview_image,
            make=make,
            model=model,
            taken_at=taken_at,
            orientation=orientation,
            lossless_jpeg=lossless_jpeg,
            dng=dng,
        )
    )
    return path


def _preview_kind(preview: bool | str) -> str:
    kind = ("jpeg" if preview else "none") if isinstance(preview, bool) else preview
    if kind not in DNG_PREVIEWS:
        raise ValueError(f"preview must be a bool or one of {DNG_PREVIEWS}, got {preview!r}")
    return kind


def _preview_ifd(kind: str, small: Image.Image) -> tuple[dict[int, tuple[int, Any]], bytes]:
    """The tags and strip of a preview IFD0 (offsets are filled in at layout)."""
    if kind in ("bitmap", "broken-bitmap"):
        strip = np.asarray(small, dtype=np.uint8).tobytes()
        compression, photometric = 1, 2  # uncompressed RGB
    else:
        strip = corrupt_jpeg_bytes(small) if kind == "broken" else jpeg_bytes(small, quality=88)
        compression, photometric = 7, 6  # JPEG in YCbCr, as DNG previews are
    tags = {
        254: (_LONG, [1]),  # NewSubFileType: reduced-resolution preview
        256: (_LONG, [small.width]),
        257: (_LONG, [small.height]),
        258: (_SHORT, [8, 8, 8]),
        259: (_SHORT, [compression]),
        262: (_SHORT, [photometric]),
        277: (_SHORT, [3]),
        278: (_LONG, [small.height]),
        279: (_LONG, [len(strip)]),
        284: (_SHORT, [1]),
    }
    return tags, strip


def _dng_bytes(
    rgb: np.ndarray | Image.Image,
    *,
    preview: bool | str,
    preview_long_side: int,
    preview_image: Image.Image | None,
    make: str,
    model: str,
    taken_at: datetime | str | None,
    orientation: int,
    lossless_jpeg: bool,
    dng: bool = True,
    raw_stub: int | None = None,
) -> bytes:
    """write_dng's file; `raw_stub` keeps only that many bytes of the raw data (and says so)."""
    kind = _preview_kind(preview)
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"rgb must be HxWx3, got shape {arr.shape}")
    arr = arr[: arr.shape[0] // 2 * 2, : arr.shape[1] // 2 * 2]
    height, width = arr.shape[:2]
    cfa = _bayer(arr)

    def rationals(values: Any, denominator: int = 10000) -> list[tuple[int, int]]:
        return [(round(float(value) * denominator), denominator) for value in values]

    neutral = [1.0 / g for g in DNG_WB_GAINS]
    color_matrix = np.diag(neutral) @ _XYZ_TO_SRGB
    main_tags: dict[int, tuple[int, Any]] = {
        271: (_ASCII, make),
        272: (_ASCII, model),
        274: (_SHORT, [int(orientation)]),
        305: (_ASCII, "shoebox"),
        50721: (_SRATIONAL, rationals(color_matrix.ravel())),  # ColorMatrix1
        50728: (_RATIONAL, rationals(neutral)),  # AsShotNeutral
        50778: (_SHORT, [21]),  # CalibrationIlluminant1 = D65
    }
    if dng:
        main_tags[50706] = (_BYTE, [1, 4, 0, 0])  # DNGVersion
        main_tags[50707] = (_BYTE, [1, 1, 0, 0])  # DNGBackwardVersion
        main_tags[50708] = (_ASCII, f"{make} {model}")  # UniqueCameraModel
    if taken_at is not None:
        stamp = _exif_datetime(taken_at)
        # TIFF/EP allows DateTimeOriginal in IFD0; LibRaw and Pillow both read it there.
        main_tags[306] = (_ASCII, stamp)
        main_tags[36867] = (_ASCII, stamp)
    cfa_tags: dict[int, tuple[int, Any]] = {
        254: (_LONG, [0]),  # NewSubFileType: the main image
        256: (_LONG, [width]),
        257: (_LONG, [height]),
        258: (_SHORT, [16]),
        259: (_SHORT, [1]),
        262: (_SHORT, [32803]),  # PhotometricInterpretation: CFA
        277: (_SHORT, [1]),
        278: (_LONG, [height]),
        284: (_SHORT, [1]),
        33421: (_SHORT, [2, 2]),  # CFARepeatPatternDim
        33422: (_BYTE, [0, 1, 1, 2]),  # CFAPattern RGGB
        50710: (_BYTE, [0, 1, 2]),  # CFAPlaneColor
        50711: (_SHORT, [1]),  # CFALayout rectangular
        50713: (_SHORT, [1, 1]),  # BlackLevelRepeatDim
        50714: (_LONG, [DNG_BLACK_LEVEL]),
        50717: (_LONG, [DNG_WHITE_LEVEL]),
    }

    if lossless_jpeg:
        raw_data = _lossless_jpeg(cfa, precision=16)
        cfa_tags[259] = (_SHORT, [7])
    else:
        raw_data = cfa.astype("<u2").tobytes()
    if raw_stub is not None:
        raw_data = raw_data[:raw_stub]
    cfa_tags[279] = (_LONG, [len(raw_data)])
    blobs = [raw_data]
    if kind != "none":
        if preview_image is not None:
            small = preview_image.convert("RGB")
        else:
            small = Image.fromarray((arr >> 8).astype(np.uint8) if arr.dtype == np.uint16 else arr)
        long_side = TINY_PREVIEW_LONG_SIDE if kind == "tiny" else preview_long_side
        if max(small.size) > long_side:
            small.thumbnail((long_side, long_side), Image.Resampling.LANCZOS)
        preview_tags, strip = _preview_ifd(kind, small)
        ifd0_tags = {**main_tags, **preview_tags}
        blobs.insert(0, strip)
        ifds = [ifd0_tags, cfa_tags]
    else:
        cfa_tags.update(main_tags)
        ifds = [cfa_tags]

    # Headers first and the raw data last, as cameras lay files out: cutting the file short
    # loses pixels, never the headers that describe them.
    def layout() -> tuple[list[int], list[int]]:
        ifd_offsets, at = [], 8
        for tags in ifds:
            ifd_offsets.append(at)
            at += len(_ifd_bytes(tags, at))
            at += at % 2
        blob_offsets = []
        for blob in blobs:
            blob_offsets.append(at)
            at += len(blob) + len(blob) % 2
        return ifd_offsets, blob_offsets

    for _ in range(2):  # offsets are values inside the IFDs, but never change their size
        ifd_offsets, blob_offsets = layout()
        cfa_tags[273] = (_LONG, [blob_offsets[-1]])
        if kind != "none":
            ifd0_tags[273] = (_LONG, [blob_offsets[0]])
            ifd0_tags[330] = (_LONG, [ifd_offsets[1]])  # SubIFDs
    if kind == "broken-bitmap":
        # A strip that starts inside the file and runs past its end (a preview cut short).
        ifd0_tags[273] = (_LONG, [blob_offsets[-1] + len(raw_data) - len(blobs[0]) // 2])
    out = bytearray(b"II*\x00" + struct.pack("<I", ifd_offsets[0]))
    for tags, offset in zip(ifds, ifd_offsets, strict=True):
        out += b"\x00" * (offset - len(out)) + _ifd_bytes(tags, offset)
    for blob, offset in zip(blobs, blob_offsets, strict=True):
        out += b"\x00" * (offset - len(out)) + blob
    return bytes(out)


def _bayer(arr: np.ndarray) -> np.ndarray:
    """What an RGGB sensor with a green-heavy response records of an sRGB picture: HxW uint16.

    sRGB → linear light → white-balance gain → 12-bit levels, looked up per value (a table of
    256 or 65536 entries per channel) and only for the colour each photosite sees.
    """
    levels = 65536 if arr.dtype == np.uint16 else 256
    encoded = np.arange(levels, dtype=np.float32) / np.float32(levels - 1)
    linear = np.where(encoded <= 0.04045, encoded / 12.92, ((encoded + 0.055) / 1.055) ** 2.4)
    span = DNG_WHITE_LEVEL - DNG_BLACK_LEVEL
    cfa = np.empty(arr.shape[:2], dtype=np.uint16)
    for (dy, dx), channel in (((0, 0), 0), ((0, 1), 1), ((1, 0), 1), ((1, 1), 2)):
        raw = DNG_BLACK_LEVEL + linear / np.float32(DNG_WB_GAINS[channel]) * span
        table = np.clip(np.rint(raw), 0, DNG_WHITE_LEVEL).astype(np.uint16)
        cfa[dy::2, dx::2] = table[arr[dy::2, dx::2, channel]]
    return cfa


def _lossless_jpeg(samples: np.ndarray, precision: int) -> bytes:
    """One-component lossless JPEG (SOF3, predictor 1) of a 2-D uint16 array.

    Every difference category gets a 5-bit Huffman code: far from optimal, always valid, and
    simple enough to vectorise.
    """
    height, width = samples.shape
    values = samples.astype(np.int32)
    predicted = np.empty_like(values)
    predicted[:, 1:] = values[:, :-1]  # left neighbour
    predicted[1:, 0] = values[:-1, 0]  # first column: the sample above
    predicted[0, 0] = 1 << (precision - 1)
    diff = (values - predicted).ravel()
    diff = np.where(diff > 32768, diff - 65536, np.where(diff < -32767, diff + 65536, diff))
    magnitude = np.abs(diff)
    category = np.zeros_like(magnitude)
    nonzero = magnitude > 0
    category[nonzero] = np.floor(np.log2(magnitude[nonzero])).astype(np.int32) + 1
    extra = np.where(diff >= 0, diff, diff - 1) & ((1 << category) - 1)
    extra = np.where(category == 16, 0, extra)  # category 16 (diff 32768) carries no extra bits
    extra_bits = np.where(category == 16, 0, category)
    lengths = (5 + extra_bits).astype(np.int64)
    codes = (category.astype(np.int64) << extra_bits) | extra.astype(np.int64)

    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    total = int(lengths.sum())
    bits = np.ones((total + 7) // 8 * 8, dtype=np.uint8)  # the tail pads with 1-bits, as JPEG wants
    for k in range(int(lengths.max())):
        has = lengths > k
        bits[starts[has] + k] = (codes[has] >> (lengths[has] - 1 - k)) & 1
    entropy = np.packbits(bits).tobytes().replace(b"\xff", b"\xff\x00")

    def segment(marker: int, body: bytes) -> bytes:
        return struct.pack(">HH", marker, len(body) + 2) + body

    sof = struct.pack(">BHHB", precision, height, width, 1) + b"\x01\x11\x00"
    counts = bytes([0, 0, 0, 0, 17] + [0] * 11)
    dht = b"\x00" + counts + bytes(range(17))
    sos = b"\x01\x01\x00" + b"\x01\x00\x00"  # one component, table 0; predictor 1, Se 0, Ah/Al 0
    return (
        b"\xff\xd8"
        + segment(0xFFC3, sof)
        + segment(0xFFC4, dht)
        + segment(0xFFDA, sos)
        + entropy
        + b"\xff\xd9"
    )


_BYTE, _ASCII, _SHORT, _LONG, _RATIONAL, _SRATIONAL = 1, 2, 3, 4, 5, 10
_FORMATS = {_BYTE: "B", _SHORT: "H", _LONG: "I", _RATIONAL: "I", _SRATIONAL: "i"}


def _ifd_bytes(tags: dict[int, tuple[int, Any]], offset: int) -> bytes:
    """A little-endian TIFF IFD placed at `offset`, entries sorted by tag, no next IFD."""
    extra_at = offset + 2 + 12 * len(tags) + 4
    entries, extra = bytearray(), bytearray()
    for tag in sorted(tags):
        kind, value = tags[tag]
        if kind == _ASCII:
            blob = value.encode() + b"\x00"
            count = len(blob)
        else:
            flat = [v for item in value for v in (item if isinstance(item, tuple) else (item,))]
            blob, count = struct.pack("<" + _FORMATS[kind] * len(flat), *flat), len(value)
        if len(blob) <= 4:
            field = blob.ljust(4, b"\x00")
        else:
            field = struct.pack("<I", extra_at + len(extra))
            extra += blob + (b"\x00" if len(blob) % 2 else b"")
        entries += struct.pack("<HHI", tag, kind, count) + field
    return struct.pack("<H", len(tags)) + bytes(entries) + b"\x00\x00\x00\x00" + bytes(extra)


# ------------------------------------------------------------------ RAW containers with EXIF only

EXIF_ONLY_RAW_SUFFIXES = (".cr3", ".raf", ".orf", ".rw2")
# The uuid box of Canon's CR3 that holds the metadata boxes CMT1 (IFD0), CMT2 (Exif), CMT4 (GPS).
CR3_CANON_UUID = bytes.fromhex("85c0b687820f11e08111f4ce462b6a48")


def write_exif_only_raw(path: PathLike, exif: Mapping[str, Any]) -> Path:
    """A camera RAW container of the kind the suffix names (EXIF_ONLY_RAW_SUFFIXES) holding `exif`
    (keys as `make_exif` takes) where that maker puts it, and no image data at all: for testing
    metadata reading (LibRaw reads none of them as a picture).

    - .cr3: ISO-BMFF; ftyp "crx ", moov → Canon's uuid box → CMT1, CMT2, CMT4 TIFF blobs.
    - .raf: Fujifilm's header, whose offset at byte 84 points to a JPEG carrying the EXIF.
    - .orf: a TIFF with Olympus's magic "IIRO", its Exif and GPS IFDs where TIFF has them.
    - .rw2: a TIFF with Panasonic's magic "IIU\\0": make, model and orientation in IFD0, the rest
      in the EXIF of the JpgFromRaw (tag 0x2E) JPEG, as Panasonic cameras write it.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    tags = make_exif(exif)
    if suffix == ".cr3":
        data = _cr3_exif_only(tags)
    elif suffix == ".raf":
        data = _raf_exif_only(
            jpeg_bytes(synthetic_photo(160, 120), exif=exif), str(exif.get("camera_model", ""))
        )
    elif suffix == ".orf":
        data = b"IIRO" + _tiff_blob(tags)[4:]
    elif suffix == ".rw2":
        ifd0 = {**dict(tags), 0x002E: jpeg_bytes(synthetic_photo(160, 120), exif=exif)}
        data = b"IIU\x00" + _tiff_blob(ifd0)[4:]
    else:
        raise ValueError(f"write_exif_only_raw writes {EXIF_ONLY_RAW_SUFFIXES}, not {suffix!r}")
    path.write_bytes(data)
    return path


def _tiff_blob(tags: Image.Exif | Mapping[int, Any]) -> bytes:
    """A little-endian TIFF (header, IFD0 and any Exif/GPS IFDs) of the tags, as Pillow writes it."""
    exif = tags if isinstance(tags, Image.Exif) else Image.Exif()
    if exif is not tags:
        for tag, value in tags.items():
            exif[tag] = value
    exif.endian = "<"
    return exif.tobytes()[len(b"Exif\x00\x00") :]


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def _cr3_exif_only(tags: Image.Exif) -> bytes:
    metadata = (
        _box(b"CNCV", b"CanonCR3_001/00.10.00/00.00.00")
        + _box(b"CMT1", _tiff_blob(dict(tags)))
        + _box(b"CMT2", _tiff_blob(tags.get_ifd(EXIF_IFD)))
        + _box(b"CMT4", _tiff_blob(tags.get_ifd(GPS_IFD)))
    )
    ftyp = _box(b"ftyp", b"crx " + struct.pack(">I", 1) + b"crx isom")
    return ftyp + _box(b"moov", _box(b"uuid", CR3_CANON_UUID + metadata)) + _box(b"mdat", b"")


def _raf_exif_only(jpeg: bytes, model: str) -> bytes:
    header = b"FUJIFILMCCD-RAW 0201FF383501" + model.encode()[:32].ljust(32, b"\x00") + b"0100" + b"\x00" * 20
    jpeg_at = len(header) + 24 + 52  # the directory of offsets, then padding as cameras leave it
    directory = struct.pack(">6I", jpeg_at, len(jpeg), 0, 0, 0, 0)  # JPEG, then CFA header and CFA: none
    return header + directory + b"\x00" * 52 + jpeg


# ------------------------------------------------------------------ writers of bad files


def corrupt_jpeg_bytes(img: Image.Image, seed: int = 0) -> bytes:
    """A JPEG of `img` whose entropy-coded scan has garbage in the middle, including a stray SOF
    marker: headers intact (it opens and reports its size), but libjpeg fails decoding the pixels."""
    data = bytearray(jpeg_bytes(img))
    sos = data.index(b"\xff\xda")
    scan_start = sos + 2 + struct.unpack(">H", data[sos + 2 : sos + 4])[0]
    middle = scan_start + (len(data) - 2 - scan_start) // 2
    garbage = bytes(np.random.default_rng(seed).integers(0, 256, 64, dtype=np.uint8))
    # A second SOF inside the scan is a fatal "invalid JPEG file structure" for libjpeg.
    data[middle : middle + 80] = garbage + b"\xff\xc0\x00\x11\x08\x00\x10\x00\x10\x03\x01\x22\x00\x02\x11\x01"
    return bytes(data)


def write_corrupt_jpeg(path: PathLike, img: Image.Image | None = None, seed: int = 0) -> Path:
    """A JPEG that opens but cannot be decoded (see `corrupt_jpeg_bytes`)."""
    path = Path(path)
    path.write_bytes(corrupt_jpeg_bytes(img if img is not None else synthetic_photo(320, 240, seed), seed))
    return path


def write_truncated(path: PathLike, data: bytes, keep: float = 0.5) -> Path:
    """The first `keep` fraction of `data` (an interrupted copy or download)."""
    path = Path(path)
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    return path


def write_zero_byte(path: PathLike) -> Path:
    path = Path(path)
    path.write_bytes(b"")
    return path


def write_text_as_jpg(
    path: PathLike, text: str = "This is not a photo, just text with an image extension.\n"
) -> Path:
    path = Path(path)
    path.write_text(text * 20)
    return path


def write_oversized_png(path: PathLike, width: int = 30000, height: int = 30000) -> Path:
    """A tiny PNG whose header claims `width`×`height` pixels (a decompression bomb's shape)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )
    path = Path(path)
    path.write_bytes(data)
    return path


def write_stripped_dng(
    path: PathLike, rgb: np.ndarray | Image.Image, *, preview: bool = True, lossless_jpeg: bool = False
) -> Path:
    """A DNG of `rgb` whose raw image data was stripped, headers (and any preview) intact, as
    DNG samples in test suites are shrunk:

    - uncompressed: the file ends where the raw data would begin (exiv2's sample);
    - `lossless_jpeg`: the raw strip is a 22-byte stub and the byte count says so (exiftool's
      sample). LibRaw "decodes" this one to a uniform image without raising.
    """
    path = Path(path)
    if lossless_jpeg:
        data = _dng_bytes(
            rgb, preview=preview, preview_long_side=1024, preview_image=None, make="Shoebox",
            model="Synthetic Bayer", taken_at=None, orientation=1, lossless_jpeg=True, raw_stub=22,
        )  # fmt: skip
        path.write_bytes(data)
        return path
    write_dng(path, rgb, preview=preview)
    data = path.read_bytes()
    arr = np.asarray(rgb)
    raw_bytes = (arr.shape[0] // 2 * 2) * (arr.shape[1] // 2 * 2) * 2
    path.write_bytes(data[: len(data) - raw_bytes])  # write_dng puts the raw data last
    return path
