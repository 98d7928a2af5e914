//! `--metrics-listen`: `/metrics` in the OpenMetrics text format (prometheus-client), and
//! `/healthz` and `/readyz` for supervisors, on a small HTTP server (tiny_http) with a thread of
//! its own. A scrape reads the shards' last reports (`reports.rs`, refreshed every second), so
//! serving it costs the shards nothing, and the path of a message nothing beyond the counters
//! the core keeps anyway.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use tracing::{info, warn};

use super::reports::{Reports, ShardReport};
use crate::broker::latency::{LatencyHistogram, BUCKET_BOUNDS_MICROS};
use crate::protocol::ProtocolVersion;

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: String,
    protocol: String,
}

fn protocol_name(version: ProtocolVersion) -> &'static str {
    match version {
        ProtocolVersion::V3_1 => "3.1",
        ProtocolVersion::V3_1_1 => "3.1.1",
        ProtocolVersion::V5 => "5",
    }
}

/// Each shard's sampled delivery latencies, as Prometheus histograms. The buckets were counted
/// by the core (`broker::latency`); prometheus-client's own histogram could only be fed one
/// observation at a time.
#[derive(Debug)]
struct LatencyHistograms(Vec<(ShardLabel, LatencyHistogram)>);

impl EncodeMetric for LatencyHistograms {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (label, histogram) in &self.0 {
            let bounds = BUCKET_BOUNDS_MICROS
                .iter()
                .map(|&micros| micros as f64 / 1e6)
                .chain([f64::INFINITY]);
            let buckets: Vec<(f64, u64)> = bounds.zip(histogram.buckets).collect();
            encoder
                .encode_family(label)?
                .encode_histogram::<NoLabelSet>(
                    histogram.sum.as_secs_f64(),
                    histogram.count(),
                    &buckets,
                    None,
                )?;
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
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
    (
        "journal_backlog_bytes",
        "Bytes appended to the journal and not yet written",
        |shard| shard.journal.backlog_bytes,
    ),
];

const COUNTERS: &[Figure] = &[
    ("received_bytes", "Bytes read from clients", |shard| {
        shard.runtime.bytes_received
    }),
    ("sent_bytes", "Bytes written to clients", |shard| {
        shard.runtime.bytes_sent
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
    (
        "cross_shard_envelopes",
        "Batches of messages sent to other shards",
        |shard| shard.runtime.envelopes_sent,
    ),
    (
        "cross_shard_messages_sent",
        "Messages and notices put in batches for other shards",
        |shard| shard.stats.shard_messages_sent,
    ),
    (
        "cross_shard_messages_received",
        "Messages and notices taken from other shards' batches",
        |shard| shard.stats.shard_messages_received,
    ),
    (
        "publisher_pauses",
        "Times a publisher was paused because another shard or the journal was behind",
        |shard| shard.runtime.publisher_pauses,
    ),
    (
        "journal_appends",
        "Records appended to the journal",
        |shard| shard.journal.appended,
    ),
    (
        "journal_fsyncs",
        "fdatasync calls on the journal",
        |shard| shard.journal.fsyncs,
    ),
    (
        "journal_written_bytes",
        "Bytes written to the journal",
        |shard| shard.journal.bytes_written,
    ),
    ("snapshots", "Snapshots completed", |shard| {
        shard.journal.snapshots
    }),
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

    let snapshot_time = Family::<ShardLabel, Counter<f64, AtomicU64>>::default();
    registry.register_with_unit(
        "snapshot_duration",
        "Time the completed snapshots took to encode and write, off the shards",
        Unit::Seconds,
        snapshot_time.clone(),
    );
    let last_snapshot_time = Family::<ShardLabel, Gauge<f64, AtomicU64>>::default();
    registry.register_with_unit(
        "last_snapshot_duration",
        "Time the last completed snapshot took",
        Unit::Seconds,
        last_snapshot_time.clone(),
    );
    for (index, shard) in shards.iter().enumerate() {
        let label = shard_label(index);
        let journal = &shard.journal;
        snapshot_time
            .get_or_create(&label)
            .inc_by(journal.snapshot_time.as_secs_f64());
        last_snapshot_time
            .get_or_create(&label)
            .set(journal.last_snapshot_time.as_secs_f64());
    }

    let by_listener = Family::<ListenerLabel, Gauge>::default();
    registry.register(
        "listener_connections",
        "Network connections by listener and protocol version (\"connecting\" until CONNECT is accepted)",
        by_listener.clone(),
    );
    for shard in shards {
        for connections in &shard.connections_by_listener {
            let label = ListenerLabel {
                listener: connections.listener.clone(),
                protocol: connections
                    .version
                    .map_or("connecting", protocol_name)
                    .into(),
            };
            let count = i64::try_from(connections.count).unwrap_or(i64::MAX);
            by_listener.get_or_create(&label).inc_by(count);
        }
    }

    registry.register_with_unit(
        "delivery_latency",
        "Sampled time from a PUBLISH read to a subscriber's copy written to its send buffer",
        Unit::Seconds,
        LatencyHistograms(
            shards
                .iter()
                .enumerate()
                .map(|(index, shard)| (shard_label(index), shard.stats.delivery_latency))
                .collect(),
        ),
    );

    let mut text = String::new();
    if encode(&mut text, &registry).is_err() {
        text = "# the metrics could not be encoded\n".into();
    }
    text
}
