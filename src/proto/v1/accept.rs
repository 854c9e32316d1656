//! The accept side's decision table (docs/PROTOCOL.md §10.2.3; Ceph's `Pipe::accept`,
//! messenger-anchors §1.4 rows 1–15) as one pure function over a small view of the
//! existing session, so every row can be tested on its own.
//!
//! Row 5 of the table ("an existing connection is still fast-dispatching: wait and
//! look again") has no equivalent here: it is a locking detail of Ceph's threads, and
//! the caller takes its snapshot of [`ExistingSession`] after such work is done.

use crate::wire::types::EntityAddr;
use crate::wire::v1::{features, ConnectMsg};

/// `authorizer_protocol` value of cephx.
pub const AUTH_CEPHX: u32 = 2;

/// The state of the existing connection for the peer's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExistingState {
    /// Our own outgoing connect is in progress.
    Connecting,
    /// Our outgoing connect was told to WAIT.
    Wait,
    /// Open and exchanging messages.
    Open,
    /// Idle, no socket, session kept.
    Standby,
}

/// What the accept decision needs to know about an existing session for the same peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExistingSession {
    /// State of its connection.
    pub state: ExistingState,
    /// Its connect_seq.
    pub connect_seq: u32,
    /// The global_seq of the peer's last accepted connect.
    pub peer_global_seq: u32,
    /// Whether the existing session is lossy.
    pub lossy: bool,
}

/// The accepting side's own policy and identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcceptPolicy {
    /// The protocol version we speak with this peer type.
    pub protocol_version: u32,
    /// Features we require.
    pub features_required: u64,
    /// Require MSG_AUTH (signatures) from peers that present a cephx authorizer.
    pub cephx_require_signatures: bool,
    /// Detect peer session resets (answer RESETSESSION when we lost the session).
    pub resetcheck: bool,
    /// Our policy is `server` (we never reconnect): we win connection races.
    pub server: bool,
    /// Our address (compared with the peer's in a connection race).
    pub my_addr: EntityAddr,
}

/// How a successful accept relates to an existing session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenKind {
    /// A new session.
    New,
    /// Take over the existing session.
    Replace {
        /// The existing session must be reset (its messages are dropped, in/out seq restart).
        reset_existing: bool,
        /// The peer restarted (cseq 0): no SEQ exchange, in_seq starts from 0.
        peer_reset: bool,
    },
}

/// The reply the accept side sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcceptDecision {
    /// BADPROTOVER.
    BadProtoVer,
    /// FEATURES: the peer lacks some of `required`.
    Features {
        /// Every feature we require (MSG_AUTH included when row 2 applied).
        required: u64,
    },
    /// BADAUTHORIZER.
    BadAuthorizer,
    /// RETRY_GLOBAL: the peer must use a global_seq above this one.
    RetryGlobal {
        /// existing.peer_global_seq.
        global_seq: u32,
    },
    /// RETRY_SESSION with this connect_seq.
    RetrySession {
        /// The connect_seq the peer must use.
        connect_seq: u32,
    },
    /// WAIT: our own outgoing connection wins the race.
    Wait,
    /// RESETSESSION: the peer must start a new session (cseq 0).
    ResetSession,
    /// READY or SEQ.
    Open(OpenKind),
}

/// The decision and the table row (1–15) that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accept {
    /// The row of docs/PROTOCOL.md §10.2.3 that decided.
    pub row: u8,
    /// The decision.
    pub decision: AcceptDecision,
}

/// Everything about the incoming attempt that the decision looks at.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// The connect message.
    pub connect: &'a ConnectMsg,
    /// The peer's address (from the address exchange).
    pub peer_addr: &'a EntityAddr,
    /// The verdict of the authorizer check (an empty authorizer is fine for v1 clients).
    pub authorizer_ok: bool,
}

