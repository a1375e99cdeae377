"""Renditions: the model-sized resize the ML service repeats as a no-op, thumbnails, the encoder."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from shoebox.devtools import photos
from shoebox.imaging import encode_jpeg, make_thumbnail, resize_for_model
from shoebox.ml.preprocess import PreprocessConfig, preprocess

# OpenAI CLIP's normalisation: what the real model sees.
CLIP = PreprocessConfig(
    size=224, mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711)
)
ASPECTS = [
    (640, 480),
    (480, 640),
    (1000, 700),
    (301, 1000),
    (4000, 3000),
    (225, 224),
    (224, 224),
    (3000, 1000),
]


def test_resize_for_model_scales_the_short_side_and_truncates_the_long_one():
    assert resize_for_model(Image.new("RGB", (640, 480)), 224).size == (298, 224)  # 298.67 → 298
    assert resize_for_model(Image.new("RGB", (480, 640)), 224).size == (224, 298)
    assert resize_for_model(Image.new("RGB", (100, 50)), 224).size == (448, 224)  # and enlarges


@pytest.mark.parametrize("size", [(298, 224), (224, 224), (224, 1000), (501, 224)])
def test_resize_for_model_returns_an_image_already_at_size_itself(size: tuple[int, int]):
    img = Image.new("RGB", size)
    assert resize_for_model(img, 224) is img


@pytest.mark.parametrize("size", ASPECTS, ids=[f"{w}x{h}" for w, h in ASPECTS])
def test_a_rendition_preprocesses_exactly_like_the_original(size: tuple[int, int]):
    original = photos.synthetic_photo(*size, seed=sum(size))
    rendition = resize_for_model(original, CLIP.size)
    np.testing.assert_array_equal(preprocess(rendition, CLIP), preprocess(original, CLIP))


@pytest.mark.parametrize("size", ASPECTS[:4], ids=[f"{w}x{h}" for w, h in ASPECTS[:4]])
def test_a_jpeg_rendition_keeps_the_clip_input_close(size: tuple[int, int]):
    original = photos.synthetic_photo(*size, seed=sum(size))
    sent = Image.open(io.BytesIO(encode_jpeg(resize_for_model(original, CLIP.size))))
    error = np.abs(preprocess(sent, CLIP) - preprocess(original, CLIP))
    # Normalised units: one level of 255 is about 0.015. Measured at quality 90, 4:4:4: mean
    # 0.02, 99th percentile 0.13; 4:2:0 doubles the tail on the colour edges.
    assert float(error.mean()) < 0.03
    assert float(np.quantile(error, 0.99)) < 0.16


def test_thumbnails_subsample_chroma_and_renditions_do_not():
    photo = photos.synthetic_photo(320, 240, seed=1)
    assert Image.open(io.BytesIO(make_thumbnail(photo))).layer[0][1:3] == (2, 2)  # luma sampled 2x2
    assert Image.open(io.BytesIO(encode_jpeg(photo))).layer[0][1:3] == (1, 1)


def test_encode_jpeg_writes_rgb_jpeg_of_any_mode():
    for mode in ("RGB", "L", "RGBA", "P"):
        decoded = Image.open(io.BytesIO(encode_jpeg(Image.new(mode, (40, 30)))))
        assert decoded.format == "JPEG" and decoded.size == (40, 30)


def test_encode_jpeg_quality_trades_size_for_fidelity():
    photo = photos.synthetic_photo(320, 240, seed=1)
    assert len(encode_jpeg(photo, quality=60)) < len(encode_jpeg(photo, quality=95))


def test_thumbnail_is_a_jpeg_at_most_256_on_its_long_side(photo: Image.Image):
    thumb = Image.open(io.BytesIO(make_thumbnail(photo.resize((1200, 800)))))
    assert thumb.format == "JPEG"
    assert thumb.size == (256, 171)


def test_thumbnail_of_a_small_image_is_not_enlarged():
    thumb = Image.open(io.BytesIO(make_thumbnail(Image.new("RGB", (100, 60), "white"))))
    assert thumb.size == (100, 60)
