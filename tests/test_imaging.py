"""Decoding every format for the model and for renditions, RAW checks, EXIF and thumbnails.

Every file is generated here (shoebox.devtools.photos); real LibRaw, Pillow and pillow-heif.
"""

from __future__ import annotations

import io
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import rawpy
from PIL import Image, features

from shoebox.devtools import photos
from shoebox.imaging import (
    EXIF_KEYS,
    decode_for_model,
    decode_full,
    is_raw,
    is_supported,
    make_thumbnail,
    read_exif,
)
from shoebox.protocol import ErrorCode, ShoeboxError

MIN_SIDE = 224
MAX_PIXELS = 100_000_000


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return photos.synthetic_photo(640, 480, seed=7)


def decode(data: bytes, filename: str, min_side: int = MIN_SIDE, max_pixels: int = MAX_PIXELS):
    return decode_for_model(data, filename, min_side=min_side, max_pixels=max_pixels)


def error_code(data: bytes, filename: str, **kwargs) -> ErrorCode:
    with pytest.raises(ShoeboxError) as caught:
        decode(data, filename, **kwargs)
    return caught.value.code


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


def dng_bytes(tmp_path: Path, rgb, **options) -> bytes:
    return photos.write_dng(tmp_path / "photo.dng", np.asarray(rgb), **options).read_bytes()


# ------------------------------------------------------------------ formats


def _heic(img: Image.Image, tmp_path: Path) -> bytes:
    return photos.write_heic(tmp_path / "p.heic", img).read_bytes()


FORMATS = {
    "photo.jpg": lambda img, tmp: photos.jpeg_bytes(img),
    "photo.png": lambda img, tmp: encoded(img, "PNG"),
    "photo.webp": lambda img, tmp: encoded(img, "WEBP", quality=85),
    "photo.tif": lambda img, tmp: encoded(img, "TIFF"),
    "photo.bmp": lambda img, tmp: encoded(img, "BMP"),
    "photo.gif": lambda img, tmp: encoded(img.quantize(64), "GIF"),
    "photo.heic": _heic,
    "photo.avif": lambda img, tmp: encoded(img, "AVIF", quality=70),
}


@pytest.mark.parametrize("filename", sorted(FORMATS))
def test_every_format_decodes_to_rgb_with_the_original_size(
    filename: str, photo: Image.Image, tmp_path: Path
):
    if filename.endswith(".avif") and not features.check("avif"):
        pytest.skip("this Pillow has no AVIF codec")
    decoded = decode(FORMATS[filename](photo, tmp_path), filename)
    assert decoded.image.mode == "RGB"
    assert min(decoded.image.size) >= MIN_SIDE
    assert (decoded.width, decoded.height) == (640, 480)
    assert difference(decoded.image, photo) < 12


def test_gif_decodes_its_first_frame(photo: Image.Image):
    frames = [Image.new("RGB", (320, 240), "red"), Image.new("RGB", (320, 240), "blue")]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    decoded = decode(data, "anim.gif")
    assert decoded.image.getpixel((10, 10)) == (255, 0, 0)


def test_heic_with_a_thumbnail_is_decoded_from_it_when_big_enough(photo: Image.Image, tmp_path: Path):
    data = photos.write_heic(tmp_path / "phone.heic", photo.resize((1280, 960)), thumbnail=320).read_bytes()
    decoded = decode(data, "phone.heic")
    assert (decoded.width, decoded.height) == (1280, 960)
    assert decoded.image.size == (320, 240)
    assert difference(decoded.image, photo) < 12


def test_content_decides_the_decoder_not_the_extension(photo: Image.Image):
    decoded = decode(encoded(photo, "PNG"), "misnamed.jpg")
    assert (decoded.width, decoded.height) == (640, 480)


def test_jpeg_draft_decodes_straight_to_near_the_model_size(photo: Image.Image):
    big = photo.resize((4000, 3000), Image.Resampling.BILINEAR)
    decoded = decode(photos.jpeg_bytes(big, quality=85), "big.jpg")
    assert (decoded.width, decoded.height) == (4000, 3000)
    # libjpeg's 1/8 DCT scaling: 500x375, never the 12 MP picture.
    assert decoded.image.size == (500, 375)
    assert difference(decoded.image, big) < 8


