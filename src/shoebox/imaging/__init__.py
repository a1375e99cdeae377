"""Decoding every photo format Shoebox reads, for the model and for renditions; EXIF; thumbnails.

Shared by both services. Content decides the decoder (magic bytes), the extension only breaks
ties that content cannot (TIFF-based camera RAW vs a plain TIFF). Every failure is a
`ShoeboxError` with the contract's code:

- `ERR_FILE_READ`: the file is empty.
- `ERR_UNSUPPORTED_FORMAT`: the content is no image format we read, whatever the extension says
  (a text file named `.jpg` gets this: nothing in it is an image, so it is not a decoding failure).
- `ERR_DECODING_IMAGE`: an image format we read, but corrupt or truncated.
- `ERR_DECODING_RAW`: a camera RAW (by extension or signature) that LibRaw rejects, or whose
  image data is missing (see `raw.check_raw_structure` and `raw.check_raw_not_blank`). For RAW
  extensions LibRaw is the judge, so a text file named `.dng` gets this code too.
- `ERR_IMAGE_TOO_LARGE`: more pixels than `max_pixels`, judged from the header before decoding.

Modules: `formats` (extensions, sniffing), `decoded` (the result and the steps every decoder
shares), `pillow` (Pillow, HEIF/AVIF), `raw` (LibRaw), `exif`, `renditions` (model-sized
resize, thumbnails, the JPEG encoder).
"""

from __future__ import annotations

import os

# pillow_heif must be imported before anything that loads pyvips: both bundle libheif, and the
# other order segfaults. Importing it here first makes every `shoebox.imaging` import safe.
import pillow_heif  # noqa: F401
from PIL import Image

from shoebox.imaging.decoded import DEFAULT_MAX_PIXELS, DecodedImage
from shoebox.imaging.exif import EXIF_KEYS, read_exif
from shoebox.imaging.formats import (
    IMAGE_EXTENSIONS,
    RAW_EXTENSIONS,
    is_raw,
    is_supported,
    read_source,
    sniff_format,
)
from shoebox.imaging.pillow import decode_pillow
from shoebox.imaging.raw import decode_raw, is_tiff_raw
from shoebox.imaging.renditions import THUMBNAIL_SIZE, encode_jpeg, make_thumbnail, resize_for_model
from shoebox.protocol import ErrorCode, ShoeboxError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "EXIF_KEYS",
    "IMAGE_EXTENSIONS",
    "RAW_EXTENSIONS",
    "THUMBNAIL_SIZE",
    "DecodedImage",
    "decode_for_model",
    "decode_full",
    "encode_jpeg",
    "is_raw",
    "is_supported",
    "make_thumbnail",
    "read_exif",
    "resize_for_model",
    "sniff_format",
]


def decode_for_model(data: bytes, filename: str, *, min_side: int, max_pixels: int) -> DecodedImage:
    """Decode for embedding: upright RGB whose short side is at least `min_side`, but not much more.

    JPEG is decoded by libjpeg's DCT scaling (`draft`) straight to between 1× and 2× `min_side`;
    HEIC uses its embedded thumbnail when that is a big enough scaled copy; other formats are
    decoded whole then box-reduced. RAW uses the embedded preview (JPEG, drafted the same way, or
    an uncompressed bitmap) when its short side is at least `min_side`, else a 2×2 Bayer sensor
    binned straight to `min_side` (other sensors: a half-size demosaic), never a full demosaic;
    a broken preview counts as none. Images smaller than
    `min_side` come back at their own size. Raises `ShoeboxError`.
    """
    return _decode(data, filename, min_side=min_side, max_pixels=max_pixels)


def decode_full(
    source: bytes | str | os.PathLike[str], filename: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Image.Image:
    """The whole picture, upright RGB, for renditions and thumbnails.

    RAW gives its embedded preview when that can at least make a thumbnail (THUMBNAIL_SIZE on
    its short side), else a half-size demosaic. Raises `ShoeboxError`.
    """
    data, name = read_source(source, filename)
    return _decode(data, name, min_side=None, max_pixels=max_pixels).image


def _decode(data: bytes, filename: str, *, min_side: int | None, max_pixels: int) -> DecodedImage:
    if not data:
        raise ShoeboxError(ErrorCode.FILE_READ, f"{filename or 'file'}: the file is empty (0 bytes)")
    kind = sniff_format(data[:64], filename)
    if kind is None:
        raise ShoeboxError(
            ErrorCode.UNSUPPORTED_FORMAT,
            f"{filename or 'file'}: the content is not an image format Shoebox reads",
        )
    # A .tif holding sensor data is a TIFF-based RAW (old Canon and Kodak cameras wrote those).
    if kind == "raw" or (kind == "tiff" and is_tiff_raw(data)):
        return decode_raw(data, filename, min_side=min_side, max_pixels=max_pixels)
    return decode_pillow(data, filename, kind, min_side=min_side, max_pixels=max_pixels)
