"""OpenAI-compatible ``POST /v1/audio/transcriptions``: a whole file in, one transcript out.

Clients written for OpenAI's API (its SDKs, ``curl -F file=@clip.mp3``) work
unchanged against this server. Differences, by design:

- ``model`` is accepted with any value (and may be left out): the server has
  one loaded model, the one ``woasr serve --model`` chose, and always uses it.
- ``temperature`` is accepted (a number in [0, 1]) but decoding is
  deterministic: temperature 0, no fallback, the server's beam size.
- ``timestamp_granularities[]`` only shapes ``verbose_json``; other formats ignore it.
- Other OpenAI fields (``stream``, ``include[]``, ``chunking_strategy``) are ignored.

The file is decoded by PyAV (wav, flac, mp3, ogg/opus, webm, m4a, ...) off the
event loop and transcribed offline (the full 30 s encoder window, no streaming
tricks) on the engine's worker pool, the one streaming sessions use, so REST
requests queue with live sessions rather than compete with them for cores.
Live sessions keep priority there: a waiting streaming update goes before a
waiting file. A 25 MB Opus file holds hours of speech, so the decoded audio is
capped (``--rest-max-seconds``, 413 past it) and decoding stops at the cap;
from admission to answer a request counts like a session for admission.

Errors use OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect
from starlette.types import Message

from woasr.asr.loaded import LoadedASR
from woasr.core.audio import SAMPLE_RATE
from woasr.core.language import UnsupportedLanguage, resolve_language
from woasr.core.records import Transcription
from woasr.protocol.openai_transcriptions import MEDIA_TYPES, RESPONSE_FORMATS, TIMESTAMP_GRANULARITIES, render
from woasr.server.service import StreamingService

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 25 * 1024 * 1024
"""OpenAI's upload limit; a larger file gets 413."""
FORM_OVERHEAD_BYTES = 1024 * 1024
"""Room for the multipart envelope and the text fields on top of the file."""
DRAIN_BYTES = 64 * 1024 * 1024
"""How much of a refused body is still read (and dropped) before answering: a client that
writes its whole body before reading may otherwise see a broken pipe instead of the answer."""
RETRY_AFTER_S = 1
HEADER_SLACK = 1.1
"""A container's declared duration may overstate (an MP3's is estimated from its first frames): it
refuses a file before decoding only when over the cap by more than this factor; decoding decides the rest."""
DECODE_GROUP_SAMPLES = 160_000
"""Source samples resampled at once (3.3 s at 48 kHz): decoding stops at most this far past the cap."""


