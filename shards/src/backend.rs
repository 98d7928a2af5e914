//! Choosing, probing and starting the shards' event loops.

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::thread::JoinHandle;

use tracing::{info, warn};

/// The event loop each shard runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// io_uring when the kernel allows it, epoll otherwise (Linux); tokio elsewhere.
    Auto,
    /// monoio on io_uring (Linux 5.6+, not blocked by seccomp or sysctl).
    IoUring,
    /// monoio's epoll ("legacy") driver.
    Epoll,
    /// A tokio current-thread runtime per shard; the only backend on Windows and macOS.
    Tokio,
    /// glommio (io_uring), for runtime latency comparisons; built with the `glommio` feature.
    Glommio,
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "auto" => Ok(Backend::Auto),
            "io-uring" | "io_uring" | "iouring" => Ok(Backend::IoUring),
            "epoll" => Ok(Backend::Epoll),
            "tokio" => Ok(Backend::Tokio),
            "glommio" if cfg!(all(feature = "glommio", target_os = "linux")) => Ok(Backend::Glommio),
            "glommio" => Err(
                "the glommio backend is not in this build: rebuild with `--features glommio` (Linux), or use auto, io-uring, epoll or tokio"
                    .into(),
            ),
            other => Err(format!(
                "unknown runtime {other:?}; expected auto, io-uring, epoll or tokio"
            )),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Auto => "auto",
            Backend::IoUring => "io-uring",
            Backend::Epoll => "epoll",
            Backend::Tokio => "tokio",
            Backend::Glommio => "glommio",
        })
    }
}

/// Why the requested backend cannot run here.
#[derive(Debug)]
pub struct BackendError(pub String);

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BackendError {}

impl Backend {
    /// The concrete backend for `self` on this machine; `Auto` probes io_uring once.
    pub fn resolve(self) -> Result<Backend, BackendError> {
        match self {
            Backend::Auto if cfg!(target_os = "linux") => match probe_io_uring() {
                Ok(()) => {
                    info!("runtime: io-uring (auto: io_uring is available)");
                    Ok(Backend::IoUring)
                }
                Err(reason) => {
                    warn!("runtime: epoll (auto: io_uring unavailable: {reason})");
                    Ok(Backend::Epoll)
                }
            },
            Backend::Auto | Backend::Tokio => {
                info!("runtime: tokio");
                Ok(Backend::Tokio)
            }
            Backend::IoUring => match probe_io_uring() {
                Ok(()) => {
                    info!("runtime: io-uring");
                    Ok(Backend::IoUring)
                }
                Err(reason) => Err(BackendError(format!(
                    "io_uring is not available ({reason}); start with --runtime epoll or --runtime auto"
                ))),
            },
            Backend::Epoll if cfg!(target_os = "linux") => {
                info!("runtime: epoll");
                Ok(Backend::Epoll)
            }
            Backend::Epoll => Err(BackendError(
                "the epoll backend exists only on Linux; use --runtime tokio".into(),
            )),
            // glommio panics when it cannot set up io_uring, so check first, then try it.
            Backend::Glommio => match probe_io_uring().and_then(|()| probe_glommio()) {
                Ok(()) => {
                    info!("runtime: glommio");
                    Ok(Backend::Glommio)
                }
                Err(reason) => Err(BackendError(format!(
                    "glommio cannot start ({reason}); start with --runtime auto"
                ))),
            },
        }
    }
}

/// Whether this process may create an io_uring instance.
#[cfg(target_os = "linux")]
fn probe_io_uring() -> Result<(), String> {
    monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
        .build()
        .map(drop)
        .map_err(|error| error.to_string())
}

#[cfg(all(feature = "glommio", target_os = "linux"))]
fn probe_glommio() -> Result<(), String> {
    std::panic::catch_unwind(|| {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .map(drop)
            .map_err(|error| error.to_string())
    })
    .unwrap_or_else(|_| Err("glommio panicked while starting".into()))
}

#[cfg(not(all(feature = "glommio", target_os = "linux")))]
fn probe_glommio() -> Result<(), String> {
    Err("this build has no glommio backend".into())
}

#[cfg(not(target_os = "linux"))]
fn probe_io_uring() -> Result<(), String> {
    Err("io_uring exists only on Linux".into())
}

/// The running shard threads.
pub struct ShardThreads {
    handles: Vec<JoinHandle<()>>,
}

