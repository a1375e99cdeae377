"""The sample folder `shoebox demo` ingests when it is given none.

Photo-like generated pictures (devtools.photos) laid out as a real library is: dated folders,
several cameras with EXIF dates and GPS, a phone's HEIC, camera RAWs (DNG, with and without an
embedded preview), a PNG, an exact copy of one photo and a resized re-encode of another — so
one run shows every format, the filters' metadata and both kinds of duplicates.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

# Bump when the layout changes, so an old sample folder is rewritten.
SAMPLES_VERSION = 1
MARKER = ".shoebox-samples.json"  # hidden: the ingest scan skips it


@dataclass(frozen=True)
class SamplePhoto:
    path: str
    seed: int
    make: str | None = None
    model: str | None = None
    taken_at: datetime | None = None
    gps: tuple[float, float] | None = None


SAMPLES = [
    SamplePhoto("2019/provence/IMG_0412.jpg", 11, "Canon", "Canon EOS 5D Mark IV", datetime(2019, 7, 14, 18, 42), (43.2965, 5.3698)),
    SamplePhoto("2019/provence/IMG_0418.jpg", 12, "Canon", "Canon EOS 5D Mark IV", datetime(2019, 7, 15, 9, 5), (43.5297, 5.4474)),
    SamplePhoto("2019/provence/IMG_0431.jpg", 13, "Canon", "Canon EOS 5D Mark IV", datetime(2019, 7, 16, 20, 31), (43.6951, 7.2659)),
    SamplePhoto("2020/paris/DSC_1022.jpg", 21, "NIKON CORPORATION", "NIKON D750", datetime(2020, 2, 2, 16, 10), (48.8584, 2.2945)),
    SamplePhoto("2020/paris/DSC_1037.jpg", 22, "NIKON CORPORATION", "NIKON D750", datetime(2020, 2, 3, 11, 48), (48.8606, 2.3376)),
    SamplePhoto("2021/lapland/IMG_2201.heic", 31, "Apple", "iPhone 12", datetime(2021, 12, 28, 13, 2), (68.4385, 27.5302)),
    SamplePhoto("2021/lapland/IMG_2207.heic", 32, "Apple", "iPhone 12", datetime(2021, 12, 29, 14, 30), None),
    SamplePhoto("2022/raw/DSC00045.dng", 41, "SONY", "ILCE-7M3", datetime(2022, 5, 21, 7, 55)),
    SamplePhoto("2022/raw/DSC00046.dng", 42, "SONY", "ILCE-7M3", datetime(2022, 5, 21, 8, 1)),
    SamplePhoto("misc/drawing.png", 51),
]
EXACT_COPY = ("2019/provence/IMG_0412.jpg", "backup/phone-export/IMG_0412.jpg")
NEAR_COPY = ("2020/paris/DSC_1022.jpg", "backup/phone-export/DSC_1022_small.jpg")


def _marker_ok(folder: Path) -> bool:
    try:
        return json.loads((folder / MARKER).read_text()).get("version") == SAMPLES_VERSION
    except (OSError, ValueError, AttributeError):
        return False


def sample_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def write_sample_library(folder: Path, *, size: tuple[int, int] = (1200, 900)) -> list[Path]:
    """Write the sample folder (once; kept when it is already there) and return its photos."""
    import numpy as np
    from PIL import Image

    from shoebox.devtools import photos

    folder = Path(folder)
    if _marker_ok(folder):
        return sample_files(folder)
    if folder.exists():
        shutil.rmtree(folder)
    width, height = size
    for sample in SAMPLES:
        path = folder / sample.path
        path.parent.mkdir(parents=True, exist_ok=True)
        image = photos.synthetic_photo(width, height, seed=sample.seed)
        exif: dict[str, object] = {}
        if sample.make:
            exif.update(camera_make=sample.make, camera_model=sample.model)
        if sample.taken_at:
            exif["taken_at"] = sample.taken_at
        if sample.gps:
            exif.update(gps_lat=sample.gps[0], gps_lon=sample.gps[1])
        suffix = path.suffix.lower()
        if suffix == ".jpg":
            photos.write_jpeg(path, image, exif=exif, quality=92)
        elif suffix == ".heic":
            photos.write_heic(path, image, exif=exif)
        elif suffix == ".dng":
            photos.write_dng(
                path,
                np.asarray(image),
                preview=sample.seed % 2 == 1,
                make=sample.make or "Shoebox",
                model=sample.model or "Synthetic Bayer",
                taken_at=sample.taken_at,
            )
        else:
            photos.write_png(path, image)

    source, copy = EXACT_COPY
    (folder / copy).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(folder / source, folder / copy)
    source, near = NEAR_COPY
    with Image.open(folder / source) as original:
        smaller = original.convert("RGB").resize((width * 2 // 3, height * 2 // 3), Image.Resampling.LANCZOS)
    photos.write_jpeg(folder / near, smaller, quality=75)

    (folder / MARKER).write_text(json.dumps({"version": SAMPLES_VERSION}))
    return sample_files(folder)
