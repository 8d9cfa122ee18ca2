"""Transports: move bytes between sockets and the session protocol, nothing more."""
