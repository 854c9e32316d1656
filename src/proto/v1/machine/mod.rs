//! A v1 *session* machine for the messenger runtime: the same call contract, events
//! and [`State`]s as [`crate::proto::msgr2::Connection`], over the legacy v1 wire
//! (banner and address exchange, `ceph_msg_connect` / `connect_reply`, SEQ exchange,
//! MSG/ACK/KEEPALIVE2 frames).
//!
//! One [`V1SessionConn`] is one session with a peer; it outlives its TCP links. The
//! sequence numbers, priority queue and replay queue are the shared
//! [`crate::proto::session::Session`], so a lossless v1 session has the same
//! exactly-once, in-order guarantee as an msgr2 one.
//!
//! The accept decision is the shell's, through [`crate::proto::accept::decide`]: a
//! `connect` becomes an [`AcceptRequest`] (after the machine's own checks of rows
//! 1–4 of v1's table: protocol version, features, authorizer) and the [`Decision`]
//! becomes the v1 reply tag:
//!
//! | Decision | reply |
//! |---|---|
//! | `New`, `Adopt { reset: false }` | SEQ + our in_seq (READY if the peer lacks RECONNECT_SEQ) |
//! | `Adopt { reset: true }` | READY (the peer's in_seq is meaningless after a reset) |
//! | `RetrySession(n)` | RETRY_SESSION, connect_seq n |
//! | `RetryGlobal(g)` | RETRY_GLOBAL, global_seq g |
//! | `Reset` | RESETSESSION |
//! | `Wait` | WAIT |
//!
//! v1 has no session cookies. To let `decide` apply v1's "the peer resumes a session
//! we no longer have" rows (Ceph's rows 12 and 14), an established v1 session
//! presents the fixed cookie [`V1_COOKIE`] in its [`ExistingView`] and a session that
//! never connected presents 0; a resuming `connect` (connect_seq > 0) presents
//! [`V1_COOKIE`]. A mismatch is decided `Reset` (RESETSESSION), as Ceph does with
//! `resetcheck`.
//!
//! | file | what lives there |
//! |---|---|
//! | `mod.rs` | the machine, its links, input/output, handoff between links |
//! | `client.rs` | the client half of the handshake |
//! | `server.rs` | the server half of the handshake |
//! | `tests.rs` | two machines over in-memory links |

mod client;
mod link;
mod server;

use core::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use log::{debug, info, trace, warn};

use crate::crypto::Random;
use crate::proto::accept::{Attempt, Decision, ExistingState, ExistingView};
use crate::proto::core::{random_cookie, session_api, SessionCore};
use crate::proto::event::{AcceptRequest, Error, Event, Initiator, LinkId};
use crate::proto::msgr2::{Peer, Role, State};
use crate::proto::session::Session;
use crate::proto::ProtoConfig;
use crate::wire::transmit::Transmit;
use crate::wire::types::{AddrType, AddrVec, EntityAddr, EntityName, EntityType, Timespec};
use crate::wire::v1::banner::{encode_server_hello, read_banner, read_server_hello};
use crate::wire::v1::frame::{footer_flags, MsgHeader, HEADER_LEN};
use crate::wire::v1::{
    features, protocol, ConnectMsg, ConnectReply, Frame, Limits, RawMsg, Tag, CONNECT_FLAG_LOSSY,
};
use crate::wire::{Codec, DecodeError, Reader, WriteLe};

use link::{Phase, V1Link};

/// The cookie an established v1 session presents to [`crate::proto::accept::decide`]
/// (v1 has none on the wire; see the module documentation).
pub const V1_COOKIE: u64 = 0x7631;

/// Most non-final connect replies (RETRY_*, RESETSESSION) one link accepts.
pub const MAX_RETRIES_PER_LINK: u32 = 16;

/// Read-buffer size to ask for when no message is in progress.
const DEFAULT_READ_HINT: usize = 64 * 1024;

/// A v1 link handed from an incoming connection to the existing session that adopts it.
#[derive(Debug)]
pub struct V1Handoff {
    link: V1Link,
    request: AcceptRequest,
}

/// The v1 protocol version Ceph uses between two entity types: the intra-cluster
/// value when both are of one type, else the client protocol of the accepting side's
/// type (`connecting`: we are the side that connects).
pub fn protocol_version_for(my_type: EntityType, peer_type: EntityType, connecting: bool) -> u32 {
    if my_type == peer_type {
        return match my_type {
            EntityType::MON => protocol::MON,
            EntityType::OSD => protocol::OSD,
            EntityType::MDS => protocol::MDS,
            _ => 0,
        };
    }
    let server = if connecting { peer_type } else { my_type };
    match server {
        EntityType::MON => protocol::MONC,
        EntityType::OSD => protocol::OSDC,
        EntityType::MDS => protocol::MDSC,
        _ => 0,
    }
}

