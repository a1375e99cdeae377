"""Decoding with Pillow: JPEG (with libjpeg's DCT scaling), PNG, GIF, BMP, WebP, TIFF, and
HEIC/HEIF/AVIF through pillow-heif."""

from __future__ import annotations

import io
import math

import pillow_heif
from PIL import Image

from shoebox.imaging.decoded import (
    DecodedImage,
    allow_pixels,
    finish,
    orientation_of,
    too_large,
    upright_size,
)
from shoebox.protocol import ErrorCode, ShoeboxError

pillow_heif.register_heif_opener()

# The Pillow plugins each sniffed kind may open: nothing else gets a say.
PILLOW_FORMATS = {
    "jpeg": ["JPEG", "MPO"],
    "png": ["PNG"],
    "gif": ["GIF"],
    "bmp": ["BMP"],
    "webp": ["WEBP"],
    "tiff": ["TIFF"],
    "heif": ["HEIF"],
    "avif": ["AVIF", "HEIF"],
}


def draft_towards(img: Image.Image, min_side: int) -> None:
    """Ask the decoder for the smallest scaled copy whose short side is still at least `min_side`:
    libjpeg's DCT scaling for JPEG, an embedded scaled thumbnail for HEIF; others ignore it."""
    width, height = img.size
    if min(width, height) > min_side:
        scale = min_side / min(width, height)
        img.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))


def _open(data: bytes, filename: str, kind: str, max_pixels: int) -> Image.Image:
    """Open lazily (header only) and refuse oversized images before a single pixel is decoded."""
    allow_pixels(max_pixels)
    try:
        img = Image.open(io.BytesIO(data), formats=PILLOW_FORMATS[kind])
    except Image.DecompressionBombError as exc:
        raise ShoeboxError(ErrorCode.IMAGE_TOO_LARGE, f"{filename or 'image'}: {exc}") from exc
    except Exception as exc:
        raise ShoeboxError(
            ErrorCode.DECODING_IMAGE, f"{filename or 'image'}: cannot read the {kind.upper()} header: {exc}"
        ) from exc
    width, height = img.size
    if width * height > max_pixels:
        raise too_large(filename, width, height, max_pixels)
    return img


def decode_pillow(
    data: bytes, filename: str, kind: str, *, min_side: int | None, max_pixels: int
) -> DecodedImage:
    img = _open(data, filename, kind, max_pixels)
    width, height = img.size
    try:
        if min_side:
            draft_towards(img, min_side)
        img.seek(0)  # first frame of a GIF / first page of a TIFF
        img.load()
        # Only once loaded: PNG's getexif() loads the pixels to find an eXIf chunk after them, and
        # a failure swallowed there would leave a half-decoded image that a second load() accepts.
        # pillow-heif hands back HEIF/AVIF already rotated (and orientation 1 in its EXIF).
        orientation = orientation_of(img)
        img = finish(img, orientation, min_side)
    except ShoeboxError:
        raise
    except Exception as exc:
        raise ShoeboxError(
            ErrorCode.DECODING_IMAGE, f"{filename or 'image'}: corrupt or truncated {kind.upper()}: {exc}"
        ) from exc
    return DecodedImage(img, *upright_size(width, height, orientation))
