//! The operator's side of configuration: the `mqtt-broker` command line, the TOML config file and
//! logging setup. It exists so that defaults, flags, file keys and their validation live in one
//! place and cannot drift apart, and so that every mistake is caught before a socket is bound and
//! reported as one line naming the flag or key to fix. The broker core never sees any of this: it
//! gets a plain [`crate::broker::Config`] inside the [`ServerOptions`] of [`Settings::server`].
//!
//! Precedence is defaults, then the file given with `--config`, then flags: every flag is also a
//! file key with the same name (`max-connections = 5000`), and a flag given on the command line
//! wins over the file.
//!
//! Each setting is one entry of the `settings!` list below, in the manner of ripgrep's flag
//! definitions: the entry's field name is the flag and the key (dashed), its doc comment is the
//! `--help` text with the default, its reader (`int`, `seconds`, ...) does the precedence and the
//! checks, and its target is where the value lands. The default is the target's value in
//! [`Settings::default`], so it is written once, beside the code that uses it. README's table and
//! `ops/mqtt-broker.toml` are checked against `--help` by the tests at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use argh::FromArgs;
use mqtt_broker_persistence::DEFAULT_FSYNC_INTERVAL;
use mqtt_broker_shards::Backend;
use serde::de::DeserializeOwned;
use toml::Spanned;
use tracing_subscriber::EnvFilter;

use crate::protocol::decoder::MAX_PACKET_SIZE;
use crate::protocol::QoS;
use crate::server::{Fsync, Listener, ListenerSettings, ServerOptions, Transport};

/// The exit status for a [`SettingsError`] (sysexits' EX_CONFIG, for `ExitCode::from`): the
/// systemd unit does not restart on it, since a restart cannot fix a wrong setting.
pub const EXIT_CONFIG: u8 = 78;

/// The largest packet the protocol can express, in the integer type file values are checked in.
const PROTOCOL_MAX_PACKET_SIZE: i64 = MAX_PACKET_SIZE as i64;

