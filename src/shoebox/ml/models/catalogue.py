"""The models Shoebox knows by name: Immich's catalogue of ONNX CLIP exports (`immich-app/<name>`).

Every entry loads from the same folder layout (`config.json`, `visual/`, `textual/`); the family
says how its text is tokenized and fed (`shoebox.ml.models.clip`). The dimension is the
embedding's. `size_mb` is the approximate download (fp32 ONNX of both encoders, from the
models' parameter counts: 4 bytes a parameter), for choosing, not for checking a download.
`multilingual` says whether text queries in languages other than English are expected to work.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shoebox.ml.models.download import is_complete


@dataclass(frozen=True)
class CatalogueModel:
    name: str
    family: str  # "openclip", "siglip", "mclip" or "nllb"
    dim: int
    size_mb: int
    multilingual: bool = False

    def present_in(self, cache_dir: Path) -> bool:
        return is_complete(Path(cache_dir).expanduser() / self.name)


def _m(name: str, family: str, dim: int, size_mb: int, multilingual: bool = False) -> CatalogueModel:
    return CatalogueModel(name, family, dim, size_mb, multilingual)


CATALOGUE: tuple[CatalogueModel, ...] = (
    # OpenAI CLIP and OpenCLIP (LAION, DataComp, DFN, MetaCLIP): English text
    _m("RN50__openai", "openclip", 1024, 410),
    _m("RN50__yfcc15m", "openclip", 1024, 410),
    _m("RN50__cc12m", "openclip", 1024, 410),
    _m("RN101__openai", "openclip", 512, 480),
    _m("RN101__yfcc15m", "openclip", 512, 480),
    _m("RN50x4__openai", "openclip", 640, 710),
    _m("RN50x16__openai", "openclip", 768, 1160),
    _m("RN50x64__openai", "openclip", 1024, 2490),
    _m("ViT-B-32__openai", "openclip", 512, 605),
    _m("ViT-B-32__laion2b_e16", "openclip", 512, 605),
    _m("ViT-B-32__laion400m_e31", "openclip", 512, 605),
    _m("ViT-B-32__laion400m_e32", "openclip", 512, 605),
    _m("ViT-B-32__laion2b-s34b-b79k", "openclip", 512, 605),
    _m("ViT-B-16__openai", "openclip", 512, 598),
    _m("ViT-B-16__laion400m_e31", "openclip", 512, 598),
    _m("ViT-B-16__laion400m_e32", "openclip", 512, 598),
    _m("ViT-B-16-plus-240__laion400m_e31", "openclip", 640, 830),
    _m("ViT-B-16-plus-240__laion400m_e32", "openclip", 640, 830),
    _m("ViT-L-14__openai", "openclip", 768, 1710),
    _m("ViT-L-14__laion400m_e31", "openclip", 768, 1710),
    _m("ViT-L-14__laion400m_e32", "openclip", 768, 1710),
    _m("ViT-L-14__laion2b-s32b-b82k", "openclip", 768, 1710),
    _m("ViT-L-14-336__openai", "openclip", 768, 1710),
    _m("ViT-L-14-quickgelu__dfn2b", "openclip", 768, 1710),
    _m("ViT-H-14__laion2b-s32b-b79k", "openclip", 1024, 3940),
    _m("ViT-H-14-quickgelu__dfn5b", "openclip", 1024, 3940),
    _m("ViT-H-14-378-quickgelu__dfn5b", "openclip", 1024, 3950),
    _m("ViT-g-14__laion2b-s12b-b42k", "openclip", 1024, 5470),
    _m("ViT-B-16-quickgelu__metaclip_fullcc", "openclip", 512, 598),
    _m("ViT-L-14-quickgelu__metaclip_fullcc", "openclip", 768, 1710),
    _m("ViT-H-14-quickgelu__metaclip_fullcc", "openclip", 1024, 3940),
    # SigLIP (English; the i18n one multilingual) and SigLIP 2 (multilingual training data)
    _m("ViT-B-16-SigLIP__webli", "siglip", 768, 810),
    _m("ViT-B-16-SigLIP-256__webli", "siglip", 768, 810),
    _m("ViT-B-16-SigLIP-384__webli", "siglip", 768, 810),
    _m("ViT-B-16-SigLIP-512__webli", "siglip", 768, 810),
    _m("ViT-B-16-SigLIP-i18n-256__webli", "siglip", 768, 1480, multilingual=True),
    _m("ViT-L-16-SigLIP-256__webli", "siglip", 1024, 2610),
    _m("ViT-L-16-SigLIP-384__webli", "siglip", 1024, 2610),
    _m("ViT-SO400M-14-SigLIP-384__webli", "siglip", 1152, 3510),
    _m("ViT-B-32-SigLIP2-256__webli", "siglip", 768, 1500, multilingual=True),
    _m("ViT-B-16-SigLIP2__webli", "siglip", 768, 1500, multilingual=True),
    _m("ViT-L-16-SigLIP2-256__webli", "siglip", 1024, 3530, multilingual=True),
    _m("ViT-L-16-SigLIP2-384__webli", "siglip", 1024, 3530, multilingual=True),
    _m("ViT-L-16-SigLIP2-512__webli", "siglip", 1024, 3530, multilingual=True),
    _m("ViT-SO400M-14-SigLIP2__webli", "siglip", 1152, 4520, multilingual=True),
    _m("ViT-SO400M-14-SigLIP2-378__webli", "siglip", 1152, 4520, multilingual=True),
    _m("ViT-SO400M-16-SigLIP2-256__webli", "siglip", 1152, 4520, multilingual=True),
    _m("ViT-SO400M-16-SigLIP2-384__webli", "siglip", 1152, 4520, multilingual=True),
    _m("ViT-SO400M-16-SigLIP2-512__webli", "siglip", 1152, 4520, multilingual=True),
    _m("ViT-gopt-16-SigLIP2-256__webli", "siglip", 1536, 7440, multilingual=True),
    _m("ViT-gopt-16-SigLIP2-384__webli", "siglip", 1536, 7440, multilingual=True),
    # Multilingual text towers: M-CLIP (XLM-R / LaBSE distilled onto CLIP), OpenCLIP's XLM-R, NLLB-CLIP
    _m("XLM-Roberta-Large-Vit-B-32", "mclip", 512, 2600, multilingual=True),
    _m("XLM-Roberta-Large-Vit-B-16Plus", "mclip", 640, 2880, multilingual=True),
    _m("XLM-Roberta-Large-Vit-L-14", "mclip", 768, 3410, multilingual=True),
    _m("LABSE-Vit-L-14", "mclip", 768, 3010, multilingual=True),
    _m("XLM-Roberta-Base-ViT-B-32__laion5b_s13b_b90k", "openclip", 512, 1460, multilingual=True),
    _m("XLM-Roberta-Large-ViT-H-14__frozen_laion5b_s13b_b90k", "openclip", 1024, 4770, multilingual=True),
    _m("nllb-clip-base-siglip__v1", "nllb", 768, 2010, multilingual=True),
    _m("nllb-clip-base-siglip__mrl", "nllb", 768, 2010, multilingual=True),
    _m("nllb-clip-large-siglip__v1", "nllb", 1152, 4710, multilingual=True),
    _m("nllb-clip-large-siglip__mrl", "nllb", 1152, 4710, multilingual=True),
)

BY_NAME = {m.name: m for m in CATALOGUE}
# What the language hint suggests to someone whose queries are not in English: the best
# multilingual model that still runs on a small CPU first.
MULTILINGUAL_SUGGESTIONS = (
    "nllb-clip-base-siglip__v1",
    "XLM-Roberta-Large-Vit-B-32",
    "nllb-clip-large-siglip__v1",
)


def lookup(name: str) -> CatalogueModel | None:
    return BY_NAME.get(name)
