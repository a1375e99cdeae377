"""Perceptual hashes for finding the same picture in another file, and a sharpness score for
picking the best shot of a burst.

`perceptual_hash` is the classic DCT pHash (Zauner; what `imagehash.phash` computes): grayscale,
32×32 LANCZOS, 2-D DCT-II, the 8×8 lowest frequencies (DC included) compared with their median,
64 bits packed big-endian, row-major, as 16 lowercase hex digits. A JPEG re-encode, a resize, a
PNG round-trip or stripped metadata move it by a few bits; different scenes land about 32 apart.

It is written here in NumPy rather than taken from the `imagehash` package because that package
pulls in SciPy and PyWavelets, tens of MB, for one 32×32 DCT, which is two products with a fixed
orthonormal matrix. The orthonormal scaling weighs the first row and column of coefficients by
1/√2 against SciPy's unnormalised DCT, so a few bits can differ from `imagehash.phash`: compare
hashes made by this module with each other, not with imagehash's.

`close_pairs` finds every pair within a Hamming distance among many hashes by multi-index hashing
(pigeonhole): cut the 64 bits into max_distance + 1 bands, and two hashes within max_distance
agree exactly on at least one of them, so only hashes sharing a band value need comparing.

`sharpness` is the variance of the Laplacian (Pech-Pacheco et al.) on a copy at most 512 px on
its long side. `fingerprint` gives both from one grayscale conversion, as ingest wants them.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from PIL import Image

HASH_BITS = 64
HASH_HEX_DIGITS = HASH_BITS // 4
MAX_SEARCH_DISTANCE = 32
WORKING_SIZE = 512

_HASH_SIDE = 8
_DCT_SIDE = 32
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_ALL_BITS = np.uint64(2**64 - 1)


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n, dtype=np.float64)[:, None]
    i = np.arange(n, dtype=np.float64)[None, :]
    matrix = np.sqrt(2.0 / n) * np.cos(np.pi * (2.0 * i + 1.0) * k / (2.0 * n))
    matrix[0] /= np.sqrt(2.0)
    return matrix


_DCT = _dct_matrix(_DCT_SIDE)


def dct2(block: np.ndarray) -> np.ndarray:
    """Orthonormal 2-D DCT-II of a 32×32 block (float64)."""
    return _DCT @ np.asarray(block, dtype=np.float64) @ _DCT.T


def perceptual_hash(image: Image.Image) -> str:
    """The 64-bit DCT pHash of `image` (any Pillow mode) as 16 lowercase hex digits."""
    return _hash_of_gray(_working_gray(image))


def sharpness(image: Image.Image) -> float:
    """Variance of the Laplacian of `image` in grayscale at most 512 px on its long side
    (3 decimals). Higher is sharper; comparable between resolutions of the same scene."""
    return _laplacian_variance(_working_gray(image))


def fingerprint(image: Image.Image) -> dict[str, Any]:
    """{"phash": perceptual_hash(image), "sharpness": sharpness(image)}, converting once."""
    gray = _working_gray(image)
    return {"phash": _hash_of_gray(gray), "sharpness": _laplacian_variance(gray)}


def hash_to_int(h: str) -> int:
    """The 64-bit integer a 16-hex-digit hash spells. Raises ValueError for anything else."""
    # int(h, 16) alone would also take "0x", "_" and whitespace, which no hash of ours contains.
    if len(h) != HASH_HEX_DIGITS or not _HEX_DIGITS.issuperset(h):
        raise ValueError(f"not a {HASH_BITS}-bit hex hash: {h!r}")
    return int(h, 16)


def hamming(a: str, b: str) -> int:
    """How many of the 64 bits differ between two hashes."""
    return (hash_to_int(a) ^ hash_to_int(b)).bit_count()


def hashes_to_array(hashes: Sequence[str]) -> np.ndarray:
    """Hex hashes as a 1-D uint64 array, the input of `close_pairs`."""
    return np.array([hash_to_int(h) for h in hashes], dtype=np.uint64)


def close_pairs(hashes: np.ndarray, max_distance: int) -> list[tuple[int, int, int]]:
    """Every (i, j, distance) with i < j whose hashes differ in at most `max_distance` bits,
    sorted by (i, j). Exact. `hashes` is a 1-D uint64 array (see `hashes_to_array`).

    Raises ValueError for a max_distance outside [0, 32]. See `close_pairs_array`, which this
    wraps, for the cost: k identical hashes make k(k-1)/2 pairs, some 130 bytes each as tuples.
    """
    first, second, distance = _close_pair_columns(hashes, max_distance)
    return list(zip(first.tolist(), second.tolist(), distance.tolist(), strict=True))


def close_pairs_array(hashes: np.ndarray, max_distance: int) -> np.ndarray:
    """`close_pairs` as an int64 array of shape (pairs, 3): 24 bytes a pair instead of ~130.

    Identical hashes are paired within their run and then searched as one, so a pile of blank
    images costs only its output; every bucket is walked one offset at a time, so at most
    len(hashes) candidates are held whatever its size. Random hashes: N = 100,000 within 8 bits
    in under a second. From max_distance 15 the bands are too narrow to prune anything and one
    bucket holds all: an O(N²) scan, still in O(N) memory.
    """
    return np.stack(_close_pair_columns(hashes, max_distance), axis=1)


def _close_pair_columns(hashes: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not 0 <= max_distance <= MAX_SEARCH_DISTANCE:
        raise ValueError(f"max_distance must be within [0, {MAX_SEARCH_DISTANCE}], not {max_distance}")
    values = np.asarray(hashes)
    if values.ndim != 1:
        raise ValueError(f"hashes must be a 1-D array, not of shape {values.shape}")
    if values.size and not np.issubdtype(values.dtype, np.integer):
        raise TypeError(f"hashes must be unsigned 64-bit integers, not {values.dtype}")
    values = values.astype(np.uint64, copy=False)

    n = values.size
    # Pairs are kept as one int64 key each, i * n + j (i < j): a third of three columns, sortable
    # in place, and the distance is recomputed from the two hashes at the end.
    keys = [_pair_keys(i, j, n) for i, j, _ in _band_pairs(values, _ALL_BITS, 0, [])]
    unique, run_start, run_size, order = _runs(values)
    if max_distance > 0 and unique.size > 1:
        masks: list[np.uint64] = []
        for mask in _band_masks(max_distance):
            for a, b, _ in _band_pairs(unique, mask, max_distance, masks):
                keys.append(_pair_keys(*_members_of_pairs(a, b, run_start, run_size, order), n))
            masks.append(mask)
    key = np.concatenate(keys) if keys else np.empty(0, dtype=np.int64)
    del keys
    key.sort()
    first, second = np.divmod(key, n)
    del key
    return first, second, _popcount(values[first] ^ values[second]).astype(np.int64)


def _pair_keys(first: np.ndarray, second: np.ndarray, n: int) -> np.ndarray:
    low = np.minimum(first, second).astype(np.int64)
    return low * n + np.maximum(first, second)


# ------------------------------------------------------------------ pictures


def _working_gray(image: Image.Image) -> Image.Image:
    # One copy serves the hash and the sharpness: at 512 px the 32×32 hash is already stable,
    # and the Laplacian measures the same scale whatever the camera's resolution.
    gray = _grayscale(image)
    long_side = max(gray.size)
    if long_side > WORKING_SIZE:
        scale = WORKING_SIZE / long_side
        size = (max(1, round(gray.width * scale)), max(1, round(gray.height * scale)))
        # reducing_gap box-reduces first: 12 MP to 512 px in ~10 ms instead of ~40 ms, same hash.
        gray = gray.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
    return gray


def _grayscale(image: Image.Image) -> Image.Image:
    if image.width == 0 or image.height == 0:
        raise ValueError(f"cannot fingerprint an empty {image.width}x{image.height} image")
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        return _high_depth_gray(image)
    if image.has_transparency_data:
        # Viewers show transparent pixels on white; what lies under them is arbitrary (often black).
        rgba = image if image.mode in ("RGBA", "LA") else image.convert("RGBA")
        la = rgba.convert("LA")
        white = Image.new("L", image.size, 255)
        white.paste(la.getchannel("L"), mask=la.getchannel("A"))
        return white
    if image.mode == "LAB":
        # Pillow converts LAB to nothing else, and its L* channel is the lightness we want.
        return image.getchannel("L")
    return image if image.mode == "L" else image.convert("L")


def _high_depth_gray(image: Image.Image) -> Image.Image:
    # Pillow's convert("L") clips 16-bit values at 255, turning most of a 16-bit photo white.
    pixels = np.asarray(image, dtype=np.float32)
    if image.mode.startswith("I;16") or (pixels.size and pixels.max() > 255.0):
        pixels = pixels / 257.0
    # Kept as float ("F") so the resizes lose none of the extra depth.
    return Image.fromarray(np.clip(pixels, 0.0, 255.0).astype(np.float32))


def _hash_of_gray(gray: Image.Image) -> str:
    small = gray.resize((_DCT_SIDE, _DCT_SIDE), Image.Resampling.LANCZOS)
    low = dct2(np.asarray(small, dtype=np.float64))[:_HASH_SIDE, :_HASH_SIDE]
    # Rounding turns the ~1e-13 float noise a flat picture leaves in its AC terms into exact zeros,
    # so every blank picture hashes alike (8000000000000000) instead of to noise.
    low = np.round(low, 6)
    bits = low > np.median(low)
    return np.packbits(bits.ravel()).tobytes().hex()


def _laplacian_variance(gray: Image.Image) -> float:
    g = np.asarray(gray, dtype=np.float64)
    if g.shape[0] < 3 or g.shape[1] < 3:
        return 0.0
    laplacian = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4.0 * g[1:-1, 1:-1]
    return round(float(laplacian.var()), 3)


# ------------------------------------------------------------------ searching hashes


def _popcount_table(x: np.ndarray) -> np.ndarray:
    # NumPy < 2 has no bitwise_count: count the bits of each byte by table.
    as_bytes = np.ascontiguousarray(x, dtype=np.uint64).view(np.uint8).reshape(-1, 8)
    return _BYTE_BITS[as_bytes].sum(axis=1, dtype=np.uint8)


_BYTE_BITS = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
_popcount = getattr(np, "bitwise_count", _popcount_table)


def _band_masks(max_distance: int) -> list[np.uint64]:
    count = max_distance + 1
    widths = [HASH_BITS // count + (1 if k < HASH_BITS % count else 0) for k in range(count)]
    # Random hashes share a w-bit band value with a fraction 2^-w of the others; once the bands
    # together compare more pairs than a full scan would, one band of 0 bits (a full scan) is cheaper.
    if sum(2.0**-w for w in widths) >= 1.0:
        return [np.uint64(0)]
    shifts = np.cumsum([0, *widths[:-1]]).tolist()
    return [np.uint64(((1 << width) - 1) << shift) for shift, width in zip(shifts, widths, strict=True)]


def _runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Distinct values ascending; where each one's run starts in `order` and its length; `order`."""
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    # No values, no runs: a leading True would start one at index 0 of an empty array.
    run_start = np.flatnonzero(np.concatenate(([values.size > 0], ordered[1:] != ordered[:-1])))
    run_size = np.diff(np.append(run_start, values.size))
    return ordered[run_start], run_start, run_size, order


