#!/usr/bin/env bash
# Soak: minutes of mixed load against the real broker with --fsync always, killed with SIGKILL
# and restarted on the same port and data directory every --kill-every seconds, then checks
# that nothing acknowledged was lost, that memory did not grow and that no descriptor leaked.
#
# The load comes from mqtt-soak (benches/src/soak/), whose clients reconnect after every kill:
# pub/sub at QoS 0, 1 and 2 (2 publishers each, --rate msg/s per QoS), persistent subscribers
# that must receive every acknowledged QoS 1/2 message, connect/disconnect churn, takeovers,
# retained set/replace/clear with readers, and a slow subscriber that stalls 15 s a minute.
# After --duration seconds the load stops, the subscribers drain (until 5 s pass without a
# delivery, at most 120 s), the retained set is compared with what was acknowledged, and the
# clients leave.
#
# Checks (exit status 1 when one fails):
#   lost          QoS 1/2 messages acknowledged to a publisher (PUBACK; PUBREC for QoS 2) that a
#                 persistent subscriber never received: must be 0. The slow subscriber is left
#                 out: the broker may drop for a subscriber that stops reading.
#   QoS 2 dups    a QoS 2 subscriber given one message twice after its publisher got PUBREC: must
#                 be 0. Duplicates of messages whose publisher had no PUBREC when the broker was
#                 killed, and so sent them again, are reported beside it: the broker forwards a
#                 QoS 2 message before it acknowledges it (src/core/broker/persist/outbox.rs).
#   retained      topics whose retained message differs from the last acknowledged operation;
#                 takeovers whose previous connection the broker left open: must be 0.
#   RSS           the final broker process's VmRSS once the load stopped and the subscribers
#                 drained, over the highest VmRSS of the first broker process during the first
#                 minute of load: at most 1.5. The load repeats every minute (the slow
#                 subscriber's stall and the backlog it leaves), so the first minute's highest
#                 sample is one whole cycle's peak. With --kill-every under 60 the first process
#                 only has that long.
#   fds           the final broker process's descriptors once every client left, against a
#                 fresh broker started afterwards on the same data directory with no clients
#                 (same journal and snapshot files, same listeners): no more. A fresh process is
#                 the baseline because every kill starts a new process, so only the last one's
#                 descriptors can be compared, and only with a process that has the same files.
#   the broker    no panic in its log, no death other than ours, and a clean SIGTERM at the end.
# RSS and the descriptor count are sampled from /proc every second, across restarts.
#
# Usage: benches/soak.sh [options]
#   --duration S      seconds of load (default 600)
#   --kill-every S    seconds between kills (default 60); kills stop before the load does
#   --rate R          messages per second at each QoS (default 1000)
#   --broker-args A   extra flags for the broker, e.g. "--shards 1"
#   --broker PATH     the broker binary (default $CARGO_TARGET_DIR/release/mqtt-broker), e.g.
#                     one built from another commit
#   --out DIR         where the data directory, logs and samples go (default: a new directory
#                     under $TMPDIR or /tmp); the data directory is removed when all checks pass
#   --no-build        use the binaries already built
#
# Example: benches/soak.sh --duration 120 --kill-every 30    # a 2-minute try
# Binaries come from ${CARGO_TARGET_DIR:-target}/release. Needs jq (installed with apt-get when
# missing). Only ever listens on and connects to 127.0.0.1. Not part of CI: it takes minutes.
set -euo pipefail

SCRIPT=soak.sh
# shellcheck source=benches/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

DURATION=600
KILL_EVERY=60
RATE=1000
BROKER_ARGS=""
BROKER=""
OUT=""
BUILD=1

while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION=$2; shift 2 ;;
        --kill-every) KILL_EVERY=$2; shift 2 ;;
        --rate) RATE=$2; shift 2 ;;
        --broker-args) BROKER_ARGS=$2; shift 2 ;;
        --broker) BROKER=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,51p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[[ "$DURATION" =~ ^[0-9]+$ && "$DURATION" -gt 0 ]] || die "--duration $DURATION: whole seconds"
