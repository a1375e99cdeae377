"""What every decoder hands back, and the steps they share: the pixel limit, RGB, box reduction
towards the size asked for, and turning the picture upright."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from shoebox.protocol import ErrorCode, ShoeboxError

DEFAULT_MAX_PIXELS = 100_000_000

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


@dataclass(frozen=True)
class DecodedImage:
    """An upright RGB image, possibly reduced, and the ORIGINAL upright size of the photo."""

    image: Image.Image
    width: int
    height: int


def too_large(filename: str, width: int, height: int, max_pixels: int) -> ShoeboxError:
    return ShoeboxError(
        ErrorCode.IMAGE_TOO_LARGE,
        f"{filename or 'image'}: {width}x{height} is {width * height:,} pixels, over the limit of {max_pixels:,}",
    )


def allow_pixels(max_pixels: int) -> None:
    # Pillow's own bomb guard is process-wide; ours is per call and checked from the header. Keep
    # Pillow's above ours so it never refuses what the caller allows, and still stops the absurd.
    if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels


def orientation_of(img: Image.Image) -> int:
    """The EXIF orientation (1–8) a Pillow image declares; 1 when it declares none or nonsense."""
    try:
        value = int(img.getexif().get(0x0112, 1))
    except Exception:
        return 1
    return value if value in _TRANSPOSE else 1


def upright_size(width: int, height: int, orientation: int) -> tuple[int, int]:
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def finish(img: Image.Image, orientation: int, min_side: int | None) -> Image.Image:
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
