"""A corpus of bad input, generated: every kind of file an ingest must survive, each with the
outcome it must end with.

`write_corpus(root)` writes one folder per family (corrupt and truncated images of every
format, empty files, non-images named like photos, decompression bombs, odd but valid
pictures, every EXIF orientation, broken EXIF, broken RAWs, awkward names, links, special
files, a folder of many tiny files) and returns its `Case`s: a kind, the files it wrote and
what each must give — `indexed` (stored, searchable), `failed` with an error code, or
`skipped` (never counted: not a file the scan accepts). Nothing binary is committed: every
file is generated here, or copied from the real samples of `../shared/photos` when the caller
passes that folder (broken EXIF from cameras, truncated real RAWs).

`ChangingFolder` is a folder to be modified while a job scans it: the test stalls the job,
calls `mutate()`, then lets it finish; `expected()` says what each file must give then.

Needs numpy, Pillow and pillow-heif (as `shoebox.devtools.photos`).
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from shoebox.devtools import photos

INDEXED, FAILED, SKIPPED = "indexed", "failed", "skipped"

BOMB_SIDE = 50_000  # 2.5 gigapixels declared, a few hundred bytes on disk
LONG_NAME_BYTES = 255  # the longest file name Linux file systems take


@dataclass(frozen=True)
class Expect:
    """What one file must end as. `size` is the upright (width, height) a stored photo must
    report and `upright` a picture its thumbnail must match (orientation cases)."""

    outcome: str
    code: str | None = None
    size: tuple[int, int] | None = None
    upright: Image.Image | None = field(default=None, compare=False, repr=False)


@dataclass
class Case:
    kind: str
    family: str
    what: str
    files: dict[Path, Expect] = field(default_factory=dict)
    # Meaningful only when the reader lacks root's power to read any file (see the test).
    needs_unprivileged_reader: bool = False

    def add(self, path: Path, expect: Expect) -> Path:
        self.files[path] = expect
        return path


@dataclass
class Corpus:
    root: Path
    cases: list[Case] = field(default_factory=list)

    def case(self, kind: str, family: str, what: str) -> Case:
        case = Case(kind, family, what)
        self.cases.append(case)
        return case

    def files(self) -> Iterator[tuple[Case, Path, Expect]]:
        for case in self.cases:
            for path, expect in case.files.items():
                yield case, path, expect


def failed(code: str) -> Expect:
    return Expect(FAILED, code)


OK = Expect(INDEXED)
SKIP = Expect(SKIPPED)


# ------------------------------------------------------------------ encoders of small good files


def encode(img: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def heic_bytes(img: Image.Image) -> bytes:
    import pillow_heif

    heif = pillow_heif.from_pillow(img.convert("RGB"))
    buffer = io.BytesIO()
    heif.save(buffer, quality=60, enc_params={"preset": "ultrafast"})
    return buffer.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    )


# ------------------------------------------------------------------ how files break


def truncated(data: bytes, keep: float) -> bytes:
    return data[: max(1, int(len(data) * keep))]


def garbled(data: bytes, start: float, length: int = 256, seed: int = 0) -> bytes:
    """`length` random bytes written over the file from the `start` fraction on (headers intact)."""
    at = int(len(data) * start)
    noise = bytes(np.random.default_rng(seed).integers(0, 256, length, dtype=np.uint8))
    return data[:at] + noise[: max(0, len(data) - at)] + data[at + length :]


def png_with_bad_crc(img: Image.Image) -> bytes:
    """A PNG whose last IDAT checksum has a bit flipped (the pixels are intact)."""
    data = bytearray(encode(img, "PNG"))
    data[data.rindex(b"IEND") - 8] ^= 0x01  # the CRC just before IEND's length field
    return bytes(data)


def tiff_with_bad_offsets(img: Image.Image) -> bytes:
    """An uncompressed TIFF whose strip offsets point far past the end of the file."""
    data = bytearray(encode(img, "TIFF"))
    endian = "<" if data[:2] == b"II" else ">"
    ifd = struct.unpack(endian + "I", data[4:8])[0]
    (count,) = struct.unpack(endian + "H", data[ifd : ifd + 2])
    for i in range(count):
        at = ifd + 2 + 12 * i
        tag, kind, n = struct.unpack(endian + "HHI", data[at : at + 8])
        if tag == 273 and n == 1 and kind in (3, 4):  # StripOffsets, one strip
            fmt = "H" if kind == 3 else "I"
            struct.pack_into(endian + fmt, data, at + 8, 0xFFF0 if kind == 3 else 0x7FFFFFF0)
    return bytes(data)


def jpeg_headers_only(img: Image.Image) -> bytes:
    """A JPEG cut right after its start-of-scan header: every table, no pixel."""
    data = photos.jpeg_bytes(img)
    sos = data.index(b"\xff\xda")
    return data[: sos + 2 + struct.unpack(">H", data[sos + 2 : sos + 4])[0]]


# ------------------------------------------------------------------ bombs: huge declared, tiny on disk


def png_bomb(side: int = BOMB_SIDE) -> bytes:
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _chunk(b"IEND", b"")
    )


def jpeg_bomb(side: int = BOMB_SIDE) -> bytes:
    """A small JPEG whose frame header (SOF0) is rewritten to declare `side`×`side`."""
    data = bytearray(photos.jpeg_bytes(Image.new("RGB", (16, 16), (90, 120, 200))))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, side, side)
    return bytes(data)


def tiff_bomb(side: int = BOMB_SIDE) -> bytes:
    """A one-strip uncompressed TIFF declaring `side`×`side` with a few bytes of strip."""
    entries = [
        (256, 4, 1, side),  # ImageWidth
        (257, 4, 1, side),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 1),  # Photometric: black is zero
        (273, 4, 1, 8 + 2 + 12 * 9 + 4),  # StripOffsets: right after the IFD
        (277, 3, 1, 1),  # SamplesPerPixel
        (278, 4, 1, side),  # RowsPerStrip
        (279, 4, 1, 64),  # StripByteCounts
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        packed = struct.pack("<H", value) + b"\x00\x00" if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00\x00\x00\x00" + b"\x00" * 64


def webp_bomb(side: int = BOMB_SIDE) -> bytes:
    """An extended WebP (VP8X) whose canvas is `side`×`side` around a 16×16 lossy frame."""
    frame = encode(Image.new("RGB", (16, 16), (200, 120, 90)), "WEBP", quality=50)
    vp8 = frame[12:]  # the VP8 chunk of a simple WebP
    vp8x = b"VP8X" + struct.pack("<I", 10) + b"\x00\x00\x00\x00" + (side - 1).to_bytes(3, "little") * 2
    body = b"WEBP" + vp8x + vp8
    return b"RIFF" + struct.pack("<I", len(body)) + body


def gif_bomb(side: int = 65_535) -> bytes:
    """A GIF whose logical screen and only frame are `side`×`side` (GIF's largest), a few bytes of LZW."""
    data = bytearray(encode(Image.new("P", (16, 16), 1), "GIF"))
    struct.pack_into("<HH", data, 6, side, side)
    desc = data.index(b"\x2c", 13)
    struct.pack_into("<HH", data, desc + 5, side, side)
    return bytes(data)


# ------------------------------------------------------------------ not images at all


def pdf_bytes() -> bytes:
    body = (
        b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n"
        b"2 0 obj << /Type /Pages /Kids [3 0 R] /Count 1 >> endobj\n"
        b"3 0 obj << /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >> endobj\n"
    )
    return body + b"trailer << /Root 1 0 R >>\n%%EOF\n"


def elf_bytes() -> bytes:
    """A minimal x86-64 ELF executable header and one program header (what `exit(0)` needs)."""
    code = b"\x31\xff\xb8\x3c\x00\x00\x00\x0f\x05"  # xor edi, edi; mov eax, 60; syscall
    base, header_size = 0x400000, 64 + 56
    ehdr = (
        b"\x7fELF\x02\x01\x01"
        + b"\x00" * 9
        + struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, base + header_size, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    )
    size = header_size + len(code)
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, size, size, 0x1000)
    return ehdr + phdr + code


