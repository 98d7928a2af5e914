#!/usr/bin/env bash
# Runs every test of the project on a fresh Debian machine: installs what the tests need
# (mosquitto's command-line clients, mosquitto itself for the password files its
# mosquitto_passwd writes, openssl for the paho tests' certificates, Python's paho-mqtt and
# pytest, Node and MQTT.js for the WebSocket tests), then the formatting and lint checks and the whole test suite. README.md documents this command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v mosquitto_sub >/dev/null || ! command -v mosquitto_pub >/dev/null ||
    ! command -v mosquitto_passwd >/dev/null || ! command -v openssl >/dev/null; then
    echo "installing mosquitto, mosquitto-clients and openssl (apt-get)"
    as_root apt-get update -qq
    # Only for its tools: the package's own broker service is stopped again at once.
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto mosquitto-clients openssl >/dev/null
    as_root systemctl stop mosquitto 2>/dev/null || as_root service mosquitto stop 2>/dev/null || true
fi
if ! python3 -c 'import paho.mqtt, pytest' 2>/dev/null; then
    echo "installing paho-mqtt and pytest (pip)"
    if ! python3 -m pip --version >/dev/null 2>&1; then
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null
    fi
    # Debian's own Python refuses pip installs outside a venv (PEP 668) unless told otherwise.
    python3 -m pip install --quiet 'paho-mqtt>=2' pytest 2>/dev/null ||
        python3 -m pip install --quiet --break-system-packages 'paho-mqtt>=2' pytest
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "installing nodejs and npm (apt-get)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
if [ ! -d tests/node/node_modules/mqtt ]; then
    echo "installing MQTT.js (npm, into tests/node/node_modules)"
    npm install --prefix tests/node --no-audit --no-fund --silent
fi

export CARGO_TERM_COLOR=never
# Which runtimes the end-to-end tests exercise: io_uring can be missing (Docker's default
# seccomp profile, kernel.io_uring_disabled). Its cases then fail unless this says it expects
# that, so nothing is skipped unseen.
cargo build --locked --quiet --bin mqtt-broker
probe_dir=$(mktemp -d)
if timeout 2 "${CARGO_TARGET_DIR:-target}/debug/mqtt-broker" --runtime io-uring --shards 1 --listen 127.0.0.1:0 \
    --data-dir "$probe_dir" --log-level error 2>"$probe_dir/err"; then :; fi
if grep -qi "io.uring" "$probe_dir/err"; then
    export MQTT_BROKER_TESTS_WITHOUT_IO_URING=1
    echo "runtimes exercised end to end: epoll tokio (io_uring is unavailable here: SKIPPED io-uring and glommio: $(head -1 "$probe_dir/err"))"
else
    echo "runtimes exercised end to end: io-uring epoll tokio, and glommio in the glommio stage"
fi
rm -rf "$probe_dir"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
# The glommio backend is an optional feature: keep it lint-clean and run the tests that exercise
# it (the runtime crate's and the end-to-end tests' glommio cases) in a build that has it.
cargo clippy --workspace --all-targets --features glommio --locked -- -D warnings
cargo test --workspace --features glommio --locked glommio
