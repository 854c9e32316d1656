//! The server's decision when a peer opens or resumes a session (docs/PROTOCOL.md §5.2).
//!
//! A pure function of the existing session (if any) and the incoming attempt, so
//! both sides of a connection race reach mirror-image decisions and the table can
//! be tested row by row without sockets.

use crate::wire::types::EntityAddr;

/// Where an existing session stands, as far as the decision needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExistingState {
    /// We are connecting to the peer ourselves (handshake in progress or backing off).
    Connecting,
    /// Open, or in standby waiting for the peer: the session is established.
    Established,
    /// We were told to wait for the peer's connection (we lost a race).
    Waiting,
}

/// What the decision needs to know of an existing session with the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExistingView {
    /// Its state.
    pub state: ExistingState,
    /// Lossy sessions are simply replaced.
    pub lossy: bool,
    /// connect_seq of the session (0 until the first connection succeeded).
    pub connect_seq: u64,
    /// The highest global_seq seen from the peer.
    pub peer_global_seq: u64,
    /// Our cookie for this session (what a resuming peer must present).
    pub cookie: u64,
}

/// The incoming attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// The peer's global_seq for this attempt.
    pub global_seq: u64,
    /// `Some((server_cookie, connect_seq))` when the peer resumes; `None` for a new session.
    pub resume: Option<(u64, u64)>,
}

impl Attempt {
    fn connect_seq(&self) -> u64 {
        self.resume.map_or(0, |(_, c)| c)
    }
}

/// The answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No session exists: create one on the incoming connection.
    New,
    /// Move the incoming connection into the existing session. With `reset`, the
    /// existing session's state is discarded first (the peer restarted, or it was lossy).
    Adopt {
        /// Discard the existing session's sequence state and queues first.
        reset: bool,
    },
    /// Tell the peer to retry with this connect_seq.
    RetrySession(u64),
    /// Tell the peer to retry with a global_seq above this one.
    RetryGlobal(u64),
    /// Tell the peer we have no such session.
    Reset,
    /// We are connecting to the peer and our connection wins the race: tell it to wait.
    Wait,
}

