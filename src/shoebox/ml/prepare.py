"""One uploaded file → the encoder's input tensor: decode, preprocess, caption; errors per image.

The service's decode pool runs this for every file of a batch, and the safe-batch probe runs it
on its own test rendition, so the probe times exactly the work a batch costs the service.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

from shoebox import imaging
from shoebox.ml.captioning import Captioner
from shoebox.ml.preprocess import PreprocessConfig, preprocess
from shoebox.protocol import ErrorCode, ShoeboxError

log = logging.getLogger(__name__)


class EncoderInput(Protocol):
    """What preparing an image needs to know of the model."""

    @property
    def input_size(self) -> int: ...

    @property
    def preprocess_cfg(self) -> PreprocessConfig: ...


@dataclass
class Prepared:
    """One image ready for the encoder, or the reason it is not."""

    array: np.ndarray | None = None
    width: int | None = None
    height: int | None = None
    caption: str | None = None
    error: ShoeboxError | None = None


def prepare_image(
    read: Callable[[], bytes],
    filename: str,
    model: EncoderInput,
    *,
    max_pixels: int,
    captioner: Captioner | None = None,
) -> Prepared:
    """bytes (from `read`) → original size + the encoder's input tensor, or the item's error."""
    try:
        data = read()
        decoded = imaging.decode_for_model(data, filename, min_side=model.input_size, max_pixels=max_pixels)
        array = preprocess(decoded.image, model.preprocess_cfg)
        caption = captioner.caption([decoded.image])[0] if captioner and captioner.enabled else None
        return Prepared(array, decoded.width, decoded.height, caption)
    except ShoeboxError as exc:
        return Prepared(error=exc)
    except Image.DecompressionBombError as exc:
        return Prepared(error=ShoeboxError(ErrorCode.IMAGE_TOO_LARGE, str(exc)))
    except MemoryError:
        return Prepared(
            error=ShoeboxError(ErrorCode.IMAGE_TOO_LARGE, "not enough memory to decode the image")
        )
    except Exception as exc:  # noqa: BLE001 - a decoder's surprise fails its item, not the batch
        log.warning("unexpected error decoding %s", filename, exc_info=True)
        return Prepared(error=ShoeboxError(ErrorCode.DECODING_IMAGE, f"{type(exc).__name__}: {exc}"))
