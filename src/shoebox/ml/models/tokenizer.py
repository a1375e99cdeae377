"""Texts → token ids and attention masks, from a model folder's `textual/tokenizer.json`.

One class serves every CLIP family: the tokenizer file says how to split (CLIP's byte-level BPE,
SigLIP's SentencePiece, XLM-R's Unigram, NLLB's BPE with language codes) and which special tokens
to add; `tokenizer_config.json` names the pad token; the model's config says how to clean the text
first and how long a row is.
"""

from __future__ import annotations

import json
import logging
import string
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shoebox.ml.models.languages import DEFAULT_FLORES_CODE, FLORES_CODE, flores_code

log = logging.getLogger(__name__)

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
# A folder holding this file was written by `shoebox model make-test`: random weights.
TEST_MODEL_MARKER = "SHOEBOX_TEST_MODEL"

_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)


def clean_text(text: str) -> str:
    """Collapse whitespace as OpenCLIP's `whitespace_clean` does (the tokenizer lower-cases)."""
    return " ".join(text.split())


def canonicalize_text(text: str) -> str:
    """OpenCLIP's `canonicalize_text`, which SigLIP was trained with: underscores to spaces,
    punctuation removed, lower-cased, whitespace collapsed."""
    return " ".join(text.replace("_", " ").translate(_NO_PUNCTUATION).lower().split())


# OpenCLIP's `text_cfg.tokenizer_kwargs.clean` values (`whitespace` when there is none).
CLEANERS: dict[str, Callable[[str], str]] = {
    "whitespace": clean_text,
    "lower": lambda text: clean_text(text).lower(),
    "canonicalize": canonicalize_text,
}


@dataclass(frozen=True)
class Encoded:
    """One row per text, padded and truncated to the context length."""

    ids: np.ndarray  # int64 [N, context_length]
    attention_mask: np.ndarray  # int64 [N, context_length]: 1 for tokens, 0 for padding


def _token_content(token: Any) -> str | None:
    # tokenizer_config.json holds a token as a string or, from newer `transformers`, an AddedToken dict.
    return token["content"] if isinstance(token, dict) else token


class TextTokenizer:
    """`tokenizer.json` padded and truncated to the context length, so every text is one row of ids.

    Truncation keeps the special tokens the post-processor adds after it (CLIP's end-of-text, where
    the text tower pools; SigLIP's and XLM-R's `</s>`), as OpenCLIP's and Hugging Face's tokenizers do.

    A tokenizer whose vocabulary holds FLORES-200 codes (`eng_Latn`…) is NLLB's: `language` puts
    one code in front of the text, in place of the one its template adds (`eng_Latn` in Hugging
    Face's export), the sequence NLLB-CLIP was trained on (OpenCLIP's `set_language`). A tokenizer
    without such a template gets the code prefixed to the text, as Immich does.
    """

    def __init__(self, textual_dir: Path, context_length: int = 77, clean: str = "whitespace") -> None:
        from tokenizers import Tokenizer

        textual_dir = Path(textual_dir)
        if clean not in CLEANERS:
            raise ValueError(f"unknown text cleaning {clean!r} (expected one of {', '.join(CLEANERS)})")
        tokenizer_cfg = json.loads((textual_dir / "tokenizer_config.json").read_text())
        pad_token = _token_content(tokenizer_cfg.get("pad_token")) or EOS_TOKEN
        self._tokenizer = Tokenizer.from_file(str(textual_dir / "tokenizer.json"))
        pad_id = self._tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise ValueError(f"pad token {pad_token!r} of {textual_dir} is not in its vocabulary")
        # No padding or truncation here: `__call__` takes the library's steps itself, since an NLLB
        # text's template depends on its language (and swapping the tokenizer's own is not thread-safe).
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self._clean = CLEANERS[clean]
        self.context_length = context_length
        self.pad_token, self.pad_id = pad_token, pad_id
        self.vocab_size = self._tokenizer.get_vocab_size()
        added = self._tokenizer.get_added_tokens_decoder().values()
        self.language_codes = frozenset(t.content for t in added if FLORES_CODE.match(t.content))
        self._template = self._language_template()
        self._processors: dict[str, Any] = {}
        self._warned: set[str] = set()

    # ------------------------------------------------------------ languages

    def _language_template(self) -> list[dict[str, Any]] | None:
        """The post-processor's single-sequence template when it places a language code, else None."""
        processor = self._tokenizer.post_processor
        if not self.language_codes or processor is None:
            return None
        state = json.loads(processor.__getstate__())
        if state.get("type") != "TemplateProcessing":
            return None
        pieces: list[dict[str, Any]] = state["single"]
        codes = [p["SpecialToken"]["id"] for p in pieces if "SpecialToken" in p]
        return pieces if any(FLORES_CODE.match(code) for code in codes) else None

    def language_code(self, language: str | None) -> str:
        """The FLORES-200 code a text in `language` is given: English when none, or unknown (logged)."""
        if language is None:
            return DEFAULT_FLORES_CODE
        code = flores_code(language)
        if code in self.language_codes:
            return code
        if language not in self._warned:  # once per language, not once per query
            self._warned.add(language)
            log.warning("language %r is not one this model knows; reading the text as English", language)
        return DEFAULT_FLORES_CODE

    def _processor_for(self, code: str) -> Any:
        """The template with `code` in place of its language code (built once per language)."""
        if code not in self._processors:
            from tokenizers import processors

            assert self._template is not None
            single, special_tokens = [], {}
            for piece in self._template:
                if "Sequence" in piece:
                    single.append("$A")
                    continue
                token = piece["SpecialToken"]["id"]
                token = code if FLORES_CODE.match(token) else token
                single.append(token)
                special_tokens[token] = self._tokenizer.token_to_id(token)
            self._processors[code] = processors.TemplateProcessing(
                single=" ".join(single), special_tokens=list(special_tokens.items())
            )
        return self._processors[code]

    # ------------------------------------------------------------ encoding

    def __call__(self, texts: list[str], language: str | None = None) -> Encoded:
        cleaned = [self._clean(t) for t in texts]
        processor = self._tokenizer.post_processor
        if self._template is not None:
            processor = self._processor_for(self.language_code(language))
        elif self.language_codes:
            cleaned = [f"{self.language_code(language)}{text}" for text in cleaned]
        # What `Tokenizer.encode` does with truncation and padding enabled: truncate leaving room for
        # the special tokens, add them, pad.
        room = self.context_length - (processor.num_special_tokens_to_add(False) if processor else 0)
        ids = np.full((len(texts), self.context_length), self.pad_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, encoding in enumerate(self._tokenizer.encode_batch(cleaned, add_special_tokens=False)):
            encoding.truncate(room)
            if processor is not None:
                encoding = processor.process(encoding)
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
        return Encoded(ids, mask)