impl ShardThreads {
    /// Waits for every shard to finish; a shard that panicked is reported.
    pub fn join(self) -> Result<(), BackendError> {
        let mut failed = 0;
        for handle in self.handles {
            if handle.join().is_err() {
                failed += 1;
            }
        }
        match failed {
            0 => Ok(()),
            n => Err(BackendError(format!("{n} shard thread(s) panicked"))),
        }
    }
}

/// Starts `count` shard threads running `backend` (already resolved), each pinned to a core when
/// `pin` is set, and runs `shard_main(index)` on each until it completes, `index` being the
/// shard's position among them, from 0 (the broker core's `ShardId`).
pub fn start_shards<F, Fut>(
    count: usize,
    backend: Backend,
    pin: bool,
    shard_main: F,
) -> Result<ShardThreads, BackendError>
where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let cores = core_ids();
    let mut handles = Vec::with_capacity(count);
    for index in 0..count {
        let shard_main = shard_main.clone();
        let core = if pin && !cores.is_empty() {
            Some(cores[index % cores.len()])
        } else {
            None
        };
        let handle = std::thread::Builder::new()
            .name(format!("shard-{index}"))
            .spawn(move || {
                if let Some(core) = core {
                    pin_to(core);
                }
                run_event_loop(backend, shard_main(index));
            })
            .map_err(|error| BackendError(format!("cannot start shard thread: {error}")))?;
        handles.push(handle);
    }
    Ok(ShardThreads { handles })
}

fn run_event_loop<Fut: Future<Output = ()>>(backend: Backend, future: Fut) {
    match backend {
        #[cfg(target_os = "linux")]
        Backend::IoUring => {
            match monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .enable_timer()
                .build()
            {
                Ok(mut runtime) => runtime.block_on(future),
                Err(error) => tracing::error!("cannot start io_uring event loop: {error}"),
            }
        }
        #[cfg(target_os = "linux")]
        Backend::Epoll => {
            match monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build()
            {
                Ok(mut runtime) => runtime.block_on(future),
                Err(error) => tracing::error!("cannot start epoll event loop: {error}"),
            }
        }
        #[cfg(all(feature = "glommio", target_os = "linux"))]
        Backend::Glommio => {
            // Pinning is done by `start_shards`; glommio must not re-pin.
            match glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound).make() {
                Ok(executor) => executor.run(future),
                Err(error) => tracing::error!("cannot start glommio event loop: {error}"),
            }
        }
        _ => match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => {
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, future);
            }
            Err(error) => tracing::error!("cannot start tokio event loop: {error}"),
        },
    }
}

#[cfg(target_os = "linux")]
fn core_ids() -> Vec<core_affinity::CoreId> {
    core_affinity::get_core_ids().unwrap_or_default()
}

#[cfg(target_os = "linux")]
fn pin_to(core: core_affinity::CoreId) {
    if !core_affinity::set_for_current(core) {
        warn!(core = core.id, "could not pin shard thread to its core");
    }
}

#[cfg(not(target_os = "linux"))]
fn core_ids() -> Vec<usize> {
    Vec::new()
}

