"""Triton Python-backend entry point: the model lives in woasr (woasr/engine/triton_backend.py)."""

from woasr.engine.triton_backend import TritonPythonModel  # noqa: F401
