"""The microphone page in a real headless Chromium, against a real ``woasr serve``.

Chromium's fake capture device plays a speech clip as the microphone, so the
whole path runs: getUserMedia, the AudioWorklet resampler, the WebSocket
protocol, the model, and the page's display. Needs /usr/bin/chromium
(scripts/browser_deps.sh installs it); Playwright only drives it.
"""

from __future__ import annotations

import re
import time
import wave
from pathlib import Path

import pytest

from woasr.tools.textnorm import count_errors, normalize_text

from tests.proxy import CuttingProxy
from tests.servers import ROOT, ServerProcess, free_port

pytestmark = [pytest.mark.model, pytest.mark.browser]

CHROMIUM = Path("/usr/bin/chromium")
CLIP = "en/jfk_inaugural_1961.wav"
ARTIFACTS = ROOT / "artifacts" / "browser"
SILENCE_S = 3.0
"""Zeros after the clip. With ``%noloop`` this Chromium keeps repeating the
last 10 ms it read once the file ends; ending on silence makes that silence."""
TIME_FORMAT = re.compile(r"^\[\d+:\d\d\.\d\]$")


def server_args(ws_port: int) -> list[str]:
    return ["--tcp-port", "0", "--ws-port", str(ws_port), "--min-chunk", "0.5"]


@pytest.fixture
def clip(manifest, tmp_path) -> tuple[Path, float, str]:
    """The clip followed by silence, as a WAV for the fake microphone; its length in s; its text."""
    row = manifest[CLIP]
    with wave.open(str(row.path), "rb") as source:
        params = source.getparams()
        frames = source.readframes(params.nframes)
    assert (params.nchannels, params.sampwidth) == (1, 2), "the clips are mono PCM16"
    padded = tmp_path / "microphone.wav"
    with wave.open(str(padded), "wb") as out:
        out.setparams(params)
        out.writeframes(frames + bytes(2 * int(SILENCE_S * params.framerate)))
    return padded, params.nframes / params.framerate, row.reference


