"""The capability handshake: how big a batch this device takes, measured at start-up, not assumed.

CPU: throughput grows with the batch until the cores are saturated, then flattens; the safe
batch is the smallest one that is already close to the best measured throughput (bigger
batches only add latency). CUDA: the largest batch up to `max_batch` that runs without
running out of memory, with a margin for what other requests and fragmentation take.

A probe costs seconds on a real model, so its result is cached per (model, device, dtype,
runtime version, input size, CPU count) under `settings.probe_cache_dir`; a restart reads it.
`SHOEBOX_SAFE_CLIP_BATCH` skips the probe altogether.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np

from shoebox.ml.config import MLSettings

log = logging.getLogger(__name__)

# Two doublings of the batch in a row that each buy less than this much throughput end the CPU search.
MIN_GAIN = 1.10
# The CPU pick is the smallest batch within this fraction of the best throughput measured.
NEAR_BEST = 0.95
# The CPU search stops before it would run past this long, and keeps the best batch so far.
CPU_PROBE_BUDGET_S = 5.0
# The CPU search always reaches this batch (within max_batch): on a busy machine a budget cut
# at batch 1 or 2 would cache a needlessly small batch.
CPU_MIN_SEARCH = 8
# Each CPU batch size is timed over at least this long (and at least two runs).
CPU_MIN_TIMING_S = 0.15
# The CUDA pick keeps this share of the largest batch that fitted (then rounded down to 2^k).
CUDA_MARGIN = 0.75

# Bump when the probe's method changes, so old cached answers are not trusted.
PROBE_VERSION = 4


class ProbedModel(Protocol):
    model_name: str
    device: str
    dtype: str
    runtime_version: str
    input_size: int

    def embed_images(self, batch: np.ndarray) -> np.ndarray: ...


@dataclass
class ProbeResult:
    safe_clip_batch: int
    throughput_img_s: float | None
    source: Literal["probe", "cache", "setting"]
    # batch size -> images per second, as measured (empty for a setting)
    measured: dict[int, float]
    seconds: float = 0.0


def _pow2_floor(n: float) -> int:
    n = max(1, int(n))
    return 1 << (n.bit_length() - 1)


def cache_key(model: ProbedModel, settings: MLSettings) -> dict[str, object]:
    return {
        "probe_version": PROBE_VERSION,
        "model_name": model.model_name,
        "device": model.device,
        "dtype": model.dtype,
        "runtime_version": model.runtime_version,
        "input_size": model.input_size,
        "max_batch": settings.max_batch,
        # Threads decide CPU throughput, so another core count is another device.
        "cpu_count": os.cpu_count() if model.device == "cpu" else None,
        "intra_op_threads": settings.intra_op_threads if model.device == "cpu" else None,
    }


def cache_path(model: ProbedModel, settings: MLSettings) -> Path:
    key = cache_key(model, settings)
    parts = [str(key[k]) for k in ("model_name", "device", "dtype", "runtime_version", "input_size")]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", "-".join(parts))
    return Path(settings.probe_cache_dir) / f"{stem}.json"


def _read_cache(path: Path, key: dict[str, object]) -> ProbeResult | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("key") != key:
        return None
    try:
        return ProbeResult(
            safe_clip_batch=int(data["safe_clip_batch"]),
            throughput_img_s=data.get("throughput_img_s"),
            source="cache",
            measured={int(k): float(v) for k, v in data.get("measured", {}).items()},
            seconds=float(data.get("seconds", 0.0)),
        )
    except (KeyError, TypeError, ValueError):
        return None


def _write_cache(path: Path, key: dict[str, object], result: ProbeResult) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, **asdict(result), "created_at": time.time()}, indent=2))
        tmp.replace(path)
    except OSError as exc:  # a read-only cache only costs the next start a probe
        log.warning("could not write the probe cache %s: %s", path, exc)


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    # Not zeros: some kernels take shortcuts on them, and the probe must time the real thing.
    return np.random.default_rng(seed).standard_normal((n, 3, size, size), dtype=np.float32)


def probe_cpu(model: ProbedModel, max_batch: int) -> tuple[int, dict[int, float]]:
    """Double the batch while it pays (and the time budget allows); pick the smallest near-best one.

    The search ends after two doublings in a row that each gain less than MIN_GAIN (one flat step
    can be noise), at `max_batch`, or when the next size would not fit in the remaining budget.
    """
    budget_end = time.perf_counter() + CPU_PROBE_BUDGET_S
    model.embed_images(_images(1, model.input_size))  # first run pays for allocations
    measured: dict[int, float] = {}
    flat_steps = 0
    batch = 1
    while batch <= max_batch:
        images = _images(batch, model.input_size, seed=batch)
        fastest = float("inf")
        runs = 0
        began = time.perf_counter()
        # At least two runs (a new shape's first run allocates), at least CPU_MIN_TIMING_S in all.
        while runs < 2 or time.perf_counter() - began < CPU_MIN_TIMING_S:
            run_began = time.perf_counter()
            model.embed_images(images)
            fastest = min(fastest, time.perf_counter() - run_began)
            runs += 1
        # The fastest run, not the mean: other processes on the machine only ever slow a run down.
        measured[batch] = batch / fastest
        prev = measured.get(batch // 2)
        if prev is not None:
            flat_steps = flat_steps + 1 if measured[batch] < prev * MIN_GAIN else 0
        if flat_steps >= 2:
            break
        next_cost = 2 * 2 * fastest  # two runs of a batch twice the size
        if batch >= CPU_MIN_SEARCH and time.perf_counter() + next_cost > budget_end:
            log.info("the batch probe stops at batch %d to stay within %.0fs", batch, CPU_PROBE_BUDGET_S)
            break
        batch *= 2
    best = max(measured.values())
    safe = min(b for b, rate in measured.items() if rate >= NEAR_BEST * best)
    return safe, measured


def _is_out_of_memory(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return any(
        s in text
        for s in ("out of memory", "failed to allocate", "cudaerrormemoryallocation", "bfc_arena", "oom")
    )


def probe_cuda(model: ProbedModel, max_batch: int) -> tuple[int, dict[int, float]]:
    """Largest power-of-two batch (≤ max_batch) that runs; keep CUDA_MARGIN of it if one failed."""
    measured: dict[int, float] = {}
    largest_ok = 0
    hit_limit = False
    batch = 1
    while batch <= max_batch:
        images = _images(batch, model.input_size, seed=batch)
        try:
            model.embed_images(images)  # warm-up: kernels, arena growth
            began = time.perf_counter()
            model.embed_images(images)
            measured[batch] = batch / max(time.perf_counter() - began, 1e-9)
        except Exception as exc:  # noqa: BLE001 - only memory exhaustion is an answer here
            if not _is_out_of_memory(exc):
                raise
            log.info("batch %d does not fit on the device: %s", batch, str(exc).splitlines()[0][:200])
            hit_limit = True
            break
        largest_ok = batch
        batch *= 2
    if largest_ok == 0:
        raise RuntimeError("not even a batch of one image fits on the device")
    if not hit_limit and largest_ok * 2 > max_batch:
        largest_ok = max_batch  # the cap, not the device, stopped the search: no margin needed
        return largest_ok, measured
    return max(1, _pow2_floor(largest_ok * CUDA_MARGIN)), measured


def measure_safe_batch(model: ProbedModel, settings: MLSettings) -> ProbeResult:
    """The setting if given, else the cached probe for this model and device, else a fresh probe."""
    if settings.safe_clip_batch:
        safe = max(1, min(settings.safe_clip_batch, settings.max_batch))
        log.info("safe_clip_batch=%d from SHOEBOX_SAFE_CLIP_BATCH (probe skipped)", safe)
        return ProbeResult(safe, None, "setting", {})
    key = cache_key(model, settings)
    path = cache_path(model, settings)
    cached = _read_cache(path, key)
    if cached is not None:
        log.info(
            "safe_clip_batch=%d read from the probe cache %s (%.1f img/s)",
            cached.safe_clip_batch,
            path,
            cached.throughput_img_s or 0.0,
        )
        return cached
    log.info("measuring safe_clip_batch on %s (%s, %s)...", model.device, model.model_name, model.dtype)
    began = time.perf_counter()
    if model.device == "cuda":
        safe, measured = probe_cuda(model, settings.max_batch)
    else:
        safe, measured = probe_cpu(model, settings.max_batch)
    seconds = time.perf_counter() - began
    throughput = measured.get(safe)
    result = ProbeResult(safe, throughput, "probe", measured, seconds)
    log.info(
        "safe_clip_batch=%d measured in %.1fs (img/s by batch: %s)",
        safe,
        seconds,
        ", ".join(f"{b}: {r:.1f}" for b, r in sorted(measured.items())),
    )
    _write_cache(path, key, result)
    return result
