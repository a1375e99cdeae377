"""Perceptual hashes, Hamming search and sharpness (shoebox.imaging.fingerprint).

Every picture is generated here (seeded gradients and shapes, or shoebox.devtools.photos), and the
search is checked against a plain all-pairs scan.
"""

from __future__ import annotations

import io
import itertools
import math
import re
from datetime import datetime

import numpy as np
import pytest
from PIL import Image, ImageCms, ImageDraw, ImageEnhance, ImageFilter

from shoebox.devtools import photos
from shoebox.imaging import fingerprint as fp
from shoebox.imaging.fingerprint import (
    HASH_BITS,
    MAX_SEARCH_DISTANCE,
    close_pairs,
    close_pairs_array,
    dct2,
    fingerprint,
    hamming,
    hash_to_int,
    hashes_to_array,
    perceptual_hash,
    sharpness,
)

HEX_HASH = re.compile(r"[0-9a-f]{16}")
BLANK_HASH = "8000000000000000"  # only the DC term above the median
# What stays "the same picture": the bound duplicate detection is expected to work with.
NEAR = 6


def scene(seed: int, width: int = 320, height: int = 240) -> Image.Image:
    """A smooth two-colour gradient at a random angle under random ellipses and rectangles."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height)[:, None]
    x = np.linspace(0.0, 1.0, width)[None, :]
    angle = rng.uniform(0.0, 2.0 * np.pi)
    t = np.cos(angle) * x + np.sin(angle) * y
    t = (t - t.min()) / (t.max() - t.min())
    start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    img = Image.fromarray((start + (end - start) * t[..., None]).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for _ in range(8):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        half = rng.uniform(0.05, 0.2) * width
        box = (cx - half, cy - half, cx + half, cy + half)
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse(box, fill=fill)
        else:
            draw.rectangle(box, fill=fill)
    return img


def reopened(img: Image.Image, fmt: str, **options) -> Image.Image:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **options)
    decoded = Image.open(io.BytesIO(buffer.getvalue()))
    decoded.load()
    return decoded


def without_app1(jpeg: bytes) -> bytes:
    """The JPEG with its APP1 (EXIF/XMP) segments cut out, the entropy-coded data untouched."""
    assert jpeg[:2] == b"\xff\xd8"
    out, pos = [jpeg[:2]], 2
    while jpeg[pos + 1] != 0xDA:  # up to the start of scan
        assert jpeg[pos] == 0xFF
        length = int.from_bytes(jpeg[pos + 2 : pos + 4], "big")
        if jpeg[pos + 1] != 0xE1:
            out.append(jpeg[pos : pos + 2 + length])
        pos += 2 + length
    out.append(jpeg[pos:])
    return b"".join(out)


def exif_stripped(img: Image.Image) -> Image.Image:
    return Image.open(io.BytesIO(without_app1(photos.jpeg_bytes(img, exif=CAMERA_EXIF))))


CAMERA_EXIF = {"taken_at": datetime(2022, 8, 1, 9, 30), "camera_make": "Nikon", "camera_model": "Z6"}


@pytest.fixture(scope="module")
def pictures() -> list[Image.Image]:
    return [
        photos.synthetic_photo(640, 480, seed=3),
        photos.synthetic_photo(480, 640, seed=11),
        scene(5, 640, 480),
        scene(8, 400, 400),
    ]


# ------------------------------------------------------------------ the hash


def test_a_hash_is_16_lowercase_hex_digits_and_the_same_every_time(pictures: list[Image.Image]):
    assert HASH_BITS == 64
    for img in pictures:
        h = perceptual_hash(img)
        assert HEX_HASH.fullmatch(h), h
        assert perceptual_hash(img) == h
        assert perceptual_hash(img.copy()) == h
    assert len({perceptual_hash(img) for img in pictures}) == len(pictures)


def _gray(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("L"))


MODES = {
    "RGB": lambda img: img,
    "L": lambda img: img.convert("L"),
    "RGBA-opaque": lambda img: img.convert("RGBA"),
    "LA-opaque": lambda img: img.convert("LA"),
    "P-adaptive": lambda img: img.convert("P", palette=Image.Palette.ADAPTIVE, colors=256),
    "P-web": lambda img: img.convert("P"),
    "CMYK": lambda img: img.convert("CMYK"),
    "YCbCr": lambda img: img.convert("YCbCr"),
    "I;16": lambda img: Image.fromarray(_gray(img).astype(np.uint16) * 257),
    "I;16B": lambda img: Image.frombytes("I;16B", img.size, (_gray(img).astype(">u2") * 257).tobytes()),
    "I-8bit": lambda img: Image.fromarray(_gray(img).astype(np.int32)),
    "I-16bit": lambda img: Image.fromarray(_gray(img).astype(np.int32) * 257),
    "F": lambda img: Image.fromarray(_gray(img).astype(np.float32)),
}


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_hashes_like_the_rgb_picture(mode: str):
    img = scene(21)
    converted = MODES[mode](img)
    assert converted.mode == mode.split("-")[0]
    h = perceptual_hash(converted)
    assert HEX_HASH.fullmatch(h)
    # 16-bit pictures are scaled down by 257, not clipped at 255 (which would make them white).
    assert hamming(h, perceptual_hash(img)) <= 2


def test_opaque_alpha_and_grayscale_hash_exactly_like_the_rgb_picture():
    img = scene(22)
    h = perceptual_hash(img)
    assert perceptual_hash(img.convert("L")) == h
    assert perceptual_hash(img.convert("RGBA")) == h


def test_transparent_pixels_count_as_white_whatever_colour_they_hide():
    rgba = np.asarray(scene(23).convert("RGBA")).copy()
    rgba[:, :120, 3] = 0
    black_under, noise_under, white_under = rgba.copy(), rgba.copy(), rgba.copy()
    black_under[:, :120, :3] = 0
    noise_under[:, :120, :3] = np.random.default_rng(0).integers(0, 256, (240, 120, 3), dtype=np.uint8)
    white_under[:, :120, :3] = 255
    on_white = perceptual_hash(Image.fromarray(white_under[..., :3]))
    for pixels in (rgba, black_under, noise_under):
        assert perceptual_hash(Image.fromarray(pixels)) == on_white


def test_a_lab_picture_hashes_its_lightness_channel():
    img = scene(24)
    srgb_to_lab = ImageCms.buildTransform(
        ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB"
    )
    lab = ImageCms.applyTransform(img, srgb_to_lab)
    assert lab.mode == "LAB"
    assert perceptual_hash(lab) == perceptual_hash(lab.getchannel("L"))


@pytest.mark.parametrize("colour", [(255, 255, 255), (128, 128, 128), (12, 200, 40), (1, 1, 1)])
@pytest.mark.parametrize("size", [(1, 1), (2, 3), (64, 64), (3000, 2000)])
def test_a_blank_picture_of_any_size_and_colour_hashes_to_the_dc_bit_alone(size, colour):
    assert perceptual_hash(Image.new("RGB", size, colour)) == BLANK_HASH


def test_a_black_picture_is_within_a_bit_of_any_other_blank_one():
    # Its DC term is 0 too, so no coefficient is above the median.
    assert hamming(perceptual_hash(Image.new("L", (50, 50), 0)), BLANK_HASH) <= 1


def test_a_one_pixel_picture_has_a_hash_and_no_sharpness():
    for mode, colour in (("RGB", (200, 10, 10)), ("L", 77), ("RGBA", (0, 0, 0, 0)), ("I;16", 40000)):
        img = Image.new(mode, (1, 1), colour)
        assert HEX_HASH.fullmatch(perceptual_hash(img))
        assert sharpness(img) == 0.0
        assert fingerprint(img) == {"phash": perceptual_hash(img), "sharpness": 0.0}


def test_an_empty_picture_is_refused():
    for size in ((0, 5), (5, 0)):
        with pytest.raises(ValueError, match="empty"):
            perceptual_hash(Image.new("RGB", size))


@pytest.mark.parametrize("size", [(12000, 1), (1, 12000), (10000, 3), (6000, 40), (40, 6000)])
def test_a_very_long_thin_picture_has_a_hash(size: tuple[int, int]):
    img = scene(31, *size)
    h = perceptual_hash(img)
    assert HEX_HASH.fullmatch(h)
    assert sharpness(img) >= 0.0


def test_a_long_strip_hashes_like_its_half_size_copy():
    strip = scene(32, 8000, 40)
    half = strip.resize((4000, 20), Image.Resampling.LANCZOS)
    assert hamming(perceptual_hash(strip), perceptual_hash(half)) <= NEAR
    assert perceptual_hash(strip) != perceptual_hash(strip.transpose(Image.Transpose.FLIP_LEFT_RIGHT))


# ------------------------------------------------------------------ robustness and discrimination

COPIES = {
    "jpeg-q60": lambda img: reopened(img, "JPEG", quality=60),
    "half-size": lambda img: img.resize((img.width // 2, img.height // 2), Image.Resampling.LANCZOS),
    "png": lambda img: reopened(img, "PNG"),
    "exif-stripped": exif_stripped,
    "brighter": lambda img: ImageEnhance.Brightness(img).enhance(1.1),
    "darker": lambda img: ImageEnhance.Brightness(img).enhance(0.9),
}


@pytest.mark.parametrize("copy", COPIES)
def test_a_copy_of_the_same_picture_stays_near(copy: str, pictures: list[Image.Image]):
    for img in pictures:
        assert hamming(perceptual_hash(img), perceptual_hash(COPIES[copy](img))) <= NEAR


def test_a_png_round_trip_and_an_exif_strip_change_no_bit(pictures: list[Image.Image]):
    img = pictures[0]
    assert perceptual_hash(reopened(img, "PNG")) == perceptual_hash(img)
    with_exif = Image.open(io.BytesIO(photos.jpeg_bytes(img, exif=CAMERA_EXIF)))
    stripped = exif_stripped(img)
    assert with_exif.getexif().get(0x010F) == "Nikon"
    assert len(stripped.getexif()) == 0
    assert perceptual_hash(stripped) == perceptual_hash(with_exif)


def test_unrelated_scenes_land_about_half_the_bits_apart():
    hashes = [perceptual_hash(scene(seed)) for seed in range(100, 130)]
    distances = [hamming(a, b) for a, b in itertools.combinations(hashes, 2)]
    assert len(distances) == 30 * 29 // 2
    assert min(distances) > NEAR
    assert abs(float(np.mean(distances)) - HASH_BITS / 2) < 4


# ------------------------------------------------------------------ the DCT


def reference_dct2(block: np.ndarray) -> np.ndarray:
    """Orthonormal 2-D DCT-II by its definition, one coefficient at a time (O(n^4)):
    X[u, v] = a(u) a(v) Σ_x Σ_y f[x, y] cos((2x+1)uπ / 2n) cos((2y+1)vπ / 2n),
    a(0) = √(1/n), a(k) = √(2/n)."""
    n = block.shape[0]
    x = np.arange(n)[:, None]
    y = np.arange(n)[None, :]
    out = np.empty((n, n))
    for u in range(n):
        for v in range(n):
            a_u = math.sqrt((1 if u == 0 else 2) / n)
            a_v = math.sqrt((1 if v == 0 else 2) / n)
            basis = np.cos((2 * x + 1) * u * np.pi / (2 * n)) * np.cos((2 * y + 1) * v * np.pi / (2 * n))
            out[u, v] = a_u * a_v * float((block * basis).sum())
    return out


def reference_dct_matrix(n: int) -> np.ndarray:
    """Row k is the k-th orthonormal DCT-II basis vector."""
    return np.array(
        [
            [
                math.sqrt((1 if k == 0 else 2) / n) * math.cos((2 * i + 1) * k * math.pi / (2 * n))
                for i in range(n)
            ]
            for k in range(n)
        ]
    )


def test_dct2_matches_the_definition_on_a_random_block():
    block = np.random.default_rng(42).uniform(0, 255, (32, 32))
    np.testing.assert_allclose(dct2(block), reference_dct2(block), rtol=0, atol=1e-9)


def test_dct2_is_orthonormal():
    block = np.random.default_rng(43).normal(0, 50, (32, 32))
    coefficients = dct2(block)
    np.testing.assert_allclose((coefficients**2).sum(), (block**2).sum(), rtol=1e-12)
    np.testing.assert_allclose(dct2(np.eye(32)), np.eye(32), atol=1e-12)  # D Dᵀ = I
    basis = reference_dct_matrix(32)
    np.testing.assert_allclose(basis.T @ coefficients @ basis, block, atol=1e-9)  # inverse: Dᵀ X D


def test_dct2_of_a_flat_block_is_its_dc_term_alone():
    coefficients = dct2(np.full((32, 32), 10.0))
    assert coefficients[0, 0] == pytest.approx(32 * 10.0)
    coefficients[0, 0] = 0.0
    np.testing.assert_allclose(coefficients, 0.0, atol=1e-10)
    assert dct2(np.ones((32, 32), dtype=np.uint8)).dtype == np.float64


# ------------------------------------------------------------------ hex, integers, Hamming


def test_hex_and_integers_round_trip():
    values = np.random.default_rng(5).integers(0, 2**64, size=200, dtype=np.uint64, endpoint=False)
    values = [0, 1, 2**63, 2**64 - 1, *values.tolist()]
    hashes = [f"{v:016x}" for v in values]
    assert [hash_to_int(h) for h in hashes] == values
    array = hashes_to_array(hashes)
    assert array.dtype == np.uint64 and array.shape == (len(values),)
    assert array.tolist() == values
    assert [f"{v:016x}" for v in array.tolist()] == hashes
    assert hash_to_int("ABCDEF0123456789") == hash_to_int("abcdef0123456789") == 0xABCDEF0123456789


def test_hashes_to_array_of_nothing_is_an_empty_uint64_array():
    array = hashes_to_array([])
    assert array.dtype == np.uint64 and array.shape == (0,)


def test_hamming_counts_differing_bits():
    rng = np.random.default_rng(6)
    pairs = rng.integers(0, 2**64, size=(100, 2), dtype=np.uint64, endpoint=False).tolist()
    for a, b in pairs:
        ha, hb = f"{a:016x}", f"{b:016x}"
        assert hamming(ha, hb) == hamming(hb, ha) == bin(a ^ b).count("1")
        assert hamming(ha, ha) == 0
    assert hamming("0000000000000000", "ffffffffffffffff") == 64
    assert hamming("8000000000000000", "0000000000000001") == 2
    assert hamming("0f0f0f0f0f0f0f0f", "0F0F0F0F0F0F0F0E") == 1


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "123456789abcdef",  # 15 digits
        "0123456789abcdef0",  # 17 digits
        "0x23456789abcdef",  # int(…, 16) would take the prefix
        " 123456789abcdef",
        "123456789abcdef\n",
        "0123_456789abcde",
        "-123456789abcdef",
        "+123456789abcdef",
        "g123456789abcdef",
        "０１２３４５６７８９ａｂｃｄｅｆ",  # full-width digits, which int() reads
    ],
)
def test_anything_but_16_hex_digits_is_a_value_error(bad: str):
    with pytest.raises(ValueError, match="hex hash"):
        hash_to_int(bad)
    with pytest.raises(ValueError, match="hex hash"):
        hamming(bad, "0000000000000000")
    with pytest.raises(ValueError, match="hex hash"):
        hashes_to_array(["0000000000000000", bad])


# ------------------------------------------------------------------ close_pairs

_M1, _M2, _M4, _H01 = (
    np.uint64(v) for v in (0x5555555555555555, 0x3333333333333333, 0x0F0F0F0F0F0F0F0F, 0x0101010101010101)
)


def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64, by the classic SWAR sums (independent of the module's popcount)."""
    x = x - ((x >> np.uint64(1)) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    return (x * _H01) >> np.uint64(56)


def brute_force_pairs(values: np.ndarray, max_distance: int) -> set[tuple[int, int, int]]:
    """Every (i, j, d), i < j, d <= max_distance, by comparing each hash with every later one."""
    found = set()
    for i in range(values.size - 1):
        distance = popcount(values[i + 1 :] ^ values[i])
        for j in np.flatnonzero(distance <= max_distance).tolist():
            found.add((i, i + 1 + j, int(distance[j])))
    return found


def flipped(value: int, bits: int, rng: np.random.Generator) -> int:
    for bit in rng.choice(64, size=bits, replace=False).tolist():
        value ^= 1 << bit
    return value


def planted_hashes(random_count: int, sources: int, max_flips: int, seed: int) -> np.ndarray:
    """Random hashes, plus near-copies of some with 0..max_flips bits flipped, plus a pile of
    exact duplicates with duplicated near-copies, plus the extremes; shuffled."""
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 2**64, size=random_count, dtype=np.uint64, endpoint=False).tolist()
    for source in rng.choice(random_count, size=sources, replace=False).tolist():
        values += [flipped(values[source], bits, rng) for bits in range(max_flips + 1)]
    pile = values[0]
    values += [pile] * 6
    for bits in (1, 2, 5, 9):
        values += [flipped(pile, bits, rng)] * 3
    values += [0, 1, 3, 2**64 - 1, 2**64 - 2, 2**63, 2**63 - 1]
    return np.array(values, dtype=np.uint64)[rng.permutation(len(values))]