class TranscriptionError(Exception):
    """A request the endpoint refuses, with what OpenAI's error object needs."""

    def __init__(
        self, status: int, message: str, param: str | None = None, code: str | None = None,
        kind: str = "invalid_request_error", headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind
        self.headers = headers

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


class _BodyTooLarge(Exception):
    """Raised from inside the form parser once the body passes the limit."""


class _BodyReader:
    """The request's ``receive``, counting body bytes and stopping past a limit.

    Counting while the multipart parser streams (it spools files to disk)
    bounds both memory and disk, also for chunked uploads that declare no length.
    """

    def __init__(self, receive: Callable[[], Awaitable[Message]], limit: int) -> None:
        self._receive = receive
        self.limit = limit
        self.seen = 0
        self.finished = False

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            self.finished = not message.get("more_body", False)
            if self.seen > self.limit:
                raise _BodyTooLarge
        else:
            self.finished = True
        return message

    async def drain(self, budget: int = DRAIN_BYTES) -> None:
        """Read and drop the rest of the body, up to ``budget`` more bytes.

        Answering before the body is read leaves clients that write the whole
        body first with a broken pipe instead of the answer; past the budget,
        the connection just closes.
        """
        self.limit = self.seen + budget
        try:
            while not self.finished:
                await self.receive()
        except _BodyTooLarge:
            pass


def _too_large() -> TranscriptionError:
    return TranscriptionError(413, f"the file is larger than the {MAX_FILE_BYTES // (1024 * 1024)} MB limit",
                              "file", "file_too_large")


async def _read_form(request: Request, body: _BodyReader) -> FormData:
    """The multipart form, refusing bodies over the limit before they are stored."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > body.limit:
        if int(declared) <= body.limit + DRAIN_BYTES:
            await body.drain()
        raise _too_large()
    try:
        return await Request(request.scope, body.receive).form(max_files=4, max_fields=64)
    except _BodyTooLarge:
        await body.drain()
        raise _too_large() from None
    except ClientDisconnect:
        raise TranscriptionError(400, "the client disconnected during the upload", None,
                                 "client_disconnected") from None
    except (HTTPException, MultiPartException) as exc:
        await body.drain()
        message = getattr(exc, "detail", None) or getattr(exc, "message", str(exc))
        raise TranscriptionError(400, f"malformed multipart body: {message}", None, "invalid_multipart") from exc


def _text_field(form: FormData, name: str) -> str | None:
    """A text field, None when absent or blank (clients often send empty optional fields)."""
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise TranscriptionError(400, f"'{name}' must be a text field, not a file", name, "invalid_value")
    return value.strip() or None


def _granularities(form: FormData) -> tuple[str, ...]:
    """``timestamp_granularities[]`` (OpenAI's spelling) or ``timestamp_granularities``, validated."""
    values: list[str] = []
    for name in ("timestamp_granularities[]", "timestamp_granularities"):
        for value in form.getlist(name):
            if not isinstance(value, str):
                raise TranscriptionError(400, f"'{name}' must be text", "timestamp_granularities[]", "invalid_value")
            values += [v.strip() for v in value.split(",") if v.strip()]
    for value in values:
        if value not in TIMESTAMP_GRANULARITIES:
            raise TranscriptionError(
                400, f"unknown timestamp granularity {value!r}; expected one of: {', '.join(TIMESTAMP_GRANULARITIES)}",
                "timestamp_granularities[]", "invalid_value",
            )
    return tuple(dict.fromkeys(values))


def _temperature(form: FormData) -> float:
    raw = _text_field(form, "temperature")
    if raw is None:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise TranscriptionError(400, f"temperature must be a number between 0 and 1, got {raw!r}",
                                 "temperature", "invalid_value")
    return value


def _upload(form: FormData) -> UploadFile:
    file = form.get("file")
    if file is None:
        raise TranscriptionError(400, "a 'file' part with the audio is required", "file", "missing_required_parameter")
    if not isinstance(file, UploadFile):
        raise TranscriptionError(400, "'file' must be a file upload (multipart/form-data with a filename)",
                                 "file", "invalid_value")
    if file.size is not None and file.size > MAX_FILE_BYTES:
        raise _too_large()
    return file


class _AudioTooLong(Exception):
    """The upload holds more audio than the cap: its container says so, or decoding got past it."""

    def __init__(self, seconds: float, declared: bool) -> None:
        super().__init__(seconds)
        self.seconds = seconds
        self.declared = declared


def _declared_seconds(container: av.container.InputContainer, stream: av.AudioStream) -> float | None:
    """The duration the container's header states (it may be wrong), or None when it states none."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _frame_groups(container: av.container.InputContainer, stream: av.AudioStream) -> Iterator[av.AudioFrame]:
    """The stream's frames, joined into groups of about ``DECODE_GROUP_SAMPLES`` (resampling
    frame by frame is slow); decoding ends at corrupt data, as faster-whisper's ``decode_audio``."""
    fifo = av.AudioFifo()
    frames = container.decode(stream)
    while True:
        try:
            frame = next(frames)
        except (StopIteration, av.error.InvalidDataError):
            break
        frame.pts = None  # the FIFO checks timestamps; a file's may jump
        fifo.write(frame)
        if fifo.samples >= DECODE_GROUP_SAMPLES:
            yield fifo.read()
    if fifo.samples:
        yield fifo.read()


def _decode(upload: UploadFile, max_seconds: float) -> np.ndarray:
    """The upload as 16 kHz mono float32, refused once it holds more than ``max_seconds`` (0: no cap).

    Blocking (PyAV decodes and resamples). A file whose header declares far more
    than the cap is refused before decoding; any other one stops decoding as soon
    as its samples pass the cap (headers lie), so memory stays within the cap
    (int16 while decoding, then float32), however long the file.
    """
    limit = round(max_seconds * SAMPLE_RATE) if max_seconds > 0 else None
    upload.file.seek(0)
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    chunks: list[np.ndarray] = []
    samples = 0
    try:
        with av.open(upload.file, mode="r", metadata_errors="ignore") as container:
            stream = container.streams.audio[0]  # IndexError (no audio stream): an undecodable file
            declared = _declared_seconds(container, stream)
            if limit is not None and declared is not None and declared > max_seconds * HEADER_SLACK:
                raise _AudioTooLong(declared, declared=True)
            for group in itertools.chain(_frame_groups(container, stream), [None]):  # None flushes
                for frame in resampler.resample(group):
                    chunk = frame.to_ndarray().reshape(-1)
                    samples += len(chunk)
                    if limit is not None and samples > limit:
                        raise _AudioTooLong(samples / SAMPLE_RATE, declared=False)
                    chunks.append(chunk)
    finally:
        del resampler
        gc.collect()  # as faster-whisper does: some resampler objects are only freed by a collection
    if not chunks:
        return np.zeros(0, np.float32)
    return np.concatenate(chunks).astype(np.float32) / 32768.0


def _too_long(error: _AudioTooLong, max_seconds: float, filename: str | None) -> TranscriptionError:
    name = filename or "the file"
    found = (f"its header declares {error.seconds:.1f} s" if error.declared
             else f"decoding passed the limit at {error.seconds:.1f} s")
    return TranscriptionError(
        413, f"{name} holds more audio than this server's limit of {max_seconds:g} s per request "
        f"({found}); split it or send a shorter file", "file", "audio_too_long",
    )


async def _decode_upload(upload: UploadFile, max_seconds: float) -> np.ndarray:
    try:
        audio = await asyncio.to_thread(_decode, upload, max_seconds)
    except _AudioTooLong as exc:
        raise _too_long(exc, max_seconds, upload.filename) from None
    except Exception as exc:  # noqa: BLE001 - PyAV raises many kinds for bad input
        raise TranscriptionError(
            400, f"could not decode {upload.filename or 'the file'} as audio ({type(exc).__name__}); "
            "send wav, flac, mp3, ogg, webm, m4a or another format FFmpeg reads",
            "file", "invalid_file_format",
        ) from exc
    if len(audio) == 0:
        raise TranscriptionError(400, f"{upload.filename or 'the file'} holds no audio samples",
                                 "file", "invalid_file_format")
    return audio


def _response(response_format: str, body: dict[str, Any] | str) -> Response:
    if isinstance(body, dict):
        return JSONResponse(body)
    return PlainTextResponse(body, media_type=MEDIA_TYPES[response_format])


_FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {"type": "string", "format": "binary",
                 "description": f"The audio file, at most {MAX_FILE_BYTES // (1024 * 1024)} MB and the "
                                "server's --rest-max-seconds of audio (default 30 min), in any format "
                                "FFmpeg decodes (wav, flac, mp3, ogg, webm, m4a, ...)."},
        "model": {"type": "string", "description": "Accepted for compatibility and ignored: "
                                                   "the server's loaded model is always used."},
        "language": {"type": "string", "description": "ISO-639-1 code of the speech; must be one the "
                                                      "loaded model supports. Default: the server's language "
                                                      "or detection."},
        "prompt": {"type": "string", "description": "Text to condition the decoder (names, spelling, style)."},
        "response_format": {"type": "string", "enum": list(RESPONSE_FORMATS), "default": "json"},
        "temperature": {"type": "number", "minimum": 0, "maximum": 1, "default": 0,
                        "description": "Accepted for compatibility; decoding is deterministic (temperature 0)."},
        "timestamp_granularities[]": {
            "type": "array", "items": {"type": "string", "enum": list(TIMESTAMP_GRANULARITIES)},
            "description": "verbose_json only: 'word' adds a words list; segments come unless only 'word' is asked.",
        },
    },
}


