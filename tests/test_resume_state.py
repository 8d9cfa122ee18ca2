"""Resume bookkeeping without sockets: the outlet's kept finals, the registry's window and token,
the client's ring and stream offsets."""

from __future__ import annotations

import asyncio

from woasr.clients.ring import AudioRing
from woasr.core.records import Word
from woasr.protocol.commands import Resume
from woasr.protocol.events import Error, Final, Partial, Resumed
from woasr.server.resume import KEEP_FINALS, Outlet, ResumableSessions


class Sink:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list = []
        self.fail = fail

    async def send(self, events):
        if self.fail:
            raise ConnectionError("gone")
        self.sent += events

    async def close(self, ending, reason):
        pass


def final(seq: int) -> Final:
    return Final(seq, (Word(seq, seq + 0.5, f" w{seq}"),))


def test_a_detached_outlet_keeps_finals_and_a_resumed_sink_gets_the_missed_ones_first():
    async def run():
        outlet = Outlet(resumable=True)
        first = Sink()
        outlet.connect(first)
        await outlet.send([final(0), Partial(())])
        first.fail = True
        await outlet.send([final(1)])  # lost on the way: the outlet lets the connection go
        assert outlet.sink is None and not outlet.attached.is_set()
        await outlet.send([final(2)])
        assert outlet.missed(0, 3) == [final(1), final(2)]
        assert outlet.missed(2, 3) == [] and outlet.missed(3, 3) is None  # more than was sent: no
        second = Sink()
        await outlet.attach(second, Resumed("ws-1", 1600, 2), outlet.missed(0, 3))
        await outlet.send([final(3)])
        return first.sent, second.sent

    first, second = asyncio.run(run())
    assert first == [final(0), Partial(())]
    assert second == [Resumed("ws-1", 1600, 2), final(1), final(2), final(3)]


def test_only_the_last_finals_are_kept_and_a_non_resumable_outlet_raises():
    async def run():
        outlet = Outlet(resumable=True)
        await outlet.send([final(i) for i in range(KEEP_FINALS + 10)])
        assert outlet.missed(9, KEEP_FINALS + 10) == [final(i) for i in range(10, KEEP_FINALS + 10)]
        assert outlet.missed(8, KEEP_FINALS + 10) is None  # seq 9 is no longer kept
        plain = Outlet(resumable=False)
        plain.connect(Sink(fail=True))
        try:
            await plain.send([final(0)])
        except ConnectionError:
            return True
        return False

    assert asyncio.run(run())


class Live:
    def __init__(self, session_id: str) -> None:
        self.runner = Runner(session_id)
        self.outlet = Outlet(resumable=True)
        self.address = "127.0.0.1"
        self.lost = "reset"
        self.resume_token: str | None = None


class Runner:
    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.session = type("S", (), {"next_seq": 0})()
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True


def test_the_registry_checks_the_token_and_gives_up_a_session_after_its_window():
    async def run():
        sessions = ResumableSessions(window=0.2)
        live = Live("ws-1")
        live.resume_token = sessions.open(live)
        assert live.resume_token and len(live.resume_token) >= 20
        assert sessions.detach(live) and sessions.detached == 1 and sessions.detached_from("127.0.0.1") == 1
        wrong = sessions.claim(Resume("ws-1", "guess", -1))
        assert isinstance(wrong, Error) and wrong.code == "resume_failed"
        claimed = sessions.claim(Resume("ws-1", live.resume_token, -1))
        assert claimed == (live, []) and sessions.detached == 0
        sessions.detach(live)
        await asyncio.sleep(0.4)
        gone = sessions.claim(Resume("ws-1", live.resume_token, -1))
        return live, gone

    live, gone = asyncio.run(run())
    assert live.runner.aborted and "not resumed within 0.2 s: reset" == live.lost
    assert isinstance(gone, Error) and gone.code == "resume_failed"


def test_no_resume_token_when_the_window_is_zero():
    assert ResumableSessions(window=0).open(Live("ws-1")) is None


def test_the_ring_hands_back_the_audio_the_server_already_holds():
    ring = AudioRing(None)
    ring.requeue([(100, b"a" * 10), (110, b"b" * 10)])
    assert ring.take_before(115) == [(100, b"a" * 10), (110, b"b" * 5)]
    assert ring.peek() == (115, b"b" * 5)
    assert ring.seconds == 5 / 32000
