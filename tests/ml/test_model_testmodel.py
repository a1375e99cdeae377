"""`shoebox model make-test` and the folders it writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from typer.testing import CliRunner

from shoebox.cli import app
from shoebox.ml.models.clip import ClipModel


def test_make_test_cli_writes_a_loadable_tiny_model(tmp_path: Path) -> None:
    out = tmp_path / "cli-tiny"
    result = CliRunner().invoke(
        app, ["model", "make-test", "--size", "tiny", "--out", str(out), "--seed", "3"]
    )
    assert result.exit_code == 0, result.output
    model = ClipModel(out, device="cpu")
    embedding = model.embed_texts(["a loadable model"])
    assert embedding.shape == (1, 64)
    assert json.loads((out / "SHOEBOX_TEST_MODEL").read_text())["seed"] == 3


def test_test_model_has_the_immich_openclip_layout(tiny_model_dir: Path) -> None:
    for name in (
        "config.json",
        "visual/model.onnx",
        "visual/preprocess_cfg.json",
        "textual/model.onnx",
        "textual/tokenizer.json",
        "textual/tokenizer_config.json",
        "textual/special_tokens_map.json",
        "SHOEBOX_TEST_MODEL",
    ):
        assert (tiny_model_dir / name).is_file(), name
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert {"embed_dim", "vision_cfg", "text_cfg"} <= config.keys()
    preprocess_cfg = json.loads((tiny_model_dir / "visual" / "preprocess_cfg.json").read_text())
    assert preprocess_cfg["interpolation"] == "bicubic" and preprocess_cfg["resize_mode"] == "shortest"


def test_onnx_inputs_match_immich_exports(tiny_model_dir: Path) -> None:
    visual = ort.InferenceSession(
        str(tiny_model_dir / "visual" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    textual = ort.InferenceSession(
        str(tiny_model_dir / "textual" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    (image,) = visual.get_inputs()
    (text,) = textual.get_inputs()
    assert (image.name, image.type, image.shape[1:]) == ("image", "tensor(float)", [3, 224, 224])
    assert (text.name, text.type, text.shape[1:]) == ("text", "tensor(int32)", [77])
    assert isinstance(image.shape[0], str) and isinstance(text.shape[0], str)  # dynamic batch axis
    out = visual.run(None, {"image": np.zeros((5, 3, 224, 224), dtype=np.float32)})[0]
    assert out.shape == (5, 64)


def test_end_of_text_has_the_highest_token_id(tiny_model_dir: Path) -> None:
    vocab = json.loads((tiny_model_dir / "textual" / "tokenizer.json").read_text())["added_tokens"]
    ids = {token["content"]: token["id"] for token in vocab}
    assert ids["<|endoftext|>"] > ids["<|startoftext|>"]
    model = ClipModel(tiny_model_dir, device="cpu")
    assert model.tokenize(["zebra crossing"])["text"].max() == ids["<|endoftext|>"]


def test_fp16_visual_model_agrees_with_the_fp32_one(tiny_model_dir: Path) -> None:
    # Only CUDA loads the fp16 file; ONNX Runtime's CPU kernels still run it, so check it here.
    batch = np.random.default_rng(0).standard_normal((3, 3, 224, 224), dtype=np.float32)
    outputs = []
    for name in ("model.onnx", "model_fp16.onnx"):
        session = ort.InferenceSession(
            str(tiny_model_dir / "visual" / name), providers=["CPUExecutionProvider"]
        )
        out = session.run(None, {"image": batch})[0]
        outputs.append(out / np.linalg.norm(out, axis=1, keepdims=True))
    assert outputs[1].dtype == np.float32
    assert np.sum(outputs[0] * outputs[1], axis=1).min() > 0.999
