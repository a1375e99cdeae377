"""preprocess(): OpenCLIP's inference transform, step by step (its resize: tests/imaging/test_renditions.py)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from shoebox.ml.preprocess import PreprocessConfig, center_crop_box, preprocess

CFG = PreprocessConfig(size=224, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def gradient(width: int, height: int) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    xs, ys = np.broadcast_arrays(x, y)
    rgb = np.stack([xs, ys, (xs + ys) / 2], -1)
    return Image.fromarray(rgb.astype(np.uint8), "RGB")


def test_config_reads_openclip_size_lists() -> None:
    cfg = PreprocessConfig.from_dict({"size": [224, 224], "mean": [0.1] * 3, "std": [0.2] * 3})
    assert (cfg.size, cfg.interpolation, cfg.resize_mode) == (224, "bicubic", "shortest")


def test_output_is_float32_channels_first_at_the_input_size() -> None:
    out = preprocess(gradient(640, 480), CFG)
    assert out.shape == (3, 224, 224) and out.dtype == np.float32 and out.flags.c_contiguous


def test_centre_crop_rounds_half_pixels_to_even_like_torchvision() -> None:
    assert center_crop_box(225, 224, 224) == (0, 0, 224, 224)  # round(0.5) == 0
    assert center_crop_box(227, 224, 224) == (2, 0, 226, 224)  # round(1.5) == 2
    assert center_crop_box(224, 229, 224) == (0, 2, 224, 226)  # round(2.5) == 2


def test_mean_and_std_normalise_each_channel() -> None:
    white = Image.new("RGB", (300, 300), (255, 255, 255))
    np.testing.assert_allclose(preprocess(white, CFG), (1.0 - 0.5) / 0.25, atol=1e-6)


def test_non_rgb_images_are_converted() -> None:
    grey = Image.new("L", (300, 240), 128)
    assert preprocess(grey, CFG).shape == (3, 224, 224)


def test_unknown_resize_mode_is_refused() -> None:
    with pytest.raises(ValueError):
        PreprocessConfig(size=224, mean=(0, 0, 0), std=(1, 1, 1), resize_mode="longest")
