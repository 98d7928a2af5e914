#!/usr/bin/env bash
# Side-by-side broker comparison with mqtt-bench.
#
# For each scenario of a small matrix, every broker is started fresh on a free 127.0.0.1 port,
# measured once per round, and stopped; the broker order is reversed on every other scenario and
# round so no broker always runs first (or last) on a warm machine. The brokers:
#   mosquitto           Debian's mosquitto, unlimited queues and in-flight windows
#   mosquitto-nodelay   the same with set_tcp_nodelay true
#   ours-RUNTIME        target/release/mqtt-broker --runtime RUNTIME (io-uring, epoll, tokio;
#                       glommio with --glommio)
#   ours-sync           target/release/mqtt-broker-sync, the blocking build
#   ours-default        target/release/mqtt-broker with default flags (one shard per core)
#   ours-1shard         the same with --shards 1 (these two are not in the default list: name
#                       them with --brokers to check that the default delivers no less)
# A broker whose binary is missing or that does not start is reported as such and skipped.
#
# Usage: benches/compare.sh [options]
#   --duration S      seconds measured per run (default 5)
#   --warmup S        seconds of warm-up per run (default 2)
#   --drain S         most seconds to wait for late messages (default 3)
#   --rounds N        runs per broker and scenario; the table shows medians (default 1)
#   --brokers LIST    space-separated broker names (default: all of the above)
#   --scenarios LIST  space-separated scenario names (default: pairs-qos0 fanout-qos0
#                     pairs-qos1 latency-10k); also: fanin-qos0 shared-qos1 pairs-qos2
#                     pairs-v5-qos1 pairs-qos1-persistent (subscribers keep their sessions,
#                     so our brokers journal what they queue) pairs-qos2-persistent
#                     fanin16-qos0 fanin16-qos1 (16 publishers, 1 subscriber)
#                     latency-10k-qos1 connect-storm
#                     idle (holds 2000 connections for --duration seconds; see the raw JSON
#                     for KiB/connection) retained-100k-qos0 retained-100k-qos1 (100,000
#                     retained messages of 100 B, then one subscriber to #: "s to last" is
#                     SUBSCRIBE to the last message, "lost" what never came)
#   --ours-args ARGS  extra flags for our brokers, e.g. "--max-queued-messages 1000000"
#   --tls             every broker serves MQTT over TLS (TLS 1.3, a P-256 certificate openssl
#                     makes for the run) and mqtt-bench speaks TLS to it
#   --out DIR         where results.jsonl and the logs go (default: a new directory under
#                     $CARGO_TARGET_DIR/mqtt-bench-compare)
#   --glommio         build the broker with its glommio backend and add ours-glommio to
#                     the default brokers
#   --no-build        use the binaries already built
#
# Binaries come from ${CARGO_TARGET_DIR:-target}/release. Needs jq (installed with apt-get when
# missing, like mosquitto). Only ever listens on and connects to 127.0.0.1.
set -euo pipefail

SCRIPT=compare.sh
# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
BENCH=$RELEASE/mqtt-bench

DURATION=5
WARMUP=2
DRAIN=3
ROUNDS=1
BROKERS="mosquitto mosquitto-nodelay ours-io-uring ours-epoll ours-tokio ours-sync"
SCENARIOS="pairs-qos0 fanout-qos0 pairs-qos1 latency-10k"
OURS_ARGS=""
TLS=0
OUT=""
BUILD=1
FEATURES=""


while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION=$2; shift 2 ;;
        --warmup) WARMUP=$2; shift 2 ;;
        --drain) DRAIN=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --brokers) BROKERS=$2; shift 2 ;;
        --scenarios) SCENARIOS=$2; shift 2 ;;
        --ours-args) OURS_ARGS=$2; shift 2 ;;
        --tls) TLS=1; shift ;;
        --out) OUT=$2; shift 2 ;;
        --glommio) FEATURES="--features glommio"; BROKERS="$BROKERS ours-glommio"; shift ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,43p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

