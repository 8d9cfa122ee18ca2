"""Seed path of the VAD-triggered segment capture utility: ``woasr capture`` (microphone, ``--file`` or ``--stdin``)."""

import sys

from woasr.cli import main

if __name__ == "__main__":
    sys.exit(main(["capture", *sys.argv[1:]]))
