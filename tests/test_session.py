"""The sans-I/O session protocol with a scripted backend: no sockets, no threads."""

import numpy as np

from woasr.core.processor import DEFAULT_MIN_CHUNK_S, OnlineASRProcessor
from woasr.protocol.commands import Close, Configure, Flush
from woasr.protocol.events import Configured, Error, Final, Flushed, Partial, SessionOptions
from woasr.protocol.session import StreamSession

from tests.fakes import ScriptedASR, clock_audio, words_at

SCRIPT = words_at("one two three four five six seven eight nine ten")


def pcm(start, end):
    return (clock_audio(start, end) * 32767).astype("<i2").tobytes()


def transcribe(session, request):
    """The model call, made here as an inference engine would make it."""
    if request is None:
        return None
    return session.processor.asr.transcribe(request.audio, request.prompt, request.language)


def step(session, now):
    """One whole update."""
    return session.complete_update(transcribe(session, session.start_update()), now)


def drive(session, chunks, now=0.0):
    """Feed chunks as a transport would, running every update that falls due."""
    events = []
    for data in [*chunks, b""]:
        now += 0.1
        if data:
            events += session.receive_audio(data, now)
        while session.due():
            events += step(session, now)
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


def test_a_final_carries_the_lag_of_its_last_word():
    session = new_session()
    session.receive_audio(pcm(0, 1.0), now=10.0)  # one chunk: all its words arrived at 10.0
    assert step(session, now=10.2) == []  # a first hypothesis commits nothing
    session.receive_audio(pcm(1.0, 2.0), now=11.0)
    final, = [e for e in step(session, now=11.3) if isinstance(e, Final)]
    assert final.words[-1].end <= 1.0 and abs(final.lag_s - 1.3) < 1e-9
    assert session.stats.latencies[-1] == final.lag_s


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
    session = new_session(partials=True)
    drive(session, [pcm(t / 10, (t + 1) / 10) for t in range(30)])
    assert session.stats.latencies and all(0 <= x < 3 for x in session.stats.latencies)
    assert session.stats.partial_latencies and all(0 <= x < 1 for x in session.stats.partial_latencies)
    assert 0.5 <= session.stats.last_chunk_s < 0.7  # min_chunk, at 100 ms blocks
    assert session.stats.audio_s == np.float64(3.0)


def test_close_during_a_running_update_still_finishes_the_stream():
    session = new_session()
    session.receive_audio(pcm(0, 2.0), 0.1)
    request = session.start_update()  # a normal update is running ...
    session.close()  # ... when the client half-closes
    events = session.complete_update(transcribe(session, request), 0.2)
    assert not session.finished and session.due()
    events += step(session, 0.3)
    assert session.finished
    assert " ".join(e.text for e in events if isinstance(e, Final)) == "one two three four five"


def test_flush_during_a_running_update_is_answered_after_its_own_job():
    session = new_session()
    session.receive_audio(pcm(0, 1.2), 0.1)
    request = session.start_update()
    session.request_flush()
    first = session.complete_update(transcribe(session, request), 0.2)
    assert not any(isinstance(e, Flushed) for e in first)
    second = step(session, 0.3)
    assert isinstance(second[-1], Flushed)


def test_config_before_audio_sets_options_and_is_refused_after():
    session = new_session()
    (configured,) = session.configure({"partials": True, "min_chunk": 0.3, "prompt": "Kennedy", "language": "auto"})
    assert isinstance(configured, Configured)
    assert session.options == SessionOptions(None, "Kennedy", 0.3, True)
    assert session.processor.initial_prompt == "Kennedy" and session.processor.language is None
    session.receive_audio(pcm(0, 0.1), 0.1)
    (error,) = session.configure({"partials": False, "prompt": "Ted"})
    assert error.code == "config_after_audio" and "partials" in error.message and session.partials
    assert session.options.prompt == "Kennedy"  # all or nothing
    # Language and prompt may change mid-stream: the next model call uses them.
    (configured,) = session.configure({"prompt": "Sorensen", "language": "en"})
    assert isinstance(configured, Configured) and session.options.language == "en"
    assert session.processor.initial_prompt == "Sorensen" and session.processor.language == "en"


