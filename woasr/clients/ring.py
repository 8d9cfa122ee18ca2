"""A bounded buffer of audio captured but not yet sent (an outage's worth)."""

from __future__ import annotations

from collections import deque

from woasr.core.audio import SAMPLE_RATE

BYTES_PER_SECOND = SAMPLE_RATE * 2


class AudioRing:
    """PCM16 blocks waiting to be sent; beyond ``max_s`` the oldest are dropped (and counted)."""

    def __init__(self, max_s: float = 30.0) -> None:
        self.max_bytes = int(max_s * BYTES_PER_SECOND)
        self._blocks: deque[bytes] = deque()
        self._size = 0
        self.dropped_bytes = 0

    def __len__(self) -> int:
        return len(self._blocks)

    @property
    def seconds(self) -> float:
        return self._size / BYTES_PER_SECOND

    def push(self, block: bytes) -> None:
        self._blocks.append(block)
        self._size += len(block)
        while self._size > self.max_bytes and len(self._blocks) > 1:
            dropped = self._blocks.popleft()
            self._size -= len(dropped)
            self.dropped_bytes += len(dropped)

    def peek(self) -> bytes:
        return self._blocks[0]

    def pop(self) -> bytes:
        block = self._blocks.popleft()
        self._size -= len(block)
        return block
