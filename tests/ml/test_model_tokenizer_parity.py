"""Our textual feed against the `tokenizers` library's own encoding of each family's tokenizer.json.

The reference is the library doing everything itself (padding and truncation enabled on the
tokenizer, the pad token from tokenizer_config.json), fed texts cleaned by small reference
implementations written here; for NLLB, with the template Hugging Face's tokenizer sets for a
source language (`set_src_lang_special_tokens`: `<code> $A </s>`).
"""

from __future__ import annotations

import json
import re
import shutil
import string
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer, processors

from shoebox.ml.models.clip import ClipModel
from shoebox.ml.models.families import FAMILIES
from shoebox.ml.models.tokenizer import canonicalize_text

TEXTS = [
    "a photo of a dog",
    "A Photo of a DOG!",
    "sunset_over_the sea, (2019)…",
    "  tabs\tand\nnewlines   everywhere  ",
    "café crème, 12 € – naïve",
    "",
    "!!!",
    "mountain lake at dawn " * 40,  # longer than any context: truncated
]
END_TOKEN = {"openclip": "<|endoftext|>", "siglip": "</s>", "mclip": "</s>", "nllb": "</s>"}


def reference_canonicalize(text: str) -> str:
    """OpenCLIP's canonicalize_text, restated: `_` → space, no ASCII punctuation, lower case, one space."""
    text = text.replace("_", " ")
    text = "".join(c for c in text if c not in string.punctuation)
    return re.sub(r"\s+", " ", text.lower()).strip()


def reference_whitespace(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def reference_tokenizer(model_dir: Path, context_length: int) -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(model_dir / "textual" / "tokenizer.json"))
    pad_token = json.loads((model_dir / "textual" / "tokenizer_config.json").read_text())["pad_token"]
    tokenizer.enable_padding(
        length=context_length, pad_token=pad_token, pad_id=tokenizer.token_to_id(pad_token)
    )
    tokenizer.enable_truncation(max_length=context_length)
    return tokenizer


def with_language(tokenizer: Tokenizer, code: str) -> Tokenizer:
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{code} $A </s>",
        special_tokens=[(code, tokenizer.token_to_id(code)), ("</s>", tokenizer.token_to_id("</s>"))],
    )
    return tokenizer


@pytest.fixture(scope="module")
def models(family_model_dirs: dict[str, Path]) -> dict[str, ClipModel]:
    return {family: ClipModel(path, device="cpu") for family, path in family_model_dirs.items()}


def ids_of(feed: dict[str, np.ndarray]) -> np.ndarray:
    return feed["input_ids"] if "input_ids" in feed else feed["text"]


@pytest.mark.parametrize("family", FAMILIES)
def test_feed_equals_the_tokenizers_library_encoding(models: dict[str, ClipModel], family: str) -> None:
    model = models[family]
    clean = reference_canonicalize if family == "siglip" else reference_whitespace
    expected = reference_tokenizer(model.model_dir, model.context_length).encode_batch(
        [clean(t) for t in TEXTS]
    )
    feed = model.tokenize(TEXTS)
    assert np.array_equal(ids_of(feed), np.array([e.ids for e in expected]))
    if family == "mclip":
        assert np.array_equal(feed["attention_mask"], np.array([e.attention_mask for e in expected]))


@pytest.mark.parametrize("family", FAMILIES)
def test_truncation_keeps_the_end_token_and_padding_uses_the_configured_pad(
    models: dict[str, ClipModel], family: str
) -> None:
    model = models[family]
    tokenizer = Tokenizer.from_file(str(model.model_dir / "textual" / "tokenizer.json"))
    ids = ids_of(model.tokenize(["word " * 300, "dog"]))
    assert ids.shape == (2, model.context_length)
    assert ids[0, -1] == tokenizer.token_to_id(END_TOKEN[family])
    pad_token = json.loads((model.model_dir / "textual" / "tokenizer_config.json").read_text())["pad_token"]
    assert ids[1, -1] == tokenizer.token_to_id(pad_token)