/// Decide the reply to a `ceph_msg_connect`, in the table's order.
pub fn decide_accept(
    inc: &Incoming<'_>,
    policy: &AcceptPolicy,
    existing: Option<&ExistingSession>,
) -> Accept {
    let c = inc.connect;
    let done = |row, decision| Accept { row, decision };
    // Row 1: a peer speaking another protocol version cannot be served.
    if c.protocol_version != policy.protocol_version {
        return done(1, AcceptDecision::BadProtoVer);
    }
    // Row 2: cephx peers may be required to sign, which needs MSG_AUTH.
    let mut required = policy.features_required;
    let mut row = 3;
    if c.authorizer_protocol == AUTH_CEPHX && policy.cephx_require_signatures {
        required |= features::MSG_AUTH;
        row = 2;
    }
    // Row 3 (or 2 if MSG_AUTH was what made it fail).
    if required & !c.features != 0 {
        let row = if policy.features_required & !c.features != 0 {
            3
        } else {
            row
        };
        return done(row, AcceptDecision::Features { required });
    }
    // Row 4.
    if !inc.authorizer_ok {
        return done(4, AcceptDecision::BadAuthorizer);
    }
    let Some(ex) = existing else {
        // Row 14: the peer resumes a session we no longer have.
        if c.connect_seq > 0 {
            return done(14, AcceptDecision::ResetSession);
        }
        // Row 15.
        return done(15, AcceptDecision::Open(OpenKind::New));
    };
    // Row 6: a stale attempt from before the peer's last accepted one.
    if c.global_seq < ex.peer_global_seq {
        return done(
            6,
            AcceptDecision::RetryGlobal {
                global_seq: ex.peer_global_seq,
            },
        );
    }
    // Row 7: nothing to preserve in a lossy session.
    if ex.lossy {
        return done(
            7,
            AcceptDecision::Open(OpenKind::Replace {
                reset_existing: true,
                peer_reset: false,
            }),
        );
    }
    // Row 8: the peer restarted and opens a new session.
    if c.connect_seq == 0 && ex.connect_seq > 0 {
        let kind = OpenKind::Replace {
            reset_existing: policy.resetcheck,
            peer_reset: true,
        };
        return done(8, AcceptDecision::Open(kind));
    }
    // Row 9: an old attempt, or the peer missed our READY.
    if c.connect_seq < ex.connect_seq {
        return done(
            9,
            AcceptDecision::RetrySession {
                connect_seq: ex.connect_seq + 1,
            },
        );
    }
    if c.connect_seq == ex.connect_seq {
        return match ex.state {
            // Row 10.
            ExistingState::Open | ExistingState::Standby => done(
                10,
                AcceptDecision::RetrySession {
                    connect_seq: ex.connect_seq + 1,
                },
            ),
            // Row 11: both sides connected at once; the lower address or a server wins.
            ExistingState::Connecting | ExistingState::Wait => {
                if *inc.peer_addr < policy.my_addr || policy.server {
                    let kind = OpenKind::Replace {
                        reset_existing: false,
                        peer_reset: false,
                    };
                    done(11, AcceptDecision::Open(kind))
                } else {
                    done(11, AcceptDecision::Wait)
                }
            }
        };
    }
    // Row 12: the peer reconnects to a session we lost (we restarted).
    if policy.resetcheck && ex.connect_seq == 0 {
        return done(12, AcceptDecision::ResetSession);
    }
    // Row 13: an ordinary reconnect.
    done(
        13,
        AcceptDecision::Open(OpenKind::Replace {
            reset_existing: false,
            peer_reset: false,
        }),
    )
}

#[cfg(test)]
mod tests {
    //! Ceph's test plan T1: the reply tag, row by row.
    use super::*;
    use crate::wire::types::AddrType;

    fn addr(port: u16) -> EntityAddr {
        EntityAddr::new(
            AddrType::LEGACY,
            format!("127.0.0.1:{port}").parse().unwrap(),
            0,
        )
    }

    fn policy() -> AcceptPolicy {
        AcceptPolicy {
            protocol_version: 15,
            features_required: 0x10,
            cephx_require_signatures: true,
            resetcheck: true,
            server: false,
            my_addr: addr(6789),
        }
    }

    fn connect(gseq: u32, cseq: u32) -> ConnectMsg {
        ConnectMsg {
            features: 0x10,
            global_seq: gseq,
            connect_seq: cseq,
            protocol_version: 15,
            ..Default::default()
        }
    }

    fn ex(state: ExistingState, cseq: u32, pgseq: u32, lossy: bool) -> ExistingSession {
        ExistingSession {
            state,
            connect_seq: cseq,
            peer_global_seq: pgseq,
            lossy,
        }
    }

    fn run(c: &ConnectMsg, p: &AcceptPolicy, e: Option<ExistingSession>, peer_port: u16) -> Accept {
        let peer = addr(peer_port);
        decide_accept(
            &Incoming {
                connect: c,
                peer_addr: &peer,
                authorizer_ok: true,
            },
            p,
            e.as_ref(),
        )
    }

    use AcceptDecision as D;
    use ExistingState as S;

    #[test]
    fn row_1_bad_protocol_version() {
        let mut c = connect(1, 0);
        c.protocol_version = 24;
        assert_eq!(
            run(&c, &policy(), None, 1),
            Accept {
                row: 1,
                decision: D::BadProtoVer
            }
        );
    }

    #[test]
    fn row_2_cephx_requires_msg_auth() {
        let mut c = connect(1, 0);
        c.authorizer_protocol = AUTH_CEPHX;
        let a = run(&c, &policy(), None, 1);
        assert_eq!(
            a,
            Accept {
                row: 2,
                decision: D::Features {
                    required: 0x10 | features::MSG_AUTH
                }
            }
        );
        c.features |= features::MSG_AUTH;
        assert_eq!(run(&c, &policy(), None, 1).row, 15);
        let p = AcceptPolicy {
            cephx_require_signatures: false,
            ..policy()
        };
        c.features = 0x10;
        assert_eq!(run(&c, &p, None, 1).row, 15);
    }

    #[test]
    fn row_3_missing_features() {
        let mut c = connect(1, 0);
        c.features = 0x1;
        assert_eq!(
            run(&c, &policy(), None, 1),
            Accept {
                row: 3,
                decision: D::Features { required: 0x10 }
            }
        );
    }

