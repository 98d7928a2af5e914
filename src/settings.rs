//! The operator's side of configuration: the `mqtt-broker` command line, the TOML config file and
//! logging setup. It exists so that defaults, flags, file keys and their validation live in one
//! place and cannot drift apart, and so that every mistake is caught before a socket is bound and
//! reported as one line naming the flag or key to fix. The broker core never sees any of this: it
//! gets a plain [`Config`] from [`Settings::broker_config`].
//!
//! Precedence is defaults, then the file given with `--config`, then flags: every flag is also a
//! file key with the same name (`max-connections = 5000`), and a flag given on the command line
//! wins over the file.

use std::collections::BTreeSet;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use argh::FromArgs;
use mqtt_broker_persistence::DEFAULT_FSYNC_INTERVAL;
use mqtt_broker_shards::Backend;
use serde::Deserialize;
use tracing_subscriber::EnvFilter;

use crate::broker::Config;
use crate::protocol::decoder::MAX_PACKET_SIZE;
use crate::protocol::QoS;
use crate::server::{Fsync, PersistenceOptions, ServerOptions};

/// The exit status for a [`SettingsError`] (sysexits' EX_CONFIG, for `ExitCode::from`): the
/// systemd unit does not restart on it, since a restart cannot fix a wrong setting.
pub const EXIT_CONFIG: u8 = 78;

/// The largest packet the protocol can express, in the integer type file values are checked in.
const PROTOCOL_MAX_PACKET_SIZE: i64 = MAX_PACKET_SIZE as i64;

/// A sharded, thread-per-core MQTT 3.1 / 3.1.1 / 5.0 broker. Settings come from the defaults,
/// then the --config file, then these flags; every flag is also a config file key with the same
/// name (for example `max-connections = 5000`).
#[derive(FromArgs, Debug, Default, Clone, PartialEq)]
pub struct Args {
    /// address to accept MQTT connections on; repeat for several, and flags replace the file's
    /// list (default: 0.0.0.0:1883)
    #[argh(option, arg_name = "ADDR:PORT")]
    pub listen: Vec<SocketAddr>,

    /// directory for persistent sessions and retained messages (default: ./data)
    #[argh(option, arg_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// when the journal is flushed to disk: always (acknowledgements wait for it), interval or
    /// never (default: interval)
    #[argh(option, arg_name = "MODE")]
    pub fsync: Option<String>,

    /// milliseconds between journal flushes with --fsync interval (default: 1000)
    #[argh(option, arg_name = "MS")]
    pub fsync_interval_ms: Option<u64>,

    /// seconds between snapshots of each shard's state (default: 300)
    #[argh(option, arg_name = "SECONDS")]
    pub snapshot_interval: Option<u64>,

    /// journal bytes per shard after which a snapshot is taken early (default: 67108864)
    #[argh(option, arg_name = "BYTES")]
    pub journal_max_bytes: Option<u64>,

    /// refuse to start when the data directory is damaged, instead of setting the damaged files
    /// aside and starting with what is intact (file key: strict-recovery = true) (default: off)
    #[argh(switch)]
    pub strict_recovery: bool,

    /// shard threads, each with its own event loop (default: one per available core)
    #[argh(option, arg_name = "N")]
    pub shards: Option<usize>,

    /// event loop: auto, io-uring, epoll or tokio; auto uses io_uring when the kernel allows it
    /// and falls back to epoll (default: auto)
    #[argh(option, arg_name = "RUNTIME")]
    pub runtime: Option<Backend>,

    /// TOML config file; its keys are the flag names without the dashes in front (default: none)
    #[argh(option, arg_name = "FILE")]
    pub config: Option<PathBuf>,

    /// connections accepted across all shards before new ones are refused (default: 10000)
    #[argh(option, arg_name = "N")]
    pub max_connections: Option<usize>,

    /// new connections per second from one source address (a burst of as many is allowed);
    /// more are closed before anything is read from them, 0 = no limit (default: 0)
    #[argh(option, arg_name = "N")]
    pub max_connection_rate: Option<u32>,

    /// bytes each connection reads from its socket at a time; at least 512 (default: 8192)
    #[argh(option, arg_name = "BYTES")]
    pub read_buffer_size: Option<usize>,

    /// read buffers allocated at start, spread over the shards (default: 1000)
    #[argh(option, arg_name = "N")]
    pub initial_pool_size: Option<usize>,

    /// seconds a new connection may take to send CONNECT before it is closed, 1 to 3600
    /// (default: 20)
    #[argh(option, arg_name = "SECONDS")]
    pub connect_timeout: Option<u64>,

