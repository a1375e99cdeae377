"""CLIP on ONNX Runtime: a model folder in Immich's ONNX layout → normalised embeddings.

Every family of Immich's catalogue (OpenAI/OpenCLIP, SigLIP and SigLIP 2, M-CLIP, NLLB-CLIP) has
the same folder; `families` tells them apart from its files, `tokenizer` feeds each one's text tower.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from shoebox.ml.models import families
from shoebox.ml.models.base import InferenceModel
from shoebox.ml.models.download import ModelUnavailableError, require_model_files
from shoebox.ml.models.identity import ModelIdentity, model_identity
from shoebox.ml.models.onnx_signature import graph_inputs
from shoebox.ml.models.tokenizer import TEST_MODEL_MARKER, TextTokenizer
from shoebox.ml.preprocess import PreprocessConfig
from shoebox.ml.sessions.ort import OrtSession, cuda_available
from shoebox.ml.sessions.ort import runtime_version as ort_runtime_version

log = logging.getLogger(__name__)

TEST_MODEL_PREFIX = "TEST-RANDOM-WEIGHTS:"

_ONNX_TO_NUMPY = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


def _l2_normalise(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, np.float32(1e-12))


class ClipModel(InferenceModel):
    """The visual and textual encoders of one model folder, sharing a device.

    Configuration (size, embedding dimension, family, tokenizer, test-model marker) is read at
    construction, so the service can describe the model before the sessions exist and a folder that
    is not a model fails with one ModelUnavailableError saying why; `load()` builds the sessions.
    """

    def __init__(self, model_dir: Path, device: str = "auto", intra_op_threads: int = 0) -> None:
        super().__init__()
        self.model_dir = Path(model_dir)
        self._requested_device = device
        self._intra_op_threads = intra_op_threads
        require_model_files(self.model_dir)
        self._config: dict[str, Any] = json.loads((self.model_dir / "config.json").read_text())
        self._preprocess_cfg = PreprocessConfig.from_file(self.model_dir / "visual" / "preprocess_cfg.json")
        self._text_tower, self._tokenizer = self._read_text_tower()
        marker = self.model_dir / TEST_MODEL_MARKER
        self._test_marker: dict[str, Any] | None = (
            json.loads(marker.read_text() or "{}") if marker.exists() else None
        )
        self._visual: OrtSession | None = None
        self._textual: OrtSession | None = None
        self._dtype = "fp32"
        self._identity: ModelIdentity | None = None

    def _read_text_tower(self) -> tuple[families.TextTower, TextTokenizer]:
        textual_dir = self.model_dir / "textual"
        text_cfg: dict[str, Any] = self._config.get("text_cfg") or {}
        try:
            inputs = tuple(graph_inputs(textual_dir / "model.onnx"))
        except (OSError, ValueError, IndexError) as exc:
            raise ModelUnavailableError(f"{textual_dir / 'model.onnx'} is not an ONNX model ({exc})") from exc
        context_length = families.context_length(inputs, text_cfg)
        clean = families.text_cleaning(text_cfg)
        try:
            tokenizer = TextTokenizer(textual_dir, context_length, clean)
        except Exception as exc:  # a broken JSON, an unknown pad token or cleaning: all mean no tokenizer
            raise ModelUnavailableError(
                f"the tokenizer in {textual_dir} cannot be loaded ({type(exc).__name__}: {exc})"
            ) from exc
        try:
            family = families.detect_family(inputs, text_cfg, tokenizer.language_codes)
        except families.UnknownTextTowerError as exc:
            raise ModelUnavailableError(f"{textual_dir / 'model.onnx'} {exc}") from exc
        multilingual = families.is_multilingual(family, tokenizer.vocab_size)
        return families.TextTower(family, multilingual, context_length, clean, inputs), tokenizer

    # ------------------------------------------------------------ description

    @property
    def is_test_model(self) -> bool:
        return self._test_marker is not None

    @property
    def model_name(self) -> str:
        name = self.model_dir.resolve().name
        return f"{TEST_MODEL_PREFIX}{name}" if self.is_test_model else name

    @property
    def identity(self) -> ModelIdentity:
        """What the model is, by content (hashed once, then cached beside it): see `identity`."""
        if self._identity is None:
            self._identity = model_identity(self.model_dir, self.model_name)
        return self._identity

    @property
    def model_id(self) -> str:
        """`<model_name>@<digest>`: what a collection records and the caches key on."""
        return self.identity.id

    @property
    def embedding_dim(self) -> int:
        return int(self._config["embed_dim"])

    @property
    def input_size(self) -> int:
        return self._preprocess_cfg.size

    @property
    def preprocess_cfg(self) -> PreprocessConfig:
        return self._preprocess_cfg

    @property
    def context_length(self) -> int:
        return self._text_tower.context_length

    @property
    def family(self) -> families.Family:
        """The CLIP family: "openclip", "siglip", "mclip" or "nllb" (see `families`)."""
        return self._text_tower.family

    @property
    def multilingual(self) -> bool:
        """Whether texts in other languages than English embed meaningfully (`families.is_multilingual`)."""
        return self._text_tower.multilingual

    @property
    def device(self) -> str:
        """Where the visual encoder runs: "cuda" or "cpu" (a guess until loaded)."""
        if self._visual is not None:
            return self._visual.device
        return "cuda" if self._requested_device in ("auto", "cuda") and cuda_available() else "cpu"

    @property
    def dtype(self) -> str:
        return self._dtype

    @property
    def runtime_version(self) -> str:
        return ort_runtime_version()

    # ------------------------------------------------------------ lifecycle

    def _load(self) -> None:
        if self.is_test_model:
            log.warning(
                "!!! Loading TEST MODEL %s: random weights, search results are meaningless. "
                "Set SHOEBOX_MODEL_DIR to a real model for real use. !!!",
                self.model_dir,
            )
        visual_dir = self.model_dir / "visual"
        fp16_path = visual_dir / "model_fp16.onnx"
        visual: OrtSession | None = None
        if fp16_path.exists() and self.device == "cuda":
            visual = OrtSession(fp16_path, self._requested_device, self._intra_op_threads)
            if visual.device == "cuda":
                self._dtype = "fp16"
            else:  # fp16 is only worth it (and only well supported) on the GPU
                visual = None
        if visual is None:
            visual = OrtSession(visual_dir / "model.onnx", self._requested_device, self._intra_op_threads)
            self._dtype = "fp32"
        textual = OrtSession(
            self.model_dir / "textual" / "model.onnx", self._requested_device, self._intra_op_threads
        )
        self._visual, self._textual = visual, textual
        log.info(
            "loaded %s (%s) on %s (%s, %s, embedding_dim=%d)",
            self.model_name,
            self.family,
            visual.device,
            self._dtype,
            self.runtime_version,
            self.embedding_dim,
        )

    # ------------------------------------------------------------ inference

    def embed_images(self, batch: np.ndarray) -> np.ndarray:
        """Preprocessed images [N, 3, S, S] → L2-normalised embeddings [N, D] (float32)."""
        self.ensure_loaded()
        assert self._visual is not None
        if batch.ndim != 4 or batch.shape[1:] != (3, self.input_size, self.input_size):
            raise ValueError(
                f"expected a [N, 3, {self.input_size}, {self.input_size}] batch, got {batch.shape}"
            )
        if len(batch) == 0:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        name = self._visual.input_names[0]
        dtype = _ONNX_TO_NUMPY.get(self._visual.input_types[name], np.float32)
        feed = np.ascontiguousarray(batch, dtype=dtype)
        return _l2_normalise(self._visual.run({name: feed})[0])

    def tokenize(self, texts: list[str], language: str | None = None) -> dict[str, np.ndarray]:
        """The textual encoder's feed: `text` ids, or `input_ids` and `attention_mask` (M-CLIP),
        [N, context_length] each, in the dtype the graph declares (Immich's exports: int32).

        `language` (ISO 639-1 such as `de`, a locale such as `de-DE`, or a FLORES-200 code) matters to
        NLLB models only; see README "Model families".
        """
        encoded = self._tokenizer(texts, language)
        arrays = {"text": encoded.ids, "input_ids": encoded.ids, "attention_mask": encoded.attention_mask}
        return {
            i.name: arrays[i.name].astype(_ONNX_TO_NUMPY.get(i.type, np.int32), copy=False)
            for i in self._text_tower.inputs
        }

    def embed_texts(self, texts: list[str], language: str | None = None) -> np.ndarray:
        """Texts → L2-normalised embeddings [N, D] (float32)."""
        self.ensure_loaded()
        assert self._textual is not None
        if not texts:
            return np.zeros((0, self.embedding_dim), dtype=np.float32)
        feed = self.tokenize(texts, language)
        # Immich exports its text towers with a batch axis fixed at 1: such a graph takes one row at a time.
        step = self._text_tower.batch_size or len(texts)
        rows = [
            self._textual.run({name: array[start : start + step] for name, array in feed.items()})[0]
            for start in range(0, len(texts), step)
        ]
        return _l2_normalise(np.concatenate(rows))


def listed_twice(model_dirs: list[Path]) -> str | None:
    """Two folders that hold one model (a link, a copy in a folder of the same name), if any.

    Reads configs and identities only (no session is built), so a service can say it before it loads.
    """
    seen: dict[str, Path] = {}
    for model_dir in model_dirs:
        model_id = ClipModel(model_dir).model_id
        if model_id in seen:
            return f"{seen[model_id]} and {model_dir} are both {model_id}"
        seen[model_id] = model_dir
    return None
