#!/usr/bin/env bash
# The system packages the build and the tests need, installed from Debian's archive
# when missing (as root, or through sudo):
#   pkg-config, libssl-dev  rdkafka's `ssl` feature links the system's OpenSSL
#   stunnel4, openssl       the TLS tests put a TLS listener (with a CA made at test
#                           time) in front of the test broker
#   pgbouncer               a wake-up test listens through a pooler in transaction mode
set -euo pipefail

missing=()
for package in pkg-config libssl-dev stunnel4 openssl pgbouncer; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "scripts/deps.sh: installing ${missing[*]} from Debian's packages" >&2
sudo=()
[ "$(id -u)" -ne 0 ] && sudo=(sudo)
export DEBIAN_FRONTEND=noninteractive
if ! "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; then
    "${sudo[@]}" apt-get update -q >/dev/null
    "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
fi
