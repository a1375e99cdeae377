"""ML section: the bare encoder (the limit) against the service's multipart batch endpoint."""

from __future__ import annotations

import gc
import itertools
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench.corpus import Corpus
from bench.report import Report, Row
from shoebox.launcher import ServiceProcess

BARE_BATCH = 32
CONCURRENT_CLIENTS = 3
MIME = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".dng": "image/x-adobe-dng"}


@dataclass
class Bare:
    img_s: float
    text_s: float
    batch: int
    images: int
    input_size: int  # the model's input side: the short side of the ingest's renditions


def query_texts(n: int, salt: str = "") -> list[str]:
    """Distinct, photo-library-like queries (distinct so that no query cache hides the embedding)."""
    subjects = [
        "dog",
        "cat",
        "beach",
        "mountain",
        "birthday cake",
        "red car",
        "forest",
        "city at night",
        "old church",
        "sunset",
        "flowers",
        "kids playing",
        "snow",
        "boat",
        "bicycle",
        "bird",
    ]
    places = [
        "in the garden",
        "near the lake",
        "in paris",
        "at home",
        "in winter",
        "on the road",
        "at the market",
        "by the sea",
        "in the rain",
        "under a bridge",
    ]
    out = []
    for i, (s, p) in enumerate(itertools.product(subjects, places)):
        out.append(f"a photo of a {s} {p} {salt}{i}".strip())
        if len(out) == n:
            return out
    while len(out) < n:
        out.append(f"a photo number {salt}{len(out)} of something")
    return out


def measure_bare_encoder(corpus: Corpus, batches: int, log: Callable[[str], None]) -> Bare:
    """ClipModel.embed_images on ready [32,3,S,S] arrays: no decode, no HTTP, no queue — the ceiling."""
    from shoebox.ml.models.clip import ClipModel
    from shoebox.ml.preprocess import preprocess

    model = ClipModel(corpus.vit_b_32)
    model.load()
    photos = sorted(corpus.jpeg224.glob("*.jpg"))[:BARE_BATCH]
    arrays = [preprocess(Image.open(p).convert("RGB"), model.preprocess_cfg) for p in photos]
    while len(arrays) < BARE_BATCH:
        arrays += arrays[: BARE_BATCH - len(arrays)]
    batch = np.stack(arrays).astype(np.float32)
    model.embed_images(batch)  # warm-up: first run allocates
    t0 = time.perf_counter()
    for _ in range(batches):
        model.embed_images(batch)
    img_s = batches * BARE_BATCH / (time.perf_counter() - t0)
    log(f"ml: bare image encoder {img_s:.1f} img/s")

    texts = query_texts(BARE_BATCH * (batches + 1), salt="bare ")
    model.embed_texts(texts[:BARE_BATCH])
    t0 = time.perf_counter()
    for i in range(1, batches + 1):
        model.embed_texts(texts[i * BARE_BATCH : (i + 1) * BARE_BATCH])
    text_s = batches * BARE_BATCH / (time.perf_counter() - t0)
    log(f"ml: bare text encoder {text_s:.1f} texts/s")
    input_size = model.input_size
    del model
    gc.collect()
    return Bare(
        img_s=img_s, text_s=text_s, batch=BARE_BATCH, images=batches * BARE_BATCH, input_size=input_size
    )


def capabilities(ml: ServiceProcess) -> dict:
    return httpx.get(ml.url + "/api/v1/capabilities", timeout=30).json()


def _post_batch(client: httpx.Client, files: list[Path], tag: str) -> tuple[int, dict[str, int]]:
    parts = [
        ("files", (p.name, p.read_bytes(), MIME.get(p.suffix.lower(), "application/octet-stream")))
        for p in files
    ]
    ids = [f"{tag}-{i}" for i in range(len(files))]
    while True:
        r = client.post(
            "/api/v1/batch_embed_and_caption_multipart", files=parts, data={"unique_ids": json.dumps(ids)}
        )
        if r.status_code == 429:
            time.sleep(float(r.headers.get("Retry-After", "0.5")))
            continue
        r.raise_for_status()
        errors: dict[str, int] = {}
        ok = 0
        for item in r.json()["results"]:
            if item.get("error"):
                code = item["error"]["code"]
                errors[code] = errors.get(code, 0) + 1
            elif item.get("embedding"):
                ok += 1
        return ok, errors


