"""Starts the real broker binary for the paho-mqtt tests.

`tests/paho.rs` (run by `cargo test`) runs `python3 -m pytest -q tests/python` with:

- MQTT_BROKER_BIN: the broker binary Cargo built (`CARGO_BIN_EXE_mqtt-broker`);
- MQTT_BROKER_RUNTIMES: the runtimes to test, comma-separated (io-uring only where it works).

Run by hand, pytest falls back to `$CARGO_TARGET_DIR/debug/mqtt-broker` (else `target/debug/`)
and the runtimes `epoll,tokio`; build first with `cargo build`.

Each runtime gets one broker (`--shards 2 --listen 127.0.0.1:0`, a temporary data directory)
for the whole module; its port comes from the `listening on 127.0.0.1:PORT` line it logs. It
also serves MQTT over TLS (`--listen-tls 127.0.0.1:0`) with a certificate for 127.0.0.1 that a
test authority, made with the openssl command once per run, signed (`CERTIFICATES.ca`), and
MQTT over WebSocket (`--listen-ws 127.0.0.1:0`, `ws_port`).
"""

import os
import pathlib
import re
import subprocess
import tempfile
import threading
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
TLS_LISTENING = re.compile(r"MQTT over TLS listening on 127\.0\.0\.1:(\d+)")
WS_LISTENING = re.compile(r"MQTT over WebSocket listening on 127\.0\.0\.1:(\d+)")


class Certificates:
    """A test certificate authority and a server certificate for 127.0.0.1 it signed."""

    def __init__(self):
        self.dir = tempfile.TemporaryDirectory(prefix="mqtt-e2e-tls-")
        path = pathlib.Path(self.dir.name)
        self.ca, self.cert, self.key = path / "ca.pem", path / "server.pem", path / "server.key"
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        (path / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        for command in [
            ["req", "-x509", *ec, "-keyout", path / "ca.key", "-out", self.ca, "-days", "2",
             "-subj", "/CN=mqtt-broker test CA"],
            ["req", *ec, "-keyout", self.key, "-out", path / "server.csr", "-subj",
             "/CN=localhost"],
            ["x509", "-req", "-in", path / "server.csr", "-CA", self.ca, "-CAkey",
             path / "ca.key", "-CAcreateserial", "-out", self.cert, "-days", "2", "-extfile",
             path / "san.ext"],
        ]:
            subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True)


CERTIFICATES = Certificates()


def broker_binary():
    if os.environ.get("MQTT_BROKER_BIN"):
        return os.environ["MQTT_BROKER_BIN"]
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return str(target / "debug" / "mqtt-broker")


def runtimes():
    names = os.environ.get("MQTT_BROKER_RUNTIMES", "epoll,tokio")
    return [name for name in names.split(",") if name]


class Broker:
    def __init__(self, runtime, extra=()):
        self.runtime = runtime
        self.data_dir = tempfile.TemporaryDirectory(prefix="mqtt-e2e-")
        binary = broker_binary()
        if not os.path.exists(binary):
            pytest.fail(f"no broker binary at {binary}: run `cargo build` first")
        self.process = subprocess.Popen(
            [binary, "--runtime", runtime, "--shards", "2", "--listen", "127.0.0.1:0",
             "--listen-tls", "127.0.0.1:0", "--tls-cert", str(CERTIFICATES.cert),
             "--tls-key", str(CERTIFICATES.key), "--listen-ws", "127.0.0.1:0",
             "--data-dir", self.data_dir.name, "--log-level", "info", *extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True,
        )
        self.lines = []
        self.port = None
        self.tls_port = None
        self.ws_port = None
        ready = threading.Event()

        def drain():
            for line in self.process.stderr:
                self.lines.append(line)
                found = TLS_LISTENING.search(line)
                if found:
                    self.tls_port = int(found.group(1))
                found = WS_LISTENING.search(line)
                if found:
                    self.ws_port = int(found.group(1))
                found = LISTENING.search(line)
                if found and self.port is None:
                    self.port = int(found.group(1))
                if None not in (self.port, self.tls_port, self.ws_port):
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(10) or None in (self.port, self.tls_port, self.ws_port):
            self.stop()
            pytest.fail(f"broker --runtime {runtime} did not start:\n{self.logs()}")

    def logs(self):
        return "".join(self.lines)

    def stop(self):
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        self.data_dir.cleanup()


@pytest.fixture(scope="module", params=runtimes())
def broker(request):
    broker = Broker(request.param)
    yield broker
    alive = broker.process.poll() is None
    broker.stop()
    assert alive, f"broker ({broker.runtime}) died during the tests:\n{broker.logs()}"
    assert "panicked" not in broker.logs(), broker.logs()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Adds the broker's log to a failing test's report."""
    outcome = yield
    report = outcome.get_result()
    fixture = getattr(item, "funcargs", {}).get("broker")
    if report.failed and fixture is not None:
        report.sections.append((f"broker ({fixture.runtime}) stderr", fixture.logs()))


def wait_until(predicate, timeout, step=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
