//! Codec throughput: decoding and encoding PUBLISH (64 B and 4 KiB payloads) and SUBSCRIBE with
//! ten filters, for MQTT 3.1.1 and 5.0. Figures and the command are kept in `benches/RESULTS.md`.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use mqtt_broker::protocol::{
    Decoder, Packet, ProtocolVersion, Publish, QoS, Subscribe, SubscriptionOptions,
};
use std::hint::black_box;

/// How many packets one decode iteration walks through, so per-packet setup is amortised.
const PACKETS_PER_BATCH: usize = 1000;

fn publish(payload_len: usize) -> Publish {
    Publish {
        qos: QoS::AtLeastOnce,
        topic: "sensors/building-1/floor-3/temperature".into(),
        packet_id: 42,
        payload: Bytes::from(vec![0xA5; payload_len]),
        ..Publish::default()
    }
}

fn subscribe() -> Subscribe {
    Subscribe {
        packet_id: 7,
        filters: (0..10)
            .map(|i| {
                (
                    format!("devices/{i}/+/status/#").into(),
                    SubscriptionOptions {
                        qos: QoS::AtLeastOnce,
                        ..Default::default()
                    },
                )
            })
            .collect(),
        ..Subscribe::default()
    }
}

/// `count` copies of `packet` back to back, as a receive buffer would hold them.
fn stream(packet: &Packet, version: ProtocolVersion, count: usize) -> BytesMut {
    let mut one = BytesMut::new();
    packet.encode(version, &mut one).unwrap();
    let mut all = BytesMut::with_capacity(one.len() * count);
    for _ in 0..count {
        all.extend_from_slice(&one);
    }
    all
}

fn bench_decode(c: &mut Criterion) {
    let cases = [
        ("publish_64B", Packet::Publish(publish(64))),
        ("publish_4KiB", Packet::Publish(publish(4096))),
        ("subscribe_10_filters", Packet::Subscribe(subscribe())),
    ];
    let mut group = c.benchmark_group("decode");
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        for (name, packet) in &cases {
            let input = stream(packet, version, PACKETS_PER_BATCH);
            group.throughput(Throughput::Bytes(input.len() as u64));
            group.bench_function(format!("{name}/{version:?}"), |b| {
                b.iter_batched(
                    || input.clone(),
                    |mut buf| {
                        let mut decoder = Decoder::client(version, usize::MAX);
                        while let Some(packet) = decoder.decode(&mut buf).unwrap() {
                            black_box(packet);
                        }
                    },
                    BatchSize::LargeInput,
                )
            });
        }
    }
    group.finish();
}

fn bench_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for version in [ProtocolVersion::V3_1_1, ProtocolVersion::V5] {
        for (name, publish) in [
            ("publish_64B", publish(64)),
            ("publish_4KiB", publish(4096)),
        ] {
            let packet_len = publish.encoded_len(version).unwrap();
            group.throughput(Throughput::Bytes(packet_len as u64));
            let mut out = BytesMut::with_capacity(packet_len * 2);
            // The broker's path: header per subscriber, payload shared.
            group.bench_function(format!("{name}_header_only/{version:?}"), |b| {
                b.iter(|| {
                    out.clear();
                    publish.encode_header(version, &mut out).unwrap();
                    black_box((&out, &publish.payload));
                })
            });
            group.bench_function(format!("{name}_full_copy/{version:?}"), |b| {
                b.iter(|| {
                    out.clear();
                    publish.encode(version, &mut out).unwrap();
                    black_box(&out);
                })
            });
        }
        let packet = Packet::Subscribe(subscribe());
        let mut out = BytesMut::with_capacity(1024);
        packet.encode(version, &mut out).unwrap();
        // Its own size, not the throughput of the PUBLISH benchmark before it.
        group.throughput(Throughput::Bytes(out.len() as u64));
        group.bench_function(format!("subscribe_10_filters/{version:?}"), |b| {
            b.iter(|| {
                out.clear();
                packet.encode(version, &mut out).unwrap();
                black_box(&out);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_decode, bench_encode);
criterion_main!(benches);