    /// seconds a disconnected MQTT 3.x session with clean session 0 is kept (default: 3600)
    #[argh(option, arg_name = "SECONDS")]
    pub session_expiry: Option<u32>,

    /// upper bound on the session expiry an MQTT 5 client may ask for, in seconds (default: the
    /// client's value is honoured)
    #[argh(option, arg_name = "SECONDS")]
    pub max_session_expiry: Option<u32>,

    /// largest keepalive accepted, in seconds, 1 to 65535 (default: 65535)
    #[argh(option, arg_name = "SECONDS")]
    pub max_keepalive: Option<u16>,

    /// seconds between sweeps of queued and retained messages for expired ones, 1 to 3600
    /// (default: 10)
    #[argh(option, arg_name = "SECONDS")]
    pub expiry_sweep_interval: Option<u64>,

    /// largest packet accepted, in bytes, 64 to 268435460 (the protocol's limit); announced
    /// to MQTT 5 clients (default: 33554432)
    #[argh(option, arg_name = "BYTES")]
    pub max_packet_size: Option<usize>,

    /// outbound QoS 1/2 messages in flight to one client, before its own receive maximum, 1 to
    /// 65535 (default: 1024)
    #[argh(option, arg_name = "N")]
    pub max_inflight: Option<u16>,

    /// messages queued per session beyond the in-flight window (default: 10000)
    #[argh(option, arg_name = "N")]
    pub max_queued_messages: Option<usize>,

    /// payload bytes queued per session beyond the in-flight window (default: 67108864)
    #[argh(option, arg_name = "BYTES")]
    pub max_queued_bytes: Option<usize>,

    /// bytes waiting in a connection's send buffer above which QoS 0 messages to it are
    /// dropped, 1024 to 1073741824 (default: 4194304)
    #[argh(option, arg_name = "BYTES")]
    pub max_outbound_buffer: Option<usize>,

    /// milliseconds a connected subscriber with a full queue may hold its publishers'
    /// acknowledgements back while acknowledging nothing itself; after that, messages beyond
    /// its queue are dropped for it. 0 never holds publishers back: a full queue drops at once
    /// (default: 1000)
    #[argh(option, arg_name = "MS")]
    pub subscriber_stall_timeout_ms: Option<u64>,

    /// bytes all send buffers and partly received large packets together may hold; beyond it
    /// QoS 0 messages go only to clients with less than 64 KiB unsent and large packets wait
    /// before they grow their buffer, at least 1048576 (default: 268435456)
    #[argh(option, arg_name = "BYTES")]
    pub buffer_budget: Option<usize>,

    /// unacknowledged QoS 1/2 publishes an MQTT 5 client may send the broker, 1 to 65535
    /// (default: 65535)
    #[argh(option, arg_name = "N")]
    pub receive_maximum: Option<u16>,

    /// topic aliases an MQTT 5 client may use towards the broker; 0 disables them (default: 10)
    #[argh(option, arg_name = "N")]
    pub topic_alias_maximum: Option<u16>,

    /// subscriptions one session may hold; 0 means no limit (default: 0)
    #[argh(option, arg_name = "N")]
    pub max_subscriptions_per_client: Option<usize>,

    /// levels a topic name or filter may have; 0 means no limit (default: 0)
    #[argh(option, arg_name = "N")]
    pub max_topic_levels: Option<usize>,

    /// retained messages sent for one SUBSCRIBE filter; 0 means no limit (default: 0)
    #[argh(option, arg_name = "N")]
    pub max_retained_per_subscribe: Option<usize>,

    /// topics with a retained message kept at most; a message for a new topic beyond it is not
    /// retained (MQTT 5 QoS 1/2: refused with 0x97); 0 means no limit (default: 0)
    #[argh(option, arg_name = "N")]
    pub max_retained_messages: Option<usize>,

    /// payload and topic bytes of all retained messages at most, likewise; 0 means no limit
    /// (default: 0)
    #[argh(option, arg_name = "BYTES")]
    pub max_retained_bytes: Option<usize>,

    /// whether retained messages are stored: true or false (default: true)
    #[argh(option, arg_name = "BOOL")]
    pub retain_available: Option<bool>,

    /// highest QoS granted to subscriptions and accepted on publishes: 0, 1 or 2 (default: 2)
    #[argh(option, arg_name = "QOS")]
    pub maximum_qos: Option<u8>,

