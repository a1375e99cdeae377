"""The safe-batch probe: on the real tiny model (bounds, the setting, the per-device cache), and its
CPU rule pinned on a fake model and a fake clock."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from shoebox.ml.capabilities import (
    CPU_MAX_CANDIDATE,
    CPU_MIN_BATCH,
    CPU_ROUNDS,
    PROBE_VERSION,
    cache_path,
    choose_cpu_batch,
    measure_safe_batch,
    probe_cpu,
    probe_rendition,
)
from shoebox.ml.config import MLSettings
from shoebox.ml.models.clip import ClipModel
from shoebox.ml.prepare import prepare_image
from shoebox.ml.preprocess import PreprocessConfig


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> ClipModel:
    clip = ClipModel(tiny_model_dir, device="cpu", intra_op_threads=1)
    clip.load()
    return clip


def settings(tmp_path: Path, **kwargs: object) -> MLSettings:
    return MLSettings(probe_cache_dir=tmp_path, **kwargs)


def test_the_probe_stays_within_max_batch_and_measures_throughput(model: ClipModel, tmp_path: Path) -> None:
    result = measure_safe_batch(model, settings(tmp_path, max_batch=4))
    assert result.source == "probe"
    assert 1 <= result.safe_clip_batch <= 4
    assert max(result.measured) <= 4
    assert result.throughput_img_s == result.measured[result.safe_clip_batch] > 0


def test_the_setting_skips_the_probe(model: ClipModel, tmp_path: Path) -> None:
    result = measure_safe_batch(model, settings(tmp_path, safe_clip_batch=3))
    assert (result.safe_clip_batch, result.source, result.measured) == (3, "setting", {})
    assert not list(tmp_path.iterdir())


def test_a_second_measurement_reads_the_cache(model: ClipModel, tmp_path: Path) -> None:
    first = measure_safe_batch(model, settings(tmp_path, max_batch=8))
    second = measure_safe_batch(model, settings(tmp_path, max_batch=8))
    assert second.source == "cache"
    assert second.safe_clip_batch == first.safe_clip_batch


def test_a_cache_written_for_another_runtime_is_not_trusted(model: ClipModel, tmp_path: Path) -> None:
    ml_settings = settings(tmp_path, max_batch=8)
    measure_safe_batch(model, ml_settings)
    path = cache_path(model, ml_settings)
    data = json.loads(path.read_text())
    data["key"]["runtime_version"] = "onnxruntime-0.0.1"
    data["safe_clip_batch"] = 999
    path.write_text(json.dumps(data))
    again = measure_safe_batch(model, ml_settings)
    assert again.source == "probe"
    assert again.safe_clip_batch <= 8


# ------------------------------------------------------------------ the CPU rule, on a fake model and clock

FAKE_SIZE = 32


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeModel:
    """Takes `batch / rate(batch)` seconds of the fake clock per batch; real decoding, no real timing."""

    model_name = "fake"
    device = "cpu"
    dtype = "fp32"
    runtime_version = "fake-1"
    input_size = FAKE_SIZE
    preprocess_cfg = PreprocessConfig(size=FAKE_SIZE, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))

    def __init__(self, curve: dict[int, float], jitter: float = 0.0, seed: int = 0) -> None:
        self.clock = FakeClock()
        self.curve = curve
        self.jitter = jitter
        self.rng = np.random.default_rng(seed)
        self.batches: list[np.ndarray] = []

    def embed_images(self, batch: np.ndarray) -> np.ndarray:
        self.batches.append(batch)
        rate = self.curve[len(batch)] * (1 + self.rng.uniform(-self.jitter, self.jitter))
        self.clock.now += len(batch) / rate
        return np.zeros((len(batch), 4), dtype=np.float32)


def fake_probe(curve: dict[int, float], max_batch: int = 256, **kwargs: float) -> tuple[int, FakeModel]:
    fake = FakeModel(curve, **kwargs)
    safe, _, _ = probe_cpu(fake, max_batch, clock=fake.clock)
    return safe, fake


FLAT = {1: 100.0, 2: 100.0, 4: 100.0, 8: 100.0, 16: 100.0}
# As measured for a random-weight ViT-B/32 on 2 cores (module docstring of ml/capabilities.py).
VIT_B_32_2_CORES = {1: 16.4, 2: 19.9, 4: 22.1, 8: 23.9, 16: 24.0}
# Rises to 4, flat from there: the floor lifts the pick from 4 to 8 at no cost.
KNEE_AT_4 = {1: 50.0, 2: 80.0, 4: 100.0, 8: 100.0, 16: 100.0}
# Still rising past 8 (many cores): 8 is not near the best, 16 is.
RISING_PAST_8 = {1: 10.0, 2: 20.0, 4: 40.0, 8: 75.0, 16: 100.0}
# Bigger batches clearly slower (cache thrashing): the floor does not force a slow batch.
FALLING_AFTER_2 = {1: 80.0, 2: 100.0, 4: 95.0, 8: 70.0, 16: 60.0}


@pytest.mark.parametrize(
    ("curve", "pick"),
    [(FLAT, 8), (VIT_B_32_2_CORES, 8), (KNEE_AT_4, 8), (RISING_PAST_8, 16), (FALLING_AFTER_2, 2)],
    ids=["flat", "vit-b-32-2-cores", "rising-then-flat", "rising-past-the-floor", "falling-after-2"],
)
def test_hand_made_throughput_curves_give_the_documented_picks(curve: dict[int, float], pick: int) -> None:
    assert choose_cpu_batch({batch: [rate] * CPU_ROUNDS for batch, rate in curve.items()}) == pick
    assert fake_probe(curve)[0] == pick


@pytest.mark.parametrize("seed", range(5))
def test_a_flat_curve_with_3_percent_noise_always_picks_the_floor(seed: int) -> None:
    assert fake_probe(FLAT, jitter=0.03, seed=seed)[0] == CPU_MIN_BATCH


def test_the_same_measurements_always_give_the_same_pick() -> None:
    first = FakeModel(VIT_B_32_2_CORES, jitter=0.05, seed=7)
    again = FakeModel(VIT_B_32_2_CORES, jitter=0.05, seed=7)
    assert probe_cpu(first, 256, clock=first.clock) == probe_cpu(again, 256, clock=again.clock)


def test_one_disturbed_round_does_not_move_the_pick() -> None:
    samples = {batch: [rate] * CPU_ROUNDS for batch, rate in VIT_B_32_2_CORES.items()}
    samples[8][1] *= 0.5  # another process took the cores while batch 8 was timed
    samples[1][2] *= 1.5
    assert choose_cpu_batch(samples) == 8


def test_the_pick_stays_within_max_batch() -> None:
    assert fake_probe(FLAT, max_batch=4)[0] == 4
    assert fake_probe(FLAT, max_batch=6)[0] == 4
    assert fake_probe(FLAT, max_batch=1)[0] == 1


def test_every_batch_size_is_timed_on_the_same_number_of_images_each_round() -> None:
    _, fake = fake_probe(FLAT)
    sizes = [len(batch) for batch in fake.batches]
    warmup, timed = sizes[:5], sizes[5:]
    assert warmup == [1, 2, 4, 8, 16]
    for batch in warmup:
        assert sum(s for s in timed if s == batch) == CPU_MAX_CANDIDATE * CPU_ROUNDS


def test_the_probe_times_decoded_renditions_through_the_services_prepare_path() -> None:
    _, fake = fake_probe(FLAT)
    rendition = probe_rendition(FAKE_SIZE)
    expected = prepare_image(lambda: rendition, "probe.jpg", fake, max_pixels=10**6).array
    assert expected is not None
    for batch in fake.batches:
        assert batch.shape[1:] == (3, FAKE_SIZE, FAKE_SIZE)
        for image in batch:
            np.testing.assert_array_equal(image, expected)


def test_a_slow_model_gets_fewer_rounds_within_the_budget() -> None:
    slow = {batch: 0.5 for batch in FLAT}  # two seconds an image
    _, _, samples = probe_cpu(fake := FakeModel(slow), 256, clock=fake.clock)
    assert all(len(rates) == 1 for rates in samples.values())


def test_a_cache_written_by_an_older_probe_is_not_trusted(tmp_path: Path) -> None:
    fake = FakeModel(KNEE_AT_4)
    ml_settings = settings(tmp_path)
    first = measure_safe_batch(fake, ml_settings, clock=fake.clock)
    assert first.samples and first.safe_clip_batch == 8
    assert measure_safe_batch(fake, ml_settings, clock=fake.clock).samples == first.samples
    path = cache_path(fake, ml_settings)
    data = json.loads(path.read_text())
    data["key"]["probe_version"] = PROBE_VERSION - 1
    data["safe_clip_batch"] = 2
    path.write_text(json.dumps(data))
    assert measure_safe_batch(fake, ml_settings, clock=fake.clock).source == "probe"
