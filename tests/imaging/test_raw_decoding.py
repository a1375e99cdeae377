"""Camera RAW for the model and for renditions: every preview shape cameras write, DNG and a
non-DNG TIFF-based RAW, never a full demosaic, and the checks that catch missing sensor data.

The non-DNG files are TIFF/EP-like CFA TIFFs without DNGVersion (`write_dng(dng=False)`): LibRaw
reads them as a generic TIFF-based RAW, as it reads NEF, PEF or Kodak files.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rawpy
from imaging_checks import decode, difference, error_code, error_of
from PIL import Image

from shoebox.devtools import photos
from shoebox.imaging import decode_full
from shoebox.protocol import ErrorCode

RED = (220, 20, 20)
# The preview shapes decoding uses; every other one falls back to a half-size demosaic.
USED_PREVIEWS = {"jpeg", "bitmap"}
CONTAINERS = {"dng": ("camera.dng", True), "tiff-raw": ("camera.nef", False)}


def raw_file(tmp_path: Path, rgb: Any, container: str = "dng", **options) -> tuple[bytes, str]:
    name, dng = CONTAINERS[container]
    return photos.write_dng(tmp_path / name, np.asarray(rgb), dng=dng, **options).read_bytes(), name


class _RecordingRaw:
    """A rawpy.RawPy that records how it is asked to demosaic."""

    def __init__(self, raw: Any, calls: list[dict[str, Any]]):
        self._raw, self._calls = raw, calls

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)

    def __enter__(self) -> _RecordingRaw:
        return self

    def __exit__(self, *exc: Any) -> None:
        self._raw.close()

    def postprocess(self, **options: Any) -> np.ndarray:
        self._calls.append(options)
        return self._raw.postprocess(**options)


@pytest.fixture
def demosaics(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The options of every LibRaw demosaic made during the test."""
    calls: list[dict[str, Any]] = []
    imread = rawpy.imread
    monkeypatch.setattr(rawpy, "imread", lambda source: _RecordingRaw(imread(source), calls))
    return calls


def red_picture() -> Image.Image:
    """A preview that differs from the sensor data shows which one was decoded."""
    return Image.new("RGB", (640, 480), RED)


def assert_is(image: Image.Image, colour: tuple[int, int, int]) -> None:
    assert np.asarray(image).mean(axis=(0, 1)) == pytest.approx(colour, abs=6)


# ------------------------------------------------------------------ every preview shape


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("preview", photos.DNG_PREVIEWS)
def test_decode_for_model_uses_a_big_enough_preview_else_a_half_size_demosaic(
    preview: str, container: str, photo: Image.Image, tmp_path: Path, demosaics: list
):
    data, name = raw_file(tmp_path, photo, container, preview=preview, preview_image=red_picture())
    decoded = decode(data, name, min_side=150)
    assert (decoded.width, decoded.height) == (640, 480)
    if preview in USED_PREVIEWS:
        assert_is(decoded.image, RED)
        assert demosaics == []
    else:
        # Bayer cells binned straight to the model's scale (here 2x2 sensor pixels per output
        # pixel: 320x240 is the smallest >= 150 on its short side); no LibRaw demosaic at all.
        assert decoded.image.size == (320, 240)
        assert demosaics == []
        assert difference(decoded.image, photo) < 20


