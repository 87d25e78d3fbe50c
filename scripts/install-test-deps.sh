#!/usr/bin/env bash
# What the test suite needs beyond npm, installed with apt-get when it is missing and we may: Debian's Chromium
# for the debug page test (or CHROMIUM_PATH naming another), and Debian's PostgreSQL for the tests that run on it
# (test/helpers/postgres-server.ts starts a throwaway server from /usr/lib/postgresql/*/bin, or PG_BINDIR).
# .ci/run calls it, and so does `npm test` (pretest).
# Without root or apt-get it installs nothing and says what is missing; the tests that need it then fail saying so.
set -euo pipefail

missing=()
chromium="${CHROMIUM_PATH:-/usr/bin/chromium}"
[ -x "$chromium" ] || missing+=(chromium)
if [ -n "${PG_BINDIR:-}" ]; then
  [ -x "$PG_BINDIR/initdb" ] || { echo "install-test-deps: PG_BINDIR=$PG_BINDIR has no initdb" >&2; }
else
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
fi

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-test-deps: missing ${missing[*]}; as root on Debian: apt-get install ${missing[*]}" >&2
  exit 0
fi
echo "install-test-deps: installing ${missing[*]} with apt-get" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
