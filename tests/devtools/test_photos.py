"""The generated photos behave like real ones: photo-like content, DNGs LibRaw reads, broken files."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
import rawpy
from PIL import Image

from shoebox.devtools import photos


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return photos.synthetic_photo(640, 480, seed=3)


def test_synthetic_photo_is_textured_not_flat(photo: Image.Image):
    arr = np.asarray(photo, dtype=np.float32)
    assert photo.size == (640, 480) and photo.mode == "RGB"
    assert arr.std() > 20
    assert len(np.unique(arr.reshape(-1, 3), axis=0)) > 10_000
    # Noise and texture make JPEGs the size real photos have (a flat picture would be a few KB).
    assert len(photos.jpeg_bytes(photo, quality=90)) > 40_000


def test_synthetic_photo_is_deterministic_per_seed(photo: Image.Image):
    assert np.array_equal(np.asarray(photo), np.asarray(photos.synthetic_photo(640, 480, seed=3)))
    assert not np.array_equal(np.asarray(photo), np.asarray(photos.synthetic_photo(640, 480, seed=4)))


def test_photo_from_file_scales_a_photo_to_the_long_side(photo: Image.Image, tmp_path: Path):
    source = photos.write_jpeg(tmp_path / "p.jpg", photo, exif={"orientation": 6})
    scaled = photos.photo_from_file(source, 1600)
    assert scaled.size == (1200, 1600)  # upright first, then scaled


def _raw_rgb(path: Path) -> np.ndarray:
    with rawpy.imread(str(path)) as raw:
        return raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)


def test_dng_is_a_12_bit_rggb_cfa_raw(photo: Image.Image, tmp_path: Path):
    path = photos.write_dng(tmp_path / "p.dng", np.asarray(photo), preview=False, make="Acme", model="One")
    with rawpy.imread(str(path)) as raw:
        assert raw.raw_image.shape == (480, 640)
        assert raw.raw_type == rawpy.RawType.Flat
        assert raw.color_desc == b"RGBG"
        assert raw.raw_pattern.tolist() == [[0, 1], [3, 2]]  # R G / G B
        assert raw.white_level == photos.DNG_WHITE_LEVEL
        assert raw.black_level_per_channel == [photos.DNG_BLACK_LEVEL] * 4
        assert raw.camera_whitebalance[:3] == pytest.approx(photos.DNG_WB_GAINS, rel=1e-3)
        assert int(raw.raw_image.max()) <= photos.DNG_WHITE_LEVEL


def test_dng_demosaics_back_to_the_photo(photo: Image.Image, tmp_path: Path):
    path = photos.write_dng(tmp_path / "p.dng", np.asarray(photo), preview=False)
    rgb = _raw_rgb(path)
    assert rgb.shape == (240, 320, 3)
    reference = np.asarray(photo.resize((320, 240)), dtype=np.float32)
    assert np.abs(rgb.astype(np.float32) - reference).mean() < 15


def test_lossless_jpeg_dng_holds_exactly_the_same_raw(photo: Image.Image, tmp_path: Path):
    plain = photos.write_dng(tmp_path / "plain.dng", np.asarray(photo), preview=False)
    packed = photos.write_dng(tmp_path / "packed.dng", np.asarray(photo), preview=False, lossless_jpeg=True)
    assert packed.stat().st_size < plain.stat().st_size
    with rawpy.imread(str(plain)) as a, rawpy.imread(str(packed)) as b:
        assert np.array_equal(a.raw_image, b.raw_image)


def test_dng_with_preview_carries_a_jpeg_that_extract_thumb_returns(photo: Image.Image, tmp_path: Path):
    big = photo.resize((1600, 1200))
    path = photos.write_dng(tmp_path / "p.dng", np.asarray(big), preview=True, preview_long_side=1024)
    with rawpy.imread(str(path)) as raw:
        thumb = raw.extract_thumb()
        assert raw.raw_image.shape == (1200, 1600)
    assert thumb.format == rawpy.ThumbFormat.JPEG
    assert Image.open(io.BytesIO(thumb.data)).size == (1024, 768)
    assert _raw_rgb(path).shape == (600, 800, 3)


def test_dng_without_preview_has_no_thumbnail(photo: Image.Image, tmp_path: Path):
    path = photos.write_dng(tmp_path / "p.dng", np.asarray(photo), preview=False)
    with rawpy.imread(str(path)) as raw, pytest.raises(rawpy.LibRawNoThumbnailError):
        raw.extract_thumb()


def test_dng_orientation_reaches_libraw(photo: Image.Image, tmp_path: Path):
    path = photos.write_dng(tmp_path / "p.dng", np.asarray(photo), preview=False, orientation=6)
    with rawpy.imread(str(path)) as raw:
        assert raw.sizes.flip == 6


def test_dng_of_odd_size_loses_its_last_row_and_column(tmp_path: Path):
    odd = photos.synthetic_photo(101, 75, seed=1)
    path = photos.write_dng(tmp_path / "odd.dng", np.asarray(odd), preview=False)
    with rawpy.imread(str(path)) as raw:
        assert raw.raw_image.shape == (74, 100)


def test_stripped_dng_keeps_its_headers_but_not_its_data(photo: Image.Image, tmp_path: Path):
    full = photos.write_dng(tmp_path / "full.dng", np.asarray(photo), preview=True).read_bytes()
    stripped = photos.write_stripped_dng(tmp_path / "stripped.dng", photo, preview=True).read_bytes()
    assert len(stripped) == len(full) - 640 * 480 * 2
    assert full.startswith(stripped)


def test_corrupt_jpeg_opens_but_cannot_be_decoded(tmp_path: Path):
    path = photos.write_corrupt_jpeg(tmp_path / "c.jpg")
    img = Image.open(path)
    assert img.size == (320, 240)
    with pytest.raises(OSError):
        img.load()


def test_oversized_png_claims_a_huge_size_in_a_tiny_file(tmp_path: Path):
    path = photos.write_oversized_png(tmp_path / "bomb.png", 30000, 20000)
    assert path.stat().st_size < 200
    assert path.read_bytes()[16:24] == (30000).to_bytes(4, "big") + (20000).to_bytes(4, "big")


def test_bad_file_writers_write_what_they_say(tmp_path: Path):
    assert photos.write_zero_byte(tmp_path / "z.jpg").stat().st_size == 0
    assert photos.write_truncated(tmp_path / "t.jpg", b"0123456789", keep=0.3).read_bytes() == b"012"
    assert photos.write_text_as_jpg(tmp_path / "n.jpg").read_text().startswith("This is not a photo")


def test_heic_can_carry_a_thumbnail_like_phones_write(photo: Image.Image, tmp_path: Path):
    import pillow_heif

    path = photos.write_heic(tmp_path / "p.heic", photo, thumbnail=320)
    heif = pillow_heif.open_heif(path)
    assert heif.size == (640, 480)
    assert heif.info["thumbnails"] == [320]


@pytest.mark.parametrize(
    ("preview", "found"),
    [
        (True, ("jpeg", (1024, 768))),
        ("jpeg", ("jpeg", (1024, 768))),
        ("bitmap", ("bitmap", (1024, 768))),
        ("tiny", ("jpeg", (160, 120))),
        ("broken", ("broken jpeg", (1024, 768))),
        ("broken-bitmap", ("none", None)),
        ("none", ("none", None)),
        (False, ("none", None)),
    ],
)
def test_dng_preview_shapes_are_what_libraw_finds(preview, found, photo: Image.Image, tmp_path: Path):
    path = photos.write_dng(tmp_path / "p.dng", np.asarray(photo.resize((1600, 1200))), preview=preview)
    with rawpy.imread(str(path)) as raw:
        try:
            thumb = raw.extract_thumb()
        except rawpy.LibRawNoThumbnailError:
            assert found == ("none", None)
            return
        assert raw.raw_image.shape == (1200, 1600)  # the raw is whole whatever the preview
    if thumb.format == rawpy.ThumbFormat.BITMAP:
        assert thumb.data.dtype == np.uint8
        assert found == ("bitmap", (thumb.data.shape[1], thumb.data.shape[0]))
        return
    img = Image.open(io.BytesIO(thumb.data))
    try:
        img.load()
        assert found == ("jpeg", img.size)
    except OSError:
        assert found == ("broken jpeg", img.size)  # its header still reads


def test_dng_bitmap_preview_of_a_chosen_long_side(tmp_path: Path):
    rgb = np.asarray(photos.synthetic_photo(2016, 1512, seed=1))
    path = photos.write_dng(tmp_path / "p.dng", rgb, preview="bitmap", preview_long_side=1008)
    with rawpy.imread(str(path)) as raw:
        assert raw.extract_thumb().data.shape == (756, 1008, 3)


def test_write_dng_refuses_an_unknown_preview(photo: Image.Image, tmp_path: Path):
    with pytest.raises(ValueError, match="preview"):
        photos.write_dng(tmp_path / "p.dng", np.asarray(photo), preview="webp")


def test_a_12_mp_dng_is_written_in_well_under_a_second_or_two(tmp_path: Path):
    # Benchmarks write corpora of 12 MP DNGs, one per preview shape.
    rgb = np.random.default_rng(0).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
    started = time.perf_counter()
    photos.write_dng(tmp_path / "big.dng", rgb, preview="jpeg")
    assert time.perf_counter() - started < 3.0


def test_tiff_raw_has_no_dng_version_but_libraw_demosaics_it(photo: Image.Image, tmp_path: Path):
    path = photos.write_dng(tmp_path / "p.nef", np.asarray(photo), preview=False, dng=False)
    tags = Image.Exif()
    tags.load(path.read_bytes())
    assert 50706 not in tags and 271 in tags  # no DNGVersion; a make, as every camera writes
    rgb = _raw_rgb(path)
    reference = np.asarray(photo.resize((320, 240)), dtype=np.float32)
    assert np.abs(rgb.astype(np.float32) - reference).mean() < 15


@pytest.mark.parametrize(
    ("suffix", "magic"),
    [
        (".cr3", b"\x00\x00\x00\x18ftypcrx "),
        (".raf", b"FUJIFILMCCD-RAW "),
        (".orf", b"IIRO"),
        (".rw2", b"IIU\x00"),
    ],
)
def test_exif_only_raw_containers_start_with_their_makers_magic(suffix: str, magic: bytes, tmp_path: Path):
    path = photos.write_exif_only_raw(tmp_path / f"p{suffix}", {"camera_make": "Acme"})
    assert path.read_bytes().startswith(magic)
    assert b"Acme" in path.read_bytes()


def test_exif_only_raw_refuses_other_containers(tmp_path: Path):
    with pytest.raises(ValueError):
        photos.write_exif_only_raw(tmp_path / "p.nef", {"camera_make": "Acme"})
