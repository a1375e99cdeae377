"""read_exif: the same fields from every container, and never an exception."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shoebox.devtools import photos
from shoebox.imaging import EXIF_KEYS, read_exif

EXIF = {
    "taken_at": datetime(2021, 6, 5, 14, 3, 2),
    "camera_make": "Canon",
    "camera_model": "EOS R6",
    "lens": "RF35mm F1.8 MACRO IS STM",
    "exposure_time": 1 / 250,
    "f_number": 2.8,
    "iso": 400,
    "focal_length": 35.0,
    "gps_lat": -33.8568,
    "gps_lon": -70.6483,
    "orientation": 6,
}


def assert_exif_round_trips(exif: dict, expected: dict) -> None:
    assert set(exif) == set(EXIF_KEYS)
    assert exif["taken_at"] == "2021-06-05T14:03:02"
    assert exif["taken_ts"] == datetime(2021, 6, 5, 14, 3, 2, tzinfo=timezone.utc).timestamp()
    for key in ("camera_make", "camera_model", "lens", "iso", "orientation"):
        if key in expected:
            assert exif[key] == expected[key], key
    for key in ("exposure_time", "f_number", "focal_length", "gps_lat", "gps_lon"):
        if key in expected:
            assert exif[key] == pytest.approx(expected[key], abs=1e-5), key


def test_read_exif_of_a_jpeg_round_trips(photo: Image.Image):
    assert_exif_round_trips(read_exif(photos.jpeg_bytes(photo, exif=EXIF)), EXIF)


def test_read_exif_of_a_heic_round_trips(photo: Image.Image, tmp_path: Path):
    fields = {k: EXIF[k] for k in ("taken_at", "camera_make", "camera_model", "gps_lat", "gps_lon")}
    path = photos.write_heic(tmp_path / "p.heic", photo, exif=fields)
    assert_exif_round_trips(read_exif(path), fields)


def test_read_exif_of_a_dng_reads_its_tiff_tags(photo: Image.Image, tmp_path: Path):
    path = photos.write_dng(
        tmp_path / "p.dng", np.asarray(photo), preview=False, make="Canon", model="EOS R6",
        taken_at=EXIF["taken_at"], orientation=6,
    )  # fmt: skip
    exif = read_exif(path)
    assert_exif_round_trips(exif, {"camera_make": "Canon", "camera_model": "EOS R6", "orientation": 6})


@pytest.mark.parametrize("suffix", photos.EXIF_ONLY_RAW_SUFFIXES)
def test_read_exif_of_each_raw_container_round_trips(suffix: str, tmp_path: Path):
    path = photos.write_exif_only_raw(tmp_path / f"camera{suffix}", EXIF)
    assert_exif_round_trips(read_exif(path), EXIF)


def test_read_exif_of_a_big_endian_orf():
    tiff = photos.make_exif(EXIF).tobytes()[len(b"Exif\x00\x00") :]  # Pillow writes Motorola order
    assert tiff.startswith(b"MM\x00*")
    assert_exif_round_trips(read_exif(b"MMOR" + tiff[4:], "P1010001.ORF"), EXIF)


def test_read_exif_of_an_rw2_takes_ifd0_over_its_embedded_jpeg(tmp_path: Path):
    # Make and model are in IFD0 and in the JpgFromRaw's EXIF: IFD0 is the camera's own word.
    data = photos.write_exif_only_raw(tmp_path / "p.rw2", EXIF).read_bytes()
    at = data.rindex(b"EOS R6\x00")  # IFD0's values follow the JPEG (tag 0x2E comes first)
    patched = data[:at] + b"EOS R7" + data[at + 6 :]
    exif = read_exif(patched, "p.rw2")
    assert exif["camera_model"] == "EOS R7" and exif["iso"] == 400


@pytest.mark.parametrize("suffix", photos.EXIF_ONLY_RAW_SUFFIXES)
@pytest.mark.parametrize("keep", [0.1, 0.3, 0.5, 0.8, 0.95])
@pytest.mark.filterwarnings("ignore::UserWarning")
def test_read_exif_of_a_truncated_raw_container_never_raises(suffix: str, keep: float, tmp_path: Path):
    data = photos.write_exif_only_raw(tmp_path / f"camera{suffix}", EXIF).read_bytes()
    assert set(read_exif(data[: int(len(data) * keep)], f"cut{suffix}")) == set(EXIF_KEYS)


def test_read_exif_of_a_raf_pointing_past_its_end_is_empty():
    header = (
        b"FUJIFILMCCD-RAW 0201FF383501"
        + b"\x00" * 56
        + (10**6).to_bytes(4, "big")
        + (5000).to_bytes(4, "big")
    )
    assert read_exif(header + b"\x00" * 100, "DSCF0001.RAF") == dict.fromkeys(EXIF_KEYS)


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xd8\xff\xe1\x00\x20Exif\x00\x00II*\x00\xff\xff\xff\x7f" + b"\x00" * 14 + b"\xff\xd9",
        b"II*\x00\x08\x00\x00\x00\xff\xff" + b"\x01" * 40,
        b"IIU\x00\x08\x00\x00\x00\xff\xff" + b"\x01" * 40,
        b"\x00\x00\x00\x18ftypcrx \x00\x00\x00\x01crx isom\xff\xff\xff\xffmoov",
        b"",
        b"just some text",
    ],
    ids=["broken-app1", "broken-tiff", "broken-rw2", "broken-cr3", "empty", "text"],
)
@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_read_exif_never_raises_on_broken_data(data: bytes):
    assert read_exif(data) == dict.fromkeys(EXIF_KEYS)


def test_read_exif_of_a_missing_file_is_empty(tmp_path: Path):
    assert read_exif(tmp_path / "gone.jpg") == dict.fromkeys(EXIF_KEYS)


def test_read_exif_without_gps_gives_none_coordinates(photo: Image.Image):
    exif = read_exif(photos.jpeg_bytes(photo, exif={"camera_make": "Nikon"}))
    assert exif["camera_make"] == "Nikon"
    assert exif["gps_lat"] is None and exif["gps_lon"] is None and exif["taken_at"] is None
