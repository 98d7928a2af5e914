//! Opening many connections at once, with a cap on how many handshakes are in progress.
//!
//! Why it exists: every scenario starts by opening connections (a handful for the pub/sub
//! scenarios, thousands for `connect-storm` and `idle`). Starting them all at once would
//! overflow the broker's accept backlog and measure SYN retransmits instead of the broker; one
//! at a time would take needlessly long. This runs `open(i)` for every index with at most
//! `concurrency` in progress, times each one, and gives the results back in index order.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Each handshake must finish within this, or it counts as failed.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// One opened (or failed) item, with how long opening it took.
pub struct Opened<T> {
    pub result: io::Result<T>,
    pub took: Duration,
}

pub async fn open_many<T, F, Fut>(count: usize, concurrency: usize, open: F) -> Vec<Opened<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = io::Result<T>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let open = Arc::new(open);
    let mut tasks = JoinSet::new();
    for index in 0..count {
        let permits = permits.clone();
        let open = open.clone();
        tasks.spawn(async move {
            let _permit = permits
                .acquire_owned()
                .await
                .expect("semaphore is never closed");
            let started = Instant::now();
            let result = match tokio::time::timeout(OPEN_TIMEOUT, open(index)).await {
                Ok(result) => result,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer within {OPEN_TIMEOUT:?}"),
                )),
            };
            (
                index,
                Opened {
                    result,
                    took: started.elapsed(),
                },
            )
        });
    }
    let mut slots: Vec<Option<Opened<T>>> = (0..count).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        let (index, opened) = joined.expect("an open task panicked");
        slots[index] = Some(opened);
    }
    slots
        .into_iter()
        .map(|slot| slot.expect("every index was opened"))
        .collect()
}

/// The results of [`open_many`], or the first error (with how many failed).
pub fn all_ok<T>(opened: Vec<Opened<T>>, what: &str) -> io::Result<Vec<T>> {
    let total = opened.len();
    let mut ok = Vec::with_capacity(total);
    let mut first_error = None;
    let mut failed = 0;
    for item in opened {
        match item.result {
            Ok(value) => ok.push(value),
            Err(error) => {
                failed += 1;
                first_error.get_or_insert(error);
            }
        }
    }
    match first_error {
        None => Ok(ok),
        Some(error) => Err(io::Error::new(
            error.kind(),
            format!("{failed} of {total} {what} failed; first: {error}"),
        )),
    }
}

/// Closes every connection (DISCONNECT, then wait for the broker to close), `concurrency` at a
/// time.
pub async fn close_all(conns: Vec<super::conn::Conn>, concurrency: usize) {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for conn in conns {
        let permits = permits.clone();
        tasks.spawn(async move {
            let _permit = permits
                .acquire_owned()
                .await
                .expect("semaphore is never closed");
            conn.close().await;
        });
    }
    while tasks.join_next().await.is_some() {}
}
