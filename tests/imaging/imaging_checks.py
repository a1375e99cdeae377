"""Helpers the imaging tests share (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from shoebox.imaging import DecodedImage, decode_for_model
from shoebox.protocol import ErrorCode, ShoeboxError

MIN_SIDE = 224
MAX_PIXELS = 100_000_000


def decode(
    data: bytes, filename: str, min_side: int = MIN_SIDE, max_pixels: int = MAX_PIXELS
) -> DecodedImage:
    return decode_for_model(data, filename, min_side=min_side, max_pixels=max_pixels)


def error_of(data: bytes, filename: str, **kwargs) -> ShoeboxError:
    with pytest.raises(ShoeboxError) as caught:
        decode(data, filename, **kwargs)
    return caught.value


def error_code(data: bytes, filename: str, **kwargs) -> ErrorCode:
    return error_of(data, filename, **kwargs).code


def difference(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute pixel difference after bringing both to a common small size."""
    size = (64, 48) if a.width >= a.height else (48, 64)
    return float(
        np.abs(
            np.asarray(a.convert("RGB").resize(size), dtype=np.float32)
            - np.asarray(b.convert("RGB").resize(size), dtype=np.float32)
        ).mean()
    )


def encoded(img: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **options)
    return buffer.getvalue()
