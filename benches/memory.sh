#!/usr/bin/env bash
# Broker memory side by side: how much RSS a flood and a few huge messages take, and how much
# of it is given back afterwards.
#
# Each broker is started fresh on a free 127.0.0.1 port and goes through, in order:
#   idle       RSS once it accepts connections
#   pairs      an 8 s closed-loop QoS 0 flood, 4 publishers -> 4 subscribers, 64 B payloads
#   fan-in     an 8 s closed-loop QoS 0 flood, 16 publishers -> 1 subscriber, 64 B payloads
#   qos1       an 8 s closed-loop QoS 1 run, 4 publishers -> 4 persistent subscribers (clean
#              session 0), 64 unacknowledged messages per publisher, 64 B payloads: what the
#              journal path keeps
#   big        4 clients in parallel each publish one 64 MiB QoS 0 message to a topic with one
#              subscriber; repeated 4 times
# RSS is sampled from /proc every 0.2 s. For each flood the table has its delivered msg/s, its
# peak, the RSS --settle seconds after it ended, and how long after its end RSS first fell to
# twice the idle start ("-" if it did not within --settle). For big: the peak, how many of the
# messages the subscriber got (a broker may drop QoS 0 messages for a slow subscriber), and the
# RSS --settle seconds after each repeat. The brokers:
#   mosquitto   Debian's mosquitto, unlimited queues and in-flight windows
#   ours        target/release/mqtt-broker with --shards (default 2) and --runtime
#
# Usage: benches/memory.sh [options]
#   --brokers LIST     space-separated, from the above (default "mosquitto ours")
#   --shards N         our broker's shards (default 2)
#   --runtime NAME     our broker's runtime: io-uring, epoll or tokio (default io-uring)
#   --duration S       seconds of each flood (default 8)
#   --settle S         seconds after a flood or a big repeat before RSS is read (default 10)
#   --big-mb MB        size of each big message in MiB (default 64)
#   --repeats N        big repeats (default 4)
#   --ours-args ARGS   extra flags for our broker
#   --ours-binary PATH our broker's binary (default $CARGO_TARGET_DIR/release/mqtt-broker)
#   --out DIR          where results.jsonl and the logs go (default: a new directory under
#                      $CARGO_TARGET_DIR/mqtt-bench-memory)
#   --no-build         use the binaries already built
#
# Needs jq, mosquitto and mosquitto-clients (installed with apt-get when missing). Only ever
# listens on and connects to 127.0.0.1.
set -euo pipefail

SCRIPT=memory.sh
# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
BENCH=$RELEASE/mqtt-bench

BROKERS="mosquitto ours"
SHARDS=2
RUNTIME=io-uring
DURATION=8
SETTLE=10
BIG_MB=64
REPEATS=4
OURS_ARGS=""
OURS_BINARY=$RELEASE/mqtt-broker
OUT=""
BUILD=1

while [ $# -gt 0 ]; do
    case "$1" in
        --brokers) BROKERS=$2; shift 2 ;;
        --shards) SHARDS=$2; shift 2 ;;
        --runtime) RUNTIME=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --settle) SETTLE=$2; shift 2 ;;
        --big-mb) BIG_MB=$2; shift 2 ;;
        --repeats) REPEATS=$2; shift 2 ;;
        --ours-args) OURS_ARGS=$2; shift 2 ;;
        --ours-binary) OURS_BINARY=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,37p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
for broker in $BROKERS; do
    case "$broker" in mosquitto|ours) ;; *) die "unknown broker $broker" ;; esac
done

need_package jq jq
need_package mosquitto_pub mosquitto-clients
case " $BROKERS " in *" mosquitto "*) need_package mosquitto mosquitto ;; esac

if [ "$BUILD" = 1 ]; then
    (cd "$ROOT" && cargo build --release -p mqtt-broker-benches --bin mqtt-bench) \
        || die "cannot build mqtt-bench"
    case " $BROKERS " in
        *" ours "*) (cd "$ROOT" && cargo build --release -p mqtt-broker --bin mqtt-broker) \
            || die "cannot build the broker" ;;
    esac
fi
[ -x "$BENCH" ] || die "no $BENCH; build it or drop --no-build"

if [ -z "$OUT" ]; then
    OUT=$TARGET_DIR/mqtt-bench-memory/$(date -u +%Y%m%dT%H%M%SZ)
fi
mkdir -p "$OUT"
RESULTS=$OUT/results.jsonl
: >"$RESULTS"
BIG_FILE=$OUT/big.bin
head -c "$((BIG_MB * 1024 * 1024))" /dev/urandom >"$BIG_FILE"

