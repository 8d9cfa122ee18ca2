"""A finished :class:`Transcription` in the response formats of OpenAI's transcription API.

Pure functions, no I/O: the REST transport (``POST /v1/audio/transcriptions``)
picks one by the request's ``response_format`` and only sends the result, so
the shapes can be tested without a model or a server.

- ``json``: ``{"text": ...}``
- ``text``: the text alone, one line
- ``verbose_json``: task, language, duration, text, ``segments`` (with
  Whisper's confidence figures) and, when word timestamps are asked for, ``words``
- ``srt``: numbered SubRip cues, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``
- ``vtt``: WebVTT, a ``WEBVTT`` header and ``HH:MM:SS.mmm`` cues

Segments whose words join to nothing are left out everywhere (they carry no
text and would make empty cues); the ``id`` of the remaining ones counts from 0
without gaps. Times are seconds rounded to the millisecond.
"""

from __future__ import annotations

import html
from typing import Any, Literal, get_args

from woasr.core.records import Segment, Transcription, join_words

ResponseFormat = Literal["json", "text", "verbose_json", "srt", "vtt"]
RESPONSE_FORMATS: tuple[str, ...] = get_args(ResponseFormat)

Granularity = Literal["word", "segment"]
TIMESTAMP_GRANULARITIES: tuple[str, ...] = get_args(Granularity)

MEDIA_TYPES: dict[str, str] = {
    "json": "application/json",
    "verbose_json": "application/json",
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}
"""Content type of each format (SubRip has no registered type; players and
browsers know ``application/x-subrip``)."""

DECODING_TEMPERATURE = 0.0
"""The backend decodes greedily/beam at temperature 0 with no fallback, whatever the request says."""


def format_timestamp(seconds: float, decimal_marker: str = ",") -> str:
    """``HH:MM:SS,mmm`` (SRT) or, with ``"."``, ``HH:MM:SS.mmm`` (VTT); hours grow past 99.

    Rounded to whole milliseconds before splitting, so 59.9996 s gives
    ``00:01:00,000`` and never ``00:00:60,000``. Negative times clamp to zero.
    """
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_marker}{millis:03d}"


def spoken_segments(transcription: Transcription) -> list[Segment]:
    """The segments that carry text, in order (the ones every format shows)."""
    return [s for s in transcription.segments if s.text]


def transcript_text(transcription: Transcription) -> str:
    """The whole transcript: every word joined with Whisper's own spacing."""
    return join_words(transcription.words)


def _seconds(value: float) -> float:
    return round(float(value), 3)


def _cue_text(text: str) -> str:
    """Cue text on one line: a blank line inside a cue would end it early."""
    return " ".join(text.split())


def as_json(transcription: Transcription) -> dict[str, Any]:
    """``json``: the text only, the API's default."""
    return {"text": transcript_text(transcription)}


def as_text(transcription: Transcription) -> str:
    """``text``: the transcript as a plain text line."""
    return transcript_text(transcription) + "\n"


def as_verbose_json(
    transcription: Transcription,
    duration: float,
    language: str | None = None,
    granularities: tuple[str, ...] | list[str] = (),
) -> dict[str, Any]:
    """``verbose_json``: text with timed segments and, when asked, timed words.

    ``segments`` come when ``granularities`` is empty or names ``segment``,
    ``words`` only when it names ``word`` (OpenAI's rule: word timestamps cost
    extra there, so they are opt-in). ``language`` defaults to the one the
    model reported. ``seek`` is the segment start in 10 ms frames and
    ``tokens`` is empty: the backend does not keep Whisper's token ids.
    """
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": language or transcription.language or "",
        "duration": _seconds(duration),
        "text": transcript_text(transcription),
    }
    if not granularities or "segment" in granularities:
        body["segments"] = [
            {
                "id": index,
                "seek": max(0, round(segment.start * 100)),
                "start": _seconds(segment.start),
                "end": _seconds(segment.end),
                "text": segment.text,
                "tokens": [],
                "temperature": DECODING_TEMPERATURE,
                "avg_logprob": float(segment.avg_logprob),
                "compression_ratio": float(segment.compression_ratio),
                "no_speech_prob": float(segment.no_speech_prob),
            }
            for index, segment in enumerate(spoken_segments(transcription))
        ]
    if "word" in granularities:
        body["words"] = [
            {"word": word.text.strip(), "start": _seconds(word.start), "end": _seconds(word.end)}
            for word in transcription.words
            if word.text.strip()
        ]
    return body


def as_srt(transcription: Transcription) -> str:
    """``srt``: one cue per segment, numbered from 1, separated by blank lines."""
    cues = [
        f"{number}\n{format_timestamp(s.start)} --> {format_timestamp(s.end)}\n{_cue_text(s.text)}\n"
        for number, s in enumerate(spoken_segments(transcription), start=1)
    ]
    return "\n".join(cues)


def as_vtt(transcription: Transcription) -> str:
    """``vtt``: the ``WEBVTT`` header, then one cue per segment.

    ``&``, ``<`` and ``>`` are escaped because WebVTT cue text is markup.
    """
    cues = [
        f"{format_timestamp(s.start, '.')} --> {format_timestamp(s.end, '.')}\n"
        f"{html.escape(_cue_text(s.text), quote=False)}\n"
        for s in spoken_segments(transcription)
    ]
    return "\n".join(["WEBVTT\n", *cues])


def render(
    response_format: str,
    transcription: Transcription,
    duration: float,
    language: str | None = None,
    granularities: tuple[str, ...] | list[str] = (),
) -> dict[str, Any] | str:
    """The response body of ``response_format``: a dict for the JSON formats, text otherwise.

    ``duration`` (seconds of audio) and ``granularities`` only matter to
    ``verbose_json``. Raises ``ValueError`` on an unknown format.
    """
    if response_format == "json":
        return as_json(transcription)
    if response_format == "text":
        return as_text(transcription)
    if response_format == "verbose_json":
        return as_verbose_json(transcription, duration, language, granularities)
    if response_format == "srt":
        return as_srt(transcription)
    if response_format == "vtt":
        return as_vtt(transcription)
    raise ValueError(f"unknown response_format {response_format!r} (known: {', '.join(RESPONSE_FORMATS)})")
