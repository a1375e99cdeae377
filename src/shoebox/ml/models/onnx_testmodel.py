"""Random-weight CLIP test models written as ONNX graphs directly, without torch.

The same model as `testmodel.make_test_model` (OpenCLIP's `CLIP`: ViT image tower, causal text
transformer pooled at the end-of-text token), the same folder, file names, input and output names
and dtypes, and the same tokenizer — only the graphs are assembled node by node with `onnx.helper`
from NumPy arrays instead of exported from torch. This is what the product uses (the demo's offline
fallback, `shoebox model make-test`), so a user install needs no torch.

Weights are keyed by OpenCLIP's state-dict names, so a torch `CLIP`'s `state_dict()` turned into
NumPy arrays builds the exact twin of the torch-exported folder (the parity test does that).
Without weights, they are drawn with NumPy from the seed, with the distributions of OpenCLIP's
initialisation (the draws differ from torch's: same seed, different numbers).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from shoebox.ml.models.testmodel_spec import (
    ONNX_OPSET,
    TOKENIZER_VOCAB_SIZE,
    ClipConfig,
    TestModelSize,
    check_family,
    check_size,
    config_for,
    start_model_folder,
    write_model_config,
)
from shoebox.ml.models.testmodel_tokenizers import write_family_tokenizer

# IR version 8 (what torch's exporter writes at opset 17) loads in every ONNX Runtime since 1.14.
ONNX_IR_VERSION = 8
LAYER_NORM_EPS = 1e-5
PRODUCER = "shoebox.onnx_testmodel"


# ---------------------------------------------------------------- weights


def _block_shapes(prefix: str, width: int) -> Iterator[tuple[str, tuple[int, ...]]]:
    yield f"{prefix}.ln_1.weight", (width,)
    yield f"{prefix}.ln_1.bias", (width,)
    yield f"{prefix}.attn.in_proj_weight", (3 * width, width)
    yield f"{prefix}.attn.in_proj_bias", (3 * width,)
    yield f"{prefix}.attn.out_proj.weight", (width, width)
    yield f"{prefix}.attn.out_proj.bias", (width,)
    yield f"{prefix}.ln_2.weight", (width,)
    yield f"{prefix}.ln_2.bias", (width,)
    yield f"{prefix}.mlp.c_fc.weight", (4 * width, width)
    yield f"{prefix}.mlp.c_fc.bias", (4 * width,)
    yield f"{prefix}.mlp.c_proj.weight", (width, 4 * width)
    yield f"{prefix}.mlp.c_proj.bias", (width,)


def weight_shapes(cfg: ClipConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter of the model, by its OpenCLIP state-dict name, with its shape."""
    vision, text = cfg.vision_cfg, cfg.text_cfg
    width, grid = vision.width, vision.image_size // vision.patch_size
    shapes: dict[str, tuple[int, ...]] = {
        "visual.class_embedding": (width,),
        "visual.positional_embedding": (grid * grid + 1, width),
        "visual.proj": (width, cfg.embed_dim),
        "visual.conv1.weight": (width, 3, vision.patch_size, vision.patch_size),
        "visual.ln_pre.weight": (width,),
        "visual.ln_pre.bias": (width,),
    }
    for i in range(vision.layers):
        shapes.update(_block_shapes(f"visual.transformer.resblocks.{i}", width))
    shapes["visual.ln_post.weight"] = (width,)
    shapes["visual.ln_post.bias"] = (width,)
    shapes["positional_embedding"] = (text.context_length, text.width)
    shapes["text_projection"] = (text.width, cfg.embed_dim)
    for i in range(text.layers):
        shapes.update(_block_shapes(f"transformer.resblocks.{i}", text.width))
    shapes["token_embedding.weight"] = (text.vocab_size, text.width)
    shapes["ln_final.weight"] = (text.width,)
    shapes["ln_final.bias"] = (text.width,)
    return shapes


def _block_stds(width: int, layers: int) -> dict[str, float]:
    """Std of the normal draw of each residual-block matrix (OpenCLIP's CLIP.init_parameters)."""
    proj_std = (width**-0.5) * ((2 * layers) ** -0.5)
    return {
        "attn.in_proj_weight": width**-0.5,
        "attn.out_proj.weight": proj_std,
        "mlp.c_fc.weight": (2 * width) ** -0.5,
        "mlp.c_proj.weight": proj_std,
    }