/// What the current link's v1 handshake exchanged ([`V1SessionConn::link_info`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V1LinkInfo {
    /// The address the peer advertised: the server's (from its hello) as the client,
    /// the client's (before its `connect`) as the server.
    pub peer_addr: Option<EntityAddr>,
    /// Client: our address as the server saw it (from its hello). Server: `None`.
    pub addr_seen: Option<EntityAddr>,
    /// Negotiated features (ours & theirs); 0 until the connect exchange is done.
    pub features: u64,
    /// The handshake ended with the SEQ exchange (both sides have RECONNECT_SEQ).
    pub seq_exchange: bool,
    /// The handshake is complete and messages flow.
    pub open: bool,
}

/// One v1 session. The call contract is that of [`crate::proto::msgr2::Connection`].
pub struct V1SessionConn {
    /// The state every session has, whatever its protocol (shared with msgr2).
    core: SessionCore,
    link: Option<V1Link>,
    /// The protocol version to send and require instead of Ceph's per-type value.
    protocol_version: Option<u32>,
    /// Client: advertise the IP the server saw when our address is blank.
    learn_addr: bool,
}

impl V1SessionConn {
    session_api!();

    /// A session we initiate to `peer` (a `v1:` address). Emits [`Event::ReconnectDue`]
    /// at once.
    pub fn outgoing(
        cfg: Arc<ProtoConfig>,
        rng: Box<dyn Random>,
        peer: EntityAddr,
        peer_type: EntityType,
        now: Instant,
    ) -> Self {
        let peer = Peer {
            addr: peer,
            ty: peer_type,
            name: None,
            addrs: AddrVec(vec![peer]),
            features: 0,
        };
        V1SessionConn {
            core: SessionCore::outgoing(cfg, rng, peer, now),
            link: None,
            protocol_version: None,
            learn_addr: false,
        }
    }

    /// A transport a v1 peer connected to us from `socket_peer`. Our banner and the two
    /// addresses are queued at once.
    pub fn incoming(
        cfg: Arc<ProtoConfig>,
        rng: Box<dyn Random>,
        link_id: LinkId,
        socket_peer: SocketAddr,
        now: Instant,
    ) -> Self {
        let mut link = V1Link::new(link_id, Role::Server, now);
        link.socket_peer = Some(socket_peer);
        let mut hello = Vec::new();
        let seen = EntityAddr::new(AddrType::LEGACY, socket_peer, 0);
        encode_server_hello(&legacy(my_addr(&cfg)), &seen, &mut hello);
        link.out.push_copy(&hello);
        V1SessionConn {
            core: SessionCore::incoming(cfg, rng, now),
            link: Some(link),
            protocol_version: None,
            learn_addr: false,
        }
    }

    // ----- inputs -------------------------------------------------------------

    /// A new transport to the peer is up: send our banner (the client does not wait).
    pub fn start_link(&mut self, link_id: LinkId, now: Instant) {
        if !matches!(
            self.core.state,
            State::Connecting | State::Standby | State::Wait
        ) {
            debug!(
                "[{}] v1 start_link in state {:?} ignored",
                self.core.peer.addr, self.core.state
            );
            return;
        }
        if let Some(old) = self.link.take() {
            self.push_link_closed(
                old,
                Error::Transport("superseded by a new connection".into()),
                Initiator::Local,
            );
        }
        self.core.state = State::Connecting;
        self.core.reconnect_at = None;
        self.core.session.global_seq = self.core.cfg.global_seq.next(0);
        let mut link = V1Link::new(link_id, Role::Client, now);
        link.out.push_copy(crate::wire::v1::BANNER);
        self.link = Some(link);
        if let Some(e) = v1_unusable(&self.core.cfg, false) {
            self.fail_link(now, e, Initiator::Local);
        }
    }