def service_throughput(
    ml: ServiceProcess, files: list[Path], batch: int, n_images: int
) -> tuple[float, int, dict[str, int]]:
    """img/s through the multipart endpoint, CONCURRENT_CLIENTS requests in flight, `batch` files each."""
    cycle = itertools.cycle(files)
    batches = [[next(cycle) for _ in range(batch)] for _ in range(max(1, n_images // batch))]
    lock = threading.Lock()
    pending = iter(enumerate(batches))
    totals = {"ok": 0}
    errors: dict[str, int] = {}

    def client_loop() -> None:
        with httpx.Client(base_url=ml.url, timeout=600.0) as client:
            while True:
                with lock:
                    nxt = next(pending, None)
                if nxt is None:
                    return
                i, chunk = nxt
                ok, errs = _post_batch(client, chunk, f"b{i}")
                with lock:
                    totals["ok"] += ok
                    for k, v in errs.items():
                        errors[k] = errors.get(k, 0) + v

    t0 = time.perf_counter()
    with ThreadPoolExecutor(CONCURRENT_CLIENTS) as pool:
        for f in [pool.submit(client_loop) for _ in range(CONCURRENT_CLIENTS)]:
            f.result()
    dt = time.perf_counter() - t0
    sent = sum(len(b) for b in batches)
    return sent / dt, sent, errors


def text_throughput(ml: ServiceProcess, n_requests: int, per_request: int) -> float:
    texts = query_texts(n_requests * per_request + per_request, salt="svc ")
    with httpx.Client(base_url=ml.url, timeout=120.0) as client:
        client.post("/api/v1/embed_text", json={"texts": texts[:per_request]}).raise_for_status()
        t0 = time.perf_counter()
        for i in range(1, n_requests + 1):
            chunk = texts[i * per_request : (i + 1) * per_request]
            if per_request == 1:
                r = client.post("/api/v1/embed_text", json={"text": chunk[0]})
            else:
                r = client.post("/api/v1/embed_text", json={"texts": chunk})
            r.raise_for_status()
        return n_requests * per_request / (time.perf_counter() - t0)


def run(
    report: Report, corpus: Corpus, ml: ServiceProcess, bare: Bare, quick: bool, log: Callable[[str], None]
) -> None:
    caps = capabilities(ml)
    batch = int(caps["safe_clip_batch"])
    report.context["ml_capabilities"] = caps
    report.add(
        Row("ml", "safe_clip_batch (service's probe)", batch, "images", note=f"device {caps.get('device')}")
    )

    # Warm the service's decode pool and sessions at this batch size before timing anything.
    service_throughput(ml, sorted(corpus.jpeg224.glob("*.jpg")), batch, batch)

    scale = 1 if quick else 3
    cases = [
        ("(a) 224-px pre-resized JPEGs", sorted(corpus.jpeg224.glob("*.jpg")), 96 * scale, ">= 0.85", 0.85),
        ("(b) 12 MP JPEGs", sorted(corpus.jpeg12mp.rglob("*.jpg"))[:300], 64 * scale, None, None),
        (
            "(c) 12 MP DNGs, embedded preview",
            sorted(corpus.dng("jpeg").glob("*.dng")),
            64 * scale,
            None,
            None,
        ),
        (
            "(d) 12 MP DNGs, no preview (half-size demosaic)",
            sorted(corpus.dng("none").glob("*.dng")),
            32 * scale,
            None,
            None,
        ),
    ]
    for label, files, n_images, target, threshold in cases:
        if not files:
            report.errors.append(f"ml {label}: no corpus files")
            continue
        try:
            img_s, sent, errors = service_throughput(ml, files, batch, -(-n_images // batch) * batch)
        except Exception as exc:  # noqa: BLE001 - one broken case must not hide the others
            report.errors.append(f"ml {label}: {exc!r}")
            log(f"ml: {label} FAILED: {exc!r}")
            continue
        ratio = img_s / bare.img_s
        note = f"{sent} images, {CONCURRENT_CLIENTS} clients x batch {batch}"
        if errors:
            note += f"; ITEM ERRORS {errors}"
        report.add(
            Row(
                "ml",
                f"service {label}",
                img_s,
                "img/s",
                target=target,
                note=note,
                vs="image",
                min_ratio=threshold,
                clean=not errors,
            )
        )
        log(f"ml: {label} {img_s:.1f} img/s ({ratio:.2f} of the bare encoder at start)")

    n = 4 if quick else 10
    for label, per_request in (
        ("text embeddings, batches of 32", 32),
        ("text embeddings, one per request", 1),
    ):
        try:
            rate = text_throughput(ml, n if per_request > 1 else 8 * n, per_request)
        except Exception as exc:  # noqa: BLE001
            report.errors.append(f"ml {label}: {exc!r}")
            continue
        report.add(
            Row(
                "ml",
                f"service {label}",
                rate,
                "texts/s",
                note="ratio to the bare text encoder",
                vs="text",
            )
        )
        log(f"ml: {label} {rate:.1f} texts/s")