def test_voice_activity_options_set_the_sessions_detector():
    session = new_session()
    (configured,) = session.configure({"min_silence_ms": 800, "vad_threshold": 0.6, "speech_pad_ms": 100})
    assert (session.vad.min_silence_s, session.vad.threshold, session.vad.speech_pad_s) == (0.8, 0.6, 0.1)
    assert configured.options.min_silence_ms == 800
    (error,) = session.configure({"min_silence_ms": 50})
    assert error.code == "bad_value" and session.vad.min_silence_s == 0.8


def test_bad_config_changes_nothing_and_says_which_field():
    session = StreamSession(OnlineASRProcessor(ScriptedASR(SCRIPT), "en"), languages=("en",))
    for fields, code in [
        ({"partials": "yes"}, "bad_value"),
        ({"vac": "yes"}, "bad_value"),
        ({"endpointing": 1}, "bad_value"),
        ({"min_chunk": 0}, "bad_value"),
        ({"min_chunk": True}, "bad_value"),
        ({"language": 3}, "bad_value"),
        ({"language": "de"}, "bad_value"),
        ({"prompt": "x" * 5000}, "bad_value"),
        ({"partials": True, "partial": True}, "unknown_field"),
    ]:
        (error,) = session.configure(fields)
        assert isinstance(error, Error) and error.code == code, fields
    assert session.options == SessionOptions("en", "", DEFAULT_MIN_CHUNK_S, False)  # the defaults, untouched
    session.configure({"language": None})
    assert session.options.language == "en"  # an English-only model stays English


def test_commands_flush_and_close():
    session = new_session()
    session.receive_audio(pcm(0, 1.2), 0.1)
    assert session.receive_command(Flush()) == [] and session.due()
    session.receive_command(Close())
    events = drive(session, [])
    assert session.finished and isinstance(events[-1], Flushed)  # the flush is answered even after close
    assert session.receive_command(Configure({"partials": True}))[0].code == "config_after_audio"


def test_partials_are_sent_only_when_they_change_and_cleared_at_the_end():
    session = new_session(partials=True)
    events = drive(session, [pcm(t / 10, (t + 1) / 10) for t in range(20)])
    partials = [e for e in events if isinstance(e, Partial)]
    assert partials and all(a.text != b.text or a.beg_ms != b.beg_ms for a, b in zip(partials, partials[1:]))
    session.close()
    last = [e for e in drive(session, []) if isinstance(e, Partial)][-1]
    assert last.text == "" and last.beg_ms == last.end_ms > 0


def test_initial_prompt_precedes_committed_text_and_yields_to_it():
    processor = OnlineASRProcessor(ScriptedASR(SCRIPT))
    processor.initial_prompt = "Names: Ada."
    assert processor.prompt() == "Names: Ada."
    processor.insert_audio(clock_audio(0, 2.0))
    processor.finish()  # commits "one two three four five" and cuts the buffer after them
    assert processor.prompt() == "Names: Ada. one two three four five"
    processor.initial_prompt = "Glossary " + "word " * 100
    prompt = processor.prompt()
    assert len(prompt) <= 200 and prompt.endswith("word one two three four five")


class HeardASR:
    """Hears one word per buffer and remembers how much audio each call carried."""

    def __init__(self):
        self.seconds = []

    def transcribe(self, audio, prompt, language, prefix=""):
        from woasr.core.records import Segment, Transcription, Word

        self.seconds.append(len(audio) / 16000)
        word = Word(0.1, min(0.5, len(audio) / 16000), " word", 0.9)
        return Transcription((Segment(0.1, word.end, (word,)),), "en")


