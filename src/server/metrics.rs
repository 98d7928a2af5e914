//! `--metrics-listen`: `/metrics` in the OpenMetrics text format (prometheus-client), and
//! `/healthz` and `/readyz` for supervisors, on a small HTTP server (tiny_http) with a thread of
//! its own. A scrape reads the shards' last reports (`reports.rs`, refreshed every second), so
//! serving it costs the shards nothing, and the path of a message nothing beyond the counters
//! the core keeps anyway.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tracing::{info, warn};

use super::reports::{Reports, ShardReport};

/// Starts serving on `address`; the thread lives as long as the process.
pub(crate) fn serve(address: SocketAddr, reports: Arc<Reports>) -> Result<(), String> {
    let server = tiny_http::Server::http(address)
        .map_err(|error| format!("cannot serve metrics on {address}: {error}"))?;
    let bound = server
        .server_addr()
        .to_ip()
        .map_or_else(|| address.to_string(), |address| address.to_string());
    info!("metrics and health served on http://{bound}/metrics, /healthz, /readyz");
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                let (status, content_type, body) = answer(request.url(), &reports);
                let header = tiny_http::Header::from_bytes("Content-Type", content_type)
                    .expect("a valid header");
                let response = tiny_http::Response::from_string(body)
                    .with_status_code(status)
                    .with_header(header);
                if let Err(error) = request.respond(response) {
                    warn!(%error, "cannot answer a metrics request");
                }
            }
        })
        .map_err(|error| format!("cannot start the metrics thread: {error}"))?;
    Ok(())
}

/// Status, content type and body for a request of `path`.
fn answer(path: &str, reports: &Reports) -> (u16, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    match path.split('?').next().unwrap_or_default() {
        "/metrics" => (
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render(&reports.shards()),
        ),
        "/healthz" => (200, TEXT, "ok\n".into()),
        "/readyz" if reports.is_ready() => (200, TEXT, "ready\n".into()),
        "/readyz" => (503, TEXT, "recovering\n".into()),
        _ => (
            404,
            TEXT,
            "not found: try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardLabel {
    shard: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QosLabel {
    shard: String,
    qos: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    shard: String,
    reason: String,
}

/// A figure of a shard's report: its name, its help text, and how to read it.
type Figure = (&'static str, &'static str, fn(&ShardReport) -> u64);

const GAUGES: &[Figure] = &[
    ("connections", "Network connections", |shard| {
        shard.connections as u64
    }),
    (
        "clients_connected",
        "Sessions with their client connected",
        |shard| shard.clients_connected as u64,
    ),
    (
        "clients_disconnected",
        "Sessions waiting for their client",
        |shard| shard.clients_disconnected as u64,
    ),
    ("subscriptions", "Subscriptions", |shard| {
        shard.subscriptions as u64
    }),
    (
        "retained_messages",
        "Retained messages (each shard holds all)",
        |shard| shard.retained as u64,
    ),
    (
        "stored_messages",
        "Messages in flight or queued for sessions",
        |shard| shard.stored as u64,
    ),
];

const COUNTERS: &[Figure] = &[
    ("received_bytes", "Bytes read from clients", |shard| {
        shard.bytes_received
    }),
    ("sent_bytes", "Bytes written to clients", |shard| {
        shard.bytes_sent
    }),
    (
        "auth_failures",
        "CONNECTs refused for who the client is",
        |shard| shard.stats.auth_refused,
    ),
    (
        "takeovers",
        "Sessions taken over by a new connection",
        |shard| shard.stats.takeovers,
    ),
    (
        "protocol_errors",
        "Connections ended for breaking the protocol",
        |shard| shard.stats.protocol_errors,
    ),
    ("wills_published", "Will messages published", |shard| {
        shard.stats.wills_published
    }),
    (
        "sessions_expired",
        "Sessions ended by their expiry",
        |shard| shard.stats.sessions_expired,
    ),
];

fn shard_label(index: usize) -> ShardLabel {
    ShardLabel {
        shard: index.to_string(),
    }
}

/// The metrics of the shards' reports, per shard.
fn render(shards: &[ShardReport]) -> String {
    let mut registry = Registry::with_prefix("mqtt");
    for &(name, help, value) in GAUGES {
        let family = Family::<ShardLabel, Gauge>::default();
        registry.register(name, help, family.clone());
        for (index, shard) in shards.iter().enumerate() {
            let value = i64::try_from(value(shard)).unwrap_or(i64::MAX);
            family.get_or_create(&shard_label(index)).set(value);
        }
    }
    for &(name, help, value) in COUNTERS {
        let family = Family::<ShardLabel, Counter>::default();
        registry.register(name, help, family.clone());
        for (index, shard) in shards.iter().enumerate() {
            family
                .get_or_create(&shard_label(index))
                .inc_by(value(shard));
        }
    }

    let received: fn(&ShardReport) -> [u64; 3] = |shard| shard.stats.received_by_qos;
    let sent: fn(&ShardReport) -> [u64; 3] = |shard| shard.stats.sent_by_qos;
    for (name, help, by_qos) in [
        (
            "publishes_received",
            "PUBLISH packets received, by QoS",
            received,
        ),
        (
            "publishes_sent",
            "PUBLISH packets sent, by the QoS of the delivery",
            sent,
        ),
    ] {
        let family = Family::<QosLabel, Counter>::default();
        registry.register(name, help, family.clone());
        for (index, shard) in shards.iter().enumerate() {
            for (qos, count) in by_qos(shard).into_iter().enumerate() {
                let label = QosLabel {
                    shard: index.to_string(),
                    qos: qos.to_string(),
                };
                family.get_or_create(&label).inc_by(count);
            }
        }
    }

    let dropped = Family::<ReasonLabel, Counter>::default();
    registry.register(
        "dropped_messages",
        "Messages not delivered or not accepted, by reason",
        dropped.clone(),
    );
    for (index, shard) in shards.iter().enumerate() {
        let stats = &shard.stats;
        for (reason, count) in [
            ("queue_full", stats.queue_full_dropped),
            ("qos0_buffer", stats.qos0_dropped),
            ("expired", stats.expired_dropped),
            ("too_large", stats.too_large_dropped),
            ("acl_denied", stats.acl_denied),
            ("sys_topic", stats.publishes_refused),
            ("retained_full", stats.retained_refused),
        ] {
            let label = ReasonLabel {
                shard: index.to_string(),
                reason: reason.into(),
            };
            dropped.get_or_create(&label).inc_by(count);
        }
    }

    let mut text = String::new();
    if encode(&mut text, &registry).is_err() {
        text = "# the metrics could not be encoded\n".into();
    }
    text
}