/// Expands the list of settings into the flags ([`Args`]), the file keys ([`SETTING_NAMES`])
/// and the one statement per setting of [`Settings::resolve`]. An entry reads like a field of
/// `Args` (doc comment, argh attribute, name and flag type, spelled out for argh to see an
/// `Option` or `Vec`) followed by `=> target = reader(check)`.
macro_rules! settings {
    ($(
        $(#[$attribute:meta])+
        $name:ident: $flag:ident$(<$value:ty>)? =>
            $($target:ident).+ = $reader:ident($($check:expr)?);
    )+) => {
        /// A sharded, thread-per-core MQTT 3.1 / 3.1.1 / 5.0 broker. Settings come from the
        /// defaults, then the --config file, then these flags; every flag is also a config file
        /// key with the same name (for example `max-connections = 5000`). `mqtt-broker passwd
        /// FILE USER` writes password files (see `mqtt-broker passwd --help`).
        #[derive(FromArgs, Debug, Default, Clone, PartialEq)]
        pub struct Args {
            /// TOML config file; its keys are the flag names without the dashes in front
            /// (default: none)
            #[argh(option, arg_name = "FILE")]
            pub config: Option<PathBuf>,
            $(
                $(#[$attribute])+
                pub $name: $flag$(<$value>)?,
            )+
        }

        /// Every setting by its field name; the flag and the file key are its dashed form.
        const SETTING_NAMES: &[&str] = &[$(stringify!($name)),+];

        impl Settings {
            /// Each setting in turn: flag, else file, else the target's default, checked.
            fn read_layers(&mut self, args: Args, layers: &Layers) -> Result<(), SettingsError> {
                $(
                    let default = self.$($target).+.clone();
                    self.$($target).+ =
                        layers.given(stringify!($name), args.$name).$reader($($check,)? default)?;
                )+
                Ok(())
            }
        }
    };
}

settings! {
    /// address to accept MQTT over TLS on (usually port 8883), with --tls-cert and --tls-key;
    /// repeat for several, and flags replace the file's list (default: none)
    #[argh(option, arg_name = "ADDR:PORT")]
    listen_tls: Vec<SocketAddr> => server.listeners = listeners(Transport::Tls);

    /// address to accept MQTT over WebSocket on (ws://, often port 8080); repeat for several,
    /// and flags replace the file's list (default: none)
    #[argh(option, arg_name = "ADDR:PORT")]
    listen_ws: Vec<SocketAddr> => server.listeners = listeners(Transport::Ws);

    /// address to accept MQTT over WebSocket over TLS on (wss://, often port 8081), with
    /// --tls-cert and --tls-key; repeat for several, and flags replace the file's list
    /// (default: none)
    #[argh(option, arg_name = "ADDR:PORT")]
    listen_wss: Vec<SocketAddr> => server.listeners = listeners(Transport::Wss);

    /// the only request path WebSocket clients may connect to, such as /mqtt; others get 404
    /// (default: any path)
    #[argh(option, arg_name = "PATH")]
    ws_path: Option<String> => server.ws_path = optional_value();

    /// certificate chain the TLS listeners present, PEM, the server's own certificate first
    /// (default: none)
    #[argh(option, arg_name = "FILE")]
    tls_cert: Option<PathBuf> => server.tls.cert = optional_value();

    /// private key of --tls-cert, PEM: PKCS#8, PKCS#1 (RSA) or SEC1 (EC) (default: none)
    #[argh(option, arg_name = "FILE")]
    tls_key: Option<PathBuf> => server.tls.key = optional_value();

    /// certificate authorities, PEM, that TLS clients' certificates must chain to; a client
    /// that presents another certificate is refused in the handshake, and without this no
    /// client certificate is asked for (default: none)
    #[argh(option, arg_name = "FILE")]
    tls_client_ca: Option<PathBuf> => server.tls.client_ca = optional_value();

    /// with --tls-client-ca, refuse TLS clients that present no certificate (file key:
    /// tls-require-client-cert = true) (default: off)
    #[argh(switch)]
    tls_require_client_cert: bool => server.tls.require_client_cert = value();

    /// with --tls-client-ca, a client's user name is the common name (CN) of the certificate
    /// it presented, and it needs no password; clients without one are refused (file key:
    /// tls-identity-as-username = true) (default: off)
    #[argh(switch)]
    tls_identity_as_username: bool => server.security.identity_as_username = value();

    /// password file in Mosquitto's format (user:$7$... or $6$...), as `mqtt-broker passwd`
    /// or mosquitto_passwd write it; clients must give a user name and password in it
    /// (default: none)
    #[argh(option, arg_name = "FILE")]
    password_file: Option<PathBuf> => server.security.password_file = optional_value();

    /// whether clients that give no user name are served (default: true, unless
    /// --password-file or --tls-identity-as-username is given)
    #[argh(option, arg_name = "BOOL")]
    allow_anonymous: Option<bool> => server.security.allow_anonymous = optional_value();

    /// ACL file in Mosquitto's format (topic, user and pattern lines): what each client may
    /// read and write; without it, everything (default: none)
    #[argh(option, arg_name = "FILE")]
    acl_file: Option<PathBuf> => server.security.acl_file = optional_value();

    /// address to accept MQTT over plain TCP on; repeat for several, and flags replace the
    /// file's list (default: 0.0.0.0:1883)
    #[argh(option, arg_name = "ADDR:PORT")]
    listen: Vec<SocketAddr> => server.listeners = listeners(Transport::Tcp);

    /// directory for persistent sessions and retained messages (default: ./data)
    #[argh(option, arg_name = "DIR")]
    data_dir: Option<PathBuf> => server.data_dir = value();

    /// when the journal is flushed to disk: always (acknowledgements wait for it), interval or
    /// never (default: interval)
    #[argh(option, arg_name = "MODE")]
    fsync: Option<String> => server.persistence.fsync = fsync_mode();

    /// milliseconds between journal flushes with --fsync interval (default: 1000)
    #[argh(option, arg_name = "MS")]
    fsync_interval_ms: Option<u64> => server.persistence.fsync = fsync_interval();

    /// seconds between snapshots of each shard's state (default: 300)
    #[argh(option, arg_name = "SECONDS")]
    snapshot_interval: Option<u64> => server.persistence.snapshot_interval =
        seconds(Bound::AtLeast(1));

    /// journal bytes per shard after which a snapshot is taken early (default: 67108864)
    #[argh(option, arg_name = "BYTES")]
    journal_max_bytes: Option<u64> => server.persistence.journal_max_bytes =
        int(Bound::AtLeast(1));

    /// refuse to start when the data directory is damaged, instead of setting the damaged files
    /// aside and starting with what is intact (file key: strict-recovery = true) (default: off)
    #[argh(switch)]
    strict_recovery: bool => server.persistence.strict_recovery = value();

    /// shard threads, each with its own event loop (default: one per available core)
    #[argh(option, arg_name = "N")]
    shards: Option<usize> => server.shards = int(Bound::AtLeast(1));

    /// event loop: auto, io-uring, epoll or tokio; auto uses io_uring when the kernel allows it
    /// and falls back to epoll (default: auto)
    #[argh(option, arg_name = "RUNTIME")]
    runtime: Option<Backend> => server.backend = parsed();

    /// connections accepted across all shards before new ones are refused (default: 10000)
    #[argh(option, arg_name = "N")]
    max_connections: Option<usize> => server.broker.max_connections = int(Bound::AtLeast(1));

    /// new connections per second from one source address (a burst of as many is allowed);
    /// more are closed before anything is read from them, 0 = no limit (default: 0)
    #[argh(option, arg_name = "N")]
    max_connection_rate: Option<u32> => server.max_connection_rate = int(Bound::U32);

    /// bytes each connection reads from its socket at a time; at least 512 (default: 8192)
    #[argh(option, arg_name = "BYTES")]
    read_buffer_size: Option<usize> => server.read_buffer_size = int(Bound::AtLeast(512));

    /// read buffers allocated at start, spread over the shards (default: 1000)
    #[argh(option, arg_name = "N")]
    initial_pool_size: Option<usize> => server.initial_pool_size = int(Bound::AtLeast(0));

    /// seconds a new connection may take to send CONNECT before it is closed, 1 to 3600
    /// (default: 20)
    #[argh(option, arg_name = "SECONDS")]
    connect_timeout: Option<u64> => server.broker.connect_timeout =
        seconds(Bound::Between(1, 3600));

    /// seconds a disconnected MQTT 3.x session with clean session 0 is kept (default: 3600)
    #[argh(option, arg_name = "SECONDS")]
    session_expiry: Option<u32> => server.broker.session_expiry = int(Bound::U32);

    /// upper bound on the session expiry an MQTT 5 client may ask for, in seconds (default: the
    /// client's value is honoured)
    #[argh(option, arg_name = "SECONDS")]
    max_session_expiry: Option<u32> => server.broker.max_session_expiry = optional(Bound::U32);

    /// largest keepalive accepted, in seconds, 1 to 65535 (default: 65535)
    #[argh(option, arg_name = "SECONDS")]
    max_keepalive: Option<u16> => server.broker.max_keepalive = int(Bound::NONZERO_U16);

    /// seconds between sweeps of queued and retained messages for expired ones, 1 to 3600
    /// (default: 10)
    #[argh(option, arg_name = "SECONDS")]
    expiry_sweep_interval: Option<u64> => server.broker.expiry_sweep_interval =
        seconds(Bound::Between(1, 3600));

    /// largest packet accepted, in bytes, 64 to 268435460 (the protocol's limit); announced
    /// to MQTT 5 clients (default: 33554432)
    #[argh(option, arg_name = "BYTES")]
    max_packet_size: Option<usize> => server.broker.max_packet_size =
        int(Bound::Between(64, PROTOCOL_MAX_PACKET_SIZE));

    /// outbound QoS 1/2 messages in flight to one client, before its own receive maximum, 1 to
    /// 65535 (default: 1024)
    #[argh(option, arg_name = "N")]
    max_inflight: Option<u16> => server.broker.max_inflight = int(Bound::NONZERO_U16);

    /// messages queued per session beyond the in-flight window (default: 10000)
    #[argh(option, arg_name = "N")]
    max_queued_messages: Option<usize> => server.broker.max_queued_messages =
        int(Bound::AtLeast(0));

    /// payload bytes queued per session beyond the in-flight window (default: 67108864)
    #[argh(option, arg_name = "BYTES")]
    max_queued_bytes: Option<usize> => server.broker.max_queued_bytes = int(Bound::AtLeast(0));

    /// bytes waiting in a connection's send buffer above which QoS 0 messages to it are
    /// dropped, 1024 to 1073741824 (default: 4194304)
    #[argh(option, arg_name = "BYTES")]
    max_outbound_buffer: Option<usize> => server.broker.max_outbound_buffer =
        int(Bound::Between(1024, 1 << 30));

    /// milliseconds a connected subscriber with a full queue may hold its publishers'
    /// acknowledgements back while acknowledging nothing itself; after that, messages beyond
    /// its queue are dropped for it. 0 never holds publishers back: a full queue drops at once
    /// (default: 1000)
    #[argh(option, arg_name = "MS")]
    subscriber_stall_timeout_ms: Option<u64> => server.broker.stall_timeout =
        millis(Bound::Between(0, 3_600_000));

    /// bytes all send buffers and partly received large packets together may hold; beyond it
    /// QoS 0 messages go only to clients with less than 64 KiB unsent and large packets wait
    /// before they grow their buffer, at least 1048576 (default: 268435456)
    #[argh(option, arg_name = "BYTES")]
    buffer_budget: Option<usize> => server.broker.buffer_budget = int(Bound::AtLeast(1 << 20));

    /// unacknowledged QoS 1/2 publishes an MQTT 5 client may send the broker, 1 to 65535
    /// (default: 65535)
    #[argh(option, arg_name = "N")]
    receive_maximum: Option<u16> => server.broker.receive_maximum = int(Bound::NONZERO_U16);

    /// topic aliases an MQTT 5 client may use towards the broker; 0 disables them (default: 10)
    #[argh(option, arg_name = "N")]
    topic_alias_maximum: Option<u16> => server.broker.topic_alias_maximum = int(Bound::U16);

    /// subscriptions one session may hold; 0 means no limit (default: 0)
    #[argh(option, arg_name = "N")]
    max_subscriptions_per_client: Option<usize> =>
        server.broker.max_subscriptions_per_client = int(Bound::AtLeast(0));

    /// levels a topic name or filter may have; 0 means no limit (default: 0)
    #[argh(option, arg_name = "N")]
    max_topic_levels: Option<usize> => server.broker.max_topic_levels = int(Bound::AtLeast(0));

    /// retained messages sent for one SUBSCRIBE filter; 0 means no limit (default: 0)
    #[argh(option, arg_name = "N")]
    max_retained_per_subscribe: Option<usize> =>
        server.broker.max_retained_per_subscribe = int(Bound::AtLeast(0));

    /// topics with a retained message kept at most; a message for a new topic beyond it is not
    /// retained (MQTT 5 QoS 1/2: refused with 0x97); 0 means no limit (default: 0)
    #[argh(option, arg_name = "N")]
    max_retained_messages: Option<usize> => server.broker.max_retained_messages =
        int(Bound::AtLeast(0));

    /// payload and topic bytes of all retained messages at most, likewise; 0 means no limit
    /// (default: 0)
    #[argh(option, arg_name = "BYTES")]
    max_retained_bytes: Option<usize> => server.broker.max_retained_bytes =
        int(Bound::AtLeast(0));

    /// whether retained messages are stored: true or false (default: true)
    #[argh(option, arg_name = "BOOL")]
    retain_available: Option<bool> => server.broker.retain_available = value();

    /// highest QoS granted to subscriptions and accepted on publishes: 0, 1 or 2 (default: 2)
    #[argh(option, arg_name = "QOS")]
    maximum_qos: Option<u8> => server.broker.maximum_qos = qos();

    /// log level (error, warn, info, debug, trace, off) or a tracing filter such as
    /// "info,mqtt_broker::server=debug"; RUST_LOG overrides it (default: info)
    #[argh(option, arg_name = "LEVEL")]
    log_level: Option<String> => logging = log_filter();

    /// log lines as text for people or as JSON objects, one per line, for log collectors:
    /// text or json (default: text)
    #[argh(option, arg_name = "FORMAT")]
    log_format: Option<LogFormat> => log_format = parsed();

    /// seconds between publications of the $SYS topics (Mosquitto's, and per shard under
    /// $SYS/broker/shards/N/), 0 to 86400; 0 turns them off (default: 10)
    #[argh(option, arg_name = "SECONDS")]
    sys_interval: Option<u64> => server.sys_interval = seconds(Bound::Between(0, 86400));

    /// address to serve /metrics (Prometheus/OpenMetrics text), /healthz and /readyz on over
    /// HTTP (default: none)
    #[argh(option, arg_name = "ADDR:PORT")]
    metrics_listen: Option<SocketAddr> => server.metrics_listen = optional_value();

    /// don't pin shard threads to cores, e.g. when sharing the machine (file key: no-pin = true)
    #[argh(switch)]
    no_pin: bool => server.pin_cores = negated();
}

/// The resolved settings the broker runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The file the settings were read from, if any; for the startup log.
    pub config_file: Option<PathBuf>,
    /// What to log: a level or an `EnvFilter` directive list, already checked to parse.
    pub logging: String,
    pub log_format: LogFormat,
    /// Everything [`crate::server::run`] (and the blocking build) needs.
    pub server: ServerOptions,
}

impl Default for Settings {
    /// The defaults of every setting: the deployment's (port 1883, `./data`, one shard per core,
    /// ...) in [`ServerOptions::default`], the core's in [`crate::broker::Config::default`].
    fn default() -> Self {
        Settings {
            config_file: None,
            logging: "info".to_owned(),
            log_format: LogFormat::Text,
            server: ServerOptions::default(),
        }
    }
}

/// Why the settings cannot be used; its `Display` is one line meant for the operator.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read config file {path}: {source}")]
    ReadConfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}{}: {message}", line.map(|line| format!(", line {line}")).unwrap_or_default())]
    ParseConfig {
        path: PathBuf,
        line: Option<usize>,
        message: String,
    },
    #[error("config file {path}: unknown key {key:?}{}", suggestion.as_ref().map(|known| format!(" (did you mean {known:?}?)")).unwrap_or_default())]
    UnknownKey {
        path: PathBuf,
        key: String,
        suggestion: Option<String>,
    },
    /// `setting` names where the value came from: `--max-connections`, or
    /// `config file ./x.toml: max-connections`.
    #[error("{setting} {problem}")]
    Invalid { setting: String, problem: String },
    #[error("{0}")]
    Logging(String),
    /// A flag argh rejected; its text already says what and suggests `--help`.
    #[error("{0}")]
    Flags(String),
}

