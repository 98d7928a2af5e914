//! The broker's tunables, with the defaults of the original deployment guide and of Mosquitto
//! where the guide is silent. The runtime fills this from flags and the config file; the core
//! only reads it.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Connections across all shards; over it CONNACK says quota exceeded (v5 0x97) or server
    /// unavailable (3.x code 3).
    pub max_connections: usize,
    /// Largest packet accepted once a client is connected, in bytes (CONNACK Maximum Packet
    /// Size). The protocol's own limit is 268435460.
    pub max_packet_size: usize,
    /// Largest packet accepted before CONNECT has been processed: keeps an unauthenticated peer
    /// from making the broker buffer a huge claimed length.
    pub max_connect_packet_size: usize,
    /// How long a new connection may take to send CONNECT before it is closed.
    pub connect_timeout: Duration,
    /// Session expiry given to 3.x clients that connect with clean session 0 (seconds).
    pub session_expiry: u32,
    /// Upper bound on the session expiry a v5 client may ask for (seconds); `None` honours the
    /// client's value, as Mosquitto does by default.
    pub max_session_expiry: Option<u32>,
    /// Largest keepalive accepted (seconds). v5 clients asking for more (or for none) are told
    /// this value as Server Keep Alive; 3.x clients asking for more are refused, as in Mosquitto.
    pub max_keepalive: u16,
    /// Receive Maximum announced to v5 clients: QoS 1/2 publishes a client may have unacknowledged.
    pub receive_maximum: u16,
    /// Outbound QoS 1/2 messages in flight per client, before the client's own Receive Maximum.
    pub max_inflight: u16,
    /// Messages queued per session beyond the in-flight window (offline or slow clients).
    pub max_queued_messages: usize,
    /// Bytes of payload queued per session beyond the in-flight window.
    pub max_queued_bytes: usize,
    /// How long a connected subscriber whose queue is full may hold its publishers back without
    /// acknowledging anything before it counts as stopped: from then on messages beyond its
    /// queue limits are dropped for it instead. Zero never holds publishers back: a full queue
    /// drops at once, as in Mosquitto.
    pub stall_timeout: Duration,
    /// Bytes waiting in a connection's send buffer above which QoS 0 messages to it are dropped.
    pub max_outbound_buffer: usize,
    /// Bytes this core's send buffers (and, in the runtime, its partly received large packets)
    /// together may hold before QoS 0 messages go only to clients with less than
    /// `TIGHT_OUTBOUND_BUFFER` unsent: under memory pressure the slow readers are dropped for
    /// first, and the ones that keep up go on being served.
    pub buffer_budget: usize,
    /// Topic aliases a v5 client may use towards the broker (CONNACK Topic Alias Maximum).
    pub topic_alias_maximum: u16,
    /// Subscriptions one session may hold; 0 means no limit.
    pub max_subscriptions_per_client: usize,
    /// Levels a topic name or filter may have; 0 means no limit.
    pub max_topic_levels: usize,
    /// Whether retained messages are stored.
    pub retain_available: bool,
    /// Retained messages (topics) kept at most; a message for a new topic beyond it is not
    /// retained. 0 means no limit.
    pub max_retained_messages: usize,
    /// Payload and topic bytes of all retained messages at most, likewise. 0 means no limit.
    pub max_retained_bytes: usize,
    /// The highest QoS granted to subscriptions and accepted on publishes.
    pub maximum_qos: crate::protocol::QoS,
    /// Retained messages sent for one SUBSCRIBE filter; protects the broker from `#` over a huge
    /// retained set (FlashMQ#64). 0 means no limit.
    pub max_retained_per_subscribe: usize,
    /// How often queues and retained messages are swept for expired messages.
    pub expiry_sweep_interval: Duration,
    /// Emit journal records of persistent state through `Broker::poll_persist`. Off, the core
    /// keeps no journal (and a runtime without storage need not drain one).
    pub persistence: bool,
    /// Hold PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK until the records written for
    /// them are durable (`Broker::handle_persisted`), on this shard and every shard the message
    /// went to (`--fsync always`). Only with `persistence`.
    pub ack_after_durable: bool,
    /// Ask the runtime who each client is (`Event::Authenticate`) before accepting it. Off,
    /// every client is accepted as the user name it gives, and enhanced authentication is
    /// refused with 0x8C.
    pub authenticate: bool,
    /// How logs and metrics name each listener (`Origin::listener` indexes it), e.g.
    /// `mqtt://0.0.0.0:1883`.
    pub listener_names: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_connections: 10_000,
            // 32 MiB: room for the 16 MB messages browsers and dashboards send over WebSocket
            // and for firmware images, while a handful of clients sending the protocol's 256 MiB
            // at once can no longer claim gigabytes (Mosquitto allows 256 MiB, EMQX 1 MiB).
            max_packet_size: 32 * 1024 * 1024,
            max_connect_packet_size: 512 * 1024,
            connect_timeout: Duration::from_secs(20),
            session_expiry: 3600,
            max_session_expiry: None,
            max_keepalive: 65_535,
            receive_maximum: 65_535,
            max_inflight: 1024,
            max_queued_messages: 10_000,
            max_queued_bytes: 64 * 1024 * 1024,
            stall_timeout: Duration::from_secs(1),
            max_outbound_buffer: 4 * 1024 * 1024,
            buffer_budget: 256 * 1024 * 1024,
            topic_alias_maximum: 10,
            max_subscriptions_per_client: 0,
            max_topic_levels: 0,
            retain_available: true,
            max_retained_messages: 0,
            max_retained_bytes: 0,
            maximum_qos: crate::protocol::QoS::ExactlyOnce,
            max_retained_per_subscribe: 0,
            expiry_sweep_interval: Duration::from_secs(10),
            persistence: false,
            ack_after_durable: false,
            authenticate: false,
            listener_names: Vec::new(),
        }
    }
}

impl Config {
    /// The name of listener `index`, for logs and metrics.
    pub fn listener_name(&self, index: usize) -> &str {
        self.listener_names
            .get(index)
            .map_or("unnamed listener", String::as_str)
    }
}