def test_a_large_png_is_reduced_but_stays_above_min_side(photo: Image.Image):
    big = photo.resize((1600, 1200))
    decoded = decode(encoded(big, "PNG", compress_level=1), "big.png")
    assert (decoded.width, decoded.height) == (1600, 1200)
    assert MIN_SIDE <= min(decoded.image.size) < 2 * MIN_SIDE


def test_an_image_smaller_than_min_side_is_not_enlarged():
    small = photos.synthetic_photo(200, 150, seed=1)
    decoded = decode(photos.jpeg_bytes(small), "small.jpg")
    assert decoded.image.size == (200, 150)


def test_exif_orientation_6_turns_the_picture_upright(photo: Image.Image):
    decoded = decode(photos.jpeg_bytes(photo, exif={"orientation": 6}), "sideways.jpg")
    assert (decoded.width, decoded.height) == (480, 640)
    upright = photo.transpose(Image.Transpose.ROTATE_270)
    assert decoded.image.size[0] < decoded.image.size[1]
    assert difference(decoded.image, upright) < 8


# ------------------------------------------------------------------ RAW


def test_dng_with_a_preview_is_decoded_from_the_preview(photo: Image.Image, tmp_path: Path):
    # A preview that differs from the sensor data shows which one was decoded.
    red = Image.new("RGB", photo.size, (220, 20, 20))
    data = dng_bytes(tmp_path, photo, preview=True, preview_image=red)
    decoded = decode(data, "camera.dng")
    assert (decoded.width, decoded.height) == (640, 480)
    assert np.asarray(decoded.image).mean(axis=(0, 1)) == pytest.approx([220, 20, 20], abs=6)


def test_dng_with_a_preview_smaller_than_min_side_is_demosaiced(photo: Image.Image, tmp_path: Path):
    red = Image.new("RGB", photo.size, (220, 20, 20))
    data = dng_bytes(tmp_path, photo, preview=True, preview_image=red, preview_long_side=160)
    decoded = decode(data, "camera.dng")
    assert difference(decoded.image, photo) < 20


def test_dng_without_a_preview_is_decoded_by_a_half_size_demosaic(photo: Image.Image, tmp_path: Path):
    data = dng_bytes(tmp_path, photo, preview=False)
    decoded = decode(data, "camera.dng", min_side=150)
    assert (decoded.width, decoded.height) == (640, 480)
    # Half size is 320x240 (already below 2x min_side); a full demosaic would reduce to 214x160.
    assert decoded.image.size == (320, 240)
    assert difference(decoded.image, photo) < 20


@pytest.mark.parametrize("preview", [True, False])
def test_dng_orientation_turns_the_picture_upright(preview: bool, photo: Image.Image, tmp_path: Path):
    data = dng_bytes(tmp_path, photo, preview=preview, orientation=6)
    decoded = decode(data, "portrait.dng")
    assert (decoded.width, decoded.height) == (480, 640)
    assert difference(decoded.image, photo.transpose(Image.Transpose.ROTATE_270)) < 20


def test_raw_garbage_is_a_raw_decoding_error():
    garbage = bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8))
    assert error_code(garbage, "random.dng") == ErrorCode.DECODING_RAW
    assert error_code(b"not a raw file at all\n" * 50, "notes.nef") == ErrorCode.DECODING_RAW


def test_truncated_dng_is_a_raw_decoding_error(photo: Image.Image, tmp_path: Path):
    data = dng_bytes(tmp_path, photo, preview=True)
    with pytest.raises(ShoeboxError) as caught:
        decode(data[: int(len(data) * 0.6)], "cut.dng")
    assert caught.value.code == ErrorCode.DECODING_RAW
    assert "truncated" in caught.value.message


@pytest.mark.parametrize("preview", [True, False])
def test_dng_whose_image_data_was_stripped_is_a_raw_decoding_error(
    preview: bool, photo: Image.Image, tmp_path: Path
):
    data = photos.write_stripped_dng(tmp_path / "stripped.dng", photo, preview=preview).read_bytes()
    with pytest.raises(ShoeboxError) as caught:
        decode(data, "stripped.dng")
    assert caught.value.code == ErrorCode.DECODING_RAW
    assert "missing" in caught.value.message


def test_compressed_dng_whose_data_is_a_stub_is_a_raw_decoding_error(photo: Image.Image, tmp_path: Path):
    data = photos.write_stripped_dng(
        tmp_path / "stub.dng", photo, preview=False, lossless_jpeg=True
    ).read_bytes()
    # The condition of exiftool's sample: LibRaw "decodes" it to garbage without an error.
    with rawpy.imread(io.BytesIO(data)) as raw:
        raw.postprocess(half_size=True)
    with pytest.raises(ShoeboxError) as caught:
        decode(data, "stub.dng")
    assert caught.value.code == ErrorCode.DECODING_RAW
    assert "missing" in caught.value.message


