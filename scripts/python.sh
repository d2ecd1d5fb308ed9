#!/usr/bin/env bash
# A Python virtual environment with tests/python/requirements.txt installed from PyPI,
# kept in the user's cache and made again when the requirements change; prints the
# path of its python. The tests that run code nobody here wrote (the CloudEvents SDK
# reading what the relay published) call it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
requirements="$root/tests/python/requirements.txt"
venv="${XDG_CACHE_HOME:-$HOME/.cache}/outbox/python"
stamp="$venv/requirements.txt"
if ! cmp -s "$requirements" "$stamp" 2>/dev/null || [ ! -x "$venv/bin/python" ]; then
    echo "scripts/python.sh: installing $(grep -v '^#' "$requirements" | tr '\n' ' ')into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" >&2
    cp "$requirements" "$stamp"
fi
echo "$venv/bin/python"
