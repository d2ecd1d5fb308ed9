#!/usr/bin/env bash
# What idle databases cost a relay fleet: N idle PostgreSQL databases (schemas of one
# database, `idlecost`, made again each run), served by P `outbox relay --databases`
# processes; prints the connections each process holds and the transactions a second
# each idle database costs the server, over WINDOW seconds after a 20-second start.
#   N=20 P=2 WINDOW=60 scripts/fleet-idle-cost.sh
# Needs PostgreSQL at 127.0.0.1:5432 (user postgres, trust) with max_connections above
# N * (OUTBOX_FLEET_CONNECTIONS + 1) + P, and the broker (scripts/broker.sh start).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
N=${N:-20}; P=${P:-2}; WINDOW=${WINDOW:-60}
pg="postgres://postgres@127.0.0.1:5432"
cargo build --quiet --manifest-path "$root/Cargo.toml" -p outbox-cli -p outbox-migration
bin="${CARGO_TARGET_DIR:-$root/target}/debug"
psql -q "$pg/postgres" -c "DROP DATABASE IF EXISTS idlecost WITH (FORCE)" -c "CREATE DATABASE idlecost"
for i in $(seq 0 $((N-1))); do
    psql -q "$pg/idlecost" -c "CREATE SCHEMA s$i"
    DATABASE_URL="$pg/idlecost?options=-c%20search_path%3Ds$i" "$bin/outbox-migration" up > /dev/null
done
dir=$(mktemp -d)
pids=()
for p in $(seq 0 $((P-1))); do
    for i in $(seq 0 $((N-1))); do
        echo "s$i $pg/idlecost?options=-c%20search_path%3Ds$i&application_name=idle-$p"
    done > "$dir/databases-$p"
    OUTBOX_SERVICE_NAME=idle "$bin/outbox" relay --databases "$dir/databases-$p" \
        --brokers "${KAFKA_BROKERS:-127.0.0.1:9092}" > "$dir/relay-$p.log" 2>&1 &
    pids+=($!)
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null; wait; psql -q "$pg/postgres" -c "DROP DATABASE IF EXISTS idlecost WITH (FORCE)"; rm -rf "$dir"' EXIT
commits() {
    psql -tA "$pg/postgres" -c "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'idlecost'"
}
sleep 20
before=$(commits)
sleep "$WINDOW"
after=$(commits)
echo "connections per process (pooled and the coordinator's; each PostgreSQL database adds one listening connection):"
psql -tA "$pg/postgres" -c "SELECT application_name, count(*) FROM pg_stat_activity WHERE datname = 'idlecost' AND application_name LIKE 'idle-%' GROUP BY 1 ORDER BY 1"
echo "listening connections: $(psql -tA "$pg/postgres" -c "SELECT count(*) FROM pg_stat_activity WHERE datname = 'idlecost' AND application_name LIKE 'outbox listen%'")"
for p in $(seq 0 $((P-1))); do
    # Databases taken up, less those released (the first process serves all until it
    # sees the others).
    served=$(grep -c 'serving database' "$dir/relay-$p.log" || true)
    released=$(grep -c 'database released' "$dir/relay-$p.log" || true)
    echo "process $p serves $((served - released)) databases ($served taken up, $released released)"
done
echo "transactions in ${WINDOW}s: $((after - before)); per idle database per second: $(python3 -c "print(round(($after - $before) / $WINDOW / $N, 2))")"
