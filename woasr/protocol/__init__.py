"""The session protocol and the wire formats, sans-I/O: bytes and commands in, events out.

- :mod:`~woasr.protocol.session`: ``StreamSession``, the one protocol every transport drives;
  its lifecycle is the state machine of :mod:`~woasr.protocol.state`.
- :mod:`~woasr.protocol.events`, :mod:`~woasr.protocol.commands`, :mod:`~woasr.protocol.ending`:
  what a session emits, what a client may ask, how a session ends.
- :mod:`~woasr.protocol.websocket`, :mod:`~woasr.protocol.tcp`,
  :mod:`~woasr.protocol.openai_transcriptions`: each wire format, encoded and decoded in one place
  for the server and the clients.
"""