    /// log level (error, warn, info, debug, trace, off) or a tracing filter such as
    /// "info,mqtt_broker::server=debug"; RUST_LOG overrides it (default: info)
    #[argh(option, arg_name = "LEVEL")]
    pub log_level: Option<String>,

    /// don't pin shard threads to cores, e.g. when sharing the machine (file key: no-pin = true)
    #[argh(switch)]
    pub no_pin: bool,
}

/// The resolved settings the broker runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The file the settings were read from, if any; for the startup log.
    pub config_file: Option<PathBuf>,
    pub listen: Vec<SocketAddr>,
    pub data_dir: PathBuf,
    pub persistence: PersistenceOptions,
    /// At least 1.
    pub shards: usize,
    /// As requested; [`Backend::resolve`] picks the concrete one at start.
    pub runtime: Backend,
    pub pin_cores: bool,
    pub read_buffer_size: usize,
    pub initial_pool_size: usize,
    pub connect_timeout: Duration,
    /// A level or an `EnvFilter` directive, already checked to parse.
    pub log_level: String,
    pub max_connections: usize,
    pub max_connection_rate: u32,
    pub session_expiry: u32,
    pub max_session_expiry: Option<u32>,
    pub max_keepalive: u16,
    pub expiry_sweep_interval: Duration,
    pub max_packet_size: usize,
    pub max_inflight: u16,
    pub max_queued_messages: usize,
    pub max_queued_bytes: usize,
    pub max_outbound_buffer: usize,
    pub subscriber_stall_timeout: Duration,
    pub buffer_budget: usize,
    pub receive_maximum: u16,
    pub topic_alias_maximum: u16,
    pub max_subscriptions_per_client: usize,
    pub max_topic_levels: usize,
    pub max_retained_per_subscribe: usize,
    pub max_retained_messages: usize,
    pub max_retained_bytes: usize,
    pub retain_available: bool,
    pub maximum_qos: QoS,
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
    #[error("config file {path}: unknown key {key:?}{}", suggestion.map(|known| format!(" (did you mean {known:?}?)")).unwrap_or_default())]
    UnknownKey {
        path: PathBuf,
        key: String,
        suggestion: Option<&'static str>,
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

/// The config file's keys; dashes are canonical, underscores are accepted as aliases because
/// they are what people type when they think of the Rust field names.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileSettings {
    listen: Option<Vec<String>>,
    #[serde(alias = "data_dir")]
    data_dir: Option<PathBuf>,
    fsync: Option<String>,
    #[serde(alias = "fsync_interval_ms")]
    fsync_interval_ms: Option<i64>,
    #[serde(alias = "snapshot_interval")]
    snapshot_interval: Option<i64>,
    #[serde(alias = "journal_max_bytes")]
    journal_max_bytes: Option<i64>,
    #[serde(alias = "strict_recovery")]
    strict_recovery: Option<bool>,
    shards: Option<i64>,
    runtime: Option<String>,
    #[serde(alias = "max_connections")]
    max_connections: Option<i64>,
    #[serde(alias = "max_connection_rate")]
    max_connection_rate: Option<i64>,
    #[serde(alias = "read_buffer_size")]
    read_buffer_size: Option<i64>,
    #[serde(alias = "initial_pool_size")]
    initial_pool_size: Option<i64>,
    #[serde(alias = "connect_timeout")]
    connect_timeout: Option<i64>,
    #[serde(alias = "session_expiry")]
    session_expiry: Option<i64>,
    #[serde(alias = "max_session_expiry")]
    max_session_expiry: Option<i64>,
    #[serde(alias = "max_keepalive")]
    max_keepalive: Option<i64>,
    #[serde(alias = "expiry_sweep_interval")]
    expiry_sweep_interval: Option<i64>,
    #[serde(alias = "max_packet_size")]
    max_packet_size: Option<i64>,
    #[serde(alias = "max_inflight")]
    max_inflight: Option<i64>,
    #[serde(alias = "max_queued_messages")]
    max_queued_messages: Option<i64>,
    #[serde(alias = "max_queued_bytes")]
    max_queued_bytes: Option<i64>,
    #[serde(alias = "max_outbound_buffer")]
    max_outbound_buffer: Option<i64>,
    #[serde(alias = "subscriber_stall_timeout_ms")]
    subscriber_stall_timeout_ms: Option<i64>,
    #[serde(alias = "buffer_budget")]
    buffer_budget: Option<i64>,
    #[serde(alias = "receive_maximum")]
    receive_maximum: Option<i64>,
    #[serde(alias = "topic_alias_maximum")]
    topic_alias_maximum: Option<i64>,
    #[serde(alias = "max_subscriptions_per_client")]
    max_subscriptions_per_client: Option<i64>,
    #[serde(alias = "max_topic_levels")]
    max_topic_levels: Option<i64>,
    #[serde(alias = "max_retained_per_subscribe")]
    max_retained_per_subscribe: Option<i64>,
    #[serde(alias = "max_retained_messages")]
    max_retained_messages: Option<i64>,
    #[serde(alias = "max_retained_bytes")]
    max_retained_bytes: Option<i64>,
    #[serde(alias = "retain_available")]
    retain_available: Option<bool>,
    #[serde(alias = "maximum_qos")]
    maximum_qos: Option<i64>,
    #[serde(alias = "log_level")]
    log_level: Option<String>,
    #[serde(alias = "no_pin")]
    no_pin: Option<bool>,
}

