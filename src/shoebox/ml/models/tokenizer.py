"""The CLIP text tokenizer, loaded the way Immich loads the tokenizer of its OpenCLIP exports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
# A folder holding this file was written by `shoebox model make-test`: random weights.
TEST_MODEL_MARKER = "SHOEBOX_TEST_MODEL"


def clean_text(text: str) -> str:
    """Collapse whitespace as OpenCLIP's `whitespace_clean` does (the tokenizer lower-cases)."""
    return " ".join(text.split())


class ClipTokenizer:
    """`tokenizer.json` padded and truncated to the context length, so every text is one row of ids.

    Truncation keeps the end-of-text token (the post-processor adds it after truncating), which is
    where the text tower pools, matching OpenCLIP's `tokenize`.
    """

    def __init__(self, textual_dir: Path, context_length: int = 77) -> None:
        from tokenizers import Tokenizer

        textual_dir = Path(textual_dir)
        tokenizer_cfg = json.loads((textual_dir / "tokenizer_config.json").read_text())
        pad_token = tokenizer_cfg.get("pad_token") or EOS_TOKEN
        if isinstance(pad_token, dict):  # HF may store AddedToken objects
            pad_token = pad_token["content"]
        self._tokenizer = Tokenizer.from_file(str(textual_dir / "tokenizer.json"))
        pad_id = self._tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise ValueError(f"pad token {pad_token!r} of {textual_dir} is not in its vocabulary")
        self._tokenizer.enable_padding(length=context_length, pad_token=pad_token, pad_id=pad_id)
        self._tokenizer.enable_truncation(max_length=context_length)
        self.context_length = context_length
        self.pad_id = pad_id

    def __call__(self, texts: list[str], dtype: type[np.integer] = np.int32) -> np.ndarray:
        encodings = self._tokenizer.encode_batch([clean_text(t) for t in texts])
        ids = np.array([e.ids for e in encodings], dtype=dtype)
        return ids.reshape(len(texts), self.context_length)
