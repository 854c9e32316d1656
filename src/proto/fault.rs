//! What a session does when its link is lost — one rule for msgr2 and v1
//! (docs/PROTOCOL.md §5.1, §5.3; Ceph's `Pipe::fault`).
//!
//! - a permanent error (auth, features, mode, policy) before the session opened ends it
//!   with [`Event::Refused`]: reconnecting would not help, so nothing is retried;
//! - a lossy session ends with [`Event::Reset`]: what it held is lost;
//! - a lossless session keeps everything unacknowledged for replay, and then either
//!   waits (a `server`, or an idle `standby` peer, or the loser of a race) or
//!   reconnects: at once if the link had been open, else after a doubling backoff
//!   shortened by a random fraction of up to `backoff_jitter` (default 20%), so that
//!   many clients do not return in lock-step;
//! - an open link the peer closed with CLOSE(PROTOCOL) counts as a failed attempt, and
//!   the backoff keeps doubling through the handshakes that follow until a link ends
//!   for another reason: what we replay would most likely break the peer's rules again
//!   (say a message above the peer's `max_data_len`), and reconnecting at once made a
//!   hot loop of it (about 440 connections a second).

use std::time::Instant;

use super::core::SessionCore;
use super::event::{Error, Event};
use super::msgr2::State;
use crate::wire::msgr2::CloseReason;

/// Apply the rule after the link closed with `error`; `was_open` tells whether the
/// handshake had completed on it.
pub(crate) fn after_link_loss(p: &mut SessionCore, error: Error, was_open: bool, now: Instant) {
    if matches!(p.state, State::Accepting | State::Closed) {
        p.state = State::Closed;
        return;
    }
    if error.is_permanent() && !was_open {
        p.session.reset(0);
        p.state = State::Closed;
        p.events.push_back(Event::Refused(error));
        return;
    }
    if p.session.lossy {
        p.session.reset(0);
        p.state = State::Closed;
        p.events.push_back(Event::Reset);
        return;
    }
    p.session.requeue_sent();
    if was_open && p.session.connect_seq > 0 && !p.policy.server {
        p.session.connect_seq += 1;
    }
    if p.policy.server || (p.policy.standby && !p.session.has_outgoing() && p.state != State::Wait)
    {
        p.state = State::Standby;
        // A server never reconnects: if the peer does not come back, the session would
        // wait forever (holding its thread and its connection slot); it expires instead.
        p.standby_until = p.policy.server.then(|| now + p.cfg.standby_timeout);
        return;
    }
    if p.state == State::Wait {
        // The peer said its connection wins; if it never comes, try again later.
        p.reconnect_at = Some(now + p.cfg.backoff_max.min(p.backoff * 4));
        return;
    }
    p.state = State::Connecting;
    let refused_by_peer = matches!(
        error,
        Error::Closed {
            reason: CloseReason::PROTOCOL,
            ..
        }
    );
    if refused_by_peer {
        log::warn!(
            "[{}] the peer closed the connection over a protocol violation ({error}); \
             reconnecting after {:?}",
            p.peer.addr,
            p.backoff
        );
        p.hold_backoff = true;
    } else if was_open {
        p.hold_backoff = false;
    }
    // Jitter (`ProtoConfig::backoff_jitter`, fraction `j`; `u` uniform in 0..=1): many
    // clients that lose one server at once must not come back in lock-step.
    if was_open && !refused_by_peer {
        // The first attempt at once (as Ceph): if the peer is gone it fails fast, and
        // the jittered backoff below spreads the attempts that follow.
        p.backoff = p.cfg.backoff_initial;
        p.reconnect_at = Some(now);
    } else {
        // Each later delay is shortened by a random fraction of up to j.
        let j = p.cfg.backoff_jitter.clamp(0.0, 1.0);
        let u = {
            let mut b = [0u8; 2];
            p.rng.fill(&mut b);
            f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX)
        };
        p.reconnect_at = Some(now + p.backoff.mul_f64(1.0 - j * u));
        p.backoff = (p.backoff * 2).min(p.cfg.backoff_max);
    }
}

/// A `server` session that waited in standby longer than `standby_timeout` for its peer
/// to come back ends like a lost lossy session: reset, and reported with
/// [`Event::Reset`]. A peer that returns later is told RESET and reports a remote reset.
pub(crate) fn standby_expired(p: &mut SessionCore) {
    if p.state == State::Standby {
        p.session.reset(0);
        p.state = State::Closed;
        p.events.push_back(Event::Reset);
    }
}
