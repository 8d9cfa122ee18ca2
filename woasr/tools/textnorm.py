"""Text normalisation and error counting for WER/CER (see docs/eval.md).

Reference and hypothesis go through the same steps, those of
``../shared/audio/README.md``: NFKC, lower case, ``[...]`` tags removed,
digits spelled out (four-digit years read as years), ``%``/``×``/``=`` as
words, (English) contractions expanded ("I'm" = "I am"), mr/mrs/dr and gonna/wanna/gotta
expanded and fillers dropped, punctuation removed. Chinese,
Japanese and Korean are scored per character (CER), Chinese after converting
traditional to simplified characters.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import jiwer
from num2words import num2words

CHARACTER_LANGUAGES = ("zh", "ja", "ko")
FILLERS = frozenset({"uh", "um", "umm", "hmm", "hm", "mm", "er", "erm", "ah", "eh"})
ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "dr": "doctor"}
SPOKEN_FORMS = {"gonna": "going to", "wanna": "want to", "gotta": "got to", "ok": "okay"}
"""Informal spellings written either way by Whisper and by transcribers."""
CONTRACTIONS = (
    (r"\bwon't\b", "will not"), (r"\bcan't\b", "can not"), (r"\bshan't\b", "shall not"),
    (r"n't\b", " not"), (r"'m\b", " am"), (r"'re\b", " are"), (r"'ll\b", " will"), (r"'ve\b", " have"),
    (r"'d\b", " would"), (r"'s\b", "s"),
)
"""English contractions expanded, so that "I'm" and "I am" are the same words (Whisper writes
both, for the same audio, depending on its context); "'s" (is, has or possessive) is only
joined to its word."""
SYMBOLS = {"%": " percent ", "×": " times ", "=": " equals "}
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def _spell_number(match: re.Match[str], language: str) -> str:
    raw = match.group(0)
    digits = raw.replace(",", "") if language == "en" else raw
    try:
        if digits.isdigit() and len(digits) == 4 and language == "en" and 1100 <= int(digits) <= 2099:
            return f" {num2words(int(digits), to='year', lang='en')} "
        value: float | int = float(digits.replace(",", ".")) if not digits.isdigit() else int(digits)
        return f" {num2words(value, lang=language)} "
    except (NotImplementedError, ValueError, OverflowError):
        fallback = int(re.sub(r"\D", "", raw))
        return f" {num2words(fallback, lang='en')} "


def _to_simplified(text: str) -> str:
    try:
        import opencc  # optional: the "eval" extra
    except ImportError:
        return text
    return opencc.OpenCC("t2s").convert(text)


def normalize_text(text: str, language: str = "en") -> str:
    """Text reduced to comparable tokens separated by single spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"\[[^\]]*\]", " ", text)
    if language == "en":
        text = text.replace("\u2019", "'")
        for pattern, expansion in CONTRACTIONS:
            text = re.sub(pattern, expansion, text)
    for symbol, word in SYMBOLS.items():
        text = text.replace(symbol, word)
    text = _NUMBER.sub(lambda m: _spell_number(m, language), text)
    text = "".join(
        " " if unicodedata.category(ch).startswith(("P", "S")) else ch for ch in text
    )
    if language in CHARACTER_LANGUAGES:
        if language == "zh":
            text = _to_simplified(text)
        return " ".join(ch for ch in text if not ch.isspace())
    if language != "en":
        return " ".join(text.split())
    words = (SPOKEN_FORMS.get(w, ABBREVIATIONS.get(w, w)) for w in text.split())
    return " ".join(w for w in words if w not in FILLERS)


@dataclass(frozen=True, slots=True)
class ErrorCount:
    """Word (or character) edit counts; pooled rates add counts, not rates."""

    errors: int = 0
    reference_tokens: int = 0

    def __add__(self, other: ErrorCount) -> ErrorCount:
        return ErrorCount(self.errors + other.errors, self.reference_tokens + other.reference_tokens)

    @property
    def rate(self) -> float:
        return self.errors / self.reference_tokens if self.reference_tokens else 0.0


def count_errors(reference: str, hypothesis: str, language: str = "en") -> ErrorCount:
    """Edit distance between normalised texts, in tokens (characters for zh/ja/ko)."""
    ref = normalize_text(reference, language)
    hyp = normalize_text(hypothesis, language)
    if not ref:
        return ErrorCount(len(hyp.split()), 0)
    out = jiwer.process_words(ref, hyp or "")
    return ErrorCount(out.substitutions + out.deletions + out.insertions, len(ref.split()))
