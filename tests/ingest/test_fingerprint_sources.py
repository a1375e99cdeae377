"""The perceptual hash an ingest stores, from the decode it already has or (for embeddings cached
before the hash existed) from the stored thumbnail: the two agree, so both kinds group together."""

from __future__ import annotations

from pathlib import Path

from shoebox import imaging
from shoebox.devtools import photos
from shoebox.imaging.fingerprint import hamming
from shoebox.ingest.stages import fingerprint_of, fingerprint_of_thumbnail, rendition, write_thumbnail


def test_the_thumbnail_gives_the_hash_of_the_decoded_picture(tmp_path: Path):
    for seed in range(6):
        data = photos.jpeg_bytes(photos.synthetic_photo(1600, 1200, seed=seed))
        decoded = imaging.decode_for_model(data, "x.jpg", min_side=256, max_pixels=10**8)
        small, _ = rendition(decoded.image, 224)
        rel = write_thumbnail(tmp_path, f"{seed:064x}", decoded.image, 256)
        from_decode = fingerprint_of(small, "x.jpg")
        from_thumb = fingerprint_of_thumbnail(tmp_path, rel, "x.jpg")
        assert hamming(from_decode["phash"], from_thumb["phash"]) <= 3


def test_a_missing_thumbnail_gives_no_fingerprint_rather_than_an_error(tmp_path: Path):
    assert fingerprint_of_thumbnail(tmp_path, "ab/missing.jpg", "x.jpg") == {}
    assert fingerprint_of_thumbnail(tmp_path, None, "x.jpg") == {}