#[cfg(not(target_os = "linux"))]
fn pin_to(_: usize) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_runtime_names_and_explains_unknown_ones() {
        assert_eq!("io-uring".parse::<Backend>(), Ok(Backend::IoUring));
        assert_eq!("epoll".parse::<Backend>(), Ok(Backend::Epoll));
        if cfg!(not(feature = "glommio")) {
            assert!("glommio"
                .parse::<Backend>()
                .unwrap_err()
                .contains("--features glommio"));
        }
        assert!("kqueue"
            .parse::<Backend>()
            .unwrap_err()
            .contains("expected auto"));
    }

    /// Two tasks that never run out of work take turns: neither ever gets two turns ahead of
    /// the other, however the loop orders a round. And a sleep beside them ends while they are
    /// still busy, not only once they stop. (monoio once reran a yielding task ahead of all
    /// others and fired timers only when idle, so a flooded shard stopped reading its clients.)
    /// Both are checked by the order of events, not by how fast anything went.
    fn busy_tasks_share_the_loop_and_timers_fire<I: crate::Io>(backend: Backend) {
        use std::cell::Cell;
        use std::rc::Rc;
        use std::sync::{Arc, Mutex};
        use std::time::{Duration, Instant};

        /// What the loop saw, taken when the sleep ended.
        struct Seen {
            turns: [u64; 2],
            /// The most turns one task was ever ahead of the other.
            lead: u64,
            /// Whether a busy task had given up (turn cap or hang guard) before the sleep ended.
            gave_up: bool,
        }
        /// Turns each task takes at most: a bound on a loop whose timers never fire while it
        /// is busy, far more than a 20 ms sleep needs on any machine.
        const TURN_CAP: u64 = 5_000_000;

        let result = Arc::new(Mutex::new(None));
        let out = result.clone();
        run_event_loop(backend, async move {
            let stop = Rc::new(Cell::new(false));
            let gave_up = Rc::new(Cell::new(false));
            let turns = Rc::new([Cell::new(0u64), Cell::new(0u64)]);
            let lead = Rc::new(Cell::new(0u64));
            // Only a guard against hanging: the assertions below never depend on it.
            let hang_guard = Instant::now() + Duration::from_secs(30);
            for task in 0..2 {
                let (stop, gave_up) = (stop.clone(), gave_up.clone());
                let (turns, lead) = (turns.clone(), lead.clone());
                I::spawn(async move {
                    while !stop.get() {
                        if turns[task].get() >= TURN_CAP || Instant::now() >= hang_guard {
                            gave_up.set(true);
                            return;
                        }
                        turns[task].set(turns[task].get() + 1);
                        let ahead = turns[task].get().saturating_sub(turns[1 - task].get());
                        lead.set(lead.get().max(ahead));
                        I::yield_now().await;
                    }
                });
            }
            I::sleep(Duration::from_millis(20)).await;
            let seen = Seen {
                turns: [turns[0].get(), turns[1].get()],
                lead: lead.get(),
                gave_up: gave_up.get(),
            };
            stop.set(true);
            *out.lock().unwrap() = Some(seen);
        });
        let seen = result.lock().unwrap().take().expect("the loop ran");
        let Seen {
            turns,
            lead,
            gave_up,
        } = seen;
        assert!(
            !gave_up,
            "{backend}: the 20 ms sleep ended only after the busy tasks gave up (turns {turns:?}): \
             timers do not fire on a busy loop"
        );
        assert!(
            turns[0] > 0 && turns[1] > 0,
            "{backend}: both busy tasks ran before the sleep ended: turns {turns:?}"
        );
        assert!(
            lead <= 1,
            "{backend}: a yielding task got {lead} turns ahead of the other busy task (turns \
             {turns:?})"
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn epoll_yields_fairly() {
        busy_tasks_share_the_loop_and_timers_fire::<crate::MonoioIo>(Backend::Epoll);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn io_uring_yields_fairly() {
        if io_uring_runs_here() {
            busy_tasks_share_the_loop_and_timers_fire::<crate::MonoioIo>(Backend::IoUring);
        }
    }

    /// Whether io_uring works here. Where it does not, its cases fail unless the run said it
    /// expects that (`MQTT_BROKER_TESTS_WITHOUT_IO_URING`, set by `.ci/test-all.sh` after its
    /// probe): a case that did not run is never counted as passed unseen.
    #[cfg(target_os = "linux")]
    fn io_uring_runs_here() -> bool {
        match probe_io_uring() {
            Ok(()) => true,
            Err(error) => {
                assert!(
                    std::env::var_os("MQTT_BROKER_TESTS_WITHOUT_IO_URING").is_some(),
                    "io_uring is unavailable here ({error}); set \
                     MQTT_BROKER_TESTS_WITHOUT_IO_URING=1 to run without its cases"
                );
                eprintln!("SKIPPED: io_uring is unavailable here");
                false
            }
        }
    }

    #[test]
    fn tokio_yields_fairly() {
        busy_tasks_share_the_loop_and_timers_fire::<crate::TokioIo>(Backend::Tokio);
    }

    #[cfg(all(feature = "glommio", target_os = "linux"))]
    #[test]
    fn glommio_yields_fairly() {
        if io_uring_runs_here() {
            busy_tasks_share_the_loop_and_timers_fire::<crate::GlommioIo>(Backend::Glommio);
        }
    }

    #[test]
    fn auto_always_resolves() {
        let backend = Backend::Auto.resolve().unwrap();
        assert_ne!(backend, Backend::Auto);
    }
}