/// Where a value came from, so an error can say which line of defence to fix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    Default,
    File,
    Flag,
}

/// The config file of one load, its values by dashed key (underscores are accepted too, because
/// they are what people type when they think of the Rust field names), each with its place in
/// the file for error messages.
#[derive(Default)]
struct Layers<'a> {
    path: Option<&'a Path>,
    text: &'a str,
    values: BTreeMap<String, Spanned<toml::Value>>,
}

impl<'a> Layers<'a> {
    /// Parses the config file; an unknown key is reported here, before any value is looked at,
    /// as one line with a suggestion instead of a list of every key.
    fn parse(path: &'a Path, text: &'a str) -> Result<Layers<'a>, SettingsError> {
        let mut layers = Layers {
            path: Some(path),
            text,
            values: BTreeMap::new(),
        };
        let table: BTreeMap<String, Spanned<toml::Value>> =
            toml::from_str(text).map_err(|error| {
                layers.parse_error(error.message(), error.span().map(|span| span.start))
            })?;
        for (key, value) in table {
            let dashed = dashed(&key);
            if !is_known_key(&dashed) {
                return Err(SettingsError::UnknownKey {
                    path: path.to_path_buf(),
                    suggestion: closest_key(&dashed),
                    key,
                });
            }
            let start = value.span().start;
            if layers.values.insert(dashed, value).is_some() {
                let message = format!("{key} is given twice, with dashes and with underscores");
                return Err(layers.parse_error(&message, Some(start)));
            }
        }
        Ok(layers)
    }

    /// TOML's multi-line error as one line with a line number.
    fn parse_error(&self, message: &str, offset: Option<usize>) -> SettingsError {
        SettingsError::ParseConfig {
            path: self.path.unwrap_or(Path::new("")).to_path_buf(),
            line: offset.map(|offset| line_of(self.text, offset)),
            // Integer settings are read as i64 to range-check them here; say it in TOML's terms.
            message: message
                .trim()
                .replace("expected i64", "expected an integer")
                .replace("expected a sequence", "expected an array"),
        }
    }

    /// One setting's flag (if given on the command line) and file value (if in the file).
    fn given<F: Flag>(&self, name: &str, flag: F) -> Given<'_, F::Value> {
        let key = dashed(name);
        Given {
            file: self.values.get(&key),
            key,
            flag: flag.given(),
            layers: self,
        }
    }
}

/// How a flag's field in [`Args`] says whether the flag was given.
trait Flag {
    type Value;
    fn given(self) -> Option<Self::Value>;
}

impl<T> Flag for Option<T> {
    type Value = T;
    fn given(self) -> Option<T> {
        self
    }
}

/// A switch: present or not.
impl Flag for bool {
    type Value = bool;
    fn given(self) -> Option<bool> {
        self.then_some(true)
    }
}

/// A repeatable flag: given if given at least once.
impl<T> Flag for Vec<T> {
    type Value = Vec<T>;
    fn given(self) -> Option<Vec<T>> {
        (!self.is_empty()).then_some(self)
    }
}

/// One setting as the layers give it. Its readers (the `reader` of a `settings!` entry) apply
/// the precedence, flag over file over default, and the checks; every error names the flag or
/// the key the bad value came from.
struct Given<'a, T> {
    key: String,
    flag: Option<T>,
    file: Option<&'a Spanned<toml::Value>>,
    layers: &'a Layers<'a>,
}

impl<T> Given<'_, T> {
    /// The file's value as a `V`, or an error with its line. A flag does not excuse a value of
    /// the wrong type: the file is wrong either way.
    fn file_as<V: DeserializeOwned>(&self) -> Result<Option<V>, SettingsError> {
        let Some(value) = self.file else {
            return Ok(None);
        };
        let start = value.span().start;
        let parsed = value.get_ref().clone().try_into();
        parsed
            .map(Some)
            .map_err(|error| self.layers.parse_error(error.message(), Some(start)))
    }

    fn invalid(&self, origin: Origin, problem: impl Display) -> SettingsError {
        let key = &self.key;
        let setting = match (origin, self.layers.path) {
            (Origin::File, Some(path)) => format!("config file {}: {key}", path.display()),
            (Origin::Default, _) => format!("the default {key}"),
            _ => format!("--{key}"),
        };
        let problem = problem.to_string();
        SettingsError::Invalid { setting, problem }
    }
}

fn pick<V>(flag: Option<V>, file: Option<V>, default: V) -> (V, Origin) {
    match (flag, file) {
        (Some(value), _) => (value, Origin::Flag),
        (None, Some(value)) => (value, Origin::File),
        (None, None) => (default, Origin::Default),
    }
}

/// Readers of settings whose flag and file value have the same type.
impl<T: DeserializeOwned> Given<'_, T> {
    fn value(self, default: T) -> Result<T, SettingsError> {
        let file = self.file_as()?;
        Ok(pick(self.flag, file, default).0)
    }

    /// A value with no default: absent unless given.
    fn optional_value(self, default: Option<T>) -> Result<Option<T>, SettingsError> {
        let file = self.file_as()?;
        Ok(pick(self.flag.map(Some), file.map(Some), default).0)
    }
}

impl Given<'_, bool> {
    /// A switch that turns something off (`no-pin` clears `pin_cores`).
    fn negated(self, default: bool) -> Result<bool, SettingsError> {
        Ok(!self.value(!default)?)
    }
}

