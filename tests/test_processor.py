"""OnlineASRProcessor with a scripted backend: prompt, trimming, hard cap, finish."""

import numpy as np
import pytest

from woasr.core.audio import SAMPLE_RATE
from woasr.core.processor import OnlineASRProcessor, ProcessorSettings
from woasr.core.records import Word

from tests.fakes import ScriptedASR, clock_audio, words_at

SENTENCES = " ".join(f"sentence {i} has five words." for i in range(40))


def stream(processor, duration, chunk=0.5):
    """Feed clock audio in chunks; return committed words and the max buffer length."""
    committed, max_buffer = [], 0.0
    t = 0.0
    while t < duration:
        end = min(t + chunk, duration)
        processor.insert_audio(clock_audio(t, end))
        committed += processor.process().committed
        max_buffer = max(max_buffer, processor.buffer_s)
        t = end
    committed += processor.finish().committed
    return committed, max_buffer


def test_streams_every_word_once_in_order_and_finish_delivers_the_last():
    script = words_at(SENTENCES)
    processor = OnlineASRProcessor(ScriptedASR(script, segment_every=5))
    committed, _ = stream(processor, script[-1].end + 0.05)
    assert [w.text for w in committed] == [w.text for w in script]


def test_finish_transcribes_audio_inserted_after_the_last_update():
    script = words_at("hello there general kenobi")
    processor = OnlineASRProcessor(ScriptedASR(script))
    processor.insert_audio(clock_audio(0, 1.0))
    first = processor.process()
    processor.insert_audio(clock_audio(1.0, 2.0))
    last = processor.finish()
    assert [w.text.strip() for w in first.committed + last.committed] == ["hello", "there", "general", "kenobi"]
    assert processor.finish().committed == ()


def test_int16_pcm_is_accepted():
    processor = OnlineASRProcessor(ScriptedASR([]))
    processor.insert_audio(np.zeros(1600, dtype=np.int16))
    assert processor.buffer_s == pytest.approx(0.1)
    with pytest.raises(TypeError):
        processor.insert_audio(np.zeros(10, dtype=np.int64))


def test_buffer_is_trimmed_at_committed_segment_ends():
    script = words_at(SENTENCES)  # 200 words over 80 s
    processor = OnlineASRProcessor(ScriptedASR(script, segment_every=5), settings=ProcessorSettings(trim_s=5.0))
    committed, max_buffer = stream(processor, script[-1].end + 0.05)
    assert max_buffer < 5.0 + 2.5
    assert len(committed) == len(script)


def test_sentence_ends_trim_when_there_are_no_segment_boundaries():
    script = words_at(SENTENCES)
    processor = OnlineASRProcessor(ScriptedASR(script), settings=ProcessorSettings(trim_s=5.0))
    committed, max_buffer = stream(processor, script[-1].end + 0.05)
    assert max_buffer < 5.0 + 3.0
    assert [w.text for w in committed] == [w.text for w in script]


def test_prompt_is_committed_text_before_the_buffer_at_most_200_chars():
    script = words_at(SENTENCES)
    asr = ScriptedASR(script, segment_every=5)
    processor = OnlineASRProcessor(asr, settings=ProcessorSettings(trim_s=5.0))
    stream(processor, 60.0)
    prompts = [p for _, _, p in asr.calls if p]
    assert prompts, "trimming should have moved committed text into the prompt"
    assert all(len(p) <= 200 for p in prompts)
    # Every prompt is the tail of the text committed before that buffer's start.
    for start, _, prompt in asr.calls:
        if prompt:
            before = "".join(w.text for w in script if w.end <= start + 1e-6).strip()
            assert before.endswith(prompt)
    assert max(len(p) for p in prompts) > 150


def test_hard_cap_bounds_the_buffer_when_nothing_agrees():
    script = words_at(" ".join(f"w{i}" for i in range(300)), step=0.4)  # two minutes of speech
    processor = OnlineASRProcessor(ScriptedASR(script, drift=True), settings=ProcessorSettings(max_buffer_s=10.0, trim_s=5.0))
    committed, max_buffer = stream(processor, 120.0)
    assert max_buffer <= 10.0 + 0.5
    # Forced commits still deliver speech, in order, each word once.
    assert len(committed) > 250
    assert all(a.end <= b.start + 1e-9 for a, b in zip(committed, committed[1:]))


