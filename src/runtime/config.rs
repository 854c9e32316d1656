//! Messenger configuration: every knob, its default, and its Ceph option name.
//!
//! [`Config::set`] takes Ceph option names (`ms_tcp_nodelay`, `ms_initial_backoff`, …) so
//! that a `ceph.conf`-style list can be applied as is. Options Ceph does not have are
//! marked "simplemsgr" below; they still use the `ms_` prefix.
//!
//! | key | field | default | origin |
//! |---|---|---|---|
//! | `name` | [`Config::name`] | `client.-1` | simplemsgr |
//! | `ms_bind_addr` (comma separated) | [`Config::bind_addrs`] | none | simplemsgr |
//! | `ms_rwthread_stack_bytes` | [`Config::thread_stack_bytes`] | 256 KiB (≥ 64 KiB) | Ceph (default 1 MiB there) |
//! | `ms_tcp_listen_backlog` | [`Config::listen_backlog`] | 4096 | Ceph |
//! | `ms_tcp_nodelay` | [`Config::tcp_nodelay`] | true | Ceph |
//! | `ms_tcp_rcvbuf` / `ms_tcp_sndbuf` | [`Config::tcp_rcvbuf`] / [`Config::tcp_sndbuf`] | 0 = OS default | Ceph / simplemsgr |
//! | `ms_tcp_keepalive_time` | [`Config::tcp_keepalive`] | 60 s (0 = off) | simplemsgr |
//! | `ms_keepalive_interval` | [`Config::keepalive_interval`] | 10 s (0 = off) | simplemsgr |
//! | `ms_connection_idle_timeout` (alias `ms_tcp_read_timeout`) | [`Config::idle_timeout`] | 900 s | Ceph |
//! | `ms_standby_timeout` | [`Config::standby_timeout`] | 900 s | simplemsgr |
//! | `ms_connection_ready_timeout` (alias `ms_handshake_timeout`) | [`Config::handshake_timeout`] | 30 s | Ceph (10 s there) |
//! | `ms_initial_backoff` / `ms_max_backoff` | [`Config::initial_backoff`] / [`Config::max_backoff`] | 0.2 s / 15 s | Ceph |
//! | `ms_backoff_jitter` | [`Config::backoff_jitter`] | 0.2 | simplemsgr |
//! | `ms_dispatch_throttle_bytes` | [`Config::dispatch_throttle_bytes`] | 100 MiB | Ceph |
//! | `ms_dispatch_throttle_messages` | [`Config::dispatch_throttle_messages`] | 0 = unlimited | simplemsgr |
//! | `ms_max_front_len` / `ms_max_middle_len` / `ms_max_data_len` | `max_*_len` | 16 MiB / 16 MiB / 512 MiB | simplemsgr (docs/PROTOCOL.md §2.3) |
//! | `ms_crc_data`, `ms_crc_header` | [`Config::crc`] (checking only; plain frames always carry CRCs) | true | Ceph (one switch here) |
//! | `ms_chunk_yield` | [`Config::chunk_yield`] | true | simplemsgr |
//! | `ms_chunked_sockbuf` | [`Config::chunked_sockbuf`] | 128 KiB (0 = leave the OS default) | simplemsgr |
//! | `ms_chunked_notsent_lowat` | [`Config::chunked_notsent_lowat`] | 16 KiB (0 = off) | simplemsgr |
//! | `ms_max_connections` (`auto` = derived) | [`Config::max_connections`] | auto | simplemsgr |
//! | `ms_max_handshaking` | [`Config::max_handshaking`] | 256 | simplemsgr |
//! | `ms_handshake_evict_after` | [`Config::handshake_evict_after`] | 2 s (0 = never) | simplemsgr |
//! | `ms_max_connections_per_ip` | [`Config::max_connections_per_ip`] | 0 = unlimited | simplemsgr |
//! | `ms_inject_socket_failures` | [`FaultConfig::socket_failures`] | 0 = off | Ceph |
//! | `ms_inject_delay_max` | [`FaultConfig::delay_max`] | 1 s | Ceph |
//! | `ms_inject_delay_probability` | [`FaultConfig::delay_probability`] | 0 | Ceph |
//! | `ms_inject_internal_delays` | [`FaultConfig::internal_delays`] | 0 s | Ceph |
//! | `ms_inject_seed` | [`FaultConfig::seed`] | 0 = random (logged) | simplemsgr |
//!
//! Durations are given in seconds (fractions allowed: `0.2`); byte sizes as integers
//! with an optional `K`/`M`/`G` suffix (powers of 1024); booleans as
//! `true/false/1/0/yes/no/on/off`.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use super::fault::SeededRng;
use crate::wire::types::{EntityName, EntityType};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// Smallest accepted connection-thread stack. Below this, ordinary std and log
/// formatting paths risk overflowing.
pub const MIN_THREAD_STACK_BYTES: usize = 64 * KIB as usize;

