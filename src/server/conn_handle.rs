//! `ConnHandle`, the runtime's side of one connection, shared by its reader and writer tasks
//! (`connection.rs`) and by its shard (`shard.rs`), which wakes the writer and marks the
//! connection closing or handed over when the core says so. A file of its own so that both can
//! use it while only the shard depends on the connection tasks, not the other way round.

use std::cell::{Cell, RefCell};

use mqtt_broker_shards::Io;
use tokio::sync::Notify;

use super::transport::StreamLayer;
use crate::broker::{AuthRequest, HandedOverConnect, ShardId};

/// The runtime's side of one connection, shared by its reader task, its writer task and `pump`.
pub(super) struct ConnHandle<I: Io> {
    /// The write half while no writer task runs. A writer task lives only while there is
    /// output to send, so an idle connection costs no task, and a connection can be put back
    /// together and moved to another shard between writes.
    pub writer: RefCell<Option<I::Writer>>,
    /// The broker has closed the connection: flush, then stop.
    pub closing: Cell<bool>,
    /// Wakes the reader when the connection must stop reading.
    pub stop_reading: Notify,
    /// Wakes a reader waiting for the writer task to end (a hand-over needs the write half).
    pub writer_done: Notify,
    /// Set when the broker moves the client to another shard.
    pub hand_over: RefCell<Option<(ShardId, HandedOverConnect)>>,
    /// The transport's layer, which both directions go through.
    pub layer: RefCell<StreamLayer>,
    /// Set when the broker asks who the client is: the reader has it checked.
    pub authenticate: RefCell<Option<AuthRequest>>,
}

impl<I: Io> ConnHandle<I> {
    pub fn new(writer: I::Writer, layer: StreamLayer) -> Self {
        ConnHandle {
            writer: RefCell::new(Some(writer)),
            closing: Cell::new(false),
            stop_reading: Notify::new(),
            writer_done: Notify::new(),
            hand_over: RefCell::new(None),
            layer: RefCell::new(layer),
            authenticate: RefCell::new(None),
        }
    }
}
