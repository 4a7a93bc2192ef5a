#!/bin/sh
# tests/browser/run.sh - the demo pages in headless Chromium (playwright-core
# driving Debian's chromium), as node --test with TAP output ("# pass N").
#
# Which server: see tests/browser/stack.mjs.  TAILGATE_STACK=module.mjs, or
# TAILGATE_URL=http://... (a stack already running); by default the real
# stack (tests/browser/real_stack.mjs) when the build and PostgreSQL are
# there, else the DEVELOPMENT fake server (not the product).
# Screenshots go to tests/artifacts/.  h2.test.mjs (and shop.test.mjs)
# start a real stack of their own: h2 serves it over TLS and HTTP/2.
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"

if [ ! -d node_modules/playwright-core ]; then
    echo "# browser tests: installing node devDependencies" >&2
    if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error >&2
    else npm install --no-audit --no-fund --loglevel=error >&2; fi
fi
if [ -z "${TAILGATE_CHROMIUM:-}" ] && [ ! -x /usr/bin/chromium ] && [ ! -x /usr/bin/chromium-browser ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        echo "# browser tests: installing Debian's chromium" >&2
        apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2
    else
        echo "Bail out! chromium not found: apt-get install chromium (or set TAILGATE_CHROMIUM)"
        exit 1
    fi
fi
# The real stack (PostgreSQL, tailgated, tailgate-loadgen, tailgate-fcgi,
# nginx: tests/browser/real_stack.py) when this machine has a build of it,
# unless told otherwise; TAILGATE_BROWSER_DEV=1 picks the development server.
if [ -z "${TAILGATE_STACK:-}" ] && [ -z "${TAILGATE_URL:-}" ] && [ "${TAILGATE_BROWSER_DEV:-}" != 1 ]; then
    if python3 tests/browser/real_stack.py --check; then
        TAILGATE_STACK=tests/browser/real_stack.mjs
        export TAILGATE_STACK
    fi
fi
if [ -z "${TAILGATE_STACK:-}" ] && [ -z "${TAILGATE_URL:-}" ]; then
    echo "# NOTE: no TAILGATE_STACK or TAILGATE_URL: running against the DEVELOPMENT fake server, not the real stack" >&2
fi
mkdir -p tests/artifacts
exec node --test --test-reporter=tap --test-concurrency=1 tests/browser/