/// Fault injection (testing only). All off by default.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultConfig {
    /// `ms_inject_socket_failures`: shut the socket down on about 1 in N reads; 0 = off.
    pub socket_failures: u64,
    /// `ms_inject_delay_max`: longest injected delay.
    pub delay_max: Duration,
    /// `ms_inject_delay_probability`: chance (0..=1) of a delay at each delay point.
    pub delay_probability: f64,
    /// `ms_inject_internal_delays`: fixed sleep at race-prone points; 0 = off.
    pub internal_delays: Duration,
    /// `ms_inject_seed`: seed of every injected fault; 0 = pick one at random and log it.
    pub seed: u64,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            socket_failures: 0,
            delay_max: Duration::from_secs(1),
            delay_probability: 0.0,
            internal_delays: Duration::ZERO,
            seed: 0,
        }
    }
}

impl FaultConfig {
    /// True if any fault can be injected.
    pub fn is_active(&self) -> bool {
        self.socket_failures > 0
            || (self.delay_probability > 0.0 && !self.delay_max.is_zero())
            || !self.internal_delays.is_zero()
    }
}

/// Everything the runtime can be told. See the module doc for keys and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Our entity name (`name`); `client.-1` until assigned.
    pub name: EntityName,
    /// Addresses to listen on (`ms_bind_addr`); empty = client only.
    pub bind_addrs: Vec<SocketAddr>,
    /// Stack size of each connection thread (`ms_rwthread_stack_bytes`), at least 64 KiB.
    pub thread_stack_bytes: usize,
    /// Listen backlog (`ms_tcp_listen_backlog`).
    pub listen_backlog: u32,
    /// Set TCP_NODELAY on every socket (`ms_tcp_nodelay`).
    pub tcp_nodelay: bool,
    /// SO_RCVBUF in bytes (`ms_tcp_rcvbuf`); 0 = OS default.
    pub tcp_rcvbuf: usize,
    /// SO_SNDBUF in bytes (`ms_tcp_sndbuf`); 0 = OS default.
    pub tcp_sndbuf: usize,
    /// Idle time before TCP keepalive probes (`ms_tcp_keepalive_time`); zero = off.
    pub tcp_keepalive: Duration,
    /// Interval of protocol keepalives on an idle connection (`ms_keepalive_interval`); zero = off.
    pub keepalive_interval: Duration,
    /// Close a connection that received nothing for this long (`ms_connection_idle_timeout`).
    pub idle_timeout: Duration,
    /// A `server` session whose peer has not come back after this long in standby is
    /// reset, releasing its thread and connection slot (`ms_standby_timeout`).
    pub standby_timeout: Duration,
    /// Give up on a handshake that takes longer (`ms_connection_ready_timeout`).
    pub handshake_timeout: Duration,
    /// First reconnect delay (`ms_initial_backoff`).
    pub initial_backoff: Duration,
    /// Largest reconnect delay (`ms_max_backoff`).
    pub max_backoff: Duration,
    /// Fraction (0..=1) by which each reconnect delay is randomly shortened (`ms_backoff_jitter`).
    pub backoff_jitter: f64,
    /// Bytes of received messages waiting for dispatch (`ms_dispatch_throttle_bytes`); 0 = unlimited.
    pub dispatch_throttle_bytes: u64,
    /// Received messages waiting for dispatch (`ms_dispatch_throttle_messages`); 0 = unlimited.
    pub dispatch_throttle_messages: u64,
    /// Largest accepted front section (`ms_max_front_len`).
    pub max_front_len: u32,
    /// Largest accepted middle section (`ms_max_middle_len`).
    pub max_middle_len: u32,
    /// Largest accepted data section (`ms_max_data_len`).
    pub max_data_len: u32,
    /// Check the CRCs of received msgr2 plain frames (`ms_crc_data`, `ms_crc_header`).
    /// Unlike Ceph's option this never stops the sending side from filling them: our
    /// wire contract (docs/PROTOCOL.md §6.1) makes every plain MSG carry its CRCs, and a
    /// peer would close the connection over one without. Off saves the receiver's pass
    /// over the bytes; nothing detects a corrupted plain frame then.
    pub crc: bool,
    /// While a large message goes out in chunks (structured data, docs/PROTOCOL.md §7),
    /// the connection's writer yields the CPU after each chunk it writes, and the
    /// receiving reader after each read that leaves a chunked message incomplete
    /// (`ms_chunk_yield`). On busy cores this lets the threads that carry small
    /// messages (the peer's reader, the sending application, the reply's way back)
    /// run between chunks instead of waiting for the scheduler to take the CPU away
    /// from a thread that never blocks, and keeps the writer from filling the socket
    /// buffers ahead of them: small-message latency during a transfer drops from
    /// milliseconds to about the time of the bytes queued ahead (BENCHMARKS.md,
    /// head-of-line blocking). Costs one `sched_yield` per chunk or read; with an
    /// idle core it returns at once.
    pub chunk_yield: bool,
    /// SO_SNDBUF and SO_RCVBUF of a connection once a chunked message goes either way
    /// on it (`ms_chunked_sockbuf`), for each of the two that `ms_tcp_sndbuf` /
    /// `ms_tcp_rcvbuf` leave to the OS; 0 = keep the OS's autotuned buffers. Bytes in
    /// the socket buffers are ahead of every small message queued behind a chunk, and
    /// autotuning grows them to megabytes during a bulk transfer (milliseconds of
    /// head-of-line delay); bounded, a small message waits for at most about this many
    /// bytes at each end. It also bounds the window: on a path whose bandwidth-delay
    /// product is larger, raise it or set the explicit buffer sizes. Never below two
    /// of the link's maximum segments (a smaller window stalls on TCP timers: on
    /// loopback, MSS 65,483, a 48 KiB bound made a 256 MiB transfer take 12 s instead of
    /// 0.4 s, and 64 KiB still stalled 13-16 ms in every run).
    pub chunked_sockbuf: usize,
    /// TCP_NOTSENT_LOWAT of a connection once a chunked message goes either way on it
    /// (`ms_chunked_notsent_lowat`, Linux; 0 = leave it alone): the writer blocks while
    /// more than this many bytes it wrote wait unsent in the socket, so chunks cannot
    /// pile up in the send buffer ahead of a small message, without shrinking the
    /// window as a smaller `ms_chunked_sockbuf` would. Where the OS lacks the option it
    /// is logged once per connection and ignored.
    pub chunked_notsent_lowat: usize,
    /// Most simultaneous connections (`ms_max_connections`); `None` = derived from
    /// [`ResourceLimits`](super::limits::ResourceLimits).
    pub max_connections: Option<usize>,
    /// Most connections in handshake at once (`ms_max_handshaking`).
    pub max_handshaking: usize,
    /// With all `ms_max_handshaking` slots taken, a new connection takes the slot of the
    /// oldest handshake that has run longer than this, which is cut
    /// (`ms_handshake_evict_after`; zero = never, refuse instead). Peers that open
    /// connections and never finish them then cannot keep others out.
    pub handshake_evict_after: Duration,
    /// Most connections from one peer IP (`ms_max_connections_per_ip`); 0 = unlimited.
    pub max_connections_per_ip: usize,
    /// Fault injection.
    pub fault: FaultConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: EntityName::new(EntityType::CLIENT, u64::MAX),
            bind_addrs: Vec::new(),
            thread_stack_bytes: 256 * KIB as usize,
            listen_backlog: 4096,
            tcp_nodelay: true,
            tcp_rcvbuf: 0,
            tcp_sndbuf: 0,
            tcp_keepalive: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(900),
            standby_timeout: Duration::from_secs(900),
            handshake_timeout: Duration::from_secs(30),
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(15),
            backoff_jitter: 0.2,
            dispatch_throttle_bytes: 100 * MIB,
            dispatch_throttle_messages: 0,
            max_front_len: (16 * MIB) as u32,
            max_middle_len: (16 * MIB) as u32,
            max_data_len: (512 * MIB) as u32,
            crc: true,
            chunk_yield: true,
            chunked_sockbuf: 128 * KIB as usize,
            chunked_notsent_lowat: 16 * KIB as usize,
            max_connections: None,
            max_handshaking: 256,
            handshake_evict_after: Duration::from_secs(2),
            max_connections_per_ip: 0,
            fault: FaultConfig::default(),
        }
    }
}

