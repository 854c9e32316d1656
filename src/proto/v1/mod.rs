//! The legacy v1 protocol as a sans-IO state machine, for both roles
//! (docs/PROTOCOL.md §10).
//!
//! The caller feeds bytes with [`V1Connection::handle_input`] and time with
//! [`V1Connection::handle_timeout`], and drains bytes to send with
//! [`V1Connection::poll_transmit`], events with [`V1Connection::poll_event`] and
//! the next deadline with [`V1Connection::poll_timeout`]. Nothing here reads a
//! clock or touches a socket.
//!
//! ```text
//!  client                                      server
//!  ------                                      ------
//!  (new) send banner                           (new) send banner + my addr + peer addr
//!  ExpectServerHello ── send my addr,connect   ExpectBanner ─> ExpectClientAddr
//!  ExpectConnectReply <─── reply ───────────── ExpectConnect ── decide_accept (accept.rs)
//!    RETRY_*/RESETSESSION: send connect again     FEATURES/BADPROTOVER/RETRY_*/WAIT/RESET: stay
//!    FEATURES/BADPROTOVER/WAIT: Closed(error)     READY ─────────────> Open
//!    READY ─> Open                                SEQ + le64 in_seq ─> ExpectPeerSeq ─> Open
//!    SEQ ─> ExpectSeq ── le64 ─> Open
//!  Open: MSG / ACK / KEEPALIVE(2)(_ACK) / CLOSE frames both ways
//! ```
//!
//! A client and a server walked through every handshake state, byte counts exact:
//!
//! ```
//! use std::time::Instant;
//! use simplemsgr::proto::v1::{V1Config, V1Connection, V1Event, V1Session};
//! use simplemsgr::wire::message::Message;
//! use simplemsgr::wire::types::{AddrType, EntityAddr, EntityName, EntityType};
//!
//! let now = Instant::now(); // time is an input; any value works
//! let mon = EntityAddr::new(AddrType::LEGACY, "127.0.0.1:6789".parse().unwrap(), 0);
//! let mut c = V1Connection::client(
//!     V1Config::mon_client(EntityName::new(EntityType::CLIENT, u64::MAX)), V1Session::new(), now);
//! let mut s = V1Connection::server(
//!     V1Config::mon_server(mon), V1Session::new(), "127.0.0.1:40000".parse().unwrap(), now);
//! let mut wire = |from: &mut V1Connection, to: &mut V1Connection| {
//!     let mut b = Vec::new();
//!     from.poll_transmit(&mut b);
//!     to.handle_input(&b, now);
//!     b.len()
//! };
//! assert_eq!(wire(&mut c, &mut s), 9); // "ceph v027"
//! assert_eq!(wire(&mut s, &mut c), 9 + 136 + 136); // banner, server addr, client addr seen
//! assert_eq!(wire(&mut c, &mut s), 136 + 33); // client addr, connect
//! assert_eq!(wire(&mut s, &mut c), 26 + 8); // connect_reply SEQ, le64 in_seq
//! assert_eq!(wire(&mut c, &mut s), 8); // le64 in_seq: both sides open
//! assert!(c.is_open() && s.is_open());
//! c.send(Message::new(17, vec![0; 60]));
//! assert_eq!(wire(&mut c, &mut s), 1 + 53 + 60 + 21); // tag, header, front, footer
//! assert!(matches!(s.poll_event(), Some(V1Event::Connected { .. })));
//! assert!(matches!(s.poll_event(), Some(V1Event::Message(m)) if m.ty == 17 && m.seq == 1));
//! ```

pub mod accept;
mod connection;
pub mod machine;
pub mod session;
#[cfg(test)]
mod tests;

use core::net::SocketAddr;
use std::collections::VecDeque;
use std::fmt;
use std::time::{Duration, Instant};

use log::{debug, trace};

pub use accept::{
    decide_accept, Accept, AcceptDecision, AcceptPolicy, ExistingSession, ExistingState, Incoming,
    OpenKind,
};
pub use connection::V1Connection;
pub use machine::{V1Handoff, V1LinkInfo, V1SessionConn};
pub use session::V1Session;

