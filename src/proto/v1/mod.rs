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
pub use machine::{V1Handoff, V1SessionConn};
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    ExpectServerHello,
    ExpectConnectReply,
    ExpectSeq,
    ExpectBanner,
    ExpectClientAddr,
    ExpectConnect,
    ExpectPeerSeq,
    Open,
    Closed,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::ExpectServerHello => "waiting for the server banner and addresses",
            Phase::ExpectConnectReply => "waiting for connect_reply",
            Phase::ExpectSeq => "waiting for the server's in_seq after SEQ",
            Phase::ExpectBanner => "waiting for the client banner",
            Phase::ExpectClientAddr => "waiting for the client address",
            Phase::ExpectConnect => "waiting for connect",
            Phase::ExpectPeerSeq => "waiting for the client's in_seq after SEQ",
            Phase::Open => "open",
            Phase::Closed => "closed",
        }
    }
}

/// One v1 connection, either role.
#[derive(Debug)]
pub struct V1Connection {
    role: Role,
    cfg: V1Config,
    phase: Phase,
    session: V1Session,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
    events: VecDeque<V1Event>,
    queue: VecDeque<Message>,
    epoch: Instant,
    handshake_deadline: Instant,
    next_keepalive: Option<Instant>,
    keepalive_pending: bool,
    negotiated: u64,
    lossy: bool,
    peer_addr: Option<EntityAddr>,
    my_addr_seen: Option<EntityAddr>,
    socket_peer: Option<SocketAddr>,
    connect: Option<ConnectMsg>,
    reply: Option<ConnectReply>,
    open_kind: Option<OpenKind>,
    badauth_retried: bool,
    existing: Option<ExistingSession>,
    in_seq_acked: u64,
    last_now: Instant,
}

impl V1Connection {
    /// A client connection; the banner is queued at once (facts: the client does not wait).
    pub fn client(cfg: V1Config, session: V1Session, now: Instant) -> Self {
        let mut c = V1Connection::new(Role::Client, cfg, session, now, Phase::ExpectServerHello);
        c.outbuf.extend_from_slice(BANNER);
        c
    }

    /// A server connection for a socket accepted from `peer`; our banner and the two
    /// addresses are queued at once.
    pub fn server(cfg: V1Config, session: V1Session, peer: SocketAddr, now: Instant) -> Self {
        let mut c = V1Connection::new(Role::Server, cfg, session, now, Phase::ExpectBanner);
        c.socket_peer = Some(peer);
        let seen = EntityAddr::new(AddrType::LEGACY, peer, 0);
        let mine = c.cfg.my_addr;
        encode_server_hello(&mine, &seen, &mut c.outbuf);
        c
    }

    fn new(role: Role, cfg: V1Config, session: V1Session, now: Instant, phase: Phase) -> Self {
        let handshake_deadline = now + cfg.handshake_timeout;
        V1Connection {
            role,
            cfg,
            phase,
            session,
            inbuf: Vec::new(),
            outbuf: Vec::new(),
            events: VecDeque::new(),
            queue: VecDeque::new(),
            epoch: now,
            handshake_deadline,
            next_keepalive: None,
            keepalive_pending: false,
            negotiated: 0,
            lossy: false,
            peer_addr: None,
            my_addr_seen: None,
            socket_peer: None,
            connect: None,
            reply: None,
            open_kind: None,
            badauth_retried: false,
            existing: None,
            in_seq_acked: 0,
            last_now: now,
        }
    }

    /// Server: the existing session for this peer, as the decision table should see it.
    /// Set it before the connect message arrives (e.g. on [`V1Event::Refused`] or right
    /// after construction); `None` (the default) means no existing session.
    pub fn set_existing_session(&mut self, existing: Option<ExistingSession>) {
        self.existing = existing;
    }

    /// Change the name put in `header.src` of messages sent from now on (a client learns
    /// its number from the monitor's MAuthReply).
    pub fn set_my_name(&mut self, name: EntityName) {
        self.cfg.my_name = name;
    }

