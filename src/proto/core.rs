//! What a session is, whatever its wire protocol: the state both session machines
//! (msgr2's [`Connection`](super::msgr2::Connection) and v1's
//! [`V1SessionConn`](super::v1::V1SessionConn)) keep beside their one current link,
//! and the rules that do not depend on the wire: queueing a message, standby expiry,
//! the reconnect backoff timer, mark_down, the farewell bytes of closed links.
//!
//! Each machine owns a `SessionCore` as `core` and gets its public queries from
//! [`session_api!`], so the two machines answer them with the same code.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::crypto::Random;
use crate::wire::message::Message;
use crate::wire::transmit::Transmit;
use crate::wire::types::{AddrType, AddrVec, EntityAddr, EntityType};

use super::event::{Error, Event, Initiator, LinkId};
use super::msgr2::{Peer, SendError, State};
use super::policy::Policy;
use super::session::{Incoming, Session};
use super::ProtoConfig;

/// The protocol-independent half of a session machine.
pub(crate) struct SessionCore {
    pub(crate) cfg: Arc<ProtoConfig>,
    pub(crate) policy: Policy,
    pub(crate) rng: Box<dyn Random>,
    /// When the machine was created (the time base of logged durations).
    pub(crate) epoch: Instant,
    pub(crate) state: State,
    pub(crate) session: Session,
    pub(crate) peer: Peer,
    pub(crate) events: VecDeque<Event>,
    /// When the next connection attempt is due (backoff after a fault, or WAIT).
    pub(crate) reconnect_at: Option<Instant>,
    /// When a server session waiting in standby gives up (`ms_standby_timeout`).
    pub(crate) standby_until: Option<Instant>,
    /// The current reconnect backoff.
    pub(crate) backoff: Duration,
    /// Keep the backoff through the next handshake: the last open link was closed by the
    /// peer for a protocol violation of ours (see `fault::after_link_loss`).
    pub(crate) hold_backoff: bool,
    pub(crate) last_keepalive_ack: Option<Instant>,
    pub(crate) last_keepalive: Option<Instant>,
    /// Bytes still to be written on links that are closing (CLOSE frames and what was
    /// sealed before them), handed out once by [`SessionCore::take_farewell`].
    pub(crate) farewell: Vec<(LinkId, Transmit)>,
}

impl SessionCore {
    /// A session we initiate to `peer` (its first connection is due at once: emits
    /// [`Event::ReconnectDue`]).
    pub(crate) fn outgoing(
        cfg: Arc<ProtoConfig>,
        mut rng: Box<dyn Random>,
        peer: Peer,
        now: Instant,
    ) -> Self {
        let policy = cfg.policies.get(peer.ty);
        let cookie = random_cookie(&mut *rng);
        let mut core = SessionCore::new(cfg, rng, now, policy, State::Connecting, peer);
        core.session = Session::new(cookie, policy.lossy);
        core.events.push_back(Event::ReconnectDue);
        core
    }

    /// A session for a connection someone made to us: nothing is known of the peer yet
    /// (the default policy applies until its type is).
    pub(crate) fn incoming(cfg: Arc<ProtoConfig>, rng: Box<dyn Random>, now: Instant) -> Self {
        let policy = cfg.policies.default;
        let peer = Peer {
            addr: EntityAddr::blank(AddrType::NONE, 0),
            ty: EntityType::ANY,
            name: None,
            addrs: AddrVec::default(),
            features: 0,
        };
        SessionCore::new(cfg, rng, now, policy, State::Accepting, peer)
    }

    fn new(
        cfg: Arc<ProtoConfig>,
        rng: Box<dyn Random>,
        now: Instant,
        policy: Policy,
        state: State,
        peer: Peer,
    ) -> Self {
        SessionCore {
            policy,
            rng,
            epoch: now,
            state,
            session: Session::new(0, false),
            peer,
            events: VecDeque::new(),
            reconnect_at: None,
            standby_until: None,
            backoff: cfg.backoff_initial,
            hold_backoff: false,
            last_keepalive_ack: None,
            last_keepalive: None,
            farewell: Vec::new(),
            cfg,
        }
    }