[[ "$KILL_EVERY" =~ ^[0-9]+$ && "$KILL_EVERY" -gt 0 ]] || die "--kill-every $KILL_EVERY: whole seconds"

need_package jq jq

if [ "$BUILD" = 1 ]; then
    if [ -z "$BROKER" ]; then
        (cd "$ROOT" && cargo build --release -p mqtt-broker --bin mqtt-broker) \
            || die "cannot build the broker"
    fi
    (cd "$ROOT" && cargo build --release -p mqtt-broker-benches --bin mqtt-soak \
        --bin mqtt-persist-bench) || die "cannot build mqtt-soak"
fi
BROKER=${BROKER:-$RELEASE/mqtt-broker}
for binary in "$BROKER" "$RELEASE/mqtt-soak" "$RELEASE/mqtt-persist-bench"; do
    [ -x "$binary" ] || die "no $binary; build it or drop --no-build"
done

if [ -z "$OUT" ]; then
    OUT=$(mktemp -d "${TMPDIR:-/tmp}/mqtt-soak.XXXXXX")
fi
mkdir -p "$OUT"
DATA=$OUT/data
LOG=$OUT/broker.log
SAMPLES=$OUT/samples.txt  # UNIX_SECONDS PID VMRSS_KIB FDS, every second
EVENTS=$OUT/events.txt    # UNIX_SECONDS EVENT, from mqtt-soak and from the kills here
STARTS_FILE=$OUT/starts.txt  # seconds from each broker start to its first CONNACK
: >"$LOG"
: >"$STARTS_FILE"
: >"$SAMPLES"
: >"$EVENTS"
PORT=$(free_port) || die "no free port"

BROKER_PID=""
DRIVER_PID=""
SAMPLER_PID=""
STARTS=0
cleanup() {
    local pid
    for pid in "$SAMPLER_PID" "$DRIVER_PID" "$BROKER_PID"; do
        [ -z "$pid" ] || kill -KILL "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }

# Starts the broker on DATA; sets BROKER_PID once it answers a CONNECT, which it does only once
# it has restored the journal (the port accepts before that), or fails after 30 s.
start_broker() {
    STARTS=$((STARTS + 1))
    echo "=== soak.sh: broker start $STARTS at $(date -u '+%H:%M:%S.%N') ===" >>"$LOG"
    # shellcheck disable=SC2086
    "$BROKER" --listen "127.0.0.1:$PORT" --data-dir "$DATA" --fsync always \
        --log-level info $BROKER_ARGS >>"$LOG" 2>&1 &
    BROKER_PID=$!
    echo "$BROKER_PID" >"$OUT/broker.pid"
    local ready
    ready=$("$RELEASE/mqtt-persist-bench" --json ready --addr "127.0.0.1:$PORT" --timeout 30 \
        2>>"$LOG") || return 1
    kill -0 "$BROKER_PID" 2>/dev/null || return 1
    jq -r '(.waited_ms / 10 | round) / 100' <<<"$ready" >>"$STARTS_FILE"
}

# Descriptors and VmRSS (KiB) of the broker now: "FDS RSS".
broker_usage() {
    echo "$(find "/proc/$BROKER_PID/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)" \
        "$(awk '/^VmRSS:/ { print $2 }' "/proc/$BROKER_PID/status" 2>/dev/null)"
}

# The broker's usage once its descriptor count held still for 2 s (closing connections takes
# a moment), or after 20 s.
settled_usage() {
    local usage last="" same=0
    for _ in $(seq 40); do
        usage=$(broker_usage)
        if [ "${usage%% *}" = "${last%% *}" ]; then same=$((same + 1)); else same=0; fi
        last=$usage
        [ "$same" -lt 4 ] || break
        sleep 0.5
    done
    echo "$last"
}

# Stops the broker with SIGTERM; sets STOP_STATUS to its exit status, or "killed" when it was
# still running 30 s later.
stop_broker() {
    local pid=$BROKER_PID status=0 killed=""
    BROKER_PID=""
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
        killed=killed
    fi
    wait "$pid" 2>/dev/null || status=$?
    STOP_STATUS=${killed:-$status}
}

