"""The local inference engine and the session runner with deterministic fake backends.

No model and no sockets: fake backends that take a fixed time, real asyncio and
real worker threads.
"""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from woasr.core.processor import OnlineASRProcessor
from woasr.core.records import Transcription, TranscriptionRequest
from woasr.engine import LocalEngine
from woasr.protocol.session import StreamSession
from woasr.server.runner import SessionRunner

from tests.fakes import ScriptedASR, clock_audio, words_at


class SlowASR:
    """Takes ``delay`` seconds per call; records who called when, and how many ran at once."""

    def __init__(self, inner=None, delay: float = 0.05) -> None:
        self.inner = inner
        self.delay = delay
        self.calls: list[str] = []
        self.running: dict[str, int] = {}
        self.max_running: dict[str, int] = {}
        self.max_total = 0
        self._lock = threading.Lock()

    def transcribe(self, audio, prompt: str, language: str | None, prefix: str = "") -> Transcription:
        tag = language or ""
        with self._lock:
            self.calls.append(tag)
            self.running[tag] = self.running.get(tag, 0) + 1
            self.max_running[tag] = max(self.max_running.get(tag, 0), self.running[tag])
            self.max_total = max(self.max_total, sum(self.running.values()))
        time.sleep(self.delay)
        with self._lock:
            self.running[tag] -= 1
        return self.inner.transcribe(audio, prompt, None) if self.inner else Transcription(())


def request(tag: str) -> TranscriptionRequest:
    return TranscriptionRequest(np.zeros(1600, np.float32), "", tag)


async def test_waiting_calls_run_oldest_audio_first():
    asr = SlowASR(delay=0.05)
    engine = LocalEngine(lambda: asr, workers=1)
    busy = asyncio.create_task(engine.transcribe(request("first")))
    await asyncio.sleep(0.01)  # the worker is busy: the next three wait
    waiting = [asyncio.create_task(engine.transcribe(request(tag), since=since))
               for tag, since in (("newest", 3.0), ("oldest", 1.0), ("middle", 2.0))]
    await asyncio.sleep(0.01)
    assert engine.queued == 3
    await asyncio.gather(busy, *waiting)
    assert asr.calls == ["first", "oldest", "middle", "newest"]
    engine.close()


async def test_results_carry_queue_wait_and_inference_time():
    asr = SlowASR(delay=0.05)
    engine = LocalEngine(lambda: asr, workers=1)
    first, second = await asyncio.gather(engine.transcribe(request("a")), engine.transcribe(request("b")))
    assert first.queued_s < 0.03 <= 0.04 <= first.inference_s
    assert second.queued_s >= 0.04  # it waited for the first call
    engine.close()


async def test_a_cancelled_waiter_gives_its_turn_away():
    asr = SlowASR(delay=0.05)
    engine = LocalEngine(lambda: asr, workers=1)
    busy = asyncio.create_task(engine.transcribe(request("busy")))
    await asyncio.sleep(0.01)
    gone = asyncio.create_task(engine.transcribe(request("gone"), since=0.0))
    kept = asyncio.create_task(engine.transcribe(request("kept"), since=1.0))
    await asyncio.sleep(0.01)
    gone.cancel()
    await asyncio.gather(busy, kept)
    assert asr.calls == ["busy", "kept"] and engine.queued == 0
    engine.close()


async def test_a_call_cancelled_while_running_keeps_its_worker_until_it_really_ends():
    """Its peer left mid-call: the thread computes on, so the next call must wait for it, not run
    beside it (before, the slot was freed at once and ``workers`` + 1 calls ran)."""
    asr = SlowASR(delay=0.2)
    engine = LocalEngine(lambda: asr, workers=1)
    left = asyncio.create_task(engine.transcribe(request("left")))
    await asyncio.sleep(0.05)  # running on the one worker
    left.cancel()
    await asyncio.gather(left, return_exceptions=True)
    await engine.transcribe(request("next"))
    assert asr.calls == ["left", "next"] and asr.max_total == 1
    engine.close()