@pytest.fixture(scope="module")
def many_hashes() -> tuple[np.ndarray, set[tuple[int, int, int]]]:
    values = planted_hashes(random_count=16_000, sources=120, max_flips=16, seed=2024)
    return values, brute_force_pairs(values, 16)


def assert_well_formed(pairs: list[tuple[int, int, int]]) -> None:
    assert pairs == sorted(pairs)
    assert len(set(pairs)) == len(pairs)
    assert all(i < j for i, j, _ in pairs)


@pytest.mark.parametrize("max_distance", [0, 1, 3, 6, 10, 16])
def test_close_pairs_finds_exactly_what_a_full_scan_finds(max_distance: int, many_hashes):
    values, within_16 = many_hashes
    expected = {pair for pair in within_16 if pair[2] <= max_distance}
    found = close_pairs(values, max_distance)
    assert_well_formed(found)
    assert set(found) == expected
    assert len(expected) > 100  # the planted copies and the duplicates are in there
    np.testing.assert_array_equal(close_pairs_array(values, max_distance), np.array(found).reshape(-1, 3))


def test_the_distances_reported_are_the_hamming_distances_of_the_hashes(many_hashes):
    values, _ = many_hashes
    hexes = [f"{v:016x}" for v in values.tolist()]
    for i, j, d in close_pairs(values, 6):
        assert d == hamming(hexes[i], hexes[j])


