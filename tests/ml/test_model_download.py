"""resolve_model_dir: a local folder, the cache, and the offline error (no download can run here)."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from shoebox.ml.config import MLSettings
from shoebox.ml.models.download import ModelUnavailableError, resolve_model_dir
from shoebox.protocol import ErrorCode


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Records (and refuses) every attempt to reach the network."""
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args)
        raise OSError("network access attempted in a test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def test_model_dir_setting_is_used_as_is(tiny_model_dir: Path, tmp_path: Path, no_network: list) -> None:
    settings = MLSettings(model_dir=tiny_model_dir, model_cache_dir=tmp_path / "cache")
    assert resolve_model_dir(settings) == tiny_model_dir
    assert no_network == []


def test_model_dir_that_is_not_a_model_folder_names_what_is_missing(tmp_path: Path, no_network: list) -> None:
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.json").write_text("{}")
    with pytest.raises(ModelUnavailableError) as raised:
        resolve_model_dir(MLSettings(model_dir=tmp_path / "half", model_cache_dir=tmp_path / "cache"))
    assert "visual/model.onnx" in raised.value.message
    assert "\n" not in raised.value.message


def test_a_complete_cached_model_is_used_without_downloading(
    tiny_model_dir: Path, tmp_path: Path, no_network: list
) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(tiny_model_dir, cache / "ViT-B-32__openai")
    settings = MLSettings(model_dir=None, model_cache_dir=cache, model_name="ViT-B-32__openai")
    assert resolve_model_dir(settings) == cache / "ViT-B-32__openai"
    assert no_network == []


def test_offline_without_a_model_is_a_one_line_error_saying_what_to_set(
    tmp_path: Path, no_network: list
) -> None:
    settings = MLSettings(model_dir=None, model_cache_dir=tmp_path / "cache", offline=True)
    with pytest.raises(ModelUnavailableError) as raised:
        resolve_model_dir(settings)
    error = raised.value
    assert error.code is ErrorCode.ML_UNAVAILABLE
    assert "\n" not in error.message
    assert "SHOEBOX_MODEL_DIR" in error.message
    assert "shoebox model make-test" in error.message
    assert no_network == []


def test_an_incomplete_cached_model_is_not_used(
    tiny_model_dir: Path, tmp_path: Path, no_network: list
) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(tiny_model_dir, cache / "ViT-B-32__openai")
    (cache / "ViT-B-32__openai" / "textual" / "model.onnx").unlink()  # an interrupted download
    settings = MLSettings(model_dir=None, model_cache_dir=cache, model_name="ViT-B-32__openai", offline=True)
    with pytest.raises(ModelUnavailableError):
        resolve_model_dir(settings)
