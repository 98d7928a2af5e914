//! Runs the Python paho-mqtt end-to-end tests (`tests/python/`) against the real binary, one
//! pytest run per runtime (so they run in parallel and report per runtime).
//!
//! The pytest suite starts the broker itself (see `tests/python/conftest.py`); this test tells it
//! which binary (`MQTT_BROKER_BIN`) and which runtimes (`MQTT_BROKER_RUNTIMES`) to use, and fails
//! with pytest's output if any Python test fails. Python's `paho-mqtt` (>= 2) and `pytest` come
//! from the README test command, which installs them; without them these tests fail.

mod common;

use std::process::Command;

use common::{io_uring_available, README_TEST_COMMAND};

/// Panics, saying how to install them, unless python3 has paho-mqtt >= 2 and pytest.
fn require_python_packages() {
    let check = Command::new("python3")
        .args([
            "-c",
            "import paho.mqtt, pytest; assert int(paho.mqtt.__version__.split('.')[0]) >= 2",
        ])
        .output();
    match check {
        Ok(output) if output.status.success() => {}
        Ok(output) => panic!(
            "Python's paho-mqtt (>= 2) or pytest is missing: run the README test command \
             `{README_TEST_COMMAND}`, which installs them.\n{}",
            String::from_utf8_lossy(&output.stderr)
        ),
        Err(error) => panic!(
            "cannot run python3 ({error}): run the README test command `{README_TEST_COMMAND}`"
        ),
    }
}

fn pytest(runtime: &str) {
    require_python_packages();
    if matches!(runtime, "io-uring" | "glommio") && !io_uring_available() {
        eprintln!("skipped: io_uring is not available on this machine");
        return;
    }
    let output = Command::new("python3")
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/python",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("MQTT_BROKER_BIN", env!("CARGO_BIN_EXE_mqtt-broker"))
        .env("MQTT_BROKER_RUNTIMES", runtime)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run python3 -m pytest");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "pytest tests/python (--runtime {runtime}) failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    // pytest exits 5 when it collects nothing; make sure tests really ran.
    assert!(
        stdout.contains(" passed"),
        "pytest ran no test:\n{stdout}\n{stderr}"
    );
}

#[test]
fn paho_mqtt_io_uring() {
    pytest("io-uring");
}

#[test]
fn paho_mqtt_epoll() {
    pytest("epoll");
}

#[test]
fn paho_mqtt_tokio() {
    pytest("tokio");
}

#[cfg(feature = "glommio")]
#[test]
fn paho_mqtt_glommio() {
    pytest("glommio");
}