def _band_pairs(
    values: np.ndarray, mask: np.uint64, max_distance: int, earlier_masks: list[np.uint64]
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Index pairs of `values` within max_distance that agree on this band and on no earlier one.

    Sorted by band value, a bucket is a run; pairing every position with the one d further on,
    d = 1, 2, … up to the longest run, meets every pair in a bucket exactly once.
    """
    keys = values & mask
    order = np.argsort(keys, kind="stable")
    ordered = values[order]
    ordered_keys = keys[order]
    n = values.size
    run_start = np.flatnonzero(np.concatenate(([True], ordered_keys[1:] != ordered_keys[:-1])))
    run_size = np.diff(np.append(run_start, n))
    # Later members of the same bucket, for each position.
    remaining = np.repeat(run_start + run_size, run_size) - np.arange(n) - 1
    at_least = np.cumsum(np.bincount(remaining)[::-1])[::-1]
    active: np.ndarray | None = None
    for d in range(1, len(at_least)):
        # Slices across the whole array beat gathering while most positions still have a partner
        # d further on in their bucket; the pairs they add across buckets are dropped below.
        if active is None and at_least[d] * 3 < n - d:
            active = np.flatnonzero(remaining >= d)
        elif active is not None:
            active = active[remaining[active] >= d]
        first: np.ndarray | slice = slice(0, n - d) if active is None else active
        second: np.ndarray | slice = slice(d, n) if active is None else active + d
        xor = ordered[first] ^ ordered[second]
        distance = _popcount(xor)
        hit = np.flatnonzero(distance <= max_distance)
        if hit.size == 0:
            continue
        hit_xor = xor[hit]
        keep = (hit_xor & mask) == 0
        # A pair is reported by the first band it agrees on only.
        for earlier in earlier_masks:
            keep &= (hit_xor & earlier) != 0
        hit = hit[keep]
        position = hit if active is None else active[hit]
        yield order[position], order[position + d], distance[hit]


def _members_of_pairs(
    a: np.ndarray, b: np.ndarray, run_start: np.ndarray, run_size: np.ndarray, order: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of distinct values (indices into the runs) as every pair of the inputs holding them."""
    size_b = run_size[b]
    count = run_size[a] * size_b
    pair = np.repeat(np.arange(a.size), count)
    offset = np.arange(pair.size) - np.repeat(np.cumsum(count) - count, count)
    first = order[run_start[a][pair] + offset // size_b[pair]]
    second = order[run_start[b][pair] + offset % size_b[pair]]
    return first, second
