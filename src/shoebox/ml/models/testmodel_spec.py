"""What a random-weight test model is, whichever builder writes its ONNX files: sizes, configs,
tokenizer and the files of the folder around the two encoders.

Torch-free on purpose: `testmodel` (torch export, for the tests' torch twins) and `onnx_testmodel`
(ONNX graphs written directly, for the lean user install) both build on it, so the two kinds of
folder differ only in how their `model.onnx` files were produced.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from shoebox.ml.models.tokenizer import BOS_TOKEN, EOS_TOKEN, TEST_MODEL_MARKER

TestModelSize = Literal["tiny", "vit-b-32"]
TEST_MODEL_SIZES: tuple[str, ...] = ("tiny", "vit-b-32")
# The CLIP families of Immich's catalogue (see shoebox.ml.models.families); the torch builder writes
# openclip only.
TEST_MODEL_FAMILIES: tuple[str, ...] = ("openclip", "siglip", "mclip", "nllb")

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
CONTEXT_LENGTH = 77
SIGLIP_CONTEXT_LENGTH = 64
SIGLIP_MEAN = SIGLIP_STD = (0.5, 0.5, 0.5)
ONNX_OPSET = 17
# The torch builder keeps the tiny model's state dict next to the ONNX files: the parity test rebuilds
# the torch reference from it instead of trusting that seeding reproduces the same weights in every torch.
TORCH_WEIGHTS_FILE = "torch_weights.pt"
RANDOM_WEIGHTS_WARNING = "random weights, search results are meaningless"
# Size of the BPE vocabulary learnt for each model size (plus the two special tokens).
TOKENIZER_VOCAB_SIZE = {"tiny": 1024, "vit-b-32": 8192}


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


def config_for(size: TestModelSize, vocab_size: int, family: str = "openclip") -> ClipConfig:
    """The architecture of a test model; `family` sets SigLIP's context length and the GELU kind
    (OpenAI's QuickGELU for openclip and M-CLIP's OpenAI image tower, exact GELU for the others)."""
    check_family(family)
    context_length = SIGLIP_CONTEXT_LENGTH if family == "siglip" else CONTEXT_LENGTH
    quick_gelu = family in ("openclip", "mclip")
    if size == "tiny":
        return ClipConfig(
            embed_dim=64,
            vision_cfg=VisionConfig(image_size=224, layers=2, width=64, heads=2, patch_size=32),
            text_cfg=TextConfig(
                context_length=context_length, vocab_size=vocab_size, width=64, heads=2, layers=2
            ),
            quick_gelu=quick_gelu,
        )
    if size == "vit-b-32":
        # OpenCLIP's ViT-B-32 as published by OpenAI; the embedding table keeps CLIP's full vocabulary
        # size so the text tower costs what the real one costs, even though our tokenizer uses fewer ids.
        return ClipConfig(
            embed_dim=512,
            vision_cfg=VisionConfig(image_size=224, layers=12, width=768, heads=12, patch_size=32),
            text_cfg=TextConfig(
                context_length=context_length,
                vocab_size=max(49408, vocab_size),
                width=512,
                heads=8,
                layers=12,
            ),
            quick_gelu=quick_gelu,
        )
    raise ValueError(f"unknown test model size {size!r} (expected 'tiny' or 'vit-b-32')")


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


def tokenizer_corpus() -> list[str]:
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
    tokenizer.train_from_iterator(tokenizer_corpus(), trainer=trainer)
    tokenizer.add_special_tokens([BOS_TOKEN, EOS_TOKEN])
    bos_id, eos_id = tokenizer.token_to_id(BOS_TOKEN), tokenizer.token_to_id(EOS_TOKEN)
    assert eos_id == tokenizer.get_vocab_size() - 1, "end-of-text must have the highest id"
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A {EOS_TOKEN}",
        pair=f"{BOS_TOKEN} $A {EOS_TOKEN} $B {EOS_TOKEN}",
        special_tokens=[(BOS_TOKEN, bos_id), (EOS_TOKEN, eos_id)],
    )
    return tokenizer


def write_tokenizer(textual_dir: Path, vocab_size: int) -> int:
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


# ---------------------------------------------------------------- the folder


def check_size(size: str) -> None:
    if size not in TEST_MODEL_SIZES:
        raise ValueError(f"unknown test model size {size!r} (expected 'tiny' or 'vit-b-32')")


def check_family(family: str) -> None:
    if family not in TEST_MODEL_FAMILIES:
        raise ValueError(
            f"unknown model family {family!r} (expected one of {', '.join(TEST_MODEL_FAMILIES)})"
        )


def start_model_folder(
    out: Path, size: str, seed: int, builder: str, family: str = "openclip"
) -> tuple[Path, Path]:
    """Empty `visual/` and `textual/` under `out` and write the test-model marker; returns both folders.

    The marker is written first, so even a half-written folder can never pass for a real model.
    """
    check_size(size)
    check_family(family)
    out = Path(out)
    visual_dir, textual_dir = out / "visual", out / "textual"
    for folder in (visual_dir, textual_dir):
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
    # Torch weights of an earlier build would no longer match the ONNX files.
    (out / TORCH_WEIGHTS_FILE).unlink(missing_ok=True)
    marker = {
        "size": size,
        "family": family,
        "seed": seed,
        "builder": builder,
        "warning": f"SHOEBOX TEST MODEL: {RANDOM_WEIGHTS_WARNING}",
    }
    (out / TEST_MODEL_MARKER).write_text(json.dumps(marker, indent=2))
    return visual_dir, textual_dir


# What each family's `config.json` says beyond the architecture, as OpenCLIP's model configs (which
# Immich's exports copy) have it. M-CLIP's is its image tower's OpenCLIP config, like openclip's; NLLB's
# has no context length (OpenCLIP's default of 77 applies).
_TEXT_CFG_EXTRAS: dict[str, dict[str, object]] = {
    "openclip": {},
    "mclip": {},
    "siglip": {
        "hf_tokenizer_name": "timm/ViT-B-16-SigLIP",
        "tokenizer_kwargs": {"clean": "canonicalize"},
        "no_causal_mask": True,
        "pool_type": "last",
    },
    "nllb": {
        "hf_model_name": "facebook/nllb-200-distilled-600M",
        "hf_tokenizer_name": "facebook/nllb-200-distilled-600M",
        "hf_proj_type": "linear",
        "hf_pooler_type": "cls_pooler",
    },
}


def write_model_config(out: Path, size: str, cfg: ClipConfig, family: str = "openclip") -> None:
    """`config.json` (OpenCLIP's model config) and `visual/preprocess_cfg.json`."""
    check_family(family)
    out = Path(out)
    config = {"model_name": f"shoebox-test-{size}" + ("" if family == "openclip" else f"-{family}")}
    config.update(cfg.to_json())
    text_cfg = {**config["text_cfg"], **_TEXT_CFG_EXTRAS[family]}  # type: ignore[dict-item]
    if family == "nllb":
        del text_cfg["context_length"]
    config["text_cfg"] = text_cfg
    (out / "config.json").write_text(json.dumps(config, indent=2))
    image_size = cfg.vision_cfg.image_size
    # SigLIP's image tower (NLLB-CLIP's too) squashes the whole picture to the input size, with 0.5 mean/std.
    squash = family in ("siglip", "nllb")
    preprocess_cfg = {
        "size": [image_size, image_size],
        "mode": "RGB",
        "mean": list(SIGLIP_MEAN if squash else OPENAI_MEAN),
        "std": list(SIGLIP_STD if squash else OPENAI_STD),
        "interpolation": "bicubic",
        "resize_mode": "squash" if squash else "shortest",
        "fill_color": 0,
    }
    (out / "visual" / "preprocess_cfg.json").write_text(json.dumps(preprocess_cfg, indent=2))