    /// Queue a message. A session in standby starts reconnecting (unless we are a
    /// `server`, which waits for the peer).
    pub(crate) fn send(&mut self, msg: Message) -> Result<(), SendError> {
        let limits = &self.cfg.limits;
        for (section, len, limit) in [
            ("front", msg.front.len(), limits.max_front),
            ("middle", msg.middle.len(), limits.max_middle),
            ("data", msg.data.len(), limits.max_data),
        ] {
            if len as u64 > u64::from(limit) {
                return Err(SendError::TooLarge {
                    section,
                    len: len as u64,
                    limit,
                });
            }
        }
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

    /// The timers due at `now`, given the current link's clock: a standby that
    /// expired ends the session; a reconnect that is due is announced (only while there
    /// is no link); returns the error the link must fail with if its handshake or idle
    /// timeout passed.
    pub(crate) fn handle_timers(&mut self, now: Instant, link: Option<LinkClock>) -> Option<Error> {
        self.handle_session_timers(now, link.is_some());
        link.and_then(|l| self.link_expired(l, now))
    }

    fn handle_session_timers(&mut self, now: Instant, has_link: bool) {
        if self.state == State::Standby && self.standby_until.is_some_and(|t| t <= now) {
            self.standby_until = None;
            super::fault::standby_expired(self);
        }
        if self.reconnect_at.is_some_and(|t| t <= now) {
            self.reconnect_at = None;
            if matches!(self.state, State::Connecting | State::Wait) && !has_link {
                self.state = State::Connecting;
                self.events.push_back(Event::ReconnectDue);
            }
        }
    }

    /// The earliest session-level deadline (reconnect, standby expiry).
    pub(crate) fn session_deadline(&self) -> Option<Instant> {
        let standby = self.standby_until.filter(|_| self.state == State::Standby);
        match (self.reconnect_at, standby) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The end of a mark_down, once the link is dealt with: drop every queued and
    /// unacknowledged message and close, with no reconnect pending.
    pub(crate) fn close(&mut self) {
        self.session.reset(0);
        self.state = State::Closed;
        self.reconnect_at = None;
    }

    /// Make a lossless session lossy from now on (Ceph's `mark_disposable`).
    pub(crate) fn mark_disposable(&mut self) {
        self.policy.lossy = true;
        self.session.lossy = true;
    }

    /// If link `id` has farewell bytes, move them to `out` and return whether there
    /// were any to write.
    pub(crate) fn take_farewell(&mut self, id: LinkId, out: &mut Transmit) -> Option<bool> {
        let pos = self.farewell.iter().position(|(l, _)| *l == id)?;
        let (_, t) = self.farewell.swap_remove(pos);
        *out = t;
        Some(!out.is_empty())
    }

    /// A link is gone: keep its last bytes (`out`, if any) for the shell to write
    /// before it shuts the socket, and report the closure.
    pub(crate) fn link_closed(
        &mut self,
        id: LinkId,
        out: Transmit,
        error: Error,
        initiator: Initiator,
    ) {
        if !out.is_empty() {
            self.farewell.push((id, out));
        }
        self.events.push_back(Event::LinkClosed {
            link: id,
            error,
            initiator,
        });
    }

    /// True if link `id` has farewell bytes to write.
    pub(crate) fn has_farewell(&self, id: LinkId) -> bool {
        self.farewell.iter().any(|(l, _)| *l == id)
    }

    // ----- session rules both protocols apply --------------------------------

    /// The handshake completed: the session is open, the reconnect backoff starts over
    /// (unless held, see `hold_backoff`), and `event` (`Connected` or `Accepted`) is
    /// reported.
    pub(crate) fn opened(&mut self, event: Event) {
        self.state = State::Open;
        self.reconnect_at = None;
        if !self.hold_backoff {
            self.backoff = self.cfg.backoff_initial;
        }
        self.events.push_back(event);
    }

    /// The peer answered our resume with a reset (v1 RESETSESSION, msgr2
    /// RECONNECT_RESET): start a new session with a fresh cookie, keep what was never
    /// sent, drop (and count) what was sent unacknowledged, report a remote reset.
    pub(crate) fn peer_reset_our_session(&mut self) {
        log::info!("[{}] the peer reset our session", self.peer.addr);
        let cookie = random_cookie(&mut *self.rng);
        let dropped = self.session.reset_keep_queue(cookie);
        if dropped > 0 {
            log::info!(
                "[{}] {dropped} unacknowledged messages dropped by the reset",
                self.peer.addr
            );
        }
        self.events.push_back(Event::RemoteReset);
    }

    /// The accept decision adopts a connection that resets this session (docs/PROTOCOL.md
    /// §5.2): a fresh cookie, the queue kept; an established session reports the reset
    /// (lossy: `Reset`; lossless with `resetcheck`: `RemoteReset`).
    pub(crate) fn reset_for_adopted_link(&mut self) {
        let was_established = self.session.connect_seq > 0;
        let cookie = random_cookie(&mut *self.rng);
        self.session.reset_keep_queue(cookie);
        if was_established {
            if self.session.lossy {
                self.events.push_back(Event::Reset);
            } else if self.policy.resetcheck {
                self.events.push_back(Event::RemoteReset);
            }
        }
    }

    /// The sequence check of a received message (§5.1): `Ok(true)` to deliver it,
    /// `Ok(false)` for a duplicate (dropped), an error for a gap on a lossless session (a
    /// lossy peer may skip messages).
    pub(crate) fn check_incoming_seq(&mut self, seq: u64) -> Result<bool, Error> {
        match self.session.receive(seq) {
            Incoming::Deliver => Ok(true),
            Incoming::Duplicate => {
                log::debug!("[{}] dropping duplicate message seq {seq}", self.peer.addr);
                Ok(false)
            }
            Incoming::Gap { missing_from } => {
                if !self.session.lossy {
                    return Err(Error::PeerMisbehaved(
                        "message sequence gap on a lossless session",
                    ));
                }
                log::debug!(
                    "[{}] messages {missing_from}..{seq} skipped by a lossy peer",
                    self.peer.addr
                );
                Ok(true)
            }
        }
    }
}

/// The times a session's timers need from its current link (both protocols' links
/// keep them under the same names).
#[derive(Debug, Clone, Copy)]
pub(crate) struct LinkClock {
    /// The handshake completed on the link.
    pub(crate) open: bool,
    /// When the link was attached.
    pub(crate) started: Instant,
    /// When bytes last arrived on it.
    pub(crate) last_rx: Instant,
    /// When we last sent a keepalive on it.
    pub(crate) last_keepalive_tx: Instant,
}

impl SessionCore {
    /// The earliest deadline of a link: the handshake timeout while it is not open,
    /// then the idle timeout and the next keepalive (`None` if it has neither).
    pub(crate) fn link_deadline(&self, link: LinkClock) -> Option<Instant> {
        if !link.open {
            return Some(link.started + self.cfg.handshake_timeout);
        }
        let idle = self.cfg.idle_timeout.map(|t| link.last_rx + t);
        let keepalive = self
            .cfg
            .keepalive_interval
            .map(|iv| link.last_keepalive_tx + iv);
        match (idle, keepalive) {
            (Some(i), Some(k)) => Some(i.min(k)),
            (i, k) => i.or(k),
        }
    }

    /// The error a link fails with at `now`, if its handshake or idle timeout passed.
    pub(crate) fn link_expired(&self, link: LinkClock, now: Instant) -> Option<Error> {
        if !link.open {
            (now >= link.started + self.cfg.handshake_timeout).then_some(Error::HandshakeTimeout)
        } else {
            let t = self.cfg.idle_timeout?;
            (now >= link.last_rx + t).then_some(Error::IdleTimeout)
        }
    }
}

/// A session cookie: random and never 0 (0 means "unknown" on the wire).
pub(crate) fn random_cookie(rng: &mut dyn Random) -> u64 {
    let mut b = [0u8; 8];
    rng.fill(&mut b);
    u64::from_le_bytes(b).max(1)
}

/// The public methods both session machines answer from their [`SessionCore`]
/// (expanded inside each machine's `impl` block).
macro_rules! session_api {
    () => {
        /// Queue a message. A session in standby starts reconnecting (unless we are a
        /// `server`, which waits for the peer).
        pub fn send(
            &mut self,
            msg: $crate::wire::message::Message,
        ) -> Result<(), $crate::proto::msgr2::SendError> {
            self.core.send(msg)
        }

        /// Make a lossless session lossy from now on (Ceph's `mark_disposable`).
        pub fn mark_disposable(&mut self) {
            self.core.mark_disposable();
        }

        /// The next event, if any.
        pub fn poll_event(&mut self) -> Option<$crate::proto::event::Event> {
            self.core.events.pop_front()
        }

        /// Where the session stands.
        pub fn state(&self) -> $crate::proto::msgr2::State {
            self.core.state
        }

        /// True if messages flow now.
        pub fn is_connected(&self) -> bool {
            self.core.state == $crate::proto::msgr2::State::Open
        }

        /// What we know of the peer.
        pub fn peer(&self) -> &$crate::proto::msgr2::Peer {
            &self.core.peer
        }

        /// The policy in force.
        pub fn policy(&self) -> $crate::proto::policy::Policy {
            self.core.policy
        }

        /// The session's sequence state (for tests and stats).
        pub fn session(&self) -> &$crate::proto::session::Session {
            &self.core.session
        }

        /// When the last KEEPALIVE2_ACK arrived.
        pub fn last_keepalive_ack(&self) -> Option<std::time::Instant> {
            self.core.last_keepalive_ack
        }

        /// When the last keepalive (KEEPALIVE2, or v1's KEEPALIVE) arrived.
        pub fn last_keepalive(&self) -> Option<std::time::Instant> {
            self.core.last_keepalive
        }
    };
}
pub(crate) use session_api;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::SeededRng;
    use crate::wire::types::EntityName;

    fn core(state: State, server: bool) -> SessionCore {
        let cfg = Arc::new(ProtoConfig::new(
            EntityName::new(EntityType::CLIENT, 1),
            AddrVec::default(),
        ));
        let mut c = SessionCore::incoming(
            cfg,
            Box::new(SeededRng::new(1)),
            crate::proto::tests::epoch(),
        );
        c.state = state;
        c.policy.server = server;
        c
    }

    #[test]
    fn sending_in_standby_reconnects_a_client_but_not_a_server() {
        let mut c = core(State::Standby, false);
        c.send(Message::new(1, vec![1])).unwrap();
        assert_eq!(c.state, State::Connecting);
        assert!(matches!(c.events.pop_front(), Some(Event::ReconnectDue)));
        let mut s = core(State::Standby, true);
        s.send(Message::new(1, vec![1])).unwrap();
        assert_eq!(s.state, State::Standby);
        assert!(s.events.is_empty());
        assert_eq!(s.session.queued(), 1);
        let mut closed = core(State::Closed, false);
        assert!(closed.send(Message::new(1, vec![1])).is_err());
    }

    #[test]
    fn timers_fire_only_when_due() {
        let now = crate::proto::tests::epoch();
        let mut c = core(State::Wait, false);
        c.reconnect_at = Some(now + Duration::from_millis(5));
        assert_eq!(c.session_deadline(), c.reconnect_at);
        c.handle_session_timers(now, false);
        assert!(c.events.is_empty(), "not due yet");
        c.handle_session_timers(now + Duration::from_millis(5), true);
        assert!(c.events.is_empty(), "a link exists: no reconnect");
        c.reconnect_at = Some(now);
        c.handle_session_timers(now, false);
        assert_eq!(c.state, State::Connecting);
        assert!(matches!(c.events.pop_front(), Some(Event::ReconnectDue)));
        assert_eq!(c.session_deadline(), None);
        // Standby expiry counts only in standby, and ends the session with a reset.
        let mut s = core(State::Standby, true);
        s.standby_until = Some(now);
        assert_eq!(s.session_deadline(), Some(now));
        s.handle_session_timers(now, false);
        assert_eq!(s.state, State::Closed);
        assert!(s.events.iter().any(|e| matches!(e, Event::Reset)));
    }

    #[test]
    fn farewells_are_handed_out_once() {
        let mut c = core(State::Open, false);
        let mut t = Transmit::new();
        t.push_copy(b"bye");
        c.farewell.push((7, t));
        assert!(c.has_farewell(7) && !c.has_farewell(8));
        let mut out = Transmit::new();
        assert_eq!(c.take_farewell(8, &mut out), None);
        assert_eq!(c.take_farewell(7, &mut out), Some(true));
        assert_eq!(out.len(), 3);
        assert!(!c.has_farewell(7));
    }

    #[test]
    fn link_timers_follow_the_handshake_then_idle_and_keepalive() {
        let now = crate::proto::tests::epoch();
        let s = Duration::from_secs;
        let mut c = core(State::Connecting, false);
        let mut cfg = (*c.cfg).clone();
        cfg.handshake_timeout = s(5);
        cfg.idle_timeout = Some(s(60));
        cfg.keepalive_interval = None;
        c.cfg = Arc::new(cfg.clone());
        let mut link = LinkClock {
            open: false,
            started: now,
            last_rx: now,
            last_keepalive_tx: now,
        };
        // Before the handshake completes only the handshake timeout counts.
        assert_eq!(c.link_deadline(link), Some(now + s(5)));
        assert!(c.link_expired(link, now + s(4)).is_none());
        assert!(matches!(
            c.link_expired(link, now + s(5)),
            Some(Error::HandshakeTimeout)
        ));
        // Then the idle timeout, from the last bytes received.
        link.open = true;
        link.last_rx = now + s(10);
        assert_eq!(c.link_deadline(link), Some(now + s(70)));
        assert!(c.link_expired(link, now + s(69)).is_none());
        assert!(matches!(
            c.link_expired(link, now + s(70)),
            Some(Error::IdleTimeout)
        ));
        // A keepalive due earlier is the deadline.
        cfg.keepalive_interval = Some(s(15));
        c.cfg = Arc::new(cfg.clone());
        assert_eq!(c.link_deadline(link), Some(now + s(15)));
        // Without an idle timeout an open link only keeps alive, or waits forever.
        cfg.idle_timeout = None;
        c.cfg = Arc::new(cfg.clone());
        assert_eq!(c.link_deadline(link), Some(now + s(15)));
        assert!(c.link_expired(link, now + s(100_000)).is_none());
        cfg.keepalive_interval = None;
        c.cfg = Arc::new(cfg);
        assert_eq!(c.link_deadline(link), None);
    }

    #[test]
    fn cookies_are_never_zero() {
        struct Zero;
        impl Random for Zero {
            fn fill(&mut self, b: &mut [u8]) {
                b.fill(0);
            }
        }
        assert_eq!(random_cookie(&mut Zero), 1);
    }
}
