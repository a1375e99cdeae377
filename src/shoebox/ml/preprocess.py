"""CLIP image preprocessing in NumPy/Pillow, identical to OpenCLIP's `image_transform` for inference.

OpenCLIP (resize_mode "shortest") is torchvision's Resize(S, bicubic) on a PIL image, then
CenterCrop(S), ToTensor and Normalize(mean, std). Each step is reproduced exactly here, including
torchvision's truncation of the long side and its rounding of the crop offset, so embeddings match
the reference pipeline (see tests/ml/test_preprocess_parity.py). The resize is
`shoebox.imaging.resize_for_model`, which the ingest's renditions use too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# The resize is shared with the ingest side, whose renditions must preprocess exactly alike.
from shoebox.imaging.renditions import RESAMPLING, resize_for_model


@dataclass(frozen=True)
class PreprocessConfig:
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"

    def __post_init__(self) -> None:
        if self.interpolation not in RESAMPLING:
            raise ValueError(f"unsupported interpolation {self.interpolation!r}")
        if self.resize_mode not in ("shortest", "squash"):
            raise ValueError(f"unsupported resize_mode {self.resize_mode!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        size = data["size"]
        # OpenCLIP writes [H, W]; CLIP models are square.
        if isinstance(size, (list, tuple)):
            if len(set(size)) != 1:
                raise ValueError(f"non-square input size {size} is not supported")
            size = size[0]
        return cls(
            size=int(size),
            mean=tuple(float(x) for x in data["mean"]),  # type: ignore[arg-type]
            std=tuple(float(x) for x in data["std"]),  # type: ignore[arg-type]
            interpolation=str(data.get("interpolation", "bicubic")),
            resize_mode=str(data.get("resize_mode", "shortest")),
        )

    @classmethod
    def from_file(cls, path: Path) -> PreprocessConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


def center_crop_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    # torchvision's CenterCrop uses Python's round(), which rounds halves to even.
    left = int(round((width - size) / 2.0))
    top = int(round((height - size) / 2.0))
    return left, top, left + size, top + size


def preprocess(img: Image.Image, cfg: PreprocessConfig) -> np.ndarray:
    """An RGB PIL image → float32 array [3, S, S], normalised with the model's mean/std."""
    if img.mode != "RGB":
        img = img.convert("RGB")
    size = cfg.size
    if cfg.resize_mode == "squash":
        if img.size != (size, size):
            img = img.resize((size, size), RESAMPLING[cfg.interpolation])
    else:
        img = resize_for_model(img, size, cfg.interpolation)
        if img.size != (size, size):
            img = img.crop(center_crop_box(img.width, img.height, size))
    pixels = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    mean = np.asarray(cfg.mean, dtype=np.float32)
    std = np.asarray(cfg.std, dtype=np.float32)
    normalised = (pixels - mean) / std
    return np.ascontiguousarray(normalised.transpose(2, 0, 1))
