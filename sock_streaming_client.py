"""Seed path of the interactive client: ``woasr client`` (microphone, or ``--file``)."""

import sys

from woasr.cli import main

if __name__ == "__main__":
    sys.exit(main(["client", *sys.argv[1:]]))
