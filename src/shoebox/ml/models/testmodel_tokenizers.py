"""The tokenizer files of each family's test model: the right kind of tokenizer, learnt small.

Each is trained offline with the `tokenizers` library from the built-in word list and saved with the
special tokens, template and `tokenizer_config.json` of the Hugging Face tokenizer Immich's export
of that family ships:

- openclip: CLIP's byte-level BPE, `<|startoftext|> $A <|endoftext|>` (`testmodel_spec`);
- siglip: a SentencePiece Unigram with T5's `<pad>`/`</s>`/`<unk>`, `$A </s>`, padded with `</s>`
  (Hugging Face's `SiglipTokenizer`);
- mclip: XLM-R's SentencePiece Unigram, `<s>`/`<pad>`/`</s>`/`<unk>` … `<mask>`, `<s> $A </s>`;
- nllb: NLLB's SentencePiece BPE with the FLORES-200 language codes as special tokens and the
  template `eng_Latn $A </s>` that `NllbTokenizerFast` saves for its default source language.
"""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

from shoebox.ml.models.languages import DEFAULT_FLORES_CODE, ISO_TO_FLORES
from shoebox.ml.models.testmodel_spec import tokenizer_corpus, write_tokenizer

# NLLB's vocabulary has all 202 FLORES-200 codes; the test one has those of our language table, plus
# a code the table does not map to (`fuv_Latn`), to be passed as a FLORES code.
NLLB_TEST_LANGUAGES = tuple(sorted({*ISO_TO_FLORES.values(), DEFAULT_FLORES_CODE, "fuv_Latn"}))
# The word list is lower-case ASCII; these characters keep capitals, digits and accents out of `<unk>`.
_ALPHABET = sorted(set(string.ascii_letters + string.digits + string.punctuation + "àâçéèêëîïôùûüäößñ€"))


def _sentencepiece_like(model: Any) -> Any:
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers

    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return tokenizer


def _unigram(vocab_size: int, special_tokens: list[str], unk_token: str) -> Any:
    from tokenizers import models, trainers

    tokenizer = _sentencepiece_like(models.Unigram())
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        unk_token=unk_token,
        initial_alphabet=_ALPHABET,
        show_progress=False,
    )
    tokenizer.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    return tokenizer


def _template(tokenizer: Any, single: str) -> Any:
    from tokenizers import processors

    specials = [token for token in single.split() if token != "$A"]
    return processors.TemplateProcessing(
        single=single, special_tokens=[(token, tokenizer.token_to_id(token)) for token in specials]
    )


def build_siglip_tokenizer(vocab_size: int) -> Any:
    tokenizer = _unigram(vocab_size, ["<pad>", "</s>", "<unk>"], "<unk>")
    tokenizer.post_processor = _template(tokenizer, "$A </s>")
    return tokenizer


def build_xlmr_tokenizer(vocab_size: int) -> Any:
    tokenizer = _unigram(vocab_size, ["<s>", "<pad>", "</s>", "<unk>"], "<unk>")
    tokenizer.add_special_tokens(["<mask>"])
    tokenizer.post_processor = _template(tokenizer, "<s> $A </s>")
    return tokenizer


def build_nllb_tokenizer(vocab_size: int) -> Any:
    from tokenizers import models, trainers

    tokenizer = _sentencepiece_like(models.BPE(unk_token="<unk>"))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
        initial_alphabet=_ALPHABET,
        show_progress=False,
    )
    tokenizer.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    tokenizer.add_special_tokens([*NLLB_TEST_LANGUAGES, "<mask>"])
    tokenizer.post_processor = _template(tokenizer, f"{DEFAULT_FLORES_CODE} $A </s>")
    return tokenizer


# What each family's `tokenizer_config.json` and `special_tokens_map.json` say, beyond the length.
_SPECIAL_TOKENS: dict[str, dict[str, Any]] = {
    "siglip": {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "</s>"},
    "mclip": {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "sep_token": "</s>",
        "cls_token": "<s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "mask_token": "<mask>",
    },
    "nllb": {
        "bos_token": "<s>",
        "eos_token": "</s>",
        "sep_token": "</s>",
        "cls_token": "<s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "mask_token": "<mask>",
        "additional_special_tokens": list(NLLB_TEST_LANGUAGES),
    },
}
_TOKENIZER_CONFIG: dict[str, dict[str, Any]] = {
    "siglip": {"tokenizer_class": "SiglipTokenizer", "model_max_length": 64},
    "mclip": {"tokenizer_class": "XLMRobertaTokenizer", "model_max_length": 512},
    "nllb": {
        "tokenizer_class": "NllbTokenizer",
        "model_max_length": 1024,
        "src_lang": DEFAULT_FLORES_CODE,
        "legacy_behaviour": False,
    },
}
_BUILDERS = {"siglip": build_siglip_tokenizer, "mclip": build_xlmr_tokenizer, "nllb": build_nllb_tokenizer}


def write_family_tokenizer(textual_dir: Path, vocab_size: int, family: str) -> tuple[int, int]:
    """Write `family`'s tokenizer files into `textual_dir`; returns (vocabulary size, pad id)."""
    if family == "openclip":
        return write_tokenizer(textual_dir, vocab_size), 0  # OpenCLIP pads with id 0
    tokenizer = _BUILDERS[family](vocab_size)
    tokenizer.save(str(textual_dir / "tokenizer.json"))
    special = _SPECIAL_TOKENS[family]
    config = {**special, **_TOKENIZER_CONFIG[family]}
    (textual_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (textual_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    return tokenizer.get_vocab_size(), tokenizer.token_to_id(special["pad_token"])