@pytest.mark.parametrize("orientation", [1, 6, 8, 3])
@pytest.mark.parametrize("container", CONTAINERS)
def test_the_binned_sensor_rendition_matches_libraws_half_size_demosaic(
    orientation: int, container: str, tmp_path: Path, demosaics: list
):
    photo = photos.synthetic_photo(1600, 1200, seed=7)
    data, name = raw_file(tmp_path, photo, container, preview="none", orientation=orientation)
    decoded = decode(data, name, min_side=300)
    assert demosaics == []
    upright = (1200, 1600) if orientation in (6, 8) else (1600, 1200)
    assert (decoded.width, decoded.height) == upright
    # 4x4 sensor pixels per output pixel: 400x300 (upright), reduced no further.
    assert decoded.image.size == (upright[0] // 4, upright[1] // 4)
    reference = decode_full(data, name)  # LibRaw's half-size demosaic, flipped by LibRaw
    assert [call["half_size"] for call in demosaics] == [True]
    assert reference.size == (upright[0] // 2, upright[1] // 2)
    assert difference(decoded.image, reference) < 8  # ≈ 6 here; ≈ 2 on real photos (README)


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("preview", photos.DNG_PREVIEWS)
def test_decode_full_gives_the_whole_preview_else_a_half_size_demosaic(
    preview: str, container: str, photo: Image.Image, tmp_path: Path, demosaics: list
):
    data, name = raw_file(tmp_path, photo, container, preview=preview, preview_image=red_picture())
    full = decode_full(data, name)
    if preview in USED_PREVIEWS:
        assert full.size == (640, 480)
        assert_is(full, RED)
        assert demosaics == []
    else:
        assert full.size == (320, 240)
        assert [call["half_size"] for call in demosaics] == [True]


def test_a_big_jpeg_preview_is_drafted_down_by_libjpeg(tmp_path: Path):
    big = photos.synthetic_photo(2000, 1500, seed=2)
    data, name = raw_file(tmp_path, big, preview="jpeg", preview_long_side=1600)
    decoded = decode(data, name)
    # 1600x1200 at libjpeg's 1/4 DCT scale; 1/8 (200x150) would be below the 224 asked for.
    assert decoded.image.size == (400, 300)
    assert difference(decoded.image, big) < 10


def test_a_1008x756_bitmap_preview_is_used_and_box_reduced(tmp_path: Path, demosaics: list):
    big = photos.synthetic_photo(2016, 1512, seed=3)
    data, name = raw_file(tmp_path, big, preview="bitmap", preview_long_side=1008)
    with rawpy.imread(io.BytesIO(data)) as raw:
        thumb = raw.extract_thumb()
    assert thumb.format == rawpy.ThumbFormat.BITMAP and thumb.data.shape == (756, 1008, 3)
    decoded = decode(data, name)
    assert decoded.image.size == (336, 252)  # 756 // 224 = 3
    assert demosaics == []
    assert difference(decoded.image, big) < 10


def test_a_preview_smaller_than_the_models_input_gives_way_to_the_sensor(photo: Image.Image, tmp_path: Path):
    data, name = raw_file(tmp_path, photo, preview="jpeg", preview_long_side=280, preview_image=red_picture())
    # 280x210: enough for a 200 input, not for a 224 one.
    assert_is(decode(data, name, min_side=200).image, RED)
    assert difference(decode(data, name, min_side=224).image, photo) < 20


@pytest.mark.parametrize("container", CONTAINERS)
@pytest.mark.parametrize("preview", ["jpeg", "bitmap", "none"])
def test_raw_orientation_turns_the_picture_upright(
    preview: str, container: str, photo: Image.Image, tmp_path: Path
):
    data, name = raw_file(tmp_path, photo, container, preview=preview, orientation=6)
    decoded = decode(data, name)
    assert (decoded.width, decoded.height) == (480, 640)
    assert difference(decoded.image, photo.transpose(Image.Transpose.ROTATE_270)) < 20


def test_lossless_jpeg_dng_decodes(photo: Image.Image, tmp_path: Path):
    data, name = raw_file(tmp_path, photo, preview=False, lossless_jpeg=True)
    decoded = decode(data, name)
    assert (decoded.width, decoded.height) == (640, 480)
    assert difference(decoded.image, photo) < 20


# ------------------------------------------------------------------ broken RAWs


def test_raw_garbage_is_a_raw_decoding_error():
    garbage = bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8))
    assert error_code(garbage, "random.dng") == ErrorCode.DECODING_RAW
    assert error_code(b"not a raw file at all\n" * 50, "notes.nef") == ErrorCode.DECODING_RAW


@pytest.mark.parametrize("container", CONTAINERS)
def test_truncated_raw_is_a_raw_decoding_error(container: str, photo: Image.Image, tmp_path: Path):
    data, name = raw_file(tmp_path, photo, container, preview=True)
    error = error_of(data[: int(len(data) * 0.6)], name)
    assert error.code == ErrorCode.DECODING_RAW
    assert "truncated" in error.message


@pytest.mark.parametrize("preview", [True, False])
def test_dng_whose_image_data_was_stripped_is_a_raw_decoding_error(
    preview: bool, photo: Image.Image, tmp_path: Path
):
    data = photos.write_stripped_dng(tmp_path / "stripped.dng", photo, preview=preview).read_bytes()
    error = error_of(data, "stripped.dng")
    assert error.code == ErrorCode.DECODING_RAW
    assert "missing" in error.message


def test_tiff_raw_whose_image_data_was_stripped_is_a_raw_decoding_error(photo: Image.Image, tmp_path: Path):
    data, name = raw_file(tmp_path, photo, "tiff-raw", preview=True)
    error = error_of(data[: len(data) - 640 * 480 * 2], name)  # the raw data is written last
    assert error.code == ErrorCode.DECODING_RAW
    assert "missing" in error.message


def test_compressed_dng_whose_data_is_a_stub_is_a_raw_decoding_error(photo: Image.Image, tmp_path: Path):
    data = photos.write_stripped_dng(
        tmp_path / "stub.dng", photo, preview=False, lossless_jpeg=True
    ).read_bytes()
    # The condition of exiftool's sample: LibRaw "decodes" it to garbage without an error.
    with rawpy.imread(io.BytesIO(data)) as raw:
        raw.postprocess(half_size=True)
    error = error_of(data, "stub.dng")
    assert error.code == ErrorCode.DECODING_RAW
    assert "missing" in error.message


@pytest.mark.parametrize("container", CONTAINERS)
def test_raw_whose_sensor_data_is_blank_is_a_raw_decoding_error(container: str, tmp_path: Path):
    data, name = raw_file(tmp_path, np.zeros((240, 320, 3), dtype=np.uint8), container, preview=False)
    # LibRaw itself "decodes" it without complaint, like DNGs whose compressed data was stripped.
    with rawpy.imread(io.BytesIO(data)) as raw:
        raw.postprocess(half_size=True)
    error = error_of(data, name)
    assert error.code == ErrorCode.DECODING_RAW
    assert "blank" in error.message


def test_raw_over_the_pixel_limit_is_refused(photo: Image.Image, tmp_path: Path):
    data, name = raw_file(tmp_path, photo, preview=True)
    assert error_code(data, name, max_pixels=640 * 480 - 1) == ErrorCode.IMAGE_TOO_LARGE