def test_close_pairs_matches_a_full_scan_at_every_distance_on_clustered_hashes():
    values = planted_hashes(random_count=100, sources=8, max_flips=30, seed=7)
    everything = brute_force_pairs(values, HASH_BITS)
    assert len(everything) == values.size * (values.size - 1) // 2
    for max_distance in range(MAX_SEARCH_DISTANCE + 1):
        found = close_pairs(values, max_distance)
        assert_well_formed(found)
        assert set(found) == {pair for pair in everything if pair[2] <= max_distance}, max_distance


def test_close_pairs_without_numpy_bitwise_count(monkeypatch):
    # NumPy < 2 has no bitwise_count; the module falls back to a byte table.
    values = planted_hashes(random_count=3000, sources=30, max_flips=8, seed=8)
    monkeypatch.setattr(fp, "_popcount", fp._popcount_table)
    for max_distance in (0, 4, 8):
        assert set(close_pairs(values, max_distance)) == brute_force_pairs(values, max_distance)


@pytest.mark.parametrize("max_distance", [0, 1, 6, 16, MAX_SEARCH_DISTANCE])
def test_no_hashes_and_one_hash_make_no_pairs(max_distance: int):
    for hashes in (np.array([], dtype=np.uint64), hashes_to_array([]), []):
        assert close_pairs(hashes, max_distance) == []
        array = close_pairs_array(hashes, max_distance)
        assert array.shape == (0, 3) and array.dtype == np.int64
    assert close_pairs(hashes_to_array(["0123456789abcdef"]), max_distance) == []