def test_silence_only_stream_stays_bounded():
    processor = OnlineASRProcessor(ScriptedASR([]), settings=ProcessorSettings(max_buffer_s=8.0, trim_s=4.0))
    committed, max_buffer = stream(processor, 60.0)
    assert committed == [] and max_buffer <= 8.5


def test_hallucinated_segments_and_loops_are_not_committed():
    from woasr.core.records import Segment, Transcription

    class Hallucinating:
        def transcribe(self, audio, prompt, language, prefix=""):
            loop = tuple(Word(1 + i * 0.3, 1.2 + i * 0.3, f" {t}") for i, t in enumerate("thank you. thank you. thank you. thank you.".split()))
            silent = Segment(0.0, 1.0, (Word(0.0, 0.5, " Subscribe!"),), no_speech_prob=0.9, avg_logprob=-1.5)
            looping = Segment(1.0, 2.0, loop)
            return Transcription((silent, looping), "en")

    processor = OnlineASRProcessor(Hallucinating())
    processor.insert_audio(np.zeros(SAMPLE_RATE * 3, dtype=np.float32))
    processor.process()
    text = processor.finish().committed_text
    assert "Subscribe" not in text
    assert text.lower().count("thank you") == 2


def test_reset_starts_a_new_stream():
    script = words_at("one two three")
    processor = OnlineASRProcessor(ScriptedASR(script))
    stream(processor, 1.5)
    processor.reset()
    assert processor.buffer_s == 0 and processor.buffer_offset == 0
    committed, _ = stream(processor, 1.5)
    assert [w.text.strip() for w in committed] == ["one", "two", "three"]


def test_committed_words_inside_the_buffer_are_the_prefix_and_the_transcript_is_unchanged():
    script = words_at(SENTENCES)
    plain = OnlineASRProcessor(ScriptedASR(script, segment_every=5))
    forcing_asr = ScriptedASR(script, segment_every=5, forces_prefix=True)
    forcing = OnlineASRProcessor(forcing_asr)
    expected, _ = stream(plain, script[-1].end + 0.05)
    committed, _ = stream(forcing, script[-1].end + 0.05)
    assert [w.text for w in committed] == [w.text for w in expected] == [w.text for w in script]
    assert [(w.start, w.end) for w in committed] == [(w.start, w.end) for w in expected]
    # The fake asserts each prefix is exactly the buffer's first words; most updates had one.
    assert sum(bool(p) for p in forcing_asr.prefixes) > len(forcing_asr.prefixes) // 2


def test_prefix_holds_only_committed_words_after_the_buffer_start():
    script = words_at(SENTENCES)
    asr = ScriptedASR(script, segment_every=5)
    processor = OnlineASRProcessor(asr, settings=ProcessorSettings(trim_s=5.0))
    for t in np.arange(0.0, 30.0, 0.5):
        processor.insert_audio(clock_audio(t, t + 0.5))
        processor.process()
    processor.insert_audio(clock_audio(30.0, 30.5))
    committed = processor.hypothesis.last_committed_end
    request = processor.prepare()
    start = processor.buffer_offset / SAMPLE_RATE
    inside = [w.text.strip() for w in script if start <= w.start and w.end <= committed]
    assert request.prefix.split() == inside and inside
    assert request.prompt.split()[-1] == next(w for w in reversed(script) if w.end <= start + 1e-3).text.strip()


class CountingASR:
    """Hears nothing (or, with ``pending``, a word that never agrees) and notes each call's new audio."""

    def __init__(self, pending: bool = False) -> None:
        self.pending = pending
        self.buffers: list[float] = []

    def transcribe(self, audio, prompt, language, prefix=""):
        from woasr.core.records import Segment, Transcription

        self.buffers.append(len(audio) / SAMPLE_RATE)
        if not self.pending:
            return Transcription(())
        word = Word(0.0, 0.2, f" maybe{len(self.buffers)}")
        return Transcription((Segment(0.0, 0.2, (word,)),))


