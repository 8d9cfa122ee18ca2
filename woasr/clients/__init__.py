"""Streaming clients: audio sources, an outage ring buffer, one reconnect loop (reconnect.py) and its
TCP and WebSocket transports (tcp_client.py, ws_client.py), and the terminal display (display.py)."""
