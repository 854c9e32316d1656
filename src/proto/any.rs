//! One session of either protocol behind the same call contract, so the runtime
//! drives msgr2 and legacy v1 sessions with one code path.

use core::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use crate::crypto::Random;
use crate::wire::message::Message;
use crate::wire::transmit::Transmit;
use crate::wire::types::{AddrType, EntityAddr, EntityType};

use super::accept::{Decision, ExistingView};
use super::event::{Error, Event, LinkId};
use super::msgr2::{self, Peer, SendError, State};
use super::policy::Policy;
use super::session::Session;
use super::v1::{V1Handoff, V1SessionConn};
use super::ProtoConfig;

/// An msgr2 or a v1 session.
// One per session, created once and kept in place behind the session lock: the size
// difference costs nothing, a Box would cost a pointer chase on every call.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum AnyConnection {
    /// msgr2.
    V2(msgr2::Connection),
    /// Legacy v1.
    V1(V1SessionConn),
}

/// A link handed from an incoming connection to the existing session that adopts it.
// Moved once per adoption.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum AnyHandoff {
    /// An msgr2 link.
    V2(msgr2::LinkHandoff),
    /// A v1 link.
    V1(V1Handoff),
}

macro_rules! each {
    ($self:expr, $c:ident => $e:expr) => {
        match $self {
            AnyConnection::V2($c) => $e,
            AnyConnection::V1($c) => $e,
        }
    };
}

impl AnyConnection {
    /// A session we initiate to `peer`: v1 if `peer` is a `v1:` address, else msgr2.
    pub fn outgoing(
        cfg: Arc<ProtoConfig>,
        rng: Box<dyn Random>,
        peer: EntityAddr,
        peer_type: EntityType,
        now: Instant,
    ) -> Self {
        if peer.kind == AddrType::LEGACY {
            AnyConnection::V1(V1SessionConn::outgoing(cfg, rng, peer, peer_type, now))
        } else {
            AnyConnection::V2(msgr2::Connection::outgoing(cfg, rng, peer, peer_type, now))
        }
    }

    /// An incoming msgr2 transport.
    pub fn incoming(
        cfg: Arc<ProtoConfig>,
        rng: Box<dyn Random>,
        link_id: LinkId,
        now: Instant,
    ) -> Self {
        AnyConnection::V2(msgr2::Connection::incoming(cfg, rng, link_id, now))
    }

    /// An incoming v1 transport from `socket_peer`.
    pub fn incoming_v1(
        cfg: Arc<ProtoConfig>,
        rng: Box<dyn Random>,
        link_id: LinkId,
        socket_peer: SocketAddr,
        now: Instant,
    ) -> Self {
        AnyConnection::V1(V1SessionConn::incoming(cfg, rng, link_id, socket_peer, now))
    }

    /// True for a v1 session.
    pub fn is_v1(&self) -> bool {
        matches!(self, AnyConnection::V1(_))
    }

    /// See [`msgr2::Connection::start_link`].
    pub fn start_link(&mut self, link_id: LinkId, now: Instant) {
        each!(self, c => c.start_link(link_id, now))
    }

    /// See [`msgr2::Connection::handle_input`].
    pub fn handle_input(&mut self, link_id: LinkId, data: &mut BytesMut, now: Instant) -> usize {
        each!(self, c => c.handle_input(link_id, data, now))
    }

    /// See [`msgr2::Connection::link_failed`].
    pub fn link_failed(&mut self, link_id: LinkId, error: Error, now: Instant) {
        each!(self, c => c.link_failed(link_id, error, now))
    }

    /// See [`msgr2::Connection::handle_timeout`].
    pub fn handle_timeout(&mut self, now: Instant) {
        each!(self, c => c.handle_timeout(now))
    }

    /// See [`msgr2::Connection::send`].
    pub fn send(&mut self, msg: Message) -> Result<(), SendError> {
        each!(self, c => c.send(msg))
    }

    /// See [`msgr2::Connection::mark_down`].
    pub fn mark_down(&mut self, now: Instant) {
        each!(self, c => c.mark_down(now))
    }

    /// See [`msgr2::Connection::abort_send`]. v1 has no chunked messages: a v1 message
    /// is either still queued (not abortable here) or sent whole, so this is `NotFound`.
    pub fn abort_send(&mut self, tid: u64, code: u32, reason: &str) -> msgr2::AbortOutcome {
        match self {
            AnyConnection::V2(c) => c.abort_send(tid, code, reason),
            AnyConnection::V1(_) => msgr2::AbortOutcome::NotFound,
        }
    }