def test_with_vac_silence_never_reaches_the_model_and_an_utterance_end_is_due_at_once(audio_dir):
    from woasr.audio_io import load_audio
    from woasr.clients.sources import to_pcm16
    from woasr.protocol.events import SpeechStarted, UtteranceEnded

    speech = to_pcm16(load_audio(audio_dir / "en" / "ljspeech_LJ001-0002.wav"))  # 1.9 s
    silence = bytes(16000 * 2 * 4)  # 4 s of digital silence
    asr = HeardASR()
    session = StreamSession(OnlineASRProcessor(asr, "en"), min_chunk=10.0)  # updates only when VAC asks
    assert session.configure({"endpointing": True})[0].options.vac
    events = drive(session, [c[i : i + 3200] for c in (silence, speech, silence) for i in range(0, len(c), 3200)])
    assert sum(asr.seconds) < 5.0  # of 9.9 s received, the model heard the speech (and little else)
    kinds = [type(e) for e in events]
    assert kinds[0] is SpeechStarted and 3.5 < events[0].time_s < 4.1
    assert kinds.index(Final) < kinds.index(UtteranceEnded)
    assert UtteranceEnded in kinds and not session.closed  # ended by voice activity, not by the client
    session.close()
    assert session.due()


# -- the lifecycle as an explicit state, its call order enforced -------------------
def test_the_state_follows_every_update_and_the_close():
    from woasr.protocol.state import SessionState as S

    session = new_session()
    assert session.state is S.OPEN and not session.closed
    session.receive_audio(pcm(0, 1.0), 1.0)
    request = session.start_update()
    assert session.state is S.UPDATING and not session.due()
    session.close()  # the client ends while the model runs
    assert session.state is S.CLOSED_UPDATING and session.closed and not session.due()
    session.complete_update(transcribe(session, request), 1.2)
    assert session.state is S.CLOSED and session.due()  # the final update is due at once
    request = session.start_update()
    assert session.state is S.FINISHING
    events = session.complete_update(transcribe(session, request), 1.5)
    assert session.state is S.FINISHED and session.finished and not session.due()
    assert "one" in " ".join(e.text for e in events if isinstance(e, Final))


def test_a_call_out_of_order_raises_and_changes_nothing():
    import pytest

    from woasr.protocol.state import SessionState as S
    from woasr.protocol.state import SessionStateError

    session = new_session()
    with pytest.raises(SessionStateError, match="complete_update"):
        session.complete_update(None, 0.0)  # no update was started
    assert session.state is S.OPEN
    session.receive_audio(pcm(0, 1.0), 1.0)
    session.start_update()
    with pytest.raises(SessionStateError, match="start_update.*updating"):
        session.start_update()  # one update at a time
    assert session.state is S.UPDATING
    session.complete_update(None, 1.0)
    session.close()
    drive(session, [])
    with pytest.raises(SessionStateError):
        session.start_update()  # a finished session has nothing more to do
    session.close()  # closing stays idempotent
    assert session.state is S.FINISHED


def test_every_move_missing_from_the_table_is_refused():
    import pytest

    from woasr.protocol.state import TRANSITIONS, Move, SessionState, SessionStateError, advance

    for state in SessionState:
        assert (state, Move.CLOSE) in TRANSITIONS  # a close is always allowed
        for move in Move:
            if (state, move) in TRANSITIONS:
                assert advance(state, move) is TRANSITIONS[state, move]
            else:
                with pytest.raises(SessionStateError):
                    advance(state, move)


def test_clear_discards_the_audio_received_and_not_committed():
    from woasr.protocol.commands import Clear
    from woasr.protocol.events import Cleared

    session = new_session()
    session.receive_audio(pcm(0, 1.0), 1.0)
    (cleared,) = session.receive_command(Clear())
    assert isinstance(cleared, Cleared) and session.pending_s == 1.0  # its time still passes
    assert session.start_update() is None  # but the model hears none of it
    session.complete_update(None, 1.0)
    assert session.processor.received_until == 16000 and session.processor.buffer_s == 0
    # A clear during an update: that update's words are not sent, the audio after it is heard.
    session.receive_audio(pcm(1.0, 2.0), 2.0)
    request = session.start_update()
    session.receive_command(Clear())
    assert not session.complete_update(transcribe(session, request), 2.1)
    assert session.processor.buffer_s == 0
    session.receive_audio(pcm(2.0, 4.2), 4.2)
    session.close()
    events = []
    while not session.finished:
        events += session.complete_update(transcribe(session, session.start_update()), 5.0)
    words = [w for e in events if isinstance(e, Final) for w in e.words]
    assert words and all(w.start >= 1.95 for w in words), events