/// Why a configuration key or value was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The key is not an option we know.
    UnknownKey(String),
    /// The value does not parse as the type the key takes.
    BadValue {
        /// The option.
        key: &'static str,
        /// What was expected, e.g. "seconds".
        expected: &'static str,
        /// What was given.
        got: String,
    },
    /// The value parses but is out of range, or conflicts with another option.
    Invalid {
        /// The option.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::UnknownKey(k) => write!(f, "unknown option '{k}'"),
            ConfigError::BadValue { key, expected, got } => {
                write!(f, "{key}: expected {expected}, got '{got}'")
            }
            ConfigError::Invalid { key, reason } => write!(f, "{key}: {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Every key [`Config::set`] accepts, in the order of the module doc.
pub const KEYS: &[&str] = &[
    "name",
    "ms_bind_addr",
    "ms_rwthread_stack_bytes",
    "ms_tcp_listen_backlog",
    "ms_tcp_nodelay",
    "ms_tcp_rcvbuf",
    "ms_tcp_sndbuf",
    "ms_tcp_keepalive_time",
    "ms_keepalive_interval",
    "ms_connection_idle_timeout",
    "ms_standby_timeout",
    "ms_tcp_read_timeout",
    "ms_connection_ready_timeout",
    "ms_handshake_timeout",
    "ms_initial_backoff",
    "ms_max_backoff",
    "ms_backoff_jitter",
    "ms_dispatch_throttle_bytes",
    "ms_dispatch_throttle_messages",
    "ms_max_front_len",
    "ms_max_middle_len",
    "ms_max_data_len",
    "ms_crc_data",
    "ms_crc_header",
    "ms_chunk_yield",
    "ms_chunked_sockbuf",
    "ms_chunked_notsent_lowat",
    "ms_max_connections",
    "ms_max_handshaking",
    "ms_handshake_evict_after",
    "ms_max_connections_per_ip",
    "ms_inject_socket_failures",
    "ms_inject_delay_max",
    "ms_inject_delay_probability",
    "ms_inject_internal_delays",
    "ms_inject_seed",
];

impl Config {
    /// Set one option by its (Ceph) name. The value is parsed and range-checked on its
    /// own; cross-option checks are left to [`Config::validate`].
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let Some(&k) = KEYS.iter().find(|k| **k == key) else {
            return Err(ConfigError::UnknownKey(key.to_string()));
        };
        let v = value.trim();
        match k {
            "name" => {
                self.name = v
                    .parse()
                    .map_err(|_| bad(k, "an entity name such as client.4123", v))?
            }
            "ms_bind_addr" => {
                self.bind_addrs = v
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().map_err(|_| bad(k, "IP:PORT[,IP:PORT…]", v)))
                    .collect::<Result<_, _>>()?
            }
            "ms_rwthread_stack_bytes" => self.thread_stack_bytes = to_usize(k, parse_bytes(k, v)?)?,
            "ms_tcp_listen_backlog" => {
                self.listen_backlog = u32::try_from(parse_u64(k, v)?)
                    .ok()
                    .filter(|b| i32::try_from(*b).is_ok())
                    .ok_or_else(|| invalid(k, "must fit in a signed 32-bit int"))?
            }
            "ms_tcp_nodelay" => self.tcp_nodelay = parse_bool(k, v)?,
            "ms_tcp_rcvbuf" => self.tcp_rcvbuf = to_usize(k, parse_bytes(k, v)?)?,
            "ms_tcp_sndbuf" => self.tcp_sndbuf = to_usize(k, parse_bytes(k, v)?)?,
            "ms_tcp_keepalive_time" => self.tcp_keepalive = parse_secs(k, v)?,
            "ms_keepalive_interval" => self.keepalive_interval = parse_secs(k, v)?,
            "ms_connection_idle_timeout" | "ms_tcp_read_timeout" => {
                self.idle_timeout = parse_secs(k, v)?
            }
            "ms_standby_timeout" => self.standby_timeout = parse_secs(k, v)?,
            "ms_connection_ready_timeout" | "ms_handshake_timeout" => {
                self.handshake_timeout = parse_secs(k, v)?
            }
            "ms_initial_backoff" => self.initial_backoff = parse_secs(k, v)?,
            "ms_max_backoff" => self.max_backoff = parse_secs(k, v)?,
            "ms_backoff_jitter" => self.backoff_jitter = parse_ratio(k, v)?,
            "ms_dispatch_throttle_bytes" => self.dispatch_throttle_bytes = parse_bytes(k, v)?,
            "ms_dispatch_throttle_messages" => self.dispatch_throttle_messages = parse_u64(k, v)?,
            "ms_max_front_len" => self.max_front_len = to_u32(k, parse_bytes(k, v)?)?,
            "ms_max_middle_len" => self.max_middle_len = to_u32(k, parse_bytes(k, v)?)?,
            "ms_max_data_len" => self.max_data_len = to_u32(k, parse_bytes(k, v)?)?,
            "ms_crc_data" | "ms_crc_header" => self.crc = parse_bool(k, v)?,
            "ms_chunk_yield" => self.chunk_yield = parse_bool(k, v)?,
            "ms_chunked_sockbuf" => self.chunked_sockbuf = to_usize(k, parse_bytes(k, v)?)?,
            "ms_chunked_notsent_lowat" => {
                self.chunked_notsent_lowat = u32::try_from(parse_bytes(k, v)?)
                    .map_err(|_| invalid(k, "must be below 4 GiB"))?
                    as usize
            }
            "ms_max_connections" => {
                self.max_connections = match v {
                    "auto" | "none" | "" => None,
                    _ => Some(to_usize(k, parse_u64(k, v)?)?),
                }
            }
            "ms_max_handshaking" => self.max_handshaking = to_usize(k, parse_u64(k, v)?)?,
            "ms_handshake_evict_after" => self.handshake_evict_after = parse_secs(k, v)?,
            "ms_max_connections_per_ip" => {
                self.max_connections_per_ip = to_usize(k, parse_u64(k, v)?)?
            }
            "ms_inject_socket_failures" => self.fault.socket_failures = parse_u64(k, v)?,
            "ms_inject_delay_max" => self.fault.delay_max = parse_secs(k, v)?,
            "ms_inject_delay_probability" => self.fault.delay_probability = parse_ratio(k, v)?,
            "ms_inject_internal_delays" => self.fault.internal_delays = parse_secs(k, v)?,
            "ms_inject_seed" => self.fault.seed = parse_u64(k, v)?,
            _ => return Err(ConfigError::UnknownKey(key.to_string())),
        }
        Ok(())
    }

    /// Check ranges and the relations between options.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.thread_stack_bytes < MIN_THREAD_STACK_BYTES {
            return Err(invalid(
                "ms_rwthread_stack_bytes",
                &format!(
                    "{} is below the minimum of {MIN_THREAD_STACK_BYTES}",
                    self.thread_stack_bytes
                ),
            ));
        }
        if self.listen_backlog == 0 || i32::try_from(self.listen_backlog).is_err() {
            return Err(invalid(
                "ms_tcp_listen_backlog",
                "must be between 1 and 2^31-1",
            ));
        }
        for (key, d) in [
            ("ms_connection_idle_timeout", self.idle_timeout),
            ("ms_standby_timeout", self.standby_timeout),
            ("ms_connection_ready_timeout", self.handshake_timeout),
            ("ms_initial_backoff", self.initial_backoff),
            ("ms_max_backoff", self.max_backoff),
        ] {
            if d.is_zero() {
                return Err(invalid(key, "must be greater than zero"));
            }
        }
        if self.initial_backoff > self.max_backoff {
            return Err(invalid(
                "ms_initial_backoff",
                &format!(
                    "{}s is above ms_max_backoff ({}s)",
                    self.initial_backoff.as_secs_f64(),
                    self.max_backoff.as_secs_f64()
                ),
            ));
        }
        if !self.keepalive_interval.is_zero() && self.keepalive_interval >= self.idle_timeout {
            return Err(invalid(
                "ms_keepalive_interval",
                "must be shorter than ms_connection_idle_timeout, or an idle peer is dropped",
            ));
        }
        if !(0.0..=1.0).contains(&self.backoff_jitter) {
            return Err(invalid("ms_backoff_jitter", "must be between 0 and 1"));
        }
        for (key, v) in [
            ("ms_max_front_len", self.max_front_len),
            ("ms_max_middle_len", self.max_middle_len),
            ("ms_max_data_len", self.max_data_len),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be greater than zero"));
            }
        }
        if self.max_connections == Some(0) {
            return Err(invalid(
                "ms_max_connections",
                "must be at least 1 (or auto)",
            ));
        }
        if self.max_handshaking == 0 {
            return Err(invalid("ms_max_handshaking", "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.fault.delay_probability) {
            return Err(invalid(
                "ms_inject_delay_probability",
                "must be between 0 and 1",
            ));
        }
        Ok(())
    }

    /// The delay before reconnect attempt `attempt` (0-based): `ms_initial_backoff`
    /// doubled per attempt, capped at `ms_max_backoff`, then shortened by a random
    /// fraction of at most `backoff_jitter` so that peers that failed together do not
    /// retry together. The result never exceeds `ms_max_backoff`.
    pub fn backoff(&self, attempt: u32, rng: &mut SeededRng) -> Duration {
        let factor = 2f64.powi(attempt.min(64) as i32);
        let base = self.initial_backoff.as_secs_f64() * factor;
        let base = base.min(self.max_backoff.as_secs_f64());
        let jitter = self.backoff_jitter.clamp(0.0, 1.0) * rng.next_f64();
        Duration::from_secs_f64(base * (1.0 - jitter))
    }
}

