//! What an operator watches, against the real binary: the `$SYS` topics with values checked
//! against known traffic, `/metrics` parsed and checked, `/healthz` and `/readyz`, and JSON log
//! lines.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{unique, Binary, Broker};

/// A port nothing listens on right now.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

/// `GET path` on 127.0.0.1:`port`: the status code and the body.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// The value of the retained `$SYS` topic, as a subscriber sees it now.
fn sys(port: u16, topic: &str) -> String {
    let output = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-t", &format!("$SYS/broker/{topic}"), "-C", "1", "-W", "10"])
        .output()
        .expect("mosquitto_sub is installed by the README's test command");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Waits until `check` holds, for up to 10 s.
fn eventually(mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// The sum over the shards of the samples of `metric` whose labels contain `labels`.
fn metric(text: &str, metric: &str, labels: &str) -> u64 {
    text.lines()
        .filter(|line| line.starts_with(&format!("{metric}{{")) && line.contains(labels))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn sys_topics_and_metrics_count_what_happened() {
    for binary in [Binary::Async, Binary::Sync] {
        let metrics = free_port();
        let metrics_flag = format!("127.0.0.1:{metrics}");
        let mut broker = Broker::try_start(
            binary,
            &["--sys-interval", "1", "--metrics-listen", &metrics_flag],
        )
        .expect("starts");
        assert_eq!(
            get(metrics, "/healthz").map(|(status, _)| status),
            Some(200)
        );
        assert!(eventually(
            || get(metrics, "/readyz").is_some_and(|(status, _)| status == 200)
        ));
        assert_eq!(
            get(metrics, "/nothing").map(|(status, _)| status),
            Some(404)
        );

        // Known traffic: five QoS 1 publishes, one of them retained.
        let topic = unique("ops/t");
        for n in 0..5 {
            let mut publish = Command::new("mosquitto_pub");
            publish
                .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
                .args(["-t", &topic, "-m", "reading", "-q", "1"]);
            if n == 0 {
                publish.arg("-r");
            }
            let output = publish.output().expect("mosquitto_pub");
            assert!(
                output.status.success(),
                "{binary:?}: {output:?}\n{}",
                broker.logs()
            );
        }
        assert!(
            eventually(|| sys(broker.port, "messages/received") == "5"),
            "{binary:?}: $SYS/broker/messages/received is {:?}",
            sys(broker.port, "messages/received")
        );
        assert_eq!(sys(broker.port, "publish/messages/received"), "5");
        assert!(sys(broker.port, "version").starts_with("mqtt-broker version "));
        assert!(sys(broker.port, "uptime").ends_with(" seconds"));
        // A client that stays connected is counted at the next publication.
        let mut staying = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
            .args(["-t", "ops/nothing", "-W", "30"])
            .spawn()
            .expect("mosquitto_sub");
        let connected = || {
            sys(broker.port, "clients/connected")
                .parse::<u64>()
                .unwrap_or(0)
        };
        assert!(
            eventually(|| connected() >= 1),
            "{binary:?}: clients/connected"
        );
        // Connections are counted by listener and protocol version.
        let labels = format!(
            "listener=\"mqtt://127.0.0.1:{}\",protocol=\"3.1.1\"",
            broker.port
        );
        let by_listener = || {
            let (_, text) = get(metrics, "/metrics").unwrap_or_default();
            metric(&text, "mqtt_listener_connections", &labels)
        };
        assert!(
            eventually(|| by_listener() >= 1),
            "{binary:?}: mqtt_listener_connections{{{labels}}}"
        );
        let shards = if binary == Binary::Sync { 1 } else { 2 };
        let per_shard: u64 = (0..shards)
            .map(|shard| sys(broker.port, &format!("shards/{shard}/messages/received")))
            .filter_map(|value| value.parse::<u64>().ok())
            .sum();
        assert_eq!(
            per_shard, 5,
            "{binary:?}: the shards' figures add up to the total"
        );
        assert!(
            sys(broker.port, "bytes/received")
                .parse::<u64>()
                .unwrap_or(0)
                > 5 * 20
        );

        // `#` never matches the broker's topics.
        let everything = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
            .args(["-t", "#", "-v", "-W", "2"])
            .output()
            .expect("mosquitto_sub");
        let seen = String::from_utf8_lossy(&everything.stdout);
        assert!(seen.contains(&topic) && !seen.contains("$SYS"), "{seen}");

        let (status, text) = get(metrics, "/metrics").expect("/metrics answers");
        assert_eq!(status, 200);
        assert_eq!(
            metric(&text, "mqtt_publishes_received_total", "qos=\"1\""),
            5,
            "{text}"
        );
        assert_eq!(
            metric(&text, "mqtt_publishes_received_total", "qos=\"0\""),
            0
        );
        assert!(metric(&text, "mqtt_received_bytes_total", "shard") > 5 * 20);
        assert_eq!(
            metric(
                &text,
                "mqtt_dropped_messages_total",
                "reason=\"acl_denied\""
            ),
            0
        );
        assert!(text.contains("# TYPE mqtt_connections gauge"), "{text}");
        // The retained message and the sessions were journaled.
        assert!(
            metric(&text, "mqtt_journal_appends_total", "shard") >= 1,
            "{text}"
        );
        assert!(metric(&text, "mqtt_journal_written_bytes_total", "shard") > 0);
        assert!(text.contains("# TYPE mqtt_snapshot_duration_seconds counter"));
        // Deliveries were made ($SYS to the subscribers above): the first is always sampled.
        assert!(
            metric(&text, "mqtt_delivery_latency_seconds_count", "shard") >= 1,
            "{text}"
        );
        assert!(metric(&text, "mqtt_delivery_latency_seconds_bucket", "le=\"+Inf\"") >= 1);
        assert!(
            text.ends_with("# EOF\n"),
            "OpenMetrics text ends with # EOF"
        );
        // Every metric the Grafana dashboard graphs is one the broker exports.
        let dashboard = include_str!("../ops/grafana-dashboard.json");
        for name in dashboard.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if name.starts_with("mqtt_") {
                assert!(
                    text.contains(&format!("\n{name}{{")),
                    "the dashboard's {name}"
                );
            }
        }
        let _ = staying.kill();
        let _ = staying.wait();
        broker.assert_healthy();
    }
}

#[test]
fn json_log_lines_carry_the_fields_of_each_event() {
    let broker = Broker::try_start(Binary::Async, &["--log-format", "json"]).expect("starts");
    let published = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &broker.port.to_string()])
        .args(["-i", "json-logger", "-t", "ops/json", "-m", "x"])
        .status()
        .expect("mosquitto_pub");
    assert!(published.success());
    assert!(broker.wait_for_log(&["client connected"], Duration::from_secs(10)));
    let logs = broker.logs();
    let line = logs
        .lines()
        .find(|line| line.contains("client connected"))
        .expect("a connect line");
    assert!(line.starts_with('{') && line.ends_with('}'), "{line}");
    let listener = format!("\"listener\":\"mqtt://127.0.0.1:{}\"", broker.port);
    for field in [
        "\"level\":\"INFO\"",
        "\"client_id\":\"json-logger\"",
        "\"peer\":\"127.0.0.1:",
        &listener,
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
    assert!(broker.wait_for_log(&["client disconnected"], Duration::from_secs(10)));
    let logs = broker.logs();
    let line = logs
        .lines()
        .find(|line| line.contains("client disconnected"))
        .expect("a disconnect line");
    for field in [
        "\"client_id\":\"json-logger\"",
        &listener,
        "\"reason\":\"client sent DISCONNECT: 0x00",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
    // A refusal names who was refused, where, and why.
    let mut garbage =
        TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], broker.port))).expect("connect");
    garbage.write_all(&[0x10, 0x02, 0xFF, 0xFF]).expect("write");
    assert!(broker.wait_for_log(&["connection refused"], Duration::from_secs(10)));
    let logs = broker.logs();
    let line = logs
        .lines()
        .find(|line| line.contains("connection refused"))
        .expect("a refusal line");
    for field in ["\"peer\":\"127.0.0.1:", &listener, "\"reason\":"] {
        assert!(line.contains(field), "{field} in {line}");
    }
    // The settings refuse an unknown format.
    let refused = Command::new(env!("CARGO_BIN_EXE_mqtt-broker"))
        .args(["--log-format", "yaml"])
        .output()
        .expect("run");
    assert_eq!(refused.status.code(), Some(78));
}