@dataclass(frozen=True, slots=True)
class _Form:
    """The request's form fields, validated; what the rest of the request needs from it."""

    response_format: str
    upload: UploadFile
    language: str | None
    granularities: tuple[str, ...]
    prompt: str


def _checked_language(value: str | None, asr: LoadedASR) -> str | None:
    """The requested language by the one language rule of every transport; None keeps the server's default.

    Refused unless the loaded model supports it, rather than silently decoding another language.
    """
    if value is None:
        return None
    try:
        return resolve_language(value, asr.supported_languages)
    except UnsupportedLanguage as exc:
        raise TranscriptionError(400, f"{exc} (loaded model {asr.choice.name})", "language",
                                 "unsupported_language") from exc


def _parse_form(form: FormData, response_format: str, asr: LoadedASR) -> _Form:
    """The form's fields, validated in a fixed order, so the first bad field is the one reported.

    ``response_format`` is read by the caller, so its refusal log line can name it.
    """
    if response_format not in RESPONSE_FORMATS:
        raise TranscriptionError(
            400, f"unknown response_format {response_format!r}; expected one of: {', '.join(RESPONSE_FORMATS)}",
            "response_format", "invalid_value",
        )
    upload = _upload(form)
    language = _checked_language(_text_field(form, "language"), asr)
    granularities = _granularities(form)
    _temperature(form)  # validated for OpenAI compatibility; decoding stays deterministic
    _text_field(form, "model")  # only checked to be text: the loaded model is always used
    prompt = _text_field(form, "prompt") or ""
    return _Form(response_format, upload, language, granularities, prompt)