    /// Bytes arrived on `link_id`; see [`crate::proto::msgr2::Connection::handle_input`].
    pub fn handle_input(&mut self, link_id: LinkId, data: &mut BytesMut, now: Instant) -> usize {
        match &mut self.link {
            Some(link) if link.id == link_id => {
                if link.inbuf.is_empty() {
                    std::mem::swap(&mut link.inbuf, data);
                } else {
                    link.inbuf.extend_from_slice(data);
                    data.clear();
                }
                link.last_rx = now;
            }
            _ => {
                data.clear();
                return DEFAULT_READ_HINT;
            }
        }
        self.process_input(now);
        match &mut self.link {
            Some(link) if link.id == link_id => {
                let hint = read_hint(link);
                std::mem::swap(&mut link.inbuf, data);
                hint
            }
            _ => DEFAULT_READ_HINT,
        }
    }

    /// The transport `link_id` failed.
    pub fn link_failed(&mut self, link_id: LinkId, error: Error, now: Instant) {
        if self.link.as_ref().is_some_and(|l| l.id == link_id) {
            self.fail_link(now, error, Initiator::Peer);
        }
    }

    /// A deadline from [`V1SessionConn::poll_timeout`] passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        let clock = self.link.as_ref().map(|l| l.clock());
        if let Some(error) = self.core.handle_timers(now, clock) {
            self.fail_link(now, error, Initiator::Local);
        }
    }

    /// Close the session: send CLOSE on an open link, drop every queued message.
    pub fn mark_down(&mut self, _now: Instant) {
        if let Some(link) = self.link.take() {
            self.push_link_closed(link, Error::MarkedDown, Initiator::User);
        }
        self.core.close();
    }

    /// v1 has no auth-method negotiation: ignored.
    pub fn set_preferred_method(&mut self, _method: Option<u32>) {}

    /// Send and require protocol version `version` instead of the one Ceph uses between
    /// the two entity types ([`protocol_version_for`]); a peer that disagrees answers,
    /// or is answered, BADPROTOVER.
    pub fn set_protocol_version(&mut self, version: u32) {
        self.protocol_version = Some(version);
    }

    /// Client: when our address is blank (unbound), advertise the IP the server saw
    /// (from its hello) with port 0 and our nonce, as Ceph's own clients do, instead of
    /// the blank address. Off by default: the messenger keys an unbound peer's session
    /// by nonce only while its address is blank.
    pub fn advertise_learned_addr(&mut self) {
        self.learn_addr = true;
    }

    /// Put `name` in `header.src` of the messages sent from now on (a monitor client
    /// learns its number from the monitor's MAuthReply). The type should stay the same:
    /// the peer already knows it from `connect`.
    pub fn set_my_name(&mut self, name: EntityName) {
        Arc::make_mut(&mut self.core.cfg).name = name;
    }

    /// Send a keepalive on the current link, now or as soon as its handshake completes:
    /// KEEPALIVE2 stamped with the time since this session was made (its echo sets
    /// [`V1SessionConn::last_keepalive_ack`]), or KEEPALIVE if the peer lacks
    /// KEEPALIVE2. Without a link there is nothing to keep alive: ignored.
    pub fn send_keepalive(&mut self) {
        if let Some(link) = &mut self.link {
            link.keepalive_requested = true;
        }
    }

    // ----- outputs ------------------------------------------------------------

    /// Bytes to write on `link_id`; `out` must be empty.
    pub fn poll_transmit(&mut self, link_id: LinkId, now: Instant, out: &mut Transmit) -> bool {
        if !out.is_empty() {
            return true;
        }
        if let Some(any) = self.core.take_farewell(link_id, out) {
            return any;
        }
        if !self.link.as_ref().is_some_and(|l| l.id == link_id) {
            return false;
        }
        self.fill_transmit(now);
        if let Some(link) = &mut self.link {
            std::mem::swap(out, &mut link.out);
        }
        !out.is_empty()
    }

    /// The next deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self.core.session_deadline();
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some(link) = &self.link {
            if let Some(t) = self.core.link_deadline(link.clock()) {
                consider(t);
            }
        }
        next
    }

    // ----- queries ------------------------------------------------------------

    /// The current link, if any.
    pub fn link_id(&self) -> Option<LinkId> {
        self.link.as_ref().map(|l| l.id)
    }

    /// What the current link's handshake exchanged so far, if there is a link.
    pub fn link_info(&self) -> Option<V1LinkInfo> {
        self.link.as_ref().map(|l| V1LinkInfo {
            peer_addr: l.peer_addr,
            addr_seen: l.addr_seen,
            features: l.features,
            seq_exchange: l.seq_exchange,
            open: l.is_open(),
        })
    }

    /// True if the link `id` is current and has bytes or messages to send.
    pub fn wants_transmit(&self, id: LinkId) -> bool {
        self.core.has_farewell(id)
            || self.link.as_ref().is_some_and(|l| {
                l.id == id
                    && (!l.out.is_empty()
                        || (l.is_open()
                            && (self.core.session.has_outgoing()
                                || (self.core.session.ack_pending() && !self.core.session.lossy)
                                || l.keepalive_ack_due.is_some()
                                || l.keepalive_requested)))
            })
    }

    /// v1 sessions authenticate (if at all) inside messages: always auth NONE here.
    pub fn auth_method(&self) -> u32 {
        crate::wire::msgr2::AUTH_NONE
    }

    /// The view [`crate::proto::accept::decide`] needs of this session.
    pub fn existing_view(&self) -> Option<ExistingView> {
        let state = match self.core.state {
            State::Connecting => ExistingState::Connecting,
            State::Open | State::Standby => ExistingState::Established,
            State::Wait => ExistingState::Waiting,
            State::Accepting | State::Closed => return None,
        };
        Some(ExistingView {
            state,
            lossy: self.core.session.lossy,
            connect_seq: self.core.session.connect_seq,
            peer_global_seq: self.core.session.peer_global_seq,
            cookie: if self.core.session.connect_seq > 0 {
                V1_COOKIE
            } else {
                0
            },
        })
    }

    // ----- the shell's accept decision ----------------------------------------

    /// Apply the session table's decision to this incoming connection.
    pub fn decide_accept(&mut self, decision: Decision, now: Instant) {
        let r = match decision {
            Decision::New => self.server_accept_new(now),
            Decision::Adopt { .. } => Err(Error::PeerMisbehaved(
                "internal: adopt on the incoming connection",
            )),
            other => {
                self.server_refuse(other);
                Ok(())
            }
        };
        if let Err(e) = r {
            self.fail_link(now, e, Initiator::Local);
        }
        self.process_input(now);
    }

    /// Take this incoming connection's link for adoption by an existing session.
    pub fn take_handoff(&mut self) -> Option<V1Handoff> {
        let mut link = self.link.take()?;
        let request = link.pending.take()?;
        self.core.state = State::Closed;
        Some(V1Handoff { link, request })
    }

    /// Adopt an incoming link into this existing session, resetting it first if `reset`.
    pub fn adopt(&mut self, handoff: V1Handoff, reset: bool, now: Instant) {
        let V1Handoff { link, request } = handoff;
        if let Some(old) = self.link.take() {
            self.push_link_closed(
                old,
                Error::Transport("replaced by the peer's new connection".into()),
                Initiator::Peer,
            );
        }
        if reset {
            self.core.reset_for_adopted_link();
        } else {
            self.core.session.requeue_sent();
        }
        self.core.peer.ty = request.peer_type;
        self.core.peer.addrs = request.peer_addrs.clone();
        self.link = Some(link);
        self.server_open_session(&request, reset, now);
        self.process_input(now);
    }

    // ----- internals: input ---------------------------------------------------

    fn process_input(&mut self, now: Instant) {
        loop {
            let Some(link) = &mut self.link else { return };
            if link.phase == Phase::AwaitDecision || link.inbuf.is_empty() {
                return;
            }
            let phase = link.phase;
            match self.step(now) {
                Ok(true) => {}
                Ok(false) => return,
                Err(e) => {
                    debug!(
                        "[{}] v1 error while {}: {e}",
                        self.core.peer.addr,
                        phase.name()
                    );
                    let initiator = if matches!(&e, Error::Closed { .. })
                        || matches!(&e, Error::Transport(_))
                    {
                        Initiator::Peer
                    } else {
                        Initiator::Local
                    };
                    self.fail_link(now, e, initiator);
                    return;
                }
            }
        }
    }

    /// Consume one unit of input. Ok(false): need more bytes.
    fn step(&mut self, now: Instant) -> Result<bool, Error> {
        let Some(link) = &mut self.link else {
            return Ok(false);
        };
        let phase = link.phase;
        if phase == Phase::Open {
            return self.open_step(now);
        }
        let buf = std::mem::take(&mut link.inbuf);
        let mut r = Reader::new(&buf);
        let res = match phase {
            Phase::ExpectServerHello => read_server_hello(&mut r).map(Unit::Hello),
            Phase::ExpectConnectReply => ConnectReply::read(&mut r).map(Unit::Reply),
            Phase::ExpectSeq | Phase::ExpectPeerSeq => r.le64("SEQ in_seq").map(Unit::Seq),
            Phase::ExpectBanner => read_banner(&mut r).map(|()| Unit::Banner),
            Phase::ExpectClientAddr => EntityAddr::read_legacy(&mut r).map(Unit::ClientAddr),
            Phase::ExpectConnect => ConnectMsg::read(&mut r).map(Unit::Connect),
            Phase::AwaitDecision | Phase::Open => Ok(Unit::Nothing),
        };
        let used = r.position();
        let mut buf = buf;
        let unit = match res {
            Ok(u) => {
                buf.advance(used);
                u
            }
            Err(e) if e.is_truncated() => Unit::Nothing,
            Err(e) => {
                if let Some(link) = &mut self.link {
                    link.inbuf = buf;
                }
                return Err(decode_error(phase, &e));
            }
        };
        if let Some(link) = &mut self.link {
            link.inbuf = buf;
        }
        match unit {
            Unit::Nothing => Ok(false),
            Unit::Hello((server, seen)) => self.client_on_hello(server, seen).map(|()| true),
            Unit::Reply(reply) => self.client_on_reply(reply, now).map(|()| true),
            Unit::Seq(seq) if phase == Phase::ExpectSeq => {
                self.client_on_seq(seq, now);
                Ok(true)
            }
            Unit::Seq(seq) => {
                self.core.session.discard_acked_replays(seq);
                self.server_open(now);
                Ok(true)
            }
            Unit::Banner => {
                if let Some(link) = &mut self.link {
                    link.phase = Phase::ExpectClientAddr;
                }
                Ok(true)
            }
            Unit::ClientAddr(a) => {
                if let Some(link) = &mut self.link {
                    link.peer_addr = Some(a);
                    link.phase = Phase::ExpectConnect;
                }
                Ok(true)
            }
            Unit::Connect(c) => self.server_on_connect(c).map(|()| true),
        }
    }

    fn open_step(&mut self, now: Instant) -> Result<bool, Error> {
        let limits = self.v1_limits();
        let Some(link) = &mut self.link else {
            return Ok(false);
        };
        let parsed = Frame::parse(&link.inbuf, link.with_sig(), &limits)
            .map_err(|e| decode_error(Phase::Open, &e))?;
        let Some((frame, used)) = parsed else {
            return Ok(false);
        };
        link.inbuf.advance(used);
        match frame {
            Frame::Msg(raw) => self.on_msg(raw)?,
            Frame::Ack(seq) => self.core.session.handle_ack(seq),
            Frame::Keepalive => self.core.last_keepalive = Some(now),
            Frame::Keepalive2(stamp) => {
                self.core.last_keepalive = Some(now);
                link.keepalive_ack_due = Some(stamp);
            }
            Frame::Keepalive2Ack(_) => self.core.last_keepalive_ack = Some(now),
            Frame::Close => return Err(Error::Transport("the v1 peer sent CLOSE".into())),
        }
        Ok(true)
    }

    fn on_msg(&mut self, raw: RawMsg) -> Result<(), Error> {
        raw.verify()
            .map_err(|e| Error::Legacy(format!("message crc: {e}")))?;
        if raw.footer.flags & footer_flags::COMPLETE == 0 {
            debug!(
                "[{}] v1: dropping aborted message seq {}",
                self.core.peer.addr, raw.header.seq
            );
            return Ok(());
        }
        if !self.core.check_incoming_seq(raw.header.seq)? {
            return Ok(());
        }
        let message = raw.to_message();
        self.core.peer.name = Some(message.src);
        self.core.events.push_back(Event::Message(message));
        Ok(())
    }

    // ----- internals: output and faults --------------------------------------

    /// The protocol version we send and require.
    pub(super) fn protocol_version(&self, peer_type: EntityType, connecting: bool) -> u32 {
        self.protocol_version.unwrap_or_else(|| {
            let (mine, peer) = (self.core.cfg.name.ty, peer_type);
            protocol_version_for(mine, peer, connecting)
        })
    }

    fn v1_limits(&self) -> Limits {
        Limits {
            max_front_len: self.core.cfg.limits.max_front,
            max_middle_len: self.core.cfg.limits.max_middle,
            max_data_len: self.core.cfg.limits.max_data,
        }
    }

    fn fill_transmit(&mut self, now: Instant) {
        let Some(link) = &mut self.link else { return };
        if !link.is_open() {
            return;
        }
        if let Some(stamp) = link.keepalive_ack_due.take() {
            link.push_frame(&Frame::Keepalive2Ack(stamp));
        }
        let periodic = self
            .core
            .cfg
            .keepalive_interval
            .is_some_and(|iv| now >= link.last_keepalive_tx + iv);
        if periodic || link.keepalive_requested {
            link.keepalive_requested = false;
            link.last_keepalive_tx = now;
            let f = if link.features & features::MSGR_KEEPALIVE2 != 0 {
                Frame::Keepalive2(Timespec::from_duration(
                    now.saturating_duration_since(self.core.epoch),
                ))
            } else {
                Frame::Keepalive
            };
            link.push_frame(&f);
        }
        let budget = self.core.cfg.max_batch_bytes;
        let with_sig = link.with_sig();
        while link.out.len() < budget {
            let Some(msg) = self.core.session.next_outgoing() else {
                break;
            };
            let raw = RawMsg::from_message(&msg, msg.seq, self.core.cfg.name, with_sig);
            link.push_msg(&raw);
        }
        if self.core.session.ack_pending() && !self.core.session.lossy {
            let seq = self.core.session.take_ack();
            link.push_frame(&Frame::Ack(seq));
        }
    }

    fn push_link_closed(&mut self, mut link: V1Link, error: Error, initiator: Initiator) {
        if initiator == Initiator::User && link.is_open() {
            link.push_frame(&Frame::Close);
        }
        let out = std::mem::take(&mut link.out);
        self.core.link_closed(link.id, out, error, initiator);
    }

    /// The link failed: close it and apply the session policy (as msgr2 does).
    fn fail_link(&mut self, now: Instant, error: Error, initiator: Initiator) {
        let Some(link) = self.link.take() else { return };
        let was_open = link.is_open();
        info!(
            "[{}] v1 link {} closed ({:?}): {}",
            self.core.peer.addr, link.id, initiator, error
        );
        self.push_link_closed(link, error.clone(), initiator);
        crate::proto::fault::after_link_loss(&mut self.core, error, was_open, now);
    }
}

