//! The msgr2 session state machine (docs/PROTOCOL.md §2–§6).
//!
//! A [`Connection`] is one session with one peer. It carries at most one live
//! transport ("link") at a time; a lossless session survives the loss of its link
//! by reconnecting (as the connecting side) or by waiting in standby for the peer
//! (as a `server`), and replays what the peer did not acknowledge.

mod chunk;
mod client;
mod exchange;
mod landing;
mod link;
mod server;

use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use log::{debug, info};

use crate::crypto::Random;
use crate::wire::msgr2::{Banner, Close, Frame, Ident, IDENT_INITIATOR, IDENT_LOSSY};
use crate::wire::transmit::Transmit;
use crate::wire::types::{AddrVec, EntityAddr, EntityName, EntityType};

use super::accept::{Decision, ExistingState, ExistingView};
use super::core::{session_api, SessionCore};
use super::event::{AcceptRequest, Error, Initiator, LinkId};
use super::ProtoConfig;

pub use chunk::ChunkError;
pub use exchange::AbortOutcome;
use link::Link;
pub use link::{Phase, Role};

/// Where the session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// An incoming link whose session is not known yet.
    Accepting,
    /// We are (re)connecting: a link is in its handshake, or a reconnect is due.
    Connecting,
    /// A link is open and messages flow.
    Open,
    /// No link; waiting for the peer to reconnect, or for a message to send.
    Standby,
    /// We lost a connection race: the peer's connection will carry the session.
    Wait,
    /// The session is over.
    Closed,
}

/// What we know of the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The address that identifies the peer (the one we connect to, or the one it advertises).
    pub addr: EntityAddr,
    /// Its entity type.
    pub ty: EntityType,
    /// Its name, once a message arrived.
    pub name: Option<EntityName>,
    /// Its advertised addresses.
    pub addrs: AddrVec,
    /// Ceph features both sides support.
    pub features: u64,
}

/// A link handed from an incoming connection to the existing session that adopts it.
#[derive(Debug)]
pub struct LinkHandoff {
    link: Link,
    request: AcceptRequest,
}

/// Why `send` refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The session is closed (marked down, refused, or a lossy session that failed).
    Closed,
    /// A section is longer than this side's limit for it (`max_front_len`,
    /// `max_middle_len`, `max_data_len`). A peer with the same limits would close the
    /// connection over the message, and a lossless session would resend it on every
    /// reconnect, so it is refused here instead.
    TooLarge {
        /// `front`, `middle` or `data`.
        section: &'static str,
        /// Its length.
        len: u64,
        /// The limit.
        limit: u32,
    },
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Closed => f.write_str("the connection is closed"),
            SendError::TooLarge {
                section,
                len,
                limit,
            } => write!(
                f,
                "the message's {section} section is {len} bytes, above the limit of {limit} \
                 (ms_max_{section}_len)"
            ),
        }
    }
}

impl std::error::Error for SendError {}

/// One msgr2 session. See the module documentation of [`crate::proto`] for the
/// call contract.
pub struct Connection {
    /// The state every session has, whatever its protocol (shared with v1).
    core: SessionCore,
    link: Option<Link>,
    preferred_method: Option<u32>,
    /// When the oldest unacknowledged received message must be acknowledged.
    ack_due: Option<Instant>,
}

/// Read-buffer size to ask for when no frame is in progress.
const DEFAULT_READ_HINT: usize = 64 * 1024;

impl Connection {
    session_api!();

