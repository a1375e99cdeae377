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


# ---------------------------------------------------------------- each family's transform


def reference_pixels(img: Image.Image, cfg: PreprocessConfig) -> np.ndarray:
    """OpenCLIP's two inference transforms, restated with Pillow and NumPy.

    squash (SigLIP, NLLB-CLIP): Resize((S, S)) — the whole picture, aspect ratio not kept;
    shortest (OpenAI, OpenCLIP, M-CLIP): Resize(S) on the short side (long side truncated), then
    CenterCrop(S) with offsets rounded half to even. Then ToTensor and Normalize(mean, std).
    """
    size = cfg.size
    if cfg.resize_mode == "squash":
        resized = np.asarray(img.resize((size, size), Image.BICUBIC), dtype=np.float64) / 255
    else:
        w, h = img.size
        target = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
        full = np.asarray(img.resize(target, Image.BICUBIC) if target != (w, h) else img, dtype=np.float64)
        top, left = round((full.shape[0] - size) / 2), round((full.shape[1] - size) / 2)
        resized = full[top : top + size, left : left + size] / 255
    normalised = (resized - np.array(cfg.mean)) / np.array(cfg.std)
    return normalised.transpose(2, 0, 1)


def framed(width: int, height: int) -> Image.Image:
    """A gradient with a red left edge and a blue right edge, 8 % of the width each."""
    pixels = np.asarray(gradient(width, height)).copy()
    edge = max(1, width * 8 // 100)
    pixels[:, :edge] = (255, 0, 0)
    pixels[:, -edge:] = (0, 0, 255)
    return Image.fromarray(pixels, "RGB")


@pytest.mark.parametrize("family", ["openclip", "siglip", "mclip", "nllb"])
def test_each_family_preprocesses_like_the_reference_transform(family_model_dirs, family: str) -> None:
    cfg = PreprocessConfig.from_file(family_model_dirs[family] / "visual" / "preprocess_cfg.json")
    assert cfg.resize_mode == ("squash" if family in ("siglip", "nllb") else "shortest")
    for width, height in [(640, 480), (480, 640), (1001, 667), (150, 100), (224, 224)]:
        img = framed(width, height)
        np.testing.assert_allclose(
            preprocess(img, cfg), reference_pixels(img, cfg), atol=1e-5, err_msg=f"{width}x{height}"
        )


def test_siglip_reads_its_mean_and_std_of_one_half(family_model_dirs) -> None:
    cfg = PreprocessConfig.from_file(family_model_dirs["siglip"] / "visual" / "preprocess_cfg.json")
    assert cfg.mean == cfg.std == (0.5, 0.5, 0.5)
    black, white = Image.new("RGB", (300, 200), (0, 0, 0)), Image.new("RGB", (300, 200), (255, 255, 255))
    np.testing.assert_allclose(preprocess(black, cfg), -1.0, atol=1e-6)
    np.testing.assert_allclose(preprocess(white, cfg), 1.0, atol=1e-6)


def test_squash_keeps_the_whole_picture_where_shortest_crops_its_sides() -> None:
    img = framed(800, 400)
    squash = preprocess(img, PreprocessConfig(size=224, mean=(0, 0, 0), std=(1, 1, 1), resize_mode="squash"))
    crop = preprocess(img, PreprocessConfig(size=224, mean=(0, 0, 0), std=(1, 1, 1), resize_mode="shortest"))
    red, blue = np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0])
    np.testing.assert_allclose(squash[:, 112, 2], red, atol=0.02)
    np.testing.assert_allclose(squash[:, 112, -3], blue, atol=0.02)
    assert np.abs(crop[:, 112, 2] - red).max() > 0.5 and np.abs(crop[:, 112, -3] - blue).max() > 0.5
