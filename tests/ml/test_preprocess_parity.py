"""Our NumPy/Pillow preprocessing + ONNX Runtime against a torch reference with the same weights.

The reference transform follows OpenCLIP's inference transform as torchvision runs it on PIL images:
Resize(S) (PIL bicubic on the shortest side, long side truncated), CenterCrop(S) (offsets rounded
with Python's round), ToTensor, Normalize. The reference model is the torch twin of the ONNX files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from shoebox.ml.models.clip import ClipModel
from shoebox.ml.preprocess import preprocess

torch = pytest.importorskip("torch")
from shoebox.ml.models.testmodel import load_torch_reference  # noqa: E402

# Landscape, portrait, 16:9, square, a panorama, one smaller than the input (upscaled), and odd
# sizes whose centre crop lands on a half pixel (where rounding differences would show).
PHOTO_SIZES = [
    (640, 480),
    (480, 640),
    (853, 480),
    (300, 300),
    (1200, 300),
    (150, 100),
    (1001, 667),
    (451, 1003),
]


def photo_like(width: int, height: int, seed: int) -> Image.Image:
    """Sky and ground gradients, a textured horizon, shapes, blur and sensor noise."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :, None]
    sky_top, sky_bottom, ground = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    pixels = sky_top * (1 - y) + sky_bottom * y + 20 * np.sin(6 * x + rng.uniform(0, 6))
    texture = 25 * np.sin(40 * x + 13 * y * rng.uniform(1, 3)) * np.cos(31 * y)
    pixels = np.where(y > rng.uniform(0.4, 0.75), ground * (0.6 + 0.4 * y) + texture, pixels)
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    short = min(width, height)
    for _ in range(int(rng.integers(4, 9))):
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.04, 0.25) * short
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        box = (
            (cx - r, cy - r, cx + r, cy + r)
            if rng.random() < 0.5
            else (cx - r, cy - r / 2, cx + r, cy + r / 2)
        )
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=color)
    img = img.filter(ImageFilter.GaussianBlur(radius=max(0.5, short / 400)))
    noisy = np.asarray(img, dtype=np.float32) + rng.normal(0, 4, (height, width, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def reference_transform(img: Image.Image, size: int, mean: tuple, std: tuple) -> torch.Tensor:
    width, height = img.size
    if width <= height:
        target = (size, int(size * height / width))
    else:
        target = (int(size * width / height), size)
    if target != (width, height):
        img = img.resize(target, Image.BICUBIC)
    tensor = torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div(255)
    top = int(round((tensor.shape[1] - size) / 2.0))
    left = int(round((tensor.shape[2] - size) / 2.0))
    tensor = tensor[:, top : top + size, left : left + size]
    mean_t = torch.tensor(mean).view(3, 1, 1)
    std_t = torch.tensor(std).view(3, 1, 1)
    return (tensor - mean_t) / std_t


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> ClipModel:
    clip = ClipModel(tiny_model_dir, device="cpu")
    clip.load()
    return clip


@pytest.fixture(scope="module")
def reference(tiny_model_dir: Path):
    return load_torch_reference(tiny_model_dir)


@pytest.fixture(scope="module")
def photos() -> list[Image.Image]:
    return [photo_like(w, h, seed) for seed, (w, h) in enumerate(PHOTO_SIZES)]


def test_preprocessed_pixels_match_the_torch_transform(model: ClipModel, photos: list[Image.Image]) -> None:
    cfg = model.preprocess_cfg
    for photo in photos:
        ours = preprocess(photo, cfg)
        theirs = reference_transform(photo, cfg.size, cfg.mean, cfg.std).numpy()
        assert ours.shape == theirs.shape == (3, cfg.size, cfg.size)
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5, err_msg=f"photo {photo.size}")


def test_image_embeddings_match_the_torch_reference(
    model: ClipModel, reference, photos: list[Image.Image]
) -> None:
    cfg = model.preprocess_cfg
    ours = model.embed_images(np.stack([preprocess(p, cfg) for p in photos]))
    with torch.no_grad():
        batch = torch.stack([reference_transform(p, cfg.size, cfg.mean, cfg.std) for p in photos])
        theirs = torch.nn.functional.normalize(reference.encode_image(batch), dim=-1).numpy()
    cosines = np.sum(ours * theirs, axis=1)
    assert cosines.min() >= 0.9999, dict(zip(PHOTO_SIZES, cosines.round(6), strict=True))


def test_embeddings_tell_photos_apart_beyond_the_parity_tolerance(model: ClipModel, photos) -> None:
    # Guards the parity test itself: if random weights mapped every photo to nearly the same vector,
    # a cosine of 0.9999 between ours and the reference would prove nothing. (A one-pixel crop shift
    # moves a tiny-model embedding by only ~1e-4, which is why the pixels are compared directly too.)
    embeddings = model.embed_images(np.stack([preprocess(p, model.preprocess_cfg) for p in photos]))
    similarity = embeddings @ embeddings.T
    off_diagonal = similarity[~np.eye(len(photos), dtype=bool)]
    assert off_diagonal.max() < 0.995


def test_text_embeddings_match_the_torch_reference(model: ClipModel, reference) -> None:
    texts = ["a photo of a dog", "Sunset over the BEACH", "", "two cats " * 60, "café crème, 12 € !"]
    ours = model.embed_texts(texts)
    ids = torch.from_numpy(model.tokenize(texts)["text"])
    with torch.no_grad():
        theirs = torch.nn.functional.normalize(reference.encode_text(ids), dim=-1).numpy()
    cosines = np.sum(ours * theirs, axis=1)
    assert cosines.min() >= 0.9999, cosines
