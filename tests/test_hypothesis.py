"""LocalAgreement on synthetic word lists: no model, no audio."""

import pytest

from woasr.core.hypothesis import HypothesisBuffer, normalize_token
from woasr.core.records import Word

from tests.fakes import words_at


def texts(words):
    return [w.text.strip() for w in words]


def test_commits_the_prefix_two_hypotheses_agree_on():
    buf = HypothesisBuffer()
    buf.insert(words_at("the quick brown"))
    assert buf.flush() == ()
    assert texts(buf.partial) == ["the", "quick", "brown"]
    buf.insert(words_at("the quick brown fox"))
    assert texts(buf.flush()) == ["the", "quick", "brown"]
    assert texts(buf.partial) == ["fox"]


def test_disagreement_stops_the_commit():
    buf = HypothesisBuffer()
    buf.insert(words_at("the quick brown"))
    buf.insert(words_at("a quick brown fox"))
    assert buf.flush() == ()
    assert texts(buf.partial) == ["a", "quick", "brown", "fox"]


def test_comparison_ignores_case_and_punctuation():
    buf = HypothesisBuffer()
    buf.insert(words_at("Hello, world"))
    buf.insert(words_at("hello World. again"))
    assert texts(buf.flush()) == ["hello", "World."]
    assert normalize_token(" Don't!") == normalize_token("don't")


def test_never_commits_a_word_twice():
    buf = HypothesisBuffer()
    committed = []
    for hypothesis in ("one two", "one two three", "one two three four", "one two three four five"):
        buf.insert(words_at(hypothesis))
        committed += buf.flush()
    committed += buf.commit_all()
    assert texts(committed) == ["one", "two", "three", "four", "five"]
    assert all(a.end <= b.start for a, b in zip(committed, committed[1:]))


def test_ignores_words_that_lie_before_the_last_committed_word():
    buf = HypothesisBuffer()
    buf.insert(words_at("alpha beta gamma"))
    buf.insert(words_at("alpha beta gamma"))
    assert texts(buf.flush()) == ["alpha", "beta", "gamma"]
    # A later buffer re-hears the old words (slightly shifted) plus new ones.
    old_and_new = [w.shifted(0.05) for w in words_at("beta gamma", start=0.4)] + words_at("delta", start=1.2)
    buf.insert(old_and_new)
    buf.insert(old_and_new)
    assert texts(buf.flush()) == ["delta"]


def test_a_re_timed_word_never_overlaps_the_committed_words():
    buf = HypothesisBuffer()
    buf.insert(words_at("alpha beta"))  # beta ends at 0.7
    buf.insert(words_at("alpha beta"))
    assert buf.flush()[-1].end == 0.7
    # The next buffer times the following word 0.1 s earlier than the committed end.
    late = [Word(0.6, 1.0, " gamma"), Word(1.05, 1.3, " delta")]
    buf.insert(late)
    buf.insert(late)
    gamma, delta = buf.flush()
    assert (gamma.start, gamma.end) == (0.7, 1.0) and (delta.start, delta.end) == (1.05, 1.3)
    again = [Word(1.2, 1.45, " epsilon")]  # its middle is past the committed end (1.3): kept, start moved
    buf.insert(again)
    buf.insert(again)
    epsilon, = buf.flush()
    assert epsilon.start == 1.3 and epsilon.end == 1.45


def test_removes_ngram_overlap_between_committed_tail_and_new_head():
    buf = HypothesisBuffer()
    buf.insert(words_at("we choose to go"))
    buf.insert(words_at("we choose to go"))
    assert texts(buf.flush()) == ["we", "choose", "to", "go"]
    # Whisper repeats "to go" with times just after the committed end.
    head = words_at("to go to the moon", start=1.5)
    buf.insert(head)
    buf.insert(head)
    assert texts(buf.flush()) == ["to", "the", "moon"]


def test_long_word_re_heard_far_before_committed_end_is_not_recommitted():
    buf = HypothesisBuffer()
    first = [Word(4.68, 5.68, " what")]
    buf.insert(first)
    buf.insert(first)
    assert texts(buf.flush()) == ["what"]
    again = [Word(4.62, 5.70, " what"), Word(5.70, 6.0, " your")]
    buf.insert(again)
    buf.insert(again + [Word(6.0, 6.3, " country")])
    assert texts(buf.flush()) == ["your"]