/// Decide, in the order of docs/PROTOCOL.md §5.2.
///
/// `peer_addr` and `my_addr` are the two sides' advertised addresses; the lower one's
/// connection wins a race, unless we are a `server` (never connects), in which case
/// the incoming one always wins.
pub fn decide(
    existing: Option<&ExistingView>,
    attempt: &Attempt,
    peer_addr: &EntityAddr,
    my_addr: &EntityAddr,
    we_are_server: bool,
) -> Decision {
    let Some(ex) = existing else {
        // Row 1 / row 9: nothing to resume, or a fresh session.
        return if attempt.resume.is_some() {
            Decision::Reset
        } else {
            Decision::New
        };
    };
    // Row 1: the peer resumes a session we do not have (our cookie changed: we restarted
    // or replaced it).
    if let Some((cookie, _)) = attempt.resume {
        if cookie != ex.cookie {
            return Decision::Reset;
        }
    }
    // Row 2: a stale attempt, older than one we have already seen.
    if attempt.global_seq < ex.peer_global_seq {
        return Decision::RetryGlobal(ex.peer_global_seq);
    }
    // Row 3: lossy sessions are never resumed; a new session replaces them.
    if ex.lossy {
        return if attempt.resume.is_some() {
            Decision::Reset
        } else {
            Decision::Adopt { reset: true }
        };
    }
    let cseq = attempt.connect_seq();
    // Row 4: a new session from a peer we had a session with: it restarted or reset.
    if attempt.resume.is_none() && ex.connect_seq > 0 {
        return Decision::Adopt { reset: true };
    }
    // Row 5: the peer is behind; the value lets its next attempt succeed at once.
    if cseq < ex.connect_seq {
        return Decision::RetrySession(ex.connect_seq + 1);
    }
    if cseq == ex.connect_seq {
        return match ex.state {
            // Row 6: both sides are connecting at once.
            ExistingState::Connecting | ExistingState::Waiting => {
                if peer_addr < my_addr || we_are_server {
                    Decision::Adopt { reset: false }
                } else {
                    Decision::Wait
                }
            }
            // Row 7: a duplicate of an attempt that already succeeded.
            ExistingState::Established => Decision::RetrySession(ex.connect_seq + 1),
        };
    }
    // Row 8: an ordinary reconnect.
    Decision::Adopt { reset: false }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::types::AddrType;

    fn addr(port: u16) -> EntityAddr {
        EntityAddr::new(AddrType::MSGR2, ([127, 0, 0, 1], port).into(), 0)
    }

    fn ex(state: ExistingState, cseq: u64, pgseq: u64) -> ExistingView {
        ExistingView {
            state,
            lossy: false,
            connect_seq: cseq,
            peer_global_seq: pgseq,
            cookie: 77,
        }
    }

    fn resume(gseq: u64, cseq: u64) -> Attempt {
        Attempt {
            global_seq: gseq,
            resume: Some((77, cseq)),
        }
    }

    fn fresh(gseq: u64) -> Attempt {
        Attempt {
            global_seq: gseq,
            resume: None,
        }
    }

    const LOW: u16 = 1000;
    const HIGH: u16 = 2000;

    #[test]
    fn row_by_row() {
        let (lo, hi) = (addr(LOW), addr(HIGH));
        let d = |e: Option<ExistingView>, a: Attempt| decide(e.as_ref(), &a, &lo, &hi, false);
        // Row 9 and row 1 without a session.
        assert_eq!(d(None, fresh(1)), Decision::New);
        assert_eq!(d(None, resume(1, 3)), Decision::Reset);
        // Row 1: wrong cookie.
        let wrong = Attempt {
            global_seq: 5,
            resume: Some((78, 3)),
        };
        assert_eq!(
            d(Some(ex(ExistingState::Established, 2, 1)), wrong),
            Decision::Reset
        );
        // Row 2: stale global_seq.
        assert_eq!(
            d(Some(ex(ExistingState::Established, 2, 9)), resume(5, 3)),
            Decision::RetryGlobal(9)
        );
        // Row 3: lossy.
        let lossy = ExistingView {
            lossy: true,
            ..ex(ExistingState::Established, 2, 1)
        };
        assert_eq!(d(Some(lossy), fresh(5)), Decision::Adopt { reset: true });
        assert_eq!(d(Some(lossy), resume(5, 3)), Decision::Reset);
        // Row 4: peer restarted.
        assert_eq!(
            d(Some(ex(ExistingState::Established, 2, 1)), fresh(5)),
            Decision::Adopt { reset: true }
        );
        // Row 5: peer behind.
        assert_eq!(
            d(Some(ex(ExistingState::Established, 4, 1)), resume(5, 3)),
            Decision::RetrySession(5)
        );
        // Row 7: duplicate of an established attempt.
        assert_eq!(
            d(Some(ex(ExistingState::Established, 3, 1)), resume(5, 3)),
            Decision::RetrySession(4)
        );
        // Row 8: ordinary reconnect.
        assert_eq!(
            d(Some(ex(ExistingState::Established, 2, 1)), resume(5, 3)),
            Decision::Adopt { reset: false }
        );
    }

    #[test]
    fn races_are_decided_identically_on_both_sides() {
        let (a, b) = (addr(LOW), addr(HIGH));
        for (cseq, attempt) in [(0, fresh(5)), (3, resume(5, 3))] {
            // At B, the attempt comes from A (lower): A's connection wins.
            let at_b = decide(
                Some(&ex(ExistingState::Connecting, cseq, 0)),
                &attempt,
                &a,
                &b,
                false,
            );
            // At A, the attempt comes from B (higher): B must wait.
            let at_a = decide(
                Some(&ex(ExistingState::Connecting, cseq, 0)),
                &attempt,
                &b,
                &a,
                false,
            );
            assert_eq!(at_b, Decision::Adopt { reset: false });
            assert_eq!(at_a, Decision::Wait);
        }
        // A server never connects, so the incoming connection always wins.
        let s = decide(
            Some(&ex(ExistingState::Connecting, 0, 0)),
            &fresh(1),
            &b,
            &a,
            true,
        );
        assert_eq!(s, Decision::Adopt { reset: false });
    }
}
