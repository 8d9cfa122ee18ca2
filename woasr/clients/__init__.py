"""Streaming clients: audio sources, an outage ring buffer and the TCP client."""