/// Readers of integer settings. Flags already have their Rust type (argh rejects out-of-type
/// values itself); file values are TOML's i64 and are range-checked here, so the message names
/// the key instead of a Rust type.
impl<F: TryInto<i64>> Given<'_, F> {
    /// An integer within `bound`.
    fn int<T>(mut self, bound: Bound, default: T) -> Result<T, SettingsError>
    where
        T: TryFrom<i64> + TryInto<i64>,
    {
        let file = self.file_as::<i64>()?;
        let flag = self
            .flag
            .take()
            .map(|value| value.try_into().unwrap_or(i64::MAX));
        let default = default.try_into().unwrap_or(i64::MAX);
        let (value, origin) = pick(flag, file, default);
        let out_of_range = || self.invalid(origin, bound.problem(value));
        if !bound.contains(value) {
            return Err(out_of_range());
        }
        T::try_from(value).map_err(|_| out_of_range())
    }

    /// An integer that has no default: absent unless given.
    fn optional<T>(self, bound: Bound, default: Option<T>) -> Result<Option<T>, SettingsError>
    where
        T: TryFrom<i64> + TryInto<i64> + Default,
    {
        if self.flag.is_none() && self.file.is_none() {
            return Ok(default);
        }
        self.int(bound, T::default()).map(Some)
    }

    /// A duration given in whole seconds.
    fn seconds(self, bound: Bound, default: Duration) -> Result<Duration, SettingsError> {
        Ok(Duration::from_secs(self.int(bound, default.as_secs())?))
    }

    /// A duration given in milliseconds.
    fn millis(self, bound: Bound, default: Duration) -> Result<Duration, SettingsError> {
        let default = u64::try_from(default.as_millis()).unwrap_or(u64::MAX);
        Ok(Duration::from_millis(self.int(bound, default)?))
    }

    fn qos(self, default: QoS) -> Result<QoS, SettingsError> {
        let qos = self.int(Bound::OneOf(&[0, 1, 2]), default as u8)?;
        Ok(QoS::from_u8(qos).unwrap_or(default))
    }

    /// `--fsync-interval-ms`: the interval of `--fsync interval`; checked whatever the mode.
    fn fsync_interval(self, mode: Fsync) -> Result<Fsync, SettingsError> {
        let interval = self.millis(Bound::AtLeast(1), interval_of(mode))?;
        Ok(match mode {
            Fsync::Interval(_) => Fsync::Interval(interval),
            other => other,
        })
    }
}

/// The interval `mode` syncs at, or the one `--fsync interval` would.
fn interval_of(mode: Fsync) -> Duration {
    match mode {
        Fsync::Interval(interval) => interval,
        Fsync::Always | Fsync::Never => DEFAULT_FSYNC_INTERVAL,
    }
}

impl<T: FromStr<Err: Display>> Given<'_, T> {
    /// A value with its own parser, which argh applies to the flag and this to the file's text.
    fn parsed(mut self, default: T) -> Result<T, SettingsError> {
        let file = self.file_as::<String>()?;
        match (self.flag.take(), file) {
            (Some(value), _) => Ok(value),
            (None, Some(text)) => T::from_str(&text)
                .map_err(|problem| self.invalid(Origin::File, format!("is invalid: {problem}"))),
            (None, None) => Ok(default),
        }
    }
}

impl Given<'_, String> {
    fn log_filter(mut self, default: String) -> Result<String, SettingsError> {
        let file = self.file_as()?;
        let (level, origin) = pick(self.flag.take(), file, default);
        match log_filter(&level) {
            Ok(_) => Ok(level),
            Err(problem) => Err(self.invalid(origin, problem)),
        }
    }

    fn fsync_mode(mut self, default: Fsync) -> Result<Fsync, SettingsError> {
        let default_mode = match default {
            Fsync::Always => "always",
            Fsync::Interval(_) => "interval",
            Fsync::Never => "never",
        };
        let file = self.file_as()?;
        let (mode, origin) = pick(self.flag.take(), file, default_mode.to_owned());
        match mode.as_str() {
            "always" => Ok(Fsync::Always),
            "interval" => Ok(Fsync::Interval(interval_of(default))),
            "never" => Ok(Fsync::Never),
            other => Err(self.invalid(
                origin,
                format!("must be always, interval or never, got {other:?}"),
            )),
        }
    }
}

/// A listener of the config file's `listen`, `listen-tls`, `listen-ws` or `listen-wss` list
/// given as a table, with settings of its own (`ListenerSettings`); an entry may also be a plain
/// "IP:PORT".
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ListenerTable {
    address: String,
    #[serde(alias = "allow_anonymous")]
    allow_anonymous: Option<bool>,
    #[serde(alias = "tls_identity_as_username")]
    tls_identity_as_username: Option<bool>,
    #[serde(alias = "tls_cert")]
    tls_cert: Option<PathBuf>,
    #[serde(alias = "tls_key")]
    tls_key: Option<PathBuf>,
    #[serde(alias = "tls_client_ca")]
    tls_client_ca: Option<PathBuf>,
    #[serde(alias = "tls_require_client_cert")]
    tls_require_client_cert: Option<bool>,
}

impl Given<'_, Vec<SocketAddr>> {
    /// `--listen`, `--listen-tls`, `--listen-ws` and `--listen-wss`: the listeners of one
    /// transport by IP:PORT address (in the file, or a table with settings of its own), in place
    /// of that transport's in `current`. At least one listener in all, no address twice.
    fn listeners(
        mut self,
        transport: Transport,
        current: Vec<Listener>,
    ) -> Result<Vec<Listener>, SettingsError> {
        let (default, mut others): (Vec<Listener>, Vec<Listener>) = current
            .into_iter()
            .partition(|listener| listener.transport == transport);
        let file = self.file_as::<Vec<toml::Value>>()?;
        let file = file
            .map(|entries| {
                entries
                    .into_iter()
                    .map(|entry| self.file_listener(entry, transport))
                    .collect()
            })
            .transpose()?;
        let flag = self.flag.take().map(|addresses| {
            addresses
                .into_iter()
                .map(|address| Listener::new(address, transport))
                .collect()
        });
        let (listeners, origin): (Vec<Listener>, _) = pick(flag, file, default);
        if listeners.is_empty() && others.is_empty() {
            let problem = "must have at least one address, e.g. [\"0.0.0.0:1883\"]";
            return Err(self.invalid(origin, problem));
        }
        // With SO_REUSEPORT a repeated address would bind twice without complaint and split
        // accepts between the two copies, which is never what was meant. (Port 0 asks for a
        // free port each time.)
        let mut seen: BTreeSet<SocketAddr> = others.iter().map(|other| other.address).collect();
        let repeated = listeners
            .iter()
            .find(|listener| listener.address.port() != 0 && !seen.insert(listener.address));
        if let Some(repeated) = repeated {
            let problem = format!("has {} more than once", repeated.address);
            return Err(self.invalid(origin, problem));
        }
        others.extend(listeners);
        // Plain TCP first, then TLS, each in the order given: the order they are bound and
        // logged in, whichever setting was read first.
        others.sort_by_key(|listener| listener.transport);
        Ok(others)
    }

    /// One entry of the file's list: "IP:PORT", or a table with an address and settings.
    fn file_listener(
        &self,
        entry: toml::Value,
        transport: Transport,
    ) -> Result<Listener, SettingsError> {
        let table = match entry {
            toml::Value::String(text) => {
                return Ok(Listener::new(self.file_address(&text)?, transport));
            }
            table @ toml::Value::Table(_) => table,
            other => {
                let problem = format!(
                    "has {other}, which is neither an \"IP:PORT\" address nor a table such as {{ address = \"0.0.0.0:8883\", allow-anonymous = false }}"
                );
                return Err(self.invalid(Origin::File, problem));
            }
        };
        let table: ListenerTable = table.try_into().map_err(|error: toml::de::Error| {
            self.invalid(
                Origin::File,
                format!("has a listener table that {}", error.message()),
            )
        })?;
        let address = self.file_address(&table.address)?;
        let own = ListenerSettings {
            allow_anonymous: table.allow_anonymous,
            identity_as_username: table.tls_identity_as_username,
            tls_cert: table.tls_cert,
            tls_key: table.tls_key,
            tls_client_ca: table.tls_client_ca,
            tls_require_client_cert: table.tls_require_client_cert,
        };
        let tls_only = own.identity_as_username.is_some()
            || own.tls_cert.is_some()
            || own.tls_key.is_some()
            || own.tls_client_ca.is_some()
            || own.tls_require_client_cert.is_some();
        if tls_only && !transport.uses_tls() {
            let problem = format!(
                "gives {address} settings of TLS listeners (tls-...): list it under listen-tls or listen-wss"
            );
            return Err(self.invalid(Origin::File, problem));
        }
        Ok(Listener {
            address,
            transport,
            own,
        })
    }

    fn file_address(&self, text: &str) -> Result<SocketAddr, SettingsError> {
        text.parse().map_err(|_| {
            let problem = format!(
                "has {text:?}, which is not an IP:PORT address (host names are not resolved; use 0.0.0.0:1883 or [::]:1883 for every interface)"
            );
            self.invalid(Origin::File, problem)
        })
    }
}

