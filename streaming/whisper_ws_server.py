"""Seed path of the WebSocket server: ``woasr serve --tcp-port 0`` (see ``--help``).

WebSocket/HTTP on STREAM_WS_PORT (43008): ``ws://HOST:43008/``, the browser page
at ``http://HOST:43008/``. Give ``--tcp-port 43007`` to serve TCP as well.
"""

import sys

from woasr.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", "--tcp-port", "0", *sys.argv[1:]]))