/// Every key [`FileSettings`] accepts, in dashed form. Checked before deserializing so an unknown
/// key gets a one-line error with a suggestion instead of serde's list of every field.
const KNOWN_KEYS: &[&str] = &[
    "listen",
    "data-dir",
    "fsync",
    "fsync-interval-ms",
    "snapshot-interval",
    "journal-max-bytes",
    "strict-recovery",
    "shards",
    "runtime",
    "max-connections",
    "max-connection-rate",
    "read-buffer-size",
    "initial-pool-size",
    "connect-timeout",
    "session-expiry",
    "max-session-expiry",
    "max-keepalive",
    "expiry-sweep-interval",
    "max-packet-size",
    "max-inflight",
    "max-queued-messages",
    "max-queued-bytes",
    "max-outbound-buffer",
    "subscriber-stall-timeout-ms",
    "buffer-budget",
    "receive-maximum",
    "topic-alias-maximum",
    "max-subscriptions-per-client",
    "max-topic-levels",
    "max-retained-per-subscribe",
    "max-retained-messages",
    "max-retained-bytes",
    "retain-available",
    "maximum-qos",
    "log-level",
    "no-pin",
];

/// Where a value came from, so an error can say which line of defence to fix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    Default,
    File,
    Flag,
}

/// Merges the three layers for one load.
struct Layers<'a> {
    file: FileSettings,
    path: Option<&'a Path>,
}

