//! What the broker does with each input, one file per concern, all as `impl Broker` blocks
//! over the state in `core.rs`, whose front door calls them.

mod authenticate;
mod connect;
mod deliver;
mod dispatch;
mod lifecycle;
mod publish;
mod retained;
pub(in crate::broker) mod shared;
mod subscribe;