async def _check_admission(service: StreamingService, body: _BodyReader) -> None:
    """Refuse with 503 and Retry-After while the model loads or the server is draining or full.

    Checked before the form is parsed, so a server that cannot serve stores no upload;
    the body is still drained so the client reads the answer, not a broken pipe. Admitting
    awaits nothing, so the caller counts the job (``admission.job()``) before anyone else is checked.
    """
    if not service.ready:
        await body.drain()
        raise TranscriptionError(503, "the model is still loading; retry shortly", None, "model_not_ready",
                                 kind="server_error", headers={"Retry-After": str(RETRY_AFTER_S)})
    if refusal := service.refusal("http"):
        # At capacity a whole file would delay every live stream: refuse it the same way.
        await body.drain()
        raise TranscriptionError(503, refusal.message, None, refusal.code, kind="server_error",
                                 headers={"Retry-After": str(RETRY_AFTER_S)})


async def _run_model(
    service: StreamingService, asr: LoadedASR, audio: np.ndarray, fields: _Form
) -> tuple[Transcription, float]:
    """The transcription and the model's compute seconds.

    Runs on the engine's worker pool, so REST requests queue with live sessions
    instead of competing with them for cores; any model failure becomes a 500.
    """
    offline = asr.offline()

    def job() -> tuple[Transcription, float]:
        """Runs on a model worker; times the model alone, not the wait for a free worker."""
        start = time.perf_counter()
        return offline.transcribe(audio, fields.prompt, fields.language), time.perf_counter() - start

    try:
        return await service.engine.run(job)
    except Exception as exc:  # noqa: BLE001 - report any model failure as a server error
        log.exception("transcription failed")
        raise TranscriptionError(500, f"transcription failed ({type(exc).__name__})", None,
                                 "transcription_failed", kind="server_error") from exc


