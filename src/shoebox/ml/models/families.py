"""Which CLIP family a model folder holds, told from its own files.

Immich publishes every CLIP in one folder layout; what differs is the text side:

| family     | textual ONNX inputs             | tokenizer                           | told by                        |
|------------|---------------------------------|-------------------------------------|--------------------------------|
| `openclip` | `text`                          | CLIP BPE (or OpenCLIP's XLM-R)      | none of the below              |
| `siglip`   | `text`                          | SentencePiece, canonicalized text   | `text_cfg.tokenizer_kwargs.clean == "canonicalize"` or a SigLIP `hf_tokenizer_name` |
| `mclip`    | `input_ids` + `attention_mask`  | XLM-R / LaBSE                       | the graph's inputs             |
| `nllb`     | `text`                          | NLLB, FLORES-200 codes as tokens    | language codes in the vocabulary, or an NLLB `hf_tokenizer_name` |

M-CLIP's `config.json` is its image tower's OpenCLIP config, which says nothing about its text
tower: only the textual graph tells it apart, so the graph's inputs come first.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from shoebox.ml.models.onnx_signature import GraphInput

Family = Literal["openclip", "siglip", "mclip", "nllb"]
FAMILIES: tuple[Family, ...] = ("openclip", "siglip", "mclip", "nllb")

# The textual graph's inputs, by name, for each kind of text tower.
TOKEN_IDS = frozenset({"text"})
IDS_AND_MASK = frozenset({"input_ids", "attention_mask"})
DEFAULT_CONTEXT_LENGTH = 77  # OpenCLIP's, for configs without `text_cfg.context_length`
# More entries than an English vocabulary needs: CLIP's BPE has 49,408 and SigLIP's SentencePiece
# 32,000, while the multilingual ones have 250,000 (XLM-R, i18n SigLIP) or 256,000 (SigLIP 2's Gemma).
MULTILINGUAL_VOCAB_SIZE = 100_000


class UnknownTextTowerError(ValueError):
    """A textual graph whose inputs are not those of any family we know."""


@dataclass(frozen=True)
class TextTower:
    """What the text side of a model folder needs to be fed."""

    family: Family
    multilingual: bool
    context_length: int
    clean: str  # OpenCLIP's text cleaning: "whitespace", "lower" or "canonicalize"
    inputs: tuple[GraphInput, ...]

    @property
    def batch_size(self) -> int | None:
        """The one batch size the graph takes when its batch axis is fixed (Immich exports have 1)."""
        first = self.inputs[0].shape[:1]
        return first[0] if first and isinstance(first[0], int) and first[0] > 0 else None


def _hf_tokenizer_name(text_cfg: Mapping[str, Any]) -> str:
    return str(text_cfg.get("hf_tokenizer_name") or text_cfg.get("hf_model_name") or "").lower()


def text_cleaning(text_cfg: Mapping[str, Any]) -> str:
    kwargs = text_cfg.get("tokenizer_kwargs") or {}
    return str(kwargs.get("clean") or "whitespace")


def detect_family(
    inputs: Collection[GraphInput], text_cfg: Mapping[str, Any], language_codes: Collection[str]
) -> Family:
    """The family from the textual graph's inputs, the config's `text_cfg` and the tokenizer's
    FLORES-200 codes. Raises UnknownTextTowerError for inputs no family has."""
    names = frozenset(i.name for i in inputs)
    if names == IDS_AND_MASK:
        return "mclip"
    if names != TOKEN_IDS:
        raise UnknownTextTowerError(
            f"takes inputs {sorted(names)}, which no CLIP family has "
            f"(expected {sorted(TOKEN_IDS)} or {sorted(IDS_AND_MASK)})"
        )
    tokenizer_name = _hf_tokenizer_name(text_cfg)
    if language_codes or "nllb" in tokenizer_name:
        return "nllb"
    if text_cleaning(text_cfg) == "canonicalize" or "siglip" in tokenizer_name:
        return "siglip"
    return "openclip"


def is_multilingual(family: Family, vocab_size: int) -> bool:
    """M-CLIP and NLLB-CLIP exist to read many languages; an OpenCLIP or SigLIP model does when its
    vocabulary is a multilingual one (OpenCLIP's XLM-R models, i18n SigLIP, every SigLIP 2)."""
    return family in ("mclip", "nllb") or vocab_size >= MULTILINGUAL_VOCAB_SIZE


def context_length(inputs: Collection[GraphInput], text_cfg: Mapping[str, Any]) -> int:
    """The row length: the graph's when its sequence axis is fixed (it takes nothing else), else the
    config's `context_length`, else OpenCLIP's default."""
    for graph_input in inputs:
        if len(graph_input.shape) == 2 and isinstance(graph_input.shape[1], int) and graph_input.shape[1] > 0:
            return graph_input.shape[1]
    return int(text_cfg.get("context_length", DEFAULT_CONTEXT_LENGTH))