impl Layers<'_> {
    fn invalid(&self, key: &str, origin: Origin, problem: String) -> SettingsError {
        let setting = match (origin, self.path) {
            (Origin::File, Some(path)) => format!("config file {}: {key}", path.display()),
            (Origin::Default, _) => format!("the default {key}"),
            _ => format!("--{key}"),
        };
        SettingsError::Invalid { setting, problem }
    }

    fn pick<T>(flag: Option<T>, file: Option<T>, default: T) -> (T, Origin) {
        match (flag, file) {
            (Some(value), _) => (value, Origin::Flag),
            (None, Some(value)) => (value, Origin::File),
            (None, None) => (default, Origin::Default),
        }
    }

    /// An integer setting within `bound`. Flags already have their Rust type (argh rejects
    /// out-of-type values itself); file values are TOML's i64 and are range-checked here, so the
    /// message names the key instead of a Rust type.
    fn int<T, F>(
        &self,
        key: &str,
        flag: Option<F>,
        file: Option<i64>,
        default: T,
        bound: Bound,
    ) -> Result<T, SettingsError>
    where
        T: TryFrom<i64> + TryInto<i64>,
        F: TryInto<i64>,
    {
        let flag = flag.map(|value| value.try_into().unwrap_or(i64::MAX));
        let default = default.try_into().unwrap_or(i64::MAX);
        let (value, origin) = Self::pick(flag, file, default);
        let out_of_range = || self.invalid(key, origin, bound.problem(value));
        if !bound.contains(value) {
            return Err(out_of_range());
        }
        T::try_from(value).map_err(|_| out_of_range())
    }

    /// A duration setting given in whole seconds, within `bound`; [`Layers::int`] otherwise.
    fn seconds(
        &self,
        key: &str,
        flag: Option<u64>,
        file: Option<i64>,
        default: Duration,
        bound: Bound,
    ) -> Result<Duration, SettingsError> {
        let secs = self.int(key, flag, file, default.as_secs(), bound)?;
        Ok(Duration::from_secs(secs))
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
        let layers = Layers {
            file: match file {
                Some((path, text)) => parse_file(path, text)?,
                None => FileSettings::default(),
            },
            path: file.map(|(path, _)| path),
        };
        let defaults = Config::default();
        let f = &layers.file;
        let persistence = layers.persistence(&args)?;
        // One integer setting, by its field name: the same in `Args`, in the file and (for the
        // default, unless one is given) in the core's `Config`; the flag and key are its dashed
        // form.
        macro_rules! int {
            ($name:ident, $bound:expr) => {
                int!($name, defaults.$name, $bound)
            };
            ($name:ident, $default:expr, $bound:expr) => {
                layers.int(
                    &dashed(stringify!($name)),
                    args.$name,
                    f.$name,
                    $default,
                    $bound,
                )?
            };
        }
        // The same for a duration given in whole seconds.
        macro_rules! seconds {
            ($name:ident, $bound:expr) => {
                layers.seconds(
                    &dashed(stringify!($name)),
                    args.$name,
                    f.$name,
                    defaults.$name,
                    $bound,
                )?
            };
        }

        let listen = layers.listen(args.listen, f.listen.as_deref())?;
        let data_dir = Layers::pick(args.data_dir, f.data_dir.clone(), PathBuf::from("./data")).0;
        let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        let shards = int!(shards, cores, Bound::AtLeast(1));
        let runtime = layers.runtime(args.runtime, f.runtime.as_deref())?;
        let (log_level, origin) = Layers::pick(args.log_level, f.log_level.clone(), "info".into());
        if let Err(problem) = log_filter(&log_level) {
            return Err(layers.invalid("log-level", origin, problem));
        }
        let no_pin = Layers::pick(args.no_pin.then_some(true), f.no_pin, false).0;

        let maximum_qos = int!(maximum_qos, 2u8, Bound::OneOf(&[0, 1, 2]));
        let maximum_qos = QoS::from_u8(maximum_qos).unwrap_or(QoS::ExactlyOnce);
        let max_session_expiry = match (args.max_session_expiry, f.max_session_expiry) {
            (None, None) => None,
            (flag, file) => Some(layers.int("max-session-expiry", flag, file, 0u32, Bound::U32)?),
        };

        Ok(Settings {
            config_file: layers.path.map(Path::to_path_buf),
            listen,
            data_dir,
            persistence,
            shards,
            runtime,
            pin_cores: !no_pin,
            read_buffer_size: int!(read_buffer_size, 8192usize, Bound::AtLeast(512)),
            initial_pool_size: int!(initial_pool_size, 1000usize, Bound::AtLeast(0)),
            connect_timeout: seconds!(connect_timeout, Bound::Between(1, 3600)),
            log_level,
            max_connections: int!(max_connections, Bound::AtLeast(1)),
            max_connection_rate: int!(max_connection_rate, 0u32, Bound::U32),
            session_expiry: int!(session_expiry, Bound::U32),
            max_session_expiry,
            // 0 would mean "no keepalive" to the core, which is not a maximum.
            max_keepalive: int!(max_keepalive, Bound::NONZERO_U16),
            expiry_sweep_interval: seconds!(expiry_sweep_interval, Bound::Between(1, 3600)),
            // Below 64 bytes even a CONNECT with a short client id cannot get through.
            max_packet_size: int!(
                max_packet_size,
                Bound::Between(64, PROTOCOL_MAX_PACKET_SIZE)
            ),
            max_inflight: int!(max_inflight, Bound::NONZERO_U16),
            max_queued_messages: int!(max_queued_messages, Bound::AtLeast(0)),
            max_queued_bytes: int!(max_queued_bytes, Bound::AtLeast(0)),
            max_outbound_buffer: int!(max_outbound_buffer, Bound::Between(1024, 1 << 30)),
            subscriber_stall_timeout: Duration::from_millis(int!(
                subscriber_stall_timeout_ms,
                u64::try_from(defaults.stall_timeout.as_millis()).unwrap_or(u64::MAX),
                Bound::Between(0, 3_600_000)
            )),
            buffer_budget: int!(buffer_budget, Bound::AtLeast(1 << 20)),
            // MQTT 5 makes a Receive Maximum of 0 a protocol error.
            receive_maximum: int!(receive_maximum, Bound::NONZERO_U16),
            topic_alias_maximum: int!(topic_alias_maximum, Bound::U16),
            max_subscriptions_per_client: int!(max_subscriptions_per_client, Bound::AtLeast(0)),
            max_topic_levels: int!(max_topic_levels, Bound::AtLeast(0)),
            max_retained_per_subscribe: int!(max_retained_per_subscribe, Bound::AtLeast(0)),
            max_retained_messages: int!(max_retained_messages, Bound::AtLeast(0)),
            max_retained_bytes: int!(max_retained_bytes, Bound::AtLeast(0)),
            retain_available: Layers::pick(
                args.retain_available,
                f.retain_available,
                defaults.retain_available,
            )
            .0,
            maximum_qos,
        })
    }

    /// The broker core's tunables; those without a flag keep the core's defaults.
    pub fn broker_config(&self) -> Config {
        let defaults = Config::default();
        Config {
            max_connections: self.max_connections,
            max_packet_size: self.max_packet_size,
            // The pre-CONNECT limit guards against unauthenticated peers; it must never let
            // through more than the limit for connected clients.
            max_connect_packet_size: defaults.max_connect_packet_size.min(self.max_packet_size),
            connect_timeout: self.connect_timeout,
            session_expiry: self.session_expiry,
            max_session_expiry: self.max_session_expiry,
            max_keepalive: self.max_keepalive,
            receive_maximum: self.receive_maximum,
            max_inflight: self.max_inflight,
            max_queued_messages: self.max_queued_messages,
            max_queued_bytes: self.max_queued_bytes,
            max_outbound_buffer: self.max_outbound_buffer,
            stall_timeout: self.subscriber_stall_timeout,
            buffer_budget: self.buffer_budget,
            topic_alias_maximum: self.topic_alias_maximum,
            max_subscriptions_per_client: self.max_subscriptions_per_client,
            max_topic_levels: self.max_topic_levels,
            retain_available: self.retain_available,
            maximum_qos: self.maximum_qos,
            max_retained_per_subscribe: self.max_retained_per_subscribe,
            max_retained_messages: self.max_retained_messages,
            max_retained_bytes: self.max_retained_bytes,
            expiry_sweep_interval: self.expiry_sweep_interval,
            ..defaults
        }
    }

    /// What [`crate::server::run`] needs.
    pub fn server_options(&self) -> ServerOptions {
        ServerOptions {
            listen: self.listen.clone(),
            shards: self.shards,
            backend: self.runtime,
            pin_cores: self.pin_cores,
            read_buffer_size: self.read_buffer_size,
            initial_pool_size: self.initial_pool_size,
            max_connection_rate: self.max_connection_rate,
            broker: self.broker_config(),
            data_dir: self.data_dir.clone(),
            persistence: self.persistence.clone(),
        }
    }
}

