# Shell helpers shared by the benchmark scripts (compare.sh, memory.sh, persistence.sh,
# instructions.sh, soak.sh).
# Sourced, not run: set SCRIPT to the script's name (for messages) before sourcing.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR=$ROOT/$TARGET_DIR ;; esac
RELEASE=$TARGET_DIR/release

die() { echo "$SCRIPT: $*" >&2; exit 2; }

# Installs PACKAGE with apt-get unless COMMAND is already there.
need_package() { # COMMAND PACKAGE
    command -v "$1" >/dev/null && return 0
    echo "$SCRIPT: installing $2 with apt-get" >&2
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq && $sudo apt-get install -y -qq "$2" >/dev/null
    command -v "$1" >/dev/null || die "$1 is still missing after installing $2"
}

# A 127.0.0.1 port nothing listens on.
free_port() {
    local port
    for _ in $(seq 200); do
        port=$((20000 + RANDOM % 40000))
        if ! ss -Htln "sport = :$port" | grep -q .; then
            echo "$port"
            return 0
        fi
    done
    return 1
}
