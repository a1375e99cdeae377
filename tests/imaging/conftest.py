"""Fixtures of the imaging tests: every file is generated (shoebox.devtools.photos)."""

from __future__ import annotations

import pytest
from PIL import Image

from shoebox.devtools import photos


@pytest.fixture(scope="module")
def photo() -> Image.Image:
    return photos.synthetic_photo(640, 480, seed=7)
