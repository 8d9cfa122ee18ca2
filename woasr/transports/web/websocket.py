"""WebSocket endpoint: JSON events out, binary PCM16LE audio and JSON/``flush`` text in.

Only moves messages: the session protocol decides what they mean
(:mod:`woasr.protocol.session`), :mod:`woasr.protocol.messages` spells them.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from starlette.websockets import WebSocket, WebSocketDisconnect

from woasr.protocol.events import CAPACITY, Error, Event
from woasr.protocol.messages import (
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_TOO_BIG,
    CLOSE_TRY_AGAIN_LATER,
    encode_event,
    parse_text,
    ready_message,
)
from woasr.transports.runner import log_session_end, log_session_start

if TYPE_CHECKING:
    from woasr.server import StreamingService

log = logging.getLogger(__name__)

async def serve_websocket(websocket: WebSocket, service: StreamingService) -> None:
    """One connection = one session: ``ready`` first, then events until the session ends."""
    await websocket.accept()
    peer = f"{websocket.client.host}:{websocket.client.port}" if websocket.client else None
    asr = await service.wait_ready()
    if refusal := service.refusal("ws"):
        await websocket.send_text(encode_event(refusal))
        if refusal.code == CAPACITY:
            await _close_quietly(websocket, CLOSE_TRY_AGAIN_LATER, "try again later")
        else:
            await _close_quietly(websocket, CLOSE_GOING_AWAY, "server shutting down")
        return
    loop = asyncio.get_running_loop()
    limit = service.config.ws_max_frame
    ending = "finished"
    close_code, close_reason = CLOSE_NORMAL, ""

    async def send(events: list[Event]) -> None:
        for event in events:
            await websocket.send_text(encode_event(event))

    runner = service.new_runner("ws", send)
    sid, session = runner.session_id, runner.session

    async def read_messages() -> None:
        try:
            await read_until_closed()
        finally:
            if not session.closed:  # the peer went away (or reading failed): nobody to answer
                runner.abort()

    async def read_until_closed() -> None:
        nonlocal ending, close_code, close_reason
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                if not session.closed:
                    # A close frame is answered at once (RFC 6455): nothing more can be sent.
                    ending = f"client closed the connection ({message.get('code')})"
                return
            data = message.get("bytes")
            if data is not None:
                if len(data) > limit:
                    close_code, close_reason = CLOSE_TOO_BIG, f"audio message over {limit} bytes"
                    ending = f"message of {len(data)} bytes over the {limit}-byte limit"
                    runner.post([Error("frame_too_large", f"a message of {len(data)} bytes is over the limit of "
                                       f"{limit} bytes; it was not processed. Audio before it is finished; closing")])
                    session.close()
                    runner.wake()
                    return
                runner.post(session.receive_audio(data, loop.time()))
            else:
                command = parse_text(message.get("text") or "")
                if isinstance(command, Error):
                    log.info("session %s: %s: %s", sid, command.code, command.message)
                    runner.post([command])
                else:
                    runner.post(session.receive_command(command))
            runner.wake()

    with service.track_session(runner):
        log_session_start(sid, peer, service.active_sessions)
        await websocket.send_text(ready_message(sid, asr.choice.name, session.options, service.describe()))
        reading = asyncio.create_task(read_messages())
        try:
            await runner.run()
            if service.draining and close_code == CLOSE_NORMAL:
                close_code, close_reason, ending = CLOSE_GOING_AWAY, "server shutting down", "finished (shutdown)"
            if not runner.aborted:
                await websocket.close(close_code, close_reason)
        except (WebSocketDisconnect, OSError, RuntimeError) as exc:
            ending = f"disconnected while sending ({type(exc).__name__})"
        except Exception:
            ending = "server error"
            log.exception("session %s failed", sid)
            await _close_quietly(websocket, 1011, "server error")
        finally:
            reading.cancel()
            log_session_end(sid, peer, ending, session)


async def _close_quietly(websocket: WebSocket, code: int, reason: str) -> None:
    try:
        await websocket.close(code, reason)
    except (WebSocketDisconnect, OSError, RuntimeError):
        pass