def test_lossless_jpeg_dng_decodes(photo: Image.Image, tmp_path: Path):
    data = dng_bytes(tmp_path, photo, preview=False, lossless_jpeg=True)
    decoded = decode(data, "compressed.dng")
    assert (decoded.width, decoded.height) == (640, 480)
    assert difference(decoded.image, photo) < 20


def test_dng_whose_sensor_data_is_blank_is_a_raw_decoding_error(tmp_path: Path):
    blank = np.zeros((240, 320, 3), dtype=np.uint8)
    data = dng_bytes(tmp_path, blank, preview=False)
    # LibRaw itself "decodes" it without complaint, like DNGs whose compressed data was stripped.
    with rawpy.imread(io.BytesIO(data)) as raw:
        raw.postprocess(half_size=True)
    with pytest.raises(ShoeboxError) as caught:
        decode(data, "blank.dng")
    assert caught.value.code == ErrorCode.DECODING_RAW
    assert "blank" in caught.value.message


def test_raw_over_the_pixel_limit_is_refused(photo: Image.Image, tmp_path: Path):
    data = dng_bytes(tmp_path, photo, preview=True)
    assert error_code(data, "big.dng", max_pixels=640 * 480 - 1) == ErrorCode.IMAGE_TOO_LARGE


# ------------------------------------------------------------------ bad files


def test_corrupt_jpeg_is_an_image_decoding_error(tmp_path: Path):
    data = photos.write_corrupt_jpeg(tmp_path / "corrupt.jpg").read_bytes()
    assert error_code(data, "corrupt.jpg") == ErrorCode.DECODING_IMAGE


@pytest.mark.parametrize("filename", ["photo.jpg", "photo.png", "photo.heic", "photo.webp"])
def test_truncated_image_is_an_image_decoding_error(filename: str, photo: Image.Image, tmp_path: Path):
    data = FORMATS[filename](photo, tmp_path)
    cut = photos.write_truncated(tmp_path / filename, data, keep=0.5).read_bytes()
    assert error_code(cut, filename) == ErrorCode.DECODING_IMAGE


def test_zero_byte_file_is_a_file_read_error():
    assert error_code(b"", "empty.jpg") == ErrorCode.FILE_READ


def test_text_named_jpg_is_an_unsupported_format(tmp_path: Path):
    data = photos.write_text_as_jpg(tmp_path / "notes.jpg").read_bytes()
    assert error_code(data, "notes.jpg") == ErrorCode.UNSUPPORTED_FORMAT


def test_unknown_content_is_an_unsupported_format():
    assert error_code(b"%PDF-1.7\n" + b"0" * 500, "scan.pdf") == ErrorCode.UNSUPPORTED_FORMAT


def test_decompression_bomb_is_refused_from_its_header(tmp_path: Path):
    data = photos.write_oversized_png(tmp_path / "bomb.png", 30000, 30000).read_bytes()
    assert len(data) < 200
    started = time.perf_counter()
    assert error_code(data, "bomb.png") == ErrorCode.IMAGE_TOO_LARGE
    # 900 MP would take seconds and gigabytes to allocate; the header alone is instant.
    assert time.perf_counter() - started < 0.5


def test_image_over_the_callers_pixel_limit_is_refused_before_decoding(tmp_path: Path):
    data = photos.write_oversized_png(tmp_path / "big.png", 4000, 3000).read_bytes()
    assert error_code(data, "big.png", max_pixels=10_000_000) == ErrorCode.IMAGE_TOO_LARGE


# ------------------------------------------------------------------ renditions


def test_decode_full_gives_the_whole_upright_picture(photo: Image.Image, tmp_path: Path):
    path = photos.write_jpeg(tmp_path / "p.jpg", photo, exif={"orientation": 8})
    full = decode_full(path)
    assert full.size == (480, 640)
    assert difference(full, photo.transpose(Image.Transpose.ROTATE_90)) < 8


def test_decode_full_of_a_dng_gives_its_preview_or_a_half_size_demosaic(photo: Image.Image, tmp_path: Path):
    with_preview = photos.write_dng(tmp_path / "a.dng", np.asarray(photo), preview=True)
    without = photos.write_dng(tmp_path / "b.dng", np.asarray(photo), preview=False)
    assert decode_full(with_preview).size == (640, 480)
    assert decode_full(without.read_bytes(), "b.dng").size == (320, 240)


