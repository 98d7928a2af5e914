#!/usr/bin/env bash
# Instructions per delivered message, ours beside mosquitto, counted by valgrind's callgrind.
#
# Wall-clock figures move with the machine; instruction counts barely do, so this is the
# repeatable view of how much work a broker spends per message. Each broker runs under
# `valgrind --tool=callgrind` (user-space instructions only: the kernel's share of a send or a
# receive is not counted, so this complements compare.sh rather than replacing it). mqtt-bench
# drives it open loop at a fixed rate, low enough for a broker slowed down by valgrind to keep
# up. Each broker runs twice, with a short and a long measured window and everything else
# alike; the figure is the difference in instructions over the difference in messages
# delivered, so start-up, connects, warm-up and shutdown cancel out.
#
# Usage: benches/instructions.sh [options]
#   --brokers LIST    space-separated (default: mosquitto ours-epoll ours-tokio ours-sync);
#                     ours-io-uring runs, but under valgrind 3.19 it never exits, so it gets
#                     no figure
#   --shards N        shards of our sharded broker (default 1, as mosquitto has one thread)
#   --scenario ARGS   mqtt-bench flags of the load (default: pairs 4 -> 4, QoS 0, 64 B)
#   --rate N          messages per second over all publishers (default 2000)
#   --duration S      seconds the long window has over the short one (default 10)
#   --ours-args ARGS  extra flags for our brokers, e.g. "--metrics-listen 127.0.0.1:0"
#   --acl FILE        every broker checks an ACL file in Mosquitto's format (ours with
#                     --acl-file, mosquitto with acl_file); mqtt-bench's clients are anonymous,
#                     so its rules before any `user` line apply
#   --out DIR         where the callgrind files and logs go (default: a new directory under
#                     $CARGO_TARGET_DIR/mqtt-bench-instructions)
#   --no-build        use the binaries already built
#
# Binaries come from ${CARGO_TARGET_DIR:-target}/release. Installs valgrind and mosquitto with
# apt-get when missing. Only ever listens on and connects to 127.0.0.1.
set -euo pipefail

SCRIPT=instructions.sh
# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
BENCH=$RELEASE/mqtt-bench

BROKERS="mosquitto ours-epoll ours-tokio ours-sync"
SHARDS=1
SCENARIO="--scenario pairs --publishers 4 --subscribers 4 --qos 0 --payload 64"
RATE=2000
DURATION=10
WARMUP=3
OUT=""
BUILD=1
ACL=""
OURS_ARGS=""


while [ $# -gt 0 ]; do
    case "$1" in
        --brokers) BROKERS=$2; shift 2 ;;
        --shards) SHARDS=$2; shift 2 ;;
        --scenario) SCENARIO=$2; shift 2 ;;
        --rate) RATE=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --acl) ACL=$(realpath "$2"); shift 2 ;;
        --ours-args) OURS_ARGS=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

need_package valgrind valgrind
need_package jq jq
case " $BROKERS " in *" mosquitto "*) need_package mosquitto mosquitto ;; esac

if [ "$BUILD" = 1 ]; then
    (cd "$ROOT" && cargo build --release -p mqtt-broker-benches --bin mqtt-bench \
        && cargo build --release -p mqtt-broker --bins) || die "cannot build"
fi
[ -x "$BENCH" ] || die "no $BENCH; build it or drop --no-build"

[ -n "$OUT" ] || OUT=$TARGET_DIR/mqtt-bench-instructions/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"

# The command line of BROKER on PORT, one word per line.
broker_command() {
    local broker=$1 port=$2 dir=$3
    case "$broker" in
        mosquitto)
            # `user`: started as root, mosquitto would drop to its own user, which cannot write
            # valgrind's output file.
            printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nset_tcp_nodelay true\nuser %s\n' \
                "$port" "$(id -un)" >"$dir/mosquitto.conf"
            [ -z "$ACL" ] || echo "acl_file $ACL" >>"$dir/mosquitto.conf"
            printf '%s\n' mosquitto -c "$dir/mosquitto.conf"
            ;;
        ours-sync)
            printf '%s\n' "$RELEASE/mqtt-broker-sync" --listen "127.0.0.1:$port" \
                --data-dir "$dir/data" --log-level warn
            [ -z "$ACL" ] || printf '%s\n' --acl-file "$ACL"
            ;;
        ours-*)
            printf '%s\n' "$RELEASE/mqtt-broker" --listen "127.0.0.1:$port" \
                --runtime "${broker#ours-}" --shards "$SHARDS" --no-pin \
                --data-dir "$dir/data" --log-level warn
            [ -z "$ACL" ] || printf '%s\n' --acl-file "$ACL"
            # shellcheck disable=SC2086
            [ -z "$OURS_ARGS" ] || printf '%s\n' $OURS_ARGS
            ;;
        *) return 1 ;;
    esac
}

# Total instructions (Ir) in a callgrind output file, over all its parts.
instructions() {
    awk '/^(summary|totals):/ { total += $2 } END { print total + 0 }' "$@"
}

# Runs BROKER under callgrind for one load of WINDOW seconds; prints "delivered instructions".
measure() {
    local broker=$1 window=$2
    local dir=$OUT/$broker/$window
    mkdir -p "$dir"
    local port
    port=$(free_port) || die "no free port"
    local -a command
    mapfile -t command < <(broker_command "$broker" "$port" "$dir") || die "unknown broker $broker"
    (cd "$dir" && exec valgrind --tool=callgrind --vgdb=no --callgrind-out-file="$dir/callgrind.out" \
        "${command[@]}") >"$dir/broker.log" 2>&1 &
    local valgrind_pid=$!
    for _ in $(seq 300); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        sleep 0.1
    done
    # shellcheck disable=SC2086
    "$BENCH" --port "$port" $SCENARIO --rate "$RATE" --warmup "$WARMUP" --duration "$window" \
        --json --label "$broker" >"$dir/bench.json" 2>"$dir/bench.log" || true
    # valgrind writes the counts as the broker exits; one that does not stop within a minute
    # (our io-uring runtime under valgrind 3.19 does not) is killed and gets no figure.
    kill -INT "$valgrind_pid" 2>/dev/null || true
    for _ in $(seq 600); do
        kill -0 "$valgrind_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$valgrind_pid" 2>/dev/null || true
    wait "$valgrind_pid" 2>/dev/null || true
    local delivered
    delivered=$(jq -r '.delivered // 0' "$dir/bench.json" 2>/dev/null || echo 0)
    echo "${delivered:-0} $(instructions "$dir/callgrind.out"*)"
}

SHORT=3
printf '%-16s %14s %16s %12s\n' broker "extra msgs" "extra instr" "instr/msg"
for broker in $BROKERS; do
    read -r short_msgs short_instr < <(measure "$broker" "$SHORT")
    read -r long_msgs long_instr < <(measure "$broker" $((SHORT + DURATION)))
    messages=$((long_msgs - short_msgs))
    extra=$((long_instr - short_instr))
    if [ "$messages" -le 0 ] || [ "$short_instr" = 0 ]; then
        printf '%-16s %14s %16s %12s   (see %s)\n' "$broker" "$messages" "$extra" n/a "$OUT/$broker"
        continue
    fi
    printf '%-16s %14d %16d %12d\n' "$broker" "$messages" "$extra" $((extra / messages))
done
echo "callgrind files and logs: $OUT"
