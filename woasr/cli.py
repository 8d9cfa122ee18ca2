"""The ``woasr`` command: one entry point, a subcommand per tool."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

from woasr.asr.loaded import BACKENDS, backend_key
from woasr.asr.models import ModelUnavailableError
from woasr.config import (DEFAULT_TCP_PORT, DEFAULT_WS_PORT, EnvValue, EnvValueError, UserInputError, default_host,
                          env, env_bool, env_int)
from woasr.core.guards import GuardSettings
from woasr.core.processor import DEFAULT_MIN_CHUNK_S, ProcessorSettings
from woasr.core.vad import VadSettings

if TYPE_CHECKING:
    from woasr.asr.loaded import DecodeSettings, LoadedASR
    from woasr.clients.display import TerminalDisplay
    from woasr.clients.reconnect import Transport
    from woasr.server.config import ServerConfig
    from woasr.server.frontends import Frontend
    from woasr.server.service import StreamingService

log = logging.getLogger("woasr")

T = TypeVar("T")


def checked(parse: Callable[[str], T], what: str, ok: Callable[[T], bool] = lambda _: True) -> Callable[[str], T]:
    """An option's ``type``: ``parse`` the text, then require ``ok``; a value that fails is "not ``what``".

    A flag's value fails as argparse's own errors do. An environment default
    (:class:`EnvValue`) raises :class:`EnvValueError` naming the variable: argparse
    checks no default against ``choices``, and its message would blame the flag.
    """

    def convert(value: str) -> T:
        try:
            parsed = parse(value)
            if ok(parsed):
                return parsed
        except ValueError:
            pass
        if isinstance(value, EnvValue):
            raise EnvValueError(f"{value.variable}={str(value)!r} is not {what}")
        raise argparse.ArgumentTypeError(f"{value!r} is not {what}")

    convert.__name__ = what
    return convert


def _is_language(code: str) -> bool:
    """'auto' or a code Whisper knows: faster-whisper itself checks only at the first transcription."""
    if code in ("auto", "en"):
        return True
    try:
        from faster_whisper.tokenizer import _LANGUAGE_CODES
    except ImportError:  # the list moved: the model will say
        return True
    return code in _LANGUAGE_CODES


positive_seconds = checked(float, "a number of seconds > 0", lambda v: math.isfinite(v) and v > 0)
seconds_or_zero = checked(float, "a number of seconds >= 0", lambda v: math.isfinite(v) and v >= 0)
at_least_one = checked(int, "a whole number >= 1", lambda v: v >= 1)
not_negative = checked(int, "a whole number >= 0", lambda v: v >= 0)
backend_name = checked(backend_key, f"one of: {', '.join(BACKENDS)}",
                       lambda v: v in BACKENDS)
engine_name = checked(lambda v: v.strip().lower(), "local or triton", lambda v: v in ("local", "triton"))
language_code = checked(lambda v: v.strip().lower(), "'auto' or a language code Whisper knows (en, de, fr, zh, ...)",
                        _is_language)


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """Options every command that loads a model shares."""
    group = parser.add_argument_group("model")
    group.add_argument("--model", default=env("STREAM_MODEL"),
                       help="tiny.en, base, a CTranslate2 folder or a hub name "
                            "(default: tiny.en for --lang en, else base)")
    group.add_argument("--lang", type=language_code, default=env("STREAM_LANG", "en"),
                       help="language code, or 'auto' to detect (env STREAM_LANG; default: en; "
                            "eval: each clip's manifest language)")
    group.add_argument("--backend", type=backend_name, default=env("STREAM_BACKEND", BACKENDS[0]), choices=BACKENDS,
                       help="env STREAM_BACKEND (default: faster-whisper)")
    group.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    group.add_argument("--compute-type", default="int8", help="CTranslate2 compute type (default: int8)")
    group.add_argument("--threads", type=not_negative, default=0,
                       help="CPU threads per model call (0: the cores shared out among the server's workers, "
                            "one per call on a CPU; simulate and eval use the same)")
    group.add_argument("--beam", type=int, default=5,
                       help="beam size (default: 5; 1 = greedy); with --greedy-first, the fallback's beam")
    group.add_argument("--incremental", action=argparse.BooleanOptionalAction, default=True,
                       help="decode a live buffer once, its committed words forced as the decoder's prefix "
                            "(default: on; off: faster-whisper decodes the whole buffer each update)")
    group.add_argument("--greedy-first", action=argparse.BooleanOptionalAction, default=False,
                       help="with --incremental: decode greedily, the beam search only when the greedy tail "
                            "is unsure (default: off; cheaper, about a WER point worse, docs/eval.md)")
    group.add_argument("--fallback-logprob", type=float, default=-0.5,
                       help="with --greedy-first: a greedy tail less probable than this per token is decoded "
                            "again with the beam (default: -0.5)")
    group.add_argument("--encoder-window", choices=["full", "auto"], default="auto",
                       help="full: pad to 30 s as faster-whisper does; auto: encode the buffer "
                            "+1 s, at least 10 s (default: auto, see docs/eval.md)")
    group.add_argument("--silence-pad", type=float, default=0.0,
                       help="seconds of silence appended to every buffer for the model (default: 0 = off)")
    group.add_argument("--redecode-tail", action="store_true",
                       help="decode an unfinished last segment of a buffer a second time, as faster-whisper "
                            "does (slower; default: keep it, one pass per update, see docs/eval.md)")
    group.add_argument("--task", choices=["transcribe", "translate"], default="transcribe")
    group.add_argument("--vad-filter", action="store_true", help="faster-whisper's Silero VAD filter")


def add_processor_options(parser: argparse.ArgumentParser) -> None:
    """Options of the streaming policy (ProcessorSettings)."""
    defaults = ProcessorSettings()
    group = parser.add_argument_group("streaming policy")
    group.add_argument("--min-chunk", type=positive_seconds, default=env("STREAM_MIN_CHUNK") or DEFAULT_MIN_CHUNK_S,
                       help=f"seconds of new audio per update (env STREAM_MIN_CHUNK; default: {DEFAULT_MIN_CHUNK_S})")
    group.add_argument("--agreement", type=at_least_one, default=defaults.agreement,
                       help=f"LocalAgreement-n: hypotheses that must agree (default: {defaults.agreement})")
    group.add_argument("--doubtful-below", type=float, default=defaults.doubtful_below,
                       help="an agreed word less probable than this waits for one more agreeing hypothesis "
                            f"(default: {defaults.doubtful_below}; 0 = off)")
    group.add_argument("--speech-guard", type=float, default=defaults.guards.min_speech_probability,
                       help="drop hypothesised words during which the voice-activity detector's speech "
                            "probability never reached this (words invented in pauses; default: "
                            f"{defaults.guards.min_speech_probability}, 0 = off)")
    group.add_argument("--silent-below", type=float, default=defaults.silent_below,
                       help="skip an update's model call when no word is pending and the voice-activity "
                            "detector's speech probability of the new audio stayed below this "
                            f"(default: {defaults.silent_below}; 0 = never skip)")
    group.add_argument("--pause-trim", type=float, default=defaults.pause_trim_s,
                       help="cut a buffer longer than this many seconds in the latest pause between committed "
                            "words (or after them at a skipped silent update) "
                            f"(default: {defaults.pause_trim_s}; 0 = off)")
    group.add_argument("--holdback", type=float, default=defaults.holdback_s,
                       help=f"agreed words ending this close to the buffer end wait (default: {defaults.holdback_s})")
    group.add_argument("--trim", type=float, default=defaults.trim_s,
                       help=f"cut the buffer at a committed segment end past this length (default: {defaults.trim_s})")
    group.add_argument("--max-buffer", type=float, default=defaults.max_buffer_s,
                       help=f"hard cap of the buffer in seconds (default: {defaults.max_buffer_s})")
    vad = VadSettings()
    group.add_argument("--vac", action=argparse.BooleanOptionalAction, default=env_bool("STREAM_VAC", False),
                       help="voice-activity control: silence is not sent to the model and an utterance is "
                            "finished when speech ends (env STREAM_VAC; default: off)")
    group.add_argument("--vad-threshold", type=float, default=vad.threshold,
                       help=f"speech probability that starts speech (default: {vad.threshold})")
    group.add_argument("--vad-min-silence", type=float, default=vad.min_silence_s,
                       help=f"seconds of silence that end an utterance (default: {vad.min_silence_s})")
    group.add_argument("--vad-pad", type=float, default=vad.speech_pad_s,
                       help=f"seconds of audio kept before and after speech (default: {vad.speech_pad_s})")


def vad_settings(args: argparse.Namespace, always: bool = False) -> VadSettings | None:
    """The voice-activity settings when ``--vac`` is on (or ``always``), else None."""
    if not (args.vac or always):
        return None
    try:
        return VadSettings(threshold=args.vad_threshold, min_silence_s=args.vad_min_silence, speech_pad_s=args.vad_pad)
    except ValueError as exc:  # e.g. --vad-threshold outside (0, 1): the user's to fix
        raise UserInputError(f"voice-activity options: {exc}") from exc


def processor_settings(args: argparse.Namespace) -> ProcessorSettings:
    return ProcessorSettings(
        trim_s=args.trim, max_buffer_s=args.max_buffer, holdback_s=args.holdback, agreement=args.agreement,
        doubtful_below=args.doubtful_below, silent_below=args.silent_below, pause_trim_s=args.pause_trim,
        guards=dataclasses.replace(GuardSettings(), min_speech_probability=args.speech_guard),
    )


def language_arg(value: str | None) -> str | None:
    return None if value in (None, "", "auto") else value


def decode_settings(args: argparse.Namespace) -> DecodeSettings:
    """How every model call decodes, from the model options (a Triton front-end sends them with each call)."""
    from woasr.asr.loaded import DecodeSettings

    return DecodeSettings(
        beam_size=args.beam, task=args.task, vad_filter=args.vad_filter, encoder_window=args.encoder_window,
        silence_pad_s=args.silence_pad, single_pass=not args.redecode_tail, incremental=args.incremental,
        greedy_first=args.greedy_first, fallback_logprob=args.fallback_logprob,
    )


def build_asr(args: argparse.Namespace, workers: int = 1, threads: int | None = None) -> LoadedASR:
    """The backend the options describe; ``threads`` overrides ``--threads``.

    ``--threads 0`` gives each model call the threads a server's call gets (one per
    call on a CPU, where the server runs one call per core), so that ``simulate`` and
    ``eval`` measure what one stream of ``woasr serve`` experiences.
    """
    from woasr.asr.faster_whisper_backend import FasterWhisperASR
    from woasr.engine.sizing import worker_layout

    decode = decode_settings(args)
    cpu_threads = worker_layout(args.device, 0, args.threads).threads if threads is None else threads
    if args.backend == "whisper-timestamped":
        from woasr.asr.whisper_timestamped_backend import WhisperTimestampedASR

        return WhisperTimestampedASR(args.model, language_arg(args.lang), device=args.device,
                                     cpu_threads=cpu_threads, decode=decode)
    return FasterWhisperASR(
        args.model, language_arg(args.lang), device=args.device, compute_type=args.compute_type,
        cpu_threads=cpu_threads, workers=workers, decode=decode,
    )


def cmd_simulate(args: argparse.Namespace) -> int:
    from woasr.audio_io import load_audio
    from woasr.core.processor import OnlineASRProcessor
    from woasr.core.vac import VoiceGate
    from woasr.tools.simulate import simulate

    audio = load_audio(args.file)  # the user's input first, then the model (seconds)
    vad = vad_settings(args)
    settings = processor_settings(args)
    asr = build_asr(args)
    processor = OnlineASRProcessor(asr, asr.language, settings)
    gate = VoiceGate(vad) if vad is not None else None
    for step in simulate(processor, audio, args.min_chunk, aware=not args.comp_unaware, gate=gate):
        update = step.update
        if args.json:
            print(json.dumps({
                "emission_ms": round(step.emission * 1000, 1),
                "audio_ms": round(step.audio_end * 1000, 1),
                "compute_ms": round(step.compute * 1000, 1),
                "buffer_s": round(step.buffer_s, 2),
                "final": step.final,
                "committed": [
                    {"text": w.text.strip(), "beg_ms": round(w.start * 1000), "end_ms": round(w.end * 1000),
                     "probability": round(w.probability, 3)} for w in update.committed
                ],
                "partial": update.partial_text,
            }, ensure_ascii=False), flush=True)
        elif update.committed:
            first, last = update.committed[0], update.committed[-1]
            print(f"{step.emission * 1000:.4f} {first.start * 1000:.0f} {last.end * 1000:.0f} {update.committed_text}",
                  flush=True)
    return 0


@contextlib.contextmanager
def reading_manifest(spec: str) -> Iterator[None]:
    """A manifest that is missing or not a manifest is the user's to fix: one line naming it, no traceback."""
    try:
        yield
    except OSError as exc:
        raise UserInputError(f"cannot read manifest {exc.filename or spec!r}: {exc.strerror or exc}") from exc
    except (KeyError, TypeError, ValueError) as exc:  # a missing column, a field that is not a number, not UTF-8
        raise UserInputError(f"{spec!r} is not a manifest (TSV with columns file, seconds, language[, reference]): "
                             f"{type(exc).__name__}: {exc}") from exc