# The mqtt-bench flags of each named scenario.
scenario_args() {
    case "$1" in
        pairs-qos0) echo "--scenario pairs --publishers 4 --subscribers 4 --qos 0 --payload 64" ;;
        fanout-qos0) echo "--scenario fan-out --publishers 1 --subscribers 16 --qos 0 --payload 64" ;;
        pairs-qos1) echo "--scenario pairs --publishers 4 --subscribers 4 --qos 1 --payload 64 --window 64" ;;
        pairs-qos1-persistent) echo "--scenario pairs --publishers 4 --subscribers 4 --qos 1 --payload 64 --window 64 --persistent" ;;
        latency-10k) echo "--scenario pairs --publishers 4 --subscribers 4 --qos 0 --payload 64 --rate 10000" ;;
        fanin-qos0) echo "--scenario fan-in --publishers 4 --subscribers 1 --qos 0 --payload 64" ;;
        shared-qos1) echo "--scenario shared --publishers 4 --subscribers 4 --qos 1 --payload 64 --mqtt-version 5" ;;
        pairs-qos2) echo "--scenario pairs --publishers 4 --subscribers 4 --qos 2 --payload 64 --window 64" ;;
        pairs-qos2-persistent) echo "--scenario pairs --publishers 4 --subscribers 4 --qos 2 --payload 64 --window 64 --persistent" ;;
        fanin16-qos0) echo "--scenario fan-in --publishers 16 --subscribers 1 --qos 0 --payload 64" ;;
        fanin16-qos1) echo "--scenario fan-in --publishers 16 --subscribers 1 --qos 1 --payload 64 --window 64" ;;
        pairs-v5-qos1) echo "--scenario pairs --publishers 4 --subscribers 4 --qos 1 --payload 64 --mqtt-version 5" ;;
        latency-10k-qos1) echo "--scenario pairs --publishers 4 --subscribers 4 --qos 1 --payload 64 --rate 10000" ;;
        connect-storm) echo "--scenario connect-storm --connections 2000 --concurrency 64" ;;
        idle) echo "--scenario idle --connections 2000" ;;
        retained-100k-qos0) echo "--scenario retained --messages 100000 --payload 100 --qos 0" ;;
        retained-100k-qos1) echo "--scenario retained --messages 100000 --payload 100 --qos 1" ;;
        *) return 1 ;;
    esac
}
for scenario in $SCENARIOS; do
    scenario_args "$scenario" >/dev/null || die "unknown scenario $scenario"
done

need_package jq jq
case " $BROKERS " in *" mosquitto"*) need_package mosquitto mosquitto ;; esac

if [ "$BUILD" = 1 ]; then
    (cd "$ROOT" && cargo build --release -p mqtt-broker-benches --bin mqtt-bench) \
        || die "cannot build mqtt-bench"
    case " $BROKERS " in
        *" ours-"*)
            # shellcheck disable=SC2086
            if ! (cd "$ROOT" && cargo build --release -p mqtt-broker --bins $FEATURES); then
                echo "compare.sh: WARNING: the broker does not build; its rows use whatever binaries are left in $RELEASE (possibly stale) or are skipped" >&2
            fi
            ;;
    esac
fi
[ -x "$BENCH" ] || die "no $BENCH; build it or drop --no-build"

if [ -z "$OUT" ]; then
    OUT=$TARGET_DIR/mqtt-bench-compare/$(date -u +%Y%m%dT%H%M%SZ)
fi
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"

# With --tls: a CA and a certificate for 127.0.0.1 it signed, and what mqtt-bench trusts.
PKI=$OUT/pki
TLS_BENCH_ARGS=()
if [ "$TLS" = 1 ]; then
    need_package openssl openssl
    mkdir -p "$PKI"
    ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    echo "subjectAltName=IP:127.0.0.1" >"$PKI/san.ext"
    openssl req -x509 "${ec[@]}" -keyout "$PKI/ca.key" -out "$PKI/ca.pem" -days 2 \
        -subj "/CN=bench CA" 2>/dev/null
    openssl req "${ec[@]}" -keyout "$PKI/server.key" -out "$PKI/server.csr" \
        -subj "/CN=127.0.0.1" 2>/dev/null
    openssl x509 -req -in "$PKI/server.csr" -CA "$PKI/ca.pem" -CAkey "$PKI/ca.key" \
        -CAcreateserial -out "$PKI/server.pem" -days 2 -extfile "$PKI/san.ext" 2>/dev/null
    # Mosquitto reads its key after dropping to its own user; this one guards nothing.
    chmod 644 "$PKI/server.key"
    TLS_BENCH_ARGS=(--tls-ca "$PKI/ca.pem")
fi

# Where our brokers listen on PORT: TLS beside a plain listener nobody uses, or plain TCP.
ours_listen() {
    if [ "$TLS" = 1 ]; then
        printf '%s\n' --listen 127.0.0.1:0 --listen-tls "127.0.0.1:$1" \
            --tls-cert "$PKI/server.pem" --tls-key "$PKI/server.key"
    else
        printf '%s\n' --listen "127.0.0.1:$1"
    fi
}

