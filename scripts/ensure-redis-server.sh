#!/usr/bin/env bash
# The test suite starts its own redis-server processes on free loopback ports.
# Use the binary on PATH; else install Debian's package when running as root; else stop.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "redis-server not found: installing Debian's redis-server package" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
  # the package starts a service on 6379 on some systems; the tests never use it
  command -v redis-server >/dev/null 2>&1 && exit 0
fi
echo "error: the tests need a redis-server binary (Redis >= 7). Install it (Debian/Ubuntu:" >&2
echo "  sudo apt-get install redis-server; macOS: brew install redis) and run make test again." >&2
exit 1