# Sleeps until UNIX_SECONDS, or returns early (status 1) when the broker died on its own.
sleep_until() {
    while awk -v t="$1" -v now="$(now)" 'BEGIN { exit !(now < t) }'; do
        kill -0 "$BROKER_PID" 2>/dev/null || return 1
        sleep "$(awk -v t="$1" -v now="$(now)" 'BEGIN { d = t - now; print (d > 1 ? 1 : (d > 0 ? d : 0)) }')"
    done
}

{
    echo "# soak"
    echo "# date:    $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "# commit:  $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (uncommitted changes)')"
    echo "# cpu:     $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) cores"
    echo "# load:    $(cut -d' ' -f1-3 /proc/loadavg) before the run"
    echo "# broker:  $BROKER --listen 127.0.0.1:$PORT --fsync always $BROKER_ARGS"
    echo "# run:     ${DURATION} s of load at $RATE msg/s per QoS, SIGKILL every ${KILL_EVERY} s"
    echo "# out:     $OUT"
} | tee "$OUT/header.txt" >&2

start_broker || die "the broker did not start; see $LOG"
FIRST_PID=$BROKER_PID
sleep 1
read -r FDS_START RSS_START <<<"$(broker_usage)"

(
    while true; do
        pid=$(cat "$OUT/broker.pid")
        rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || true)
        fds=$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
        [ -z "$rss" ] || echo "$(now) $pid $rss $fds"
        sleep 1
    done
) >>"$SAMPLES" &
SAMPLER_PID=$!

"$RELEASE/mqtt-soak" --port "$PORT" --duration "$DURATION" --rate "$RATE" \
    --events "$EVENTS" >"$OUT/soak.json" 2>"$OUT/driver.log" &
DRIVER_PID=$!

LOAD_START=""
for _ in $(seq 600); do
    LOAD_START=$(awk '$2 == "load-start" { print $1 }' "$EVENTS")
    [ -z "$LOAD_START" ] || break
    kill -0 "$DRIVER_PID" 2>/dev/null || break
    sleep 0.1
done
[ -n "$LOAD_START" ] || die "mqtt-soak did not start its load; see $OUT/driver.log"
echo "soak.sh: load started; broker pid $BROKER_PID, port $PORT" >&2

KILLS=0
DEATHS=0
for ((k = 1; k * KILL_EVERY < DURATION; k++)); do
    target=$(awk -v s="$LOAD_START" -v k="$k" -v e="$KILL_EVERY" 'BEGIN { printf "%.3f", s + k * e }')
    while ! sleep_until "$target"; do
        # Not ours: counted as a failure, and restarted so the soak can go on.
        DEATHS=$((DEATHS + 1))
        echo "$(now) broker-died $BROKER_PID" >>"$EVENTS"
        echo "soak.sh: the broker (pid $BROKER_PID) died on its own; restarting" >&2
        wait "$BROKER_PID" 2>/dev/null || true
        start_broker || die "the broker did not restart; see $LOG"
    done
    kill -0 "$DRIVER_PID" 2>/dev/null || break
    kill -KILL "$BROKER_PID"
    wait "$BROKER_PID" 2>/dev/null || true
    KILLS=$((KILLS + 1))
    echo "$(now) kill $BROKER_PID" >>"$EVENTS"
    echo "soak.sh: kill $KILLS (pid $BROKER_PID) at +$((k * KILL_EVERY)) s" >&2
    start_broker || die "the broker did not restart after kill $KILLS; see $LOG"
done

DRIVER_STATUS=0
wait "$DRIVER_PID" || DRIVER_STATUS=$?
DRIVER_PID=""
if ! kill -0 "$BROKER_PID" 2>/dev/null; then
    DEATHS=$((DEATHS + 1))
    die "the broker died during the drain; see $LOG"
fi
read -r FDS_END RSS_END_IDLE <<<"$(settled_usage)"
FINAL_PID=$BROKER_PID
kill -TERM "$SAMPLER_PID" 2>/dev/null || true
wait "$SAMPLER_PID" 2>/dev/null || true
SAMPLER_PID=""
stop_broker
FINAL_STOP_STATUS=$STOP_STATUS