    /// Our role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// True once the handshake is done and until the connection closes.
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// True once the connection is closed.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Negotiated features (0 before the handshake finishes).
    pub fn features(&self) -> u64 {
        self.negotiated
    }

    /// The session state (sequence numbers, replay queue).
    pub fn session(&self) -> &V1Session {
        &self.session
    }

    /// Take the session out (e.g. to hand it to the next connection).
    pub fn into_session(self) -> V1Session {
        self.session
    }

    /// Bytes arrived from the peer.
    pub fn handle_input(&mut self, data: &[u8], now: Instant) {
        if self.phase == Phase::Closed {
            return;
        }
        self.last_now = now;
        self.inbuf.extend_from_slice(data);
        let buf = std::mem::take(&mut self.inbuf);
        let mut pos = 0;
        while self.phase != Phase::Closed {
            match self.step(&buf[pos..], now) {
                Ok(0) => break,
                Ok(n) => pos += n,
                Err(e) => {
                    self.fail(Initiator::Local, e);
                    break;
                }
            }
        }
        self.inbuf = buf;
        self.inbuf.drain(..pos.min(self.inbuf.len()));
        self.flush_acks();
    }

    /// The peer closed its end of the stream.
    pub fn handle_eof(&mut self) {
        if self.phase != Phase::Closed {
            let phase = self.phase.name();
            self.fail(Initiator::Peer, V1Error::UnexpectedEof { phase });
        }
    }

    /// Append bytes to send to `out`; false if there was nothing.
    pub fn poll_transmit(&mut self, out: &mut Vec<u8>) -> bool {
        if self.outbuf.is_empty() {
            return false;
        }
        out.append(&mut self.outbuf);
        true
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<V1Event> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.phase {
            Phase::Closed => None,
            Phase::Open => self.next_keepalive,
            _ => Some(self.handshake_deadline),
        }
    }

