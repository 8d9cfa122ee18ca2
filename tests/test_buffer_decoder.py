"""The incremental decoder against plain faster-whisper, on real speech with the real model."""

import numpy as np
import pytest

from woasr.audio_io import load_audio
from woasr.core.audio import SAMPLE_RATE
from woasr.core.hypothesis import normalize_token
from woasr.core.records import join_words

pytestmark = pytest.mark.model

CLIP = "en/ljspeech_LJ001-0001.wav"


def tokens(words) -> list[str]:
    return [normalize_token(w.text) for w in words]


def test_forcing_the_first_words_returns_the_rest_of_the_plain_hypothesis(tiny_en, audio_dir):
    audio = load_audio(audio_dir / CLIP)
    plain = tiny_en.with_decode(incremental=False).transcribe(audio, "", "en").words
    assert len(plain) > 15
    for forced in (0, 5, 12):
        tail = tiny_en.transcribe(audio, "", "en", prefix=join_words(plain[:forced])).words
        assert tokens(tail) == tokens(plain[forced:])
        # Times come from aligning the whole buffer: the tail starts where its first word is.
        assert tail[0].start == pytest.approx(plain[forced].start, abs=0.3)
        assert all(a.end <= b.start + 0.05 for a, b in zip(tail, tail[1:]))


def test_the_whole_buffer_as_prefix_leaves_nothing_to_add(tiny_en, audio_dir):
    audio = load_audio(audio_dir / CLIP)
    plain = tiny_en.with_decode(incremental=False).transcribe(audio, "", "en").words
    assert tiny_en.transcribe(audio, "", "en", prefix=join_words(plain)).words == ()


def test_greedy_is_tried_first_and_the_beam_only_when_unsure(tiny_en, audio_dir):
    audio = load_audio(audio_dir / CLIP)
    sure = tiny_en.with_decode(greedy_first=True)
    greedy = sure.transcribe(audio, "", "en").words
    assert sure.buffer_decoder.fallbacks == 0  # clear read speech: the greedy tail is sure
    unsure = tiny_en.with_decode(greedy_first=True, fallback_logprob=0.0)  # every real tail is below 0: unsure
    searched = unsure.transcribe(audio, "", "en").words
    assert unsure.buffer_decoder.fallbacks == 1
    beam_only = tiny_en.with_decode(greedy_first=False)
    assert tokens(searched) == tokens(beam_only.transcribe(audio, "", "en").words)
    assert beam_only.buffer_decoder.fallbacks == 0
    assert len(greedy) > 15


def test_a_looping_greedy_tail_is_capped(tiny_en):
    rng = np.random.default_rng(0)
    noise = (rng.standard_normal(SAMPLE_RATE * 2) * 0.3).astype(np.float32)
    policy = tiny_en.buffer_decoder.policy
    words = tiny_en.with_decode(beam_size=1, greedy_first=True).transcribe(noise, "", "en").words
    assert len(words) <= policy.min_new_tokens + policy.tokens_per_second * 2


def test_a_full_stop_where_an_older_buffer_ended_does_not_end_the_text(tiny_en, audio_dir):
    audio = load_audio(audio_dir / CLIP)
    plain = tiny_en.with_decode(incremental=False).transcribe(audio, "", "en").words
    cut = join_words(plain[:5]).rstrip(",") + "."  # "Printing, in the only sense." mid-sentence
    assert tokens(tiny_en.transcribe(audio, "", "en", prefix=cut).words) == tokens(plain[5:])
