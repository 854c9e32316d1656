//! The msgr2 session state machine (docs/PROTOCOL.md §2–§6).
//!
//! A [`Connection`] is one session with one peer. It carries at most one live
//! transport ("link") at a time; a lossless session survives the loss of its link
//! by reconnecting (as the connecting side) or by waiting in standby for the peer
//! (as a `server`), and replays what the peer did not acknowledge.

mod chunk;
mod client;
mod exchange;
mod link;
mod server;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use log::{debug, info};

use crate::crypto::Random;
use crate::wire::message::Message;
use crate::wire::msgr2::{Banner, Close, Frame, Ident, IDENT_INITIATOR, IDENT_LOSSY};
use crate::wire::transmit::Transmit;
use crate::wire::types::{AddrVec, EntityAddr, EntityName, EntityType};

use super::accept::{Decision, ExistingState, ExistingView};
use super::event::{AcceptRequest, Error, Event, Initiator, LinkId};
use super::policy::Policy;
use super::session::Session;
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
}

/// One msgr2 session. See the module documentation of [`crate::proto`] for the
/// call contract.
pub struct Connection {
    cfg: Arc<ProtoConfig>,
    policy: Policy,
    rng: Box<dyn Random>,
    epoch: Instant,
    state: State,
    session: Session,
    link: Option<Link>,
    peer: Peer,
    events: VecDeque<Event>,
    reconnect_at: Option<Instant>,
    standby_until: Option<Instant>,
    backoff: Duration,
    preferred_method: Option<u32>,
    last_keepalive_ack: Option<Instant>,
    last_keepalive: Option<Instant>,
    farewell: Vec<(LinkId, Transmit)>,
    /// When the oldest unacknowledged received message must be acknowledged.
    ack_due: Option<Instant>,
}

/// Read-buffer size to ask for when no frame is in progress.
const DEFAULT_READ_HINT: usize = 64 * 1024;

impl Connection {
    /// A session we initiate to `peer`. Emits [`Event::ReconnectDue`] at once: the shell
    /// opens a transport and calls [`Connection::start_link`].
    pub fn outgoing(
        cfg: Arc<ProtoConfig>,
        mut rng: Box<dyn Random>,
        peer: EntityAddr,
        peer_type: EntityType,
        now: Instant,
    ) -> Self {
        let policy = cfg.policies.get(peer_type);
        let cookie = random_u64(&mut *rng);
        let backoff = cfg.backoff_initial;
        let mut c = Connection {
            policy,
            rng,
            epoch: now,
            state: State::Connecting,
            session: Session::new(cookie, policy.lossy),
            link: None,
            peer: Peer {
                addr: peer,
                ty: peer_type,
                name: None,
                addrs: AddrVec::default(),
                features: 0,
            },
            events: VecDeque::new(),
            reconnect_at: None,
            standby_until: None,
            backoff,
            preferred_method: None,
            last_keepalive_ack: None,
            last_keepalive: None,
            farewell: Vec::new(),
            ack_due: None,
            cfg,
        };
        c.events.push_back(Event::ReconnectDue);
        c
    }

    /// A transport someone connected to us. We send our banner at once.
    pub fn incoming(
        cfg: Arc<ProtoConfig>,
        rng: Box<dyn Random>,
        link_id: LinkId,
        now: Instant,
    ) -> Self {
        let mut link = Link::new(link_id, Role::Server, cfg.limits, now);
        link.queue_banner(&our_banner(&cfg));
        let backoff = cfg.backoff_initial;
        Connection {
            policy: cfg.policies.default,
            rng,
            epoch: now,
            state: State::Accepting,
            session: Session::new(0, false),
            link: Some(link),
            peer: Peer {
                addr: EntityAddr::blank(crate::wire::types::AddrType::NONE, 0),
                ty: EntityType::ANY,
                name: None,
                addrs: AddrVec::default(),
                features: 0,
            },
            events: VecDeque::new(),
            reconnect_at: None,
            standby_until: None,
            backoff,
            preferred_method: None,
            last_keepalive_ack: None,
            last_keepalive: None,
            farewell: Vec::new(),
            ack_due: None,
            cfg,
        }
    }