fn bad(key: &'static str, expected: &'static str, got: &str) -> ConfigError {
    ConfigError::BadValue {
        key,
        expected,
        got: got.to_string(),
    }
}

fn invalid(key: &'static str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.to_string(),
    }
}

fn parse_bool(key: &'static str, v: &str) -> Result<bool, ConfigError> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(bad(key, "a boolean (true/false)", v)),
    }
}

fn parse_u64(key: &'static str, v: &str) -> Result<u64, ConfigError> {
    v.replace('_', "")
        .parse()
        .map_err(|_| bad(key, "a non-negative integer", v))
}

/// An integer with an optional binary suffix: `4096`, `64K`, `100M`, `1G`, `16MiB`.
fn parse_bytes(key: &'static str, v: &str) -> Result<u64, ConfigError> {
    let err = || bad(key, "bytes (an integer with optional K/M/G suffix)", v);
    let s = v.replace('_', "");
    let lower = s.to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (num, suffix) = lower.split_at(digits_end);
    let mult = match suffix.trim() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => KIB,
        "m" | "mb" | "mib" => MIB,
        "g" | "gb" | "gib" => 1024 * MIB,
        _ => return Err(err()),
    };
    let n: u64 = num.parse().map_err(|_| err())?;
    n.checked_mul(mult)
        .ok_or_else(|| invalid(key, &format!("'{v}' overflows 64 bits")))
}

