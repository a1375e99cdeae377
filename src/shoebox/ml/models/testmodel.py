"""Random-weight CLIP models in the on-disk layout of Immich's OpenCLIP ONNX exports.

They exist so tests and benchmarks run the real code paths (ONNX Runtime, tokenizer, preprocessing)
without model weights that cannot be downloaded here. Their embeddings mean nothing; every folder
carries a `SHOEBOX_TEST_MODEL` marker so nothing can mistake one for a real model.

Needs torch (the `dev` extra). The CLIP modules are written out here, following OpenCLIP's `CLIP`
(ViT visual tower, causal text transformer pooled at the end-of-text token) with its parameter names,
so a state dict of either loads into the other.
"""

from __future__ import annotations

import copy
import json
import shutil
import warnings
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from shoebox.ml.models.tokenizer import BOS_TOKEN, EOS_TOKEN, TEST_MODEL_MARKER

TestModelSize = Literal["tiny", "vit-b-32"]

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
CONTEXT_LENGTH = 77
ONNX_OPSET = 17
# The tiny model keeps its state dict next to the ONNX files: the parity test rebuilds the torch
# reference from it instead of trusting that seeding reproduces the same weights in every torch.
TORCH_WEIGHTS_FILE = "torch_weights.pt"
RANDOM_WEIGHTS_WARNING = "random weights, search results are meaningless"


@dataclass(frozen=True)
class VisionConfig:
    image_size: int
    layers: int
    width: int
    heads: int
    patch_size: int


@dataclass(frozen=True)
class TextConfig:
    context_length: int
    vocab_size: int
    width: int
    heads: int
    layers: int


@dataclass(frozen=True)
class ClipConfig:
    embed_dim: int
    vision_cfg: VisionConfig
    text_cfg: TextConfig
    quick_gelu: bool = True

    def to_json(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, object]) -> ClipConfig:
        vision = data["vision_cfg"]
        text = data["text_cfg"]
        assert isinstance(vision, dict) and isinstance(text, dict)
        return cls(
            embed_dim=int(data["embed_dim"]),  # type: ignore[call-overload]
            vision_cfg=VisionConfig(**{k: int(vision[k]) for k in VisionConfig.__dataclass_fields__}),
            text_cfg=TextConfig(**{k: int(text[k]) for k in TextConfig.__dataclass_fields__}),
            quick_gelu=bool(data.get("quick_gelu", True)),
        )


def config_for(size: TestModelSize, vocab_size: int) -> ClipConfig:
    if size == "tiny":
        return ClipConfig(
            embed_dim=64,
            vision_cfg=VisionConfig(image_size=224, layers=2, width=64, heads=2, patch_size=32),
            text_cfg=TextConfig(
                context_length=CONTEXT_LENGTH, vocab_size=vocab_size, width=64, heads=2, layers=2
            ),
        )
    if size == "vit-b-32":
        # OpenCLIP's ViT-B-32 as published by OpenAI; the embedding table keeps CLIP's full vocabulary
        # size so the text tower costs what the real one costs, even though our tokenizer uses fewer ids.
        return ClipConfig(
            embed_dim=512,
            vision_cfg=VisionConfig(image_size=224, layers=12, width=768, heads=12, patch_size=32),
            text_cfg=TextConfig(
                context_length=CONTEXT_LENGTH,
                vocab_size=max(49408, vocab_size),
                width=512,
                heads=8,
                layers=12,
            ),
        )
    raise ValueError(f"unknown test model size {size!r} (expected 'tiny' or 'vit-b-32')")


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
    if weights.exists():
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model


# ---------------------------------------------------------------- tokenizer

