"""The torch-free test-model builder (`onnx_testmodel`) against the torch one (`testmodel`).

Built from the torch model's own weights, the ONNX-built folder must load and embed like the
torch-exported one; built from a seed, it must be a working random-weight test model; and building
it must not need torch, since the user install has none.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from shoebox.cli import app
from shoebox.ml.models.clip import TEST_MODEL_PREFIX, ClipModel
from shoebox.ml.models.onnx_testmodel import build_onnx_test_model, random_weights, weight_shapes
from shoebox.ml.models.testmodel_spec import ClipConfig, config_for

TEXTS = [
    "a photo of a dog on the beach",
    "zebra crossing in the rain",
    "",
    "sunset",
    # Longer than the context: truncated, the end-of-text token lands on the last position.
    " ".join(["mountain lake"] * 60),
]


def images(n: int = 4) -> np.ndarray:
    rng = np.random.default_rng(7)
    batch = rng.standard_normal((n, 3, 224, 224), dtype=np.float32)
    batch[-1] = 0.5  # a flat image too
    return batch


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


def ort_session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def torch_state(tiny_model_dir: Path) -> dict[str, np.ndarray]:
    pytest.importorskip("torch")
    from shoebox.ml.models.testmodel import load_torch_reference

    reference = load_torch_reference(tiny_model_dir)
    return {name: tensor.detach().cpu().numpy() for name, tensor in reference.state_dict().items()}


@pytest.fixture(scope="module")
def onnx_twin_dir(torch_state: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ONNX-built twin of the session's torch-built tiny model (same weights)."""
    out = tmp_path_factory.mktemp("onnx-twin") / "tiny-onnx-twin"
    return build_onnx_test_model("tiny", out, seed=0, weights=torch_state)


@pytest.fixture(scope="module")
def onnx_random_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_onnx_test_model("tiny", tmp_path_factory.mktemp("onnx-random") / "tiny-onnx", seed=0)


def tiny_config(model_dir: Path) -> ClipConfig:
    return ClipConfig.from_json(json.loads((model_dir / "config.json").read_text()))


# ---------------------------------------------------------------- same model, same folder


def test_weight_names_and_shapes_are_the_torch_state_dict(
    tiny_model_dir: Path, torch_state: dict[str, np.ndarray]
) -> None:
    shapes = weight_shapes(tiny_config(tiny_model_dir))
    assert shapes == {name: array.shape for name, array in torch_state.items()}
    drawn = random_weights(tiny_config(tiny_model_dir), seed=0)
    assert {name: array.shape for name, array in drawn.items()} == shapes
    assert all(array.dtype == np.float32 for array in drawn.values())


def test_full_size_model_has_vit_b_32_parameter_count() -> None:
    # OpenCLIP's ViT-B-32 has 151,277,313 parameters; the one we lack is logit_scale (unused here).
    shapes = weight_shapes(config_for("vit-b-32", vocab_size=8194))
    assert sum(int(np.prod(shape)) for shape in shapes.values()) == 151_277_312


def test_both_builders_write_the_same_folder(tiny_model_dir: Path, onnx_twin_dir: Path) -> None:
    def files(folder: Path) -> set[str]:
        # Dot files are caches the service writes beside a model it loaded (its identity digest).
        return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")}

    assert files(onnx_twin_dir) == files(tiny_model_dir) - {"torch_weights.pt"}
    for name in (
        "config.json",
        "visual/preprocess_cfg.json",
        "textual/tokenizer.json",
        "textual/tokenizer_config.json",
        "textual/special_tokens_map.json",
    ):
        assert (onnx_twin_dir / name).read_bytes() == (tiny_model_dir / name).read_bytes(), name
    torch_marker = json.loads((tiny_model_dir / "SHOEBOX_TEST_MODEL").read_text())
    onnx_marker = json.loads((onnx_twin_dir / "SHOEBOX_TEST_MODEL").read_text())
    assert (torch_marker.pop("builder"), onnx_marker.pop("builder")) == ("torch", "onnx")
    assert onnx_marker == torch_marker
    for name in ("visual/model.onnx", "visual/model_fp16.onnx", "textual/model.onnx"):
        theirs, ours = ort_session(tiny_model_dir / name), ort_session(onnx_twin_dir / name)
        for a, b in ((theirs.get_inputs(), ours.get_inputs()), (theirs.get_outputs(), ours.get_outputs())):
            assert [(x.name, x.type, x.shape[1:]) for x in a] == [(x.name, x.type, x.shape[1:]) for x in b]
            assert all(isinstance(x.shape[0], str) for x in b), "dynamic batch axis"


# ---------------------------------------------------------------- parity


def test_onnx_built_twin_embeds_like_the_torch_export(tiny_model_dir: Path, onnx_twin_dir: Path) -> None:
    theirs, ours = ClipModel(tiny_model_dir, device="cpu"), ClipModel(onnx_twin_dir, device="cpu")
    batch = images()
    image_a, image_b = theirs.embed_images(batch), ours.embed_images(batch)
    text_a, text_b = theirs.embed_texts(TEXTS), ours.embed_texts(TEXTS)
    assert np.array_equal(theirs.tokenize(TEXTS)["text"], ours.tokenize(TEXTS)["text"])
    for a, b in ((image_a, image_b), (text_a, text_b)):
        assert cosines(a, b).min() > 0.9999
        assert np.abs(a - b).max() < 1e-4
    # Not trivially equal: the texts and images really get different embeddings.
    assert cosines(text_b[:1], text_b[1:2]).max() < 0.999