def speech_between_pauses(audio_dir):
    from woasr.audio_io import load_audio

    speech = load_audio(audio_dir / "en" / "ljspeech_LJ001-0002.wav")  # 1.9 s
    pause = np.zeros(3 * SAMPLE_RATE, np.float32)
    return np.concatenate([pause, speech, pause, pause]), (3.0, 3.0 + len(speech) / SAMPLE_RATE)


def feed_chunks(processor, audio, chunk=0.5):
    """Process every chunk; return (new audio start, end, whether the model was called) per update."""
    step, updates = round(chunk * SAMPLE_RATE), []
    for start in range(0, len(audio), step):
        processor.insert_audio(audio[start : start + step])
        calls = len(processor.asr.buffers)
        processor.process()
        updates.append((start / SAMPLE_RATE, (start + step) / SAMPLE_RATE, len(processor.asr.buffers) > calls))
    return updates


def test_updates_that_would_hear_only_silence_skip_the_model_and_the_buffer_is_cut_at_the_pause(audio_dir):
    audio, (speech_start, speech_end) = speech_between_pauses(audio_dir)
    asr = CountingASR()
    processor = OnlineASRProcessor(asr, settings=ProcessorSettings(silent_below=0.35, pause_trim_s=2.0))
    updates = feed_chunks(processor, audio)
    called = [(a, b) for a, b, call in updates if call]
    assert called and processor.skipped_updates == len(updates) - len(called) >= 14
    # Every model call had speech in its new audio (give or take the detector's 0.1 s of context).
    assert all(b > speech_start - 0.1 and a < speech_end + 0.6 for a, b in called)
    assert processor.buffer_s <= 2.0 + 0.5  # cut at the pause instead of growing to 12 s
    plain = OnlineASRProcessor(CountingASR())
    assert all(call for _, _, call in feed_chunks(plain, audio))  # off by default: every update calls


def test_a_pending_word_keeps_the_updates_coming_in_silence(audio_dir):
    audio, _ = speech_between_pauses(audio_dir)
    processor = OnlineASRProcessor(CountingASR(pending=True), settings=ProcessorSettings(silent_below=0.35))
    calls = [call for _, _, call in feed_chunks(processor, audio)]
    first = calls.index(True)  # silence before anything was heard is skipped
    assert first >= 4 and all(calls[first:])  # from then on a word waits, and may still be agreed on


def test_a_long_buffer_is_cut_in_the_latest_pause_between_committed_words():
    phrases = [words_at("one two three four five", start=0.0), words_at("six seven eight nine", start=2.5),
               words_at("ten eleven twelve thirteen fourteen", start=4.6), words_at("fifteen sixteen", start=7.2)]
    script = [w for phrase in phrases for w in phrase]  # pauses of 0.7-0.8 s between phrases, 0.1 s inside
    processor = OnlineASRProcessor(ScriptedASR(script), settings=ProcessorSettings(pause_trim_s=3.0))
    committed, offsets = [], {0}
    for t in np.arange(0.0, 9.0, 0.5):
        processor.insert_audio(clock_audio(t, t + 0.5))
        committed += processor.process().committed
        offsets.add(processor.buffer_offset)
        assert processor.buffer_s < 4.5
    committed += processor.finish().committed
    pauses = [(a[-1].end, b[0].start) for a, b in zip(phrases, phrases[1:])]
    cuts = sorted(offsets - {0})
    assert len(cuts) >= 2 and all(any(end < c / SAMPLE_RATE < start for end, start in pauses) for c in cuts)
    assert [w.text for w in committed] == [w.text for w in script]  # nothing lost or repeated at the cuts


def test_the_two_step_update_is_used_in_order_or_raises():
    from woasr.core.processor import CallOrderError

    script = words_at("hello there general kenobi")
    processor = OnlineASRProcessor(ScriptedASR(script))
    processor.insert_audio(clock_audio(0, 1.0))
    with pytest.raises(CallOrderError, match="apply"):
        processor.apply(processor.asr.transcribe(processor.audio, "", None))  # nothing was prepared
    request = processor.prepare()
    with pytest.raises(CallOrderError, match="prepare"):
        processor.prepare()  # the previous result was never applied
    processor.apply(processor.asr.transcribe(request.audio, request.prompt, request.language))
    processor.insert_audio(clock_audio(1.0, 2.0))
    assert processor.prepare() is not None  # in order again: fine
