"""ASR backends and model resolution."""
