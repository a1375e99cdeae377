"""ONNX Runtime sessions: the one place that knows about execution providers."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime as ort

from shoebox.protocol import ErrorCode, ShoeboxError

log = logging.getLogger(__name__)

Device = Literal["auto", "cpu", "cuda"]
CUDA_PROVIDER = "CUDAExecutionProvider"
CPU_PROVIDER = "CPUExecutionProvider"


def cuda_available() -> bool:
    return CUDA_PROVIDER in ort.get_available_providers()


def runtime_version() -> str:
    return f"onnxruntime-{ort.__version__}"


class OrtSession:
    """An InferenceSession on the CUDA provider when asked for (or `auto`) and present, else the CPU.

    `device` reports where the session really runs: ONNX Runtime silently falls back to the CPU when
    the CUDA provider cannot start (missing libraries), and callers size batches from it.
    """

    def __init__(self, path: Path, device: Device | str = "auto", intra_op_threads: int = 0) -> None:
        self.path = Path(path)
        want_cuda = device in ("auto", "cuda") and cuda_available()
        if device == "cuda" and not want_cuda:
            raise ShoeboxError(
                ErrorCode.ML_UNAVAILABLE,
                "SHOEBOX_DEVICE=cuda but ONNX Runtime has no CUDA provider (install shoebox[gpu]).",
            )
        providers: list[str | tuple[str, dict[str, object]]] = [CPU_PROVIDER]
        if want_cuda:
            # Grow the arena only as needed so the batch probe measures what a batch really takes.
            providers.insert(0, (CUDA_PROVIDER, {"arena_extend_strategy": "kSameAsRequested"}))

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = max(0, intra_op_threads)
        # One inference thread drives the session; spinning idle threads would only steal decode CPU.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=providers)
        if device == "cuda" and self.device != "cuda":
            raise ShoeboxError(
                ErrorCode.ML_UNAVAILABLE,
                f"the CUDA provider failed to start for {self.path.name}; see the log.",
            )

    @property
    def device(self) -> str:
        return "cuda" if self.session.get_providers()[0] == CUDA_PROVIDER else "cpu"

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.session.get_inputs()]

    @property
    def input_types(self) -> dict[str, str]:
        """ONNX type names of the inputs, e.g. {"text": "tensor(int32)"}."""
        return {i.name: i.type for i in self.session.get_inputs()}

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, feeds)