def test_fp16_visual_models_agree(tiny_model_dir: Path, onnx_twin_dir: Path) -> None:
    # ClipModel loads the fp16 file on CUDA only; ONNX Runtime's CPU kernels run it too.
    batch = images()
    theirs = ort_session(tiny_model_dir / "visual" / "model_fp16.onnx").run(None, {"image": batch})[0]
    ours = ort_session(onnx_twin_dir / "visual" / "model_fp16.onnx").run(None, {"image": batch})[0]
    fp32 = ort_session(onnx_twin_dir / "visual" / "model.onnx").run(None, {"image": batch})[0]
    assert ours.dtype == np.float32
    assert cosines(theirs, ours).min() > 0.9999
    assert cosines(fp32, ours).min() > 0.999


def test_exact_gelu_variant_matches_torch_forward(tiny_model_dir: Path) -> None:
    # The test models use QuickGELU; the nn.GELU branch (quick_gelu=False) is checked against the
    # torch modules themselves, graphs run from memory.
    torch = pytest.importorskip("torch")
    from shoebox.ml.models.onnx_testmodel import textual_graph, visual_graph
    from shoebox.ml.models.testmodel import build_torch_model

    cfg = dataclasses.replace(tiny_config(tiny_model_dir), quick_gelu=False)
    reference = build_torch_model(cfg, seed=4)
    weights = {name: t.detach().numpy() for name, t in reference.state_dict().items()}
    batch = images(2)
    ids = ClipModel(tiny_model_dir, device="cpu").tokenize(TEXTS)["text"]
    with torch.no_grad():
        want_image = reference.encode_image(torch.from_numpy(batch)).numpy()
        want_text = reference.encode_text(torch.from_numpy(ids)).numpy()
    for graph, feed, want in (
        (visual_graph(cfg, weights), {"image": batch}, want_image),
        (textual_graph(cfg, weights), {"text": ids}, want_text),
    ):
        session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
        got = session.run(None, feed)[0]
        assert cosines(got, want).min() > 0.9999 and np.abs(got - want).max() < 1e-4


# ---------------------------------------------------------------- the random model itself


def test_random_onnx_model_loads_as_a_test_model(onnx_random_dir: Path) -> None:
    model = ClipModel(onnx_random_dir, device="cpu")
    assert model.is_test_model and model.model_name.startswith(TEST_MODEL_PREFIX)
    dim = int(json.loads((onnx_random_dir / "config.json").read_text())["embed_dim"])
    image_embeddings, text_embeddings = model.embed_images(images()), model.embed_texts(TEXTS)
    assert model.embedding_dim == dim
    for embeddings, n in ((image_embeddings, 4), (text_embeddings, len(TEXTS))):
        assert embeddings.shape == (n, dim) and embeddings.dtype == np.float32
        assert np.all(np.isfinite(embeddings))
        np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert np.unique(text_embeddings.round(4), axis=0).shape[0] == len(TEXTS)


def test_seed_decides_the_weights(tmp_path: Path) -> None:
    cfg = config_for("tiny", vocab_size=1026)
    a, b, c = random_weights(cfg, 1), random_weights(cfg, 1), random_weights(cfg, 2)
    assert all(np.array_equal(a[name], b[name]) for name in a)
    assert not np.array_equal(a["visual.proj"], c["visual.proj"])


def test_wrong_weights_are_refused(tmp_path: Path) -> None:
    weights = random_weights(config_for("tiny", vocab_size=1026), 0)
    del weights["visual.proj"]
    with pytest.raises(ValueError, match="visual.proj"):
        build_onnx_test_model("tiny", tmp_path / "m", weights=weights)


def test_an_onnx_built_folder_has_no_torch_twin(onnx_random_dir: Path) -> None:
    pytest.importorskip("torch")
    from shoebox.ml.models.testmodel import load_torch_reference

    with pytest.raises(ValueError, match="not built by torch"):
        load_torch_reference(onnx_random_dir)


def test_make_test_builds_with_onnx_by_default(tmp_path: Path) -> None:
    out = tmp_path / "cli-onnx"
    result = CliRunner().invoke(app, ["model", "make-test", "--out", str(out), "--seed", "5"])
    assert result.exit_code == 0, result.output
    marker = json.loads((out / "SHOEBOX_TEST_MODEL").read_text())
    assert (marker["builder"], marker["seed"]) == ("onnx", 5)
    assert ClipModel(out, device="cpu").embed_texts(["hello"]).shape == (1, 64)


# ---------------------------------------------------------------- no torch


NO_TORCH_BUILD = """
import json, sys
sys.modules["torch"] = None  # any `import torch` now raises ImportError
from pathlib import Path
from shoebox.cli import ensure_test_model, test_model_dir
from shoebox.ml.models.onnx_testmodel import build_onnx_test_model
from shoebox.ml.models.clip import ClipModel
out = build_onnx_test_model("tiny", Path(sys.argv[1]), seed=3)
embedding = ClipModel(out, device="cpu").embed_texts(["no torch here"])
assert embedding.shape == (1, 64), embedding.shape
# The demo's fallback, into the cache under XDG_CACHE_HOME.
fallback = ensure_test_model()
assert fallback == test_model_dir() and fallback.is_relative_to(sys.argv[2]), fallback
assert json.loads((fallback / "SHOEBOX_TEST_MODEL").read_text())["builder"] == "onnx"
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "onnxscript"))
print("OK", loaded)
"""


def test_building_needs_no_torch(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    result = subprocess.run(
        [sys.executable, "-c", NO_TORCH_BUILD, str(tmp_path / "no-torch"), str(cache)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "XDG_CACHE_HOME": str(cache)},
    )
    assert result.returncode == 0, result.stderr
    # `torch` is in sys.modules only as the blocking None.
    assert result.stdout.strip() == "OK ['torch']", result.stdout