start_broker || die "the broker did not start again on the soaked data directory; see $LOG"
sleep 1
read -r FDS_FRESH RSS_FRESH <<<"$(broker_usage)"
stop_broker
FRESH_STOP_STATUS=$STOP_STATUS

if [ "$DRIVER_STATUS" -gt 1 ] || [ ! -s "$OUT/soak.json" ]; then
    die "mqtt-soak failed (status $DRIVER_STATUS); see $OUT/driver.log"
fi

# VmRSS of the first process during the first minute of load (highest and median), and the
# last sample of the final process before the drain ended.
first_minute() { awk -v pid="$FIRST_PID" -v from="$LOAD_START" '$2 == pid && $1 >= from && $1 < from + 60 { print $3 }' "$SAMPLES" | sort -n; }
RSS_FIRST=$(first_minute | tail -1)
RSS_FIRST_MEDIAN=$(first_minute | awk '{ v[NR] = $1 } END { print (NR ? v[int((NR + 1) / 2)] : 0) }')
DRAINED=$(awk '$2 == "drained" { print $1 }' "$EVENTS")
RSS_END=$(awk -v pid="$FINAL_PID" -v until="$DRAINED" '$2 == pid && $1 <= until { rss = $3 } END { print rss + 0 }' "$SAMPLES")
RSS_PEAK=$(awk '$3 > m { m = $3 } END { print m + 0 }' "$SAMPLES")
FDS_PEAK=$(awk '$4 > m { m = $4 } END { print m + 0 }' "$SAMPLES")
RATIO=$(awk -v a="$RSS_END" -v b="$RSS_FIRST" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 99) }')
PANICS=$(grep -c 'panicked' "$LOG" || true)
# The restarts: not the first start, with an empty data directory, nor the last, the fresh
# broker started after a SIGTERM for the descriptor count.
RESTART_MAX=$(sed '1d;$d' "$STARTS_FILE" | sort -n | tail -1)

jq -c --argjson duration "$DURATION" --argjson kill_every "$KILL_EVERY" --argjson kills "$KILLS" \
    --argjson deaths "$DEATHS" --argjson rss_first "$RSS_FIRST" --argjson rss_first_median "$RSS_FIRST_MEDIAN" \
    --argjson rss_end "$RSS_END" --argjson rss_end_idle "$RSS_END_IDLE" --argjson rss_peak "$RSS_PEAK" \
    --argjson rss_fresh "$RSS_FRESH" --argjson rss_start "$RSS_START" --argjson ratio "$RATIO" \
    --argjson fds_start "$FDS_START" --argjson fds_end "$FDS_END" --argjson fds_fresh "$FDS_FRESH" \
    --argjson fds_peak "$FDS_PEAK" --argjson panics "$PANICS" --argjson restart_max "${RESTART_MAX:-0}" \
    --arg stop "$FINAL_STOP_STATUS" --arg fresh_stop "$FRESH_STOP_STATUS" '
    {duration_s: $duration, kill_every_s: $kill_every, kills: $kills, broker_deaths: $deaths,
     slowest_restart_s: $restart_max,
     rss_kib: {start_idle: $rss_start, first_minute_max: $rss_first, first_minute_median: $rss_first_median,
               end_drained: $rss_end, end_idle: $rss_end_idle, peak: $rss_peak, fresh_idle: $rss_fresh},
     rss_ratio: $ratio,
     fds: {start_idle: $fds_start, end_idle: $fds_end, fresh_idle: $fds_fresh, peak: $fds_peak},
     panics: $panics, sigterm_status: $stop, fresh_sigterm_status: $fresh_stop, soak: .}' \
    "$OUT/soak.json" >"$OUT/summary.json"

FAILED=()
jq -e '.soak.lost == 0' "$OUT/summary.json" >/dev/null || FAILED+=("acknowledged messages lost")
jq -e '.soak.qos2_duplicates_after_pubrec == 0' "$OUT/summary.json" >/dev/null ||
    FAILED+=("QoS 2 duplicates after PUBREC")