async def test_an_aborted_session_withdraws_its_queued_call_at_once():
    """The runner of a departed peer cancels its call still waiting for a worker: it never runs."""
    asr = SlowASR(delay=0.2)
    engine = LocalEngine(lambda: asr, workers=1)
    busy = asyncio.create_task(engine.transcribe(request("busy")))
    await asyncio.sleep(0.02)
    runner = new_runner(engine, asr, "gone")
    runner.session.receive_audio(b"\0\0" * 16000, 0.0)
    running = asyncio.create_task(runner.run())
    await asyncio.sleep(0.02)
    assert engine.queued == 1
    runner.abort()
    await asyncio.wait_for(running, 1.0)  # returns at once, not after the busy call
    assert engine.queued == 0
    await busy
    assert asr.calls == ["busy"]
    engine.close()


def file_job(asr: SlowASR, tag: str):
    """A whole-file job as the REST endpoint hands it to ``engine.run``: one blocking model call."""
    return lambda: asr.transcribe(np.zeros(1600, np.float32), "", tag)


async def test_waiting_streaming_calls_go_before_waiting_file_jobs():
    """Live streams first: a file job queued earlier (with older audio, even) waits for every
    streaming call queued after it; the file job already running is not interrupted."""
    asr = SlowASR(delay=0.01)
    engine = LocalEngine(lambda: asr, workers=1)
    gate = threading.Event()  # the running file holds the one worker until everything else is queued

    def running_file():
        gate.wait(10)
        return file_job(asr, "file-running")()

    running = asyncio.create_task(engine.run(running_file))
    await asyncio.sleep(0.01)
    file_waiting = asyncio.create_task(engine.run(file_job(asr, "file-waiting"), since=0.0))
    await asyncio.sleep(0.01)
    live = [asyncio.create_task(engine.transcribe(request(tag), since=since))
            for tag, since in (("live-newer", 2.0), ("live-older", 1.0))]
    await asyncio.sleep(0.01)
    assert engine.queued == 3 and asr.calls == []
    gate.set()
    await asyncio.gather(running, file_waiting, *live)
    assert asr.calls == ["file-running", "live-older", "live-newer", "file-waiting"]
    assert asr.max_total == 1
    engine.close()


async def test_file_jobs_count_for_admission_while_in_flight():
    """The REST endpoint holds ``admission.job()`` from admission to answer: while it does, the
    job takes a place like a session, so sessions (and other files) are refused at capacity."""
    engine = LocalEngine(lambda: SlowASR(), workers=1)
    engine.admission.max_sessions = 2
    assert engine.admission.refusal(active=1) is None
    with engine.admission.job():
        assert engine.admission.jobs == 1
        assert "limit of 2" in engine.admission.refusal(active=1)  # one session + one file: full
        assert "file transcriptions" in engine.admission.refusal(active=1)
        assert engine.admission.refusal(active=0) is None
        with engine.admission.job():
            assert engine.admission.refusal(active=0) is not None  # two files: no room for a stream
    assert engine.admission.jobs == 0 and engine.admission.refusal(active=1) is None  # released
    measured = engine.admission
    measured.max_sessions, measured.compute_per_update, measured.max_chunk = 0, 0.5, 2.0
    assert measured.refusal(active=3) is None  # 4 x 0.5 s of audio per update: fits
    with measured.job():
        assert "1 of them file transcriptions" in measured.refusal(active=3)  # 5 x 0.5 s: refused
    engine.close()


SCRIPT = words_at(" ".join(f"w{i}" for i in range(200)), step=0.3)


class Feeder:
    """A real-time client: 100 ms blocks of self-clocking audio, every ``period`` seconds."""

    def __init__(self, runner: SessionRunner, period: float = 0.05) -> None:
        self.runner, self.period = runner, period

    async def feed(self, seconds: float, start: float = 0.0) -> None:
        loop = asyncio.get_running_loop()
        for t in np.arange(start, start + seconds, 0.1):
            data = (clock_audio(t, t + 0.1) * 32767).astype("<i2").tobytes()
            self.runner.post(self.runner.session.receive_audio(data, loop.time()))
            self.runner.wake()
            await asyncio.sleep(self.period)


