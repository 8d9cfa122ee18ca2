"""The WebSocket/HTTP transport (port 43008): a FastAPI app served by uvicorn."""