BROKER_PID=""
SAMPLER_PID=""
SUB_PID=""
stop_pid() { # PID
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
cleanup() {
    [ -z "$SAMPLER_PID" ] || stop_pid "$SAMPLER_PID"
    [ -z "$SUB_PID" ] || stop_pid "$SUB_PID"
    [ -z "$BROKER_PID" ] || stop_broker
    rm -f "$BIG_FILE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The command line of BROKER on PORT, one word per line.
broker_command() {
    local broker=$1 port=$2 dir=$3
    case "$broker" in
        mosquitto)
            {
                echo "listener $port 127.0.0.1"
                echo "allow_anonymous true"
                echo "max_queued_messages 0"
                echo "max_inflight_messages 0"
            } >"$dir/mosquitto.conf"
            printf '%s\n' mosquitto -c "$dir/mosquitto.conf"
            ;;
        ours)
            # The protocol's packet limit, as mosquitto's, for the big messages.
            printf '%s\n' "$OURS_BINARY" --listen "127.0.0.1:$port" --shards "$SHARDS" \
                --runtime "$RUNTIME" --data-dir "$dir/data" --log-level warn \
                --max-packet-size 268435460
            # shellcheck disable=SC2086
            [ -z "$OURS_ARGS" ] || printf '%s\n' $OURS_ARGS
            ;;
    esac
}

# Starts BROKER on PORT in DIR; sets BROKER_PID. Fails if it is not accepting within 5 s.
start_broker() {
    local -a command
    mapfile -t command < <(broker_command "$1" "$2" "$3")
    (cd "$3" && exec "${command[@]}") >"$3/broker.log" 2>&1 &
    BROKER_PID=$!
    for _ in $(seq 50); do
        kill -0 "$BROKER_PID" 2>/dev/null || { BROKER_PID=""; return 1; }
        if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then
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
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$BROKER_PID/status" 2>/dev/null || echo null; }

# Appends "SECONDS RSS_KB" to FILE every 0.2 s until stopped; sets SAMPLER_PID.
start_sampler() { # FILE
    local file=$1 pid=$BROKER_PID
    (
        while [ -r "/proc/$pid/status" ]; do
            echo "$(date +%s.%N) $(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status")"
            sleep 0.2
        done
    ) >>"$file" &
    SAMPLER_PID=$!
}

stop_sampler() {
    stop_pid "$SAMPLER_PID"
    SAMPLER_PID=""
}

# Samples for SETTLE seconds from now; prints "RSS_KB_AT_THE_END SECONDS_TO_2X_IDLE" (the
# latter "null" when RSS stayed above twice IDLE_KB).
settle() { # FILE IDLE_KB
    local file=$1 idle=$2 from
    from=$(date +%s.%N)
    : >"$file"
    start_sampler "$file"
    sleep "$SETTLE"
    stop_sampler
    awk -v from="$from" -v limit="$((2 * idle))" '
        $2 != "" && !seen && $2 <= limit { seen = 1; secs = $1 - from }
        $2 != "" { last = $2 }
        END { printf "%s %s\n", last, seen ? sprintf("%.1f", secs) : "null" }' "$file"
}

peak_kb() { awk '$2 > peak { peak = $2 } END { print peak + 0 }' "$1"; }

# One closed-loop run under the sampler; prints "PEAK_KB MSG_PER_S AFTER_KB SECS_TO_2X".
flood() { # NAME PORT DIR IDLE_KB MQTT-BENCH-ARGS...
    local name=$1 port=$2 dir=$3 idle=$4 line
    shift 4
    : >"$dir/$name.rss"
    start_sampler "$dir/$name.rss"
    line=$(timeout "$((DURATION + 120))" "$BENCH" --host 127.0.0.1 --port "$port" "$@" \
        --payload 64 --duration "$DURATION" --warmup 0 --drain 3 \
        --broker-pid "$BROKER_PID" --json 2>"$dir/$name.log") || line='{}'
    stop_sampler
    echo "$(peak_kb "$dir/$name.rss") $(jq -r '.delivered_per_s // "null"' <<<"$line")" \
        "$(settle "$dir/$name-settle.rss" "$idle")"
}

# Waits until FILE has COUNT lines, or has not grown for 5 s (a broker may drop QoS 0 messages
# for a slow subscriber), or SECONDS have passed.
wait_lines() { # FILE COUNT SECONDS
    local deadline=$((SECONDS + $3)) lines last=-1 still=$SECONDS
    while lines=$(wc -l <"$1") && [ "$lines" -lt "$2" ] && [ "$SECONDS" -lt "$deadline" ]; do
        if [ "$lines" != "$last" ]; then last=$lines; still=$SECONDS; fi
        [ $((SECONDS - still)) -lt 5 ] || return 0
        sleep 0.1
    done
}

# The big repeats; prints "PEAK_KB DELIVERED AFTER_KB..." (DELIVERED: big messages the
# subscriber received over all repeats; one AFTER_KB per repeat).
big() { # PORT DIR
    local port=$1 dir=$2 topic=memory/big received=$2/big-received probes after=()
    : >"$received"
    # One line per message with its length, so arrivals can be counted.
    mosquitto_sub -h 127.0.0.1 -p "$port" -t "$topic" -F '%l' >"$received" 2>"$dir/big-sub.log" &
    SUB_PID=$!
    # Subscribed once a probe comes back.
    for _ in $(seq 50); do
        mosquitto_pub -h 127.0.0.1 -p "$port" -t "$topic" -m probe
        [ ! -s "$received" ] || break
        sleep 0.1
    done
    sleep 0.5
    probes=$(wc -l <"$received")
    : >"$dir/big.rss"
    for repeat in $(seq "$REPEATS"); do
        start_sampler "$dir/big.rss"
        local publishers=()
        for _ in 1 2 3 4; do
            mosquitto_pub -h 127.0.0.1 -p "$port" -t "$topic" -q 0 -f "$BIG_FILE" \
                2>>"$dir/big-pub.log" &
            publishers+=($!)
        done
        wait "${publishers[@]}" || true
        wait_lines "$received" "$((probes + 4 * repeat))" 60
        stop_sampler
        sleep "$SETTLE"
        after+=("$(rss_kb)")
    done
    stop_pid "$SUB_PID"
    SUB_PID=""
    echo "$(peak_kb "$dir/big.rss") $(($(wc -l <"$received") - probes)) ${after[*]}"
}

