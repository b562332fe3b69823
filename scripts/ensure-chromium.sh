#!/usr/bin/env bash
# The board's browser tests (tests/test_board_browser.py) drive Debian's chromium through
# Playwright's Python API. Use the binary when present; else install Debian's package when
# running as root; else say so and go on (those tests then skip, naming what is missing).
set -euo pipefail
CHROMIUM="${TASKORA_CHROMIUM:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "chromium not found: installing Debian's chromium package" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
  [ -x "$CHROMIUM" ] && exit 0
fi
echo "warning: no chromium at $CHROMIUM; the board's browser tests will skip" >&2
echo "  (Debian/Ubuntu: sudo apt-get install chromium)" >&2
exit 0
