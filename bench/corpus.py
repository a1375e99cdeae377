"""Benchmark corpora, generated once from the real sample photos and cached under bench/.corpus/.

Every 12 MP image is a real photo from ../shared/photos upscaled to 4000×3000 (or 3000×4000), with
a little sensor-like noise so that its JPEG has the size and entropy of a camera file (~3–4 MB),
not the few hundred KB of a smooth upscale that would decode unrealistically fast. Copies of one
picture get a unique JPEG comment so that every file has its own SHA-256: the ingestion service
dedupes by content, and the ML service does the same work for every file whatever its pixels.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

PHOTOS = Path(
    os.environ.get("SHOEBOX_BENCH_PHOTOS", Path(__file__).resolve().parents[2] / "shared" / "photos")
)
CORPUS = Path(__file__).resolve().parent / ".corpus"
VERSION = 1  # bump when the recipe changes, so caches are rebuilt

N_BASES = 80  # distinct 12 MP pictures (sources × mirror)
N_JPEG_12MP = 1000  # in 10 folders of 100 (the quick run ingests the first folder)
N_DNG = 25
N_SMALL = 10_000  # 10 sets × 10 folders × 100 files (the quick run re-ingests the first set)
N_224 = 128
MODEL_INPUT = 224  # the short side the test models take: a preview below it is of no use to them


@dataclass(frozen=True)
class DngShape:
    """One way a camera embeds (or fails to embed) a preview in its RAW; a corpus folder each."""

    name: str  # the folder is dng_<name>
    label: str
    preview: bool | str  # write_dng's `preview`
    kind: str  # what LibRaw must find: "jpeg", "bitmap", "none" or "broken"
    long_side: int | None = None  # the preview's long side, checked on the first file written

    def found(self, preview: tuple[str, int | None]) -> bool:
        return preview[0] == self.kind and (self.long_side is None or preview[1] == self.long_side)


DNG_SHAPES = (
    DngShape("jpeg", "JPEG preview 1024 px", True, "jpeg", 1024),
    DngShape("bitmap", "RGB bitmap preview 1008x756", "bitmap", "bitmap", 1008),
    DngShape("tiny", f"160x120 preview (< {MODEL_INPUT} input)", "tiny", "jpeg", 160),
    DngShape("none", "no preview", False, "none"),
    DngShape("broken", "broken JPEG preview", "broken", "broken"),
)
_LEGACY_DNG_FOLDERS = ("dng_preview", "dng_nopreview")  # the folders before DNG_SHAPES: 1.2 GB to free


@dataclass(frozen=True)
class Corpus:
    root: Path = CORPUS

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def vit_b_32(self) -> Path:
        return self.models / "vit-b-32"

    @property
    def tiny(self) -> Path:
        return self.models / "tiny"

    @property
    def base12mp(self) -> Path:
        return self.root / "base12mp"

    @property
    def jpeg12mp(self) -> Path:
        return self.root / "jpeg12mp"

    @property
    def jpeg224(self) -> Path:
        return self.root / "jpeg224"

    def dng(self, shape: str) -> Path:
        return self.root / f"dng_{shape}"

    @property
    def small10k(self) -> Path:
        return self.root / "small10k"

    @property
    def search_seed(self) -> Path:
        return self.root / "search_seed"

    def jpeg12mp_folder(self, quick: bool) -> Path:
        return self.jpeg12mp / "part00" if quick else self.jpeg12mp

    def small_folder(self, quick: bool) -> Path:
        return self.small10k / "set00" if quick else self.small10k


def source_photos() -> list[Path]:
    """Real photos big enough to stand for a camera picture; broken samples are left out on purpose."""
    found = []
    # The albums first: they are the scenes a photo library is made of, and the DNGs use the first ones.
    for p in sorted(PHOTOS.rglob("*"), key=lambda p: ("albums" not in p.parts, str(p))):
        if p.suffix.lower() not in (".jpg", ".jpeg") or "invalid" in p.parts or p.name == "corrupted.jpg":
            continue
        try:
            with Image.open(p) as im:
                im.load()  # a truncated sample would only fail later, in a worker process
                if min(im.size) >= 300:
                    found.append(p)
        except OSError:
            continue
    if not found:
        raise SystemExit(f"no sample photos under {PHOTOS} (set SHOEBOX_BENCH_PHOTOS)")
    return found


def _load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        return ImageOps.exif_transpose(im).convert("RGB")


def _variant(img: Image.Image, k: int) -> Image.Image:
    return ImageOps.mirror(img) if k % 2 else img


def _crop_to(img: Image.Image, aspect: float) -> Image.Image:
    w, h = img.size
    if w / h > aspect:
        nw = int(h * aspect)
        return img.crop(((w - nw) // 2, 0, (w - nw) // 2 + nw, h))
    nh = int(w / aspect)
    return img.crop((0, (h - nh) // 2, w, (h - nh) // 2 + nh))


def _exif(index: int) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "ShoeboxBench"
    exif[0x0110] = "BC-12"
    exif[0x0132] = f"2023:{1 + index % 12:02d}:{1 + index % 28:02d} 12:{index % 60:02d}:00"
    ifd = exif.get_ifd(0x8769)
    ifd[0x9003] = exif[0x0132]
    return exif.tobytes()


def _make_base(args: tuple[Path, int, Path]) -> str:
    src, index, out = args
    img = _variant(_load_rgb(src), index)
    portrait = img.height > img.width
    size = (3000, 4000) if portrait else (4000, 3000)
    big = _crop_to(img, size[0] / size[1]).resize(size, Image.Resampling.BICUBIC)
    rng = np.random.default_rng(index)
    arr = np.asarray(big, dtype=np.int16)
    arr = arr + rng.normal(0, 4, size=arr.shape[:2] + (1,)).astype(np.int16)
    big = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    tmp = out.with_suffix(".tmp")
    big.save(tmp, "JPEG", quality=92, exif=_exif(index))
    tmp.rename(out)
    return str(out)


def with_comment(jpeg: bytes, text: str) -> bytes:
    """The same picture with a JPEG COM segment after the APPn headers: new bytes, same pixels."""
    pos = 2
    while jpeg[pos] == 0xFF and 0xE0 <= jpeg[pos + 1] <= 0xEF:
        pos += 2 + struct.unpack(">H", jpeg[pos + 2 : pos + 4])[0]
    payload = text.encode()
    return jpeg[:pos] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + jpeg[pos:]


def _make_dngs(args: tuple[Path, list[tuple[Path, DngShape]]]) -> list[str]:
    """Every DNG of one base picture: decoded once, written once per preview shape."""
    from shoebox.devtools.photos import write_dng

    base, outs = args
    rgb = np.asarray(_load_rgb(base))
    for out, shape in outs:
        tmp = out.with_name(out.stem + ".tmp.dng")
        long_side = {"preview_long_side": shape.long_side} if shape.long_side else {}
        write_dng(tmp, rgb, preview=shape.preview, **long_side)
        tmp.rename(out)
    return [str(out) for out, _ in outs]


def _try_dngs(args: tuple[Path, list[tuple[Path, DngShape]]]) -> str | None:
    try:
        _make_dngs(args)
    except Exception as exc:  # noqa: BLE001 - a writer that does not know this shape yet
        return repr(exc)
    return None


def _shape_problem(shape: DngShape, path: Path, failure: str | None) -> str | None:
    """None when `path` has the preview `shape` stands for, else what is wrong (read in this process:
    rawpy's OpenMP may deadlock in a forked worker)."""
    call = f"write_dng(preview={shape.preview!r})"
    if failure:
        return f"{call} failed: {failure}"
    found = preview_of(path)
    if shape.found(found):
        return None
    want = shape.kind + (f", long side {shape.long_side}" if shape.long_side else "")
    return f"{call} wrote a preview LibRaw reads as {found}, not {want}"


def preview_of(path: Path) -> tuple[str, int | None]:
    """What LibRaw finds as the embedded preview: ("jpeg" | "bitmap", long side), ("none" | "broken", None)."""
    import rawpy

    with rawpy.imread(str(path)) as raw:
        try:
            thumb = raw.extract_thumb()
        except rawpy.LibRawNoThumbnailError:
            return "none", None
        except rawpy.LibRawError:
            return "broken", None
    if thumb.format == rawpy.ThumbFormat.BITMAP:
        return "bitmap", max(thumb.data.shape[:2])
    try:
        with Image.open(BytesIO(thumb.data)) as im:
            im.load()
            return "jpeg", max(im.size)
    except OSError:
        return "broken", None


def _ensure_dngs(
    corpus: Corpus, pool: ProcessPoolExecutor, bases: list[Path], log: Callable[[str], None]
) -> list[str]:
    """The DNG folders, one per preview shape; returns what could not be built (and why)."""
    for name in _LEGACY_DNG_FOLDERS:
        shutil.rmtree(corpus.root / name, ignore_errors=True)
    todo = []
    for shape in DNG_SHAPES:
        folder = corpus.dng(shape.name)
        if not _done(folder, _dng_what(shape)):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            todo.append(shape)
    if not todo:
        return []
    log(f"corpus: writing {N_DNG} 12 MP DNGs for each of: {', '.join(s.label for s in todo)}")
    # One DNG of each shape first, checked: a writer that does not know a shape costs seconds, not minutes.
    firsts = [corpus.dng(s.name) / "DSC_0000.dng" for s in todo]
    failures = pool.map(_try_dngs, [(bases[0], [(f, s)]) for f, s in zip(firsts, todo, strict=True)])
    problems = []
    for shape, first, failure in zip(todo, firsts, failures, strict=True):
        problem = _shape_problem(shape, first, failure)
        if problem:
            problems.append(f"corpus {first.parent.name}: {problem}")
            shutil.rmtree(first.parent, ignore_errors=True)
    good = [s for s in todo if corpus.dng(s.name).exists()]
    if good:
        jobs = [
            (bases[i], [(corpus.dng(s.name) / f"DSC_{i:04d}.dng", s) for s in good]) for i in range(1, N_DNG)
        ]
        list(pool.map(_make_dngs, jobs))
    for shape in good:
        _mark(corpus.dng(shape.name), _dng_what(shape))
    return problems


def _dng_what(shape: DngShape) -> dict:
    return {"n": N_DNG, "preview": shape.preview, "kind": shape.kind, "long_side": shape.long_side}


def _make_model(args: tuple[str, Path]) -> str:
    from shoebox.ml.models.testmodel import make_test_model

    size, out = args
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    make_test_model(size, tmp)  # type: ignore[arg-type]
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return str(out)


def _done(folder: Path, what: dict) -> bool:
    marker = folder / ".done"
    return marker.exists() and json.loads(marker.read_text()) == {**what, "version": VERSION}


def _mark(folder: Path, what: dict) -> None:
    (folder / ".done").write_text(json.dumps({**what, "version": VERSION}))


def _model_ready(path: Path) -> bool:
    # make_test_model writes its marker last: present means complete.
    return (path / "SHOEBOX_TEST_MODEL").exists() and (path / "visual" / "model.onnx").exists()


def ensure(
    corpus: Corpus,
    *,
    need_models: bool = True,
    need_dng: bool = True,
    need_small: bool = True,
    log: Callable[[str], None] = print,
) -> list[str]:
    """Build whatever is missing, in parallel processes; a no-op once everything exists.

    Returns the corpora that could not be built, each with its reason (their rows then fail).
    """
    t0 = time.monotonic()
    problems: list[str] = []
    corpus.root.mkdir(parents=True, exist_ok=True)
    workers = max(2, os.cpu_count() or 2)
    sources = source_photos()
    with ProcessPoolExecutor(workers) as pool:
        model_futs = []
        for size, path in (("vit-b-32", corpus.vit_b_32), ("tiny", corpus.tiny)):
            if need_models and not _model_ready(path):
                corpus.models.mkdir(parents=True, exist_ok=True)
                log(f"corpus: building the random-weight {size} test model in {path}")
                model_futs.append(pool.submit(_make_model, (size, path)))

        corpus.base12mp.mkdir(exist_ok=True)
        bases = [corpus.base12mp / f"base_{i:03d}.jpg" for i in range(N_BASES)]
        todo = [(sources[i % len(sources)], i, p) for i, p in enumerate(bases) if not p.exists()]
        if todo:
            log(f"corpus: upscaling {len(todo)} real photos to 12 MP JPEGs ({workers} processes)")
            list(pool.map(_make_base, todo, chunksize=2))

        what = {"n": N_JPEG_12MP, "bases": N_BASES}
        if not _done(corpus.jpeg12mp, what):
            log(f"corpus: writing {N_JPEG_12MP} distinct 12 MP JPEGs")
            shutil.rmtree(corpus.jpeg12mp, ignore_errors=True)
            for i in range(N_JPEG_12MP):
                folder = corpus.jpeg12mp / f"part{i // 100:02d}"
                folder.mkdir(parents=True, exist_ok=True)
                data = bases[i % N_BASES].read_bytes()
                (folder / f"IMG_{i:04d}.jpg").write_bytes(with_comment(data, f"shoebox-bench copy {i}"))
            _mark(corpus.jpeg12mp, what)

        what = {"n": N_224}
        if not _done(corpus.jpeg224, what):
            shutil.rmtree(corpus.jpeg224, ignore_errors=True)
            corpus.jpeg224.mkdir(parents=True)
            for i in range(N_224):
                img = _variant(_load_rgb(sources[i % len(sources)]), i // len(sources))
                img = (
                    ImageOps.fit(img, (224, 224), Image.Resampling.BICUBIC)
                    if i % 3 == 0
                    else _shortest(img, 224)
                )
                img.save(corpus.jpeg224 / f"small_{i:03d}.jpg", "JPEG", quality=90)
            _mark(corpus.jpeg224, what)

        if need_dng:
            problems += _ensure_dngs(corpus, pool, bases, log)

        if need_small:
            what = {"n": N_SMALL}
            if not _done(corpus.small10k, what):
                log(f"corpus: writing {N_SMALL} small distinct JPEGs for the re-ingest benchmark")
                shutil.rmtree(corpus.small10k, ignore_errors=True)
                smalls = []
                for i in range(2 * len(sources)):
                    buf = BytesIO()
                    img = _variant(_load_rgb(sources[i % len(sources)]), i // len(sources))
                    img.thumbnail((320, 320), Image.Resampling.BICUBIC)
                    img.save(buf, "JPEG", quality=85, exif=_exif(i))
                    smalls.append(buf.getvalue())
                for i in range(N_SMALL):
                    folder = corpus.small10k / f"set{i // 1000:02d}" / f"dir{(i // 100) % 10:02d}"
                    folder.mkdir(parents=True, exist_ok=True)
                    (folder / f"IMG_{i:05d}.jpg").write_bytes(
                        with_comment(smalls[i % len(smalls)], f"small {i}")
                    )
                _mark(corpus.small10k, what)

        what = {"n": 8}
        if not _done(corpus.search_seed, what):
            shutil.rmtree(corpus.search_seed, ignore_errors=True)
            corpus.search_seed.mkdir(parents=True)
            for i in range(8):
                src = corpus.jpeg224 / f"small_{i:03d}.jpg"
                (corpus.search_seed / f"seed_{i}.jpg").write_bytes(
                    with_comment(src.read_bytes(), f"seed {i}")
                )
            _mark(corpus.search_seed, what)

        for f in model_futs:
            f.result()
    dt = time.monotonic() - t0
    if dt > 1:
        log(f"corpus: ready in {dt:.0f} s ({corpus.root})")
    for problem in problems:
        log(problem)
    return problems


def _shortest(img: Image.Image, side: int) -> Image.Image:
    w, h = img.size
    scale = side / min(w, h)
    return img.resize((max(side, round(w * scale)), max(side, round(h * scale))), Image.Resampling.BICUBIC)
