#!/usr/bin/env bash
# Checks an AsyncAPI document with the AsyncAPI Initiative's parser (@asyncapi/parser,
# from the npm registry, pinned by tests/node/package-lock.json), installed in the
# user's cache and made again when the lock file changes. Usage: scripts/asyncapi.sh
# FILE. Exits non-zero on any error the parser reports; prints what it parsed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
node_dir="${XDG_CACHE_HOME:-$HOME/.cache}/outbox/node"
if ! cmp -s "$root/tests/node/package-lock.json" "$node_dir/package-lock.json" 2>/dev/null \
    || [ ! -d "$node_dir/node_modules/@asyncapi/parser" ]; then
    echo "scripts/asyncapi.sh: installing @asyncapi/parser into $node_dir" >&2
    rm -rf "$node_dir"
    mkdir -p "$node_dir"
    cp "$root/tests/node/package.json" "$root/tests/node/package-lock.json" "$node_dir/"
    (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
cp "$root/tests/node/validate.mjs" "$node_dir/validate.mjs"
exec node "$node_dir/validate.mjs" "$1"
