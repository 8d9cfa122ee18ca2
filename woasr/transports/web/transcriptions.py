"""OpenAI-compatible ``POST /v1/audio/transcriptions`` (placeholder until built)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter

if TYPE_CHECKING:
    from woasr.server import StreamingService


def transcription_router(service: StreamingService) -> APIRouter:
    return APIRouter()
