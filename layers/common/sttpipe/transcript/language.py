"""The language of a transcript's text, for pinning a job's language (the speech API answers
text only, never the language it detected).

py3langid: a naive Bayes classifier over byte n-grams, its model inside the wheel, limited here
to the languages Whisper transcribes so that a pinned code is always one the API accepts.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from py3langid.langid import LanguageIdentifier

# Whisper's languages (openai/whisper tokenizer.LANGUAGES), by ISO-639 code.
WHISPER_LANGUAGES = frozenset(
    {
        "af",
        "am",
        "ar",
        "as",
        "az",
        "ba",
        "be",
        "bg",
        "bn",
        "bo",
        "br",
        "bs",
        "ca",
        "cs",
        "cy",
        "da",
        "de",
        "el",
        "en",
        "es",
        "et",
        "eu",
        "fa",
        "fi",
        "fo",
        "fr",
        "gl",
        "gu",
        "ha",
        "haw",
        "he",
        "hi",
        "hr",
        "ht",
        "hu",
        "hy",
        "id",
        "is",
        "it",
        "ja",
        "jw",
        "ka",
        "kk",
        "km",
        "kn",
        "ko",
        "la",
        "lb",
        "ln",
        "lo",
        "lt",
        "lv",
        "mg",
        "mi",
        "mk",
        "ml",
        "mn",
        "mr",
        "ms",
        "mt",
        "my",
        "ne",
        "nl",
        "nn",
        "no",
        "oc",
        "pa",
        "pl",
        "ps",
        "pt",
        "ro",
        "ru",
        "sa",
        "sd",
        "si",
        "sk",
        "sl",
        "sn",
        "so",
        "sq",
        "sr",
        "su",
        "sv",
        "sw",
        "ta",
        "te",
        "tg",
        "th",
        "tk",
        "tl",
        "tr",
        "tt",
        "uk",
        "ur",
        "uz",
        "vi",
        "yi",
        "yo",
        "yue",
        "zh",
    }
)
# Below this many letters, or this probability, a guess is not worth pinning a job on: a
# greeting or a name says little about the language of an hour of speech.
MIN_LETTERS = 24
MIN_PROBABILITY = 0.6


@functools.cache
def _identifier() -> LanguageIdentifier:
    # Imported on first use: numpy and the model (~0.7 s, ~100 MB) only in a container that
    # detects a language, never on the cold start of every worker.
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    identifier.set_languages(sorted(WHISPER_LANGUAGES & set(identifier.labels)))
    return identifier


def language_of(text: str) -> str | None:
    """The ISO-639 code of the language `text` is written in, or None when unsure."""
    if sum(c.isalpha() for c in text) < MIN_LETTERS:
        return None
    language, probability = _identifier().classify(text)
    return str(language) if probability >= MIN_PROBABILITY else None