def zip_bytes() -> bytes:
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("photo.txt", "a zip archive, named like a photo")
    return buffer.getvalue()


# ------------------------------------------------------------------ broken EXIF


def jpeg_with_app1(img: Image.Image, app1_payload: bytes) -> bytes:
    """A JPEG with a hand-made APP1 segment right after SOI (EXIF as a camera bug might write it)."""
    data = photos.jpeg_bytes(img)
    segment = b"\xff\xe1" + struct.pack(">H", len(app1_payload) + 2) + app1_payload
    return data[:2] + segment + data[2:]


def broken_exif_payloads() -> dict[str, bytes]:
    """APP1 payloads with broken TIFF structures, by kind."""
    header = b"Exif\x00\x00II*\x00"

    def ifd(entries: list[tuple[int, int, int, int]], next_ifd: int = 0) -> bytes:
        out = struct.pack("<H", len(entries))
        for tag, kind, count, value in entries:
            out += struct.pack("<HHII", tag, kind, count, value)
        return out + struct.pack("<I", next_ifd)

    return {
        # IFD0 lists itself as the next IFD, and its Exif IFD pointer points back at IFD0.
        "exif-ifd-loop": header + struct.pack("<I", 8) + ifd([(0x0112, 3, 1, 6), (0x8769, 4, 1, 8)], 8),
        # Offsets of values and of the Exif IFD far past the end of the segment.
        "exif-offsets-past-end": header
        + struct.pack("<I", 8)
        + ifd([(0x010F, 2, 64, 0x7FFFFFF0), (0x8769, 4, 1, 0x7FFFFFF0), (0x8825, 4, 1, 0xFFFFFFF0)]),
        # An entry count of 65535 in an IFD a few bytes long.
        "exif-huge-count": header + struct.pack("<I", 8) + struct.pack("<H", 0xFFFF) + b"\x00" * 20,
        # The segment ends inside the TIFF header.
        "exif-cut-short": b"Exif\x00\x00II*",
        # A TIFF header with neither byte order.
        "exif-bad-byte-order": b"Exif\x00\x00XY*\x00" + struct.pack("<I", 8) + ifd([]),
        # Types out of range, absurd counts, a rational with a zero denominator, orientation 0.
        "exif-nonsense-values": header
        + struct.pack("<I", 8)
        + ifd([(0x0112, 3, 1, 0), (0x829A, 5, 1, 26), (0x8827, 99, 0xFFFFFFFF, 0), (0x9003, 2, 0, 0)])
        + b"\x00" * 8,
    }


