"""Wire formats: what the server encodes, the clients decode to the same thing (no sockets)."""

import pytest

from woasr.core.language import UnsupportedLanguage, resolve_language
from woasr.core.records import Word
from woasr.protocol import tcp, websocket
from woasr.protocol.commands import Clear, Close, Configure, Flush, Resume
from woasr.protocol.ending import Ending
from woasr.protocol.events import (
    Cleared,
    Configured,
    Error,
    Final,
    Flushed,
    Partial,
    Ready,
    Resumed,
    SessionOptions,
    SpeechStarted,
    UtteranceEnded,
)

WORDS = (Word(0.5, 0.9, " Hello", 0.912), Word(0.9, 1.25, " world.", 0.5))
OPTIONS = SessionOptions("en", "names: Ada", 0.5, True, True, True)
EVENTS = [
    Ready("ws-1", "tiny.en", OPTIONS, {"beam_size": 5, "agreement": 2}),
    Ready("ws-2", "tiny.en", OPTIONS, resume_token="secret"),
    Resumed("ws-2", 48000, 2),
    Final(3, WORDS, lag_s=1.234),
    Final(4, WORDS, lag_s=0.5, received_samples=32000),
    Final(0, (Word(0.0, 0.4, "你好"), Word(0.4, 0.8, "世界"))),  # no spaces between words
    Partial(WORDS[:1], 0.5),
    Partial((), 1.25),  # clears the display
    Flushed(),
    Cleared(),
    Configured(OPTIONS),
    SpeechStarted(2.5),
    UtteranceEnded(1.25),
    Error("bad_value", "min_chunk must be a number"),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: type(e).__name__)
def test_every_websocket_event_decodes_to_what_was_encoded(event):
    text = websocket.encode_event(event)
    decoded = websocket.decode_server_message(text)
    assert type(decoded) is type(event)
    assert websocket.encode_event(decoded) == text  # the wire form survives a round trip exactly
    if isinstance(event, (Final, Partial)):
        assert (decoded.text, decoded.beg_ms, decoded.end_ms) == (event.text, event.beg_ms, event.end_ms)


def test_a_seed_final_without_words_still_decodes():
    decoded = websocket.decode_server_message('{"type":"final","seq":0,"beg_ms":100,"end_ms":900,"text":"Hi there"}')
    assert (decoded.text, decoded.beg_ms, decoded.end_ms) == ("Hi there", 100, 900)


def test_unknown_server_types_are_skipped_and_garbage_is_an_error():
    assert websocket.decode_server_message('{"type":"something_new"}') is None
    with pytest.raises(ValueError):
        websocket.decode_server_message("not json")


@pytest.mark.parametrize("command", [Flush(), Clear(), Close(), Configure({"partials": True, "language": "de"}),
                                     Resume("ws-2", "secret", 4), Resume("ws-3", "t", -1)],
                         ids=lambda c: type(c).__name__)
def test_client_commands_decode_to_what_the_client_encoded(command):
    assert websocket.decode_client_text(websocket.encode_command(command)) == command


@pytest.mark.parametrize("text,code", [
    ("hello", "bad_message"), ("[1]", "bad_message"), ('{"type":"dance"}', "unknown_type"),
    ('{"type":"resume","session_id":"ws-1"}', "resume_failed"),
    ('{"type":"resume","session_id":"ws-1","token":"t","last_seq":-2}', "resume_failed"),
    ('{"type":"resume","session_id":"ws-1","token":"t","last_seq":true}', "resume_failed"),
])
def test_bad_client_text_is_an_error_to_send_back(text, code):
    result = websocket.decode_client_text(text)
    assert isinstance(result, Error) and result.code == code


def test_the_seed_plain_flush_is_a_flush():
    assert websocket.decode_client_text("flush\n") == Flush()


def test_close_codes_come_from_websockets():
    from websockets.frames import CloseCode

    assert websocket.close_frame(Ending.FINISHED, "")[0] is CloseCode.NORMAL_CLOSURE
    assert websocket.close_frame(Ending.REFUSED, "try again later") == (CloseCode.TRY_AGAIN_LATER, "try again later")
    assert websocket.close_frame(Ending.SHUTDOWN, "")[0] == 1001
    assert websocket.close_frame(Ending.INPUT_TOO_LARGE, "")[0] == 1009
    assert websocket.close_frame(Ending.GONE, "") is None  # nobody to send a close to
    code, reason = websocket.close_frame(Ending.FAILED, "é" * 100)
    assert code == 1011 and len(reason.encode()) <= 123  # RFC 6455 limit, cut on a character boundary


def test_a_message_over_the_limit_ends_the_input_with_an_error():
    assert websocket.decode_audio_message(b"\0" * 10, 10) == (b"\0" * 10,)
    (ended,) = websocket.decode_audio_message(b"\0" * 12, 10)
    assert ended.ending is Ending.INPUT_TOO_LARGE and ended.error.code == "frame_too_large"
    assert "12" in ended.reason and "10" in ended.reason


def test_an_odd_sized_audio_message_loses_its_last_byte_with_an_error():
    audio, error = websocket.decode_audio_message(b"\1\2\3", 10)
    assert audio == b"\1\2" and error.code == "odd_frame"  # the stream stays aligned on samples
    (only,) = websocket.decode_audio_message(b"\1", 10)
    assert isinstance(only, Error) and only.code == "odd_frame"


def test_deep_nesting_is_a_bad_message_not_a_crash():
    for text in ("[" * 100_000, "{\"a\":" * 100_000):
        result = websocket.decode_client_text(text)
        assert isinstance(result, Error) and result.code == "bad_message"


def test_client_text_echoed_in_errors_is_cut():
    result = websocket.decode_client_text('{"type":"' + "x" * 100_000 + '"}')
    assert result.code == "unknown_type" and len(result.message) < 120


def test_tcp_lines_decode_in_any_split_to_what_was_encoded():
    events = [Final(0, WORDS), Error("odd_byte", "half a sample"), Final(1, (Word(2.0, 2.5, " Bye."),))]
    wire = tcp.encode_events([*events, Flushed(), Partial(WORDS)])  # TCP carries finals and errors only
    assert wire.count(b"\n") == 3
    for size in (1, 7, len(wire)):
        decoder = tcp.LineDecoder()
        decoded = [e for i in range(0, len(wire), size) for e in decoder.receive_data(wire[i:i + size])]
        assert tcp.encode_events(decoded) == wire
        assert [getattr(e, "seq", None) for e in decoded] == [0, None, 1]


def test_a_tcp_line_that_is_not_the_protocol_is_skipped():
    assert tcp.LineDecoder().receive_data(b"hello there\n") == []


@pytest.mark.parametrize("value,supported,expected", [
    (None, None, None), ("auto", None, None), ("AUTO", ("en", "de"), None),
    (None, ("en",), "en"), ("auto", ("en",), "en"),  # an English-only model decodes English
    ("de", ("en", "de"), "de"), ("DE", ("en", "de"), "de"), (" en ", ("en",), "en"),
])
def test_one_language_rule(value, supported, expected):
    assert resolve_language(value, supported) == expected


@pytest.mark.parametrize("value,supported", [("de", ("en",)), (3, None), ("", None), ("xx", ("en", "de"))])
def test_languages_the_model_cannot_decode_are_refused(value, supported):
    with pytest.raises(UnsupportedLanguage):
        resolve_language(value, supported)
