"""Decoding browser formats, TIFF and HEIC/AVIF for the model; the errors of broken files."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from imaging_checks import MIN_SIDE, decode, difference, encoded, error_code
from PIL import Image, features

from shoebox.devtools import photos
from shoebox.imaging import decode_full
from shoebox.protocol import ErrorCode, ShoeboxError


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


def test_gif_decodes_its_first_frame():
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


def test_decode_full_gives_the_whole_upright_picture(photo: Image.Image, tmp_path: Path):
    path = photos.write_jpeg(tmp_path / "p.jpg", photo, exif={"orientation": 8})
    full = decode_full(path)
    assert full.size == (480, 640)
    assert difference(full, photo.transpose(Image.Transpose.ROTATE_90)) < 8


def test_decode_full_of_a_missing_file_is_a_file_read_error(tmp_path: Path):
    with pytest.raises(ShoeboxError) as caught:
        decode_full(tmp_path / "gone.jpg")
    assert caught.value.code == ErrorCode.FILE_READ


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


def test_png_with_garbage_pixel_data_fails_rather_than_decoding_half(photo: Image.Image):
    # PNG's getexif() loads the pixels to look for an eXIf chunk after them; a failure swallowed
    # there once left a half-decoded image that the real load() then accepted.
    from shoebox.devtools.bad_inputs import garbled

    data = garbled(encoded(photo, "PNG"), 0.3, 2048)
    assert error_code(data, "corrupt.png") == ErrorCode.DECODING_IMAGE