# ------------------------------------------------------------------ the corpus


def write_corpus(
    root: Path | str,
    *,
    outside: Path | str,
    many_files: int = 5_000,
    samples: Path | str | None = None,
    seed: int = 0,
) -> Corpus:
    """Write every kind of bad input under `root` (which must exist or be creatable) and return
    the cases. `outside` is a folder out of the ingest's allowed roots that links point into;
    `many_files` tiny files share one folder (0 leaves that case out); `samples` is the real
    sample folder (`../shared/photos`), read only, for the cases that copy from it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    corpus = Corpus(root)
    base = photos.synthetic_photo(320, 240, seed=seed)
    jpeg = photos.jpeg_bytes(base)
    rgba = base.convert("RGBA")
    _corrupt_and_truncated(corpus, base, jpeg)
    _not_images(corpus)
    _bombs(corpus)
    _odd_but_valid(corpus, base, seed)
    _orientations(corpus, seed)
    _broken_exif(corpus, base, samples)
    _raws(corpus, seed, samples)
    _names(corpus, seed)
    _links(corpus, jpeg, Path(outside))
    _special(corpus, rgba, seed)
    if many_files:
        _many(corpus, many_files)
    return corpus


def _write(folder: Path, name: str | bytes, data: bytes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(name, bytes):
        target = os.path.join(os.fsencode(folder), name)
        with open(target, "wb") as f:
            f.write(data)
        return Path(os.fsdecode(target))
    path = folder / name
    path.write_bytes(data)
    return path


def _corrupt_and_truncated(corpus: Corpus, base: Image.Image, jpeg: bytes) -> None:
    folder = corpus.root / "corrupt"
    png = encode(base, "PNG")
    heic = heic_bytes(base)
    avif = encode(base, "AVIF", quality=60)  # Pillow's own AVIF plugin: pillow-heif has no AV1 encoder
    webp = encode(base, "WEBP", quality=80)
    tiff = encode(base, "TIFF", compression="tiff_deflate")
    gif = encode(base.convert("P", palette=Image.Palette.ADAPTIVE), "GIF")
    bmp = encode(base, "BMP")
    bad = "ERR_DECODING_IMAGE"
    rows = [
        ("jpeg-corrupt-scan", "a JPEG whose scan holds garbage and a stray SOF marker", "scan.jpg",
         photos.corrupt_jpeg_bytes(base)),
        ("jpeg-truncated", "a JPEG cut at 40 % (an interrupted copy)", "truncated.jpg", truncated(jpeg, 0.4)),
        ("jpeg-headers-only", "a JPEG cut right after its SOS header", "headers_only.jpg", jpeg_headers_only(base)),
        ("jpeg-soi-only", "the 3-byte JPEG signature and nothing else", "soi_only.jpg", b"\xff\xd8\xff"),
        ("png-truncated", "a PNG cut at half", "truncated.png", truncated(png, 0.5)),
        ("png-corrupt-idat", "a PNG whose compressed pixel data is garbage", "corrupt.png", garbled(png, 0.3, 2048)),
        ("heic-truncated", "a HEIC cut at half", "truncated.heic", truncated(heic, 0.5)),
        ("heic-header-only", "a HEIC cut inside its meta box", "header_only.heic", heic[:40]),
        ("avif-truncated", "an AVIF cut at half", "truncated.avif", truncated(avif, 0.5)),
        ("avif-header-only", "an AVIF cut inside its meta box", "header_only.avif", avif[:40]),
        ("webp-truncated", "a WebP cut at half", "truncated.webp", truncated(webp, 0.5)),
        ("webp-corrupt", "a WebP with garbage over its VP8 bitstream", "corrupt.webp", garbled(webp, 0.1, 4096)),
        ("tiff-truncated", "a deflate TIFF cut at half", "truncated.tiff", truncated(tiff, 0.5)),
        ("tiff-bad-offsets", "a TIFF whose strip offset points past the end", "bad_offsets.tif",
         tiff_with_bad_offsets(base)),
        ("gif-truncated", "a GIF cut at 30 %", "truncated.gif", truncated(gif, 0.3)),
        ("bmp-truncated", "a BMP cut at half", "truncated.bmp", truncated(bmp, 0.5)),
    ]  # fmt: skip
    for kind, what, name, data in rows:
        corpus.case(kind, "corrupt", what).add(_write(folder, name, data), failed(bad))
    # Pillow, like viewers, does not check IDAT checksums: pixels that still inflate are shown.
    case = corpus.case("png-bad-crc", "corrupt", "a PNG whose IDAT checksum is wrong (pixels intact)")
    case.add(_write(folder, "bad_crc.png", png_with_bad_crc(base)), OK)
    empty = corpus.root / "empty"
    for kind, name, code in (
        ("zero-byte-jpeg", "empty.jpg", "ERR_FILE_READ"),
        ("zero-byte-heic", "empty.heic", "ERR_FILE_READ"),
        ("zero-byte-dng", "empty.dng", "ERR_FILE_READ"),
    ):
        corpus.case(kind, "empty", f"a 0-byte file named {name}").add(_write(empty, name, b""), failed(code))


def _not_images(corpus: Corpus) -> None:
    folder = corpus.root / "not_images"
    unsupported = "ERR_UNSUPPORTED_FORMAT"
    rows = [
        ("text-as-jpg", "a text file named .jpg", "notes.jpg",
         b"This is not a photo, just text with an image extension.\n" * 20, unsupported),
        ("pdf-as-jpg", "a PDF named .jpg", "document.jpg", pdf_bytes(), unsupported),
        ("elf-as-jpg", "an ELF executable named .jpg", "program.jpg", elf_bytes(), unsupported),
        ("zip-as-heic", "a zip archive named .heic", "archive.heic", zip_bytes(), unsupported),
        ("html-as-png", "an HTML page named .png", "page.png", b"<!doctype html><html><body>hi</body></html>\n",
         unsupported),
        ("text-as-dng", "a text file named .dng (LibRaw judges RAW names)", "notes.dng", b"not a raw\n" * 50,
         "ERR_DECODING_RAW"),
    ]  # fmt: skip
    for kind, what, name, data, code in rows:
        corpus.case(kind, "not an image", what).add(_write(folder, name, data), failed(code))


def _bombs(corpus: Corpus) -> None:
    folder = corpus.root / "bombs"
    side = f"{BOMB_SIDE:,}×{BOMB_SIDE:,}"
    rows = [
        ("png-bomb", f"a PNG declaring {side}", "bomb.png", png_bomb()),
        ("jpeg-bomb", f"a JPEG declaring {side}", "bomb.jpg", jpeg_bomb()),
        ("tiff-bomb", f"a TIFF declaring {side}", "bomb.tif", tiff_bomb()),
        ("webp-bomb", f"a WebP canvas of {side}", "bomb.webp", webp_bomb()),
        ("gif-bomb", "a GIF declaring 65,535×65,535 (GIF's largest)", "bomb.gif", gif_bomb()),
    ]
    for kind, what, name, data in rows:
        corpus.case(kind, "bomb", what).add(_write(folder, name, data), failed("ERR_IMAGE_TOO_LARGE"))


def _odd_but_valid(corpus: Corpus, base: Image.Image, seed: int) -> None:
    folder = corpus.root / "valid_odd"
    grey16 = Image.fromarray((np.asarray(base.convert("L"), dtype=np.uint16) * 257).astype(np.uint16))
    palette = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    palette.info["transparency"] = 0
    frames = [photos.synthetic_photo(160, 120, seed=seed + i) for i in range(3)]
    animated = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100)
    pages = encode(frames[0], "TIFF", save_all=True, append_images=frames[1:])
    rows = [
        ("one-pixel-png", "a 1×1 PNG", "one_pixel.png", encode(Image.new("RGB", (1, 1), (200, 30, 30)), "PNG")),
        ("one-pixel-jpeg", "a 1×1 JPEG", "one_pixel.jpg", photos.jpeg_bytes(Image.new("RGB", (1, 1), (30, 200, 30)))),
        ("cmyk-jpeg", "a CMYK JPEG (Adobe, as print workflows save)", "cmyk.jpg", encode(base.convert("CMYK"), "JPEG")),
        ("cmyk-tiff", "a CMYK TIFF", "cmyk.tif", encode(base.convert("CMYK"), "TIFF")),
        ("grey-jpeg", "an 8-bit greyscale JPEG", "grey.jpg", encode(base.convert("L"), "JPEG")),
        ("grey16-png", "a 16-bit greyscale PNG", "grey16.png", encode(grey16, "PNG")),
        ("rgb48-png", "a 16-bit-per-channel RGB PNG", "rgb48.png", _rgb48_png(base)),
        ("palette-transparency-png", "a palette PNG with a transparent index", "palette_alpha.png",
         encode(palette, "PNG")),
        ("la-png", "a greyscale-with-alpha (LA) PNG", "la.png", encode(base.convert("LA"), "PNG")),
        ("rgba-webp", "a WebP with an alpha channel", "alpha.webp", encode(base.convert("RGBA"), "WEBP")),
        ("animated-gif", "an animated GIF (its first frame is indexed)", "animated.gif", animated),
        ("multipage-tiff", "a three-page TIFF (its first page is indexed)", "pages.tif", pages),
        ("progressive-jpeg", "a progressive JPEG", "progressive.jpg", encode(base, "JPEG", progressive=True)),
        ("jpeg-named-cr2", "a JPEG named .cr2 (content decides)", "really_a_jpeg.cr2", photos.jpeg_bytes(frames[1])),
        ("png-named-jpg", "a PNG named .jpg (content decides)", "really_a_png.jpg", encode(frames[2], "PNG")),
    ]  # fmt: skip
    for kind, what, name, data in rows:
        corpus.case(kind, "odd but valid", what).add(_write(folder, name, data), OK)


def _rgb48_png(img: Image.Image) -> bytes:
    arr = np.asarray(img.convert("RGB"), dtype=">u2") * 257
    height, width = arr.shape[:2]
    raw = b"".join(b"\x00" + arr[y].tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )


# The transpose a viewer applies for each EXIF orientation (as decoded.py, spelled out again here
# so that the corpus is an independent statement of the standard).
_ORIENT = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orientations(corpus: Corpus, seed: int) -> None:
    """A 360×240 picture stored so that each orientation tag brings it back upright."""
    folder = corpus.root / "orientation"
    upright = _asymmetric(360, 240)
    inverse = {1: None, 2: 2, 3: 3, 4: 4, 5: 5, 6: 8, 7: 7, 8: 6}  # the transpose that undoes each one
    for value in range(1, 9):
        undo = inverse[value]
        stored = upright if undo is None else upright.transpose(_ORIENT[undo])
        data = photos.jpeg_bytes(stored, exif={"orientation": value}, quality=95)
        case = corpus.case(
            f"orientation-{value}", "orientation", f"a JPEG stored with EXIF orientation {value}"
        )
        case.add(
            _write(folder, f"orientation_{value}.jpg", data),
            Expect(INDEXED, size=(360, 240), upright=upright),
        )
    for value in (0, 9, 65535):
        data = photos.jpeg_bytes(_asymmetric(300, 200), exif={"orientation": value})
        case = corpus.case(
            f"orientation-invalid-{value}", "orientation", f"EXIF orientation {value} (invalid: ignored)"
        )
        case.add(_write(folder, f"orientation_bad_{value}.jpg", data), Expect(INDEXED, size=(300, 200)))


def _asymmetric(width: int, height: int) -> Image.Image:
    """Quadrants of different colours: every flip and rotation of it looks different."""
    img = Image.new("RGB", (width, height), (240, 240, 240))
    img.paste((220, 30, 30), (0, 0, width // 2, height // 2))  # red top-left
    img.paste((30, 180, 40), (width // 2, 0, width, height // 2))  # green top-right
    img.paste((30, 60, 220), (0, height // 2, width // 2, height))  # blue bottom-left
    return img


def _broken_exif(corpus: Corpus, base: Image.Image, samples: Path | str | None) -> None:
    folder = corpus.root / "exif"
    for i, (kind, payload) in enumerate(broken_exif_payloads().items()):
        img = photos.synthetic_photo(200, 150, seed=100 + i)
        case = corpus.case(
            kind, "broken EXIF", f"a JPEG whose APP1 EXIF is broken: {kind[5:].replace('-', ' ')}"
        )
        case.add(_write(folder, f"{kind}.jpg", jpeg_with_app1(img, payload)), OK)
    invalid = Path(samples) / "exif" / "jpg" / "invalid" if samples else None
    if invalid is not None and invalid.is_dir():
        case = corpus.case(
            "exif-invalid-real", "broken EXIF", "camera JPEGs with broken EXIF (exif-samples/invalid)"
        )
        for source in sorted(invalid.glob("*.jpg")):
            target = folder / "real" / source.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            case.add(target, OK)


def _raws(corpus: Corpus, seed: int, samples: Path | str | None) -> None:
    folder = corpus.root / "raw"
    folder.mkdir(parents=True, exist_ok=True)
    rgb = np.asarray(photos.synthetic_photo(320, 240, seed=seed + 50))
    raw_bad = "ERR_DECODING_RAW"

    stripped = corpus.case(
        "dng-stripped", "RAW", "a DNG whose raw data was cut off (headers and preview kept)"
    )
    stripped.add(photos.write_stripped_dng(folder / "stripped.dng", rgb, preview=True), failed(raw_bad))
    stub = corpus.case("dng-stripped-stub", "RAW", "a lossless-JPEG DNG whose raw strip is a 22-byte stub")
    stub.add(photos.write_stripped_dng(folder / "stub.dng", rgb[:64, :64], preview=False, lossless_jpeg=True),
             failed(raw_bad))  # fmt: skip
    whole = photos._dng_bytes(
        rgb, preview="none", preview_long_side=0, preview_image=None, make="Shoebox", model="Synthetic Bayer",
        taken_at=None, orientation=1, lossless_jpeg=False,
    )  # fmt: skip
    cut = corpus.case("dng-truncated", "RAW", "a DNG cut in the middle of its raw data")
    cut.add(_write(folder, "truncated.dng", truncated(whole, 0.6)), failed(raw_bad))
    for preview in ("broken", "broken-bitmap"):
        case = corpus.case(
            f"dng-{preview}-preview", "RAW", f"a DNG whose embedded preview is {preview} (sensor data used)"
        )
        case.add(photos.write_dng(folder / f"{preview}_preview.dng", rgb, preview=preview), OK)
    rows = [
        ("nef-text", "a text file named .nef", "notes.nef", b"not a Nikon raw\n" * 64),
        ("arw-random", "random bytes named .arw", "random.arw",
         bytes(np.random.default_rng(seed).integers(0, 256, 4096, dtype=np.uint8))),
        ("cr2-plain-tiff", "an RGB TIFF (no sensor data) named .cr2", "plain_tiff.cr2",
         encode(photos.synthetic_photo(64, 48, seed=seed), "TIFF")),
    ]  # fmt: skip
    for kind, what, name, data in rows:
        corpus.case(kind, "RAW", what).add(_write(folder, name, data), failed(raw_bad))
    for suffix in (".cr3", ".raf"):
        case = corpus.case(
            f"{suffix[1:]}-no-image", "RAW", f"a {suffix} container with EXIF and no image data"
        )
        path = photos.write_exif_only_raw(folder / f"exif_only{suffix}", {"camera_make": "Shoebox"})
        case.add(path, failed(raw_bad))
    real = Path(samples) / "raw" if samples else None
    if real is not None and real.is_dir():
        names = ("exiftool_DNG.dng", "exiv2_IMG_1361.dng", "exiftool_Nikon.nef", "exiv2_Canon-R6-pruned.CR3")
        present = [real / n for n in names if (real / n).is_file()]
        if present:
            case = corpus.case(
                "raw-real-broken", "RAW", "real stripped DNGs and truncated NEF/CR3 (exiftool, exiv2)"
            )
            for source in present:
                target = folder / "real" / source.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target)
                case.add(target, failed(raw_bad))


def _names(corpus: Corpus, seed: int) -> None:
    folder = corpus.root / "names"
    ext = ".jpg"
    long_name = "n" * (LONG_NAME_BYTES - len(ext)) + ext
    rows: list[tuple[str, str, str]] = [
        ("name-spaces", "spaces in the name", "  a photo with   spaces .jpg"),
        ("name-unicode-nfc", "accents, composed (NFC)", "été à Noël.jpg"),
        (
            "name-unicode-nfd",
            "accents, decomposed (NFD, as macOS writes)",
            "e\u0301te\u0301 a\u0300 Noe\u0308l.jpg",
        ),
        ("name-emoji-cjk", "emoji and CJK", "写真 📷 фото.jpg"),
        ("name-newline", "a newline and a tab in the name", "line\nbreak\tand tab.jpg"),
        ("name-255-bytes", "a 255-byte name (the file system's limit)", long_name),
        ("name-255-bytes-utf8", "a 255-byte name of 2-byte characters", "é" * 125 + "x" + ext),
        ("name-shell-chars", "quotes, $, ;, backslash, a leading dash", "-rf 'x' \"y\" $HOME; \\ `z`.jpg"),
    ]
    for i, (kind, what, name) in enumerate(rows):
        data = photos.jpeg_bytes(photos.synthetic_photo(96, 72, seed=seed + 200 + i))
        corpus.case(kind, "name", what).add(_write(folder, name, data), OK)
    # Paths travel as UTF-8 text (catalog, payloads, JSON): such a file fails, named with \x escapes.
    case = corpus.case("name-not-utf8", "name", "a name that is not valid UTF-8 (Latin-1 bytes)")
    data = photos.jpeg_bytes(photos.synthetic_photo(96, 72, seed=seed + 299))
    case.add(_write(folder, b"caf\xe9 \xff.jpg", data), failed("ERR_FILE_READ"))


def shown_path(path: Path | str) -> str:
    """A path as the ingest reports it: bytes that are not UTF-8 written as `\\xNN`."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _links(corpus: Corpus, jpeg: bytes, outside: Path) -> None:
    folder = corpus.root / "links"
    (folder / "loop").mkdir(parents=True)
    (folder / "loop" / "back_up").symlink_to("..")
    case = corpus.case(
        "symlink-dir-loop", "link", "a folder link back to its parent (refused, never walked twice)"
    )
    case.add(folder / "loop" / "back_up", SKIP)
    (folder / "a.jpg").symlink_to("b.jpg")
    (folder / "b.jpg").symlink_to("a.jpg")
    case = corpus.case("symlink-file-loop", "link", "two file links pointing at each other")
    case.add(folder / "a.jpg", failed("ERR_FILE_READ"))
    case.add(folder / "b.jpg", failed("ERR_FILE_READ"))
    (folder / "self.jpg").symlink_to("self.jpg")
    corpus.case("symlink-self", "link", "a file link to itself").add(
        folder / "self.jpg", failed("ERR_FILE_READ")
    )
    (folder / "dangling.jpg").symlink_to("nowhere/missing.jpg")
    corpus.case("symlink-dangling", "link", "a link to nothing").add(
        folder / "dangling.jpg", failed("ERR_FILE_READ")
    )
    outside.mkdir(parents=True, exist_ok=True)
    (outside / "secret.jpg").write_bytes(jpeg)
    (folder / "escape.jpg").symlink_to(outside / "secret.jpg")
    case = corpus.case("symlink-outside-file", "link", "a file link leaving the allowed root (refused)")
    case.add(folder / "escape.jpg", SKIP)
    (folder / "escape_dir").symlink_to(outside)
    case = corpus.case("symlink-outside-dir", "link", "a folder link leaving the allowed root (refused)")
    case.add(folder / "escape_dir" / "secret.jpg", SKIP)
    (folder / "escape_abs.jpg").symlink_to("/etc/hostname")
    case = corpus.case("symlink-to-etc", "link", "a link to /etc/hostname named .jpg (refused)")
    case.add(folder / "escape_abs.jpg", SKIP)


