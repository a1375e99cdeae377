"""The safe-batch probe on the real tiny model: bounds, the setting, and the per-device cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shoebox.ml.capabilities import cache_path, measure_safe_batch
from shoebox.ml.config import MLSettings
from shoebox.ml.models.clip import ClipModel


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
