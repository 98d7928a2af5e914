#!/usr/bin/env bash
# Kernel tuning for an mqtt-broker host that holds many (10^5 to 10^6) mostly idle connections.
#
# The stock limits are sized for desktops: a few thousand file descriptors, a listen backlog of
# 4096 that overflows during a reconnect storm, and a conntrack table that drops packets long
# before the broker runs out of memory. This raises those limits, never lowers a value that is
# already higher, prints every change, and is safe to run again (a second run changes nothing).
#
# Usage: sudo ops/tune-kernel.sh [--dry-run] [--no-persist]
#   --dry-run     show what would change, change nothing (no root needed)
#   --no-persist  apply now only; don't write /etc/sysctl.d and /etc/security/limits.d
set -euo pipefail

DRY_RUN=0
PERSIST=1
SYSCTL_FILE=/etc/sysctl.d/90-mqtt-broker.conf
LIMITS_FILE=/etc/security/limits.d/90-mqtt-broker.conf
SERVICE_USER=mqtt-broker
NOFILE=1048576

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY_RUN=1 ;;
        --no-persist) PERSIST=0 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "tune-kernel.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
    esac
done

if [[ $DRY_RUN -eq 0 && $EUID -ne 0 ]]; then
    echo "tune-kernel.sh: run as root, or with --dry-run to see what would change" >&2
    exit 1
fi

# key | mode | value. "min" raises to at least the value; "set" sets it exactly.
SETTINGS=(
    # One descriptor per connection; the system-wide cap and the per-process ceiling that
    # LimitNOFILE / `ulimit -n` may not exceed.
    "fs.file-max|min|2097152"
    "fs.nr_open|min|$NOFILE"
    # Accept backlogs: a reconnect storm after a network blip arrives all at once.
    "net.core.somaxconn|min|65535"
    "net.ipv4.tcp_max_syn_backlog|min|65535"
    "net.core.netdev_max_backlog|min|16384"
    # Ceilings for SO_RCVBUF/SO_SNDBUF only; the per-connection defaults (tcp_rmem/tcp_wmem) are
    # left alone because raising them multiplies memory by the number of connections.
    "net.core.rmem_max|min|16777216"
    "net.core.wmem_max|min|16777216"
    # Outgoing connections (bridges, and load generators on the same host) need many local
    # ports and quick reuse of TIME_WAIT ones. The range starts above 1883 and 8883 so an
    # outgoing connection can never hold the broker's port while it restarts.
    "net.ipv4.ip_local_port_range|set|10000 65535"
    "net.ipv4.tcp_tw_reuse|set|1"
    # When netfilter tracks connections, a full table silently drops new ones.
    "net.netfilter.nf_conntrack_max|min|2097152"
)

# Written through /proc rather than sysctl(8) so the script works where procps is missing.
set_sysctl() {
    local path=$1 value=$2
    if [[ $DRY_RUN -eq 0 ]]; then
        printf '%s\n' "$value" >"$path"
    fi
}

changed=0
persist_lines=()

for entry in "${SETTINGS[@]}"; do
    IFS='|' read -r key mode want <<<"$entry"
    path="/proc/sys/${key//.//}"
    if [[ ! -r $path ]]; then
        echo "skip    $key (not present on this kernel or module not loaded)"
        continue
    fi
    # Normalise tabs and repeated spaces so "1024\t65535" compares equal to "1024 65535".
    current=$(tr -s '[:space:]' ' ' <"$path" | sed 's/ $//')
    # A "-" prefix tells systemd-sysctl not to fail at boot when a module (conntrack) is not
    # loaded yet.
    prefix=""
    if [[ $key == net.netfilter.* ]]; then
        prefix="-"
    fi
    if [[ $mode == min && $current =~ ^[0-9]+$ && $current -gt $want ]]; then
        # Already higher (often a default the kernel scales with RAM): leave it, and don't pin
        # today's value in the persisted file either.
        echo "ok      $key = $current (above $want)"
        continue
    fi
    persist_lines+=("$prefix$key = $want")
    if [[ $current == "$want" ]]; then
        echo "ok      $key = $current"
    else
        echo "change  $key: $current -> $want"
        set_sysctl "$path" "$want"
        changed=$((changed + 1))
    fi
done

write_if_different() {
    local file=$1 content=$2
    if [[ -f $file && "$(cat "$file")" == "$content" ]]; then
        echo "ok      $file is up to date"
        return
    fi
    echo "write   $file"
    changed=$((changed + 1))
    if [[ $DRY_RUN -eq 1 ]]; then
        printf '%s\n' "$content" | sed 's/^/  | /'
    else
        printf '%s\n' "$content" >"$file"
    fi
}

if [[ $PERSIST -eq 1 ]]; then
    write_if_different "$SYSCTL_FILE" "$(
        echo "# Written by mqtt-broker ops/tune-kernel.sh; rerun it rather than editing by hand."
        printf '%s\n' "${persist_lines[@]}"
    )"
    # For runs outside systemd (the unit sets LimitNOFILE itself): login sessions of the
    # service user, via pam_limits.
    if [[ -d ${LIMITS_FILE%/*} ]]; then
        write_if_different "$LIMITS_FILE" "$(
            echo "# Written by mqtt-broker ops/tune-kernel.sh."
            echo "$SERVICE_USER soft nofile $NOFILE"
            echo "$SERVICE_USER hard nofile $NOFILE"
        )"
    fi
fi

# ulimit only affects this shell and its children, so the script reports it instead of setting it.
soft=$(ulimit -Sn)
if [[ $soft != unlimited && $soft -lt $NOFILE ]]; then
    echo "note    this shell's open-file limit is $soft; for a broker started by hand run"
    echo "        'ulimit -n $NOFILE' first (systemd: LimitNOFILE in ops/mqtt-broker.service)"
fi

if [[ $DRY_RUN -eq 1 ]]; then
    echo "dry run: $changed change(s) would be made"
else
    echo "$changed change(s) made"
fi