/// Non-negative, finite seconds, fractions allowed.
fn parse_secs(key: &'static str, v: &str) -> Result<Duration, ConfigError> {
    let secs: f64 = v.parse().map_err(|_| bad(key, "seconds", v))?;
    if !secs.is_finite() || !(0.0..=1e9).contains(&secs) {
        return Err(bad(key, "seconds (between 0 and 1e9)", v));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_ratio(key: &'static str, v: &str) -> Result<f64, ConfigError> {
    match v.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(bad(key, "a number between 0 and 1", v)),
    }
}

fn to_usize(key: &'static str, n: u64) -> Result<usize, ConfigError> {
    usize::try_from(n).map_err(|_| invalid(key, &format!("{n} does not fit in usize")))
}

fn to_u32(key: &'static str, n: u64) -> Result<u32, ConfigError> {
    u32::try_from(n).map_err(|_| {
        invalid(
            key,
            &format!("{n} is above the wire maximum of {}", u32::MAX),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.thread_stack_bytes, 256 * 1024);
        assert_eq!(c.dispatch_throttle_bytes, 100 << 20);
        assert_eq!(c.max_data_len, 512 << 20);
        assert!(c.chunk_yield);
        assert_eq!(c.chunked_sockbuf, 128 * 1024);
        assert_eq!(c.chunked_notsent_lowat, 16 * 1024);
        assert!(!c.fault.is_active());
    }

    #[test]
    fn every_key_is_settable() {
        let sample = |k: &str| match k {
            "name" => "osd.3",
            "ms_bind_addr" => "127.0.0.1:0, [::1]:0",
            "ms_tcp_nodelay" | "ms_crc_data" | "ms_crc_header" | "ms_chunk_yield" => "false",
            "ms_backoff_jitter" | "ms_inject_delay_probability" => "0.5",
            "ms_max_connections" => "auto",
            _ => "128K",
        };
        for k in KEYS {
            let mut c = Config::default();
            let v = sample(k);
            let v = if c.set(k, v).is_err() { "2" } else { v };
            c.set(k, v).unwrap_or_else(|e| panic!("{k}={v}: {e}"));
        }
        let mut c = Config::default();
        c.set("name", "osd.3").unwrap();
        c.set("ms_bind_addr", "127.0.0.1:0, [::1]:0").unwrap();
        c.set("ms_initial_backoff", "0.5").unwrap();
        c.set("ms_tcp_read_timeout", "60").unwrap();
        c.set("ms_dispatch_throttle_bytes", "1M").unwrap();
        c.set("ms_inject_socket_failures", "500").unwrap();
        c.set("ms_chunk_yield", "off").unwrap();
        c.set("ms_chunked_sockbuf", "256K").unwrap();
        c.set("ms_chunked_notsent_lowat", "32K").unwrap();
        assert!(!c.chunk_yield);
        assert_eq!(c.chunked_sockbuf, 256 * 1024);
        assert_eq!(c.chunked_notsent_lowat, 32 * 1024);
        assert!(c.set("ms_chunked_notsent_lowat", "4G").is_err());
        assert_eq!(c.name.to_string(), "osd.3");
        assert_eq!(c.bind_addrs.len(), 2);
        assert_eq!(c.initial_backoff, Duration::from_millis(500));
        assert_eq!(c.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.dispatch_throttle_bytes, 1 << 20);
        assert!(c.fault.is_active());
        c.validate().unwrap();
    }

    #[test]
    fn set_errors_are_clear() {
        let mut c = Config::default();
        let cases: &[(&str, &str, &str)] = &[
            ("ms_bogus", "1", "unknown option 'ms_bogus'"),
            ("ms_initial_backoff", "abc", "ms_initial_backoff: expected seconds, got 'abc'"),
            ("ms_max_backoff", "-1", "ms_max_backoff: expected seconds (between 0 and 1e9), got '-1'"),
            ("ms_inject_delay_max", "inf", "ms_inject_delay_max: expected seconds (between 0 and 1e9), got 'inf'"),
            ("ms_tcp_nodelay", "maybe", "ms_tcp_nodelay: expected a boolean (true/false), got 'maybe'"),
            ("ms_inject_socket_failures", "x", "ms_inject_socket_failures: expected a non-negative integer, got 'x'"),
            ("ms_dispatch_throttle_bytes", "12Q", "ms_dispatch_throttle_bytes: expected bytes (an integer with optional K/M/G suffix), got '12Q'"),
            ("ms_dispatch_throttle_bytes", "99999999999999999999G", "ms_dispatch_throttle_bytes: expected bytes (an integer with optional K/M/G suffix), got '99999999999999999999G'"),
            ("ms_dispatch_throttle_bytes", "17179869184G", "ms_dispatch_throttle_bytes: '17179869184G' overflows 64 bits"),
            ("ms_max_data_len", "8G", "ms_max_data_len: 8589934592 is above the wire maximum of 4294967295"),
            ("ms_tcp_listen_backlog", "3000000000", "ms_tcp_listen_backlog: must fit in a signed 32-bit int"),
            ("ms_backoff_jitter", "1.5", "ms_backoff_jitter: expected a number between 0 and 1, got '1.5'"),
            ("ms_inject_delay_probability", "nan", "ms_inject_delay_probability: expected a number between 0 and 1, got 'nan'"),
            ("name", "bob", "name: expected an entity name such as client.4123, got 'bob'"),
            ("ms_bind_addr", "localhost", "ms_bind_addr: expected IP:PORT[,IP:PORT…], got 'localhost'"),
            ("ms_max_connections", "lots", "ms_max_connections: expected a non-negative integer, got 'lots'"),
        ];
        for (k, v, msg) in cases {
            let e = c.set(k, v).expect_err(k);
            assert_eq!(e.to_string(), *msg);
        }
        assert_eq!(c, Config::default(), "failed sets change nothing");
    }

    #[test]
    fn validate_errors_are_clear() {
        type Edit = fn(&mut Config);
        let cases: &[(Edit, &str)] = &[
            (|c| c.thread_stack_bytes = 1024, "ms_rwthread_stack_bytes: 1024 is below the minimum of 65536"),
            (|c| c.listen_backlog = 0, "ms_tcp_listen_backlog: must be between 1 and 2^31-1"),
            (|c| c.idle_timeout = Duration::ZERO, "ms_connection_idle_timeout: must be greater than zero"),
            (|c| c.handshake_timeout = Duration::ZERO, "ms_connection_ready_timeout: must be greater than zero"),
            (|c| c.initial_backoff = Duration::ZERO, "ms_initial_backoff: must be greater than zero"),
            (|c| c.max_backoff = Duration::ZERO, "ms_max_backoff: must be greater than zero"),
            (|c| c.initial_backoff = Duration::from_secs(20), "ms_initial_backoff: 20s is above ms_max_backoff (15s)"),
            (|c| c.keepalive_interval = Duration::from_secs(900), "ms_keepalive_interval: must be shorter than ms_connection_idle_timeout, or an idle peer is dropped"),
            (|c| c.backoff_jitter = -0.1, "ms_backoff_jitter: must be between 0 and 1"),
            (|c| c.max_front_len = 0, "ms_max_front_len: must be greater than zero"),
            (|c| c.max_middle_len = 0, "ms_max_middle_len: must be greater than zero"),
            (|c| c.max_data_len = 0, "ms_max_data_len: must be greater than zero"),
            (|c| c.max_connections = Some(0), "ms_max_connections: must be at least 1 (or auto)"),
            (|c| c.max_handshaking = 0, "ms_max_handshaking: must be at least 1"),
            (|c| c.fault.delay_probability = 2.0, "ms_inject_delay_probability: must be between 0 and 1"),
        ];
        for (edit, msg) in cases {
            let mut c = Config::default();
            edit(&mut c);
            assert_eq!(c.validate().unwrap_err().to_string(), *msg);
        }
        let c = Config {
            keepalive_interval: Duration::ZERO,
            ..Config::default()
        };
        c.validate().unwrap();
    }

    #[test]
    fn backoff_doubles_caps_and_jitters() {
        let mut c = Config {
            backoff_jitter: 0.0,
            ..Config::default()
        };
        let mut rng = SeededRng::new(7);
        assert_eq!(c.backoff(0, &mut rng), Duration::from_millis(200));
        assert_eq!(c.backoff(1, &mut rng), Duration::from_millis(400));
        assert_eq!(c.backoff(3, &mut rng), Duration::from_millis(1600));
        assert_eq!(c.backoff(10, &mut rng), Duration::from_secs(15));
        assert_eq!(c.backoff(u32::MAX, &mut rng), Duration::from_secs(15));
        c.backoff_jitter = 0.2;
        let mut seen_lower = false;
        for attempt in 0..200 {
            let d = c.backoff(attempt % 12, &mut rng);
            let base = (0.2 * 2f64.powi((attempt % 12) as i32)).min(15.0);
            assert!(d.as_secs_f64() <= base + 1e-9, "{d:?} above {base}");
            assert!(
                d.as_secs_f64() >= base * 0.8 - 1e-9,
                "{d:?} below 80% of {base}"
            );
            seen_lower |= d.as_secs_f64() < base * 0.99;
        }
        assert!(seen_lower, "jitter never shortened a delay");
    }
}