BROKER_PID=""
cleanup() {
    if [ -n "$BROKER_PID" ]; then
        stop_broker
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The command line of BROKER on PORT, one word per line; fails when its binary is missing.
broker_command() {
    local broker=$1 port=$2 dir=$3
    case "$broker" in
        mosquitto|mosquitto-nodelay)
            command -v mosquitto >/dev/null || return 1
            {
                echo "listener $port 127.0.0.1"
                if [ "$TLS" = 1 ]; then
                    echo "cafile $PKI/ca.pem"
                    echo "certfile $PKI/server.pem"
                    echo "keyfile $PKI/server.key"
                fi
                echo "allow_anonymous true"
                echo "max_queued_messages 0"
                echo "max_inflight_messages 0"
                if [ "$broker" = mosquitto-nodelay ]; then echo "set_tcp_nodelay true"; fi
            } >"$dir/mosquitto.conf"
            printf '%s\n' mosquitto -c "$dir/mosquitto.conf"
            ;;
        ours-sync)
            [ -x "$RELEASE/mqtt-broker-sync" ] || return 1
            printf '%s\n' "$RELEASE/mqtt-broker-sync" --data-dir "$dir/data" --log-level warn
            ours_listen "$port"
            # shellcheck disable=SC2086
            [ -z "$OURS_ARGS" ] || printf '%s\n' $OURS_ARGS
            ;;
        ours-default|ours-1shard)
            [ -x "$RELEASE/mqtt-broker" ] || return 1
            printf '%s\n' "$RELEASE/mqtt-broker" --data-dir "$dir/data" --log-level warn
            ours_listen "$port"
            if [ "$broker" = ours-1shard ]; then printf '%s\n' --shards 1; fi
            # shellcheck disable=SC2086
            [ -z "$OURS_ARGS" ] || printf '%s\n' $OURS_ARGS
            ;;
        ours-*)
            [ -x "$RELEASE/mqtt-broker" ] || return 1
            printf '%s\n' "$RELEASE/mqtt-broker" --runtime "${broker#ours-}" \
                --data-dir "$dir/data" --log-level warn
            ours_listen "$port"
            # shellcheck disable=SC2086
            [ -z "$OURS_ARGS" ] || printf '%s\n' $OURS_ARGS
            ;;
        *) return 1 ;;
    esac
}

# Starts BROKER on PORT in DIR; sets BROKER_PID. Fails if it is not accepting within 5 s.
start_broker() {
    local broker=$1 port=$2 dir=$3
    local -a command
    mapfile -t command < <(broker_command "$broker" "$port" "$dir") || true
    [ "${#command[@]}" -gt 0 ] || return 2
    (cd "$dir" && exec "${command[@]}") >"$dir/broker.log" 2>&1 &
    BROKER_PID=$!
    for _ in $(seq 50); do
        if ! kill -0 "$BROKER_PID" 2>/dev/null; then
            wait "$BROKER_PID" 2>/dev/null || true
            BROKER_PID=""
            return 1
        fi
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    stop_broker
    return 1
}