/// The values an integer setting may take.
#[derive(Clone, Copy)]
enum Bound {
    AtLeast(i64),
    Between(i64, i64),
    OneOf(&'static [i64]),
}

impl Bound {
    const U16: Bound = Bound::Between(0, u16::MAX as i64);
    const U32: Bound = Bound::Between(0, u32::MAX as i64);
    /// For counts where 0 would mean something other than a limit (MQTT 5 makes a Receive
    /// Maximum of 0 a protocol error; a keepalive of 0 means none).
    const NONZERO_U16: Bound = Bound::Between(1, u16::MAX as i64);

    fn contains(self, value: i64) -> bool {
        match self {
            Bound::AtLeast(min) => value >= min,
            Bound::Between(min, max) => (min..=max).contains(&value),
            Bound::OneOf(values) => values.contains(&value),
        }
    }

    fn problem(self, value: i64) -> String {
        match self {
            Bound::AtLeast(min) => format!("must be at least {min}, got {value}"),
            Bound::Between(min, max) => format!("must be between {min} and {max}, got {value}"),
            Bound::OneOf(values) => {
                let mut listed: Vec<String> = values.iter().map(i64::to_string).collect();
                let last = listed.pop().unwrap_or_default();
                if listed.is_empty() {
                    format!("must be {last}, got {value}")
                } else {
                    format!("must be {} or {last}, got {value}", listed.join(", "))
                }
            }
        }
    }
}

impl Settings {
    /// Reads the command line of this process. `--help` prints and exits 0 here; a bad flag
    /// comes back as an error, so it exits like every other configuration error.
    pub fn from_env() -> Result<Settings, SettingsError> {
        let mut words = std::env::args_os().map(|word| word.into_string());
        let program = words
            .next()
            .and_then(Result::ok)
            .and_then(|path| Some(Path::new(&path).file_name()?.to_str()?.to_owned()))
            .unwrap_or_else(|| "mqtt-broker".to_owned());
        let words = words.collect::<Result<Vec<_>, _>>().map_err(|word| {
            SettingsError::Flags(format!("argument {word:?} is not valid UTF-8"))
        })?;
        let words: Vec<&str> = words.iter().map(String::as_str).collect();
        match Args::from_args(&[&program], &words) {
            Ok(args) => Settings::load(args),
            Err(exit) if exit.status.is_ok() => {
                print!("{}", exit.output);
                std::process::exit(0)
            }
            Err(exit) => Err(SettingsError::Flags(exit.output.trim_end().to_owned())),
        }
    }

    /// Defaults, then the `--config` file if given, then the flags.
    pub fn load(args: Args) -> Result<Settings, SettingsError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| SettingsError::ReadConfig {
                path: path.to_path_buf(),
                source,
            })
        };
        let text = args.config.as_deref().map(read).transpose()?;
        let config = args.config.clone();
        let file = config.as_deref().zip(text.as_deref());
        Settings::resolve(args, file)
    }

    /// [`Settings::load`] with the file's text already read, so tests need no files.
    fn resolve(args: Args, file: Option<(&Path, &str)>) -> Result<Settings, SettingsError> {
        let layers = match file {
            Some((path, text)) => Layers::parse(path, text)?,
            None => Layers::default(),
        };
        let mut settings = Settings {
            config_file: layers.path.map(Path::to_path_buf),
            ..Settings::default()
        };
        settings.read_layers(args, &layers)?;
        // Reading the certificate and key now makes a bad one a configuration error, like any
        // other bad setting, rather than a failure to start.
        let server = &settings.server;
        if let Some(path) = server
            .ws_path
            .as_ref()
            .filter(|path| !path.starts_with('/'))
        {
            let setting = "--ws-path".to_owned();
            let problem = format!("must start with /, like /{path}");
            return Err(SettingsError::Invalid { setting, problem });
        }
        if let Err(error) = server.layer_maker() {
            let setting = "--listen-tls".to_owned();
            let problem = format!("cannot be served: {error}");
            return Err(SettingsError::Invalid { setting, problem });
        }
        let tls_listeners = server
            .listeners
            .iter()
            .filter(|listener| listener.transport.uses_tls());
        if server.security.identity_as_username && tls_listeners.count() == 0 {
            let setting = "--tls-identity-as-username".to_owned();
            let problem = "needs a TLS listener (--listen-tls) with --tls-client-ca, whose verified certificates name the clients".to_owned();
            return Err(SettingsError::Invalid { setting, problem });
        }
        for listener in &server.listeners {
            let identity = server.security.policy(listener).identity_as_username;
            if identity && listener.tls(&server.tls).client_ca.is_none() {
                let setting = "--tls-identity-as-username".to_owned();
                let problem = format!(
                    "needs --tls-client-ca, which verifies the certificates whose names it takes (listener {})",
                    listener.address
                );
                return Err(SettingsError::Invalid { setting, problem });
            }
        }
        if let Err((setting, problem)) = server.security.check() {
            let setting = setting.to_owned();
            return Err(SettingsError::Invalid { setting, problem });
        }
        let broker = &mut settings.server.broker;
        // The pre-CONNECT limit guards against unauthenticated peers; it must never let
        // through more than the limit for connected clients.
        broker.max_connect_packet_size = broker.max_connect_packet_size.min(broker.max_packet_size);
        Ok(settings)
    }
}

/// A field name as its flag and file key spell it.
fn dashed(name: &str) -> String {
    name.replace('_', "-")
}

fn is_known_key(dashed_key: &str) -> bool {
    SETTING_NAMES.iter().any(|name| dashed(name) == dashed_key)
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&byte| byte == b'\n')
        .count()
        + 1
}

/// The known key a typo most likely meant, if any is close enough to be worth suggesting.
fn closest_key(key: &str) -> Option<String> {
    SETTING_NAMES
        .iter()
        .map(|name| dashed(name))
        .map(|known| (edit_distance(key, &known), known))
        .filter(|(distance, _)| *distance <= 3)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, known)| known)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];

/// A bare word that is not a level would be taken by `EnvFilter` as a target name, turning a
/// typo like "inf" into "log nothing"; so bare words must be levels, and anything else must parse
/// as a directive list.
fn log_filter(level: &str) -> Result<EnvFilter, String> {
    let trimmed = level.trim();
    let bare_word = !trimmed.contains(['=', ',', ':', '[']);
    let invalid = || {
        format!(
            "must be error, warn, info, debug, trace, off or a filter such as \"info,mqtt_broker::server=debug\", got {level:?}"
        )
    };
    if bare_word && !LEVELS.contains(&trimmed.to_ascii_lowercase().as_str()) {
        return Err(invalid());
    }
    EnvFilter::builder().parse(trimmed).map_err(|_| invalid())
}

/// Installs the global logger: human-readable lines on stderr (where systemd and containers
/// collect them), colored only when a person is watching a terminal. RUST_LOG, when set, wins
/// over `level` so a deployment's flags can be overridden for one debugging run.
/// How log lines are written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    /// One JSON object per line, with the fields of each event.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<LogFormat, String> {
        match text {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("must be text or json, got {text:?}")),
        }
    }
}

