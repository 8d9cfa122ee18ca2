"""``woasr bench``: concurrent paced real-time streams against a server, measured.

For each stream count N it runs N clients at once over real sockets, each
streaming its own playlist of real clips in real time (100 ms blocks), and
reports committed latency, WER, server CPU and RSS. The clients speak TCP or
WebSocket through the same transports as ``woasr client``
(:mod:`woasr.clients.tcp_client`, :mod:`woasr.clients.ws_client`), one
connection each and no reconnect. WebSocket clients keep to the seed contract
(binary frames, ``{"type":"close"}`` at the end); with ``partials`` they first
send ``{"type":"config","partials":true}``.

A client the server refuses over capacity (WebSocket: an ``error`` message
with code ``capacity`` and/or a close with 1013; TCP: an ``ERROR capacity``
line; either before any final) ends at once, without a retry, and counts as
refused: not an error, and left out of WER. A run with any refusal does not
qualify for ``max_streams_p95_under_2s``.

Committed latency is measured per final (TCP: per line), at the client:
receive time minus the send time of the audio block holding the final's
``end_ms``. (The last word of a line waits least; ``woasr eval`` measures
per word.) Partial latency is the same per non-empty partial message, on
its ``end_ms``.

A server the bench starts itself gets a free port for the transport under
test and the other transport off; the bench waits for its ``ready model=``
line, since the sockets open before the model has loaded.

A soak (``woasr bench --soak SECONDS``, :func:`soak`) runs no stream counts:
N streams at once (the largest ``--streams`` count) for SECONDS of wall time,
each looping its playlist as back-to-back sessions, a new connection per
session, so sessions start and end all the time. Stream k's first session
plays only (k + 1)/N of its playlist, so the streams' sessions end at
staggered times; at the deadline a running session streams no further and
ends as usual (end of audio, last finals), and counts as completed. After a
refusal (admission judges the sessions arriving all along) or a failure the
stream starts its next session a second later; refusals are counted apart.
The RSS of a server the bench started is sampled every 1 to 5 s (about 100
samples); ``rss_slope_mb_per_hour`` is the least-squares slope of the samples
after a warm-up of 10 % of the soak, 60 s or the longest playlist, the
longest, at most half of it (:func:`soak_warmup`). A server given by ``--url``
has no RSS figures (None). A soak scores no WER.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import itertools
import json
import logging
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import psutil
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm
from websockets.exceptions import ConnectionClosed

from woasr.audio_io import load_audio
from woasr.clients.reconnect import Listener, Transport
from woasr.clients.sources import paced_blocks, to_pcm16
from woasr.clients.tcp_client import TcpTransport
from woasr.clients.ws_client import WsConnection, WsTransport
from woasr.core.audio import SAMPLE_RATE
from woasr.core.processor import OnlineASRProcessor, ProcessorSettings
from woasr.core.records import join_words
from woasr.percentiles import percentiles_ms
from woasr.protocol.events import CAPACITY
from woasr.protocol.websocket import CloseCode
from woasr.tools.manifest import ManifestRow, read_manifest
from woasr.tools.simulate import simulate
from woasr.tools.textnorm import ErrorCount, count_errors

if TYPE_CHECKING:
    from woasr.asr.loaded import LoadedASR

log = logging.getLogger(__name__)

DEFAULT_AUDIO_DIR = "../shared/audio"
"""Where the default playlist's sets are (the checkout's sibling ``shared`` folder)."""
BLOCK_S = 0.1
GAP_S = 0.5
TARGET_P95_MS = 2000


@dataclass(frozen=True, slots=True)
class Playlist:
    """One client's audio: consecutive clips joined with short silences, and its reference.

    ``reference`` is None unless every clip in it has one and was streamed whole;
    ``offline`` (filled in by :func:`with_baselines`) is what the model makes of the
    same audio transcribed whole, and ``alone`` what one simulated stream of it commits.
    """

    pcm: bytes
    reference: str | None
    language: str
    clips: tuple[str, ...] = ()
    offline: str | None = None
    alone: str | None = None

    @property
    def seconds(self) -> float:
        return len(self.pcm) / 2 / SAMPLE_RATE

    @property
    def audio(self) -> np.ndarray:
        return np.frombuffer(self.pcm, np.int16).astype(np.float32) / 32768


def clip_set(spec: str) -> list[ManifestRow]:
    """The clips of one set, ``MANIFEST`` or ``MANIFEST:GLOB[,GLOB...]`` (e.g. ``manifest.tsv:conv/*``)."""
    manifest, separator, pattern = spec.partition(".tsv:")
    rows = read_manifest(manifest + ".tsv" if separator else manifest, pattern or None)
    if not rows:
        raise SystemExit(f"no clips in playlist set {spec!r}")
    return rows


def default_sets(audio_dir: str = DEFAULT_AUDIO_DIR) -> list[str]:
    """The default mix: read speech (set A), conversational recordings, unreferenced calls and talks."""
    return [f"{audio_dir}/manifest.tsv:en/*,long/*", f"{audio_dir}/manifest.tsv:conv/*",
            f"{audio_dir}/unref/manifest.tsv"]


def interleaved(sets: list[list[ManifestRow]]) -> Iterator[ManifestRow]:
    """One clip of each set in turn, each set cycling through its clips, forever."""
    position = [0] * len(sets)
    for index in itertools.cycle(range(len(sets))):
        rows = sets[index]
        yield rows[position[index] % len(rows)]
        position[index] += 1


def playlists(sets: list[list[ManifestRow]], count: int, seconds: float) -> list[Playlist]:
    """``count`` distinct playlists of about ``seconds`` each, taking clips from the sets in turn.

    A clip is taken whole unless it is more than twice as long as what the
    playlist still needs; then it is cut so the playlist holds ``seconds``
    (streams of one run then end together). Playlist k is the same for every
    ``count`` above k, so ``wer_per_stream[k]`` compares one audio across runs.
    """
    clips = interleaved(sets)
    gap = np.zeros(int(GAP_S * SAMPLE_RATE), np.float32)
    wanted = round(seconds * SAMPLE_RATE)
    result = []
    for _ in range(count):
        audio: list[np.ndarray] = []
        texts: list[str | None] = []
        names: list[str] = []
        while (have := sum(len(a) for a in audio)) < wanted:
            row = next(clips)
            clip = load_audio(row.path)
            if len(clip) > 2 * (wanted - have):
                clip = clip[: wanted - have]
                texts.append(None)
            else:
                texts.append(row.reference)
            audio += [clip, gap]
            names.append(row.name)
        reference = " ".join(t for t in texts if t) if all(texts) else None
        result.append(Playlist(to_pcm16(np.concatenate(audio)), reference, sets[0][0].language, tuple(names)))
    return result


def with_baselines(lists: list[Playlist], asr: LoadedASR, settings: ProcessorSettings,
                   min_chunk: float, progress: bool = True) -> list[Playlist]:
    """Each playlist with its offline transcription and its transcript streamed alone (simulated).

    Both run in the bench process before any server load: ``offline`` scores a
    stream without a reference; ``alone`` is the same audio as one stream with
    the server's chunk, compute not simulated as time (what a lone stream on an
    idle server commits), so the WER a stream loses to load can be told apart.
    """
    offline = asr.offline()
    done = []
    for playlist in tqdm(lists, desc="baselines", unit="stream", disable=not progress, file=sys.stderr):
        audio = playlist.audio
        offline_text = join_words(offline.transcribe(audio, "", asr.language).words)
        processor = OnlineASRProcessor(asr, asr.language, settings)
        alone = [w for step in simulate(processor, audio, min_chunk, aware=False) for w in step.update.committed]
        done.append(dataclasses.replace(playlist, offline=offline_text, alone=join_words(alone)))
    return done


@dataclass(slots=True)
class ClientResult:
    latencies: list[float] = field(default_factory=list)
    partial_latencies: list[float] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    refused: bool = False
    """The server refused the session over capacity, before any final."""
    error: str | None = None
    """Why the client failed; None when it finished or was refused."""


def is_refusal(error_code: str | None = None, close_code: int | None = None, finals: int = 0) -> bool:
    """Whether what a client got is the server refusing its session over capacity.

    ``error_code`` is the code of an ``error`` message (TCP: of an ``ERROR``
    line), ``close_code`` the WebSocket close code received, ``finals`` how
    many finals had arrived before: only a session that got none was refused.
    """
    return finals == 0 and ((error_code or "").strip() == CAPACITY or close_code == CloseCode.TRY_AGAIN_LATER)


def settle(result: ClientResult, failure: str | None = None, close_code: int | None = None) -> ClientResult:
    """How a client ended: refused (a capacity error or close before any final: no error), failed, or fine.

    ``failure`` is why its connection broke, if it did; ``close_code`` the
    WebSocket close code it received, if any.
    """
    if not result.refused and is_refusal(close_code=close_code, finals=len(result.latencies)):
        result.refused = True
    if result.refused:
        result.error = None
    elif failure and not result.error:
        result.error = failure
    return result


class Timings:
    """A :class:`~woasr.clients.reconnect.Listener` that times each message against the audio it covers."""

    def __init__(self, result: ClientResult) -> None:
        self.result = result
        self.sent_ends: list[int] = []
        """ms of audio sent so far, per block."""
        self.sent_at: list[float] = []
        self.clock = asyncio.get_running_loop().time
        self.refusal = asyncio.Event()
        """Set when the server refuses the session: the client stops at once."""

    def sent(self, total_bytes: int) -> None:
        self.sent_ends.append(round(total_bytes / 2 / SAMPLE_RATE * 1000))
        self.sent_at.append(self.clock())

    def _latency(self, end_ms: int) -> float:
        """Now minus the send time of the block holding ``end_ms``."""
        index = min(bisect.bisect_left(self.sent_ends, end_ms), len(self.sent_at) - 1)
        return self.clock() - self.sent_at[index]

    def final(self, beg_ms: int, end_ms: int, text: str) -> None:
        self.result.latencies.append(self._latency(end_ms))
        self.result.text.append(text)

    def partial(self, text: str, beg_ms: int, end_ms: int) -> None:
        if text:  # an empty partial only clears the display; it holds no new audio
            self.result.partial_latencies.append(self._latency(end_ms))

    def error(self, code: str, message: str) -> None:
        if is_refusal(error_code=code, finals=len(self.result.latencies)):
            log.debug("refused: %s %s", code, message)
            self.result.refused = True
            self.refusal.set()
        else:
            self.result.error = f"{code} {message}".strip()


async def run_client(server: ServerUnderTest, playlist: Playlist) -> ClientResult:
    """Stream one playlist in real time over the server's transport; time every final and partial.

    One connection, no reconnect: a bench measures the server, a lost
    connection is reported as an error, and a refusal over capacity ends the
    client at once (see :func:`settle`).
    """
    result = ClientResult()
    timings = Timings(result)
    try:
        connection = await server.transport(timings).connect()
    except OSError as exc:  # a WebSocket refused while its config was sent fails here
        return settle(result, f"cannot connect: {exc}", _close_code_of(exc))
    receiving = asyncio.create_task(connection.receive())

    async def send_all() -> None:
        sent = 0
        async for block in paced_blocks(playlist.pcm, BLOCK_S):
            if receiving.done():
                break  # the server closed early: its reason is the receive's
            await connection.send(sent, block)
            sent += len(block)
            timings.sent(sent)
        else:
            await connection.end()
        await receiving

    sending = asyncio.create_task(send_all())
    refused = asyncio.create_task(timings.refusal.wait())
    failure = None
    try:
        await asyncio.wait({sending, refused}, return_when=asyncio.FIRST_COMPLETED)
        if sending.done():
            sending.result()
    except OSError as exc:  # ConnectionError included
        failure = str(exc) or type(exc).__name__
    finally:
        for task in (refused, sending, receiving):
            task.cancel()
        await asyncio.gather(sending, receiving, return_exceptions=True)  # retrieved: no "never retrieved" logs
        close_code = _received_close_code(connection)
        await connection.close()
    return settle(result, failure, close_code)


def _received_close_code(connection: object) -> int | None:
    """The close code the server sent on a WebSocket connection (None: none yet, or TCP)."""
    if isinstance(connection, WsConnection):
        received = connection.ws.protocol.close_rcvd
        return received.code if received else None
    return None


def _close_code_of(exc: BaseException) -> int | None:
    """The close code behind a WebSocket connection error, if the server sent one."""
    cause = exc.__cause__
    return cause.rcvd.code if isinstance(cause, ConnectionClosed) and cause.rcvd else None


class ServerUnderTest:
    """A ``woasr serve`` subprocess on a free port, or an already running server.

    ``url`` is ``tcp://HOST:PORT`` (or ``HOST:PORT``) or ``ws://HOST:PORT/PATH``;
    without one, a server is started for ``transport`` with the other one off.
    """

    def __init__(self, url: str | None, serve_args: list[str], transport: str = "tcp",
                 partials: bool = False) -> None:
        self.url = url
        self.serve_args = serve_args
        self.kind = transport
        self.partials = partials
        self.proc: subprocess.Popen[str] | None = None
        self.host, self.port = "127.0.0.1", 0
        self.model: str | None = None
        """The server's model: from its ``ready`` line, or a WebSocket server's ``/readyz``."""

    def __enter__(self) -> ServerUnderTest:
        if self.url:
            self._parse_url(self.url)
            self.model = _model_of(self.url) if self.kind == "ws" else None
            return self
        self.port = free_port()
        ports = ["--tcp-port", str(self.port), "--ws-port", "0"]
        if self.kind == "ws":
            ports = ["--ws-port", str(self.port), "--tcp-port", "0"]
            self.url = f"ws://{self.host}:{self.port}/"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "woasr.cli", "serve", *ports, *self.serve_args],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        for line in self.proc.stdout:
            if line.startswith("ready model="):  # the sockets open first, the model loads after
                self.model = (line.removeprefix("ready model=").split() or [None])[0]
                threading.Thread(target=self.proc.stdout.read, daemon=True).start()  # never let the pipe fill
                return self
        raise SystemExit("the server under test did not start")

    def _parse_url(self, url: str) -> None:
        if url.startswith(("ws://", "wss://")):
            self.kind = "ws"
            return
        match = re.fullmatch(r"(?:tcp://)?([^:/]+):(\d+)/?", url)
        if not match:
            raise SystemExit(f"--url must look like tcp://HOST:PORT or ws://HOST:PORT/, got {url!r}")
        self.kind = "tcp"
        self.host, self.port = match.group(1), int(match.group(2))

    def transport(self, listener: Listener) -> Transport:
        if self.kind == "ws":
            assert self.url is not None
            return WsTransport(self.url, listener, {"partials": True} if self.partials else None)
        return TcpTransport(self.host, self.port, listener)

    @property
    def process(self) -> psutil.Process | None:
        return psutil.Process(self.proc.pid) if self.proc else None

    def __exit__(self, *exc: object) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def _model_of(url: str) -> str | None:
    """A running WebSocket server's model, from ``/readyz`` on the same port; None if it does not say."""
    match = re.match(r"ws(s?)://([^/]+)", url)
    if not match:
        return None
    try:
        with urllib.request.urlopen(f"http{match.group(1)}://{match.group(2)}/readyz", timeout=2) as response:
            return json.load(response).get("model")
    except (OSError, ValueError, AttributeError):
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def sample_rss(proc: psutil.Process | None, every: float, samples: list[tuple[float, float]],
                     started: float | None = None) -> None:
    """Append ``(seconds since started, RSS MB)`` of ``proc`` to ``samples`` every ``every`` seconds.

    Runs until cancelled or the process is gone; ``started`` is a time of the
    running loop's clock (default: now). No process (a server the bench did
    not start): no samples, since its RSS is unknown.
    """
    clock = asyncio.get_running_loop().time
    started = clock() if started is None else started
    while (rss := _rss_mb(proc)) is not None:
        samples.append((clock() - started, rss))
        await asyncio.sleep(every)


def _rss_mb(proc: psutil.Process | None) -> float | None:
    """The process's resident memory in MB; None without a process or once it is gone."""
    try:
        return proc.memory_info().rss / 2**20 if proc else None
    except psutil.Error:
        return None


async def run_streams(
    server: ServerUnderTest, lists: list[Playlist]
) -> tuple[list[ClientResult], float, float, float | None]:
    """All clients at once; returns their results, server CPU %, peak RSS MB and server CPU seconds
    (None for a server the bench did not start)."""
    proc = server.process
    if proc:
        proc.cpu_percent(None)
        before = proc.cpu_times()
    samples: list[tuple[float, float]] = []
    sampler = asyncio.create_task(sample_rss(proc, 0.5, samples))
    results = await asyncio.gather(*(run_client(server, p) for p in lists))
    sampler.cancel()
    peak_rss = max((mb for _, mb in samples), default=0.0)
    cpu = proc.cpu_percent(None) if proc else float("nan")
    core_s = None
    if proc:
        after = proc.cpu_times()
        core_s = (after.user - before.user) + (after.system - before.system)
    return list(results), cpu, peak_rss, core_s


def bench(
    sets: list[list[ManifestRow]], stream_counts: list[int], seconds: float, url: str | None, serve_args: list[str],
    progress: bool = True, transport: str = "tcp", partials: bool = False,
    baselines: Callable[[list[Playlist]], list[Playlist]] | None = None,
) -> dict[str, Any]:
    """Run every stream count; return the JSON-ready report.

    ``sets`` are the clip sets the playlists mix; ``baselines`` (see
    :func:`with_baselines`) gives each playlist its offline and streamed-alone
    transcripts before the server starts. ``transport`` (tcp or ws) applies
    to a server the bench starts; a ``url``'s scheme wins.
    """
    every = playlists(sets, max(stream_counts), seconds)
    if baselines is not None:
        every = baselines(every)
    runs = []
    with (ServerUnderTest(url, serve_args, transport, partials) as server, logging_redirect_tqdm(),
          _quiet_session_lines(progress)):
        partials = _partials_for(server, partials)
        bar = tqdm(stream_counts, desc="bench", unit="run", disable=not progress, file=sys.stderr)
        for count in bar:
            bar.set_postfix(streams=count)
            lists = every[:count]
            results, cpu, rss, core_s = asyncio.run(run_streams(server, lists))
            admitted_audio_s = sum(p.seconds for p, r in zip(lists, results) if not r.refused)
            latencies = [x for r in results for x in r.latencies]
            runs.append({
                "streams": count,
                "latency_ms": percentiles_ms(latencies),
                "partial_latency_ms": percentiles_ms([x for r in results for x in r.partial_latencies],
                                                     ("p50", "p95")),
                **score_streams(lists, results),
                "refused": sum(r.refused for r in results),
                "admitted": sum(not r.refused for r in results),
                "cpu_percent": round(cpu, 1),
                "core_seconds_per_audio_second": (round(core_s / admitted_audio_s, 3)
                                                  if core_s is not None and admitted_audio_s else None),
                "rss_mb": round(rss, 1),
                "audio_s_per_stream": round(lists[0].seconds, 1),
                "errors": [r.error for r in results if r.error],
            })
    under = [r["streams"] for r in runs
             if r["latency_ms"]["p95"] is not None and r["latency_ms"]["p95"] <= TARGET_P95_MS and not r["refused"]]
    return {
        **_report_head(server, url, serve_args, partials, every),
        "runs": runs,
        "max_streams_p95_under_2s": max(under) if under else 0,
    }


def _partials_for(server: ServerUnderTest, partials: bool) -> bool:
    """Whether clients ask for partials: only over WebSocket (TCP has none; said once, then off)."""
    if partials and server.kind != "ws":
        log.warning("TCP has no partials: --partials ignored")
        server.partials = False
        return False
    return partials


def _report_head(server: ServerUnderTest, url: str | None, serve_args: list[str], partials: bool,
                 lists: list[Playlist]) -> dict[str, Any]:
    """The keys every bench report starts with: the server under test and the playlists streamed."""
    return {
        "transport": server.kind,
        "partials": partials,
        "server": url or "woasr serve " + " ".join(serve_args),
        "model": server.model,
        "cpu_count": os.cpu_count(),
        "playlists": [{"clips": list(p.clips), "seconds": round(p.seconds, 1), "referenced": p.reference is not None,
                       "wer_alone": _rate(_errors_of(p, p.alone)), "wer_alone_vs_offline": _rate(_vs_offline(p, p.alone))}
                      for p in lists],
    }


SOAK_MIN_SESSION_S = 1.0
"""A soak stream starts no session with less time than this left before the deadline."""
SOAK_RETRY_S = 1.0
"""How long a soak stream waits after a refused or failed session before it starts the next."""
SOAK_SESSION_GRACE_S = 60.0
"""A soak session that has not ended this long after the time its audio takes fails (a hung server ends the soak)."""


def soak_sample_every(soak_s: float) -> float:
    """Seconds between RSS samples of a soak: about 100 samples, 1 to 5 s apart."""
    return min(5.0, max(1.0, soak_s / 100))


def soak_warmup(soak_s: float, loop_s: float = 0.0) -> float:
    """Seconds at the start of a soak left out of the RSS slope: 10 % of it, 60 s or ``loop_s``, the longest,
    but at most half of it.

    ``loop_s`` is the longest playlist: until then not every stream has
    streamed one whole session, and the server's memory is still finding
    its working set.
    """
    return min(max(0.1 * soak_s, 60.0, loop_s), 0.5 * soak_s)


def rss_slope(samples: list[tuple[float, float]] | list[list[float]], warmup_s: float = 0.0) -> float | None:
    """Least-squares slope of ``(t_s, rss_mb)`` samples in MB per hour, over those at ``t_s >= warmup_s``.

    None with fewer than two such samples at distinct times: no slope to speak of.
    """
    kept = [(t, mb) for t, mb in samples if t >= warmup_s]
    if len(kept) < 2:
        return None
    t, mb = np.array(kept, float).T
    dt = t - t.mean()
    spread = float(dt @ dt)
    return float(dt @ (mb - mb.mean())) / spread * 3600 if spread else None


@dataclass(slots=True)
class SoakRun:
    """What a soak measured: every session (audio seconds sent, result), RSS samples, wall time, server CPU."""

    sessions: list[tuple[float, ClientResult]]
    samples: list[tuple[float, float]] | None
    """``(t_s, rss_mb)`` from the start; None for a server the bench did not start."""
    elapsed_s: float
    core_s: float | None
    loop_s: float = 0.0
    """The longest playlist: one loop of every stream (see :func:`soak_warmup`)."""


async def soak_stream(server: ServerUnderTest, playlist: Playlist, first_s: float, deadline: float,
                      sessions: list[tuple[float, ClientResult]]) -> None:
    """Stream ``playlist`` as back-to-back sessions, a new connection each, until ``deadline`` (loop time).

    The first session streams only the first ``first_s`` seconds of it, so that
    the streams' sessions end at staggered times. A session that would run past
    the deadline streams only what fits, then ends as any other (end of audio,
    last finals). A session not ended ``SOAK_SESSION_GRACE_S`` after its audio
    fails. After a refusal or a failure the stream waits ``SOAK_RETRY_S``.
    """
    clock = asyncio.get_running_loop().time
    limit = first_s
    while (left := min(deadline - clock(), limit)) >= SOAK_MIN_SESSION_S:
        audio = dataclasses.replace(playlist, pcm=playlist.pcm[: int(left * SAMPLE_RATE) * 2])
        try:
            result = await asyncio.wait_for(run_client(server, audio), audio.seconds + SOAK_SESSION_GRACE_S)
        except TimeoutError:
            result = ClientResult(error=f"the session had not ended {SOAK_SESSION_GRACE_S:g} s after its audio")
        sessions.append((audio.seconds, result))
        limit = playlist.seconds
        if result.refused or result.error:
            await asyncio.sleep(SOAK_RETRY_S)


async def run_soak(server: ServerUnderTest, lists: list[Playlist], soak_s: float, progress: bool = True) -> SoakRun:
    """One looping stream per playlist for ``soak_s`` seconds, the server's RSS sampled all along.

    Stream k's first session is ``(k + 1) / N`` of its playlist. The last RSS
    sample is taken once every stream has ended its last session.
    """
    proc = server.process
    clock = asyncio.get_running_loop().time
    started = clock()
    cpu_before = _cpu_seconds(proc)
    sessions: list[tuple[float, ClientResult]] = []
    samples: list[tuple[float, float]] = []
    watchers = [asyncio.create_task(sample_rss(proc, soak_sample_every(soak_s), samples, started))]
    if progress:
        watchers.append(asyncio.create_task(_soak_progress(soak_s, started, sessions, samples)))
    await asyncio.gather(*(soak_stream(server, p, p.seconds * (k + 1) / len(lists), started + soak_s, sessions)
                           for k, p in enumerate(lists)))
    for task in watchers:
        task.cancel()
    await asyncio.gather(*watchers, return_exceptions=True)
    elapsed = clock() - started
    if (rss := _rss_mb(proc)) is not None:
        samples.append((elapsed, rss))
    cpu_after = _cpu_seconds(proc)
    core_s = cpu_after - cpu_before if cpu_after is not None and cpu_before is not None else None
    return SoakRun(sessions, samples if proc else None, elapsed, core_s, max(p.seconds for p in lists))


def _cpu_seconds(proc: psutil.Process | None) -> float | None:
    """User plus system CPU seconds the process has used; None without a process or once it is gone."""
    try:
        times = proc.cpu_times() if proc else None
    except psutil.Error:
        return None
    return times.user + times.system if times else None


async def _soak_progress(soak_s: float, started: float, sessions: list[tuple[float, ClientResult]],
                         samples: list[tuple[float, float]]) -> None:
    """A progress bar of the soak's seconds, with the sessions ended and the last RSS, until cancelled."""
    clock = asyncio.get_running_loop().time
    with tqdm(total=round(soak_s), desc="soak", unit="s", file=sys.stderr) as bar:
        while True:
            bar.n = min(bar.total, round(clock() - started))
            refused = sum(r.refused for _, r in sessions)
            bar.set_postfix(sessions=len(sessions) - refused, refused=refused,
                            rss_mb=f"{samples[-1][1]:.0f}" if samples else "?", refresh=False)
            bar.refresh()
            await asyncio.sleep(1.0)


def soak(
    sets: list[list[ManifestRow]], streams: int, seconds: float, soak_s: float, url: str | None,
    serve_args: list[str], progress: bool = True, transport: str = "tcp", partials: bool = False,
) -> dict[str, Any]:
    """``streams`` streams looping ``seconds``-long playlists for ``soak_s`` s of wall time; the JSON-ready report.

    Sessions start and end all the time (each loop is a new connection), so
    what a session leaks shows as RSS growing: ``rss_slope_mb_per_hour`` fits
    the samples after :func:`soak_warmup`. No WER is scored.
    """
    lists = playlists(sets, streams, seconds)
    with (ServerUnderTest(url, serve_args, transport, partials) as server, logging_redirect_tqdm(),
          _quiet_session_lines(progress)):
        partials = _partials_for(server, partials)
        run = asyncio.run(run_soak(server, lists, soak_s, progress))
    return {**_report_head(server, url, serve_args, partials, lists), "streams": streams,
            **soak_figures(run, soak_s)}


def soak_figures(run: SoakRun, soak_s: float) -> dict[str, Any]:
    """A soak's report keys: RSS (None for a server the bench did not start), sessions, errors, latency, CPU."""
    results = [r for _, r in run.sessions]
    audio_s = sum(seconds for seconds, r in run.sessions if not r.refused)
    samples, warmup = run.samples, soak_warmup(soak_s, run.loop_s)
    slope = rss_slope(samples, warmup) if samples else None

    def rss_at(index: int) -> float | None:
        return round(samples[index][1], 1) if samples else None

    return {
        "soak_seconds": soak_s,
        "soak_elapsed_s": round(run.elapsed_s, 1),
        "rss_samples": [[round(t, 1), round(mb, 1)] for t, mb in samples] if samples else None,
        "rss_sample_every_s": soak_sample_every(soak_s),
        "rss_warmup_s": round(warmup, 1),
        "rss_slope_mb_per_hour": round(slope, 2) if slope is not None else None,
        "rss_start_mb": rss_at(0),
        "rss_end_mb": rss_at(-1),
        "rss_peak_mb": round(max(mb for _, mb in samples), 1) if samples else None,
        "sessions_completed": sum(not r.refused and not r.error for r in results),
        "sessions_refused": sum(r.refused for r in results),
        "sessions_failed": sum(bool(r.error) for r in results),
        "errors": [r.error for r in results if r.error],
        "latency_ms": percentiles_ms([x for r in results for x in r.latencies]),
        "partial_latency_ms": percentiles_ms([x for r in results for x in r.partial_latencies], ("p50", "p95")),
        "audio_s_streamed": round(audio_s, 1),
        "cpu_percent": round(100 * run.core_s / run.elapsed_s, 1) if run.core_s is not None else None,
        "core_seconds_per_audio_second": round(run.core_s / audio_s, 3) if run.core_s is not None and audio_s else None,
    }


def _errors_of(playlist: Playlist, text: str | None) -> ErrorCount | None:
    """Errors of ``text`` against the playlist's reference (else its offline transcript; None: neither)."""
    if text is None:
        return None
    if playlist.reference is not None:
        return count_errors(playlist.reference, text, playlist.language)
    return _vs_offline(playlist, text)


def _vs_offline(playlist: Playlist, text: str | None) -> ErrorCount | None:
    if text is None or playlist.offline is None:
        return None
    return count_errors(playlist.offline, text, playlist.language)


def _rate(errors: ErrorCount | None) -> float | None:
    return round(errors.rate, 4) if errors is not None else None


def score_streams(lists: list[Playlist], results: list[ClientResult]) -> dict[str, Any]:
    """A run's WER figures: against references, against offline, and what load cost against streaming alone.

    ``wer`` pools the streams whose playlist has a reference; ``wer_vs_offline``
    every stream (when baselines were computed). ``wer_increase_vs_alone_per_stream``
    is each stream's WER (reference, else offline) minus that of its audio
    streamed alone: the accuracy the load took away.
    """
    referenced, vs_offline = ErrorCount(), ErrorCount()
    per_stream, per_stream_offline, increase = [], [], []
    for playlist, result in zip(lists, results):
        text = None if result.refused else " ".join(result.text)
        errors = None
        if text is not None and playlist.reference is not None:
            errors = count_errors(playlist.reference, text, playlist.language)
            referenced += errors
        per_stream.append(_rate(errors))
        offline_errors = _vs_offline(playlist, text)
        if offline_errors is not None:
            vs_offline += offline_errors
        per_stream_offline.append(_rate(offline_errors))
        streamed, alone = _errors_of(playlist, text), _errors_of(playlist, playlist.alone)
        increase.append(round(streamed.rate - alone.rate, 4) if streamed and alone else None)
    measured = [x for x in increase if x is not None]
    return {
        "wer": round(referenced.rate, 4) if referenced.reference_tokens else None,
        "wer_per_stream": per_stream,
        "wer_vs_offline": round(vs_offline.rate, 4) if vs_offline.reference_tokens else None,
        "wer_vs_offline_per_stream": per_stream_offline,
        "wer_increase_vs_alone_per_stream": increase,
        "max_wer_increase_vs_alone": max(measured) if measured else None,
    }


@contextlib.contextmanager
def _quiet_session_lines(quiet: bool) -> Iterator[None]:
    """While a progress bar runs, drop the WebSocket client's "session ... (model ...)" line per client
    (unless debugging); the level it had comes back afterwards, whatever happens."""
    sessions_log = logging.getLogger("woasr.clients.ws_client")
    level = sessions_log.level
    if quiet and not sessions_log.isEnabledFor(logging.DEBUG):
        sessions_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        sessions_log.setLevel(level)


def markdown_table(report: dict[str, Any]) -> str:
    lines = ["| streams | latency p50/p95/max ms | partial p50/p95 ms | WER | WER vs offline "
             "| max WER increase vs alone | refused | server CPU % | core-s per audio s | server RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for run in report["runs"]:
        lat, part = run["latency_ms"], run["partial_latency_ms"]
        lines.append(f"| {run['streams']} | {lat['p50']}/{lat['p95']}/{lat['max']} | {part['p50']}/{part['p95']} "
                     f"| {_percent(run['wer'])} | {_percent(run['wer_vs_offline'])} "
                     f"| {_percent(run['max_wer_increase_vs_alone'])} | {run['refused']} | {run['cpu_percent']} "
                     f"| {run['core_seconds_per_audio_second']} | {run['rss_mb']} |")
    lines.append(f"\nhighest stream count with committed p95 <= 2 s and no refusal: "
                 f"{report['max_streams_p95_under_2s']}")
    return "\n".join(lines)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def plot(report: dict[str, Any], out: str | os.PathLike[str]) -> None:
    """A PNG of committed latency p50/p95 (and partial p50 when measured) against the stream count.

    Seconds on y, one integer tick per stream count on x, the 2 s target as a
    dashed line, and the refused count next to every run that had refusals.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    runs = report["runs"]
    streams = [r["streams"] for r in runs]

    def seconds(values: list[float | None]) -> list[float]:
        return [v / 1000 if v is not None else float("nan") for v in values]

    p50 = seconds([r["latency_ms"]["p50"] for r in runs])
    p95 = seconds([r["latency_ms"]["p95"] for r in runs])
    partial = seconds([r["partial_latency_ms"]["p50"] for r in runs])

    fig = Figure(figsize=(8, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(streams, p95, "o-", color="tab:red", label="committed p95")
    ax.plot(streams, p50, "o-", color="tab:blue", label="committed p50")
    if any(v == v for v in partial):  # not all NaN: partials were measured
        ax.plot(streams, partial, "s--", color="tab:green", label="partial p50")
    best = report["max_streams_p95_under_2s"]
    ax.axhline(TARGET_P95_MS / 1000, color="grey", linestyle="--", linewidth=1,
               label=f"{TARGET_P95_MS / 1000:g} s target (most streams with p95 under it and no refusal: {best})")
    refusal_label = "run with refusals"
    for run, y in zip(runs, p95):
        if run["refused"]:
            measured = y == y  # NaN: every stream refused, no latency; marked on the x axis
            y = y if measured else 0.0
            ax.plot([run["streams"]], [y], "x", color="black", markersize=10, markeredgewidth=2, clip_on=False,
                    label=refusal_label)
            refusal_label = "_nolegend_"  # once in the legend
            last = run["streams"] == max(streams)  # keep the label inside the axes
            ax.annotate(f"{run['refused']}/{run['streams']} refused", (run["streams"], y),
                        textcoords="offset points", xytext=(-8 if last else 8, -8 if measured else 8),
                        ha="right" if last else "left", va="top" if measured else "bottom", fontsize=9,
                        bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none", "alpha": 0.8})
    top = max([v for v in p50 + p95 + partial if v == v] + [TARGET_P95_MS / 1000])
    ax.set_ylim(0, top * 1.15)
    ax.set_xticks(streams)
    if streams:
        ax.set_xlim(min(streams) - 0.5, max(streams) + 0.5)
    ax.set_xlabel("concurrent real-time streams")
    ax.set_ylabel("latency (s)")
    ax.grid(True, alpha=0.3)
    fig.legend(loc="outside lower center", ncols=2, fontsize=9)
    transport = {"tcp": "TCP", "ws": "WebSocket"}.get(report["transport"], report["transport"])
    transport += " + partials" if report.get("partials") else ""
    audio = runs[0].get("audio_s_per_stream") if runs else None
    head = f"woasr bench: {transport}, model {report.get('model') or 'unknown'}"
    if audio:
        head += f", {audio:g} s of audio per stream"
    detail = f"{report['server']} ({report.get('cpu_count')} CPUs)"
    ax.set_title(head + "\n" + "\n".join(textwrap.wrap(detail, 90)), fontsize=10)
    fig.savefig(out, dpi=120, format="png")


def soak_markdown(report: dict[str, Any]) -> str:
    """A soak's short summary: one table row, and what the RSS figures cover."""
    lat, slope = report["latency_ms"], report["rss_slope_mb_per_hour"]
    rss = (f"{report['rss_start_mb']}/{report['rss_end_mb']}/{report['rss_peak_mb']}"
           if report["rss_samples"] else "unknown")
    lines = ["| soak s | streams | sessions completed | refused | failed | latency p50/p95/max ms "
             "| server RSS start/end/peak MB | RSS slope MB/h | server CPU % |",
             "|---|---|---|---|---|---|---|---|---|",
             f"| {report['soak_elapsed_s']} | {report['streams']} | {report['sessions_completed']} "
             f"| {report['sessions_refused']} | {report['sessions_failed']} | {lat['p50']}/{lat['p95']}/{lat['max']} "
             f"| {rss} | {'-' if slope is None else slope} | {report['cpu_percent'] or '-'} |"]
    if report["rss_samples"]:
        lines.append(f"\nRSS slope: least squares over the {len(report['rss_samples'])} samples "
                     f"(every {report['rss_sample_every_s']:g} s) after a {report['rss_warmup_s']:g} s warm-up.")
    else:
        lines.append("\nServer RSS unknown: the bench did not start this server.")
    return "\n".join(lines)


def plot_soak(report: dict[str, Any], out: str | os.PathLike[str]) -> bool:
    """A PNG of the server's RSS over a soak, the warm-up shaded and the fitted slope drawn.

    False (and nothing written) when the RSS is unknown: a server the bench did not start.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    samples, slope, warmup = report["rss_samples"], report["rss_slope_mb_per_hour"], report["rss_warmup_s"]
    if not samples:
        log.warning("no RSS plot: the server's RSS is unknown (the bench did not start it)")
        return False
    t, mb = np.array(samples, float).T
    fig = Figure(figsize=(8, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    unit, per = ("min", 60) if t[-1] >= 600 else ("s", 1)
    ax.plot(t / per, mb, ".-", color="tab:blue", label="server RSS")
    ax.axvspan(0, warmup / per, color="grey", alpha=0.15, label=f"warm-up ({warmup:g} s, not fitted)")
    after = t >= warmup
    if slope is not None and after.sum() >= 2:
        fitted = mb[after].mean() + slope / 3600 * (t[after] - t[after].mean())
        ax.plot(t[after] / per, fitted, "--", color="tab:red", label=f"least squares: {slope:+.1f} MB/h")
    low, high = float(mb.min()), float(mb.max())
    margin = max(10.0, 0.1 * (high - low))
    ax.set_ylim(low - margin, high + margin)
    ax.set_xlabel(f"time since the soak began ({unit})")
    ax.set_ylabel("RSS (MB)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    lat = report["latency_ms"]
    ax.set_title(f"woasr bench --soak {report['soak_seconds']:g}: {report['streams']} looping streams, "
                 f"model {report.get('model') or 'unknown'}\nsessions: {report['sessions_completed']} completed, "
                 f"{report['sessions_refused']} refused, {report['sessions_failed']} failed; "
                 f"committed p50/p95 {lat['p50']}/{lat['p95']} ms", fontsize=10)
    fig.savefig(out, dpi=120, format="png")
    return True