stop_broker() {
    local pid=$BROKER_PID
    BROKER_PID=""
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# Appends a result line without figures.
record_status() { # SCENARIO BROKER ROUND STATUS ERROR
    jq -cn --arg name "$1" --arg lbl "$2" --argjson round "$3" --arg status "$4" \
        --arg error "$5" '{name: $name, label: $lbl, round: $round, status: $status, error: $error}' \
        >>"$RESULTS"
}

run_one() { # SCENARIO BROKER ROUND
    local scenario=$1 broker=$2 round=$3
    local port dir log line status
    port=$(free_port) || die "no free port"
    dir=$OUT/$scenario-$broker-r$round
    mkdir -p "$dir"
    status=0
    start_broker "$broker" "$port" "$dir" || status=$?
    if [ "$status" = 2 ]; then
        echo "  $broker: not available (no binary)" >&2
        record_status "$scenario" "$broker" "$round" "missing" "no binary"
        return
    elif [ "$status" != 0 ]; then
        echo "  $broker: did not start (see $dir/broker.log)" >&2
        record_status "$scenario" "$broker" "$round" "no start" "$(tail -n 1 "$dir/broker.log" 2>/dev/null)"
        return
    fi
    log=$dir/mqtt-bench.log
    local -a args
    read -r -a args <<<"$(scenario_args "$scenario")"
    local limit=$(( ${DURATION%.*} + ${WARMUP%.*} + ${DRAIN%.*} + 120 ))
    echo "  $broker (pid $BROKER_PID, port $port)" >&2
    status=0
    line=$(timeout "$limit" "$BENCH" --host 127.0.0.1 --port "$port" "${args[@]}" \
        --duration "$DURATION" --warmup "$WARMUP" --drain "$DRAIN" "${TLS_BENCH_ARGS[@]}" \
        --broker-pid "$BROKER_PID" --label "$broker" --json 2>"$log") || status=$?
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then
        record_status "$scenario" "$broker" "$round" "broker died" "$(tail -n 1 "$dir/broker.log" 2>/dev/null)"
        echo "    broker died (see $dir/broker.log)" >&2
    elif [ "$status" != 0 ] || [ -z "$line" ]; then
        record_status "$scenario" "$broker" "$round" "failed" "$(tail -n 1 "$log")"
        echo "    failed: $(tail -n 1 "$log")" >&2
    else
        jq -c --arg name "$scenario" --argjson round "$round" \
            --argjson load "$(cut -d' ' -f1 /proc/loadavg)" \
            '. + {name: $name, round: $round, status: "ok", loadavg_1m: $load}' <<<"$line" >>"$RESULTS"
    fi
    stop_broker
}

{
    echo "# mqtt-bench broker comparison"
    echo "# date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "# commit:  $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (uncommitted changes)')"
    echo "# cpu:     $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores"
    echo "# load:    $(cut -d' ' -f1-3 /proc/loadavg) before the first run"
    echo "# mosquitto: $( (mosquitto -h 2>/dev/null || true) | head -n 1)"
    echo "# runs:    warm-up ${WARMUP} s, measure ${DURATION} s, drain <= ${DRAIN} s, ${ROUNDS} round(s)"
    echo "# results: $RESULTS"
} | tee "$OUT/header.txt" >&2

read -r -a broker_list <<<"$BROKERS"
turn=0
for round in $(seq "$ROUNDS"); do
    for scenario in $SCENARIOS; do
        order=("${broker_list[@]}")
        if [ $((turn % 2)) = 1 ]; then
            order=()
            for ((i = ${#broker_list[@]} - 1; i >= 0; i--)); do order+=("${broker_list[i]}"); done
        fi
        turn=$((turn + 1))
        echo "round $round, $scenario: $(scenario_args "$scenario")" >&2
        for broker in "${order[@]}"; do
            run_one "$scenario" "$broker" "$round"
        done
    done
done

# The table: medians over rounds; ratios against mosquitto (default config) in the same scenario.
jq -rs --arg scenarios "$SCENARIOS" --arg brokers "$BROKERS" '
  def median: sort | if length == 0 then null else .[(length - 1) / 2 | floor] end;
  def fmt(d): if . == null then "-" else (. * pow(10; d) | round / pow(10; d) | tostring) end;
  def ratio(a; b): if a == null or b == null or b == 0 then "-" else (a / b * 100 | round / 100 | tostring) end;
  ($scenarios | split(" ")) as $names
  | ($brokers | split(" ")) as $labels
  | [ $names[] as $n | $labels[] as $l
      | [ .[] | select(.name == $n and .label == $l) ] as $runs
      | [ $runs[] | select(.status == "ok") ] as $ok
      | { name: $n, label: $l,
          status: (if ($ok | length) > 0 then "ok" elif ($runs | length) > 0 then $runs[0].status else "not run" end),
          mode: ($ok[0].scenario // ""),
          deliv: ([ $ok[] | .delivered_per_s // .connects_per_s ] | median),
          p50: ([ $ok[] | .p50_us ] | median),
          p99: ([ $ok[] | .p99_us ] | median),
          p999: ([ $ok[] | .p999_us ] | median),
          lost: ([ $ok[] | (.lost // 0) ] | median),
          elapsed: ([ $ok[] | .elapsed_s | select(. != null) ] | median),
          undeliv: ([ $ok[] | (.undelivered // 0) ] | median),
          cpu: ([ $ok[] | .broker_cpu_pct | select(. != null) ] | median) } ] as $rows
  | ["scenario", "broker", "msg/s", "x mosq", "p50 us", "p99 us", "p99 x mosq", "p99.9 us", "lost", "undeliv", "s to last", "broker CPU %", "status"],
    ( $rows[] as $r
      | ([ $rows[] | select(.name == $r.name and .label == "mosquitto") ][0]) as $m
      | [ $r.name, $r.label, ($r.deliv | fmt(0)), ratio($r.deliv; $m.deliv),
          ($r.p50 | fmt(1)), ($r.p99 | fmt(1)), ratio($r.p99; $m.p99), ($r.p999 | fmt(1)),
          ($r.lost | fmt(0)), ($r.undeliv | fmt(0)), ($r.elapsed | fmt(3)), ($r.cpu | fmt(0)),
          $r.status ] )
  | @tsv' "$RESULTS" | column -t -s $'\t' | tee "$OUT/table.txt"
echo >&2
echo "msg/s: deliveries per second inside the window (connects/s for connect-storm); x mosq: ratio to" >&2
echo "mosquitto's default config in the same scenario (higher msg/s, lower p99 is better); s to last:" >&2
echo "the whole connect storm, or SUBSCRIBE to the last retained message. Raw: $RESULTS" >&2
