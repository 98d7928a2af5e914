#!/usr/bin/env bash
# Persistence benchmarks (issue #5): restore, snapshots under load, and the fsync policies.
#
#   restore   mqtt-persist-bench builds the state through the broker core (default 100k
#             persistent sessions of 10 subscriptions each, 100k retained messages, 2 shards;
#             the last 10 % only in the journal), timing its snapshot; then times the broker's
#             own recovery of it (--rounds times, each in a fresh process so peak RSS is the
#             restore's) and the mqtt-broker binary's start on it (time to its first CONNACK).
#   snapshot  the broker on a copy of that state, mqtt-bench at a fixed rate (pairs, QoS 1,
#             persistent subscribers), once with --snapshot-interval 300 (no snapshot in the
#             run) and once per interval S of --snapshot-intervals (a snapshot of each shard
#             every S s): the latency with and without snapshots.
#   fsync     an empty data directory, mqtt-bench closed loop (pairs, QoS 1, persistent
#             subscribers, window 64), with --fsync always, interval and never, on 1 shard and
#             on --shards.
#
# Usage: benches/persistence.sh [options]
#   --parts LIST          any of: restore snapshot fsync (default: all three)
#   --sessions N          persistent sessions (default 100000)
#   --subscriptions N     subscriptions per session (default 10)
#   --retained N          retained messages (default 100000)
#   --shards N            shards, for the state and every broker (default 2)
#   --rounds N            restore rounds (default 3)
#   --rate R              msg/s of the snapshot runs (default 5000)
#   --snapshot-intervals L  seconds between snapshots in the "with" runs (default "10 2")
#   --duration S          seconds measured per mqtt-bench run (default 20)
#   --out DIR             where results.jsonl, the state and the logs go (default: a new
#                         directory under $CARGO_TARGET_DIR/persistence-bench)
#   --no-build            use the binaries already built
#
# Every JSON line in results.jsonl has the part, the run and the 1-minute load average before
# it ran. Binaries come from ${CARGO_TARGET_DIR:-target}/release. Needs jq (installed with
# apt-get when missing). Only listens on and connects to 127.0.0.1.
set -euo pipefail

SCRIPT=persistence.sh
# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

PARTS="restore snapshot fsync"
SESSIONS=100000
SUBSCRIPTIONS=10
RETAINED=100000
SHARDS=2
ROUNDS=3
RATE=5000
SNAPSHOT_INTERVALS="10 2"
DURATION=20
OUT=""
BUILD=1


while [ $# -gt 0 ]; do
    case "$1" in
        --parts) PARTS=$2; shift 2 ;;
        --sessions) SESSIONS=$2; shift 2 ;;
        --subscriptions) SUBSCRIPTIONS=$2; shift 2 ;;
        --retained) RETAINED=$2; shift 2 ;;
        --shards) SHARDS=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --rate) RATE=$2; shift 2 ;;
        --snapshot-intervals) SNAPSHOT_INTERVALS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

need_package jq jq

if [ "$BUILD" = 1 ]; then
    (cd "$ROOT" && cargo build --release -p mqtt-broker --bin mqtt-broker \
        && cargo build --release -p mqtt-broker-benches --bin mqtt-bench --bin mqtt-persist-bench) \
        || die "build failed"
fi
for binary in mqtt-broker mqtt-bench mqtt-persist-bench; do
    [ -x "$RELEASE/$binary" ] || die "no $RELEASE/$binary; build it or drop --no-build"
done

[ -n "$OUT" ] || OUT=$TARGET_DIR/persistence-bench/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"
STATE=$OUT/state

