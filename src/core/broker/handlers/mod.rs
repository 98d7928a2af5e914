//! What the broker does with each packet, one file per concern, all as `impl Broker` blocks
//! over the state in `core.rs`.

mod connect;
mod deliver;
mod dispatch;
mod publish;
mod retained;
pub(in crate::broker) mod shared;
mod subscribe;