run_broker() { # BROKER
    local broker=$1 port dir idle pairs fanin qos1 big_line
    port=$(free_port) || die "no free port"
    dir=$OUT/$broker
    mkdir -p "$dir"
    if ! start_broker "$broker" "$port" "$dir"; then
        echo "  $broker: did not start (see $dir/broker.log)" >&2
        jq -cn --arg b "$broker" '{broker: $b, status: "no start"}' >>"$RESULTS"
        return
    fi
    echo "  $broker (pid $BROKER_PID, port $port)" >&2
    sleep 1
    idle=$(rss_kb)
    echo "    idle: $idle KiB; pairs flood" >&2
    pairs=$(flood pairs "$port" "$dir" "$idle" --scenario pairs --publishers 4 --subscribers 4 \
        --qos 0)
    echo "    pairs: $pairs; fan-in flood" >&2
    fanin=$(flood fan-in "$port" "$dir" "$idle" --scenario fan-in --publishers 16 \
        --subscribers 1 --qos 0)
    echo "    fan-in: $fanin; QoS 1 to persistent subscribers" >&2
    qos1=$(flood qos1 "$port" "$dir" "$idle" --scenario pairs --publishers 4 --subscribers 4 \
        --qos 1 --window 64 --persistent)
    echo "    qos1: $qos1; big messages" >&2
    big_line=$(big "$port" "$dir")
    echo "    big: $big_line" >&2
    local status=ok
    kill -0 "$BROKER_PID" 2>/dev/null || status="broker died"
    jq -cn --arg b "$broker" --arg status "$status" --argjson idle "$idle" \
        --arg pairs "$pairs" --arg fanin "$fanin" --arg qos1 "$qos1" --arg big "$big_line" '
        def nums: split(" ") | map(fromjson);
        def flood: nums | {peak_kb: .[0], msg_per_s: .[1], after_kb: .[2], secs_to_2x_idle: .[3]};
        {broker: $b, status: $status, idle_kb: $idle, pairs: ($pairs | flood),
         fan_in: ($fanin | flood), qos1: ($qos1 | flood), big: ($big | nums | {peak_kb: .[0], delivered: .[1], after_kb: .[2:]})}' \
        >>"$RESULTS"
    stop_broker
}

{
    echo "# broker memory"
    echo "# date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "# commit:  $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (uncommitted changes)')"
    echo "# cpu:     $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores"
    echo "# load:    $(cut -d' ' -f1-3 /proc/loadavg) before the first run"
    echo "# ours:    $OURS_BINARY --shards $SHARDS --runtime $RUNTIME $OURS_ARGS"
    echo "# runs:    floods and the QoS 1 run ${DURATION} s, settle ${SETTLE} s, big ${REPEATS} x 4 x ${BIG_MB} MiB"
    echo "# results: $RESULTS"
} | tee "$OUT/header.txt" >&2

for broker in $BROKERS; do
    run_broker "$broker"
done

jq -rs --argjson repeats "$REPEATS" '
  def mb: if . == null then "-" else (. / 1024 | round | tostring) end;
  def secs: if . == null then "-" else tostring end;
  ["broker", "idle MB", "pairs msg/s", "peak MB", "+settle MB", "to 2x s",
   "fan-in msg/s", "peak MB", "+settle MB", "to 2x s",
   "qos1 msg/s", "peak MB", "+settle MB", "to 2x s", "big peak MB", "delivered", "big after each MB", "status"],
  ( .[] | [ .broker, (.idle_kb | mb),
            (.pairs.msg_per_s // "-" | tostring), (.pairs.peak_kb | mb), (.pairs.after_kb | mb),
            (.pairs.secs_to_2x_idle | secs),
            (.fan_in.msg_per_s // "-" | tostring), (.fan_in.peak_kb | mb), (.fan_in.after_kb | mb),
            (.fan_in.secs_to_2x_idle | secs),
            (.qos1.msg_per_s // "-" | tostring), (.qos1.peak_kb | mb), (.qos1.after_kb | mb),
            (.qos1.secs_to_2x_idle | secs),
            (.big.peak_kb | mb), "\(.big.delivered)/\(4 * $repeats)",
            ([.big.after_kb[]? | mb] | join(" ")), .status ] )
  | @tsv' "$RESULTS" | column -t -s $'\t' | tee "$OUT/table.txt"
