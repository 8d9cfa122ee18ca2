"""Seed path of the multiprocessing + Triton server: ``woasr serve --processes 2`` (a later
``--processes N`` wins).

    python multi_triton_streaming.py --triton-url 127.0.0.1:8001 --processes 4

With ``--triton-url`` (or ``STREAM_TRITON_URL``) the front-ends send their model calls to those
Triton instances (``woasr triton serve``); without it each process loads its own model replica.
Every other ``woasr serve`` option applies (docs/deployment.md).
"""

import sys

from woasr.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", "--processes", "2", *sys.argv[1:]]))