impl Layers<'_> {
    fn listen(
        &self,
        flags: Vec<SocketAddr>,
        file: Option<&[String]>,
    ) -> Result<Vec<SocketAddr>, SettingsError> {
        let (listen, origin) = match (flags.is_empty(), file) {
            (false, _) => (flags, Origin::Flag),
            (true, Some(file)) => {
                let mut addrs = Vec::with_capacity(file.len());
                for addr in file {
                    addrs.push(addr.parse().map_err(|_| {
                        let problem = format!(
                            "has {addr:?}, which is not an IP:PORT address (host names are not resolved; use 0.0.0.0:1883 or [::]:1883 for every interface)"
                        );
                        self.invalid("listen", Origin::File, problem)
                    })?);
                }
                (addrs, Origin::File)
            }
            (true, None) => (
                vec![SocketAddr::from(([0, 0, 0, 0], 1883))],
                Origin::Default,
            ),
        };
        if listen.is_empty() {
            let problem = "must have at least one address, e.g. [\"0.0.0.0:1883\"]".into();
            return Err(self.invalid("listen", origin, problem));
        }
        // With SO_REUSEPORT a repeated address would bind twice without complaint and split
        // accepts between the two copies, which is never what was meant.
        let mut seen = BTreeSet::new();
        if let Some(repeated) = listen.iter().find(|addr| !seen.insert(**addr)) {
            let problem = format!("has {repeated} more than once");
            return Err(self.invalid("listen", origin, problem));
        }
        Ok(listen)
    }

    /// `--fsync`, `--fsync-interval-ms`, `--snapshot-interval`, `--journal-max-bytes` and
    /// `--strict-recovery`.
    fn persistence(&self, args: &Args) -> Result<PersistenceOptions, SettingsError> {
        let f = &self.file;
        let defaults = PersistenceOptions::default();
        let interval_ms = self.int(
            "fsync-interval-ms",
            args.fsync_interval_ms,
            f.fsync_interval_ms,
            u64::try_from(DEFAULT_FSYNC_INTERVAL.as_millis()).unwrap_or(u64::MAX),
            Bound::AtLeast(1),
        )?;
        let (mode, origin) = Layers::pick(args.fsync.clone(), f.fsync.clone(), "interval".into());
        let fsync = match mode.as_str() {
            "always" => Fsync::Always,
            "interval" => Fsync::Interval(Duration::from_millis(interval_ms)),
            "never" => Fsync::Never,
            other => {
                let problem = format!("must be always, interval or never, got {other:?}");
                return Err(self.invalid("fsync", origin, problem));
            }
        };
        Ok(PersistenceOptions {
            fsync,
            snapshot_interval: self.seconds(
                "snapshot-interval",
                args.snapshot_interval,
                f.snapshot_interval,
                defaults.snapshot_interval,
                Bound::AtLeast(1),
            )?,
            journal_max_bytes: self.int(
                "journal-max-bytes",
                args.journal_max_bytes,
                f.journal_max_bytes,
                defaults.journal_max_bytes,
                Bound::AtLeast(1),
            )?,
            strict_recovery: Layers::pick(
                args.strict_recovery.then_some(true),
                f.strict_recovery,
                false,
            )
            .0,
        })
    }

    fn runtime(&self, flag: Option<Backend>, file: Option<&str>) -> Result<Backend, SettingsError> {
        match (flag, file) {
            (Some(backend), _) => Ok(backend),
            (None, Some(name)) => name.parse().map_err(|problem| {
                self.invalid("runtime", Origin::File, format!("is invalid: {problem}"))
            }),
            (None, None) => Ok(Backend::Auto),
        }
    }
}