jq -e '.soak.retained.mismatched == 0' "$OUT/summary.json" >/dev/null || FAILED+=("retained set differs")
jq -e '.soak.takeovers.left_open == 0' "$OUT/summary.json" >/dev/null || FAILED+=("takeovers left connections open")
awk -v r="$RATIO" 'BEGIN { exit !(r <= 1.5) }' || FAILED+=("RSS grew ${RATIO}x")
[ "$FDS_END" -le "$FDS_FRESH" ] || FAILED+=("descriptors: $FDS_END at the end, $FDS_FRESH fresh")
[ "$PANICS" = 0 ] || FAILED+=("$PANICS panics in the broker log")
[ "$DEATHS" = 0 ] || FAILED+=("the broker died $DEATHS times on its own")
[ "$FINAL_STOP_STATUS" = 0 ] || FAILED+=("SIGTERM at the end: status $FINAL_STOP_STATUS")

jq -r '
  def mb: . / 1024 | . * 10 | round / 10 | tostring + " MB";
  def q($n): .soak.qos[] | select(.qos == $n);
  ["figure", "value"],
  ["load, drain", "\(.duration_s) s, \(.soak.drain_s | . * 10 | round / 10) s"],
  ["kill -9 + restart", "\(.kills) (every \(.kill_every_s) s), slowest restart \(.slowest_restart_s) s; deaths not ours: \(.broker_deaths)"],
  (range(0; 3) as $n | q($n) |
    ["QoS \($n) published / acknowledged",
     "\(.published) / \(if $n == 0 then "-" else .acknowledged end) (unacknowledged \(.unacknowledged), resent after reconnect \(.resent))"]),
  (.soak.subscribers[] |
    ["  \(.client_id) (QoS \(.publish_qos) on a QoS \(.subscription_qos) subscription\(if .checks_loss then ", checked" else "" end))",
     "received \(.received), missing \(.missing), duplicates \(.duplicates), reconnects \(.reconnects)"]),
  ["lost (acknowledged, never received)", "\(.soak.lost)"],
  ["QoS 2 duplicates after PUBREC (must be 0)", "\(.soak.qos2_duplicates_after_pubrec)"],
  ["QoS 2 duplicates resent by their publisher before PUBREC", "\(.soak.qos2_duplicates_before_pubrec)"],
  ["churn cycles (dropped socket) / failed", "\(.soak.churn.cycles) (\(.soak.churn.dropped)) / \(.soak.churn.failed)"],
  ["takeovers / previous left open / failed", "\(.soak.takeovers.taken_over) / \(.soak.takeovers.left_open) / \(.soak.takeovers.failed)"],
  ["retained acknowledged / reads / mismatched", "\(.soak.retained.acknowledged) / \(.soak.retained.reads) / \(.soak.retained.mismatched) of \(.soak.retained.checked)"],
  ["RSS first minute, max (median)", "\(.rss_kib.first_minute_max | mb) (\(.rss_kib.first_minute_median | mb))"],
  ["RSS at the end, drained (idle)", "\(.rss_kib.end_drained | mb) (\(.rss_kib.end_idle | mb))"],
  ["RSS ratio (limit 1.5)", "\(.rss_ratio)"],
  ["fds idle: start / end / fresh", "\(.fds.start_idle) / \(.fds.end_idle) / \(.fds.fresh_idle) (peak \(.fds.peak))"],
  ["panics, SIGTERM status", "\(.panics), \(.sigterm_status)"]
  | @tsv' "$OUT/summary.json" | column -t -s $'\t' | tee "$OUT/table.txt"

if [ "${#FAILED[@]}" -gt 0 ]; then
    {
        echo "soak.sh: FAILED: $(IFS=';'; echo "${FAILED[*]}")"
        echo "soak.sh: broker log $LOG, driver log $OUT/driver.log, summary $OUT/summary.json"
    } | tee -a "$OUT/table.txt" >&2
    exit 1
fi
rm -rf "$DATA"
echo "soak.sh: passed; logs and samples in $OUT" | tee -a "$OUT/table.txt" >&2
