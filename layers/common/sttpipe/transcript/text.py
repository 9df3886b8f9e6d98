"""Text helpers: Whisper's known hallucinations, word normalisation and readable cue splitting."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from sttpipe.transcript.timing import Timeline, place

# Lines Whisper is known to invent on silence or noise (from subtitled training data). Each is a
# regular expression matched against a whole sentence after `normalize()` (lower case, ё
# folded, punctuation as spaces). A sentence that really says one of these is lost too, so the
# list is short and specific; pass your own (or an empty one) to assemble() to change it.
DEFAULT_HALLUCINATIONS: tuple[str, ...] = (
    r"продолжение следует",
    r"субтитры( (сделал|сделала|создавал|создавала|подготовил|подготовила|подготовлены|by)\b.*)?",
    r"редактор субтитров\b.*",
    r".*\bdimatorzok\b.*",
    r"спасибо за просмотр",
    r"подписывайтесь на (наш |мой )?канал",
    r"thank(s| you)( so much)? for watching",
    r"subtitles by\b.*",
    r".*\bamara org\b.*",
    r"please subscribe( to (my|our|the) channel)?",
)

MAX_CUE_CHARS = 84
MAX_CUE_MS = 7000

_SENTENCE_BREAK = re.compile(r"(?<=[.!?…])\s+")
_CLAUSE_BREAK = re.compile(r"(?<=[,;:])\s+|\s+(?=[\u2014\u2013-]\s)")  # before a dash
_NOT_WORD = re.compile(r"[\W_]+")


def normalize(text: str) -> str:
    """Lower case, ё folded, every run of non-letters/digits as one space."""
    return _NOT_WORD.sub(" ", text.lower().replace("\u0451", "\u0435")).strip()


def sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE_BREAK.split(" ".join(text.split())) if s]


class HallucinationFilter:
    def __init__(self, patterns: Iterable[str] = DEFAULT_HALLUCINATIONS) -> None:
        self._patterns = [re.compile(p) for p in patterns]

    def is_hallucination(self, sentence: str) -> bool:
        norm = normalize(sentence)
        return bool(norm) and any(p.fullmatch(norm) for p in self._patterns)


def split_cues(
    text: str,
    speech: Timeline,
    *,
    max_chars: int = MAX_CUE_CHARS,
    max_ms: int = MAX_CUE_MS,
) -> list[tuple[int, int, str]]:
    """Cut a text spoken over `speech` into cues (start_ms, end_ms, text) of at most
    `max_chars` and `max_ms`.

    Cuts prefer sentence ends, then clause marks, then spaces. Each cue gets its share of the
    speech by characters, its edges moved to the pauses near them (sttpipe.transcript.timing);
    a single word too slow for `max_ms` keeps its start and is cut short.
    """
    texts = cue_texts(text, speech.total, max_chars=max_chars, max_ms=max_ms)
    lengths = [len(t) + 1 for t in texts[:-1]] + [len(t) for t in texts[-1:]]
    cues = []
    for (first, last), cue in zip(place(lengths, speech), texts, strict=True):
        start = speech.time(first, starting=True)
        cues.append((start, min(speech.time(last, starting=False), start + max_ms), cue))
    return cues


def cue_texts(
    text: str, speech_ms: int, *, max_chars: int = MAX_CUE_CHARS, max_ms: int = MAX_CUE_MS
) -> list[str]:
    """The texts of the cues a text spoken for `speech_ms` is cut into (see split_cues)."""
    text = " ".join(text.split())
    if not text:
        return []
    # The characters one cue can hold without outlasting max_ms at this text's pace.
    limit = max(1, min(max_chars, max_ms * len(text) // speech_ms)) if speech_ms else max_chars
    return _pack(_units(text, limit), limit)


def _units(text: str, limit: int) -> list[str]:
    """The largest pieces (sentences, else clauses, else words) that fit in `limit`."""
    units: list[str] = []
    for sentence in sentences(text):
        if len(sentence) <= limit:
            units.append(sentence)
            continue
        for clause in _CLAUSE_BREAK.split(sentence):
            units.extend([clause] if len(clause) <= limit else clause.split())
    return units


def _pack(units: Sequence[str], limit: int) -> list[str]:
    """Join consecutive units while they fit in `limit`; after a sentence's end, only another
    whole sentence may join, so that a cue never ends in the middle of the next sentence."""
    pieces: list[str] = []
    for unit in units:
        fits = bool(pieces) and len(pieces[-1]) + 1 + len(unit) <= limit
        if fits and (not _ends_sentence(pieces[-1]) or _ends_sentence(unit)):
            pieces[-1] = f"{pieces[-1]} {unit}"
        else:
            pieces.append(unit)
    return pieces


def _ends_sentence(text: str) -> bool:
    return text.endswith((".", "!", "?", "…"))