def cmd_eval(args: argparse.Namespace) -> int:
    from woasr.audio_io import check_audio
    from woasr.tools.evaluate import evaluate, markdown_table, write_report
    from woasr.tools.manifest import read_manifest

    with reading_manifest(args.manifest):
        rows = read_manifest(args.manifest, args.glob, args.limit)
    if not rows:
        raise UserInputError(f"no rows of manifest {args.manifest!r} match {args.glob!r}" if args.glob
                             else f"manifest {args.manifest!r} lists no clips")
    for row in rows:  # a clip that is missing or not audio fails now, not after the model and earlier clips
        check_audio(row.path)
    languages = {row.language for row in rows}
    if args.lang is None and len(languages) == 1:
        args.lang = languages.pop()  # one language: its default model, no detection
    vac, settings = vad_settings(args), processor_settings(args)
    asr = build_asr(args)
    report = evaluate(
        rows, asr, args.min_chunk, language=args.lang, aware=not args.comp_unaware, settings=settings,
        repeat=args.repeat, vac=vac,
    )
    write_report(report, args.json)
    print(markdown_table(report))
    if args.errors:
        from woasr.tools.errors import report as errors_report

        print()
        print(errors_report(report["error_breakdown"], report["error_examples"]))
    if report["repeated_phrases"]:
        print(f"\nphrases committed twice: {report['repeated_phrases']}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from woasr.asr import models

    if args.action == "list":
        for name in models.OFFLINE_MODELS:
            try:
                where = str(models.offline_dir(name, prepare=False))
            except ModelUnavailableError as exc:
                where = f"not ready: {exc}"
            print(f"{name}\t{where}")
        print("(hub names such as large-v2 also work where the model hub can be reached)")
        return 0
    if not args.name:
        log.error("models %s needs a model name (%s)", args.action, ", ".join(models.OFFLINE_MODELS))
        return 2
    if args.action == "convert":
        return convert_model(args.name)
    if args.action == "prepare":
        path = models.offline_dir(args.name) if args.name in models.OFFLINE_MODELS else None
        if path is None:
            log.error("only offline models can be prepared: %s", ", ".join(models.OFFLINE_MODELS))
            return 2
        print(path)
        return 0
    print(models.resolve_model(args.name, None).source)
    return 0


def convert_model(name: str) -> int:
    """``woasr models convert NAME --to openai-whisper``: write the checkpoint once, then check it by
    transcribing a known clip with both backends (the words must agree)."""
    from importlib.resources import files

    from woasr.asr.checkpoint import openai_whisper_checkpoint
    from woasr.asr.faster_whisper_backend import FasterWhisperASR
    from woasr.asr.models import resolve_model, sha256_of
    from woasr.asr.whisper_timestamped_backend import WhisperTimestampedASR
    from woasr.audio_io import load_audio
    from woasr.tools.textnorm import normalize_text

    choice = resolve_model(name, None)
    path = openai_whisper_checkpoint(choice)
    audio = load_audio(str(files("woasr.asr") / "assets" / "check.wav"))
    language = "en"
    theirs = FasterWhisperASR(name, language).offline().transcribe(audio, "", language)
    ours = WhisperTimestampedASR(name, language).transcribe(audio, "", language)
    same = normalize_text(" ".join(w.text for w in ours.words)) == normalize_text(
        " ".join(w.text for w in theirs.words))
    print(f"{path}\tsha256 {sha256_of(path)}")
    print(f"check clip: faster-whisper {' '.join(w.text.strip() for w in theirs.words)!r}; "
          f"converted {' '.join(w.text.strip() for w in ours.words)!r}: {'same words' if same else 'DIFFERENT'}")
    return 0 if same else 1


def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio

    from woasr.asr.models import resolve_model
    from woasr.engine.sizing import worker_layout
    from woasr.server.frontends import Frontend, supervise
    from woasr.server.main import serve_forever
    from woasr.server.service import ModelLoadFailed, StreamingService

    if args.tcp_port <= 0 and args.ws_port <= 0:
        log.error("nothing to serve: --tcp-port and --ws-port are both 0")
        return 2
    urls = triton_urls(args)  # a wrong address fails before any process starts
    frontend = Frontend.from_env(args.ws_port)
    if args.processes > 1 and frontend is None:
        return supervise(args.argv, args.processes)
    # Front-end processes with models of their own share the cores out among them.
    cores = max(1, (os.cpu_count() or 1) // frontend.count) if frontend is not None else None
    layout = worker_layout(args.device, args.workers, args.threads, cores)
    if urls:
        model_name = "triton:" + ",".join(urls)
    else:
        model_name = resolve_model(args.model, language_arg(args.lang)).name  # a wrong name fails before listening
    config = server_config(args, len(urls) or layout.workers, frontend)
    log.info(
        "configuration: host=%s tcp_port=%d ws_port=%d engine=%s model=%s lang=%s backend=%s min_chunk=%g beam=%d "
        "encoder_window=%s device=%s compute_type=%s workers=%d threads=%d max_sessions=%d max_chunk=%gs "
        "latency_target=%gs "
        "vac=%s idle_timeout=%gs ws_max_frame=%d "
        "ws_ping_interval=%gs drain_timeout=%gs metrics_port=%d metrics_log_interval=%gs",
        config.host, config.tcp_port, config.ws_port, args.engine, model_name, args.lang or "auto", args.backend,
        config.min_chunk, args.beam, args.encoder_window, args.device, args.compute_type, config.workers,
        layout.threads, config.max_sessions, config.admission_chunk, config.latency_target, config.vac,
        config.idle_timeout, config.ws_max_frame, config.ws_ping_interval, config.drain_timeout,
        config.metrics_port, config.metrics_log_interval,
    )
    if urls:
        service = remote_service(args, urls, config)
    else:
        service = StreamingService(lambda: build_asr(args, layout.workers, layout.threads), config)
    try:
        forced = asyncio.run(serve_forever(service))
    except ModelLoadFailed as exc:
        log.error("%s", exc)
        return 2
    if forced:  # a model call may still run on a worker thread: do not wait for it
        log.warning("stopped at once (second signal): unfinished sessions and requests were abandoned")
        logging.shutdown()
        os._exit(1)
    return 0


def triton_urls(args: argparse.Namespace) -> tuple[str, ...]:
    """The Triton instances model calls go to; none for the local engine (``--engine`` defaults to
    ``triton`` when ``--triton-url`` is given)."""
    args.engine = args.engine or ("triton" if args.triton_url else "local")
    if args.engine != "triton":
        return ()
    from woasr.engine.triton import parse_urls

    try:
        return parse_urls(args.triton_url or "")
    except ValueError as exc:
        raise UserInputError(f"--engine triton needs --triton-url host:port[,host:port...]: {exc}") from exc


def server_config(args: argparse.Namespace, workers: int, frontend: Frontend | None) -> ServerConfig:
    """The server's settings from its flags and ``STREAM_*`` variables."""
    from woasr.server.access import Tokens
    from woasr.server.config import ServerConfig

    return ServerConfig(
        host=args.host, tcp_port=args.tcp_port, min_chunk=args.min_chunk, idle_timeout=args.idle_timeout,
        workers=workers, settings=processor_settings(args), ws_port=args.ws_port,
        ws_max_frame=args.ws_max_frame, ws_ping_interval=args.ws_ping_interval, drain_timeout=args.drain_timeout,
        max_sessions=args.max_sessions, max_chunk=args.max_chunk, latency_target=args.latency_target, vac=args.vac,
        vad=vad_settings(args, always=True),
        metrics_port=args.metrics_port, metrics_log_interval=args.metrics_log_interval,
        rest_max_seconds=args.rest_max_seconds, max_backlog_s=args.max_backlog,
        resume_window=args.resume_window,
        max_sessions_per_address=args.max_sessions_per_address,
        allowed_origins=tuple(o for o in args.allowed_origins.split(",") if o.strip()),
        tokens=Tokens.load(env("STREAM_TOKEN"), args.tokens_file),
        ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile, frontend=frontend,
    )


def remote_service(args: argparse.Namespace, urls: tuple[str, ...], config: ServerConfig) -> StreamingService:
    """A front-end whose model calls go to Triton instances: no weights here; ready once one instance
    says what it serves."""
    from woasr.engine.triton import RemoteModel, TritonEngine
    from woasr.server.service import StreamingService

    async def connect() -> RemoteModel:
        engine = service.engine
        assert isinstance(engine, TritonEngine)
        return RemoteModel(engine, await engine.connect(), language_arg(args.lang))

    service = StreamingService(connect, config, make_engine=lambda admission, metrics: TritonEngine(
        urls, decode_settings(args), admission, call_timeout=args.triton_timeout, registry=metrics.registry))
    return service


def client_transport(args: argparse.Namespace, display: TerminalDisplay) -> Transport:
    """TCP, or WebSocket with ``--ws``; a malformed URL is the user's to fix."""
    if not args.ws:
        from woasr.clients.tcp_client import TcpTransport

        try:
            return TcpTransport(args.host, args.port, display, token=args.token)
        except ValueError as exc:  # a token the AUTH line cannot carry
            raise UserInputError(f"--token: {exc}") from exc
    from websockets.exceptions import InvalidURI

    from woasr.clients.ws_client import WsTransport

    try:
        # Partials only where someone watches them: a terminal, not a pipe.
        return WsTransport(args.ws, display, {"partials": True} if display.live else None, token=args.token)
    except InvalidURI as exc:
        raise UserInputError(f"--ws: {exc}") from exc


def microphone(name: str | None) -> int | str | None:
    """The input device ``--device`` names (an index or a name), checked before any connection is made."""
    device = int(name) if name and name.isdigit() else name
    try:
        import sounddevice as sd
    except OSError as exc:  # PortAudio is not installed
        raise UserInputError(f"no microphone: {exc}") from exc
    try:
        sd.query_devices(device, "input")
    except (ValueError, sd.PortAudioError) as exc:  # no such device, not an input, no input device at all
        raise UserInputError(f"no microphone {name!r}: {exc}" if name else f"no microphone: {exc}") from exc
    return device


def cmd_client(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from woasr.audio_io import check_audio
    from woasr.clients.display import TerminalDisplay
    from woasr.clients.reconnect import Backoff, GaveUp, Rejected, SourceFailed, stream
    from woasr.clients.ring import BYTES_PER_SECOND
    from woasr.clients.sources import file_source, mic_source

    if args.file:
        check_audio(args.file)  # a wrong path fails now, before connecting
    device = None if args.file else microphone(args.device)
    backoff = Backoff(initial=args.backoff, cap=args.backoff_cap, attempts=args.attempts)
    display = TerminalDisplay()
    transport = client_transport(args, display)

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, stop.set)
        if args.file:
            source = file_source(args.file, args.block, paced=not args.fast)
        else:
            source = mic_source(stop, device, args.block)

        async def until_stopped():
            async for block in source:
                yield block
                if stop.is_set():
                    break

        if stop.is_set():
            return 130
        # A file sent --fast is captured at once: the ring must hold all of it, not drop the oldest.
        ring = await stream(transport, until_stopped(), backoff, None if args.file and args.fast else args.ring)
        if ring.dropped_bytes:
            log.warning("%.1f s of audio did not fit the %g s ring buffer during outages and was lost",
                        ring.dropped_bytes / BYTES_PER_SECOND, args.ring)
        return 0

    try:
        return asyncio.run(run())
    except (GaveUp, Rejected, SourceFailed) as exc:
        log.error("%s", exc)
        return 1
    finally:
        display.clear()


def stream_counts(text: str) -> list[int]:
    """``--streams 1,2,4``: whole numbers >= 1, checked before any clip is read or server started."""
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise UserInputError(f"--streams takes comma-separated whole numbers >= 1 (e.g. 1,2,4), got {text!r}")
    return counts


def cmd_bench(args: argparse.Namespace) -> int:
    from woasr.tools.bench import (bench, clip_set, default_sets, markdown_table, plot, plot_soak, soak, soak_markdown,
                                   with_baselines)
    from woasr.tools.evaluate import write_report

    counts = stream_counts(args.streams)
    if not (math.isfinite(args.seconds) and args.seconds > 0):
        raise UserInputError(f"--seconds takes a number of seconds > 0, got {args.seconds:g}")
    specs = args.playlist or ([f"{args.manifest}:{args.glob}"] if args.manifest else default_sets())
    sets = []
    for spec in specs:
        with reading_manifest(spec):
            sets.append(clip_set(spec))
    if args.plot:
        import matplotlib  # noqa: F401 -- missing: fail now, not after the whole bench
    if args.soak is not None:  # looping sessions for a wall time, the largest count of streams; no WER, no baselines
        if args.soak <= 0:
            raise SystemExit("--soak takes a positive number of seconds")
        report = soak(sets, max(counts), args.seconds, args.soak, args.url, args.serve_args.split(),
                      transport=args.transport, partials=args.partials)
        write_report(report, args.json)
        if args.plot:
            plot_soak(report, args.plot)
        print(soak_markdown(report))
        return 0
    baselines = None
    if args.baselines:
        # The server's own streaming options (model, chunk, policy), for the offline and alone transcripts.
        served, _ = build_parser().parse_known_args(["simulate", "-", *args.serve_args.split()])

        def baselines(lists):
            asr = build_asr(served)
            return with_baselines(lists, asr, processor_settings(served), served.min_chunk)

    report = bench(sets, counts, args.seconds, args.url, args.serve_args.split(), transport=args.transport,
                   partials=args.partials, baselines=baselines)
    write_report(report, args.json)
    if args.plot:
        plot(report, args.plot)
    print(markdown_table(report))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: global flags, then one subparser per tool (the order ``--help`` lists them)."""
    parser = argparse.ArgumentParser(prog="woasr", description="Real-time streaming speech recognition on Whisper.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_simulate_command(sub)
    _add_eval_command(sub)
    _add_serve_command(sub)
    _add_client_command(sub)
    _add_bench_command(sub)
    _add_capture_command(sub)
    _add_models_command(sub)
    _add_triton_command(sub)
    return parser


def _add_simulate_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``woasr simulate``: one file through the processor, to see what a stream would commit and when."""
    sim = sub.add_parser("simulate", help="stream a file through the processor on a simulated clock")
    sim.add_argument("file")
    add_model_options(sim)
    add_processor_options(sim)
    sim.add_argument("--comp-unaware", action="store_true", help="compute takes no simulated time")
    sim.add_argument("--json", action="store_true", help="JSON lines with words, partials and timings")
    sim.set_defaults(func=cmd_simulate)


def _add_eval_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``woasr eval``: the accuracy and latency figures docs/eval.md reports, over a manifest."""
    ev = sub.add_parser("eval", help="streaming vs offline WER, latency and cost over a manifest")
    ev.add_argument("--manifest", required=True, help="TSV: file seconds language reference ...")
    ev.add_argument("--glob", default=None, help="only rows whose file matches, e.g. 'en/*' or 'en/*,long/*'")
    ev.add_argument("--limit", type=at_least_one, default=None)
    add_model_options(ev)
    ev.set_defaults(lang=None)  # no --lang: each clip's manifest language
    add_processor_options(ev)
    ev.add_argument("--comp-unaware", action="store_true")
    ev.add_argument("--repeat", type=at_least_one, default=1,
                    help="stream every clip this many times (the computation-aware clock moves update "
                         "boundaries between runs); the report gives each run's WER and the spread")
    ev.add_argument("--errors", action="store_true",
                    help="print where streaming differs from offline, by mechanism, with examples")
    ev.add_argument("--json", default=None, metavar="OUT", help="write the JSON report here")
    ev.set_defaults(func=cmd_eval)


def _add_serve_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``woasr serve``: the server's own options first, then the model and streaming policy it runs."""
    serve = sub.add_parser("serve", help="run the streaming server (TCP :43007, WebSocket/HTTP :43008)")
    _add_listen_args(serve)
    _add_session_lifetime_args(serve)
    _add_capacity_args(serve)
    _add_metrics_args(serve)
    add_model_options(serve)
    add_processor_options(serve)
    serve.set_defaults(func=cmd_serve)


def _add_listen_args(serve: argparse.ArgumentParser) -> None:
    """Where the server listens and the limits of its WebSocket transport."""
    serve.add_argument("--host", default=default_host(),
                       help="address to listen on (env STREAM_HOST, then IP_ADDR; default: 127.0.0.1)")
    serve.add_argument("--tcp-port", "--port", type=int, default=env_int("STREAM_PORT", DEFAULT_TCP_PORT),
                       help=f"TCP port, 0 disables (env STREAM_PORT; default: {DEFAULT_TCP_PORT})")
    serve.add_argument("--ws-port", type=int, default=env_int("STREAM_WS_PORT", DEFAULT_WS_PORT),
                       help=f"WebSocket/HTTP port (page, REST), 0 disables (env STREAM_WS_PORT; "
                            f"default: {DEFAULT_WS_PORT})")
    serve.add_argument("--ws-max-frame", type=int, default=1 << 20,
                       help="largest WebSocket message in bytes; larger ones close the session with 1009 "
                            "(default: 1048576, 32 s of audio)")
    serve.add_argument("--ws-ping-interval", type=float, default=20.0,
                       help="seconds between WebSocket pings; a peer that does not answer within as long is "
                            "disconnected (default: 20)")
    serve.add_argument("--allowed-origins", default=env("STREAM_ALLOWED_ORIGINS", "") or "",
                       help="comma-separated web origins (https://app.example) whose pages may open WebSocket "
                            "sessions, besides the server's own page; '*' = any (env STREAM_ALLOWED_ORIGINS; "
                            "default: none). Clients that send no Origin header are not affected")
    serve.add_argument("--max-sessions-per-address", type=int, default=0,
                       help="concurrent sessions one client address may hold (default: 0 = no limit)")
    serve.add_argument("--tokens-file", default=None, metavar="PATH",
                       help="require a token from every client: one per line ('#' comments), added to those of "
                            "env STREAM_TOKEN (comma-separated). WebSocket/REST: Authorization: Bearer or "
                            "?token=; TCP: a first line AUTH <token> (default: no authentication)")
    serve.add_argument("--ssl-certfile", default=None, metavar="PEM",
                       help="serve the WebSocket/HTTP port over TLS (wss://, https://) with this certificate; "
                            "TCP stays plain (default: no TLS)")
    serve.add_argument("--ssl-keyfile", default=None, metavar="PEM",
                       help="the certificate's private key, if not in --ssl-certfile")


def _add_session_lifetime_args(serve: argparse.ArgumentParser) -> None:
    """How long sessions may stay silent, and how long they get to finish at shutdown."""
    serve.add_argument("--drain-timeout", type=float, default=10.0,
                       help="on SIGINT/SIGTERM, seconds open sessions get to finish and send their last "
                            "finals (default: 10; a second signal stops at once)")
    serve.add_argument("--idle-timeout", type=float, default=60.0,
                       help="finish a session (TCP or WebSocket) once its audio falls this many seconds behind "
                            "the time spent waiting for it: bytes, commands or pings without audio do not "
                            "keep it open (default: 60; 0 = never)")
    serve.add_argument("--max-backlog", type=float, default=5.0,
                       help="seconds of received audio a session may hold unprocessed; past it the server stops "
                            "reading that connection until it catches up, so a fast sender is slowed by its own "
                            "flow control and nothing is dropped (default: 5; 0 = unbounded)")
    serve.add_argument("--resume-window", type=seconds_or_zero, default=30.0,
                       help="seconds a WebSocket session whose connection dropped is kept for the client to "
                            "resume it without losing or repeating text (default: 30; 0 = no resume)")


def _add_capacity_args(serve: argparse.ArgumentParser) -> None:
    """Where model calls run, their parallelism, and the admission limits that keep the latency target."""
    serve.add_argument("--engine", type=engine_name, choices=["local", "triton"], default=env("STREAM_ENGINE"),
                       help="local: the model in this process; triton: calls go to Triton instances "
                            "(woasr triton serve; env STREAM_ENGINE; default: triton with --triton-url, else local)")
    serve.add_argument("--triton-url", default=env("STREAM_TRITON_URL"),
                       help="with --engine triton: the instances' gRPC addresses, host:port[,host:port...] "
                            "(env STREAM_TRITON_URL); the least busy healthy one takes each call")
    serve.add_argument("--triton-timeout", type=positive_seconds, default=10.0,
                       help="with --engine triton: seconds a call may take before it is retried on another "
                            "instance (default: 10; a killed server can hold a call for ever)")
    serve.add_argument("--processes", type=at_least_one, default=1,
                       help="front-end processes sharing the ports (SO_REUSEPORT), each with its own engine: "
                            "a model replica, or the same --triton-url instances; process i also has WebSocket "
                            "port --ws-port+1+i of its own, for resumes (default: 1)")
    serve.add_argument("--workers", type=int, default=0,
                       help="model calls that may run at once (default: 0 = one per CPU core, each on one "
                            "thread; 2 on a GPU; see docs/internals.md, 'Workers')")
    serve.add_argument("--max-sessions", type=int, default=0,
                       help="refuse sessions beyond this many (default: 0 = decided by measured capacity)")
    serve.add_argument("--max-chunk", type=float, default=0.0,
                       help="admission: refuse a new session when, with it, each update would wait for more "
                            "than this many seconds of audio (measured compute per update x sessions / "
                            "workers; default: 0 = half of --latency-target, at least --min-chunk: a word is "
                            "committed when two updates agree, so a longer chunk cannot keep the target)")
    serve.add_argument("--latency-target", type=float, default=2.0,
                       help="admission: refuse a new session while the 95th percentile of recently committed "
                            "words' latency is above this many seconds (default: 2.0; 0 = off)")
    serve.add_argument("--rest-max-seconds", type=float, default=1800.0,
                       help="POST /v1/audio/transcriptions: refuse (413) a file whose audio is longer than "
                            "this many seconds, found while decoding, never past it (default: 1800 = 30 min; "
                            "0 = no cap)")


def _add_metrics_args(serve: argparse.ArgumentParser) -> None:
    """Where the server's metrics can be scraped, and how often it logs them."""
    serve.add_argument("--metrics-port", type=int, default=0,
                       help="Prometheus metrics are on GET /metrics of the WebSocket/HTTP port; this port "
                            "serves them too, e.g. when only TCP runs (default: 0 = off)")
    serve.add_argument("--metrics-log-interval", type=float, default=30.0,
                       help="seconds between log lines with latency p50/p95 since the previous one "
                            "(logger woasr.metrics; default: 30, 0 = off)")


def _add_client_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``woasr client``: a reference client that survives server restarts."""
    client = sub.add_parser("client", help="stream the microphone or a file to a server and print its lines")
    _add_client_server_args(client)
    _add_client_source_args(client)
    _add_client_reconnect_args(client)
    client.set_defaults(func=cmd_client)


def _add_client_server_args(client: argparse.ArgumentParser) -> None:
    """Which server the client talks to, and over which protocol."""
    client.add_argument("--host", default=default_host(), help="server (env STREAM_HOST, then IP_ADDR)")
    client.add_argument("--port", type=int, default=env_int("STREAM_PORT", DEFAULT_TCP_PORT),
                        help=f"server TCP port (env STREAM_PORT; default: {DEFAULT_TCP_PORT})")
    client.add_argument("--ws", default=None, metavar="URL",
                        help="use WebSocket instead of TCP, e.g. ws://127.0.0.1:43008/ (lossless reconnect; "
                             "on a terminal the partial is shown in place)")
    client.add_argument("--token", default=env("STREAM_TOKEN"),
                        help="the token a server with authentication requires, sent as Authorization: Bearer "
                             "(WebSocket) or a first line AUTH <token> (TCP) on every connection; prefer env "
                             "STREAM_TOKEN, which other users cannot see (default: none)")


def _add_client_source_args(client: argparse.ArgumentParser) -> None:
    """Where the client's audio comes from and how it is cut into blocks."""
    client.add_argument("--file", default=None, help="stream this file instead of the microphone")
    client.add_argument("--fast", action="store_true", help="send the file as fast as possible, not in real time")
    client.add_argument("--device", default=None, help="input device index or name (see `python -m sounddevice`)")
    client.add_argument("--block", type=positive_seconds, default=0.1, help="seconds per block sent (default: 0.1)")


def _add_client_reconnect_args(client: argparse.ArgumentParser) -> None:
    """How the client buffers audio through an outage and how it retries."""
    client.add_argument("--ring", type=float, default=30.0,
                        help="seconds of audio kept while disconnected (default: 30)")
    client.add_argument("--backoff", type=float, default=0.5, help="first reconnect delay in seconds (default: 0.5)")
    client.add_argument("--backoff-cap", type=float, default=10.0, help="longest reconnect delay (default: 10)")
    client.add_argument("--attempts", type=int, default=20,
                        help="failed connection attempts in a row before giving up, 0 = never (default: 20)")


def _add_bench_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``woasr bench``: how latency and WER degrade with the number of concurrent streams."""
    be = sub.add_parser("bench", help="latency and WER of N concurrent real-time streams against a server")
    _add_bench_workload_args(be)
    _add_bench_server_args(be)
    _add_bench_output_args(be)
    be.set_defaults(func=cmd_bench)


def _add_bench_workload_args(be: argparse.ArgumentParser) -> None:
    """What the bench streams: how many streams, which clips, how much audio, scored against what."""
    be.add_argument("--streams", default="1,2,4,6,8,10",
                    help="comma-separated stream counts (default: 1,2,4,6,8,10; with --soak only the largest "
                         "counts)")
    be.add_argument("--soak", type=float, default=None, metavar="SECONDS",
                    help="soak instead of the stream-count runs: the largest --streams count of streams for "
                         "SECONDS of wall time, each looping its --seconds playlist as back-to-back sessions (a new "
                         "connection each), the started server's RSS sampled every 1-5 s; reports the RSS slope "
                         "after a warm-up (10%%, 60 s or the longest playlist, the longest, at most half), sessions "
                         "completed, refused and failed, and committed latency. No WER, so no baselines; with --url "
                         "the RSS is unknown (null)")
    be.add_argument("--manifest", default=None,
                    help="one clip set: a manifest (with --glob); default: the mixed --playlist")
    be.add_argument("--glob", default="en/*", help="clips of --manifest to stream (default: en/*)")
    be.add_argument("--playlist", action="append", metavar="MANIFEST[:GLOB,...]",
                    help="a clip set to mix into every stream, clips taken from the sets in turn (repeat it); "
                         "a manifest without references is scored against offline. Default: set A "
                         "(manifest.tsv:en/*,long/*), conv/ and unref/ of ../shared/audio")
    be.add_argument("--seconds", type=float, default=60.0,
                    help="audio per stream (with --soak: per session, looped) (default: 60)")
    be.add_argument("--baselines", action=argparse.BooleanOptionalAction, default=True,
                    help="transcribe every stream's audio offline and as one stream alone before the runs, "
                         "to score streams without references and the WER load costs (default: on)")


def _add_bench_server_args(be: argparse.ArgumentParser) -> None:
    """The server under test: a running one, or how to start one, and what its clients ask for."""
    be.add_argument("--url", default=None,
                    help="a running server, tcp://HOST:PORT or ws://HOST:PORT/ (default: start one)")
    be.add_argument("--transport", choices=["tcp", "ws"], default="tcp",
                    help="protocol of the server the bench starts (default: tcp; --url's scheme wins)")
    be.add_argument("--partials", action="store_true",
                    help="WebSocket clients ask for partials and their latency is measured")
    be.add_argument("--serve-args", default="",
                    help="arguments for the started server (default: none, the shipped defaults)")


def _add_bench_output_args(be: argparse.ArgumentParser) -> None:
    """Where the bench writes its report and plot (the table always goes to stdout)."""
    be.add_argument("--json", default=None, metavar="OUT", help="write the JSON report here")
    be.add_argument("--plot", default=None, metavar="OUT.png",
                    help="write a PNG of committed (and partial) latency against the stream count here "
                         "(with --soak: of the server's RSS over time)")


def _add_capture_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``woasr capture``: its options live with the tool, imported only when the parser is built."""
    from woasr.tools import capture

    cap = sub.add_parser("capture", help="write each detected speech segment of the microphone, a file or stdin "
                                         "as a WAV, with a JSONL index (seed: streaming_audio_save.py)")
    capture.add_arguments(cap)
    cap.set_defaults(func=cmd_capture)


def cmd_capture(args: argparse.Namespace) -> int:
    """``capture.run``, after checking ``--file``: a wrong path fails before the output folder is made."""
    from woasr.audio_io import check_audio
    from woasr.tools import capture

    if args.file:
        check_audio(args.file)
    return capture.run(args)


def _add_models_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``woasr models``: find or prepare the models that work without the model hub."""
    mo = sub.add_parser("models", help="list, locate, prepare or convert the offline models")
    mo.add_argument("action", choices=["list", "path", "prepare", "convert"])
    mo.add_argument("name", nargs="?")
    mo.add_argument("--to", choices=["openai-whisper"], default="openai-whisper",
                    help="convert: the format to write (an openai-whisper .pt, for --backend whisper-timestamped)")
    mo.set_defaults(func=cmd_models)


def configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        logging.getLogger("faster_whisper").setLevel(logging.WARNING)


def refuse(command: str | None, exc: Exception) -> int:
    """One line saying what input was wrong, and the exit code: the user's mistake earns no traceback."""
    logging.getLogger(f"woasr.{command}" if command else "woasr").error("%s", exc)  # "woasr.simulate: ..."
    return getattr(exc, "exit_code", 2)


def _add_triton_command(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``woasr triton serve``: the model on a Triton server, for front-ends with ``--engine triton``."""
    tr = sub.add_parser("triton", help="host the model on a Triton Inference Server (PyTriton) for "
                                       "woasr serve --engine triton")
    tr.add_argument("action", choices=["serve"])
    tr.add_argument("--host", default="127.0.0.1", help="address Triton listens on (default: 127.0.0.1)")
    tr.add_argument("--grpc-port", type=int, default=8001, help="gRPC port, what front-ends use (default: 8001)")
    tr.add_argument("--http-port", type=int, default=8000, help="HTTP port (default: 8000)")
    tr.add_argument("--metrics-port", type=int, default=8002, help="Triton's Prometheus port (default: 8002)")
    tr.add_argument("--log-file", default=None, help="keep tritonserver's own log in this file")
    tr.add_argument("--instances", type=not_negative, default=0,
                    help="model instances (calls at once) on the one loaded model (default: 0 = one per CPU "
                         "core, each call on one thread; 2 on a GPU)")
    add_model_options(tr)
    tr.set_defaults(func=cmd_triton)


def cmd_triton(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM. PyTriton needs numpy < 2: from woasr's own environment this starts
    again in ``.venv-triton`` (``scripts/bootstrap_triton.sh``)."""
    import importlib.util
    import sysconfig
    from pathlib import Path

    if importlib.util.find_spec("pytriton") is None:
        python = Path(__file__).resolve().parent.parent / ".venv-triton" / "bin" / "python"
        if python.is_file() and Path(sys.executable) != python:
            os.execv(python, [str(python), "-m", "woasr.cli", *sys.argv[1:]])
        raise UserInputError("woasr triton serve needs PyTriton, which needs numpy < 2: "
                             "run bash scripts/bootstrap_triton.sh (it sets up .venv-triton)")
    from woasr.engine.sizing import worker_layout
    from woasr.engine.triton_model import TritonPorts, serve_model

    # Triton's Python-backend stub links libpython: this interpreter's, not another of the same version.
    libdir = str(sysconfig.get_config_var("LIBDIR") or "")
    os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, os.environ.get("LD_LIBRARY_PATH")) if p)
    # Instances as the in-process engine's workers: one per core, a thread each (measured fastest).
    layout = worker_layout(args.device, args.instances, args.threads)
    asr = build_asr(args, workers=layout.workers, threads=layout.threads)
    serve_model(asr, TritonPorts(args.host, args.http_port, args.grpc_port, args.metrics_port), args.log_file,
                instances=layout.workers)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Input the user must fix (a flag, an environment value, a file, a model)
    ends it with one line and exit code 2; argparse answers malformed flags itself."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except UserInputError as exc:  # an environment value an option refuses, found while parsing
        configure_logging(verbose=False)
        return refuse(next((a for a in argv if not a.startswith("-")), None), exc)
    configure_logging(args.verbose)
    args.argv = argv  # what a command that starts copies of itself passes on (serve --processes)
    try:
        return args.func(args)
    except (UserInputError, ModelUnavailableError) as exc:
        return refuse(args.command, exc)


if __name__ == "__main__":
    sys.exit(main())
