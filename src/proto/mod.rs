//! The per-connection protocol state machines, sans-IO.
//!
//! Nothing here reads a clock, spawns a thread or touches a socket. The shell
//! (see `runtime`) drives a [`Connection`] with four kinds of calls, in the manner
//! of quinn-proto:
//!
//! - inputs: `start_link` (a transport is up), `handle_input` (bytes arrived),
//!   `link_failed` (the transport broke), `handle_timeout` (a deadline passed),
//!   `send` (the application queued a message), `mark_down`;
//! - outputs, polled: `poll_transmit` (bytes to write), `poll_event`
//!   ([`Event`]s to act on), `poll_timeout` (the next deadline).
//!
//! One [`Connection`] is one *session* with a peer, and outlives the TCP
//! connections ("links") that carry it: a lossless session survives a broken link
//! by reconnecting and replaying ([`session`]). The server's decision when a peer
//! opens or resumes a session is the pure function [`accept::decide`].
//!
//! The legacy v1 protocol has a session machine with the same contract,
//! [`v1::V1SessionConn`]; [`AnyConnection`] is either one, and is what the runtime drives.
//!
//! ```text
//!  client link:  Banner ─► Auth ─► AuthDone ─► Ident ─► Start/ReconnectReply ─► Open
//!  server link:  Banner ─► SetMethod ─► Auth ─► AuthDone ─► Ident ─► Start/Reconnect
//!                        ─► (shell decides: accept::decide) ─► Open
//! ```

pub mod accept;
pub mod any;
pub(crate) mod core;
pub mod event;
pub(crate) mod fault;
pub mod msgr2;
pub mod policy;
pub mod session;
pub mod v1;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::auth::AuthConfig;
use crate::wire::msgr2::Limits;
use crate::wire::types::{AddrVec, EntityName};

pub use any::{AnyConnection, AnyHandoff};
pub use event::{AcceptRequest, Error, Event, Initiator, LinkId};
pub use msgr2::Connection;
pub use policy::{Policy, PolicyTable};

/// How frames are protected after authentication (docs/PROTOCOL.md §4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// No protection (the only mode auth NONE allows).
    Plain,
    /// HMAC-SHA256 on every frame.
    Signed,
    /// AES-128-GCM on every frame.
    Secure,
}

impl Mode {
    /// The AUTH_DONE flags for this mode.
    pub fn flags(self) -> u64 {
        match self {
            Mode::Plain => 0,
            Mode::Signed => crate::wire::msgr2::FLAG_SIGNED,
            Mode::Secure => crate::wire::msgr2::FLAG_ENCRYPTED,
        }
    }

    /// The mode that AUTH_DONE flags select, if they are valid.
    pub fn from_flags(flags: u64) -> Option<Mode> {
        match flags {
            0 => Some(Mode::Plain),
            f if f == crate::wire::msgr2::FLAG_SIGNED => Some(Mode::Signed),
            f if f == crate::wire::msgr2::FLAG_ENCRYPTED => Some(Mode::Secure),
            _ => None,
        }
    }

    /// Parse `plain`, `signed` or `secure`.
    pub fn from_name(s: &str) -> Option<Mode> {
        match s {
            "plain" => Some(Mode::Plain),
            "signed" => Some(Mode::Signed),
            "secure" => Some(Mode::Secure),
            _ => None,
        }
    }
}

/// A messenger-wide counter of connection attempts (Ceph's `global_seq`).
#[derive(Debug, Default)]
pub struct GlobalSeq(AtomicU64);