def _render_and_log(
    fields: _Form, transcription: Transcription, duration: float, asr: LoadedASR, *,
    upload_s: float, decode_s: float, compute_s: float, queued_s: float,
) -> Response:
    """The response in the asked format, plus one log line with where the request's time went."""
    transcription = transcription.clipped(duration)
    detected = transcription.language or fields.language or asr.language
    rendered = render(fields.response_format, transcription, duration, detected, fields.granularities)
    log.info(
        "transcription %s: %.2f s of audio in %.2f s compute (%.2f s queued, %.2f s upload, "
        "%.2f s decode; %s, %d bytes, language %s, %d segments)",
        fields.response_format, duration, compute_s, queued_s, upload_s, decode_s,
        fields.upload.filename or "-", fields.upload.size or 0, detected or "auto", len(transcription.segments),
    )
    return _response(fields.response_format, rendered)


@dataclass(slots=True)
class _Progress:
    """What a request has read so far: for its refusal log line, and to close its upload."""

    response_format: str = "?"
    form: FormData | None = None


async def _transcribe(
    service: StreamingService, request: Request, body: _BodyReader, progress: _Progress, began: float
) -> Response:
    """An admitted request: read the form, decode within the cap, run the model, render."""
    asr = service.asr
    assert asr is not None
    progress.form = await _read_form(request, body)
    progress.response_format = _text_field(progress.form, "response_format") or "json"
    fields = _parse_form(progress.form, progress.response_format, asr)
    received = time.perf_counter()
    audio = await _decode_upload(fields.upload, service.config.rest_max_seconds)
    decoded = time.perf_counter()
    transcription, compute_s = await _run_model(service, asr, audio, fields)
    queued_s = time.perf_counter() - decoded - compute_s
    return _render_and_log(fields, transcription, len(audio) / SAMPLE_RATE, asr, upload_s=received - began,
                           decode_s=decoded - received, compute_s=compute_s, queued_s=queued_s)


def transcription_router(service: StreamingService) -> APIRouter:
    """The REST transcription endpoint over ``service``'s model and engine."""
    router = APIRouter()

    @router.post(
        "/v1/audio/transcriptions",
        summary="Transcribe an audio file (OpenAI-compatible)",
        openapi_extra={"requestBody": {"required": True,
                                       "content": {"multipart/form-data": {"schema": _FORM_SCHEMA}}}},
        responses={400: {"description": "Invalid request (OpenAI error object)"},
                   413: {"description": "File over 25 MB, or audio longer than the server's cap "
                                        "(--rest-max-seconds)"},
                   503: {"description": "Model still loading; see Retry-After"}},
    )
    async def create_transcription(request: Request) -> Response:
        """Transcribe the uploaded ``file`` with the server's model.

        Form fields follow OpenAI's API: ``file`` (required), ``model`` (ignored:
        the loaded model is used), ``language``, ``prompt``, ``response_format``
        (``json`` default, ``text``, ``verbose_json``, ``srt``, ``vtt``),
        ``temperature`` (accepted; decoding is deterministic) and
        ``timestamp_granularities[]`` (``word``, ``segment``; for ``verbose_json``).
        """
        began = time.perf_counter()
        progress = _Progress()
        body = _BodyReader(request.receive, MAX_FILE_BYTES + FORM_OVERHEAD_BYTES)
        try:
            await _check_admission(service, body)
            # Counted like a session from admission to answer (upload, decode, queue, model):
            # streaming sessions and other uploads are refused at capacity while it lasts.
            with service.engine.admission.job():
                return await _transcribe(service, request, body, progress, began)
        except TranscriptionError as error:
            log.info("transcription %s refused: %d %s (param %s): %s", progress.response_format, error.status,
                     error.code, error.param, error.message)
            return error.response()
        finally:
            if progress.form is not None:
                await progress.form.close()

    return router
