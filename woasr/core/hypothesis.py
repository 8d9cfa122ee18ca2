"""LocalAgreement-n: commit the words that consecutive hypotheses agree on."""

from __future__ import annotations

import dataclasses
import unicodedata
from collections import deque

from woasr.core.records import Word

MAX_OVERLAP_NGRAM = 10
"""Longest n-gram at the head of a hypothesis checked against the committed tail (a phrase
Whisper hears again after a buffer cut can be a whole clause: eval's ``repeated_ngrams``)."""

OVERLAP_WINDOW_S = 1.0
"""A hypothesis head is compared with the committed tail unless it starts this long after it."""


def normalize_token(text: str) -> str:
    """Compare words without case, punctuation or blanks ("Hello," == "hello")."""
    kept = "".join(
        ch for ch in unicodedata.normalize("NFKC", text).casefold()
        if not unicodedata.category(ch).startswith(("P", "Z", "C"))
    )
    return kept or text.strip()


class HypothesisBuffer:
    """Turns a series of overlapping hypotheses into committed words.

    Each call to :meth:`insert` gives the words Whisper heard in the current
    audio buffer (absolute times). :meth:`flush` commits the longest prefix on
    which the last ``n`` hypotheses agree and returns it; the rest of the newest
    hypothesis is the partial (:attr:`partial`).

    Guarantees: a committed word is never committed again (words whose middle
    lies before the end of the last committed word are ignored, and a 1-10 word
    n-gram that repeats the committed tail at the head of a hypothesis is
    removed), and the committed words are in time order without overlapping:
    Whisper re-times words a little from one buffer to the next, so a word
    that starts before the last committed end is made to start there.
    """

    def __init__(self, agreement: int = 2, doubtful_below: float = 0.0) -> None:
        if agreement < 1:
            raise ValueError("agreement must be at least 1")
        self.agreement = agreement
        self.doubtful_below = doubtful_below
        """An agreed word whose probability is below this in any agreeing hypothesis waits
        for one more hypothesis to agree (0: off)."""
        self._hypotheses: deque[list[Word]] = deque(maxlen=agreement + 1)
        self._committed_tail: deque[Word] = deque(maxlen=MAX_OVERLAP_NGRAM)
        self.last_committed_end = 0.0

    @property
    def partial(self) -> tuple[Word, ...]:
        """The uncommitted words of the newest hypothesis."""
        return tuple(self._hypotheses[-1]) if self._hypotheses else ()

    def insert(self, words: list[Word] | tuple[Word, ...], after_committed: bool = False) -> None:
        """Add a new hypothesis (absolute times), cleaned of what is already committed.

        ``after_committed``: the words were decoded after the committed text, forced as the
        decoder's prefix, so none is a committed word heard again, wherever its aligned time
        falls (the first word after the prefix is often aligned a little early).
        """
        fresh = list(words) if after_committed else [
            w for w in words if (w.start + w.end) / 2 > self.last_committed_end
        ]
        self._hypotheses.append(self._drop_committed_overlap(fresh))

    def flush(self, until: float | None = None) -> tuple[Word, ...]:
        """Commit and return the prefix that the last ``agreement`` hypotheses share.

        With ``until``, only agreed words that end by then are committed: the
        last fraction of a second of a buffer is where Whisper guesses.
        """
        if len(self._hypotheses) < self.agreement:
            return ()
        newest = self._hypotheses[-1]
        limit = len(newest)
        if until is not None:
            limit = next((i for i, w in enumerate(newest) if w.end > until), limit)
        voters = list(self._hypotheses)[-self.agreement :]
        elder = self._hypotheses[0] if len(self._hypotheses) > self.agreement else None
        agreed = 0
        while agreed < limit and _agree(voters, agreed, newest[agreed]):
            if any(h[agreed].probability < self.doubtful_below for h in voters) and (
                elder is None or not _agree([elder], agreed, newest[agreed])
            ):
                break  # a doubtful word needs one more hypothesis on its side
            agreed += 1
        return self._commit(agreed)

    def commit_all(self, until: float | None = None) -> tuple[Word, ...]:
        """Commit the newest hypothesis without waiting for agreement.

        Used at the end of a stream and when the audio buffer hits its hard
        cap. With ``until`` only the words that end by then are committed.
        """
        if not self._hypotheses:
            return ()
        newest = self._hypotheses[-1]
        count = len(newest)
        if until is not None:
            count = next((i for i, w in enumerate(newest) if w.end > until), len(newest))
        committed = self._commit(count)
        # Older hypotheses did not agree with what was forced; agreement restarts.
        while len(self._hypotheses) > 1:
            self._hypotheses.popleft()
        return committed

    def _commit(self, count: int) -> tuple[Word, ...]:
        committed = []
        end = self.last_committed_end
        for word in self._hypotheses[-1][:count]:
            if word.start < end:
                word = dataclasses.replace(word, start=end, end=max(word.end, end))
            committed.append(word)
            end = word.end
        for hypothesis in self._hypotheses:
            del hypothesis[:count]
        if committed:
            self.last_committed_end = end  # never earlier than before: every word ends at or after it
            self._committed_tail.extend(committed)
        return tuple(committed)

    def _drop_committed_overlap(self, words: list[Word]) -> list[Word]:
        """Remove a head n-gram that repeats the committed tail (Whisper re-hearing it)."""
        if not words or not self._committed_tail:
            return words
        if words[0].start - self.last_committed_end >= OVERLAP_WINDOW_S:
            return words
        tail = [normalize_token(w.text) for w in self._committed_tail]
        head = [normalize_token(w.text) for w in words[:MAX_OVERLAP_NGRAM]]
        for n in range(min(len(tail), len(head)), 0, -1):
            if tail[-n:] == head[:n]:
                return words[n:]
        return words

    def discard_pending(self) -> None:
        """Forget the uncommitted hypotheses but keep what was committed."""
        self._hypotheses.clear()

    def reset(self) -> None:
        """Forget everything: the next hypothesis starts a new stream."""
        self._hypotheses.clear()
        self._committed_tail.clear()
        self.last_committed_end = 0.0


def _agree(hypotheses: list[list[Word]], index: int, word: Word) -> bool:
    """Whether every hypothesis has ``word`` (case, punctuation aside) at ``index``."""
    key = normalize_token(word.text)
    return all(index < len(h) and normalize_token(h[index].text) == key for h in hypotheses)
