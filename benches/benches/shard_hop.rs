//! The cross-shard hop: handing items to another shard through the mesh, the path of every
//! publish whose subscriber lives on another shard. The other shard runs a real event loop of
//! each backend and is idle between items, as a shard at a low message rate is, so a round trip
//! includes waking it (and the bench thread) up. The one-way figure sends 1000 items before
//! waiting once, as a busy shard's batches do. Figures and the command are in
//! `benches/RESULTS.md`.

use std::sync::{Arc, Mutex};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures_lite::future::block_on;
use mqtt_broker_shards::{mesh, start_shards, Backend, MeshEndpoint, ShardThreads};

/// Items sent per iteration of the one-way benchmark.
const BATCH: u64 = 1000;

/// What the bench thread sends; the echo shard answers `Ping` only.
#[derive(Clone, Copy, PartialEq)]
enum Item {
    Data,
    Ping,
    Stop,
}

/// Starts one shard on `backend` that answers every `Ping` with a `Ping`; returns the bench
/// thread's endpoint and the shard, which stops on `Stop`.
fn echo_shard(backend: Backend) -> (MeshEndpoint<Item>, ShardThreads) {
    let mut endpoints = mesh::<Item>(2, usize::MAX);
    let echo = Arc::new(Mutex::new(endpoints.pop()));
    let here = endpoints.pop().expect("two endpoints");
    let shard = start_shards(1, backend, false, move |_| {
        let echo = echo.lock().unwrap().take().expect("one echo shard");
        async move {
            while let Some((from, item)) = echo.recv().await {
                match item {
                    Item::Data => {}
                    Item::Ping => {
                        let _ = echo.send(from, Item::Ping, 1);
                    }
                    Item::Stop => break,
                }
            }
        }
    })
    .expect("echo shard starts");
    (here, shard)
}

fn backends() -> Vec<Backend> {
    let mut backends = vec![Backend::Epoll, Backend::Tokio];
    if Backend::Auto.resolve().ok() == Some(Backend::IoUring) {
        backends.insert(0, Backend::IoUring);
    }
    backends
}

fn hop(c: &mut Criterion) {
    let mut group = c.benchmark_group("hop");
    for backend in backends() {
        let (here, shard) = echo_shard(backend);
        let ping = || {
            let _ = here.send(1, Item::Ping, 1);
            block_on(here.recv()).expect("echo shard answers");
        };
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("round_trip", backend), |b| b.iter(ping));
        group.throughput(Throughput::Elements(BATCH));
        group.bench_function(BenchmarkId::new("one_way_1000", backend), |b| {
            b.iter(|| {
                for _ in 1..BATCH {
                    let _ = here.send(1, Item::Data, 1);
                }
                ping();
            })
        });
        let _ = here.send(1, Item::Stop, 1);
        shard.join().expect("echo shard stops");
    }
    group.finish();
}

criterion_group!(benches, hop);
criterion_main!(benches);
