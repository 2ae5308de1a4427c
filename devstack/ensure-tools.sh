#!/usr/bin/env bash
# Install the Debian tools the tests use when they are missing (used by CI and `make test`):
# pdftoppm (poppler-utils) renders every kind of invoice page to an image, promtool
# (prometheus) checks and tests the alert rules. Nothing is done where they are present.
set -euo pipefail

missing=()
command -v pdftoppm >/dev/null || missing+=(poppler-utils)
command -v promtool >/dev/null || missing+=(prometheus)
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null || [ "$(id -u)" -ne 0 ]; then
  echo "missing ${missing[*]}: install them (Debian: apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
  || { apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
