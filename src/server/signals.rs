//! The signals the broker answers: SIGINT and SIGTERM shut it down gracefully; SIGHUP reads the
//! password file, the ACL file and the TLS certificate and key again without a restart, as
//! Mosquitto does. Connections stay: new credentials and a new certificate apply to new
//! connections, the ACL to every session within a timer tick. A file that fails to load is
//! logged and the version before stays in force.

use std::sync::mpsc;
use std::sync::Arc;

use tracing::{info, warn};

use super::transport::LayerMaker;
use crate::security::SecurityState;

/// What SIGHUP reloads.
pub(crate) struct Reload {
    pub security: Arc<SecurityState>,
    pub layers: LayerMaker,
}

impl Reload {
    fn run(&self) {
        info!("SIGHUP: reloading the security files");
        self.security.reload();
        match self.layers.reload() {
            Ok(0) => {}
            Ok(listeners) => info!(listeners, "TLS certificates and keys reloaded"),
            Err(error) => warn!("{error}; the TLS certificate loaded before stays in force"),
        }
    }
}

/// Starts the thread that sends on `stop` at SIGINT or SIGTERM and reloads at SIGHUP. Call it
/// before announcing the listeners, so a signal sent as soon as a supervisor sees "listening
/// on" is handled rather than killing the process.
#[cfg(unix)]
pub(crate) fn handle_signals(stop: mpsc::Sender<()>, reload: Reload) -> Result<(), String> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    use signal_hook::iterator::Signals;

    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP]).map_err(|error| error.to_string())?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal == SIGHUP {
                    reload.run();
                } else {
                    let _ = stop.send(());
                }
            }
        })
        .map_err(|error| error.to_string())?;
    Ok(())
}

/// Ctrl-C shuts down; there is no SIGHUP here, so the files are read at start only.
#[cfg(not(unix))]
pub(crate) fn handle_signals(stop: mpsc::Sender<()>, _reload: Reload) -> Result<(), String> {
    ctrlc::set_handler(move || {
        let _ = stop.send(());
    })
    .map_err(|error| error.to_string())
}