def new_runner(engine: LocalEngine, asr: SlowASR, tag: str, min_chunk: float = 0.3) -> SessionRunner:
    processor = OnlineASRProcessor(asr, tag)
    async def send(events) -> None:
        pass
    return SessionRunner(tag, StreamSession(processor, min_chunk), engine, send)


async def test_one_call_in_flight_per_session_and_no_session_starves():
    asr = SlowASR(ScriptedASR(SCRIPT), delay=0.04)
    engine = LocalEngine(lambda: asr, workers=1)
    runners = [new_runner(engine, asr, tag) for tag in ("long", "s1", "s2")]
    running = [asyncio.create_task(r.run()) for r in runners]
    long_feed = asyncio.create_task(Feeder(runners[0], period=0.01).feed(20.0))  # 10x real time
    await asyncio.gather(Feeder(runners[1]).feed(1.5), Feeder(runners[2]).feed(1.5))
    for runner in runners[1:]:
        runner.finish()
    await asyncio.wait_for(asyncio.gather(*running[1:]), 10)  # the short ones finish despite the long one
    long_feed.cancel()
    runners[0].finish()
    await asyncio.wait_for(running[0], 30)
    assert all(count == 1 for count in asr.max_running.values()), asr.max_running
    assert asr.max_total == 1
    assert all(r.session.finished for r in runners)
    # Turns alternate: while the short sessions streamed, the long one never ran twice in a row
    # while another had audio waiting long enough.
    short_calls = [i for i, tag in enumerate(asr.calls) if tag != "long"]
    assert short_calls and max(short_calls) < len(asr.calls) - 1
    engine.close()


async def test_effective_chunk_grows_with_load_and_shrinks_back():
    asr = SlowASR(ScriptedASR(SCRIPT), delay=0.06)
    engine = LocalEngine(lambda: asr, workers=1)
    runners = [new_runner(engine, asr, f"s{i}", min_chunk=0.2) for i in range(5)]
    running = [asyncio.create_task(r.run()) for r in runners]
    chunks: dict[str, list[float]] = {r.session_id: [] for r in runners}

    def watch(runner: SessionRunner) -> None:
        session, updates = runner.session, runner.session.stats.updates
        if updates and (not chunks[runner.session_id] or updates != len(chunks[runner.session_id])):
            chunks[runner.session_id].append(session.stats.last_chunk_s)

    async def sample() -> None:
        while True:
            for r in runners:
                watch(r)
            await asyncio.sleep(0.005)

    sampler = asyncio.create_task(sample())
    # Alone: about min_chunk per update (100 ms blocks every 50 ms: 2x real time).
    await Feeder(runners[0]).feed(2.0)
    alone = list(chunks["s0"])
    # Five at once: each waits for the others' calls, its audio piles up meanwhile.
    await asyncio.gather(*(Feeder(r).feed(3.0, start=2.0 if r is runners[0] else 0.0) for r in runners))
    loaded = chunks["s0"][len(alone):]
    for r in runners[1:]:
        r.finish()
    await asyncio.gather(*running[1:])
    # Alone again: back to small chunks.
    mark = len(chunks["s0"])
    await Feeder(runners[0]).feed(2.0, start=5.0)
    after = chunks["s0"][mark + 1 :]
    sampler.cancel()
    runners[0].finish()
    await running[0]
    engine.close()
    assert np.median(alone) <= 0.35
    assert np.median(loaded) >= 2 * np.median(alone), (alone, loaded)
    assert np.median(after) <= 0.35, after
    assert runners[0].session.stats.audio_s == 7.0  # nothing dropped


def test_admission_follows_measured_compute_and_the_hard_limit():
    from woasr.engine.admission import Admission

    admission = Admission(workers=1, max_chunk=2.0)
    assert admission.refusal(active=10) is None  # nothing measured yet: admit
    for _ in range(50):
        admission.observe(0.5)  # half a second of compute per update
    assert admission.capacity == 4
    assert admission.refusal(active=3) is None  # 4 x 0.5 s = 2 s of audio per update: fits
    assert "capacity" in admission.refusal(active=4)  # 5 x 0.5 s = 2.5 s: refused
    assert admission.refusal(active=0) is None  # a lone session is always admitted
    for _ in range(100):
        admission.observe(0.1)  # load fell (short buffers, say): room again
    assert admission.refusal(active=4) is None and admission.capacity in (19, 20)
    assert Admission(workers=2, max_chunk=2.0, compute_per_update=0.5).capacity == 8
    limited = Admission(max_sessions=2)
    assert limited.refusal(active=1) is None and "limit of 2" in limited.refusal(active=2)