impl std::fmt::Debug for V1SessionConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("V1SessionConn")
            .field("state", &self.core.state)
            .field("peer", &self.core.peer.addr)
            .field("link", &self.link)
            .finish_non_exhaustive()
    }
}

/// One decoded handshake unit.
enum Unit {
    Nothing,
    Hello((EntityAddr, EntityAddr)),
    Reply(ConnectReply),
    Seq(u64),
    Banner,
    ClientAddr(EntityAddr),
    Connect(ConnectMsg),
}

fn decode_error(phase: Phase, e: &DecodeError) -> Error {
    Error::Legacy(format!("malformed data while {}: {e}", phase.name()))
}

/// How many bytes the shell should make room for: the rest of a message in progress.
fn read_hint(link: &V1Link) -> usize {
    if link.phase != Phase::Open || link.inbuf.len() < 1 + HEADER_LEN || link.inbuf[0] != Tag::MSG.0
    {
        return DEFAULT_READ_HINT;
    }
    let mut r = Reader::new(&link.inbuf[1..]);
    match MsgHeader::read(&mut r) {
        Ok(h) => {
            let total = 1
                + HEADER_LEN
                + h.front_len as usize
                + h.middle_len as usize
                + h.data_len as usize
                + 21;
            total
                .saturating_sub(link.inbuf.len())
                .max(DEFAULT_READ_HINT)
        }
        Err(_) => DEFAULT_READ_HINT,
    }
}

/// Why this side cannot use v1 at all: v1 here has no authentication (auth none,
/// an empty authorizer) and no signing or encryption, so a messenger that requires
/// either must not fall back to it.
fn v1_unusable(cfg: &ProtoConfig, server: bool) -> Option<Error> {
    let none = crate::auth::Method(crate::wire::msgr2::AUTH_NONE);
    let methods = if server {
        &cfg.auth.server_methods
    } else {
        &cfg.auth.client_methods
    };
    if cfg.min_mode > crate::proto::Mode::Plain {
        return Some(Error::ModeRefused(format!(
            "v1 sessions are plain, and this side requires {:?} mode",
            cfg.min_mode
        )));
    }
    if !methods.contains(&none) {
        return Some(Error::NoCommonAuthMethod {
            offered: methods.iter().map(|m| m.0).collect(),
        });
    }
    None
}

fn my_addr(cfg: &ProtoConfig) -> EntityAddr {
    cfg.addrs
        .0
        .first()
        .copied()
        .unwrap_or(EntityAddr::blank(AddrType::MSGR2, 0))
}

fn legacy(mut a: EntityAddr) -> EntityAddr {
    a.kind = AddrType::LEGACY;
    a
}

#[cfg(test)]
mod tests;