    /// A session we initiate to `peer`. Emits [`Event::ReconnectDue`](super::Event::ReconnectDue) at once: the shell
    /// opens a transport and calls [`Connection::start_link`].
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
            addrs: AddrVec::default(),
            features: 0,
        };
        Connection {
            core: SessionCore::outgoing(cfg, rng, peer, now),
            link: None,
            preferred_method: None,
            ack_due: None,
        }
    }

    /// A transport someone connected to us. We send our banner at once.
    pub fn incoming(
        cfg: Arc<ProtoConfig>,
        rng: Box<dyn Random>,
        link_id: LinkId,
        now: Instant,
    ) -> Self {
        let mut link = Link::new(link_id, Role::Server, cfg.limits, cfg.crc, now);
        link.queue_banner(&our_banner(&cfg));
        Connection {
            core: SessionCore::incoming(cfg, rng, now),
            link: Some(link),
            preferred_method: None,
            ack_due: None,
        }
    }

    // ----- inputs -------------------------------------------------------------

    /// A new transport to the peer is up: start the client handshake on it.
    /// Ignored unless the session is connecting or in standby.
    pub fn start_link(&mut self, link_id: LinkId, now: Instant) {
        if !matches!(
            self.core.state,
            State::Connecting | State::Standby | State::Wait
        ) {
            debug!(
                "[{}] start_link in state {:?} ignored",
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
        let link = Link::new(
            link_id,
            Role::Client,
            self.core.cfg.limits,
            self.core.cfg.crc,
            now,
        );
        self.link = Some(link);
        if let Err(e) = self.client_start(now) {
            self.fail_link(now, e, Initiator::Local);
        }
    }

    /// Bytes arrived on `link_id`. Takes the bytes out of `data`, leaves any
    /// incomplete frame's bytes in it, and returns how many more bytes the shell
    /// should make room for.
    pub fn handle_input(&mut self, link_id: LinkId, data: &mut BytesMut, now: Instant) -> usize {
        match &mut self.link {
            Some(link) if link.id == link_id => {
                let buf = link.deframer.buffer_mut();
                if buf.is_empty() {
                    std::mem::swap(buf, data);
                } else {
                    buf.extend_from_slice(data);
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
                let hint = link.deframer.read_hint();
                std::mem::swap(link.deframer.buffer_mut(), data);
                hint
            }
            _ => DEFAULT_READ_HINT,
        }
    }

    /// The transport `link_id` failed (EOF, reset, write error).
    pub fn link_failed(&mut self, link_id: LinkId, error: Error, now: Instant) {
        if self.link.as_ref().is_some_and(|l| l.id == link_id) {
            self.fail_link(now, error, Initiator::Peer);
        }
    }

    /// A deadline from [`Connection::poll_timeout`] passed (calling early is harmless).
    pub fn handle_timeout(&mut self, now: Instant) {
        let clock = self.link.as_ref().map(|l| l.clock());
        if let Some(error) = self.core.handle_timers(now, clock) {
            self.fail_link(now, error, Initiator::Local);
        }
    }

    /// Close the session: send CLOSE(NORMAL) on the link if there is one, drop every
    /// queued message, and end. Produces no reset event (Ceph's `mark_down`).
    pub fn mark_down(&mut self, now: Instant) {
        let _ = now;
        if let Some(link) = self.link.take() {
            self.push_link_closed(link, Error::MarkedDown, Initiator::User);
        }
        self.core.close();
    }

    /// Use this auth method first on the next connection (the one that worked last time).
    pub fn set_preferred_method(&mut self, method: Option<u32>) {
        self.preferred_method = method;
    }

    // ----- outputs ------------------------------------------------------------

    /// Bytes to write on `link_id`. `out` must be empty (the previous batch fully
    /// written); it is filled with the next batch. Returns false if there is nothing.
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
        if let Err(e) = self.fill_transmit(now) {
            // The frames sealed before the error, and the CLOSE, stay in the farewell for
            // this link: the shell writes them when it handles the `LinkClosed` event
            // (before closing the socket). Handing them out here raced with that close.
            self.fail_link(now, e, Initiator::Local);
            return false;
        }
        if let Some(link) = &mut self.link {
            std::mem::swap(out, &mut link.out);
        }
        !out.is_empty()
    }

    /// The next deadline at which [`Connection::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self.core.session_deadline();
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some(link) = &self.link {
            if link.is_open() {
                if let Some(t) = self
                    .ack_due
                    .filter(|_| self.core.session.ack_pending() && !self.core.session.lossy)
                {
                    consider(t);
                }
            }
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

    /// True if a chunked message (docs/PROTOCOL.md §7.6) is being sent on the current
    /// link: its header is out and chunks of it remain, or another waits its turn.
    /// The runtime's writer gives up the CPU between such chunks.
    pub fn sending_chunked(&self) -> bool {
        self.link.as_ref().is_some_and(|l| l.chunk_tx.pending())
    }

    /// True if a chunked message is being received on the current link.
    pub fn receiving_chunked(&self) -> bool {
        self.link
            .as_ref()
            .is_some_and(|l| l.chunk_rx.current.is_some())
    }

    /// True if the link `id` is current and has bytes or messages to send.
    pub fn wants_transmit(&self, id: LinkId) -> bool {
        self.core.has_farewell(id)
            || self.link.as_ref().is_some_and(|l| {
                l.id == id
                    && (!l.out.is_empty()
                        || (l.is_open()
                            && (self.core.session.has_outgoing()
                                || self.ack_is_due(None)
                                || l.chunk_tx.pending()
                                || l.keepalive_ack_due.is_some())))
            })
    }

    /// The auth method of the current link (0 before it is chosen).
    pub fn auth_method(&self) -> u32 {
        self.link.as_ref().map_or(0, |l| l.method)
    }

    /// The AUTH_DONE flags of the current link.
    pub fn protection_flags(&self) -> u64 {
        self.link.as_ref().map_or(0, |l| l.flags)
    }

    /// Banner protocol features negotiated on the current link.
    pub fn protocol_features(&self) -> u64 {
        self.link.as_ref().map_or(0, |l| l.protocol_features)
    }

    /// The view [`crate::proto::accept::decide`] needs of this session, if it has one.
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
            cookie: self.core.session.cookie,
        })
    }

    // ----- the shell's accept decision ----------------------------------------

    /// Apply the session table's decision to this incoming connection. For
    /// [`Decision::Adopt`] use [`Connection::take_handoff`] and
    /// [`Connection::adopt`] on the existing session instead.
    pub fn decide_accept(&mut self, decision: Decision, now: Instant) {
        let r = match decision {
            Decision::New => self.server_accept_new(now),
            Decision::Adopt { .. } => Err(Error::PeerMisbehaved(
                "internal: adopt on the incoming connection",
            )),
            other => self.server_refuse(other, now),
        };
        if let Err(e) = r {
            self.fail_link(now, e, Initiator::Local);
        }
    }

    /// Take this incoming connection's link for adoption by an existing session. This
    /// connection ends without events.
    pub fn take_handoff(&mut self) -> Option<LinkHandoff> {
        let mut link = self.link.take()?;
        let request = link.pending.take()?;
        self.core.state = State::Closed;
        Some(LinkHandoff { link, request })
    }

    /// Adopt an incoming link into this existing session, resetting the session
    /// first if `reset` (docs/PROTOCOL.md §5.2).
    pub fn adopt(&mut self, handoff: LinkHandoff, reset: bool, now: Instant) {
        if let Err(e) = self.server_adopt(handoff, reset, now) {
            self.fail_link(now, e, Initiator::Local);
        }
    }

    // ----- internals ----------------------------------------------------------

    fn last_rx_time(&self) -> Instant {
        self.link.as_ref().map_or(self.core.epoch, |l| l.last_rx)
    }

    /// Whether a standalone ACK is due (enough unacknowledged messages, or the delay
    /// passed; `now = None` checks the count only).
    pub(super) fn ack_is_due(&self, now: Option<Instant>) -> bool {
        if self.core.session.lossy || !self.core.session.ack_pending() {
            return false;
        }
        self.core.session.unacked_in() >= self.core.cfg.ack_every
            || now.zip(self.ack_due).is_some_and(|(n, due)| n >= due)
    }

    fn process_input(&mut self, now: Instant) {
        loop {
            let Some(link) = &mut self.link else { return };
            if link.phase == Phase::AwaitDecision {
                return;
            }
            if link.peer_banner.is_none() {
                match link.deframer.take_banner() {
                    Ok(None) => return,
                    Ok(Some(b)) => {
                        if let Err(e) = self.on_banner(b) {
                            self.fail_link(now, e, Initiator::Peer);
                            return;
                        }
                        continue;
                    }
                    Err(e) => {
                        self.fail_link(now, Error::Banner(e), Initiator::Peer);
                        return;
                    }
                }
            }
            let decoded = match link.deframer.next_frame(&mut link.rx) {
                Ok(None) => return,
                Ok(Some(d)) => d,
                Err(e) => {
                    self.fail_link(now, Error::Frame(e), Initiator::Peer);
                    return;
                }
            };
            if !decoded.raw.is_empty() && !matches!(decoded.frame, Frame::AuthDone(_)) {
                link.hash_rx(&decoded.raw);
            }
            log::trace!("[{}] rx {:?}", self.core.peer.addr, decoded.frame.tag());
            if let Err(e) = self.on_frame(decoded.frame, decoded.raw, now) {
                let initiator = if matches!(e, Error::Closed { .. }) {
                    Initiator::Peer
                } else {
                    Initiator::Local
                };
                self.fail_link(now, e, initiator);
                return;
            }
        }
    }

    fn on_banner(&mut self, peer: Banner) -> Result<(), Error> {
        let ours = our_banner(&self.core.cfg);
        let negotiated = ours.negotiate(&peer)?;
        let Some(link) = &mut self.link else {
            return Ok(());
        };
        let mut v = Vec::with_capacity(Banner::MAX_LEN);
        peer.encode(&mut v);
        if let Some(h) = &mut link.rx_hash {
            h.update(&v);
        }
        link.peer_banner = Some(peer);
        link.protocol_features = negotiated;
        Ok(())
    }

    fn on_frame(&mut self, frame: Frame, raw: bytes::Bytes, now: Instant) -> Result<(), Error> {
        if let Frame::Close(Close { reason, message }) = frame {
            return Err(Error::Closed { reason, message });
        }
        let role = self.link.as_ref().map(|l| l.role);
        match role {
            Some(Role::Client) => self.client_frame(frame, now),
            Some(Role::Server) => self.server_frame(frame, raw, now),
            None => Ok(()),
        }
    }

    /// Build our IDENT.
    fn our_ident(&self) -> Ident {
        let mut flags = 0;
        if self.core.policy.lossy {
            flags |= IDENT_LOSSY;
        }
        if !self.core.policy.server {
            flags |= IDENT_INITIATOR;
        }
        Ident {
            addrs: self.core.cfg.addrs.clone(),
            entity_type: self.core.cfg.name.ty,
            protocol_version: self.core.cfg.protocol_version,
            features_supported: self.core.cfg.features_supported,
            features_required: self.core.cfg.features_required | self.core.policy.features_required,
            flags,
            cookie: self.core.session.cookie,
        }
    }

    fn queue_frame(&mut self, frame: &Frame) -> Result<(), Error> {
        let Some(link) = &mut self.link else {
            return Ok(());
        };
        link.queue(frame, &mut *self.core.rng)
    }

    fn push_link_closed(&mut self, mut link: Link, error: Error, initiator: Initiator) {
        self.return_unfinished(&mut link);
        // Tell the peer why (§3.4: a frame that fails authentication is answered with
        // CLOSE(PROTOCOL) too, although the peer "initiated" it). `close_reason` is `None`
        // when the peer told us (CLOSE), the transport is gone, or the banner was bad.
        if let Some(reason) = error.close_reason() {
            // Auth errors use their peer-facing text (§4.4: "unknown entity NAME", "bad
            // proof for NAME"), which reveals no local configuration.
            let message = match &error {
                Error::Auth(e) => e.close_message(),
                Error::ModeRefused(m) => m.clone(),
                other => other.to_string(),
            };
            let close = Frame::Close(Close { reason, message });
            let _ = link.queue(&close, &mut *self.core.rng);
        }
        let out = std::mem::take(&mut link.out);
        self.core.link_closed(link.id, out, error, initiator);
    }

    /// The link failed: close it and apply the session policy (docs/PROTOCOL.md §5.1).
    fn fail_link(&mut self, now: Instant, error: Error, initiator: Initiator) {
        let Some(link) = self.link.take() else { return };
        let was_open = link.is_open();
        info!(
            "[{}] link {} closed ({:?}): {}",
            self.core.peer.addr, link.id, initiator, error
        );
        self.push_link_closed(link, error.clone(), initiator);
        crate::proto::fault::after_link_loss(&mut self.core, error, was_open, now);
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("state", &self.core.state)
            .field("peer", &self.core.peer.addr)
            .field("link", &self.link)
            .finish_non_exhaustive()
    }
}

fn our_banner(cfg: &ProtoConfig) -> Banner {
    Banner {
        supported: cfg.protocol_features,
        required: cfg.protocol_features_required,
    }
}