use crate::wire::message::Message;
use crate::wire::types::{AddrType, EntityAddr, EntityName, EntityType, Timespec};
use crate::wire::v1::banner::{encode_server_hello, read_banner, read_server_hello};
use crate::wire::v1::frame::{footer_flags, CrcError};
use crate::wire::v1::{
    features, protocol, ConnectMsg, ConnectReply, Frame, Limits, RawMsg, Tag, BANNER,
    CONNECT_FLAG_LOSSY,
};
use crate::wire::{Codec, DecodeError, Reader, WriteLe};

/// Which end of the TCP connection we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We opened the connection.
    Client,
    /// We accepted it.
    Server,
}

/// Settings of one v1 connection. `Debug` redacts the authorizer bytes.
#[derive(Clone)]
pub struct V1Config {
    /// Our name; its type is sent as `host_type` and its number as `header.src`.
    pub my_name: EntityName,
    /// Our address. A client with a blank address sends the IP the server saw, port 0.
    pub my_addr: EntityAddr,
    /// Features we support.
    pub features: u64,
    /// Features we require from the peer.
    pub required_features: u64,
    /// Protocol version for this peer pair (15 = client to monitor).
    pub protocol_version: u32,
    /// Client: ask for a lossy session. Server: our policy is lossy (we decide).
    pub lossy: bool,
    /// Server: our policy is `server` (we never reconnect; we win races).
    pub server_policy: bool,
    /// Server: detect peer session resets.
    pub resetcheck: bool,
    /// Server: require MSG_AUTH from peers presenting a cephx authorizer.
    pub cephx_require_signatures: bool,
    /// Client: authorizer protocol and bytes to send in connect.
    pub authorizer: (u32, Vec<u8>),
    /// The whole handshake must finish within this time.
    pub handshake_timeout: Duration,
    /// Send a keepalive this often while open (`None`: only on request).
    pub keepalive_interval: Option<Duration>,
    /// Section size limits.
    pub limits: Limits,
}

impl fmt::Debug for V1Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("V1Config")
            .field("my_name", &self.my_name)
            .field("my_addr", &self.my_addr)
            .field("features", &format_args!("0x{:x}", self.features))
            .field(
                "required_features",
                &format_args!("0x{:x}", self.required_features),
            )
            .field("protocol_version", &self.protocol_version)
            .field("lossy", &self.lossy)
            .field("server_policy", &self.server_policy)
            .field("resetcheck", &self.resetcheck)
            .field(
                "authorizer",
                &format_args!(
                    "protocol {} ({} bytes)",
                    self.authorizer.0,
                    self.authorizer.1.len()
                ),
            )
            .field("handshake_timeout", &self.handshake_timeout)
            .field("keepalive_interval", &self.keepalive_interval)
            .finish_non_exhaustive()
    }
}

impl V1Config {
    /// A client talking to a monitor: Pacific's full feature set, protocol 15, lossy.
    pub fn mon_client(my_name: EntityName) -> Self {
        V1Config {
            my_name,
            my_addr: EntityAddr::blank(AddrType::LEGACY, 0),
            features: features::PACIFIC_ALL,
            required_features: 0,
            protocol_version: protocol::MONC,
            lossy: true,
            server_policy: false,
            resetcheck: false,
            cephx_require_signatures: false,
            authorizer: (0, Vec::new()),
            handshake_timeout: Duration::from_secs(10),
            keepalive_interval: None,
            limits: Limits::default(),
        }
    }

    /// A server on `my_addr` answering like a monitor does for clients (stateless, lossy).
    pub fn mon_server(my_addr: EntityAddr) -> Self {
        V1Config {
            my_name: EntityName::new(EntityType::MON, 0),
            my_addr,
            server_policy: true,
            ..V1Config::mon_client(EntityName::new(EntityType::MON, 0))
        }
    }
}

/// Who ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initiator {
    /// This side, because of an error it detected.
    Local,
    /// The peer (CLOSE tag, end of stream).
    Peer,
    /// The user called [`V1Connection::close`].
    User,
}

