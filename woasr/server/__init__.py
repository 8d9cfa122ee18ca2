"""The server: the service every transport shares, and the one session lifecycle.

- :mod:`~woasr.server.config`: the settings record.
- :mod:`~woasr.server.service`: model, engine, admission, open sessions, draining.
- :mod:`~woasr.server.lifecycle`: ``serve_session()``, what happens to every connection.
- :mod:`~woasr.server.runner`: one session's updates on the engine, its events out.
- :mod:`~woasr.server.metrics`: Prometheus metrics and the periodic log line.
- :mod:`~woasr.server.main`: ``woasr serve``: listeners, signals, drain (the only importer of transports).
"""
