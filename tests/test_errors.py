"""The eval's error breakdown: phrases committed twice and each difference's mechanism, on scripted traces."""

from __future__ import annotations

import json

import pytest

from woasr.core.records import Word
from woasr.tools.errors import UpdateTrace, explain, repeated_phrases

from tests.fakes import words_at
from tests.test_tools import run


def update(start: float, raw: list[Word], committed: list[Word], *, dropped=(), prompt="", final=False,
           length: float = 10.0) -> UpdateTrace:
    return UpdateTrace(start, length, tuple(raw), tuple(dropped), tuple(committed), prompt, final)


def test_a_phrase_streaming_repeats_counts_once_and_a_real_repetition_not_at_all():
    offline = "so i do not hear that new jersey now".split()
    stream = "so i do not hear that new jersey now i do not hear that new jersey now".split()
    assert repeated_phrases(stream, offline) == ["i do not hear that new jersey now"]
    said_twice = "no no no we said it we said it".split()
    assert repeated_phrases(said_twice, said_twice) == []  # offline has it too: the speaker repeated himself
    assert repeated_phrases("a b c d".split(), "x y z".split()) == []  # differences are not repeats
    # unref/ibm_culture_2min: a misheard word that recreates a phrase is a substitution, not a repeat.
    misheard = "this non discrimination policy was expanded and its non discrimination policy".split()
    heard = "this non discrimination policy was expanded and its non discrimination policies".split()
    assert repeated_phrases(misheard, heard) == []


def mechanisms(trace: list[UpdateTrace], offline: list[Word]) -> dict[str, int]:
    breakdown, _ = explain("clip", trace, tuple(offline), "en", 30.0)
    return {m: n for m, n in breakdown.counts.items() if n}


def test_a_phrase_committed_twice_is_a_duplicate():
    first = words_at("i am recording the sound", 0.0)
    again = words_at("i am recording the sound", 2.0)
    trace = [update(0, first, first), update(0, first + again, again)]
    assert mechanisms(trace, first) == {"duplicate": 5}


def test_an_agreed_guess_that_a_later_hypothesis_contradicts_is_an_early_commit():
    guess = words_at("the sick purpose", 0.0)
    heard = words_at("the sick corpus", 0.0)
    trace = [update(0, guess, guess[:2]), update(0, guess, guess[2:]), update(0, heard, [])]
    assert mechanisms(trace, heard) == {"early_commit": 1}


def test_a_real_word_removed_by_a_guard_is_a_guard_drop():
    heard = words_at("hello there friend", 0.0)
    trace = [update(0, heard, heard[:1] + heard[2:], dropped=heard[1:2])]
    assert mechanisms(trace, heard) == {"guard_drop": 1}


def test_words_of_the_prompt_copied_again_are_a_prompt_effect_and_the_last_update_is_the_end():
    said = words_at("ask not what your country", 0.0)
    copied = words_at("your country", 2.5)
    tail = words_at("can do", 3.5)
    trace = [update(0, said, said), update(2.4, copied, copied, prompt="ask not what your country"),
             update(2.4, tail, tail, final=True)]
    assert mechanisms(trace, said + words_at("for you", 3.5)) == {"prompt": 2, "end_of_stream": 2}


@pytest.mark.model
def test_eval_scores_a_manifest_without_references_against_offline_and_repeats_runs(audio_dir, tmp_path):
    out = tmp_path / "unref.json"
    table = run("eval", "--manifest", str(audio_dir / "unref" / "manifest.tsv"), "--glob", "ibm_call_center_25s.wav",
                "--min-chunk", "1.0", "--repeat", "2", "--errors", "--json", str(out)).stdout
    report = json.loads(out.read_text())
    assert report["n_clips"] == 1 and report["n_referenced"] == 0 and report["repeat"] == 2
    assert report["wer_streaming"] is None and report["wer_offline"] is None
    assert 0 <= report["wer_vs_offline"] < 0.3
    assert len(report["runs"]) == 2 and report["wer_spread"] is not None
    assert {"repeated_ngrams", "error_breakdown", "repeated_phrases", "utterance_end_latency_ms"} <= set(report)
    assert set(report["error_breakdown"]) >= {"early_commit", "duplicate", "guard_drop", "end_of_stream", "other"}
    assert len(report["clips"]) == 2 and all(c["offline_text"] for c in report["clips"])
    assert "Streaming errors against offline" in table and "| - | - |" in table
