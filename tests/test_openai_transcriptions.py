"""The OpenAI response formats on hand-made transcriptions (no model, no server)."""

from __future__ import annotations

import json
import re

import pytest

from woasr.core.records import Segment, Transcription, Word
from woasr.protocol.openai_transcriptions import (
    MEDIA_TYPES,
    RESPONSE_FORMATS,
    as_srt,
    as_text,
    as_verbose_json,
    as_vtt,
    format_timestamp,
    render,
)


def words(start: float, *texts: str, step: float = 0.5) -> tuple[Word, ...]:
    return tuple(Word(start + i * step, start + i * step + 0.4, t, 0.9) for i, t in enumerate(texts))


FIRST = Segment(0.0, 1.4, words(0.0, " Hello", " there,", " world."), 0.01, -0.2, 1.3)
EMPTY = Segment(1.5, 1.6, ())  # no words: left out everywhere
LATE = Segment(3723.4567, 3725.0, words(3723.4567, " One", " hour", " later."), 0.02, -0.4, 1.1)
TRANSCRIPTION = Transcription((FIRST, EMPTY, LATE), "en")
TEXT = "Hello there, world. One hour later."


@pytest.mark.parametrize(("seconds", "srt", "vtt"), [
    (0.0, "00:00:00,000", "00:00:00.000"),
    (1.5, "00:00:01,500", "00:00:01.500"),
    (59.9996, "00:01:00,000", "00:01:00.000"),  # rounding carries into the minutes
    (3723.4567, "01:02:03,457", "01:02:03.457"),
    (100 * 3600 + 0.25, "100:00:00,250", "100:00:00.250"),
    (-0.3, "00:00:00,000", "00:00:00.000"),
])
def test_timestamps(seconds: float, srt: str, vtt: str) -> None:
    assert format_timestamp(seconds) == srt
    assert format_timestamp(seconds, ".") == vtt


def test_json_and_text() -> None:
    assert render("json", TRANSCRIPTION, 3725.0) == {"text": TEXT}
    assert as_text(TRANSCRIPTION) == TEXT + "\n"
    assert render("json", Transcription(()), 1.0) == {"text": ""}


def test_verbose_json_segments_by_default() -> None:
    body = as_verbose_json(TRANSCRIPTION, 3725.01234, "en")
    assert list(body) == ["task", "language", "duration", "text", "segments"]
    assert body["task"] == "transcribe" and body["language"] == "en" and body["duration"] == 3725.012
    assert body["text"] == TEXT
    first, late = body["segments"]
    assert first == {
        "id": 0, "seek": 0, "start": 0.0, "end": 1.4, "text": "Hello there, world.", "tokens": [],
        "temperature": 0.0, "avg_logprob": -0.2, "compression_ratio": 1.3, "no_speech_prob": 0.01,
    }
    assert late["id"] == 1 and late["start"] == 3723.457 and late["text"] == "One hour later."
    assert late["seek"] == 372346
    json.dumps(body)  # every value is plain JSON


def test_verbose_json_words_only_when_asked() -> None:
    assert "words" not in as_verbose_json(TRANSCRIPTION, 10.0, granularities=["segment"])
    only_words = as_verbose_json(TRANSCRIPTION, 10.0, granularities=["word"])
    assert "segments" not in only_words
    assert only_words["words"][:2] == [
        {"word": "Hello", "start": 0.0, "end": 0.4},
        {"word": "there,", "start": 0.5, "end": 0.9},
    ]
    assert [w["word"] for w in only_words["words"]] == TEXT.split()
    both = as_verbose_json(TRANSCRIPTION, 10.0, granularities=("word", "segment"))
    assert len(both["segments"]) == 2 and len(both["words"]) == 6


def test_verbose_json_language_falls_back_to_the_detected_one() -> None:
    assert as_verbose_json(Transcription((FIRST,), "fr"), 2.0)["language"] == "fr"
    assert as_verbose_json(Transcription((FIRST,), "fr"), 2.0, "de")["language"] == "de"


def test_srt_cues_numbered_from_one_without_empty_segments() -> None:
    assert as_srt(TRANSCRIPTION) == (
        "1\n00:00:00,000 --> 00:00:01,400\nHello there, world.\n"
        "\n"
        "2\n01:02:03,457 --> 01:02:05,000\nOne hour later.\n"
    )
    assert as_srt(Transcription(())) == ""


def test_vtt_header_cues_and_escaping() -> None:
    assert as_vtt(TRANSCRIPTION) == (
        "WEBVTT\n"
        "\n"
        "00:00:00.000 --> 00:00:01.400\nHello there, world.\n"
        "\n"
        "01:02:03.457 --> 01:02:05.000\nOne hour later.\n"
    )
    assert as_vtt(Transcription(())) == "WEBVTT\n"
    markup = Transcription((Segment(0.0, 1.0, words(0.0, " a<b", " &", " c>d")),))
    assert "a&lt;b &amp; c&gt;d" in as_vtt(markup)


def test_cue_text_stays_on_one_line() -> None:
    broken = Transcription((Segment(0.0, 1.0, (Word(0.0, 0.5, " first\n\nline"), Word(0.5, 1.0, "  second"))),))
    assert as_srt(broken).splitlines()[2] == "first line second"
    assert as_vtt(broken).splitlines()[3] == "first line second"


def test_chinese_words_join_without_spaces() -> None:
    chinese = Transcription((Segment(0.0, 1.0, (Word(0.0, 0.5, "你好"), Word(0.5, 1.0, "世界"))),), "zh")
    assert render("json", chinese, 1.0) == {"text": "你好世界"}
    assert as_srt(chinese).splitlines()[2] == "你好世界"


def test_every_format_renders_and_has_a_media_type() -> None:
    for name in RESPONSE_FORMATS:
        body = render(name, TRANSCRIPTION, 3725.0, "en", ["word"])
        assert isinstance(body, dict) == name.endswith("json")
        assert MEDIA_TYPES[name]
    with pytest.raises(ValueError, match="response_format"):
        render("xml", TRANSCRIPTION, 1.0)
    assert re.fullmatch(r"text/vtt.*", MEDIA_TYPES["vtt"])
