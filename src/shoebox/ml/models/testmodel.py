"""Random-weight CLIP models in the on-disk layout of Immich's OpenCLIP ONNX exports.

They exist so tests and benchmarks run the real code paths (ONNX Runtime, tokenizer, preprocessing)
without model weights that cannot be downloaded here. Their embeddings mean nothing; every folder
carries a `SHOEBOX_TEST_MODEL` marker so nothing can mistake one for a real model.

Needs torch (the `dev` extra). The CLIP modules are written out here, following OpenCLIP's `CLIP`
(ViT visual tower, causal text transformer pooled at the end-of-text token) with its parameter names,
so a state dict of either loads into the other. `onnx_testmodel` writes the same model without torch
(what the product uses); sizes, configs, tokenizer and folder files live in `testmodel_spec`.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from shoebox.ml.models.testmodel_spec import (  # noqa: F401  (re-exported: tests and bench import them here)
    CONTEXT_LENGTH,
    ONNX_OPSET,
    OPENAI_MEAN,
    OPENAI_STD,
    RANDOM_WEIGHTS_WARNING,
    TOKENIZER_VOCAB_SIZE,
    TORCH_WEIGHTS_FILE,
    ClipConfig,
    TestModelSize,
    TextConfig,
    VisionConfig,
    build_test_tokenizer,
    check_size,
    config_for,
    start_model_folder,
    write_model_config,
    write_tokenizer,
)
from shoebox.ml.models.tokenizer import TEST_MODEL_MARKER

# ---------------------------------------------------------------- torch modules (OpenCLIP naming)


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class MultiheadSelfAttention(nn.Module):
    """Self-attention with nn.MultiheadAttention's parameter names, written out so the ONNX graph is
    plain MatMul/Softmax that every runtime and exporter handles the same way."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, length, width = x.shape
        head_dim = width // self.heads
        qkv = nn.functional.linear(x, self.in_proj_weight, self.in_proj_bias)
        qkv = qkv.reshape(batch, length, 3, self.heads, head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = (q * head_dim**-0.5) @ k.transpose(-2, -1)
        if attn_mask is not None:
            scores = scores + attn_mask
        out = scores.softmax(dim=-1) @ v
        out = out.transpose(1, 2).reshape(batch, length, width)
        return self.out_proj(out)


class ResidualAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int, quick_gelu: bool) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = MultiheadSelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                c_fc=nn.Linear(width, width * 4),
                gelu=QuickGELU() if quick_gelu else nn.GELU(),
                c_proj=nn.Linear(width * 4, width),
            )
        )

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), attn_mask)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, quick_gelu: bool) -> None:
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.ModuleList(
            ResidualAttentionBlock(width, heads, quick_gelu) for _ in range(layers)
        )

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.resblocks:
            x = block(x, attn_mask)
        return x

    def init_weights(self) -> None:
        # OpenCLIP's CLIP.init_parameters: residual branches scaled down with depth.
        proj_std = (self.width**-0.5) * ((2 * self.layers) ** -0.5)
        attn_std = self.width**-0.5
        fc_std = (2 * self.width) ** -0.5
        for block in self.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)


class VisionTransformer(nn.Module):
    def __init__(self, cfg: VisionConfig, output_dim: int, quick_gelu: bool) -> None:
        super().__init__()
        width = cfg.width
        grid = cfg.image_size // cfg.patch_size
        scale = width**-0.5
        self.conv1 = nn.Conv2d(3, width, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(grid * grid + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, cfg.layers, cfg.heads, quick_gelu)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.conv1(image)  # [N, W, g, g]
        x = x.flatten(2).transpose(1, 2)  # [N, g*g, W]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[:, 0]) @ self.proj


class CLIP(nn.Module):
    """OpenCLIP's `CLIP` (ViT image tower + text transformer) with the same parameter names."""

    def __init__(self, cfg: ClipConfig) -> None:
        super().__init__()
        text = cfg.text_cfg
        self.cfg = cfg
        self.visual = VisionTransformer(cfg.vision_cfg, cfg.embed_dim, cfg.quick_gelu)
        self.transformer = Transformer(text.width, text.layers, text.heads, cfg.quick_gelu)
        self.token_embedding = nn.Embedding(text.vocab_size, text.width)
        self.positional_embedding = nn.Parameter(torch.empty(text.context_length, text.width))
        self.ln_final = nn.LayerNorm(text.width)
        self.text_projection = nn.Parameter(torch.empty(text.width, cfg.embed_dim))
        causal = torch.full((text.context_length, text.context_length), float("-inf")).triu_(1)
        self.register_buffer("attn_mask", causal, persistent=False)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=text.width**-0.5)
        self.transformer.init_weights()
        self.visual.transformer.init_weights()

    def encode_image(self, image: torch.Tensor) -> torch.Tensor:
        return self.visual(image)

    def encode_text(self, text: torch.Tensor) -> torch.Tensor:
        tokens = text.long()
        x = self.token_embedding(tokens) + self.positional_embedding
        x = self.ln_final(self.transformer(x, self.attn_mask))
        # The end-of-text token has the highest id in the vocabulary (OpenCLIP's pooling rule).
        eot = tokens.argmax(dim=-1)
        return x[torch.arange(x.shape[0]), eot] @ self.text_projection