pub fn init_logging(level: &str, format: LogFormat) -> Result<(), SettingsError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => {
            EnvFilter::builder().parse(&directives).map_err(|error| {
                SettingsError::Logging(format!(
                    "RUST_LOG={directives:?} is not a valid filter: {error}"
                ))
            })?
        }
        _ => log_filter(level)
            .map_err(|problem| SettingsError::Logging(format!("--log-level {problem}")))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    let installed = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_current_span(false).try_init(),
    };
    installed.map_err(|error| SettingsError::Logging(format!("cannot install the logger: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::Transport;

    const EXAMPLE: &str = include_str!("../ops/mqtt-broker.toml");
    const README: &str = include_str!("../README.md");

    fn args(flags: &[&str]) -> Args {
        match Args::from_args(&["mqtt-broker"], flags) {
            Ok(args) => args,
            Err(exit) => panic!("{flags:?} did not parse: {}", exit.output),
        }
    }

    fn with_file(flags: &[&str], toml: &str) -> Result<Settings, SettingsError> {
        Settings::resolve(args(flags), Some((Path::new("./x.toml"), toml)))
    }

    fn error(result: Result<Settings, SettingsError>) -> String {
        match result {
            Ok(settings) => panic!("expected an error, got {settings:?}"),
            Err(error) => error.to_string(),
        }
    }

    /// The addresses of the listeners, all of which `--listen` makes MQTT over TCP.
    fn tcp_addresses(settings: &Settings) -> Vec<String> {
        let listeners = &settings.server.listeners;
        assert!(listeners
            .iter()
            .all(|listener| listener.transport == Transport::Tcp));
        listeners
            .iter()
            .map(|listener| listener.address.to_string())
            .collect()
    }

    fn defaults() -> Settings {
        Settings::load(args(&[])).unwrap()
    }

    #[test]
    fn listeners_can_have_settings_of_their_own_in_the_file() {
        let toml = r#"
            listen = ["127.0.0.1:1883", { address = "0.0.0.0:1884", allow-anonymous = false }]
        "#;
        let settings = with_file(&[], toml).unwrap();
        let server = &settings.server;
        let policies: Vec<bool> = server
            .listeners
            .iter()
            .map(|listener| server.security.policy(listener).allow_anonymous)
            .collect();
        assert_eq!(policies, [true, false]);
        assert!(server.security.authenticates(&server.listeners));
        assert!(!defaults()
            .server
            .security
            .authenticates(&defaults().server.listeners));

        let file = |toml: &str| error(with_file(&[], toml));
        assert!(
            file(r#"listen = [{ address = "0.0.0.0:1884", tls-cert = "x.pem" }]"#)
                .contains("list it under listen-tls")
        );
        let typo = file(r#"listen = [{ address = "0.0.0.0:1884", allow-anonymus = false }]"#);
        assert!(typo.contains("allow-anonymus"), "{typo}");
        assert!(file("listen = [5]").contains("neither"));
        assert!(file(r#"listen = [{ address = "nowhere:1" }]"#).contains("not an IP:PORT"));
    }

    #[test]
    fn websocket_listeners_come_after_the_others_and_the_path_is_checked() {
        let toml = r#"
            listen-ws = ["127.0.0.1:8080", { address = "127.0.0.1:8082", allow-anonymous = false }]
            listen = ["127.0.0.1:1883"]
        "#;
        let settings = with_file(&["--ws-path", "/mqtt"], toml).unwrap();
        let transports: Vec<Transport> = settings
            .server
            .listeners
            .iter()
            .map(|listener| listener.transport)
            .collect();
        assert_eq!(transports, [Transport::Tcp, Transport::Ws, Transport::Ws]);
        assert_eq!(settings.server.ws_path.as_deref(), Some("/mqtt"));
        let relative = error(with_file(&["--ws-path", "mqtt"], ""));
        assert!(relative.contains("must start with /"), "{relative}");
        let tls_on_ws = error(with_file(
            &[],
            r#"listen-ws = [{ address = "0.0.0.0:8080", tls-cert = "x.pem" }]"#,
        ));
        assert!(tls_on_ws.contains("listen-wss"), "{tls_on_ws}");
        let no_certificate = error(with_file(&["--listen-wss", "127.0.0.1:8081"], ""));
        assert!(no_certificate.contains("--tls-cert"), "{no_certificate}");
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let settings = defaults();
        assert_eq!(tcp_addresses(&settings), ["0.0.0.0:1883"]);
        assert_eq!(settings.server.data_dir, PathBuf::from("./data"));
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(settings.server.shards, cores);
        assert_eq!(settings.server.backend, Backend::Auto);
        assert!(settings.server.pin_cores);
        assert_eq!(settings.config_file, None);
        assert_eq!(settings.server.broker.max_connections, 10_000);
        assert_eq!(settings.server.read_buffer_size, 8192);
        assert_eq!(settings.server.initial_pool_size, 1000);
        assert_eq!(settings.server.broker.session_expiry, 3600);
        assert_eq!(settings.server.broker.max_session_expiry, None);
        assert_eq!(settings.server.broker.max_keepalive, 65_535);
        assert_eq!(settings.server.broker.max_packet_size, 33_554_432);
        assert_eq!(settings.logging, "info");
        assert_eq!(settings.server.broker.max_inflight, 1024);
        assert_eq!(settings.server.broker.max_queued_messages, 10_000);
        assert_eq!(settings.server.broker.max_queued_bytes, 67_108_864);
        assert_eq!(settings.server.broker.receive_maximum, 65_535);
        assert_eq!(settings.server.broker.topic_alias_maximum, 10);
        assert_eq!(settings.server.broker.max_subscriptions_per_client, 0);
        assert_eq!(settings.server.broker.max_topic_levels, 0);
        assert!(settings.server.broker.retain_available);
        assert_eq!(settings.server.broker.maximum_qos, QoS::ExactlyOnce);
        assert_eq!(
            settings.server.broker.connect_timeout,
            Duration::from_secs(20)
        );
        assert_eq!(settings.server.broker.max_outbound_buffer, 4_194_304);
        assert_eq!(settings.server.broker.stall_timeout, Duration::from_secs(1));
        assert_eq!(settings.server.broker.buffer_budget, 268_435_456);
        assert_eq!(settings.server.broker.max_retained_per_subscribe, 0);
        assert_eq!(
            settings.server.broker.expiry_sweep_interval,
            Duration::from_secs(10)
        );
    }

    #[test]
    fn help_shows_every_default() {
        let help = match Args::from_args(&["mqtt-broker"], &["--help"]) {
            Err(exit) => exit.output,
            Ok(_) => panic!("--help must exit early"),
        };
        let options = help.split("Options:").nth(1).unwrap();
        let mut described = 0;
        for entry in options.split("\n  --").skip(1) {
            let flag = entry
                .split_whitespace()
                .next()
                .unwrap()
                .trim_end_matches(',');
            if flag == "help" || flag == "no-pin" {
                continue;
            }
            let flat = entry.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(
                flat.contains("(default: "),
                "--{flag} shows no default: {flat}"
            );
            described += 1;
        }
        // --config has a default but no key, --no-pin a key but no default.
        assert_eq!(described, SETTING_NAMES.len(), "{help}");
    }

    #[test]
    fn file_overrides_defaults_and_flags_override_the_file() {
        let toml = r#"
            max-connections = 5000
            max-inflight = 16
            runtime = "epoll"
            listen = ["127.0.0.1:1883", "[::1]:1883"]
            no-pin = true
            retain-available = false
        "#;
        let settings = with_file(
            &["--max-connections", "5", "--retain-available", "true"],
            toml,
        )
        .unwrap();
        assert_eq!(settings.server.broker.max_connections, 5);
        assert_eq!(settings.server.broker.max_inflight, 16);
        assert_eq!(settings.server.backend, Backend::Epoll);
        assert_eq!(settings.server.listeners.len(), 2);
        assert!(!settings.server.pin_cores);
        assert!(settings.server.broker.retain_available);
        assert_eq!(
            settings.server.broker.max_queued_messages, 10_000,
            "untouched keys keep defaults"
        );
        assert_eq!(settings.config_file, Some(PathBuf::from("./x.toml")));

        let settings =
            with_file(&["--listen", "10.0.0.1:1883", "--runtime", "tokio"], toml).unwrap();
        assert_eq!(tcp_addresses(&settings), ["10.0.0.1:1883"]);
        assert_eq!(settings.server.backend, Backend::Tokio);

        let toml = r#"
            connect-timeout = 5
            max-outbound-buffer = 65536
            max-retained-per-subscribe = 100
            expiry-sweep-interval = 60
        "#;
        let settings = with_file(&[], toml).unwrap();
        assert_eq!(
            settings.server.broker.connect_timeout,
            Duration::from_secs(5)
        );
        assert_eq!(settings.server.broker.max_outbound_buffer, 65_536);
        assert_eq!(settings.server.broker.max_retained_per_subscribe, 100);
        assert_eq!(
            settings.server.broker.expiry_sweep_interval,
            Duration::from_secs(60)
        );
        let settings = with_file(
            &[
                "--connect-timeout",
                "30",
                "--max-outbound-buffer",
                "1024",
                "--max-retained-per-subscribe",
                "0",
                "--expiry-sweep-interval",
                "1",
            ],
            toml,
        )
        .unwrap();
        assert_eq!(
            settings.server.broker.connect_timeout,
            Duration::from_secs(30)
        );
        assert_eq!(settings.server.broker.max_outbound_buffer, 1024);
        assert_eq!(settings.server.broker.max_retained_per_subscribe, 0);
        assert_eq!(
            settings.server.broker.expiry_sweep_interval,
            Duration::from_secs(1)
        );
    }

    #[test]
    fn underscored_keys_are_accepted() {
        let settings = with_file(&[], "max_connections = 7\nlog_level = \"debug\"").unwrap();
        assert_eq!(settings.server.broker.max_connections, 7);
        assert_eq!(settings.logging, "debug");
        let settings = with_file(&[], "connect_timeout = 3\nmax_outbound_buffer = 2048").unwrap();
        assert_eq!(
            settings.server.broker.connect_timeout,
            Duration::from_secs(3)
        );
        assert_eq!(settings.server.broker.max_outbound_buffer, 2048);
    }

    #[test]
    fn listen_is_repeatable() {
        let settings = Settings::load(args(&[
            "--listen",
            "127.0.0.1:1883",
            "--listen",
            "[::]:8883",
        ]))
        .unwrap();
        assert_eq!(tcp_addresses(&settings), ["127.0.0.1:1883", "[::]:8883"]);
    }

    #[test]
    fn unknown_keys_are_named() {
        let message = error(with_file(&[], "max-conections = 5000"));
        assert_eq!(
            message,
            r#"config file ./x.toml: unknown key "max-conections" (did you mean "max-connections"?)"#
        );
        let message = error(with_file(&[], "[broker]\nmax-connections = 1"));
        assert_eq!(message, r#"config file ./x.toml: unknown key "broker""#);
    }

    #[test]
    fn file_syntax_and_type_errors_have_a_line() {
        let message = error(with_file(&[], "shards = 2\nmax-connections = \"many\""));
        assert!(
            message.starts_with("config file ./x.toml, line 2: "),
            "{message}"
        );
        assert!(!message.contains('\n'), "{message}");
        let message = error(with_file(&[], "shards = \n"));
        assert!(
            message.starts_with("config file ./x.toml, line 1: "),
            "{message}"
        );
        assert!(!message.contains('\n'), "{message}");
    }

    #[test]
    fn invalid_values_name_their_flag_or_key() {
        let flag = |flags: &[&str]| error(Settings::load(args(flags)));
        assert_eq!(
            flag(&["--maximum-qos", "3"]),
            "--maximum-qos must be 0, 1 or 2, got 3"
        );
        assert_eq!(
            flag(&["--shards", "0"]),
            "--shards must be at least 1, got 0"
        );
        assert_eq!(
            flag(&["--max-packet-size", "10"]),
            "--max-packet-size must be between 64 and 268435460, got 10"
        );
        assert_eq!(
            flag(&["--read-buffer-size", "100"]),
            "--read-buffer-size must be at least 512, got 100"
        );
        assert_eq!(
            flag(&["--receive-maximum", "0"]),
            "--receive-maximum must be between 1 and 65535, got 0"
        );
        assert_eq!(
            flag(&["--connect-timeout", "0"]),
            "--connect-timeout must be between 1 and 3600, got 0"
        );
        assert_eq!(
            flag(&["--max-outbound-buffer", "1023"]),
            "--max-outbound-buffer must be between 1024 and 1073741824, got 1023"
        );
        assert_eq!(
            flag(&["--max-outbound-buffer", "1073741825"]),
            "--max-outbound-buffer must be between 1024 and 1073741824, got 1073741825"
        );
        assert_eq!(
            flag(&["--expiry-sweep-interval", "3601"]),
            "--expiry-sweep-interval must be between 1 and 3600, got 3601"
        );
        assert!(flag(&["--log-level", "inf"]).starts_with("--log-level must be error, warn"));
        assert_eq!(
            flag(&["--listen", "127.0.0.1:1883", "--listen", "127.0.0.1:1883"]),
            "--listen has 127.0.0.1:1883 more than once"
        );

        let file = |toml: &str| error(with_file(&[], toml));
        assert_eq!(
            file("maximum-qos = 3"),
            "config file ./x.toml: maximum-qos must be 0, 1 or 2, got 3"
        );
        assert_eq!(
            file("max-keepalive = 70000"),
            "config file ./x.toml: max-keepalive must be between 1 and 65535, got 70000"
        );
        assert_eq!(
            file("max-queued-bytes = -1"),
            "config file ./x.toml: max-queued-bytes must be at least 0, got -1"
        );
        assert_eq!(
            file("connect-timeout = 7200"),
            "config file ./x.toml: connect-timeout must be between 1 and 3600, got 7200"
        );
        assert_eq!(
            file("max-retained-per-subscribe = -1"),
            "config file ./x.toml: max-retained-per-subscribe must be at least 0, got -1"
        );
        assert_eq!(
            file("expiry_sweep_interval = 0"),
            "config file ./x.toml: expiry-sweep-interval must be between 1 and 3600, got 0"
        );
        assert_eq!(
            file("listen = []"),
            r#"config file ./x.toml: listen must have at least one address, e.g. ["0.0.0.0:1883"]"#
        );
        assert!(file(r#"listen = ["localhost:1883"]"#)
            .starts_with(r#"config file ./x.toml: listen has "localhost:1883", which is not"#));
        assert!(file(r#"runtime = "uring""#)
            .starts_with(r#"config file ./x.toml: runtime is invalid: unknown runtime "uring""#));
        assert!(file(r#"log-level = "verbose""#)
            .starts_with("config file ./x.toml: log-level must be error, warn"));

        // A bad file value is irrelevant when a flag overrides it.
        assert!(with_file(&["--maximum-qos", "1"], "maximum-qos = 3").is_ok());
        assert!(with_file(&["--connect-timeout", "5"], "connect-timeout = 0").is_ok());
    }

    #[test]
    fn bad_flags_are_rejected_by_argh() {
        for flags in [
            &["--max-keepalive", "70000"][..],
            &["--runtime", "uring"],
            &["--listen", "localhost"],
            &["--max-conections", "5"],
        ] {
            assert!(
                Args::from_args(&["mqtt-broker"], flags).is_err(),
                "{flags:?}"
            );
        }
    }

    #[test]
    fn missing_config_file_is_reported() {
        let message = error(Settings::load(args(&["--config", "/nonexistent/x.toml"])));
        assert!(
            message.starts_with("cannot read config file /nonexistent/x.toml: "),
            "{message}"
        );
    }

    #[test]
    fn log_levels_and_directives_are_accepted() {
        for level in [
            "info",
            "DEBUG",
            "off",
            "warn,mqtt_broker::server=trace",
            "mqtt_broker=debug",
        ] {
            assert!(log_filter(level).is_ok(), "{level}");
        }
    }

    #[test]
    fn init_logging_rejects_a_bad_level_before_installing_anything() {
        if std::env::var_os("RUST_LOG").is_none() {
            let message = init_logging("inf", LogFormat::Text)
                .unwrap_err()
                .to_string();
            assert!(message.starts_with("--log-level must be"), "{message}");
        }
    }

    #[test]
    fn broker_config_carries_the_tunables() {
        let settings = Settings::load(args(&[
            "--max-packet-size",
            "1024",
            "--maximum-qos",
            "1",
            "--max-session-expiry",
            "60",
            "--retain-available",
            "false",
            "--connect-timeout",
            "5",
            "--max-outbound-buffer",
            "65536",
            "--max-retained-per-subscribe",
            "100",
            "--expiry-sweep-interval",
            "60",
        ]))
        .unwrap();
        let config = settings.server.broker;
        assert_eq!(config.max_packet_size, 1024);
        assert_eq!(config.max_connect_packet_size, 1024);
        assert_eq!(config.maximum_qos, QoS::AtLeastOnce);
        assert_eq!(config.max_session_expiry, Some(60));
        assert!(!config.retain_available);
        assert_eq!(config.connect_timeout, Duration::from_secs(5));
        assert_eq!(config.max_outbound_buffer, 65_536);
        assert_eq!(config.max_retained_per_subscribe, 100);
        assert_eq!(config.expiry_sweep_interval, Duration::from_secs(60));

        let config = defaults().server.broker;
        let core = crate::broker::Config::default();
        assert_eq!(config.max_connect_packet_size, core.max_connect_packet_size);
        assert_eq!(config.connect_timeout, core.connect_timeout);
        assert_eq!(config.max_outbound_buffer, core.max_outbound_buffer);
        assert_eq!(
            config.max_retained_per_subscribe,
            core.max_retained_per_subscribe
        );
        assert_eq!(config.expiry_sweep_interval, core.expiry_sweep_interval);
        assert_eq!(config.max_queued_bytes, core.max_queued_bytes);
        assert_eq!(config.maximum_qos, core.maximum_qos);
    }

    #[test]
    fn example_config_gives_the_defaults() {
        let settings = with_file(&[], EXAMPLE).unwrap();
        assert_eq!(
            Settings {
                config_file: None,
                ..settings
            },
            defaults()
        );
    }

    /// The example lists every key, some commented out because their default cannot be written
    /// as a value; uncommented, they must still be valid.
    #[test]
    fn example_config_has_every_key_and_all_of_them_parse() {
        let uncommented: String = EXAMPLE
            .lines()
            .map(|line| {
                let rest = line.trim_start().strip_prefix("# ").unwrap_or(line);
                let key = rest.split('=').next().unwrap_or("").trim();
                if rest.contains('=') && known_keys().iter().any(|known| known == key) {
                    rest
                } else {
                    line
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let table: toml::Table = toml::from_str(&uncommented).unwrap();
        for key in known_keys() {
            assert!(table.contains_key(&key), "the example config lacks {key}");
        }
        // Its certificate paths are placeholders, read only when the settings are loaded: the
        // one error allowed is that they do not exist here.
        if let Err(error) = with_file(&[], &uncommented) {
            let error = error.to_string();
            assert!(
                error.contains("cannot read certificate /etc/mqtt-broker/server.pem"),
                "{error}"
            );
        }
    }

    /// Every setting's name, dashed: the keys the file accepts.
    fn known_keys() -> Vec<String> {
        SETTING_NAMES.iter().map(|name| dashed(name)).collect()
    }

    #[test]
    fn every_setting_is_a_file_key_in_both_spellings_but_not_twice() {
        for key in known_keys() {
            let underscored = key.replace('-', "_");
            for spelling in [&key, &underscored] {
                let text = format!("{spelling} = 0");
                let parsed = Layers::parse(Path::new("./x.toml"), &text);
                assert!(parsed.is_ok(), "{spelling}");
            }
            if key != underscored {
                let twice = format!("{key} = 0\n{underscored} = 0");
                let message = error(with_file(&[], &twice));
                assert!(
                    message.starts_with("config file ./x.toml, line ")
                        && message.contains("given twice"),
                    "{message}"
                );
            }
        }
    }

    /// Every flag of `--help`, with the default its text states, if it states one.
    fn flags_in_help() -> Vec<(String, Option<String>)> {
        let help = match Args::from_args(&["mqtt-broker"], &["--help"]) {
            Err(exit) => exit.output,
            Ok(_) => panic!("--help parsed as settings"),
        };
        let options = help.split_once("Options:").expect("argh lists options").1;
        options
            .split("\n  --")
            .filter_map(|entry| {
                let words: Vec<&str> = entry.split_whitespace().collect();
                let flag = format!("--{}", words.first()?.trim_end_matches(','));
                let text = words[1..].join(" ");
                let default = text
                    .rsplit_once("(default: ")
                    .and_then(|(_, rest)| rest.split_once(')'))
                    .map(|(default, _)| default.to_owned());
                (flag != "--help").then_some((flag, default))
            })
            .collect()
    }

    /// README's configuration table: each row's flag and its default column.
    fn flags_in_readme() -> Vec<(String, String)> {
        README
            .lines()
            .filter_map(|line| line.strip_prefix("| `--"))
            .map(|row| {
                let cells: Vec<&str> = row.split(" | ").collect();
                let flag = cells[0].split([' ', '`']).next().unwrap_or_default();
                (format!("--{flag}"), cells[1].replace('`', ""))
            })
            .collect()
    }

    #[test]
    fn readme_lists_every_flag_with_the_default_of_help() {
        let help = flags_in_help();
        let readme = flags_in_readme();
        let help_flags: BTreeSet<&str> = help.iter().map(|(flag, _)| flag.as_str()).collect();
        let readme_flags: BTreeSet<&str> = readme.iter().map(|(flag, _)| flag.as_str()).collect();
        assert_eq!(
            readme_flags, help_flags,
            "README's table and --help list different flags"
        );
        // Every flag is a file key, except the one that names the file.
        let keys: BTreeSet<String> = known_keys().iter().map(|key| format!("--{key}")).collect();
        let flags_but_config: BTreeSet<String> = help_flags
            .iter()
            .filter(|flag| **flag != "--config")
            .map(|flag| flag.to_string())
            .collect();
        assert_eq!(flags_but_config, keys);
        for (flag, stated) in &help {
            let Some(stated) = stated else { continue };
            let (_, in_readme) = readme.iter().find(|(row, _)| row == flag).expect("listed");
            // The table may add a word of explanation after the value: "0 (no limit)".
            let agrees = in_readme == stated || in_readme.starts_with(&format!("{stated} "));
            assert!(
                agrees,
                "{flag}: README says {in_readme:?}, --help says {stated:?}"
            );
        }
    }

    /// The defaults `--help` states are the ones the broker uses: each, written into a config
    /// file, changes nothing. Defaults stated in words ("one per available core") are skipped.
    #[test]
    fn help_states_the_real_defaults() {
        let mut checked = 0;
        for (flag, stated) in flags_in_help() {
            let in_words = |stated: &String| stated.contains(' ') || stated == "none";
            let Some(stated) = stated.filter(|stated| !in_words(stated) && flag != "--config")
            else {
                continue;
            };
            let key = flag.trim_start_matches("--");
            let value = match stated.as_str() {
                _ if key == "listen" => format!("[{stated:?}]"),
                "off" => "false".to_owned(),
                "true" | "false" => stated.clone(),
                _ if stated.parse::<i64>().is_ok() => stated.clone(),
                _ => format!("{stated:?}"),
            };
            let settings = with_file(&[], &format!("{key} = {value}"))
                .unwrap_or_else(|error| panic!("{flag}: {error}"));
            let expected = Settings {
                config_file: settings.config_file.clone(),
                ..defaults()
            };
            assert_eq!(
                settings, expected,
                "{flag}: --help says the default is {stated}"
            );
            checked += 1;
        }
        assert!(checked >= 30, "only {checked} defaults checked");
    }
}