def test_decode_full_of_a_missing_file_is_a_file_read_error(tmp_path: Path):
    with pytest.raises(ShoeboxError) as caught:
        decode_full(tmp_path / "gone.jpg")
    assert caught.value.code == ErrorCode.FILE_READ


def test_thumbnail_is_a_jpeg_at_most_256_on_its_long_side(photo: Image.Image):
    thumb = Image.open(io.BytesIO(make_thumbnail(photo.resize((1200, 800)))))
    assert thumb.format == "JPEG"
    assert thumb.size == (256, 171)


def test_thumbnail_of_a_small_image_is_not_enlarged():
    thumb = Image.open(io.BytesIO(make_thumbnail(Image.new("RGB", (100, 60), "white"))))
    assert thumb.size == (100, 60)


# ------------------------------------------------------------------ EXIF

EXIF = {
    "taken_at": datetime(2021, 6, 5, 14, 3, 2),
    "camera_make": "Canon",
    "camera_model": "EOS R6",
    "lens": "RF35mm F1.8 MACRO IS STM",
    "exposure_time": 1 / 250,
    "f_number": 2.8,
    "iso": 400,
    "focal_length": 35.0,
    "gps_lat": -33.8568,
    "gps_lon": -70.6483,
    "orientation": 1,
}


def assert_exif_round_trips(exif: dict, expected: dict) -> None:
    assert exif["taken_at"] == "2021-06-05T14:03:02"
    assert exif["taken_ts"] == datetime(2021, 6, 5, 14, 3, 2, tzinfo=timezone.utc).timestamp()
    for key in ("camera_make", "camera_model", "lens", "iso", "orientation"):
        if key in expected:
            assert exif[key] == expected[key], key
    for key in ("exposure_time", "f_number", "focal_length", "gps_lat", "gps_lon"):
        if key in expected:
            assert exif[key] == pytest.approx(expected[key], abs=1e-5), key


def test_read_exif_of_a_jpeg_round_trips(photo: Image.Image):
    exif = read_exif(photos.jpeg_bytes(photo, exif=EXIF))
    assert set(exif) == set(EXIF_KEYS)
    assert_exif_round_trips(exif, EXIF)


def test_read_exif_of_a_heic_round_trips(photo: Image.Image, tmp_path: Path):
    fields = {k: EXIF[k] for k in ("taken_at", "camera_make", "camera_model", "gps_lat", "gps_lon")}
    path = photos.write_heic(tmp_path / "p.heic", photo, exif=fields)
    assert_exif_round_trips(read_exif(path), fields)


def test_read_exif_of_a_dng_reads_its_tiff_tags(photo: Image.Image, tmp_path: Path):
    path = photos.write_dng(
        tmp_path / "p.dng", np.asarray(photo), preview=False, make="Canon", model="EOS R6",
        taken_at=EXIF["taken_at"], orientation=6,
    )  # fmt: skip
    exif = read_exif(path)
    assert_exif_round_trips(exif, {"camera_make": "Canon", "camera_model": "EOS R6", "orientation": 6})


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xd8\xff\xe1\x00\x20Exif\x00\x00II*\x00\xff\xff\xff\x7f" + b"\x00" * 14 + b"\xff\xd9",
        b"II*\x00\x08\x00\x00\x00\xff\xff" + b"\x01" * 40,
        b"",
        b"just some text",
    ],
    ids=["broken-app1", "broken-tiff", "empty", "text"],
)
@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_read_exif_never_raises_on_broken_data(data: bytes):
    assert read_exif(data) == dict.fromkeys(EXIF_KEYS)


def test_read_exif_without_gps_gives_none_coordinates(photo: Image.Image):
    exif = read_exif(photos.jpeg_bytes(photo, exif={"camera_make": "Nikon"}))
    assert exif["camera_make"] == "Nikon"
    assert exif["gps_lat"] is None and exif["gps_lon"] is None and exif["taken_at"] is None


def test_extensions_say_what_is_raw_and_what_is_supported():
    assert is_raw("IMG_0001.CR3") and is_raw("a.dng") and not is_raw("a.jpg")
    assert is_supported("a.HEIC") and is_supported("a.nef") and not is_supported("a.txt")
