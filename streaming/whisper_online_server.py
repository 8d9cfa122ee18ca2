"""Seed path of the TCP streaming server: ``woasr serve`` (see ``--help``).

The host defaults to STREAM_HOST, then IP_ADDR, then 127.0.0.1.
"""

import sys

from woasr.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