@pytest.mark.parametrize("max_distance", [0, 5, MAX_SEARCH_DISTANCE])
def test_identical_hashes_pair_each_with_every_other(max_distance: int):
    k = 40
    values = np.full(k, 0xDEADBEEFCAFEF00D, dtype=np.uint64)
    found = close_pairs(values, max_distance)
    assert found == [(i, j, 0) for i in range(k) for j in range(i + 1, k)]
    assert close_pairs_array(values, max_distance).shape == (k * (k - 1) // 2, 3)


def test_distance_zero_finds_only_exact_duplicates():
    values = hashes_to_array(
        ["0000000000000000", "0000000000000001", "0000000000000000", "ffffffffffffffff", "ffffffffffffffff"]
    )
    assert close_pairs(values, 0) == [(0, 2, 0), (3, 4, 0)]
    assert close_pairs(values, 1) == [(0, 1, 1), (0, 2, 0), (1, 2, 1), (3, 4, 0)]


def test_the_search_distance_is_limited_to_max_search_distance():
    values = hashes_to_array(["0000000000000000", "00000000ffffffff", "000000ffffffffff"])
    assert MAX_SEARCH_DISTANCE == 32
    assert close_pairs(values, MAX_SEARCH_DISTANCE) == [(0, 1, 32), (1, 2, 8)]
    for bad in (MAX_SEARCH_DISTANCE + 1, 64, -1):
        with pytest.raises(ValueError, match="max_distance"):
            close_pairs(values, bad)
        with pytest.raises(ValueError, match="max_distance"):
            close_pairs_array(values, bad)


def test_close_pairs_wants_a_flat_array_of_integers():
    with pytest.raises(ValueError, match="1-D"):
        close_pairs(np.zeros((2, 2), dtype=np.uint64), 3)
    with pytest.raises(TypeError, match="unsigned 64-bit"):
        close_pairs(np.array([1.0, 2.0]), 3)
    # Signed 64-bit integers are read as the same bits.
    signed = np.array([-1, 2**63 - 1, 0], dtype=np.int64)
    assert close_pairs(signed, 1) == close_pairs(signed.view(np.uint64), 1) == [(0, 1, 1)]


# ------------------------------------------------------------------ sharpness and fingerprint


def test_a_blurred_copy_is_less_sharp(pictures: list[Image.Image]):
    for img in pictures:
        blurred = img.filter(ImageFilter.GaussianBlur(3))
        assert sharpness(blurred) < 0.5 * sharpness(img)
        assert sharpness(img.filter(ImageFilter.GaussianBlur(1))) > sharpness(blurred)


def test_a_flat_picture_has_no_sharpness():
    for img in (Image.new("RGB", (300, 200), (90, 140, 200)), Image.new("L", (2000, 1000), 0)):
        assert sharpness(img) == 0.0
    assert sharpness(Image.new("L", (2, 500), 128)) == 0.0  # too narrow for the Laplacian


def test_sharpness_is_comparable_between_resolutions_of_the_same_scene():
    # Both land at 512 px on the long side before the Laplacian.
    big = photos.synthetic_photo(1024, 768, seed=4)
    bigger = big.resize((3000, 2250), Image.Resampling.BICUBIC)
    assert sharpness(bigger) == pytest.approx(sharpness(big), rel=0.15)


def test_fingerprint_is_the_hash_and_the_sharpness_together(pictures: list[Image.Image]):
    for img in [*pictures, Image.new("L", (10, 10), 3), MODES["I;16"](scene(40, 3000, 900))]:
        result = fingerprint(img)
        assert set(result) == {"phash", "sharpness"}
        assert result["phash"] == perceptual_hash(img)
        assert result["sharpness"] == sharpness(img)
        assert isinstance(result["sharpness"], float)