def test_siglip_text_is_canonicalized_before_tokenizing(models: dict[str, ClipModel]) -> None:
    siglip = models["siglip"]
    assert np.array_equal(
        siglip.tokenize(["A Photo_of a DOG!!"])["text"], siglip.tokenize(["a photo of a dog"])["text"]
    )
    # The OpenAI tokenizer lower-cases but keeps punctuation: no canonicalizing there.
    openclip = models["openclip"]
    assert not np.array_equal(openclip.tokenize(["a dog!"])["text"], openclip.tokenize(["a dog"])["text"])


def test_canonicalize_matches_the_reference() -> None:
    for text in [*TEXTS, "snake_case_words", "Ünïcödé — “quotes” ¿qué?", "x_y-z.w"]:
        assert canonicalize_text(text) == reference_canonicalize(text), text
    assert canonicalize_text("Hello_World!  It's   a TEST.") == "hello world its a test"


def test_nllb_puts_the_language_code_first_like_the_library_with_that_source_language(
    models: dict[str, ClipModel],
) -> None:
    nllb = models["nllb"]
    for language, code in (("de", "deu_Latn"), ("fr-FR", "fra_Latn"), ("zh-TW", "zho_Hant")):
        reference = with_language(reference_tokenizer(nllb.model_dir, nllb.context_length), code)
        expected = np.array([e.ids for e in reference.encode_batch([reference_whitespace(t) for t in TEXTS])])
        assert np.array_equal(nllb.tokenize(TEXTS, language=language)["text"], expected), language


def test_nllb_language_as_iso_code_or_flores_code_gives_the_same_ids(models: dict[str, ClipModel]) -> None:
    nllb = models["nllb"]
    iso, flores = (
        nllb.tokenize(TEXTS, language="de")["text"],
        nllb.tokenize(TEXTS, language="deu_Latn")["text"],
    )
    assert np.array_equal(iso, flores)
    tokenizer = Tokenizer.from_file(str(nllb.model_dir / "textual" / "tokenizer.json"))
    assert set(iso[:, 0]) == {tokenizer.token_to_id("deu_Latn")}
    assert np.count_nonzero(iso == tokenizer.token_to_id("eng_Latn")) == 0  # one code, not two


def test_nllb_without_a_language_reads_english(models: dict[str, ClipModel]) -> None:
    nllb = models["nllb"]
    tokenizer = Tokenizer.from_file(str(nllb.model_dir / "textual" / "tokenizer.json"))
    default = nllb.tokenize(TEXTS)["text"]
    assert set(default[:, 0]) == {tokenizer.token_to_id("eng_Latn")}
    assert np.array_equal(default, nllb.tokenize(TEXTS, language="en-GB")["text"])
    # The folder's own template, untouched, is English.
    plain = reference_tokenizer(nllb.model_dir, nllb.context_length)
    assert np.array_equal(
        default, np.array([e.ids for e in plain.encode_batch([reference_whitespace(t) for t in TEXTS])])
    )


def test_nllb_tokenizer_without_a_language_template_gets_the_code_prefixed_like_immich(
    family_model_dirs: dict[str, Path], tmp_path: Path
) -> None:
    folder = shutil.copytree(family_model_dirs["nllb"], tmp_path / "nllb-no-template")
    tokenizer_path = folder / "textual" / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", tokenizer.token_to_id("</s>"))]
    )
    tokenizer.save(str(tokenizer_path))
    nllb = ClipModel(folder, device="cpu")
    assert nllb.family == "nllb"
    reference = reference_tokenizer(folder, nllb.context_length)
    expected = np.array(
        [e.ids for e in reference.encode_batch([f"deu_Latn{reference_whitespace(t)}" for t in TEXTS])]
    )
    assert np.array_equal(nllb.tokenize(TEXTS, language="de")["text"], expected)
