"""A bounded buffer of audio captured but not yet sent (an outage's worth).

Every block carries its offset in the captured stream (bytes since capture
began), so a transport that resends audio after a reconnect knows exactly
where in the stream a new server session starts, even after the ring dropped
blocks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from woasr.core.audio import SAMPLE_RATE

BYTES_PER_SECOND = SAMPLE_RATE * 2

Block = tuple[int, bytes]
"""(offset in the captured stream in bytes, PCM16 bytes)."""


class AudioRing:
    """PCM16 blocks waiting to be sent; beyond ``max_s`` the oldest are dropped (and counted).

    ``max_s=None`` keeps everything: for a source faster than real time (a file
    sent with ``--fast``) that is the whole file, not an outage.
    """

    def __init__(self, max_s: float | None = 30.0) -> None:
        self.max_bytes = None if max_s is None else int(max_s * BYTES_PER_SECOND)
        self._blocks: deque[Block] = deque()
        self._size = 0
        self._captured = 0
        self.dropped_bytes = 0

    def __len__(self) -> int:
        return len(self._blocks)

    @property
    def seconds(self) -> float:
        return self._size / BYTES_PER_SECOND

    def push(self, block: bytes) -> None:
        """A newly captured block, at the end of the stream."""
        self._blocks.append((self._captured, block))
        self._captured += len(block)
        self._size += len(block)
        self._trim()

    def requeue(self, blocks: Sequence[Block]) -> None:
        """Put blocks that were sent but not acknowledged back in front, to be sent first again."""
        self._blocks.extendleft(reversed(blocks))
        self._size += sum(len(data) for _, data in blocks)
        self._trim()

    def _trim(self) -> None:
        while self.max_bytes is not None and self._size > self.max_bytes and len(self._blocks) > 1:
            _, dropped = self._blocks.popleft()
            self._size -= len(dropped)
            self.dropped_bytes += len(dropped)

    def take_before(self, offset: int) -> list[Block]:
        """Remove and return the audio before stream ``offset`` (a block across it is split)."""
        taken: list[Block] = []
        while self._blocks and self._blocks[0][0] < offset:
            start, data = self._blocks.popleft()
            keep = max(0, start + len(data) - offset)
            if keep:
                self._blocks.appendleft((offset, data[-keep:]))
                data = data[:-keep]
            taken.append((start, data))
            self._size -= len(data)
        return taken

    def peek(self) -> Block:
        return self._blocks[0]

    def pop(self) -> Block:
        block = self._blocks.popleft()
        self._size -= len(block[1])
        return block
