#!/usr/bin/env bash
# Install headless Chromium (Debian package) for the report screenshot test, if it is not there yet.
# Why a script: the browser is a system package the test suite needs but pip cannot provide; it is idempotent,
# quiet, and never fails the caller (the screenshot test skips itself when Chromium is absent).
set -u
CHROMIUM=/usr/bin/chromium
if [ -x "$CHROMIUM" ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "warning: not root and no sudo; cannot install chromium (the report screenshot test will be skipped)" >&2
    exit 0
  fi
fi
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get update -qq >/dev/null 2>&1 \
   || ! $SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null 2>&1; then
  echo "warning: apt-get could not install chromium (the report screenshot test will be skipped)" >&2
  exit 0
fi
[ -x "$CHROMIUM" ] || echo "warning: chromium installed but $CHROMIUM is missing" >&2
exit 0