def test_worker_layout_is_one_single_thread_worker_per_core_unless_told():
    from woasr.engine.sizing import WorkerLayout, worker_layout

    assert worker_layout("cpu", cores=2) == WorkerLayout(workers=2, threads=1)
    assert worker_layout("cpu", cores=8) == WorkerLayout(workers=8, threads=1)
    assert worker_layout("cpu", workers=1, cores=2) == WorkerLayout(workers=1, threads=2)  # the cores shared out
    assert worker_layout("cpu", workers=4, cores=2) == WorkerLayout(workers=4, threads=1)  # never below one
    assert worker_layout("cpu", workers=1, threads=3, cores=2) == WorkerLayout(workers=1, threads=3)  # told
    assert worker_layout("cuda", cores=2) == WorkerLayout(workers=2, threads=0)


def test_admission_chunk_defaults_to_half_the_latency_target():
    from woasr.core.processor import ProcessorSettings
    from woasr.server.config import ServerConfig

    def config(max_chunk: float, latency_target: float = 2.0, min_chunk: float = 0.5) -> ServerConfig:
        return ServerConfig("127.0.0.1", 0, min_chunk=min_chunk, idle_timeout=60, workers=2,
                            settings=ProcessorSettings(), max_chunk=max_chunk, latency_target=latency_target)

    assert config(0.0).admission_chunk == 1.0  # two agreeing updates of 1 s each: the 2 s target
    assert config(0.0, min_chunk=1.5).admission_chunk == 1.5  # never below the chunk itself
    assert config(0.0, latency_target=0).admission_chunk == 0.5  # no target: the admitted ones never wait
    assert config(2.0).admission_chunk == 2.0


def test_admission_refuses_while_the_admitted_sessions_miss_the_latency_target():
    from woasr.engine.admission import MIN_LATENCY_SAMPLES, Admission

    admission = Admission(workers=2, max_chunk=2.0, compute_per_update=0.1, latency_target=2.0)
    admission.observe_committed([1.0] * MIN_LATENCY_SAMPLES)
    assert admission.latency_p95 == 1.0 and admission.refusal(3) is None  # compute says 40 would fit
    admission.observe_committed([2.6] * (MIN_LATENCY_SAMPLES // 5))  # a fifth of the words now come late
    assert admission.latency_p95 > 2.0
    assert "2.6 s after speech" in admission.refusal(3)
    assert admission.refusal(0) is None  # nobody is served: nothing to protect
    admission.load_fell()  # a session ended: the late words were measured under more load
    assert admission.latency_p95 is None and admission.refusal(3) is None
    admission.observe_committed([2.6] * MIN_LATENCY_SAMPLES)
    assert admission.refusal(3) is not None
    admission.observe_committed([1.0] * 200)  # the recent window forgets the late words
    assert admission.refusal(3) is None
    assert Admission(latency_target=0).refusal(1) is None  # off


async def test_slow_sessions_make_admission_refuse_the_next_one():
    from woasr.engine.admission import MIN_LATENCY_SAMPLES

    asr = SlowASR(ScriptedASR(SCRIPT), delay=1.0)  # each update takes 1 s on the one worker: words come late
    engine = LocalEngine(lambda: asr, workers=1)
    runners = [new_runner(engine, asr, f"s{i}", min_chunk=0.2) for i in range(2)]
    running = [asyncio.create_task(r.run()) for r in runners]
    await asyncio.gather(*(Feeder(r, period=0.02).feed(4.5) for r in runners))
    for runner in runners:
        runner.finish()
    await asyncio.wait_for(asyncio.gather(*running), 30)
    # The runners told admission every committed word's latency; two sessions already miss 2 s.
    assert len(engine.admission.recent_latencies) >= MIN_LATENCY_SAMPLES
    assert engine.admission.latency_p95 > 2.0 and "after speech" in engine.admission.refusal(2)
    engine.close()