impl GlobalSeq {
    /// Raise the counter to at least `floor`, then return the next value.
    pub fn next(&self, floor: u64) -> u64 {
        self.0.fetch_max(floor, Ordering::Relaxed);
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// Everything a state machine needs to know about this side; shared by every
/// connection of one messenger.
#[derive(Debug, Clone)]
pub struct ProtoConfig {
    /// Our entity name (`client.4123`).
    pub name: EntityName,
    /// The addresses we advertise in IDENT (a blank address for an unbound client).
    pub addrs: AddrVec,
    /// Our protocol version (IDENT); a mismatch is refused with IDENT_BAD_PROTOCOL.
    pub protocol_version: u32,
    /// Ceph feature bits we support.
    pub features_supported: u64,
    /// Ceph feature bits every peer must support.
    pub features_required: u64,
    /// Banner protocol features we support.
    pub protocol_features: u64,
    /// Banner protocol features we require.
    pub protocol_features_required: u64,
    /// Auth methods, names and keys.
    pub auth: AuthConfig,
    /// As a client: the mode we ask for.
    pub mode: Mode,
    /// As a server: the weakest mode we accept. As a client: the weakest we accept.
    pub min_mode: Mode,
    /// Size limits on incoming frames.
    pub limits: Limits,
    /// Send KEEPALIVE2 this often on an open link (`None`: never).
    pub keepalive_interval: Option<Duration>,
    /// Close a link that received nothing for this long (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Close a link whose handshake has not finished after this long.
    pub handshake_timeout: Duration,
    /// First reconnect delay after a failed attempt.
    pub backoff_initial: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// How long a `server` session waits in standby for its peer before it expires.
    pub standby_timeout: Duration,
    /// Randomness (0..=1) in reconnect delays, so that peers that lost the same server
    /// at once do not return in lock-step: each backoff delay is shortened by a random
    /// fraction of up to this (see `proto::fault`).
    pub backoff_jitter: f64,
    /// Protected frames per direction and key before the link is closed and re-keyed.
    pub max_frames_per_key: u64,
    /// Check the CRCs of received plain MSG and CHUNK frames. Sent plain frames carry
    /// them either way (docs/PROTOCOL.md §6.1 requires it of every sender), so turning
    /// this off saves the receiving half only and stays compatible with every peer.
    pub crc: bool,
    /// Stop adding messages to one transmit batch beyond this many bytes.
    pub max_batch_bytes: usize,
    /// A standalone ACK goes out once this many received messages are unacknowledged…
    pub ack_every: u64,
    /// …or this long after the first of them arrived (otherwise acknowledgements ride
    /// on outgoing messages as `ack_seq`).
    pub ack_delay: Duration,
    /// The messenger's connection-attempt counter.
    pub global_seq: Arc<GlobalSeq>,
    /// Policies by peer type.
    pub policies: policy::PolicyTable,
    /// Structured data (docs/PROTOCOL.md §7): when the extension is negotiated, a message
    /// whose data section is larger than this travels in CHUNK frames of this size.
    /// 0 never chunks.
    pub chunk_size: usize,
    /// Where to write session keys for offline decryption (docs/PROTOCOL.md §11); `None`
    /// (the default) writes nothing. Keys never appear anywhere else.
    pub key_log: Option<Arc<dyn crate::crypto::KeyLog>>,
}

impl ProtoConfig {
    /// Defaults for an entity with the given name and addresses, auth NONE, plain mode.
    pub fn new(name: EntityName, addrs: AddrVec) -> Self {
        ProtoConfig {
            name,
            addrs,
            protocol_version: 1,
            features_supported: u64::MAX,
            features_required: 0,
            protocol_features: 0,
            protocol_features_required: 0,
            auth: AuthConfig::none(),
            mode: Mode::Plain,
            min_mode: Mode::Plain,
            limits: Limits::default(),
            keepalive_interval: Some(Duration::from_secs(10)),
            idle_timeout: Some(Duration::from_secs(900)),
            handshake_timeout: Duration::from_secs(30),
            backoff_initial: Duration::from_millis(200),
            backoff_max: Duration::from_secs(15),
            standby_timeout: Duration::from_secs(900),
            backoff_jitter: 0.2,
            max_frames_per_key: 1 << 32,
            crc: true,
            max_batch_bytes: 256 * 1024,
            ack_every: 64,
            ack_delay: Duration::from_millis(2),
            global_seq: Arc::new(GlobalSeq::default()),
            policies: policy::PolicyTable::default(),
            chunk_size: 64 * 1024,
            key_log: None,
        }
    }
}

#[cfg(test)]
mod tests;