def _special(corpus: Corpus, rgba: Image.Image, seed: int) -> None:
    folder = corpus.root / "special"
    folder.mkdir(parents=True, exist_ok=True)
    locked = _write(
        folder, "no_permission.jpg", photos.jpeg_bytes(photos.synthetic_photo(80, 60, seed=seed + 300))
    )
    locked.chmod(0)
    case = corpus.case("unreadable-file", "special", "a photo with mode 000 (no read permission)")
    case.needs_unprivileged_reader = True
    case.add(locked, failed("ERR_FILE_READ"))
    sealed = folder / "sealed"
    _write(sealed, "inside.jpg", photos.jpeg_bytes(photos.synthetic_photo(80, 60, seed=seed + 301)))
    sealed.chmod(0)
    case = corpus.case("unlistable-folder", "special", "a folder with mode 000 (cannot be listed: logged)")
    case.needs_unprivileged_reader = True
    case.add(sealed / "inside.jpg", SKIP)
    fifo = folder / "pipe.jpg"
    os.mkfifo(fifo)
    corpus.case("fifo-named-jpg", "special", "a named pipe called .jpg (never opened)").add(fifo, SKIP)
    (folder / "folder.jpg").mkdir()
    inner = _write(folder / "folder.jpg", "inside_folder_jpg.png", encode(rgba, "PNG"))
    case = corpus.case("folder-named-jpg", "special", "a folder called .jpg (walked as a folder)")
    case.add(inner, OK)
    hidden = _write(folder, ".hidden.jpg", b"\xff\xd8\xff garbage")
    corpus.case("hidden-file", "special", "a hidden file (skipped)").add(hidden, SKIP)
    upper = _write(folder, "UPPER.JPEG", photos.jpeg_bytes(photos.synthetic_photo(80, 60, seed=seed + 302)))
    corpus.case("upper-case-extension", "special", "an upper-case .JPEG extension").add(upper, OK)


