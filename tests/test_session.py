"""The sans-I/O session protocol with a scripted backend: no sockets, no threads."""

import numpy as np

from woasr.core.processor import OnlineASRProcessor
from woasr.protocol.events import Error, Final, Flushed, Partial
from woasr.protocol.session import StreamSession

from tests.fakes import ScriptedASR, clock_audio, words_at

SCRIPT = words_at("one two three four five six seven eight nine ten")


def pcm(start, end):
    return (clock_audio(start, end) * 32767).astype("<i2").tobytes()


def drive(session, chunks, now=0.0):
    """Feed chunks as a transport would, running every update that falls due."""
    events = []
    for data in [*chunks, b""]:
        now += 0.1
        if data:
            events += session.receive_audio(data, now)
        while session.due():
            events += session.complete_update(session.start_update()(), now)
    return events


def new_session(**kw):
    return StreamSession(OnlineASRProcessor(ScriptedASR(SCRIPT)), min_chunk=0.5, **kw)


def test_any_chunking_gives_the_same_finals_and_odd_bytes_are_carried():
    whole = pcm(0, 4.2)
    results = []
    for size in (1, 3, 4097, 3200):
        session = new_session()
        events = drive(session, [whole[i : i + size] for i in range(0, len(whole), size)])
        session.close()
        events += drive(session, [])
        assert session.finished
        results.append(" ".join(e.text for e in events if isinstance(e, Final)))
    assert results[0] == "one two three four five six seven eight nine ten"
    assert len(set(results)) == 1


def test_finals_have_contiguous_seq_and_increasing_times():
    session = new_session()
    events = drive(session, [pcm(t / 10, (t + 1) / 10) for t in range(42)])
    session.close()
    events += drive(session, [])
    finals = [e for e in events if isinstance(e, Final)]
    assert [f.seq for f in finals] == list(range(len(finals)))
    assert all(a.end_ms <= b.beg_ms for a, b in zip(finals, finals[1:]))


def test_flush_commits_everything_then_says_flushed():
    session = new_session()
    events = drive(session, [pcm(0, 1.2)])
    session.request_flush()
    events = drive(session, [])
    assert isinstance(events[-1], Flushed)
    assert " ".join(e.text for e in events if isinstance(e, Final)).endswith("three")


def test_partials_only_when_asked():
    assert not any(isinstance(e, Partial) for e in drive(new_session(), [pcm(0, 2)]))
    assert any(isinstance(e, Partial) for e in drive(new_session(partials=True), [pcm(0, 2)]))


def test_audio_after_close_is_reported_not_dropped_silently():
    session = new_session()
    session.close()
    (error,) = session.receive_audio(b"\0\0", 1.0)
    assert isinstance(error, Error) and error.code == "closed"


def test_latency_is_measured_from_audio_arrival():
    session = new_session()
    drive(session, [pcm(t / 10, (t + 1) / 10) for t in range(30)])
    assert session.stats.latencies and all(0 <= x < 3 for x in session.stats.latencies)
    assert session.stats.audio_s == np.float64(3.0)


def test_close_during_a_running_update_still_finishes_the_stream():
    session = new_session()
    session.receive_audio(pcm(0, 2.0), 0.1)
    job = session.start_update()  # a normal update is running ...
    session.close()  # ... when the client half-closes
    events = session.complete_update(job(), 0.2)
    assert not session.finished and session.due()
    events += session.complete_update(session.start_update()(), 0.3)
    assert session.finished
    assert " ".join(e.text for e in events if isinstance(e, Final)) == "one two three four five"


def test_flush_during_a_running_update_is_answered_after_its_own_job():
    session = new_session()
    session.receive_audio(pcm(0, 1.2), 0.1)
    job = session.start_update()
    session.request_flush()
    first = session.complete_update(job(), 0.2)
    assert not any(isinstance(e, Flushed) for e in first)
    second = session.complete_update(session.start_update()(), 0.3)
    assert isinstance(second[-1], Flushed)