    /// Time passed; act on due deadlines.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.last_now = now;
        match self.phase {
            Phase::Closed => {}
            Phase::Open => {
                if let (Some(at), Some(every)) = (self.next_keepalive, self.cfg.keepalive_interval)
                {
                    if now >= at {
                        self.send_keepalive(now);
                        self.next_keepalive = Some(now + every);
                    }
                }
            }
            phase => {
                if now >= self.handshake_deadline {
                    self.fail(
                        Initiator::Local,
                        V1Error::HandshakeTimeout {
                            phase: phase.name(),
                        },
                    );
                }
            }
        }
    }

    /// Queue a message; it is sent once the connection is open.
    pub fn send(&mut self, msg: Message) {
        match self.phase {
            Phase::Closed => debug!(
                "v1: dropping message type 0x{:x}: connection closed",
                msg.ty
            ),
            Phase::Open => self.write_message(msg),
            _ => self.queue.push_back(msg),
        }
    }

    /// Send a keepalive (KEEPALIVE2 with a stamp if negotiated, else KEEPALIVE), now or
    /// as soon as the connection opens. The stamp is the time since this connection was made.
    pub fn send_keepalive(&mut self, now: Instant) {
        if self.phase != Phase::Open {
            self.keepalive_pending = true;
            return;
        }
        let frame = if self.negotiated & features::MSGR_KEEPALIVE2 != 0 {
            Frame::Keepalive2(Timespec::from_duration(
                now.saturating_duration_since(self.epoch),
            ))
        } else {
            Frame::Keepalive
        };
        trace!("v1 {:?}: send {:?}", self.role, frame.tag());
        frame.encode(&mut self.outbuf);
    }

    /// Close: send CLOSE if open, and report [`V1Event::Closed`] by the user.
    pub fn close(&mut self) {
        if self.phase == Phase::Closed {
            return;
        }
        if self.phase == Phase::Open {
            Frame::Close.encode(&mut self.outbuf);
        }
        self.phase = Phase::Closed;
        self.events.push_back(V1Event::Closed(CloseReason {
            initiator: Initiator::User,
            error: None,
        }));
    }

    fn fail(&mut self, initiator: Initiator, error: V1Error) {
        debug!("v1 {:?}: closing ({:?}): {error}", self.role, initiator);
        self.phase = Phase::Closed;
        self.events.push_back(V1Event::Closed(CloseReason {
            initiator,
            error: Some(error),
        }));
    }

    /// Try to consume one unit from `buf`: Ok(0) = need more bytes.
    fn step(&mut self, buf: &[u8], now: Instant) -> Result<usize, V1Error> {
        let phase = self.phase;
        let mut r = Reader::new(buf);
        let res = match phase {
            Phase::ExpectServerHello => self.on_server_hello(&mut r),
            Phase::ExpectConnectReply => self.on_connect_reply(&mut r),
            Phase::ExpectSeq => self.on_server_seq(&mut r, now),
            Phase::ExpectBanner => read_banner(&mut r).map_err(Into::into).map(|()| {
                self.phase = Phase::ExpectClientAddr;
            }),
            Phase::ExpectClientAddr => self.on_client_addr(&mut r),
            Phase::ExpectConnect => self.on_connect(&mut r, now),
            Phase::ExpectPeerSeq => self.on_peer_seq(&mut r, now),
            Phase::Open => return self.on_frame(buf),
            Phase::Closed => return Ok(0),
        };
        match res {
            Ok(()) => Ok(r.position()),
            Err(StepError::Decode(e)) if e.is_truncated() => Ok(0),
            Err(StepError::Decode(err)) => Err(V1Error::Decode {
                phase: phase.name(),
                err,
            }),
            Err(StepError::Proto(e)) => Err(e),
        }
    }

    fn on_server_hello(&mut self, r: &mut Reader<'_>) -> Result<(), StepError> {
        let (server, seen) = read_server_hello(r)?;
        self.peer_addr = Some(server);
        self.my_addr_seen = Some(seen);
        // Our address: as configured, or (blank) the IP the server saw with port 0.
        let mut mine = self.cfg.my_addr;
        if mine.is_blank() {
            if let Some(sa) = seen.addr {
                mine.addr = Some(SocketAddr::new(sa.ip(), 0));
            }
        }
        mine.encode_legacy(&mut self.outbuf);
        self.send_connect();
        self.phase = Phase::ExpectConnectReply;
        Ok(())
    }

    fn send_connect(&mut self) {
        if self.session.global_seq == 0 {
            self.session.global_seq = 1;
        }
        let c = ConnectMsg {
            features: self.cfg.features,
            host_type: self.cfg.my_name.ty.0.into(),
            global_seq: self.session.global_seq,
            connect_seq: self.session.connect_seq,
            protocol_version: self.cfg.protocol_version,
            authorizer_protocol: self.cfg.authorizer.0,
            flags: if self.cfg.lossy {
                CONNECT_FLAG_LOSSY
            } else {
                0
            },
            authorizer: self.cfg.authorizer.1.clone(),
        };
        trace!(
            "v1 client: send connect gseq {} cseq {} proto {}",
            c.global_seq,
            c.connect_seq,
            c.protocol_version
        );
        c.encode(&mut self.outbuf);
    }

    fn on_connect_reply(&mut self, r: &mut Reader<'_>) -> Result<(), StepError> {
        let reply = ConnectReply::read(r)?;
        trace!(
            "v1 client: got connect_reply {} gseq {} cseq {}",
            reply.tag,
            reply.global_seq,
            reply.connect_seq
        );
        match reply.tag {
            Tag::READY => self.client_open(reply, false),
            Tag::SEQ => {
                self.reply = Some(reply);
                self.phase = Phase::ExpectSeq;
            }
            Tag::FEATURES => {
                let missing = reply.features & !self.cfg.features;
                return Err(V1Error::MissingFeatures {
                    missing,
                    required: reply.features,
                }
                .into());
            }
            Tag::BADPROTOVER => {
                let e = V1Error::BadProtocolVersion {
                    ours: self.cfg.protocol_version,
                    theirs: reply.protocol_version,
                };
                return Err(e.into());
            }
            Tag::BADAUTHORIZER => {
                if self.badauth_retried {
                    return Err(V1Error::BadAuthorizer.into());
                }
                self.badauth_retried = true;
                self.send_connect();
            }
            Tag::RESETSESSION => {
                self.session.reset();
                self.queue.clear();
                self.events.push_back(V1Event::SessionReset);
                self.send_connect();
            }
            Tag::RETRY_SESSION => {
                self.session.connect_seq = reply.connect_seq;
                self.send_connect();
            }
            Tag::RETRY_GLOBAL => {
                self.session.bump_global_seq(reply.global_seq);
                self.send_connect();
            }
            Tag::WAIT => return Err(V1Error::Wait.into()),
            tag => {
                return Err(V1Error::UnexpectedTag {
                    tag,
                    phase: Phase::ExpectConnectReply.name(),
                }
                .into())
            }
        }
        Ok(())
    }

    fn on_server_seq(&mut self, r: &mut Reader<'_>, _now: Instant) -> Result<(), StepError> {
        let acked = r.le64("SEQ in_seq")?;
        self.session.ack(acked);
        let in_seq = self.session.in_seq;
        self.outbuf.put_le64(in_seq);
        let reply = self
            .reply
            .take()
            .ok_or(StepError::Proto(V1Error::UnexpectedTag {
                tag: Tag::SEQ,
                phase: Phase::ExpectSeq.name(),
            }))?;
        self.client_open(reply, true);
        Ok(())
    }

    fn client_open(&mut self, reply: ConnectReply, seq_exchange: bool) {
        let missing = self.cfg.required_features & !reply.features;
        if missing != 0 {
            self.fail(Initiator::Local, V1Error::PeerLacksFeatures { missing });
            return;
        }
        self.negotiated = reply.features & self.cfg.features;
        self.lossy = reply.flags & CONNECT_FLAG_LOSSY != 0;
        self.session.connect_seq = self.session.connect_seq.wrapping_add(1);
        let peer_addr = self
            .peer_addr
            .unwrap_or(EntityAddr::blank(AddrType::LEGACY, 0));
        let my_addr_seen = self
            .my_addr_seen
            .unwrap_or(EntityAddr::blank(AddrType::LEGACY, 0));
        self.events.push_back(V1Event::Connected {
            peer_addr,
            my_addr_seen,
            peer_type: None,
            features: self.negotiated,
            lossy: self.lossy,
            connect_seq: self.session.connect_seq,
            open: None,
            seq_exchange,
        });
        self.go_open();
    }

    fn on_client_addr(&mut self, r: &mut Reader<'_>) -> Result<(), StepError> {
        let mut a = EntityAddr::read_legacy(r)?;
        // A blank IP is filled in from the socket (facts §5.1); the port stays the client's.
        if a.is_blank() {
            if let Some(sp) = self.socket_peer {
                let port = a.addr.map(|x| x.port()).unwrap_or(0);
                a.addr = Some(SocketAddr::new(sp.ip(), port));
            }
        }
        self.peer_addr = Some(a);
        self.phase = Phase::ExpectConnect;
        Ok(())
    }

    fn on_connect(&mut self, r: &mut Reader<'_>, _now: Instant) -> Result<(), StepError> {
        let c = ConnectMsg::read(r)?;
        trace!(
            "v1 server: got connect gseq {} cseq {} proto {}",
            c.global_seq,
            c.connect_seq,
            c.protocol_version
        );
        let peer_addr = self
            .peer_addr
            .unwrap_or(EntityAddr::blank(AddrType::LEGACY, 0));
        let policy = AcceptPolicy {
            protocol_version: self.cfg.protocol_version,
            features_required: self.cfg.required_features,
            cephx_require_signatures: self.cfg.cephx_require_signatures,
            resetcheck: self.cfg.resetcheck,
            server: self.cfg.server_policy,
            my_addr: self.cfg.my_addr,
        };
        // An empty or "none" authorizer is accepted (v1 clients authenticate via MAuth);
        // we cannot verify any other kind, so it is refused.
        let authorizer_ok = c.authorizer_protocol == 0 || c.authorizer.is_empty();
        // A lossy server policy keeps no sessions: every connect opens a new one.
        let existing = if self.cfg.lossy { None } else { self.existing };
        let acc = decide_accept(
            &Incoming {
                connect: &c,
                peer_addr: &peer_addr,
                authorizer_ok,
            },
            &policy,
            existing.as_ref(),
        );
        debug!(
            "v1 server: connect from {peer_addr} -> row {} {:?}",
            acc.row, acc.decision
        );
        let mut reply = ConnectReply {
            tag: Tag::READY,
            features: self.cfg.features,
            global_seq: 0,
            connect_seq: 0,
            protocol_version: self.cfg.protocol_version,
            flags: 0,
            authorizer: Vec::new(),
        };
        let refuse = |tag| (tag, true);
        let (tag, refused) = match acc.decision {
            AcceptDecision::BadProtoVer => refuse(Tag::BADPROTOVER),
            AcceptDecision::Features { required } => {
                reply.features = (c.features & self.cfg.features) | required;
                refuse(Tag::FEATURES)
            }
            AcceptDecision::BadAuthorizer => refuse(Tag::BADAUTHORIZER),
            AcceptDecision::RetryGlobal { global_seq } => {
                reply.global_seq = global_seq;
                refuse(Tag::RETRY_GLOBAL)
            }
            AcceptDecision::RetrySession { connect_seq } => {
                reply.connect_seq = connect_seq;
                refuse(Tag::RETRY_SESSION)
            }
            AcceptDecision::Wait => refuse(Tag::WAIT),
            AcceptDecision::ResetSession => refuse(Tag::RESETSESSION),
            AcceptDecision::Open(kind) => {
                let peer_reset = matches!(
                    kind,
                    OpenKind::Replace {
                        peer_reset: true,
                        ..
                    }
                );
                let reset = peer_reset
                    || matches!(
                        kind,
                        OpenKind::New
                            | OpenKind::Replace {
                                reset_existing: true,
                                ..
                            }
                    );
                if reset {
                    let gseq = self.session.global_seq;
                    self.session.reset();
                    self.session.global_seq = gseq;
                }
                self.session.connect_seq = c.connect_seq.wrapping_add(1);
                self.session.peer_global_seq = c.global_seq;
                self.session.global_seq = self.session.global_seq.wrapping_add(1);
                self.negotiated = c.features & self.cfg.features;
                self.lossy = self.cfg.lossy;
                reply.global_seq = self.session.global_seq;
                reply.connect_seq = self.session.connect_seq;
                reply.flags = if self.lossy { CONNECT_FLAG_LOSSY } else { 0 };
                self.open_kind = Some(kind);
                let seq = self.negotiated & features::RECONNECT_SEQ != 0 && !peer_reset;
                (if seq { Tag::SEQ } else { Tag::READY }, false)
            }
        };
        reply.tag = tag;
        if refused {
            reply.flags = 0;
            reply.encode(&mut self.outbuf);
            self.events
                .push_back(V1Event::Refused { tag, row: acc.row });
            return Ok(());
        }
        reply.encode(&mut self.outbuf);
        self.connect = Some(c);
        if tag == Tag::SEQ {
            self.outbuf.put_le64(self.session.in_seq);
            self.phase = Phase::ExpectPeerSeq;
        } else {
            self.server_open(false);
        }
        Ok(())
    }

    fn on_peer_seq(&mut self, r: &mut Reader<'_>, _now: Instant) -> Result<(), StepError> {
        let acked = r.le64("SEQ newly_acked_seq")?;
        self.session.ack(acked);
        self.server_open(true);
        Ok(())
    }

    fn server_open(&mut self, seq_exchange: bool) {
        let peer_type = self.connect.as_ref().map(|c| EntityType(c.host_type as u8));
        self.events.push_back(V1Event::Connected {
            peer_addr: self
                .peer_addr
                .unwrap_or(EntityAddr::blank(AddrType::LEGACY, 0)),
            my_addr_seen: self.cfg.my_addr,
            peer_type,
            features: self.negotiated,
            lossy: self.lossy,
            connect_seq: self.session.connect_seq,
            open: self.open_kind,
            seq_exchange,
        });
        self.go_open();
    }

    fn go_open(&mut self) {
        if self.phase == Phase::Closed {
            return;
        }
        self.phase = Phase::Open;
        self.in_seq_acked = self.session.in_seq;
        // Replay what the peer has not acknowledged, with the original sequence numbers.
        let replay: Vec<(u64, Message)> = self.session.sent.iter().cloned().collect();
        for (seq, m) in replay {
            self.encode_message(&m, seq);
        }
        if self.keepalive_pending {
            self.keepalive_pending = false;
            self.send_keepalive(self.last_now);
        }
        while let Some(m) = self.queue.pop_front() {
            self.write_message(m);
        }
        if let Some(every) = self.cfg.keepalive_interval {
            self.next_keepalive = Some(self.last_now + every);
        }
    }

    fn with_sig(&self) -> bool {
        self.negotiated & features::MSG_AUTH != 0
    }

    fn write_message(&mut self, m: Message) {
        let seq = self.session.next_out_seq();
        self.encode_message(&m, seq);
        if !self.lossy {
            self.session.sent.push_back((seq, m));
        }
    }

    fn encode_message(&mut self, m: &Message, seq: u64) {
        let raw = RawMsg::from_message(m, seq, self.cfg.my_name, self.with_sig());
        trace!("v1 {:?}: send msg seq {seq} type 0x{:x}", self.role, m.ty);
        Frame::Msg(raw).encode(&mut self.outbuf);
    }

    fn on_frame(&mut self, buf: &[u8]) -> Result<usize, V1Error> {
        let parsed = Frame::parse(buf, self.with_sig(), &self.cfg.limits).map_err(|err| {
            V1Error::Decode {
                phase: Phase::Open.name(),
                err,
            }
        })?;
        let Some((frame, used)) = parsed else {
            return Ok(0);
        };
        match frame {
            Frame::Msg(raw) => self.on_message(raw)?,
            Frame::Ack(seq) => self.session.ack(seq),
            Frame::Keepalive => trace!("v1: keepalive"),
            Frame::Keepalive2(ts) => Frame::Keepalive2Ack(ts).encode(&mut self.outbuf),
            Frame::Keepalive2Ack(stamp) => self.events.push_back(V1Event::KeepaliveAck { stamp }),
            Frame::Close => {
                self.fail(Initiator::Peer, V1Error::PeerClosed);
            }
        }
        Ok(used)
    }

    fn on_message(&mut self, raw: RawMsg) -> Result<(), V1Error> {
        // A bad crc anywhere is a fault: the connection is dropped (facts §5.8).
        raw.verify().map_err(V1Error::Crc)?;
        if raw.footer.flags & footer_flags::COMPLETE == 0 {
            debug!("v1: dropping aborted message seq {}", raw.header.seq);
            return Ok(());
        }
        let seq = raw.header.seq;
        if seq <= self.session.in_seq {
            debug!(
                "v1: dropping old message seq {seq} (in_seq {})",
                self.session.in_seq
            );
            return Ok(());
        }
        if seq > self.session.in_seq + 1 {
            debug!(
                "v1: message seq {seq} skips from in_seq {}",
                self.session.in_seq
            );
        }
        self.session.in_seq = seq;
        self.events.push_back(V1Event::Message(raw.to_message()));
        Ok(())
    }

    fn flush_acks(&mut self) {
        if self.phase == Phase::Open && !self.lossy && self.session.in_seq > self.in_seq_acked {
            self.in_seq_acked = self.session.in_seq;
            Frame::Ack(self.in_seq_acked).encode(&mut self.outbuf);
        }
    }
}

enum StepError {
    Decode(DecodeError),
    Proto(V1Error),
}

impl From<DecodeError> for StepError {
    fn from(e: DecodeError) -> Self {
        StepError::Decode(e)
    }
}

impl From<V1Error> for StepError {
    fn from(e: V1Error) -> Self {
        StepError::Proto(e)
    }
}
