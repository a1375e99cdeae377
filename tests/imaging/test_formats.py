"""What a file is: extensions, and content deciding the decoder."""

from __future__ import annotations

import numpy as np
import pytest
from imaging_checks import encoded
from PIL import Image

from shoebox import imaging
from shoebox.devtools import photos
from shoebox.imaging import is_raw, is_supported, sniff_format


def test_extensions_say_what_is_raw_and_what_is_supported():
    assert is_raw("IMG_0001.CR3") and is_raw("a.dng") and not is_raw("a.jpg")
    assert is_supported("a.HEIC") and is_supported("a.nef") and not is_supported("a.txt")
    assert ".jpg" in imaging.IMAGE_EXTENSIONS and ".rw2" in imaging.RAW_EXTENSIONS


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\xff\xd8\xff\xe0" + b"\x00" * 60, "jpeg"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 56, "png"),
        (b"\x00\x00\x00\x18ftypcrx \x00\x00\x00\x01crx isom", "raw"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "heif"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf", "avif"),
        (b"FUJIFILMCCD-RAW 0201", "raw"),
        (b"IIRO\x08\x00\x00\x00", "raw"),
        (b"MMOR\x00\x00\x00\x08", "raw"),
        (b"IIU\x00\x08\x00\x00\x00", "raw"),
        (b"%PDF-1.7\n", None),
    ],
    ids=["jpeg", "png", "cr3", "heic", "avif", "raf", "orf", "orf-big-endian", "rw2", "pdf"],
)
def test_magic_bytes_decide_the_format(head: bytes, expected: str | None):
    assert sniff_format(head, "whatever.bin") == expected


def test_a_tiff_is_raw_only_under_a_raw_extension():
    head = b"II*\x00\x08\x00\x00\x00"
    assert sniff_format(head, "IMG_1.NEF") == "raw"
    assert sniff_format(head, "scan.tif") == "tiff"


def test_a_plain_tiff_is_decoded_by_pillow_and_a_cfa_tiff_by_libraw(photo: Image.Image, tmp_path):
    # Older cameras (Canon EOS-1D, Kodak DCS) wrote their TIFF-based RAWs as .tif.
    cfa = photos.write_dng(tmp_path / "camera.tif", np.asarray(photo), preview=False, dng=False)
    assert imaging.decode_full(cfa).size == (320, 240)  # a half-size demosaic: LibRaw's work
    assert imaging.decode_full(encoded(photo, "TIFF"), "scan.tif").size == (640, 480)


def test_content_decides_the_decoder_not_the_extension(photo: Image.Image):
    decoded = imaging.decode_for_model(encoded(photo, "PNG"), "misnamed.jpg", min_side=224, max_pixels=10**8)
    assert (decoded.width, decoded.height) == (640, 480)
