"""The language hint: which queries are clearly not English, and which models need the hint."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from language_queries import BORDERLINE, CLEARLY_FOREIGN, ENGLISH, FOREIGN_NAMES  # noqa: E402

from shoebox.ingest import language  # noqa: E402
from shoebox.ingest.language import (  # noqa: E402
    CODE,
    SUGGESTED_MODELS,
    detect_foreign,
    is_multilingual,
    query_language_warning,
)
from shoebox.ingest.routes.search import _language_warnings  # noqa: E402
from shoebox.protocol import ModelInfo  # noqa: E402

# Han characters alone are Chinese or Japanese; Cyrillic may be Russian or Ukrainian.
SAME = {"ja": {"ja", "zh"}, "zh": {"zh", "ja"}, "ru": {"ru", "uk"}}


def test_no_english_query_is_called_foreign():
    called = {q: detect_foreign(q) for q in ENGLISH}
    false_alarms = {q: d for q, d in called.items() if d is not None}
    assert false_alarms == {}, f"{len(false_alarms)}/{len(ENGLISH)} false alarms"


def test_clearly_foreign_queries_are_called_with_their_language():
    called = {q: (detect_foreign(q), lang) for q, lang in CLEARLY_FOREIGN}
    missed = [q for q, (d, _) in called.items() if d is None]
    wrong = {
        q: d.language for q, (d, lang) in called.items() if d and d.language not in SAME.get(lang, {lang})
    }
    assert len(missed) / len(CLEARLY_FOREIGN) <= 0.1, missed
    assert wrong == {}


def test_single_latin_words_are_never_called():
    for word in [*BORDERLINE, "Paris", "pizza", "sunset", "Sonnenuntergang"]:
        if " " not in word:
            assert detect_foreign(word) is None, word


def test_one_character_of_another_script_is_enough():
    assert detect_foreign("猫").language in {"zh", "ja"}
    assert detect_foreign("кот").language in {"ru", "uk"}
    assert detect_foreign("ねこ").language == "ja"


def test_digits_and_punctuation_alone_say_nothing():
    for text in ["2019", "IMG_1234", "!!!", "   ", "3.14"]:
        assert detect_foreign(text) is None


def test_english_words_around_a_foreign_name_stay_english():
    for text in ["Notre Dame at night", "Buenos Aires street", "croissant and coffee"]:
        assert detect_foreign(text) is None, text


def test_foreign_names_alone_are_rarely_called():
    # Measured, not zero: "Dia de los Muertos" is Spanish to any detector (see the README).
    called = [q for q in FOREIGN_NAMES if detect_foreign(q) is not None]
    assert len(called) / len(FOREIGN_NAMES) <= 0.35, called


def test_the_warning_names_the_language_and_the_multilingual_models():
    warning = query_language_warning("chien sur la plage", multilingual=False, model_name="ViT-B-32__openai")
    assert warning is not None
    assert warning.code == CODE == "W_QUERY_LANGUAGE"
    assert warning.language == "fr" and warning.confidence >= 0.9
    assert warning.suggested_models == list(SUGGESTED_MODELS)
    assert "French" in warning.message and "ViT-B-32__openai" in warning.message
    assert SUGGESTED_MODELS[0] in warning.message
    assert set(warning.as_dict()) == {"code", "message", "language", "confidence", "suggested_models"}


def test_a_multilingual_model_never_gets_the_warning():
    for query, _ in CLEARLY_FOREIGN:
        assert query_language_warning(query, multilingual=True) is None


def test_english_queries_get_no_warning():
    for query in ENGLISH:
        assert query_language_warning(query, multilingual=False) is None, query


@pytest.mark.parametrize(
    "name",
    [
        "nllb-clip-large-siglip__v1",
        "nllb-clip-base-siglip__mrl",
        "XLM-Roberta-Large-Vit-B-16Plus",
        "XLM-Roberta-Large-ViT-H-14__frozen_laion5b_s13b_b90k",
        "LABSE-Vit-L-14",
        "my-multilingual-clip",
        "xlm-clip-small",
        "ViT-SO400M-16-SigLIP2-384__webli",
        "ViT-L-16-SigLIP2-256__webli",
        "ViT-B-16-SigLIP2__webli",
        "ViT-B-16-SigLIP-i18n-256__webli",
        "nllb-clip-base-siglip__v1@0123abcd",
    ],
)
def test_multilingual_model_names(name):
    assert is_multilingual(name)


@pytest.mark.parametrize(
    "name",
    [
        "ViT-B-32__openai",
        "ViT-B-32__openai@0123abcd",
        "ViT-L-14__openai",
        "ViT-B-16-SigLIP__webli",
        "TEST-RANDOM-WEIGHTS:tiny-test-clip",
        "",
    ],
)
def test_english_only_model_names(name):
    assert not is_multilingual(name)


def test_the_capabilities_flag_wins_over_the_name():
    assert is_multilingual("ViT-B-32__openai", capabilities_flag=True)
    assert not is_multilingual("nllb-clip-base-siglip__v1", capabilities_flag=False)
    assert is_multilingual("nllb-clip-base-siglip__v1", capabilities_flag=None)


def test_the_suggested_models_are_multilingual_by_the_rule():
    assert all(is_multilingual(name) for name in SUGGESTED_MODELS)


def test_the_detector_loads_once_from_many_threads(monkeypatch):
    monkeypatch.setattr(language, "_identifier", None)
    loads = []
    from py3langid.langid import LanguageIdentifier

    original = LanguageIdentifier.from_model_file.__func__

    def counting(cls, *args, **kwargs):
        loads.append(1)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(LanguageIdentifier, "from_model_file", classmethod(counting))
    threads = [threading.Thread(target=detect_foreign, args=("chien sur la plage",)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1
    assert detect_foreign("chien sur la plage").language == "fr"


def test_without_the_package_only_other_scripts_are_called(monkeypatch):
    monkeypatch.setattr(language, "_identifier", None)
    monkeypatch.setattr(language, "_unavailable", True)
    assert detect_foreign("chien sur la plage") is None
    assert detect_foreign("собака на пляже").language == "ru"
    assert detect_foreign("浜辺の犬").language == "ja"


def _ctx(model_name: str, multilingual: bool | None, hosted: bool = True) -> SimpleNamespace:
    """A service context whose ML service hosts one model (or none) with this flag."""
    info = ModelInfo(
        model_name=model_name,
        model_id=f"{model_name}@0123abcd",
        multilingual=multilingual,
        embedding_dim=512,
        safe_clip_batch=8,
        device="cpu",
        dtype="fp32",
    )
    return SimpleNamespace(ml=SimpleNamespace(model_info=lambda model: info if hosted else None))


def test_the_search_routes_follow_the_ml_services_flag_then_the_name():
    texts = ["chien sur la plage", "Hund am Strand", "chat sur le lit", "sunset"]
    found = _language_warnings(_ctx("ViT-B-32__openai", None), texts, "ViT-B-32__openai@0123abcd")
    assert [(w.code, w.language, w.text) for w in found] == [
        (CODE, "fr", "chien sur la plage"),
        (CODE, "de", "Hund am Strand"),
    ]
    assert "the model ViT-B-32__openai understands" in found[0].message  # the name, not the id
    assert _language_warnings(_ctx("ViT-B-32__openai", True), texts, "ViT-B-32__openai@0123abcd") == []
    nllb = "nllb-clip-base-siglip__v1"
    assert _language_warnings(_ctx(nllb, None), texts, f"{nllb}@0123abcd") == []
    assert _language_warnings(_ctx(nllb, None, hosted=False), texts, f"{nllb}@0123abcd") == []
    assert len(_language_warnings(_ctx(nllb, False), texts, f"{nllb}@0123abcd")) == 2
    assert _language_warnings(_ctx(nllb, False), texts, "") == []  # no model known: nothing to say