    /// See [`msgr2::Connection::mark_disposable`].
    pub fn mark_disposable(&mut self) {
        each!(self, c => c.mark_disposable())
    }

    /// See [`msgr2::Connection::set_preferred_method`] (ignored by v1).
    pub fn set_preferred_method(&mut self, method: Option<u32>) {
        each!(self, c => c.set_preferred_method(method))
    }

    /// See [`msgr2::Connection::poll_transmit`].
    pub fn poll_transmit(&mut self, link_id: LinkId, now: Instant, out: &mut Transmit) -> bool {
        each!(self, c => c.poll_transmit(link_id, now, out))
    }

    /// See [`msgr2::Connection::poll_event`].
    pub fn poll_event(&mut self) -> Option<Event> {
        each!(self, c => c.poll_event())
    }

    /// See [`msgr2::Connection::poll_timeout`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        each!(self, c => c.poll_timeout())
    }

    /// See [`msgr2::Connection::state`].
    pub fn state(&self) -> State {
        each!(self, c => c.state())
    }

    /// See [`msgr2::Connection::is_connected`].
    pub fn is_connected(&self) -> bool {
        each!(self, c => c.is_connected())
    }

    /// See [`msgr2::Connection::link_id`].
    pub fn link_id(&self) -> Option<LinkId> {
        each!(self, c => c.link_id())
    }

    /// See [`msgr2::Connection::sending_chunked`]; v1 has no chunked messages.
    pub fn sending_chunked(&self) -> bool {
        match self {
            AnyConnection::V2(c) => c.sending_chunked(),
            AnyConnection::V1(_) => false,
        }
    }

    /// See [`msgr2::Connection::receiving_chunked`]; v1 has no chunked messages.
    pub fn receiving_chunked(&self) -> bool {
        match self {
            AnyConnection::V2(c) => c.receiving_chunked(),
            AnyConnection::V1(_) => false,
        }
    }

    /// See [`msgr2::Connection::wants_transmit`].
    pub fn wants_transmit(&self, id: LinkId) -> bool {
        each!(self, c => c.wants_transmit(id))
    }

    /// See [`msgr2::Connection::peer`].
    pub fn peer(&self) -> &Peer {
        each!(self, c => c.peer())
    }

    /// See [`msgr2::Connection::policy`].
    pub fn policy(&self) -> Policy {
        each!(self, c => c.policy())
    }

    /// See [`msgr2::Connection::session`].
    pub fn session(&self) -> &Session {
        each!(self, c => c.session())
    }

    /// See [`msgr2::Connection::last_keepalive_ack`].
    pub fn last_keepalive_ack(&self) -> Option<Instant> {
        each!(self, c => c.last_keepalive_ack())
    }

    /// See [`msgr2::Connection::last_keepalive`].
    pub fn last_keepalive(&self) -> Option<Instant> {
        each!(self, c => c.last_keepalive())
    }

    /// See [`msgr2::Connection::auth_method`].
    pub fn auth_method(&self) -> u32 {
        each!(self, c => c.auth_method())
    }

    /// See [`msgr2::Connection::existing_view`].
    pub fn existing_view(&self) -> Option<ExistingView> {
        each!(self, c => c.existing_view())
    }

    /// See [`msgr2::Connection::decide_accept`].
    pub fn decide_accept(&mut self, decision: Decision, now: Instant) {
        each!(self, c => c.decide_accept(decision, now))
    }

    /// See [`msgr2::Connection::take_handoff`].
    pub fn take_handoff(&mut self) -> Option<AnyHandoff> {
        match self {
            AnyConnection::V2(c) => c.take_handoff().map(AnyHandoff::V2),
            AnyConnection::V1(c) => c.take_handoff().map(AnyHandoff::V1),
        }
    }

    /// See [`msgr2::Connection::adopt`]. A handoff of the other protocol (the peer
    /// switched protocols under one address) cannot resume this session: the session
    /// is marked down (its link closed) and the handoff dropped, which closes the
    /// peer's new connection; the peer's next attempt then finds no session.
    pub fn adopt(&mut self, handoff: AnyHandoff, reset: bool, now: Instant) {
        match (self, handoff) {
            (AnyConnection::V2(c), AnyHandoff::V2(h)) => c.adopt(h, reset, now),
            (AnyConnection::V1(c), AnyHandoff::V1(h)) => c.adopt(h, reset, now),
            (c, _) => {
                log::warn!(
                    "[{}] the peer changed protocol under one address; dropping the session",
                    c.peer().addr
                );
                c.mark_down(now);
            }
        }
    }
}