    // ----- inputs -------------------------------------------------------------

    /// A new transport to the peer is up: start the client handshake on it.
    /// Ignored unless the session is connecting or in standby.
    pub fn start_link(&mut self, link_id: LinkId, now: Instant) {
        if !matches!(self.state, State::Connecting | State::Standby | State::Wait) {
            debug!(
                "[{}] start_link in state {:?} ignored",
                self.peer.addr, self.state
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
        self.state = State::Connecting;
        self.reconnect_at = None;
        self.session.global_seq = self.cfg.global_seq.next(0);
        let link = Link::new(link_id, Role::Client, self.cfg.limits, now);
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
        if self.state == State::Standby && self.standby_until.is_some_and(|t| t <= now) {
            self.standby_until = None;
            crate::proto::fault::standby_expired(
                &mut self.state,
                &mut self.session,
                &mut self.events,
            );
        }
        if self.reconnect_at.is_some_and(|t| t <= now) {
            self.reconnect_at = None;
            if matches!(self.state, State::Connecting | State::Wait) && self.link.is_none() {
                self.state = State::Connecting;
                self.events.push_back(Event::ReconnectDue);
            }
        }
        let Some(link) = &self.link else { return };
        if !link.is_open() {
            if now >= link.started + self.cfg.handshake_timeout {
                self.fail_link(now, Error::HandshakeTimeout, Initiator::Local);
            }
        } else if now >= link.last_rx + self.cfg.idle_timeout {
            self.fail_link(now, Error::IdleTimeout, Initiator::Local);
        }
    }

    /// Queue a message. A session in standby starts reconnecting (unless we are a
    /// `server`, which waits for the peer).
    pub fn send(&mut self, msg: Message) -> Result<(), SendError> {
        match self.state {
            State::Closed => return Err(SendError::Closed),
            State::Standby if !self.policy.server => {
                self.state = State::Connecting;
                self.events.push_back(Event::ReconnectDue);
            }
            _ => {}
        }
        self.session.queue(msg);
        Ok(())
    }

    /// Close the session: send CLOSE(NORMAL) on the link if there is one, drop every
    /// queued message, and end. Produces no reset event (Ceph's `mark_down`).
    pub fn mark_down(&mut self, now: Instant) {
        let _ = now;
        if let Some(link) = self.link.take() {
            self.push_link_closed(link, Error::MarkedDown, Initiator::User);
        }
        self.session.reset(0);
        self.state = State::Closed;
        self.reconnect_at = None;
    }

    /// Make a lossless session lossy from now on (Ceph's `mark_disposable`).
    pub fn mark_disposable(&mut self) {
        self.policy.lossy = true;
        self.session.lossy = true;
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
        if let Some(pos) = self.farewell.iter().position(|(id, _)| *id == link_id) {
            let (_, t) = self.farewell.swap_remove(pos);
            *out = t;
            return !out.is_empty();
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

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next deadline at which [`Connection::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self.reconnect_at;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        if let Some(t) = self.standby_until.filter(|_| self.state == State::Standby) {
            consider(t);
        }
        if let Some(link) = &self.link {
            if link.is_open() {
                if let Some(t) = self
                    .ack_due
                    .filter(|_| self.session.ack_pending() && !self.session.lossy)
                {
                    consider(t);
                }
                consider(link.last_rx + self.cfg.idle_timeout);
                if let Some(iv) = self.cfg.keepalive_interval {
                    consider(link.last_keepalive_tx + iv);
                }
            } else {
                consider(link.started + self.cfg.handshake_timeout);
            }
        }
        next
    }

    // ----- queries ------------------------------------------------------------

    /// Where the session stands.
    pub fn state(&self) -> State {
        self.state
    }

    /// True if messages flow now.
    pub fn is_connected(&self) -> bool {
        self.state == State::Open
    }

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
        self.farewell.iter().any(|(l, _)| *l == id)
            || self.link.as_ref().is_some_and(|l| {
                l.id == id
                    && (!l.out.is_empty()
                        || (l.is_open()
                            && (self.session.has_outgoing()
                                || self.ack_is_due(None)
                                || l.chunk_tx.pending()
                                || l.keepalive_ack_due.is_some())))
            })
    }

    /// What we know of the peer.
    pub fn peer(&self) -> &Peer {
        &self.peer
    }

    /// The policy in force.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The session's sequence state (for tests and stats).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// When the last KEEPALIVE2_ACK arrived.
    pub fn last_keepalive_ack(&self) -> Option<Instant> {
        self.last_keepalive_ack
    }

    /// When the last KEEPALIVE2 arrived.
    pub fn last_keepalive(&self) -> Option<Instant> {
        self.last_keepalive
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
        let state = match self.state {
            State::Connecting => ExistingState::Connecting,
            State::Open | State::Standby => ExistingState::Established,
            State::Wait => ExistingState::Waiting,
            State::Accepting | State::Closed => return None,
        };
        Some(ExistingView {
            state,
            lossy: self.session.lossy,
            connect_seq: self.session.connect_seq,
            peer_global_seq: self.session.peer_global_seq,
            cookie: self.session.cookie,
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
        self.state = State::Closed;
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
        self.link.as_ref().map_or(self.epoch, |l| l.last_rx)
    }

    /// Whether a standalone ACK is due (enough unacknowledged messages, or the delay
    /// passed; `now = None` checks the count only).
    pub(super) fn ack_is_due(&self, now: Option<Instant>) -> bool {
        if self.session.lossy || !self.session.ack_pending() {
            return false;
        }
        self.session.unacked_in() >= self.cfg.ack_every
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
            log::trace!("[{}] rx {:?}", self.peer.addr, decoded.frame.tag());
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
        let ours = our_banner(&self.cfg);
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
        if self.policy.lossy {
            flags |= IDENT_LOSSY;
        }
        if !self.policy.server {
            flags |= IDENT_INITIATOR;
        }
        Ident {
            addrs: self.cfg.addrs.clone(),
            entity_type: self.cfg.name.ty,
            protocol_version: self.cfg.protocol_version,
            features_supported: self.cfg.features_supported,
            features_required: self.cfg.features_required | self.policy.features_required,
            flags,
            cookie: self.session.cookie,
        }
    }

    fn queue_frame(&mut self, frame: &Frame) -> Result<(), Error> {
        let Some(link) = &mut self.link else {
            return Ok(());
        };
        link.queue(frame, &mut *self.rng)
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
            let _ = link.queue(&close, &mut *self.rng);
        }
        if !link.out.is_empty() {
            let out = std::mem::take(&mut link.out);
            self.farewell.push((link.id, out));
        }
        self.events.push_back(Event::LinkClosed {
            link: link.id,
            error,
            initiator,
        });
    }

    /// The link failed: close it and apply the session policy (docs/PROTOCOL.md §5.1).
    fn fail_link(&mut self, now: Instant, error: Error, initiator: Initiator) {
        let Some(link) = self.link.take() else { return };
        let was_open = link.is_open();
        info!(
            "[{}] link {} closed ({:?}): {}",
            self.peer.addr, link.id, initiator, error
        );
        self.push_link_closed(link, error.clone(), initiator);
        crate::proto::fault::after_link_loss(
            crate::proto::fault::SessionParts {
                state: &mut self.state,
                session: &mut self.session,
                policy: &self.policy,
                events: &mut self.events,
                reconnect_at: &mut self.reconnect_at,
                standby_until: &mut self.standby_until,
                backoff: &mut self.backoff,
                cfg: &self.cfg,
                rng: &mut *self.rng,
            },
            error,
            was_open,
            now,
        );
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("state", &self.state)
            .field("peer", &self.peer.addr)
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

fn random_u64(rng: &mut dyn Random) -> u64 {
    let mut b = [0u8; 8];
    rng.fill(&mut b);
    // A cookie of 0 means "unknown" on the wire.
    u64::from_le_bytes(b).max(1)
}
