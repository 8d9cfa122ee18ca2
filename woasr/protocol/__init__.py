"""The session protocol, sans-I/O: bytes and control messages in, events out.

Every transport (TCP, WebSocket) drives the same :class:`StreamSession`;
transports only move bytes and format events.
"""