def random_weights(cfg: ClipConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Float32 weights drawn from `seed` with the distributions OpenCLIP initialises a CLIP with.

    Normal draws where `CLIP.init_parameters` makes them (residual branches scaled down with depth),
    torch's default uniform(±1/sqrt(fan_in)) for the patch convolution and the linear biases, zero
    in-projection biases, and layer norms of ones and zeros.
    """
    rng = np.random.default_rng(seed)
    vision, text = cfg.vision_cfg, cfg.text_cfg
    scale = vision.width**-0.5
    stds = {
        "visual.class_embedding": scale,
        "visual.positional_embedding": scale,
        "visual.proj": scale,
        "token_embedding.weight": 0.02,
        "positional_embedding": 0.01,
        "text_projection": text.width**-0.5,
    }
    block_stds = {
        "visual.transformer": _block_stds(vision.width, vision.layers),
        "transformer": _block_stds(text.width, text.layers),
    }
    shapes = weight_shapes(cfg)

    def uniform(shape: tuple[int, ...], fan_in: int) -> np.ndarray:
        bound = fan_in**-0.5
        return rng.uniform(-bound, bound, shape).astype(np.float32)

    weights: dict[str, np.ndarray] = {}
    for name, shape in shapes.items():
        owner, _, kind = name.rpartition(".")
        if name in stds:
            std = stds[name]
        elif name == "visual.conv1.weight":
            weights[name] = uniform(shape, int(np.prod(shape[1:])))
            continue
        elif owner.rsplit(".", 1)[-1].startswith("ln_"):
            weights[name] = (np.ones if kind == "weight" else np.zeros)(shape, dtype=np.float32)
            continue
        else:  # a residual block's parameter
            tower, rest = name.split(".resblocks.", 1)
            leaf = rest.split(".", 1)[1]
            if leaf in block_stds[tower]:
                std = block_stds[tower][leaf]
            elif leaf == "attn.in_proj_bias":
                weights[name] = np.zeros(shape, dtype=np.float32)
                continue
            else:  # an nn.Linear bias: uniform over the layer's fan-in
                weights[name] = uniform(shape, shapes[f"{owner}.weight"][1])
                continue
        weights[name] = rng.standard_normal(shape, dtype=np.float32) * np.float32(std)
    return weights


def _checked_weights(cfg: ClipConfig, weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    expected = weight_shapes(cfg)
    missing = sorted(expected.keys() - weights.keys())
    unexpected = sorted(weights.keys() - expected.keys())
    if missing or unexpected:
        raise ValueError(f"weights do not fit the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    checked: dict[str, np.ndarray] = {}
    for name, shape in expected.items():
        array = np.asarray(weights[name], dtype=np.float32)
        if array.shape != shape:
            raise ValueError(f"weight {name} has shape {array.shape}, expected {shape}")
        checked[name] = array
    return checked


# ---------------------------------------------------------------- graph building


class _Graph:
    """Nodes and initializers of one graph; every helper returns the name of the tensor it makes.

    `dtype` is the floating type of the computation (weights are stored in it): float32, or float16
    for the half-precision visual model.
    """

    def __init__(self, name: str, weights: Mapping[str, np.ndarray], dtype: type[np.floating]) -> None:
        self.name = name
        self.weights = weights
        self.dtype = dtype
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._names: set[str] = set()
        self._count = 0

    def _fresh(self, hint: str) -> str:
        self._count += 1
        return f"/{hint}_{self._count}"

    def constant(self, name: str, array: np.ndarray) -> str:
        if name in self._names:
            return name
        self._names.add(name)
        self.initializers.append(numpy_helper.from_array(np.asarray(array, order="C"), name))
        return name

    def param(self, name: str, transpose: bool = False, shape: tuple[int, ...] | None = None) -> str:
        """A weight in the graph's dtype, optionally transposed (nn.Linear's `x @ W.T`) or reshaped."""
        array = self.weights[name]
        if transpose:
            name, array = f"{name}.T", array.T
        if shape is not None:
            array = array.reshape(shape)
        return self.constant(name, np.ascontiguousarray(array, dtype=self.dtype))

    def scalar(self, value: float) -> str:
        return self.constant(
            f"const_{value!r}_{np.dtype(self.dtype).name}", np.array(value, dtype=self.dtype)
        )

    def ints(self, *values: int) -> str:
        return self.constant("ints_" + "_".join(str(v) for v in values), np.array(values, dtype=np.int64))

    def op(self, op_type: str, *inputs: str, **attrs: object) -> str:
        output = self._fresh(op_type)
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], **attrs))
        return output

    def split3(self, x: str, size: int) -> list[str]:
        names = [self._fresh("Split") for _ in range(3)]
        self.nodes.append(helper.make_node("Split", [x, self.ints(size, size, size)], names, axis=-1))
        return names

    # ------------------------------------------------------------ layers

    def layer_norm(self, x: str, prefix: str) -> str:
        return self.op(
            "LayerNormalization",
            x,
            self.param(f"{prefix}.weight"),
            self.param(f"{prefix}.bias"),
            axis=-1,
            epsilon=LAYER_NORM_EPS,
        )

    def linear(self, x: str, prefix: str) -> str:
        """nn.Linear: x @ W.T + b (W stored transposed, so a MatMul and an Add)."""
        return self.op(
            "Add",
            self.op("MatMul", x, self.param(f"{prefix}.weight", transpose=True)),
            self.param(f"{prefix}.bias"),
        )

    def gelu(self, x: str, quick: bool) -> str:
        if quick:  # OpenAI's QuickGELU: x * sigmoid(1.702 x)
            return self.op("Mul", x, self.op("Sigmoid", self.op("Mul", x, self.scalar(1.702))))
        # nn.GELU (exact): x * 0.5 * (1 + erf(x / sqrt(2)))
        erf = self.op("Erf", self.op("Div", x, self.scalar(float(np.sqrt(2.0)))))
        return self.op("Mul", x, self.op("Mul", self.op("Add", erf, self.scalar(1.0)), self.scalar(0.5)))

    def attention(self, x: str, prefix: str, width: int, heads: int, mask: str | None) -> str:
        """MultiheadSelfAttention of testmodel.py: one in-projection, per-head scaled dot products."""
        head_dim = width // heads
        qkv = self.op(
            "Add",
            self.op("MatMul", x, self.param(f"{prefix}.in_proj_weight", transpose=True)),
            self.param(f"{prefix}.in_proj_bias"),
        )  # [N, L, 3W]: q, k, v one after the other, each [heads, head_dim]
        q, k, v = (self.op("Reshape", t, self.ints(0, 0, heads, head_dim)) for t in self.split3(qkv, width))
        q = self.op("Transpose", q, perm=[0, 2, 1, 3])  # [N, H, L, d]
        k = self.op("Transpose", k, perm=[0, 2, 3, 1])  # [N, H, d, L]
        v = self.op("Transpose", v, perm=[0, 2, 1, 3])
        scores = self.op("MatMul", self.op("Mul", q, self.scalar(head_dim**-0.5)), k)
        if mask is not None:
            scores = self.op("Add", scores, mask)
        out = self.op("MatMul", self.op("Softmax", scores, axis=-1), v)  # [N, H, L, d]
        out = self.op("Reshape", self.op("Transpose", out, perm=[0, 2, 1, 3]), self.ints(0, 0, width))
        return self.linear(out, f"{prefix}.out_proj")

    def transformer(
        self, x: str, prefix: str, width: int, heads: int, layers: int, quick_gelu: bool, mask: str | None
    ) -> str:
        for i in range(layers):
            block = f"{prefix}.resblocks.{i}"
            x = self.op(
                "Add",
                x,
                self.attention(self.layer_norm(x, f"{block}.ln_1"), f"{block}.attn", width, heads, mask),
            )
            h = self.linear(self.layer_norm(x, f"{block}.ln_2"), f"{block}.mlp.c_fc")
            h = self.linear(self.gelu(h, quick_gelu), f"{block}.mlp.c_proj")
            x = self.op("Add", x, h)
        return x

    def model(
        self, inputs: list[tuple[str, int, list[int | str]]], output: str, embed_dim: int
    ) -> onnx.ModelProto:
        """The graph with `inputs` (name, element type, shape) and `output` published as `embedding`."""
        # `output` is the last node's: it is renamed to the public name the callers read.
        assert self.nodes[-1].output[0] == output
        self.nodes[-1].output[0] = "embedding"
        graph = helper.make_graph(
            self.nodes,
            self.name,
            [helper.make_tensor_value_info(*spec) for spec in inputs],
            [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", embed_dim])],
            initializer=self.initializers,
        )
        model = helper.make_model(
            graph, opset_imports=[helper.make_opsetid("", ONNX_OPSET)], producer_name=PRODUCER
        )
        model.ir_version = ONNX_IR_VERSION
        return model


def visual_graph(cfg: ClipConfig, weights: Mapping[str, np.ndarray], fp16: bool = False) -> onnx.ModelProto:
    """`image` float32 [N, 3, S, S] → `embedding` float32 [N, embed_dim] (unnormalised).

    With `fp16` the weights and the computation are half precision behind float32 input and output,
    like the torch builder's `model_fp16.onnx`.
    """
    vision = cfg.vision_cfg
    width, patch = vision.width, vision.patch_size
    g = _Graph("visual", weights, np.float16 if fp16 else np.float32)
    x = g.op("Cast", "image", to=TensorProto.FLOAT16) if fp16 else "image"
    x = g.op("Conv", x, g.param("visual.conv1.weight"), kernel_shape=[patch, patch], strides=[patch, patch])
    x = g.op("Transpose", g.op("Reshape", x, g.ints(0, width, -1)), perm=[0, 2, 1])  # [N, g*g, W]
    # The class token, repeated over the batch, goes in front of the patch tokens.
    batch = g.op("Shape", x, start=0, end=1)
    cls_shape = g.op("Concat", batch, g.ints(1, width), axis=0)
    cls = g.op("Expand", g.param("visual.class_embedding", shape=(1, 1, width)), cls_shape)
    x = g.op("Add", g.op("Concat", cls, x, axis=1), g.param("visual.positional_embedding"))
    x = g.layer_norm(x, "visual.ln_pre")
    x = g.transformer(x, "visual.transformer", width, vision.heads, vision.layers, cfg.quick_gelu, None)
    x = g.op("Gather", x, g.constant("class_token_index", np.array(0, dtype=np.int64)), axis=1)  # [N, W]
    x = g.op("MatMul", g.layer_norm(x, "visual.ln_post"), g.param("visual.proj"))
    if fp16:
        x = g.op("Cast", x, to=TensorProto.FLOAT)
    size = vision.image_size
    return g.model([("image", TensorProto.FLOAT, ["batch", 3, size, size])], x, cfg.embed_dim)


def textual_graph(
    cfg: ClipConfig, weights: Mapping[str, np.ndarray], family: str = "openclip", pad_id: int = 0
) -> onnx.ModelProto:
    """Token ids [N, context_length] → `embedding` float32 [N, embed_dim] (unnormalised).

    One transformer (OpenCLIP's text tower and weight names) with each family's inputs, attention
    and pooling, so a caller that feeds a family wrongly gets wrong embeddings:

    - openclip: `text` int32; causal attention; pooled at the end-of-text token (the highest id);
    - siglip: `text` int32; full attention; pooled at the last position (OpenCLIP's `pool_type: last`);
    - nllb: `text` int32; padding (`pad_id`) masked out; pooled at the first token, the language code
      (`cls_pooler`);
    - mclip: `input_ids` and `attention_mask` int32; padding masked out; the mean over the tokens.
    """
    check_family(family)
    text = cfg.text_cfg
    length = text.context_length
    g = _Graph("textual", weights, np.float32)
    keep = ""  # [N, L] float: 1 for tokens, 0 for padding (the towers that mask padding)
    if family == "mclip":
        inputs = [(name, TensorProto.INT32, ["batch", length]) for name in ("input_ids", "attention_mask")]
        ids = g.op("Cast", "input_ids", to=TensorProto.INT64)
        keep = g.op("Cast", "attention_mask", to=TensorProto.FLOAT)
    else:
        inputs = [("text", TensorProto.INT32, ["batch", length])]
        ids = g.op("Cast", "text", to=TensorProto.INT64)
        if family == "nllb":  # OpenCLIP's Hugging Face text towers mask `text != pad_id` themselves
            padding = g.op("Equal", ids, g.constant("pad_id", np.array(pad_id, dtype=np.int64)))
            keep = g.op("Cast", g.op("Not", padding), to=TensorProto.FLOAT)
    x = g.op("Gather", g.param("token_embedding.weight"), ids, axis=0)  # [N, L, W]
    x = g.op("Add", x, g.param("positional_embedding"))
    mask: str | None = None
    if family == "openclip":
        mask = g.constant("attn_mask", np.triu(np.full((length, length), -np.inf, dtype=np.float32), k=1))
    elif family in ("nllb", "mclip"):
        # -1e9 rather than -inf: a row of padding only still softmaxes to numbers.
        blocked = g.op("Mul", g.op("Sub", g.scalar(1.0), keep), g.scalar(-1e9))
        mask = g.op("Unsqueeze", blocked, g.ints(1, 2))  # [N, 1, 1, L]: over the keys
    x = g.transformer(x, "transformer", text.width, text.heads, text.layers, cfg.quick_gelu, mask)
    x = g.layer_norm(x, "ln_final")
    if family == "openclip":
        # Pool at the end-of-text token, which has the highest id (OpenCLIP's argmax rule).
        eot = g.op("Unsqueeze", g.op("ArgMax", ids, axis=-1, keepdims=0), g.ints(-1))  # [N, 1]
        x = g.op("GatherND", x, eot, batch_dims=1)  # [N, W]
    elif family == "mclip":
        weighted = g.op("Mul", x, g.op("Unsqueeze", keep, g.ints(-1)))
        total = g.op("ReduceSum", weighted, g.ints(1), keepdims=0)
        x = g.op("Div", total, g.op("ReduceSum", keep, g.ints(1), keepdims=1))
    else:
        position = length - 1 if family == "siglip" else 0
        x = g.op("Gather", x, g.constant(f"pool_{position}", np.array(position, dtype=np.int64)), axis=1)
    x = g.op("MatMul", x, g.param("text_projection"))
    return g.model(inputs, x, cfg.embed_dim)


# ---------------------------------------------------------------- the folder


def build_onnx_test_model(
    size: TestModelSize,
    out: Path,
    seed: int = 0,
    weights: Mapping[str, np.ndarray] | None = None,
    fp16: bool = True,
    family: str = "openclip",
) -> Path:
    """Write a random-weight CLIP of `family` into `out` in Immich's ONNX layout and return `out`.

    The openclip folder is the one `testmodel.make_test_model` writes (marker, config, tokenizer,
    `visual/` and `textual/` models, `visual/model_fp16.onnx` with `fp16`), minus the torch state
    dict. The other families get their own config, preprocessing, tokenizer files and textual graph
    inputs (see `textual_graph` and `testmodel_tokenizers`) around the same ViT image tower.
    `weights` (OpenCLIP state-dict names → arrays, see `weight_shapes`) replaces the random draw.
    """
    out = Path(out)
    check_size(size)
    check_family(family)
    visual_dir, textual_dir = start_model_folder(out, size, seed, builder="onnx", family=family)
    vocab_size, pad_id = write_family_tokenizer(textual_dir, TOKENIZER_VOCAB_SIZE[size], family)
    cfg = config_for(size, vocab_size, family)
    write_model_config(out, size, cfg, family)
    params = random_weights(cfg, seed) if weights is None else _checked_weights(cfg, weights)
    onnx.save(visual_graph(cfg, params), str(visual_dir / "model.onnx"))
    if fp16:
        onnx.save(visual_graph(cfg, params, fp16=True), str(visual_dir / "model_fp16.onnx"))
    onnx.save(textual_graph(cfg, params, family, pad_id), str(textual_dir / "model.onnx"))
    return out