    #[test]
    fn row_4_bad_authorizer() {
        let c = connect(1, 0);
        let peer = addr(1);
        let a = decide_accept(
            &Incoming {
                connect: &c,
                peer_addr: &peer,
                authorizer_ok: false,
            },
            &policy(),
            None,
        );
        assert_eq!(
            a,
            Accept {
                row: 4,
                decision: D::BadAuthorizer
            }
        );
    }

    #[test]
    fn row_6_stale_global_seq() {
        let a = run(&connect(3, 1), &policy(), Some(ex(S::Open, 1, 5, false)), 1);
        assert_eq!(
            a,
            Accept {
                row: 6,
                decision: D::RetryGlobal { global_seq: 5 }
            }
        );
    }

    #[test]
    fn row_7_lossy_existing_is_replaced() {
        let a = run(&connect(9, 4), &policy(), Some(ex(S::Open, 1, 5, true)), 1);
        assert_eq!(a.row, 7);
        assert_eq!(
            a.decision,
            D::Open(OpenKind::Replace {
                reset_existing: true,
                peer_reset: false
            })
        );
    }

    #[test]
    fn row_8_peer_restarted() {
        let a = run(&connect(9, 0), &policy(), Some(ex(S::Open, 3, 5, false)), 1);
        assert_eq!(
            a,
            Accept {
                row: 8,
                decision: D::Open(OpenKind::Replace {
                    reset_existing: true,
                    peer_reset: true
                })
            }
        );
        let p = AcceptPolicy {
            resetcheck: false,
            ..policy()
        };
        let a = run(&connect(9, 0), &p, Some(ex(S::Open, 3, 5, false)), 1);
        assert_eq!(
            a.decision,
            D::Open(OpenKind::Replace {
                reset_existing: false,
                peer_reset: true
            })
        );
    }

    #[test]
    fn row_9_old_connect_seq() {
        let a = run(&connect(9, 2), &policy(), Some(ex(S::Open, 3, 5, false)), 1);
        assert_eq!(
            a,
            Accept {
                row: 9,
                decision: D::RetrySession { connect_seq: 4 }
            }
        );
    }

    #[test]
    fn row_10_same_connect_seq_while_open_or_standby() {
        for st in [S::Open, S::Standby] {
            let a = run(&connect(9, 3), &policy(), Some(ex(st, 3, 5, false)), 1);
            assert_eq!(
                a,
                Accept {
                    row: 10,
                    decision: D::RetrySession { connect_seq: 4 }
                }
            );
        }
    }

    #[test]
    fn row_11_connection_race() {
        let replace = D::Open(OpenKind::Replace {
            reset_existing: false,
            peer_reset: false,
        });
        for st in [S::Connecting, S::Wait] {
            // Peer address lower than ours: incoming wins.
            assert_eq!(
                run(&connect(9, 3), &policy(), Some(ex(st, 3, 5, false)), 1000).decision,
                replace
            );
            // Peer address higher: our outgoing wins, the peer waits.
            let a = run(&connect(9, 3), &policy(), Some(ex(st, 3, 5, false)), 9000);
            assert_eq!(
                a,
                Accept {
                    row: 11,
                    decision: D::Wait
                }
            );
            // A server always lets the incoming one win.
            let p = AcceptPolicy {
                server: true,
                ..policy()
            };
            assert_eq!(
                run(&connect(9, 3), &p, Some(ex(st, 3, 5, false)), 9000).decision,
                replace
            );
        }
    }

    #[test]
    fn row_12_we_restarted() {
        let a = run(
            &connect(9, 2),
            &policy(),
            Some(ex(S::Connecting, 0, 5, false)),
            1,
        );
        assert_eq!(
            a,
            Accept {
                row: 12,
                decision: D::ResetSession
            }
        );
    }

    #[test]
    fn row_13_ordinary_reconnect() {
        let a = run(
            &connect(9, 4),
            &policy(),
            Some(ex(S::Standby, 3, 5, false)),
            1,
        );
        assert_eq!(a.row, 13);
        assert_eq!(
            a.decision,
            D::Open(OpenKind::Replace {
                reset_existing: false,
                peer_reset: false
            })
        );
        // Without resetcheck, row 12's case becomes an ordinary reconnect.
        let p = AcceptPolicy {
            resetcheck: false,
            ..policy()
        };
        assert_eq!(
            run(&connect(9, 2), &p, Some(ex(S::Connecting, 0, 5, false)), 1).row,
            13
        );
    }

    #[test]
    fn rows_14_and_15_without_an_existing_session() {
        assert_eq!(
            run(&connect(1, 2), &policy(), None, 1),
            Accept {
                row: 14,
                decision: D::ResetSession
            }
        );
        assert_eq!(
            run(&connect(1, 0), &policy(), None, 1),
            Accept {
                row: 15,
                decision: D::Open(OpenKind::New)
            }
        );
    }
}
