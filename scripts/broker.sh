#!/usr/bin/env bash
# The Kafka-protocol broker for the tests: tansu (Apache-2.0, from crates.io) with
# in-memory storage.
#
#   scripts/broker.sh install   # cargo install tansu, only when it is missing
#   scripts/broker.sh start     # start it on $KAFKA_BROKERS (default 127.0.0.1:9092)
#   scripts/broker.sh stop
#
# A memory-storage broker keeps every message in RAM and loses them on restart: start
# a fresh one per test run.
set -euo pipefail
cd "$(dirname "$0")/.."

TANSU_VERSION="0.6.0"
BROKER="${KAFKA_BROKERS:-127.0.0.1:9092}"
STATE_DIR="${OUTBOX_BROKER_DIR:-$PWD/target/broker}"
PID_FILE="$STATE_DIR/tansu.pid"
LOG_FILE="$STATE_DIR/tansu.log"

say() { echo "scripts/broker.sh: $*" >&2; }

install() {
    if command -v tansu >/dev/null 2>&1; then
        return
    fi
    say "tansu not found; installing tansu $TANSU_VERSION from crates.io (about 10 minutes on 2 cores, once)"
    cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore
}

listening() {
    (exec 3<>"/dev/tcp/${BROKER%:*}/${BROKER##*:}") 2>/dev/null
}

start() {
    install
    if listening; then
        say "something already listens on $BROKER; stop it first (scripts/broker.sh stop)"
        exit 1
    fi
    mkdir -p "$STATE_DIR"
    tansu broker \
        --listener-url "tcp://$BROKER" \
        --advertised-listener-url "tcp://$BROKER" \
        --storage-engine "memory://tansu/" \
        >"$LOG_FILE" 2>&1 &
    echo $! >"$PID_FILE"
    for _ in $(seq 1 100); do
        if listening; then
            say "tansu listens on $BROKER (pid $(cat "$PID_FILE"), log $LOG_FILE)"
            return
        fi
        if ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
            say "tansu exited at start; its log:"
            cat "$LOG_FILE" >&2
            exit 1
        fi
        sleep 0.1
    done
    say "tansu did not listen on $BROKER within 10 s; its log:"
    cat "$LOG_FILE" >&2
    exit 1
}

stop() {
    if [ -f "$PID_FILE" ]; then
        local pid
        pid=$(cat "$PID_FILE")
        kill -CONT "$pid" 2>/dev/null || true # a test may have frozen it
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        rm -f "$PID_FILE"
    fi
}

case "${1:-}" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    *) echo "usage: scripts/broker.sh install|start|stop" >&2; exit 2 ;;
esac
