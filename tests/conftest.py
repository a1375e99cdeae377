"""Fixtures every test area shares."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight tiny CLIP in the real model-folder layout, built once per test session."""
    from shoebox.ml.models.testmodel import make_test_model

    return make_test_model("tiny", tmp_path_factory.mktemp("models") / "tiny-test-clip", seed=0)
