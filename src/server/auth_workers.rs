//! The threads that check clients' credentials for the shards. A password check hashes on
//! purpose for milliseconds; on a shard it would stall every client the shard serves, here it
//! costs the one connecting client its wait. A connection's reader hands its request over and
//! awaits the verdict on a channel any runtime can await.

use std::num::NonZeroUsize;
use std::thread;

use tracing::warn;

use crate::broker::{AuthRequest, AuthVerdict};
use crate::protocol::ReasonCode;
use crate::security::authenticator::{Checker, Exchange};

struct Job {
    checker: Checker,
    request: AuthRequest,
    certificate_name: Option<String>,
    exchange: Exchange,
    verdict: flume::Sender<(AuthVerdict, Exchange)>,
}

/// The pool; its threads end when it is dropped.
pub(crate) struct AuthWorkers {
    jobs: flume::Sender<Job>,
}

/// Threads at most: a connect storm should not take every core from the shards.
const MAX_THREADS: usize = 4;

impl AuthWorkers {
    pub fn start() -> AuthWorkers {
        let threads = thread::available_parallelism()
            .map_or(1, NonZeroUsize::get)
            .min(MAX_THREADS);
        let (jobs, queue) = flume::unbounded::<Job>();
        for index in 0..threads {
            let queue = queue.clone();
            let started = thread::Builder::new()
                .name(format!("auth-{index}"))
                .spawn(move || {
                    for mut job in queue.iter() {
                        let verdict = job.checker.check(
                            &job.request,
                            job.certificate_name.as_deref(),
                            &mut job.exchange,
                        );
                        // The client may have gone meanwhile; then nobody waits.
                        let _ = job.verdict.send((verdict, job.exchange));
                    }
                });
            if let Err(error) = started {
                warn!(%error, "cannot start an authentication thread");
            }
        }
        AuthWorkers { jobs }
    }

    /// The verdict on `request`, once a thread has checked it.
    pub async fn check(
        &self,
        checker: Checker,
        request: AuthRequest,
        certificate_name: Option<String>,
        exchange: Exchange,
    ) -> (AuthVerdict, Exchange) {
        let (verdict, answer) = flume::bounded(1);
        let job = Job {
            checker,
            request,
            certificate_name,
            exchange,
            verdict,
        };
        if self.jobs.send(job).is_ok() {
            if let Ok(answer) = answer.recv_async().await {
                return answer;
            }
        }
        (AuthVerdict::Refused(ReasonCode::SERVER_UNAVAILABLE), None)
    }
}
