//! Acting on state-machine events in dispatch order, and the stats gauges.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use log::{debug, info, warn};

use crate::proto::msgr2::State;
use crate::proto::{AnyConnection as ProtoConn, Error as ProtoError, Event as ProtoEvent};

use super::super::messenger::Inner;
use super::super::stats::{ConnState as GaugeState, RefuseReason};
use super::super::Error;

use super::*;

/// Events taken from a session under its lock, with their place in the dispatch order.
pub(crate) struct Batch {
    pub(super) events: Vec<ProtoEvent>,
    ticket: Option<u64>,
}

/// Take the pending events. With `ordered`, the batch gets a dispatch ticket (call
/// with the session lock held, from a messenger thread). User calls (send, mark_down,
/// connect) take unordered batches: they run inside callbacks too, and their events
/// (ReconnectDue, LinkClosed) call no dispatcher method.
pub(crate) fn drain(proto: &mut ProtoConn, shared: &ConnShared, ordered: bool) -> Batch {
    let mut events = Vec::new();
    while let Some(e) = proto.poll_event() {
        events.push(e);
    }
    let ticket = (ordered && !events.is_empty()).then(|| shared.ticket());
    Batch { events, ticket }
}

pub(crate) fn conn_ref(inner: &Arc<Inner>, shared: &Arc<ConnShared>) -> ConnectionRef {
    ConnectionRef {
        id: shared.id,
        peer: *shared.peer_hint.lock(),
        shared: shared.clone(),
        msgr: Arc::downgrade(inner),
    }
}

/// Act on state-machine events, with no lock held.
///
/// Messages are dispatched in order on the calling (reader) thread. The dispatch
/// throttle is taken once for the whole batch of messages that one read produced,
/// before the first is dispatched, and released after the last.
pub(crate) fn handle_events(inner: &Arc<Inner>, shared: &Arc<ConnShared>, batch: Batch) {
    match batch.ticket {
        Some(t) => shared.in_turn(t, || dispatch_events(inner, shared, batch.events)),
        None => dispatch_events(inner, shared, batch.events),
    }
}

fn dispatch_events(inner: &Arc<Inner>, shared: &Arc<ConnShared>, events: Vec<ProtoEvent>) {
    if events.is_empty() {
        return;
    }
    let cref = conn_ref(inner, shared);
    let (count, bytes) = events.iter().fold((0u64, 0u64), |(c, b), e| match e {
        ProtoEvent::Message(m) => (c + 1, b + m.payload_len() as u64),
        _ => (c, b),
    });
    if count > 0 {
        inner.dispatch_throttle.acquire(count, bytes);
    }
    // Only events other than messages can move the session between states: a batch of
    // messages alone needs no second look at the session (it is the hot path).
    let state_may_change = events.len() as u64 > count;
    let mut closed = false;
    for ev in events {
        match ev {
            ProtoEvent::Message(m) => {
                inner.stats.msg_in();
                inner.dispatcher.dispatch(&cref, m);
            }
            ProtoEvent::Connected { resumed } => {
                info!("conn#{} connected (resumed={resumed})", shared.id);
                if let Some(addr) = shared.target {
                    let method = shared.state.lock().proto.auth_method();
                    inner.method_cache.lock().insert(addr, method);
                }
                inner.dispatcher.handle_connect(&cref);
            }
            ProtoEvent::Accepted { resumed } => {
                info!("conn#{} accepted (resumed={resumed})", shared.id);
                inner.dispatcher.handle_accept(&cref);
            }
            ProtoEvent::ReconnectDue => {
                shared.state.lock().connect_due = true;
                shared.wake();
            }
            ProtoEvent::LinkClosed {
                link,
                error,
                initiator,
            } => {
                debug!(
                    "conn#{} link {link} closed ({initiator:?}): {error}",
                    shared.id
                );
                count_handshake_failure(inner, shared, &error);
                close_link(shared, link);
                closed = true;
            }
            ProtoEvent::Reset => {
                inner.forget(shared);
                inner.dispatcher.handle_reset(&cref);
                closed = true;
            }
            ProtoEvent::RemoteReset => inner.dispatcher.handle_remote_reset(&cref),
            ProtoEvent::Refused(e) => {
                warn!("conn#{} refused: {e}", shared.id);
                inner.forget(shared);
                inner.dispatcher.handle_refused(
                    &cref,
                    &Error::Refused {
                        reason: e.to_string(),
                    },
                );
                closed = true;
            }
            ProtoEvent::AcceptRequest(_) => {
                // Handled by the reader thread of the incoming link (see `reader_loop`).
            }
            ProtoEvent::ChunkedAborted { tid, code, message, received, total } => warn!(
                "conn#{}: peer aborted chunked message tid {tid} ({received}/{total} bytes): code {code}: {message}",
                shared.id
            ),
        }
    }
    if count > 0 {
        inner.dispatch_throttle.release(count, bytes);
    }
    if closed && shared.state.lock().proto.state() == State::Closed {
        shared.closed.store(true, Ordering::Release);
        shared.wake();
    }
    if state_may_change {
        sync_gauge(inner, shared);
    }
}

