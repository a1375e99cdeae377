"""Every CLIP family of Immich's catalogue through ClipModel, on tiny random-weight folders (real ONNX Runtime)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from shoebox.cli import app
from shoebox.ml.models.clip import ClipModel
from shoebox.ml.models.download import ModelUnavailableError
from shoebox.ml.models.families import FAMILIES, detect_family, is_multilingual
from shoebox.ml.models.languages import flores_code
from shoebox.ml.models.onnx_signature import GraphInput, graph_inputs

TEXTS = ["a photo of a dog on the beach", "Sunset over the SEA", "", "mountain lake " * 50]
EXPECTED = {  # family → multilingual
    "openclip": False,
    "siglip": False,
    "mclip": True,
    "nllb": True,
}
TEXT = (GraphInput("text", "tensor(int32)", (1, 77)),)
IDS_AND_MASK = (
    GraphInput("input_ids", "tensor(int32)", (1, 77)),
    GraphInput("attention_mask", "tensor(int32)", (1, 77)),
)


@pytest.fixture(scope="module")
def models(family_model_dirs: dict[str, Path]) -> dict[str, ClipModel]:
    return {family: ClipModel(path, device="cpu") for family, path in family_model_dirs.items()}


def images(n: int) -> np.ndarray:
    return np.random.default_rng(3).standard_normal((n, 3, 224, 224), dtype=np.float32)


def copy_model(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


# ---------------------------------------------------------------- each family


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_embeds_images_and_texts_to_unit_vectors(
    models: dict[str, ClipModel], family: str
) -> None:
    model = models[family]
    for embeddings, n in ((model.embed_images(images(2)), 2), (model.embed_texts(TEXTS), len(TEXTS))):
        assert embeddings.shape == (n, model.embedding_dim) == (n, 64)
        assert embeddings.dtype == np.float32 and np.all(np.isfinite(embeddings))
        np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert np.unique(model.embed_texts(TEXTS).round(4), axis=0).shape[0] == len(TEXTS)


@pytest.mark.parametrize("family", FAMILIES)
def test_family_and_multilingual_are_read_from_the_folder(
    family_model_dirs: dict[str, Path], family: str
) -> None:
    model = ClipModel(family_model_dirs[family], device="cpu")
    assert not model.loaded  # described before any session exists
    assert (model.family, model.multilingual) == (family, EXPECTED[family])
    assert model.context_length == (64 if family == "siglip" else 77)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_text_embeds_the_same_alone_and_in_a_batch(models: dict[str, ClipModel], family: str) -> None:
    together = models[family].embed_texts(TEXTS)
    alone = models[family].embed_texts(TEXTS[1:2])
    np.testing.assert_allclose(alone[0], together[1], atol=1e-5)


def test_the_feed_has_the_input_names_and_dtypes_of_the_textual_graph(models: dict[str, ClipModel]) -> None:
    for family, model in models.items():
        feed = model.tokenize(TEXTS)
        inputs = graph_inputs(model.model_dir / "textual" / "model.onnx")
        assert sorted(feed) == sorted(i.name for i in inputs), family
        assert all(
            a.dtype == np.int32 and a.shape == (len(TEXTS), model.context_length) for a in feed.values()
        )


def test_family_is_told_by_the_files_not_the_folder_name(
    family_model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    # A misleading name: an M-CLIP folder called like an OpenAI model, a SigLIP one like an NLLB one.
    mclip = copy_model(family_model_dirs["mclip"], tmp_path / "ViT-B-32__openai")
    siglip = copy_model(family_model_dirs["siglip"], tmp_path / "nllb-clip-base-siglip__v1")
    assert ClipModel(mclip, device="cpu").family == "mclip"
    assert ClipModel(siglip, device="cpu").family == "siglip"


def test_graph_inputs_are_read_as_onnx_runtime_reports_them(
    family_model_dirs: dict[str, Path], tiny_model_dir: Path
) -> None:
    import onnxruntime as ort

    paths = [tiny_model_dir / "textual" / "model.onnx", tiny_model_dir / "visual" / "model_fp16.onnx"]
    paths += [
        folder / part / "model.onnx"
        for folder in family_model_dirs.values()
        for part in ("visual", "textual")
    ]
    for path in paths:  # the torch exporter's files and ours
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        expected = [(i.name, i.type, tuple(i.shape)) for i in session.get_inputs()]
        assert [(i.name, i.type, i.shape) for i in graph_inputs(path)] == expected, path


# ---------------------------------------------------------------- detection rules


def test_inputs_ids_and_mask_mean_mclip_whatever_the_config_says() -> None:
    # M-CLIP's config.json is its image tower's OpenAI config.
    assert detect_family(IDS_AND_MASK, {"context_length": 77, "vocab_size": 49408}, []) == "mclip"


def test_siglip_is_told_by_canonicalize_cleaning_or_its_tokenizer_name() -> None:
    assert detect_family(TEXT, {"tokenizer_kwargs": {"clean": "canonicalize"}}, []) == "siglip"
    assert detect_family(TEXT, {"hf_tokenizer_name": "timm/ViT-B-16-SigLIP2"}, []) == "siglip"


def test_nllb_is_told_by_language_codes_in_the_vocabulary_or_its_tokenizer_name() -> None:
    assert detect_family(TEXT, {}, ["eng_Latn", "deu_Latn"]) == "nllb"
    assert detect_family(TEXT, {"hf_tokenizer_name": "facebook/nllb-200-distilled-600M"}, []) == "nllb"


def test_openai_and_openclip_configs_are_openclip() -> None:
    assert detect_family(TEXT, {"context_length": 77, "vocab_size": 49408}, []) == "openclip"
    # OpenCLIP's own XLM-R models take `text` too: openclip, and multilingual by their vocabulary.
    assert detect_family(TEXT, {"hf_tokenizer_name": "xlm-roberta-base"}, []) == "openclip"
    assert is_multilingual("openclip", 250_002)


def test_multilingual_siglip_is_told_by_its_vocabulary() -> None:
    assert not is_multilingual("siglip", 32_000)  # English SigLIP (T5's SentencePiece)
    assert is_multilingual("siglip", 250_000)  # i18n SigLIP
    assert is_multilingual("siglip", 256_000)  # SigLIP 2 (Gemma's)
    assert not is_multilingual("openclip", 49_408)
    assert is_multilingual("nllb", 1_000) and is_multilingual("mclip", 1_000)


# ---------------------------------------------------------------- broken folders


def test_a_folder_without_a_tokenizer_names_the_missing_file(
    family_model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    folder = copy_model(family_model_dirs["siglip"], tmp_path / "no-tokenizer")
    (folder / "textual" / "tokenizer.json").unlink()
    with pytest.raises(ModelUnavailableError) as raised:
        ClipModel(folder, device="cpu")
    message = raised.value.message
    assert "textual/tokenizer.json" in message and "\n" not in message
    assert "visual/model.onnx" not in message  # only what is missing


def test_an_unknown_textual_signature_is_one_error_naming_the_inputs(
    family_model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    folder = copy_model(family_model_dirs["openclip"], tmp_path / "odd-inputs")
    graph = helper.make_graph(
        [helper.make_node("Cast", ["tokens"], ["embedding"], to=TensorProto.FLOAT)],
        "textual",
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, ["batch", 77])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 77])],
    )
    onnx.save(helper.make_model(graph), str(folder / "textual" / "model.onnx"))
    with pytest.raises(ModelUnavailableError) as raised:
        ClipModel(folder, device="cpu")
    message = raised.value.message
    assert "textual/model.onnx" in message and "'tokens'" in message and "input_ids" in message
    assert "\n" not in message


def test_a_textual_file_that_is_not_onnx_is_named(family_model_dirs: dict[str, Path], tmp_path: Path) -> None:
    folder = copy_model(family_model_dirs["mclip"], tmp_path / "not-onnx")
    (folder / "textual" / "model.onnx").write_bytes(b"<html>rate limited</html>")
    with pytest.raises(ModelUnavailableError, match="textual/model.onnx is not an ONNX model"):
        ClipModel(folder, device="cpu")


# ---------------------------------------------------------------- Immich's fixed batch axis


def test_a_textual_graph_with_a_batch_axis_fixed_at_one_takes_texts_one_by_one(
    family_model_dirs: dict[str, Path], models: dict[str, ClipModel], tmp_path: Path
) -> None:
    # Immich exports its text towers without a dynamic batch axis: [1, context_length].
    folder = copy_model(family_model_dirs["mclip"], tmp_path / "fixed-batch")
    path = folder / "textual" / "model.onnx"
    graph = onnx.load(str(path))
    for value in (*graph.graph.input, *graph.graph.output):
        value.type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(graph, str(path))
    fixed = ClipModel(folder, device="cpu")
    np.testing.assert_allclose(fixed.embed_texts(TEXTS), models["mclip"].embed_texts(TEXTS), atol=1e-5)


# ---------------------------------------------------------------- languages


@pytest.mark.parametrize(
    ("language", "code"),
    [
        ("de", "deu_Latn"),
        ("de-DE", "deu_Latn"),
        ("de_AT", "deu_Latn"),
        ("DE", "deu_Latn"),
        ("pt-BR", "por_Latn"),
        ("zh", "zho_Hans"),
        ("zh-TW", "zho_Hant"),
        ("zh-Hant", "zho_Hant"),
        ("nb-NO", "nob_Latn"),
        ("deu_Latn", "deu_Latn"),
        ("fuv_Latn", "fuv_Latn"),
        ("xx", None),
        ("klingon", None),
    ],
)
def test_languages_map_to_flores_codes(language: str, code: str | None) -> None:
    assert flores_code(language) == code


def test_nllb_embeds_a_text_by_its_language(models: dict[str, ClipModel]) -> None:
    nllb = models["nllb"]
    english, german = nllb.embed_texts(["ein Hund"]), nllb.embed_texts(["ein Hund"], language="de")
    assert (english @ german.T).item() < 0.9999  # the language code is what the tower pools
    np.testing.assert_allclose(nllb.embed_texts(["ein Hund"], language="deu_Latn"), german, atol=1e-6)
    np.testing.assert_allclose(nllb.embed_texts(["ein Hund"], language="en"), english, atol=1e-6)


def test_nllb_reads_an_unknown_language_as_english_and_says_so(
    models: dict[str, ClipModel], caplog: pytest.LogCaptureFixture
) -> None:
    nllb = models["nllb"]
    with caplog.at_level(logging.WARNING, logger="shoebox.ml.models.tokenizer"):
        unknown = nllb.tokenize(["a dog"], language="tlh-Klingon")
    assert np.array_equal(unknown["text"], nllb.tokenize(["a dog"])["text"])
    assert any("tlh-Klingon" in r.getMessage() and "English" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("family", ["openclip", "siglip", "mclip"])
def test_other_families_ignore_the_language(models: dict[str, ClipModel], family: str) -> None:
    model = models[family]
    for name, ids in model.tokenize(TEXTS, language="de").items():
        assert np.array_equal(ids, model.tokenize(TEXTS)[name]), name


# ---------------------------------------------------------------- the CLI


@pytest.mark.parametrize("family", FAMILIES)
def test_make_test_cli_writes_a_loadable_folder_of_each_family(tmp_path: Path, family: str) -> None:
    out = tmp_path / f"cli-{family}"
    result = CliRunner().invoke(app, ["model", "make-test", "--family", family, "--out", str(out)])
    assert result.exit_code == 0, result.output
    model = ClipModel(out, device="cpu")
    assert model.family == family and model.is_test_model
    assert json.loads((out / "SHOEBOX_TEST_MODEL").read_text())["family"] == family
    assert (out / "textual" / "special_tokens_map.json").is_file()
    assert model.embed_texts(["a loadable model"], language="fr").shape == (1, 64)


def test_make_test_cli_torch_builder_writes_openclip_only(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["model", "make-test", "--family", "siglip", "--builder", "torch", "--out", str(tmp_path / "m")]
    )
    assert result.exit_code != 0 and "openclip" in result.output
