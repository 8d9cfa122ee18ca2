#!/usr/bin/env bash
# Put Debian's Chromium at /usr/bin/chromium for tests/test_browser.py
# (Playwright drives it; it cannot download a browser of its own here).
# Idempotent: returns at once, without network, when it is already installed.
set -euo pipefail
chromium=/usr/bin/chromium

if [ -x "$chromium" ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "browser_deps: $chromium is missing; as root, install Debian's chromium package:" >&2
  echo "  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium" >&2
  echo "browser_deps: the other tests run; tests/test_browser.py will fail until then" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "browser_deps: $chromium is missing and there is no apt-get; install Chromium there by hand" >&2
  exit 1
fi

echo "browser_deps: installing chromium with apt-get" >&2
apt-get update -qq
# -qq and no stdout: only errors reach the log.
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
if [ ! -x "$chromium" ]; then
  echo "browser_deps: the chromium package did not provide $chromium" >&2
  exit 1
fi
echo "browser_deps: $("$chromium" --version 2>/dev/null)" >&2
