#!/bin/sh
# tests/js/run.sh - the browser client's unit tests (tests/js/*.test.mjs)
# under node's test runner; prints node's TAP summary ("# pass N", "# fail N").
# They need no package; node_modules is installed only if missing, for the
# browser tests beside them.
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
if [ ! -d node_modules ] && [ -f package.json ] && [ "${TAILGATE_JS_NO_INSTALL:-}" != 1 ]; then
    if [ -f package-lock.json ]; then npm ci --no-audit --no-fund --loglevel=error >&2
    else npm install --no-audit --no-fund --loglevel=error >&2; fi
fi
exec node --test --test-reporter=tap tests/js/
