"""The inference scheduler on the real tiny ONNX model: batching, the text lane, admission, cancellation."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest

from shoebox.ml.models.clip import ClipModel
from shoebox.ml.scheduler import InferenceScheduler
from shoebox.protocol import ErrorCode, ShoeboxError


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> ClipModel:
    clip = ClipModel(tiny_model_dir, device="cpu", intra_op_threads=1)
    clip.load()
    return clip


def images(model: ClipModel, n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    size = model.input_size
    return [rng.standard_normal((3, size, size), dtype=np.float32) for _ in range(n)]


def run(coro):
    return asyncio.run(coro)


def make(model: ClipModel, **kwargs) -> InferenceScheduler:
    options = {"batch_size": 8, "max_queue": 64, "batch_max_wait_ms": 5.0, **kwargs}
    return InferenceScheduler(model, **options)


def test_small_concurrent_requests_are_coalesced_into_one_batch(model: ClipModel) -> None:
    scheduler = make(model, batch_size=8, batch_max_wait_ms=500)
    scheduler.start()

    async def main() -> list[np.ndarray]:
        return await asyncio.gather(*(scheduler.embed_images(images(model, 2, seed)) for seed in range(4)))

    try:
        results = run(main())
    finally:
        scheduler.close()
    assert scheduler.stats["image_batches"] == 1
    assert scheduler.stats["images"] == 8
    assert [r.shape for r in results] == [(2, model.embedding_dim)] * 4


def test_a_full_batch_does_not_wait_for_the_maximum_wait(model: ClipModel) -> None:
    scheduler = make(model, batch_size=4, batch_max_wait_ms=10_000)
    scheduler.start()
    try:
        began = time.monotonic()
        run(scheduler.embed_images(images(model, 4, 0)))
        elapsed = time.monotonic() - began
    finally:
        scheduler.close()
    assert elapsed < 5.0


def test_each_request_gets_its_own_embeddings_in_order_whatever_the_batching(model: ClipModel) -> None:
    requests = [images(model, n, seed) for seed, n in enumerate([3, 5, 1, 7])]
    scheduler = make(model, batch_size=4, batch_max_wait_ms=50)
    scheduler.start()

    async def main() -> list[np.ndarray]:
        return await asyncio.gather(*(scheduler.embed_images(r) for r in requests))

    try:
        results = run(main())
    finally:
        scheduler.close()
    for request, result in zip(requests, results, strict=True):
        expected = model.embed_images(np.stack(request))
        np.testing.assert_allclose(result, expected, atol=1e-5)


def test_a_request_that_does_not_fit_is_refused_at_once_with_retry_after(model: ClipModel) -> None:
    scheduler = make(model, max_queue=10, throughput_img_s=2.0)  # not started: nothing drains
    held = scheduler.admit(8)
    with pytest.raises(ShoeboxError) as refused:
        scheduler.admit(4)
    held.release()
    assert refused.value.code == ErrorCode.BUSY
    assert refused.value.status == 429
    assert int(refused.value.headers["Retry-After"]) >= 1
    assert scheduler.queue_depth == 0


def test_retry_after_grows_with_the_backlog_and_falls_with_throughput(model: ClipModel) -> None:
    slow = make(model, max_queue=100, throughput_img_s=1.0)
    fast = make(model, max_queue=100, throughput_img_s=1000.0)
    for scheduler in (slow, fast):
        scheduler.admit(100)
    assert slow.retry_after_s(50) >= 50
    assert fast.retry_after_s(50) == 1


def test_a_request_larger_than_the_whole_queue_is_a_validation_error(model: ClipModel) -> None:
    scheduler = make(model, max_queue=4)
    with pytest.raises(ShoeboxError) as refused:
        scheduler.admit(5)
    assert refused.value.code == ErrorCode.VALIDATION
    assert refused.value.status == 413


def test_a_cancelled_request_leaves_the_queue_at_once(model: ClipModel) -> None:
    scheduler = make(model, max_queue=64)  # worker not started, so the request stays queued

    async def main() -> None:
        task = asyncio.create_task(scheduler.embed_images(images(model, 40, 0)))
        await asyncio.sleep(0.05)
        assert scheduler.queue_depth == 40
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run(main())
    assert scheduler.queue_depth == 0
    assert scheduler.queued_images == 0
    assert scheduler.stats["dropped_images"] == 40
    scheduler.start()
    scheduler.close()
    assert scheduler.stats["images"] == 0


def test_text_is_served_before_queued_image_batches(model: ClipModel) -> None:
    scheduler = make(model, batch_size=2, max_queue=64, batch_max_wait_ms=0)
    finished: list[str] = []

    async def main() -> None:
        async def image_request(i: int) -> None:
            await scheduler.embed_images(images(model, 2, i))
            finished.append(f"image{i}")

        async def text_request() -> None:
            await scheduler.embed_texts(["a photo of a dog"])
            finished.append("text")

        tasks = [asyncio.create_task(image_request(i)) for i in range(10)]
        await asyncio.sleep(0.05)  # all ten image requests are queued before the text arrives
        tasks.append(asyncio.create_task(text_request()))
        await asyncio.sleep(0.05)
        scheduler.start()
        await asyncio.gather(*tasks)

    try:
        run(main())
    finally:
        scheduler.close()
    assert finished.index("text") == 0


def test_text_embeddings_match_the_model(model: ClipModel) -> None:
    scheduler = make(model)
    scheduler.start()
    try:
        result = run(scheduler.embed_texts(["a red car", "a cat on a sofa"]))
    finally:
        scheduler.close()
    np.testing.assert_allclose(result, model.embed_texts(["a red car", "a cat on a sofa"]), atol=1e-5)


def test_an_inference_failure_fails_only_the_request_at_fault(model: ClipModel) -> None:
    size = model.input_size
    misshapen = [np.zeros((3, size // 2, size // 2), dtype=np.float32)]
    scheduler = make(model, batch_size=8, batch_max_wait_ms=200)
    scheduler.start()

    async def main() -> list[object]:
        return await asyncio.gather(
            scheduler.embed_images(images(model, 2, 0)),
            scheduler.embed_images(misshapen),
            scheduler.embed_images(images(model, 3, 1)),
            return_exceptions=True,
        )

    try:
        good_a, bad, good_b = run(main())
    finally:
        scheduler.close()
    assert isinstance(bad, ShoeboxError) and bad.code == ErrorCode.CLIP_INFER
    assert good_a.shape == (2, model.embedding_dim)
    assert good_b.shape == (3, model.embedding_dim)
    assert scheduler.queue_depth == 0


def test_measured_throughput_is_tracked_from_real_batches(model: ClipModel) -> None:
    scheduler = make(model, throughput_img_s=None)
    scheduler.start()
    try:
        run(scheduler.embed_images(images(model, 8, 0)))
    finally:
        scheduler.close()
    assert scheduler.throughput_img_s is not None and scheduler.throughput_img_s > 0


def test_closing_fails_queued_work_instead_of_hanging(model: ClipModel) -> None:
    scheduler = make(model)  # never started

    async def main() -> None:
        task = asyncio.create_task(scheduler.embed_images(images(model, 3, 0)))
        await asyncio.sleep(0.05)
        scheduler.close()
        with pytest.raises(ShoeboxError) as closed:
            await task
        assert closed.value.code == ErrorCode.ML_UNAVAILABLE

    run(main())


class _FakeModel:
    """Answers at once (after a short pause like a real call), so a test controls the traffic."""

    def embed_images(self, batch: np.ndarray) -> np.ndarray:
        time.sleep(0.002)
        return np.ones((len(batch), 4), dtype=np.float32)

    def embed_texts(self, texts: list[str], language: str | None = None) -> np.ndarray:
        time.sleep(0.002)
        return np.ones((len(texts), 4), dtype=np.float32)


def test_images_progress_under_a_continuous_text_flood() -> None:
    from shoebox.ml.scheduler import MAX_TEXT_STREAK, TEXT_BATCH

    scheduler = InferenceScheduler(_FakeModel(), batch_size=2, max_queue=64, batch_max_wait_ms=0)
    scheduler.start()

    async def main() -> tuple[int, int]:
        stop = asyncio.Event()

        async def flood() -> None:
            while not stop.is_set():  # a full text call each, so the text lane is never empty
                await scheduler.embed_texts(["a photo of a dog"] * TEXT_BATCH)

        floods = [asyncio.create_task(flood()) for _ in range(64)]
        await asyncio.sleep(0.05)
        before = scheduler.stats["text_calls"]
        image = np.zeros((3, 4, 4), dtype=np.float32)
        result = await asyncio.wait_for(scheduler.embed_images([image] * 6), timeout=10)
        during = scheduler.stats["text_calls"] - before
        stop.set()
        await asyncio.gather(*floods)
        return len(result), during

    try:
        embedded, text_calls_meanwhile = run(main())
    finally:
        scheduler.close()
    assert embedded == 6
    # Three batches of two, each after at most MAX_TEXT_STREAK text calls (plus the one running).
    assert scheduler.stats["image_batches"] == 3
    assert text_calls_meanwhile <= 3 * MAX_TEXT_STREAK + 1


def test_images_of_one_model_progress_under_a_text_flood_on_another() -> None:
    from shoebox.ml.scheduler import TEXT_BATCH, DeviceGate

    gate = DeviceGate()
    searched = InferenceScheduler(_FakeModel(), batch_size=2, max_queue=64, batch_max_wait_ms=0, gate=gate)
    migrating = InferenceScheduler(_FakeModel(), batch_size=2, max_queue=64, batch_max_wait_ms=0, gate=gate)
    searched.start()
    migrating.start()

    async def main() -> int:
        stop = asyncio.Event()

        async def flood() -> None:
            while not stop.is_set():
                await searched.embed_texts(["a photo of a dog"] * TEXT_BATCH)

        floods = [asyncio.create_task(flood()) for _ in range(64)]
        await asyncio.sleep(0.05)
        image = np.zeros((3, 4, 4), dtype=np.float32)
        result = await asyncio.wait_for(migrating.embed_images([image] * 6), timeout=10)
        stop.set()
        await asyncio.gather(*floods)
        return len(result)

    try:
        embedded = run(main())
    finally:
        searched.close()
        migrating.close()
    assert embedded == 6
    assert migrating.stats["image_batches"] == 3
