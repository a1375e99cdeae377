"""ClipModel on the real ONNX Runtime with the tiny random-weight model."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest

from shoebox.ml.models.clip import TEST_MODEL_PREFIX, ClipModel


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path) -> ClipModel:
    clip = ClipModel(tiny_model_dir, device="cpu")
    clip.load()
    return clip


def random_batch(model: ClipModel, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 3, model.input_size, model.input_size), dtype=np.float32)


def test_tiny_model_loads_in_under_a_second(tiny_model_dir: Path) -> None:
    started = time.perf_counter()
    ClipModel(tiny_model_dir, device="cpu").load()
    assert time.perf_counter() - started < 1.0


def test_model_describes_itself_before_loading(tiny_model_dir: Path) -> None:
    clip = ClipModel(tiny_model_dir, device="cpu")
    assert not clip.loaded
    assert (clip.embedding_dim, clip.input_size, clip.device, clip.dtype) == (64, 224, "cpu", "fp32")
    assert clip.runtime_version.startswith("onnxruntime-")


def test_image_embeddings_are_unit_length_with_the_model_dimension(model: ClipModel) -> None:
    embeddings = model.embed_images(random_batch(model, 3))
    assert embeddings.shape == (3, model.embedding_dim)
    assert embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


def test_text_embeddings_are_unit_length_with_the_model_dimension(model: ClipModel) -> None:
    embeddings = model.embed_texts(["a dog on the beach", "SUNSET", ""])
    assert embeddings.shape == (3, model.embedding_dim)
    assert embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


def test_an_image_embeds_the_same_alone_and_in_a_batch(model: ClipModel) -> None:
    batch = random_batch(model, 4, seed=1)
    together = model.embed_images(batch)
    alone = model.embed_images(batch[2:3])
    np.testing.assert_allclose(alone[0], together[2], atol=1e-5)


def test_a_text_embeds_the_same_alone_and_in_a_batch(model: ClipModel) -> None:
    together = model.embed_texts(["red car", "a long sentence about a mountain lake at dawn"])
    alone = model.embed_texts(["a long sentence about a mountain lake at dawn"])
    np.testing.assert_allclose(alone[0], together[1], atol=1e-5)


def test_image_batches_of_any_layout_and_float_type_are_accepted(model: ClipModel) -> None:
    batch = random_batch(model, 2, seed=2)
    as_float64_view = np.asfortranarray(batch.astype(np.float64))
    np.testing.assert_allclose(model.embed_images(as_float64_view), model.embed_images(batch), atol=1e-5)


def test_a_batch_of_the_wrong_size_is_refused(model: ClipModel) -> None:
    with pytest.raises(ValueError, match="224"):
        model.embed_images(np.zeros((1, 3, 100, 100), dtype=np.float32))


def test_empty_inputs_give_empty_embeddings(model: ClipModel) -> None:
    assert model.embed_images(random_batch(model, 0)).shape == (0, model.embedding_dim)
    assert model.embed_texts([]).shape == (0, model.embedding_dim)


def test_test_model_name_says_random_weights(model: ClipModel, tiny_model_dir: Path) -> None:
    assert model.is_test_model
    assert model.model_name == f"{TEST_MODEL_PREFIX}{tiny_model_dir.name}"


def test_loading_a_test_model_logs_a_loud_warning(
    tiny_model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="shoebox.ml.models.clip"):
        ClipModel(tiny_model_dir, device="cpu").load()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("random weights, search results are meaningless" in w for w in warnings)


def test_text_is_padded_and_truncated_to_the_context_keeping_end_of_text(model: ClipModel) -> None:
    ids = model.tokenize(["hello", "word " * 200])["text"]
    assert ids.shape == (2, 77)
    eot = int(ids[0].max())
    assert ids[0, -1] == 0  # OpenCLIP pads with id 0
    assert ids[1, -1] == eot  # truncation keeps the token the text tower pools at