@pytest.fixture
def artifacts() -> Path:
    """Screenshots land here (gitignored), for a person to look at."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def playwright():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/browser_deps.sh (as root it installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


def launch(playwright, wav: Path):
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM),  # Playwright cannot download its own browser here
        headless=True,
        args=[
            "--use-fake-ui-for-media-stream",  # grant the microphone without a prompt
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={wav}%noloop",  # plays once, from getUserMedia on
            "--no-sandbox",
            "--disable-gpu",
            # No network here: without these Chromium keeps dialing out and being refused.
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    )


def open_page(browser, url: str, **context):
    page = browser.new_context(**context).new_page()
    page.problems = []
    page.on("pageerror", lambda error: page.problems.append(f"page error: {error}"))
    page.on("console", lambda m: m.type == "error" and page.problems.append(f"console: {m.text}"))
    page.goto(url)
    return page


def state(page) -> dict:
    return page.evaluate("() => JSON.parse(JSON.stringify(window.woasr))")


def words_of(finals: list[dict]) -> str:
    return normalize_text(" ".join(f["text"] for f in finals))


def wait_for_words(page, phrases: list[str], timeout: float, server: ServerProcess, since: int = 0) -> dict:
    """Poll until the finals (from index ``since``) hold every phrase; fail with what there was."""
    deadline = time.monotonic() + timeout
    while True:
        seen = state(page)
        text = words_of(seen["finals"][since:])
        if all(phrase in text for phrase in phrases):
            return seen
        if time.monotonic() > deadline:
            pytest.fail(f"finals never held {phrases} within {timeout:.0f} s: {text!r}\n"
                        f"page state: {seen}\nserver output:\n{server.text[-3000:]}")
        time.sleep(0.3)


def wait_for_status(page, status: str, timeout: float) -> None:
    page.wait_for_function("(s) => window.woasr.status === s", arg=status, timeout=timeout * 1000)


def wait_for_clip_end(page, seconds: float) -> None:
    """Until the page has captured the whole clip: Stop then sends its end and gets its last finals."""
    page.wait_for_function("(ms) => window.woasr.capturedMs >= ms", arg=(seconds + 0.5) * 1000, timeout=30_000)


def check_times(finals: list[dict], limit_ms: float) -> None:
    """Displayed times run forward and stay inside the audio the page captured."""
    for f in finals:
        assert 0 <= f["beg_ms"] <= f["end_ms"] <= limit_ms, f
    for before, after in zip(finals, finals[1:]):
        assert after["beg_ms"] >= before["end_ms"] - 200, (before, after)  # no restart at 0:00


def test_page_transcribes_the_microphone(playwright, clip, artifacts):
    wav, seconds, reference = clip
    with ServerProcess(server_args(free_port())) as server:
        browser = launch(playwright, wav)
        try:
            page = open_page(browser, server.http_url, viewport={"width": 1100, "height": 760})
            assert page.locator("#toggle").inner_text() == "Start"
            page.click("#toggle")
            wait_for_status(page, "live", timeout=30)

            seen = wait_for_words(page, ["fellow americans", "country"], timeout=90, server=server)
            assert seen["partialsSeen"] > 0, "no partial was ever shown"
            assert seen["sampleRate"], "the AudioContext never started"
            page.screenshot(path=str(artifacts / "page.png"))  # while live
            wait_for_clip_end(page, seconds)
            page.click("#toggle")  # Stop: the last frames, {"type":"close"}, the last finals
            wait_for_status(page, "stopped", timeout=60)
            done = state(page)
            assert done["errors"] == [], done["errors"]
            # The whole sentence, as well as tiny.en hears it straight from a file (tests/test_ws.py).
            text = " ".join(f["text"] for f in done["finals"])
            assert count_errors(reference, text).rate < 0.15, text
            check_times(done["finals"], (seconds + SILENCE_S + 2) * 1000)
            # The clip speaks "country" last at about 10 s: the times follow the audio.
            assert done["finals"][-1]["end_ms"] > 8000, done["finals"]

            # What the screen shows: one row per final, "[m:ss.d] text", no leftover partial.
            rows = page.locator("#finals .final")
            assert rows.count() == len(done["finals"])
            for time_text in rows.locator("time").all_inner_texts():
                assert TIME_FORMAT.match(time_text), time_text
            assert page.locator("#partial").inner_text() == ""
            assert page.locator("#status").inner_text() == "stopped"
            assert page.locator("#toggle").inner_text() == "Start"
            page.screenshot(path=str(artifacts / "page-stopped.png"))

            # A phone: nothing wider than the screen, the button still big.
            page.set_viewport_size({"width": 390, "height": 844})
            overflow = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
            assert overflow[0] <= overflow[1], f"horizontal overflow at 390 px: {overflow}"
            button = page.locator("#toggle").bounding_box()
            assert button["width"] >= 300 and button["height"] >= 48, button
            page.screenshot(path=str(artifacts / "page-phone.png"), full_page=True)
            assert page.problems == [], page.problems
        finally:
            browser.close()
        assert server.alive(), server.text


def test_page_reconnects_after_a_server_restart(playwright, clip, artifacts):
    wav, seconds, reference = clip
    port = free_port()
    browser = launch(playwright, wav)
    try:
        with ServerProcess(server_args(port)) as first:
            page = open_page(browser, first.http_url)
            page.click("#toggle")
            wait_for_words(page, ["fellow"], timeout=90, server=first)
        # The server is gone early in the clip; the page keeps capturing and retries.
        wait_for_status(page, "reconnecting", timeout=15)
        before = state(page)
        assert before["sessions"] == 1
        page.screenshot(path=str(artifacts / "page-reconnecting.png"))

        with ServerProcess(server_args(port)) as second:
            wait_for_status(page, "live", timeout=30)
            count = len(before["finals"])
            seen = wait_for_words(page, ["country"], timeout=90, server=second, since=count)
            assert seen["sessions"] == 2
            wait_for_clip_end(page, seconds)
            page.click("#toggle")
            wait_for_status(page, "stopped", timeout=60)
            done = state(page)
    finally:
        browser.close()

    finals = done["finals"]
    old, new = finals[:count], finals[count:]
    assert {f["session"] for f in new} == {old[-1]["session"] + 1}
    # The second session's times continue the first's instead of restarting at 0:00.
    assert new[0]["beg_ms"] >= old[-1]["end_ms"] - 200, (old[-1], new[0])
    check_times(finals, (seconds + SILENCE_S + 2) * 1000)
    assert finals[-1]["end_ms"] > 8000, finals
    # Lossless: the audio after the first session's last final was sent again, then
    # what was captured meanwhile, so the whole sentence is there across the two.
    text = " ".join(f["text"] for f in finals)
    assert count_errors(reference, text).rate < 0.15, finals
    assert done["lostMs"] == 0


def record_through_cuts(browser, server: ServerProcess, proxy: CuttingProxy, cuts: int,
                        seconds: float) -> tuple[dict, str]:
    """The page records the clip through ``proxy``, which resets its connection ``cuts`` times mid-clip
    (each time once the page is live again); the page's final state and the server's log."""
    page = open_page(browser, f"http://127.0.0.1:{proxy.port}/")
    page.click("#toggle")
    wait_for_words(page, ["fellow"], timeout=120, server=server)
    for resumed in range(1, cuts + 1):
        assert proxy.cut(), "the page had no connection open"
        page.wait_for_function("(n) => window.woasr.resumes >= n && window.woasr.status === 'live'",
                               arg=resumed, timeout=30_000)
        time.sleep(0.7)
    wait_for_clip_end(page, seconds)
    page.click("#toggle")
    wait_for_status(page, "stopped", timeout=60)
    return state(page), server.text


def check_whole(done: dict, seconds: float, reference: str) -> None:
    """The transcript of a resumed recording is the uninterrupted one: times in order, words right, no loss."""
    finals = done["finals"]
    check_times(finals, (seconds + SILENCE_S + 2) * 1000)
    assert count_errors(reference, " ".join(f["text"] for f in finals)).rate < 0.15, finals
    assert done["lostMs"] == 0 and not done["errors"], done


def test_page_resumes_its_session_after_dropped_connections(playwright, clip):
    """A proxy resets the page's connection three times mid-clip: the page resumes the same server
    session each time, resends only what the server did not get, and the transcript is whole."""
    wav, seconds, reference = clip
    port = free_port()
    browser = launch(playwright, wav)
    try:
        with ServerProcess(server_args(port)) as server, CuttingProxy(port) as proxy:
            done, log = record_through_cuts(browser, server, proxy, 3, seconds)
    finally:
        browser.close()
    assert done["resumes"] == 3 and done["sessions"] == 1, done
    assert len(re.findall(r"session ws-1 resumed", log)) == 3, log
    check_whole(done, seconds, reference)


def test_page_follows_resume_port_to_the_front_end_that_holds_its_session(playwright, clip):
    """``--processes 2``: the page's session lives on front-end 0; after a cut its reconnect lands on
    front-end 1, which answers ``resume_failed`` with ``resume_port``, and the page resumes there.

    The proxy stands in for the network (and for the kernel's choice of process), so the page's
    origin is the proxy's: ``--allowed-origins`` lets the page open sessions on the own ports."""
    wav, seconds, reference = clip
    port = free_port()
    browser = launch(playwright, wav)
    proxy = CuttingProxy(port + 1, later=port + 2)  # front-end 0's own port; after the cut, front-end 1's
    args = [*server_args(port), "--processes", "2", "--allowed-origins", f"http://127.0.0.1:{proxy.port}"]
    try:
        with ServerProcess(args, copies=2) as server, proxy:
            done, log = record_through_cuts(browser, server, proxy, 1, seconds)
    finally:
        browser.close()
    assert len(re.findall(r"session f0\.ws-1 resumed", log)) == 1, log
    assert done["redirects"] == 1 and done["resumes"] == 1 and done["sessions"] == 1, done
    check_whole(done, seconds, reference)
