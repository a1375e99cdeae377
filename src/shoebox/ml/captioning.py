"""Where a captioning model plugs in. None ships yet: every item's `caption` is null.

A captioner sees the same decoded images as the CLIP encoder (before CLIP's crop), so adding
one is a new class here and one line in `ml/app.py`'s lifespan, not a change to the endpoints.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from PIL import Image


class Captioner(Protocol):
    """Turns decoded images into short descriptions (`None` where it has nothing to say)."""

    @property
    def enabled(self) -> bool:
        """Reported as `captioning` in /api/v1/capabilities."""
        ...

    def caption(self, images: Sequence[Image.Image]) -> list[str | None]: ...


class NoCaptioner:
    """The default: no captioning model, every caption is null."""

    @property
    def enabled(self) -> bool:
        return False

    def caption(self, images: Sequence[Image.Image]) -> list[str | None]:
        return [None] * len(images)