/// Why a v1 connection failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum V1Error {
    /// The peer's bytes do not decode.
    Decode {
        /// The phase we were in.
        phase: &'static str,
        /// What was wrong.
        err: DecodeError,
    },
    /// The server answered BADPROTOVER.
    BadProtocolVersion {
        /// The version we sent.
        ours: u32,
        /// The version the server speaks.
        theirs: u32,
    },
    /// The server answered FEATURES: it requires features we did not offer.
    MissingFeatures {
        /// `reply.features & !ours`: the bits we lack.
        missing: u64,
        /// Everything the server announced.
        required: u64,
    },
    /// The peer lacks features we require.
    PeerLacksFeatures {
        /// The bits it lacks.
        missing: u64,
    },
    /// The server answered BADAUTHORIZER twice.
    BadAuthorizer,
    /// The server answered WAIT: its own connection to us wins.
    Wait,
    /// A tag that is not allowed in this phase.
    UnexpectedTag {
        /// The tag.
        tag: Tag,
        /// The phase.
        phase: &'static str,
    },
    /// A crc check failed.
    Crc(CrcError),
    /// The handshake did not finish in time.
    HandshakeTimeout {
        /// The phase we were waiting in.
        phase: &'static str,
    },
    /// The stream ended.
    UnexpectedEof {
        /// The phase we were in.
        phase: &'static str,
    },
    /// The peer sent CLOSE.
    PeerClosed,
}

impl fmt::Display for V1Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            V1Error::Decode { phase, err } => write!(f, "malformed v1 data while {phase}: {err}"),
            V1Error::BadProtocolVersion { ours, theirs } => {
                write!(f, "peer refused protocol version {ours} (BADPROTOVER); it speaks {theirs}")
            }
            V1Error::MissingFeatures { missing, required } => write!(
                f,
                "peer requires features 0x{missing:x} that we do not offer (FEATURES; its mask 0x{required:x})"
            ),
            V1Error::PeerLacksFeatures { missing } => write!(f, "peer lacks required features 0x{missing:x}"),
            V1Error::BadAuthorizer => f.write_str("peer rejected our authorizer (BADAUTHORIZER)"),
            V1Error::Wait => f.write_str("peer answered WAIT: its own connection to us wins the race"),
            V1Error::UnexpectedTag { tag, phase } => write!(f, "unexpected tag {tag} while {phase}"),
            V1Error::Crc(e) => write!(f, "{e}"),
            V1Error::HandshakeTimeout { phase } => write!(f, "handshake timed out while {phase}"),
            V1Error::UnexpectedEof { phase } => write!(f, "connection closed by peer while {phase}"),
            V1Error::PeerClosed => f.write_str("peer sent CLOSE"),
        }
    }
}

impl std::error::Error for V1Error {}

/// Why and by whom a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    /// Who ended it.
    pub initiator: Initiator,
    /// The error, if it was not an orderly close.
    pub error: Option<V1Error>,
}

/// What the connection reports to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum V1Event {
    /// The handshake finished; messages flow.
    Connected {
        /// The peer's address (from the address exchange; a blank IP is filled from the socket).
        peer_addr: EntityAddr,
        /// Client: our address as the server saw it. Server: our own address.
        my_addr_seen: EntityAddr,
        /// Server: the peer's `host_type`. Client: `None`.
        peer_type: Option<EntityType>,
        /// Negotiated features (ours & theirs).
        features: u64,
        /// The session is lossy (the server decided).
        lossy: bool,
        /// The session's connect_seq after this connection.
        connect_seq: u32,
        /// Server: how this connection relates to an existing session.
        open: Option<OpenKind>,
        /// The SEQ exchange was used.
        seq_exchange: bool,
    },
    /// A server answered a connect attempt with a non-final tag (RETRY_*, RESETSESSION, WAIT,
    /// FEATURES, BADPROTOVER, BADAUTHORIZER) and waits for another attempt.
    Refused {
        /// The tag we sent.
        tag: Tag,
        /// The table row that decided.
        row: u8,
    },
    /// A message arrived, in order.
    Message(Message),
    /// The peer echoed one of our KEEPALIVE2 stamps.
    KeepaliveAck {
        /// The stamp we sent.
        stamp: Timespec,
    },
    /// The server reset our session (RESETSESSION); queued and unacked messages were dropped.
    SessionReset,
    /// The connection is over. No more events follow.
    Closed(CloseReason),
}