/// A link closed: if it was still in its handshake, count why it failed.
fn count_handshake_failure(inner: &Inner, shared: &ConnShared, error: &ProtoError) {
    if *shared.gauge.lock() != Some(GaugeState::Handshaking) {
        return;
    }
    let why = match error {
        ProtoError::HandshakeTimeout => RefuseReason::HandshakeTimeout,
        ProtoError::Auth(_) | ProtoError::NoCommonAuthMethod { .. } => RefuseReason::Auth,
        ProtoError::Banner(_)
        | ProtoError::Frame(_)
        | ProtoError::UnexpectedFrame { .. }
        | ProtoError::PeerMisbehaved(_)
        | ProtoError::BadProtocolVersion { .. } => RefuseReason::Protocol,
        _ => return,
    };
    inner.stats.refused(why);
}

/// Count the session in the stats gauge of its current state, and end its admission
/// "handshaking" slot once it has left the handshake. A session that is connecting
/// (including one waiting out a reconnect backoff, or a lost connection race) counts
/// as handshaking; a closed one in no gauge.
pub(crate) fn sync_gauge(inner: &Inner, shared: &ConnShared) {
    let now = match shared.state.lock().proto.state() {
        State::Accepting | State::Connecting | State::Wait => Some(GaugeState::Handshaking),
        State::Open => Some(GaugeState::Open),
        State::Standby => Some(GaugeState::Standby),
        State::Closed => None,
    };
    set_gauge(inner, shared, now);
}

fn set_gauge(inner: &Inner, shared: &ConnShared, now: Option<GaugeState>) {
    let mut g = shared.gauge.lock();
    if *g == now {
        return;
    }
    match (*g, now) {
        (Some(a), Some(b)) => inner.stats.conn_transition(a, b),
        (Some(a), None) => inner.stats.conn_leave(a),
        (None, Some(b)) => inner.stats.conn_enter(b),
        (None, None) => {}
    }
    *g = now;
    drop(g);
    if now != Some(GaugeState::Handshaking) {
        if let Some(t) = shared.slot.lock().as_mut() {
            t.handshake_done();
        }
    }
}

/// The session's writer thread could not start: close it where it stands (no lock
/// other than its own is taken, so this is safe under the session-table lock).
pub(crate) fn abandon(inner: &Inner, shared: &ConnShared) {
    shared.state.lock().proto.mark_down(Instant::now());
    shared.closed.store(true, Ordering::Release);
    inner.all.lock().remove(&shared.id);
    session_ended(inner, shared);
}

/// The session's writer thread is exiting: it no longer counts anywhere.
pub(crate) fn session_ended(inner: &Inner, shared: &ConnShared) {
    set_gauge(inner, shared, None);
    shared.slot.lock().take();
}