/// A field name as its flag and file key spell it.
fn dashed(name: &str) -> String {
    name.replace('_', "-")
}

/// Parses the config file, turning TOML's multi-line errors into one line with a line number.
fn parse_file(path: &Path, text: &str) -> Result<FileSettings, SettingsError> {
    let parse_error = |error: toml::de::Error| SettingsError::ParseConfig {
        path: path.to_path_buf(),
        line: error.span().map(|span| line_of(text, span.start)),
        // The file's fields are i64 and Vec only to defer range checks; say it in TOML's terms.
        message: error
            .message()
            .trim()
            .replace("expected i64", "expected an integer")
            .replace("expected a sequence", "expected an array"),
    };
    let table: toml::Table = toml::from_str(text).map_err(parse_error)?;
    for key in table.keys() {
        let dashed = key.replace('_', "-");
        if !KNOWN_KEYS.contains(&dashed.as_str()) {
            return Err(SettingsError::UnknownKey {
                path: path.to_path_buf(),
                key: key.clone(),
                suggestion: closest_key(&dashed),
            });
        }
    }
    toml::from_str(text).map_err(parse_error)
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&byte| byte == b'\n')
        .count()
        + 1
}

/// The known key a typo most likely meant, if any is close enough to be worth suggesting.
fn closest_key(key: &str) -> Option<&'static str> {
    KNOWN_KEYS
        .iter()
        .map(|known| (edit_distance(key, known), *known))
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
pub fn init_logging(level: &str) -> Result<(), SettingsError> {
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
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .try_init()
        .map_err(|error| SettingsError::Logging(format!("cannot install the logger: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn defaults() -> Settings {
        Settings::load(args(&[])).unwrap()
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let settings = defaults();
        assert_eq!(settings.listen, vec!["0.0.0.0:1883".parse().unwrap()]);
        assert_eq!(settings.data_dir, PathBuf::from("./data"));
        let cores = std::thread::available_parallelism().unwrap().get();
        assert_eq!(settings.shards, cores);
        assert_eq!(settings.runtime, Backend::Auto);
        assert!(settings.pin_cores);
        assert_eq!(settings.config_file, None);
        assert_eq!(settings.max_connections, 10_000);
        assert_eq!(settings.read_buffer_size, 8192);
        assert_eq!(settings.initial_pool_size, 1000);
        assert_eq!(settings.session_expiry, 3600);
        assert_eq!(settings.max_session_expiry, None);
        assert_eq!(settings.max_keepalive, 65_535);
        assert_eq!(settings.max_packet_size, 33_554_432);
        assert_eq!(settings.log_level, "info");
        assert_eq!(settings.max_inflight, 1024);
        assert_eq!(settings.max_queued_messages, 10_000);
        assert_eq!(settings.max_queued_bytes, 67_108_864);
        assert_eq!(settings.receive_maximum, 65_535);
        assert_eq!(settings.topic_alias_maximum, 10);
        assert_eq!(settings.max_subscriptions_per_client, 0);
        assert_eq!(settings.max_topic_levels, 0);
        assert!(settings.retain_available);
        assert_eq!(settings.maximum_qos, QoS::ExactlyOnce);
        assert_eq!(settings.connect_timeout, Duration::from_secs(20));
        assert_eq!(settings.max_outbound_buffer, 4_194_304);
        assert_eq!(settings.subscriber_stall_timeout, Duration::from_secs(1));
        assert_eq!(settings.buffer_budget, 268_435_456);
        assert_eq!(settings.max_retained_per_subscribe, 0);
        assert_eq!(settings.expiry_sweep_interval, Duration::from_secs(10));
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
        assert_eq!(described, KNOWN_KEYS.len(), "{help}");
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
        assert_eq!(settings.max_connections, 5);
        assert_eq!(settings.max_inflight, 16);
        assert_eq!(settings.runtime, Backend::Epoll);
        assert_eq!(settings.listen.len(), 2);
        assert!(!settings.pin_cores);
        assert!(settings.retain_available);
        assert_eq!(
            settings.max_queued_messages, 10_000,
            "untouched keys keep defaults"
        );
        assert_eq!(settings.config_file, Some(PathBuf::from("./x.toml")));

        let settings =
            with_file(&["--listen", "10.0.0.1:1883", "--runtime", "tokio"], toml).unwrap();
        assert_eq!(settings.listen, vec!["10.0.0.1:1883".parse().unwrap()]);
        assert_eq!(settings.runtime, Backend::Tokio);

        let toml = r#"
            connect-timeout = 5
            max-outbound-buffer = 65536
            max-retained-per-subscribe = 100
            expiry-sweep-interval = 60
        "#;
        let settings = with_file(&[], toml).unwrap();
        assert_eq!(settings.connect_timeout, Duration::from_secs(5));
        assert_eq!(settings.max_outbound_buffer, 65_536);
        assert_eq!(settings.max_retained_per_subscribe, 100);
        assert_eq!(settings.expiry_sweep_interval, Duration::from_secs(60));
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
        assert_eq!(settings.connect_timeout, Duration::from_secs(30));
        assert_eq!(settings.max_outbound_buffer, 1024);
        assert_eq!(settings.max_retained_per_subscribe, 0);
        assert_eq!(settings.expiry_sweep_interval, Duration::from_secs(1));
    }

    #[test]
    fn underscored_keys_are_accepted() {
        let settings = with_file(&[], "max_connections = 7\nlog_level = \"debug\"").unwrap();
        assert_eq!(settings.max_connections, 7);
        assert_eq!(settings.log_level, "debug");
        let settings = with_file(&[], "connect_timeout = 3\nmax_outbound_buffer = 2048").unwrap();
        assert_eq!(settings.connect_timeout, Duration::from_secs(3));
        assert_eq!(settings.max_outbound_buffer, 2048);
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
        let expected: Vec<SocketAddr> = vec![
            "127.0.0.1:1883".parse().unwrap(),
            "[::]:8883".parse().unwrap(),
        ];
        assert_eq!(settings.listen, expected);
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
            let message = init_logging("inf").unwrap_err().to_string();
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
        let config = settings.broker_config();
        assert_eq!(config.max_packet_size, 1024);
        assert_eq!(config.max_connect_packet_size, 1024);
        assert_eq!(config.maximum_qos, QoS::AtLeastOnce);
        assert_eq!(config.max_session_expiry, Some(60));
        assert!(!config.retain_available);
        assert_eq!(config.connect_timeout, Duration::from_secs(5));
        assert_eq!(config.max_outbound_buffer, 65_536);
        assert_eq!(config.max_retained_per_subscribe, 100);
        assert_eq!(config.expiry_sweep_interval, Duration::from_secs(60));

        let config = defaults().broker_config();
        let core = Config::default();
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
                if rest.contains('=') && KNOWN_KEYS.contains(&key) {
                    rest
                } else {
                    line
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let table: toml::Table = toml::from_str(&uncommented).unwrap();
        for key in KNOWN_KEYS {
            assert!(table.contains_key(*key), "the example config lacks {key}");
        }
        with_file(&[], &uncommented).unwrap();
    }

    #[test]
    fn every_known_key_is_a_file_field() {
        for key in KNOWN_KEYS {
            let underscored = key.replace('-', "_");
            for spelling in [key.to_string(), underscored] {
                let result = toml::from_str::<FileSettings>(&format!("{spelling} = 0"));
                if let Err(error) = result {
                    assert!(
                        !error.message().contains("unknown field"),
                        "{spelling}: {error}"
                    );
                }
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
        let keys: BTreeSet<String> = KNOWN_KEYS.iter().map(|key| format!("--{key}")).collect();
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
            let Some(stated) = stated.filter(|stated| !stated.contains(' ') && flag != "--config")
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