def _many(corpus: Corpus, count: int) -> None:
    case = corpus.case("many-tiny-files", "many", f"{count:,} tiny distinct PNGs in one folder")
    for path in write_many_tiny_files(corpus.root / "many", count):
        case.add(path, OK)


def write_many_tiny_files(folder: Path | str, count: int) -> list[Path]:
    """`count` distinct 8×8 PNGs (≈ 250 bytes each) in one folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(12345)
    paths = []
    for i in range(count):
        path = folder / f"tiny_{i:06d}.png"
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(
            path, format="PNG", compress_level=1
        )
        paths.append(path)
    return paths


# ------------------------------------------------------------------ a folder that changes during a scan


@dataclass
class ChangingFolder:
    """A folder that changes while a job reads it.

    `first/` holds `lead` good photos then the ones that change; `later/inner/` is only listed
    once every file of `first/` has been handed on. Stall the job (pause its ML service) while
    it is still handing on `first/`, call `mutate()`, let it go: files of `first/` were listed
    (stat'ed) before the change, those of `later/inner/` after it.
    """

    root: Path
    lead: int
    changes: dict[Path, Expect] = field(default_factory=dict)
    steady: list[Path] = field(default_factory=list)
    rewritten_to: dict[Path, bytes] = field(default_factory=dict)

    def mutate(self) -> None:
        first, inner = self.root / "first", self.root / "later" / "inner"
        (first / "zz_deleted.jpg").unlink()
        rewritten = first / "zz_rewritten.jpg"
        rewritten.write_bytes(self.rewritten_to[rewritten])
        fifo = first / "zz_became_a_fifo.jpg"
        fifo.unlink()
        os.mkfifo(fifo)
        (first / "zz_became_a_folder.jpg").unlink()
        (first / "zz_became_a_folder.jpg").mkdir()
        (first / "zz_added_after_listing.jpg").write_bytes(self._photo(900))
        (inner / "deleted_before_listing.jpg").unlink()
        (inner / "added_before_listing.jpg").write_bytes(self._photo(901))

    def expected(self) -> dict[Path, Expect]:
        return {**{p: OK for p in self.steady}, **self.changes}

    @staticmethod
    def _photo(seed: int) -> bytes:
        return photos.jpeg_bytes(photos.synthetic_photo(64, 48, seed=seed))


def write_changing_folder(root: Path | str, lead: int = 200) -> ChangingFolder:
    root = Path(root)
    first, inner = root / "first", root / "later" / "inner"
    first.mkdir(parents=True)
    inner.mkdir(parents=True)
    folder = ChangingFolder(root, lead)
    for i in range(lead):
        folder.steady.append(_write(first, f"lead_{i:04d}.jpg", folder._photo(1000 + i)))
    for name in ("zz_deleted.jpg", "zz_rewritten.jpg", "zz_became_a_fifo.jpg", "zz_became_a_folder.jpg"):
        _write(first, name, folder._photo(800 + len(folder.changes)))
        folder.changes[first / name] = failed("ERR_FILE_READ")
    folder.changes[first / "zz_rewritten.jpg"] = OK  # read after the change: its new bytes are indexed
    folder.rewritten_to[first / "zz_rewritten.jpg"] = folder._photo(950)
    folder.changes[first / "zz_added_after_listing.jpg"] = SKIP  # its folder was already listed
    _write(inner, "deleted_before_listing.jpg", folder._photo(902))
    folder.changes[inner / "deleted_before_listing.jpg"] = SKIP
    folder.changes[inner / "added_before_listing.jpg"] = OK
    folder.steady.append(_write(inner, "steady.jpg", folder._photo(903)))
    return folder


# ------------------------------------------------------------------ mutations, for fuzzing decoders

MUTATIONS = ("bit-flips", "truncation", "insertion", "overwrite", "chunk-shuffle", "chunk-duplicate")
HEADER_BYTES = 4096  # half the mutations land here, where parsers read sizes and offsets


def mutate(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    """`data` damaged one way (one of MUTATIONS), at places `rng` draws: the same seed, the same file."""
    n = len(data)
    if n < 2:
        return data + bytes(rng.integers(0, 256, 8, dtype=np.uint8))

    def spot() -> int:
        return int(rng.integers(0, min(n, HEADER_BYTES))) if rng.random() < 0.5 else int(rng.integers(0, n))

    out = bytearray(data)
    if kind == "bit-flips":
        for _ in range(int(rng.integers(1, 9))):
            out[spot()] ^= 1 << int(rng.integers(0, 8))
    elif kind == "truncation":
        del out[max(1, spot()) :]
    elif kind == "insertion":
        at = spot()
        out[at:at] = bytes(rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8))
    elif kind == "overwrite":
        at, length = spot(), int(rng.integers(1, 256))
        filler = rng.choice([b"\x00", b"\xff", None])
        patch = filler * length if filler is not None else bytes(rng.integers(0, 256, length, dtype=np.uint8))
        out[at : at + length] = patch[: max(0, n - at)]
    elif kind in ("chunk-shuffle", "chunk-duplicate"):
        size = max(1, int(rng.integers(16, max(17, n // 8))))
        a, b = sorted(int(x) for x in rng.integers(0, max(1, n - size), 2))
        first, second = bytes(out[a : a + size]), bytes(out[b : b + size])
        if kind == "chunk-shuffle":
            out[a : a + size], out[b : b + size] = second, first
        else:
            out[b:b] = first
    else:
        raise ValueError(f"unknown mutation {kind!r}; one of {MUTATIONS}")
    return bytes(out)