# Words the test tokenizer's BPE merges are learnt from; byte-level BPE still encodes any text.
_WORDS = """
a an the of in on at by for with from to and or but not no is are was were be been has have had do does
did this that these those it its he she they we you i me my our your their his her them us who what
where when why how all any some many much more most few one two three four five six seven eight nine ten
photo photos picture image images camera lens shot portrait landscape selfie holiday vacation trip travel
dog dogs cat cats puppy kitten bird birds horse cow sheep fish animal animals pet pets bear lion tiger
man woman men women child children baby boy girl family friend friends people person crowd team group
beach sea ocean wave waves sand sun sunset sunrise sky cloud clouds rain snow storm fog mist weather
mountain mountains hill hills forest tree trees flower flowers garden park field grass leaf leaves river
lake water waterfall island desert rock rocks cave valley road street city town village house home
building bridge tower castle church temple museum market shop restaurant cafe kitchen room bedroom
car cars bus train plane boat ship bicycle bike motorcycle truck station airport harbor port
food meal dinner lunch breakfast cake pizza bread coffee tea wine beer fruit apple orange banana
red orange yellow green blue purple pink brown black white gray grey gold silver dark bright light
night day morning evening afternoon summer winter spring autumn fall christmas birthday wedding party
happy sad smiling laughing running walking sitting standing playing swimming eating drinking sleeping
old new big small little large tall short long young beautiful pretty ugly good bad best first last
football soccer tennis game ball match concert music guitar piano dance show festival fireworks
school university office work desk computer phone book books paper screen window door wall floor
table chair bed sofa lamp picture painting art statue sculpture museum gallery flag sign text
""".split()
_SUFFIXES = ("", "s", "ing", "ed", "er", "est", "ly")
_TEMPLATES = ("a photo of {}", "a picture of the {}", "{} in the {}", "my {} and {}", "the {} at {}")


def _tokenizer_corpus() -> list[str]:
    words = sorted({w + s for w in _WORDS for s in _SUFFIXES})
    lines = [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)]
    for i, template in enumerate(_TEMPLATES):
        step = i + 3
        for j in range(0, len(_WORDS) - step, step):
            args = _WORDS[j : j + template.count("{}")]
            lines.append(template.format(*args))
    return lines


def build_test_tokenizer(vocab_size: int = 4096):  # -> tokenizers.Tokenizer
    """A byte-level BPE with CLIP's special tokens, learnt offline from a built-in word list.

    The special tokens are added after training so <|endoftext|> gets the highest id, which is what
    OpenCLIP's argmax pooling of the text tower relies on.
    """
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_tokenizer_corpus(), trainer=trainer)
    tokenizer.add_special_tokens([BOS_TOKEN, EOS_TOKEN])
    bos_id, eos_id = tokenizer.token_to_id(BOS_TOKEN), tokenizer.token_to_id(EOS_TOKEN)
    assert eos_id == tokenizer.get_vocab_size() - 1, "end-of-text must have the highest id"
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A {EOS_TOKEN}",
        pair=f"{BOS_TOKEN} $A {EOS_TOKEN} $B {EOS_TOKEN}",
        special_tokens=[(BOS_TOKEN, bos_id), (EOS_TOKEN, eos_id)],
    )
    return tokenizer


def _write_tokenizer(textual_dir: Path, vocab_size: int) -> int:
    tokenizer = build_test_tokenizer(vocab_size)
    tokenizer.save(str(textual_dir / "tokenizer.json"))
    # OpenCLIP pads with id 0, so the pad token is whatever the vocabulary holds at id 0.
    pad_token = tokenizer.id_to_token(0)
    special = {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "unk_token": EOS_TOKEN, "pad_token": pad_token}
    tokenizer_config = {
        **special,
        "model_max_length": CONTEXT_LENGTH,
        "do_lower_case": True,
        "tokenizer_class": "CLIPTokenizer",
    }
    (textual_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    (textual_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    return tokenizer.get_vocab_size()


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
    if size not in ("tiny", "vit-b-32"):
        raise ValueError(f"unknown test model size {size!r} (expected 'tiny' or 'vit-b-32')")
    visual_dir, textual_dir = out / "visual", out / "textual"
    for folder in (visual_dir, textual_dir):
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
    (out / TORCH_WEIGHTS_FILE).unlink(missing_ok=True)
    # Marked first, so even a half-written folder can never pass for a real model.
    marker = {"size": size, "seed": seed, "warning": f"SHOEBOX TEST MODEL: {RANDOM_WEIGHTS_WARNING}"}
    (out / TEST_MODEL_MARKER).write_text(json.dumps(marker, indent=2))

    vocab_size = _write_tokenizer(textual_dir, vocab_size=1024 if size == "tiny" else 8192)
    cfg = config_for(size, vocab_size)
    model = build_torch_model(cfg, seed)
    image_size = cfg.vision_cfg.image_size

    config = {"model_name": f"shoebox-test-{size}", **cfg.to_json()}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    preprocess_cfg = {
        "size": [image_size, image_size],
        "mode": "RGB",
        "mean": list(OPENAI_MEAN),
        "std": list(OPENAI_STD),
        "interpolation": "bicubic",
        "resize_mode": "shortest",
        "fill_color": 0,
    }
    (visual_dir / "preprocess_cfg.json").write_text(json.dumps(preprocess_cfg, indent=2))

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