class _VisualExport(nn.Module):
    def __init__(self, model: CLIP) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(image)


class _VisualFp16Export(nn.Module):
    """The visual tower in half precision behind float32 input and output, so callers feed and read
    the fp16 model exactly like the fp32 one."""

    def __init__(self, model: CLIP) -> None:
        super().__init__()
        self.visual = copy.deepcopy(model.visual).half()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.visual(image.half()).float()


class _TextualExport(nn.Module):
    def __init__(self, model: CLIP) -> None:
        super().__init__()
        self.model = model

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(text)


def build_torch_model(cfg: ClipConfig, seed: int) -> CLIP:
    """The random-weight torch CLIP for `cfg` and `seed`, without touching the global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = CLIP(cfg)
    return model.eval()


def load_torch_reference(model_dir: Path) -> CLIP:
    """The torch twin of a test-model folder (same weights as its ONNX files), for parity tests."""
    model_dir = Path(model_dir)
    cfg = ClipConfig.from_json(json.loads((model_dir / "config.json").read_text()))
    marker = json.loads((model_dir / TEST_MODEL_MARKER).read_text())
    model = build_torch_model(cfg, int(marker["seed"]))
    weights = model_dir / TORCH_WEIGHTS_FILE
    if not weights.exists() and marker.get("builder", "torch") != "torch":
        # Its weights were drawn by NumPy: the seed does not give them back in torch.
        raise ValueError(f"{model_dir} was not built by torch; it has no torch twin")
    if weights.exists():
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model


# ---------------------------------------------------------------- export


def _export_onnx(module: nn.Module, example: torch.Tensor, path: Path, input_name: str) -> None:
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo, but it is the one that writes a
        # single self-contained file with a dynamic batch axis reliably across torch versions.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=[input_name],
            output_names=["embedding"],
            dynamic_axes={input_name: {0: "batch"}, "embedding": {0: "batch"}},
            opset_version=ONNX_OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def make_test_model(size: TestModelSize, out: Path, seed: int = 0, fp16: bool = True) -> Path:
    """Write a random-weight CLIP into `out` in Immich's OpenCLIP ONNX layout and return `out`.

    `tiny` (64 wide, 2 layers) is for tests; `vit-b-32` is the full-size ViT-B/32 architecture for
    benchmarks. The textual model takes int32 token ids named `text`, as Immich feeds them. With
    `fp16`, `visual/model_fp16.onnx` is written too (float32 in and out), which ClipModel uses on CUDA.
    """
    out = Path(out)
    check_size(size)
    visual_dir, textual_dir = start_model_folder(out, size, seed, builder="torch")
    vocab_size = write_tokenizer(textual_dir, vocab_size=TOKENIZER_VOCAB_SIZE[size])
    cfg = config_for(size, vocab_size)
    write_model_config(out, size, cfg)
    model = build_torch_model(cfg, seed)
    image_size = cfg.vision_cfg.image_size

    with torch.no_grad():
        example_image = torch.randn(2, 3, image_size, image_size)
        _export_onnx(_VisualExport(model), example_image, visual_dir / "model.onnx", "image")
        if fp16:
            _export_onnx(_VisualFp16Export(model), example_image, visual_dir / "model_fp16.onnx", "image")
        example_text = torch.zeros(2, CONTEXT_LENGTH, dtype=torch.int32)
        example_text[:, 0], example_text[:, 1] = vocab_size - 2, vocab_size - 1
        _export_onnx(_TextualExport(model), example_text, textual_dir / "model.onnx", "text")

    if size == "tiny":
        torch.save(model.state_dict(), out / TORCH_WEIGHTS_FILE)
    return out
