"""Hallucination guards on synthetic segments."""

from woasr.core.guards import GuardSettings, clean_segments, cut_repetition_loop, is_hallucination
from woasr.core.records import Segment, Word

from tests.fakes import words_at

SETTINGS = GuardSettings()


def texts(words):
    return " ".join(w.text.strip() for w in words)


def test_silence_with_low_confidence_is_dropped_but_confident_speech_kept():
    words = tuple(words_at("thanks for watching"))
    assert is_hallucination(Segment(0, 1, words, no_speech_prob=0.8, avg_logprob=-1.2), SETTINGS)
    assert not is_hallucination(Segment(0, 1, words, no_speech_prob=0.8, avg_logprob=-0.3), SETTINGS)
    assert not is_hallucination(Segment(0, 1, words, no_speech_prob=0.1, avg_logprob=-1.2), SETTINGS)


def test_high_compression_ratio_is_a_loop():
    words = tuple(words_at("la la la"))
    assert is_hallucination(Segment(0, 1, words, compression_ratio=3.1), SETTINGS)


def test_repeated_phrase_is_cut_after_the_allowed_repeats():
    # A clause said back to back is Whisper's loop (conv/: "Not so much. Not so much." committed
    # twice); a two-word phrase may occur twice in a row, as people say it.
    words = words_at("in being modern in being modern in being modern in being modern and then")
    assert texts(cut_repetition_loop(words, SETTINGS)) == "in being modern"
    assert texts(cut_repetition_loop(words_at("not so much. not so much."), SETTINGS)) == "not so much."
    pairs = words_at("no way no way no way no way ok")
    assert texts(cut_repetition_loop(pairs, SETTINGS)) == "no way no way"


def test_natural_repetitions_are_kept():
    for text in ("no no no I said", "the the cat", "very very very very good"):
        words = words_at(text)
        assert texts(cut_repetition_loop(words, SETTINGS)) == text


def test_single_word_loop_is_cut():
    words = words_at("go " * 12 + "stop")
    assert texts(cut_repetition_loop(words, SETTINGS)) == "go go go go"


def test_clean_segments_joins_the_kept_segments():
    good = Segment(0, 1, tuple(words_at("hello there")))
    bad = Segment(1, 2, tuple(words_at("subscribe now", start=1)), no_speech_prob=0.95, avg_logprob=-2)
    assert texts(clean_segments((good, bad), SETTINGS)) == "hello there"


def test_trailing_improbable_short_words_are_dropped():
    from woasr.core.guards import drop_trailing_anomalies
    from woasr.core.records import Word

    words = (Word(0, 0.5, " themselves.", 0.99), Word(0.6, 0.62, " Hope.", 0.05))
    assert drop_trailing_anomalies(words, SETTINGS) == words[:1]
    confident_short = (Word(0, 0.5, " yes", 0.99), Word(0.6, 0.72, " a", 0.6))
    assert drop_trailing_anomalies(confident_short, SETTINGS) == confident_short
    text_without_audio = words + tuple(Word(0.7, 0.7, f" {t}", 0.9) for t in "which are an".split())
    assert drop_trailing_anomalies(text_without_audio, SETTINGS) == words[:1]


def test_unconfirmed_improbable_tail_is_dropped_at_the_end_of_a_stream():
    from woasr.core.guards import drop_unconfirmed_tail
    from woasr.core.records import Word

    words = (Word(39.08, 39.62, " themselves.", 0.99), Word(39.62, 39.9, " helps.", 0.16))
    assert drop_unconfirmed_tail(words, SETTINGS) == words[:1]
    assert drop_unconfirmed_tail(words[:1], SETTINGS) == words[:1]


def test_a_phrase_squeezed_into_one_instant_is_cut_before_it():
    # conv/gentle_lucier_room.wav at 20 s: "speaking voice. I am recording ... voice." with the
    # repetition at one instant before the buffer's last word; two hypotheses agreed on it.
    heard = words_at("i am recording the sound of my speaking", 17.4, 0.3)
    instant = [Word(20.14, 20.14, f" {t}") for t in "voice. I am recording the sound".split()]
    last = Word(20.14, 20.6, " voice.")
    kept = clean_segments((Segment(17.4, 20.6, tuple(heard + instant + [last])),), SETTINGS)
    assert texts(kept) == "i am recording the sound of my speaking"
    # Two words without duration in a row happen in fast speech and are kept.
    fast = words_at("if", 0.0) + [Word(0.5, 0.5, " you"), Word(0.5, 0.5, " could"), Word(0.5, 0.8, " pick")]
    assert texts(clean_segments((Segment(0, 1, tuple(fast)),), SETTINGS)) == "if you could pick"


def test_words_the_detector_heard_no_speech_in_are_dropped():
    # conv/gentle_lucier_room.wav: "thank you very much" committed in a pause of the speaker.
    from woasr.core.guards import drop_words_in_silence

    speech = {(0.0, 2.0): 0.9, (2.0, 4.0): 0.05}  # speech, then a pause

    def peak(start, end):
        if start >= 4.0:
            return None  # not heard yet: kept
        return max(p for (a, b), p in speech.items() if a < end and b > start)

    words = words_at("so i regard", 0.5) + words_at("thank you", 2.8) + words_at("later", 4.5)
    settings = GuardSettings(min_speech_probability=0.1)
    assert texts(drop_words_in_silence(words, peak, settings)) == "so i regard later"


def test_the_speech_trace_tells_speech_from_silence(audio_dir):
    from woasr.audio_io import load_audio
    from woasr.core.vad import SpeechTrace

    audio = load_audio(audio_dir / "conv" / "gentle_lucier_room.wav")[: 30 * 16000]
    trace = SpeechTrace()
    for at in range(0, len(audio), 1600):
        trace.feed(audio[at : at + 1600])
    # The pause where "thank you very much" was committed, and "I am sitting in a room".
    assert trace.peak(14.9, 15.8) < 0.1 < 0.8 < trace.peak(6.5, 8.5)
    assert trace.peak(29.0, 31.0) is None  # not fed that far
    trace.forget_before(10.0)
    assert trace.peak(6.5, 8.5) is None and trace.peak(10.5, 11.0) is not None
