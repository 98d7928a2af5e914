//! Who may connect and as whom: Mosquitto-compatible password files, SCRAM-SHA-512 for MQTT 5
//! enhanced authentication, and the `mqtt-broker passwd` command that writes password files.
//! What a client may read and write once connected is the core's business
//! (`broker::access`), since it is checked on every packet.

pub mod authenticator;
pub mod passwd;
pub mod password_file;
pub mod scram;
mod state;

pub use state::{SecurityOptions, SecurityState};