BROKER_PID=""
stop_broker() {
    local pid=$BROKER_PID
    BROKER_PID=""
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
trap stop_broker EXIT
trap 'exit 130' INT TERM

load() { cut -d' ' -f1 /proc/loadavg; }

# Appends one JSON object (stdin) to the results, tagged with the part, the run and LOAD.
record() { # PART RUN LOAD
    jq -c --arg part "$1" --arg run "$2" --arg load "$3" \
        '. + {part: $part, run: $run, load_1min: ($load | tonumber)}' | tee -a "$RESULTS"
}

# Starts the broker on DIR with more flags; sets BROKER_PID and PORT once it answers.
start_broker() { # DIR LOG FLAGS...
    local dir=$1 log=$2
    shift 2
    PORT=$(free_port) || die "no free port"
    "$RELEASE/mqtt-broker" --listen "127.0.0.1:$PORT" --data-dir "$dir" --shards "$SHARDS" \
        --log-level info "$@" >"$log" 2>&1 &
    BROKER_PID=$!
    "$RELEASE/mqtt-persist-bench" ready --addr "127.0.0.1:$PORT" >/dev/null \
        || die "the broker did not start; see $log"
}

bench() { # LABEL MQTT-BENCH FLAGS...
    local label=$1
    shift
    "$RELEASE/mqtt-bench" --port "$PORT" --label "$label" --broker-pid "$BROKER_PID" \
        --duration "$DURATION" --json "$@" 2>>"$OUT/mqtt-bench.log"
}

state_flags=(--sessions "$SESSIONS" --subscriptions "$SUBSCRIPTIONS" --retained "$RETAINED"
    --shards "$SHARDS")
need_state() {
    [ -d "$STATE" ] && return 0
    "$RELEASE/mqtt-persist-bench" --json build --dir "$STATE" "${state_flags[@]}" \
        | record restore build "$(load)"
}

for part in $PARTS; do
    case "$part" in
        restore)
            need_state
            # The broker's shutdown writes a final snapshot, which changes the directory:
            # the restore rounds run first, on what the build left.
            for round in $(seq "$ROUNDS"); do
                "$RELEASE/mqtt-persist-bench" --json restore --dir "$STATE" --shards "$SHARDS" \
                    | record restore "restore-$round" "$(load)"
            done
            cp -a "$STATE" "$OUT/state-start"
            "$RELEASE/mqtt-persist-bench" --json start --dir "$OUT/state-start" \
                --shards "$SHARDS" --broker "$RELEASE/mqtt-broker" \
                | record restore start "$(load)"
            rm -rf "$OUT/state-start"
            ;;
        snapshot)
            need_state
            for interval in 300 $SNAPSHOT_INTERVALS; do
                rm -rf "$OUT/state-run"
                cp -a "$STATE" "$OUT/state-run"
                log=$OUT/broker-snapshot-$interval.log
                start_broker "$OUT/state-run" "$log" --snapshot-interval "$interval"
                before=$(load)
                result=$(bench "snapshot-interval=$interval" --scenario pairs --publishers 4 \
                    --subscribers 4 --qos 1 --persistent --rate "$RATE")
                # Counted before the stop, which writes one more per shard.
                snapshots=$(grep -c "snapshot written" "$log" || true)
                stop_broker
                echo "$result" | jq -c --argjson snapshots "$snapshots" \
                    '. + {snapshot_interval_s: '"$interval"', snapshots_written: $snapshots}' \
                    | record snapshot "interval-$interval" "$before"
            done
            rm -rf "$OUT/state-run"
            ;;
        fsync)
            # One shard as well: the closed loop then measures the journal, not the traffic
            # between shards.
            for shards in $(echo 1 "$SHARDS" | tr ' ' '\n' | sort -u); do
                for mode in always interval never; do
                    dir=$OUT/fsync-$mode-$shards
                    rm -rf "$dir"
                    SHARDS=$shards start_broker "$dir" "$dir.log" --fsync "$mode"
                    before=$(load)
                    bench "fsync=$mode shards=$shards" --scenario pairs --publishers 4 \
                        --subscribers 4 --qos 1 --persistent --window 64 \
                        | jq -c --argjson shards "$shards" '. + {shards: $shards}' \
                        | record fsync "$mode-$shards" "$before"
                    stop_broker
                    rm -rf "$dir"
                done
            done
            ;;
        *) die "unknown part $part (restore, snapshot, fsync)" ;;
    esac
done

echo
echo "Results: $RESULTS"
jq -r 'select(.part == "restore" and .command == "restore")
    | "restore \(.run): ready \(.ready_ms) ms, peak RSS \(.peak_rss_kib / 1024 | floor) MiB, load \(.load_1min)"' "$RESULTS"
jq -r 'select(.command == "start")
    | "broker start: first CONNACK after \(.first_connack_ms) ms, peak RSS \(.peak_rss_kib / 1024 | floor) MiB, shutdown \(.shutdown_ms) ms, load \(.load_1min)"' "$RESULTS"
jq -r 'select(.part == "snapshot")
    | "\(.label): \(.snapshots_written) snapshots, p50 \(.p50_us) µs, p99 \(.p99_us) µs, p99.9 \(.p999_us) µs, max \(.max_us) µs, load \(.load_1min)"' "$RESULTS"
jq -r 'select(.part == "fsync")
    | "\(.label): \(.delivered_per_s) msg/s delivered, p50 \(.p50_us) µs, p99 \(.p99_us) µs, broker CPU \(.broker_cpu_pct | floor) %, load \(.load_1min)"' "$RESULTS"
