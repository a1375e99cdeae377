"""The language of a search text, as NLLB-CLIP is told it: a FLORES-200 code such as `deu_Latn`.

Clients send what they know: an ISO 639-1 code (`de`), a locale (`de-DE`, `pt_BR`, `zh-Hant`) or
the FLORES-200 code itself. `flores_code` maps the common languages; anything it does not know is
`None`, and the tokenizer then falls back to English (see `TextTokenizer`).
"""

from __future__ import annotations

import re

DEFAULT_FLORES_CODE = "eng_Latn"

# FLORES-200 codes have a language (ISO 639-3) and a script (ISO 15924): `eng_Latn`, `zho_Hant`.
FLORES_CODE = re.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$")

# ISO 639-1 (and a few locales whose script or standard differs) → FLORES-200. Where FLORES has
# several varieties of one language, the standard written one: Modern Standard Arabic, Western
# Persian, Standard Latvian and Malay, Bokmål for plain Norwegian, Simplified Chinese for plain `zh`.
ISO_TO_FLORES: dict[str, str] = {
    "af": "afr_Latn",
    "am": "amh_Ethi",
    "ar": "arb_Arab",
    "az": "azj_Latn",
    "be": "bel_Cyrl",
    "bg": "bul_Cyrl",
    "bn": "ben_Beng",
    "bs": "bos_Latn",
    "ca": "cat_Latn",
    "cs": "ces_Latn",
    "cy": "cym_Latn",
    "da": "dan_Latn",
    "de": "deu_Latn",
    "el": "ell_Grek",
    "en": "eng_Latn",
    "eo": "epo_Latn",
    "es": "spa_Latn",
    "et": "est_Latn",
    "eu": "eus_Latn",
    "fa": "pes_Arab",
    "fi": "fin_Latn",
    "fr": "fra_Latn",
    "ga": "gle_Latn",
    "gl": "glg_Latn",
    "gu": "guj_Gujr",
    "he": "heb_Hebr",
    "hi": "hin_Deva",
    "hr": "hrv_Latn",
    "hu": "hun_Latn",
    "hy": "hye_Armn",
    "id": "ind_Latn",
    "is": "isl_Latn",
    "it": "ita_Latn",
    "ja": "jpn_Jpan",
    "ka": "kat_Geor",
    "kk": "kaz_Cyrl",
    "km": "khm_Khmr",
    "kn": "kan_Knda",
    "ko": "kor_Hang",
    "lb": "ltz_Latn",
    "lt": "lit_Latn",
    "lv": "lvs_Latn",
    "mk": "mkd_Cyrl",
    "ml": "mal_Mlym",
    "mn": "khk_Cyrl",
    "mr": "mar_Deva",
    "ms": "zsm_Latn",
    "mt": "mlt_Latn",
    "my": "mya_Mymr",
    "nb": "nob_Latn",
    "ne": "npi_Deva",
    "nl": "nld_Latn",
    "nn": "nno_Latn",
    "no": "nob_Latn",
    "pa": "pan_Guru",
    "pl": "pol_Latn",
    "pt": "por_Latn",
    "ro": "ron_Latn",
    "ru": "rus_Cyrl",
    "si": "sin_Sinh",
    "sk": "slk_Latn",
    "sl": "slv_Latn",
    "sq": "als_Latn",
    "sr": "srp_Cyrl",
    "sv": "swe_Latn",
    "sw": "swh_Latn",
    "ta": "tam_Taml",
    "te": "tel_Telu",
    "th": "tha_Thai",
    "tl": "tgl_Latn",
    "tr": "tur_Latn",
    "uk": "ukr_Cyrl",
    "ur": "urd_Arab",
    "uz": "uzn_Latn",
    "vi": "vie_Latn",
    "zh": "zho_Hans",
    "zu": "zul_Latn",
    # Locales whose script is not the language's default one.
    "zh-hant": "zho_Hant",
    "zh-tw": "zho_Hant",
    "zh-hk": "zho_Hant",
    "zh-mo": "zho_Hant",
}


def flores_code(language: str) -> str | None:
    """`de`, `de-DE`, `de_DE`, `DE` or `deu_Latn` → `deu_Latn`; None for a language not in the table.

    A full locale is looked up first (`zh-TW` → Traditional Chinese), then its language alone
    (`de-AT` → German). A FLORES-200 code is passed through as given.
    """
    language = language.strip()
    if FLORES_CODE.match(language):
        return language
    tag = language.replace("_", "-").lower()
    return ISO_TO_FLORES.get(tag) or ISO_TO_FLORES.get(tag.split("-", 1)[0])