def test_agreement_of_three_needs_three_hypotheses():
    buf = HypothesisBuffer(agreement=3)
    buf.insert(words_at("a b"))
    buf.insert(words_at("a b c"))
    assert buf.flush() == ()
    buf.insert(words_at("a b c d"))
    assert texts(buf.flush()) == ["a", "b"]


def test_commit_all_until_keeps_the_tail_pending():
    buf = HypothesisBuffer()
    buf.insert(words_at("one two three four"))  # ends 0.3, 0.7, 1.1, 1.5
    assert texts(buf.commit_all(until=1.2)) == ["one", "two", "three"]
    assert texts(buf.partial) == ["four"]
    assert abs(buf.last_committed_end - 1.1) < 1e-9


def test_reset_forgets_everything():
    buf = HypothesisBuffer()
    buf.insert(words_at("x y"))
    buf.insert(words_at("x y"))
    buf.flush()
    buf.reset()
    assert buf.partial == () and buf.last_committed_end == 0.0
    buf.insert(words_at("x y"))
    buf.insert(words_at("x y"))
    assert texts(buf.flush()) == ["x", "y"]


def test_flush_until_holds_back_words_near_the_buffer_end():
    buf = HypothesisBuffer()
    buf.insert(words_at("one two three"))  # ends 0.3, 0.7, 1.1
    buf.insert(words_at("one two three"))
    assert texts(buf.flush(until=0.8)) == ["one", "two"]
    assert texts(buf.partial) == ["three"]


def test_a_clause_heard_again_after_it_was_committed_is_not_committed_twice():
    # conv/pyannote_phone_call: "so I don't hear that New Jersey now" committed, then the last
    # update re-timed the whole clause a little later (eval's repeated_ngrams found it).
    buf = HypothesisBuffer()
    clause = "so i do not hear that new jersey now"
    buf.insert(words_at(clause, 27.0, 0.3))
    buf.insert(words_at(clause, 27.0, 0.3))
    assert len(buf.flush()) == 9
    buf.insert(words_at(clause + " though", 29.8, 0.05))  # re-heard, each word's middle past the end
    assert texts(buf.commit_all()) == ["though"]


def test_a_doubtful_agreed_word_waits_for_one_more_hypothesis():
    # tedlium_gates_120s: "on certainty" for "uncertainty", improbable, agreed by two short-context
    # hypotheses; the third heard it right.
    def hypothesis(text, doubtful):
        return [Word(w.start, w.end, w.text, 0.2 if w.text.strip() == doubtful else 0.9)
                for w in words_at(text)]

    buf = HypothesisBuffer(doubtful_below=0.5)
    buf.insert(hypothesis("to reduce on certainty", "on"))
    buf.insert(hypothesis("to reduce on certainty", "on"))
    assert texts(buf.flush()) == ["to", "reduce"]
    buf.insert(hypothesis("to reduce uncertainty and unrest", ""))
    assert buf.flush() == ()  # the doubtful guess was never committed
    buf.insert(hypothesis("to reduce uncertainty and unrest", ""))
    assert texts(buf.flush()) == ["uncertainty", "and", "unrest"]
    confident = HypothesisBuffer(doubtful_below=0.5)
    confident.insert(words_at("to reduce"))
    confident.insert(words_at("to reduce"))
    assert texts(confident.flush()) == ["to", "reduce"]  # probable words need no third hypothesis


def test_words_decoded_after_the_committed_prefix_are_kept_even_if_aligned_early():
    buf = HypothesisBuffer()
    for _ in range(2):
        buf.insert(words_at("one two"))  # ends 0.3, 0.7
    assert texts(buf.flush()) == ["one", "two"] and buf.last_committed_end == pytest.approx(0.7)
    early = [Word(0.5, 0.8, " three"), Word(0.8, 1.1, " four")]  # "three" aligned into "two"
    plain = HypothesisBuffer()
    plain.insert(words_at("one two"))
    plain.insert(words_at("one two"))
    plain.flush()
    plain.insert(early)
    assert texts(plain.partial) == ["four"]  # by time alone "three" looks like "two" heard again
    buf.insert(early, after_committed=True)
    buf.insert(early, after_committed=True)
    committed = buf.flush()
    assert texts(committed) == ["three", "four"]
    assert committed[0].start == pytest.approx(0.7)  # moved to start where "two" ended
