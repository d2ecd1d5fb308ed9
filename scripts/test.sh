#!/usr/bin/env bash
# Runs the whole test suite against the real services it needs.
#
#   scripts/test.sh                     # every test
#   scripts/test.sh -E 'test(store)'    # extra arguments go to cargo nextest
#
# PostgreSQL: DATABASE_URL, default postgres://postgres@127.0.0.1:5432/test. Each test
# works in a schema of its own.
# MySQL or MariaDB: MYSQL_URL, default mysql://root@127.0.0.1:3306/test (a user that
# may create databases). Each test works in a database of its own.
# Kafka: a fresh tansu broker (installed from crates.io when missing) on
# 127.0.0.1:9092 for the run, stopped at the end; set KAFKA_BROKERS to use a broker
# of your own instead. The TLS and SASL tests start private brokers behind stunnel
# (installed from Debian's packages by scripts/deps.sh when missing).
# A missing service fails the run; it never skips tests.
set -euo pipefail
cd "$(dirname "$0")/.."

export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
export MYSQL_URL="${MYSQL_URL:-mysql://root@127.0.0.1:3306/test}"

fail() { echo "scripts/test.sh: $*" >&2; exit 1; }

# DATABASE_URL without its password, for messages.
shown_url() {
    sed -E 's#(://[^:/@]*:)[^@]*@#\1***@#; s#((ssl)?password=)[^&]*#\1***#g' <<<"$DATABASE_URL"
}

check_postgres() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -d "$DATABASE_URL" -t 10 \
            || fail "PostgreSQL is not accepting connections at $(shown_url) (start it, or set DATABASE_URL)"
    else
        # No client tools: at least check that the port answers.
        check_port DATABASE_URL "$DATABASE_URL" 5432
    fi
}

# The host and port of a database URL answer a TCP connection.
check_port() { # NAME URL DEFAULT_PORT
    local hostport host port
    hostport=$(sed -E 's#^[a-z]+://([^@/]*@)?([^/?]*).*#\2#' <<<"$2")
    host=${hostport%:*}; port=${hostport##*:}; [ "$port" = "$hostport" ] && port=$3
    (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null \
        || fail "nothing listens at $host:$port for $1 (start the server, or set $1)"
}

scripts/deps.sh # stunnel and openssl for the TLS tests, OpenSSL's headers for the build

check_postgres
echo "scripts/test.sh: PostgreSQL at $(shown_url)"
check_port MYSQL_URL "$MYSQL_URL" 3306
echo "scripts/test.sh: MySQL at $(sed -E 's#(://[^:/@]*:)[^@]*@#\1***@#' <<<"$MYSQL_URL")"

if [ -z "${KAFKA_BROKERS:-}" ]; then
    scripts/broker.sh stop # a broker left by an interrupted run
    scripts/broker.sh start
    trap 'scripts/broker.sh stop' EXIT
    export KAFKA_BROKERS=127.0.0.1:9092
fi
echo "scripts/test.sh: Kafka at $KAFKA_BROKERS"

# nextest does not run doctests: run them first, so the summary of the main run
# comes last.
cargo test --workspace --doc
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
else
    echo "scripts/test.sh: cargo-nextest not found, using cargo test" >&2
    cargo test --workspace --no-fail-fast "$@"
fi
