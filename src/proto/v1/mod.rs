//! The legacy v1 protocol as a sans-IO session machine, for both roles
//! (docs/PROTOCOL.md §10): [`V1SessionConn`], with the call contract of
//! [`crate::proto::msgr2::Connection`].
//!
//! The caller feeds bytes with [`V1SessionConn::handle_input`] and time with
//! [`V1SessionConn::handle_timeout`], and drains bytes to send with
//! [`V1SessionConn::poll_transmit`], events with [`V1SessionConn::poll_event`] and
//! the next deadline with [`V1SessionConn::poll_timeout`]. Nothing here reads a
//! clock or touches a socket. The messenger runtime drives it for `v1:` peers, and
//! [`crate::runtime::monc`] for its monitor client (a lossy client policy).
//!
//! ```text
//!  client (outgoing, start_link)               server (incoming)
//!  ------                                      ------
//!  send banner                                 send banner + my addr + peer addr
//!  ExpectServerHello ── send my addr,connect   ExpectBanner ─> ExpectClientAddr ─> ExpectConnect
//!                                                BADPROTOVER/FEATURES/BADAUTHORIZER: stay
//!                                                else Event::AcceptRequest ─> AwaitDecision
//!  ExpectConnectReply <─── reply ───────────── decide_accept (proto::accept::decide)
//!    RETRY_*/RESETSESSION: send connect again     Retry*/Reset/Wait: reply, ExpectConnect
//!    FEATURES/BADPROTOVER/BADAUTHORIZER: Refused  New/Adopt: READY ─────────> Open
//!    WAIT: the link closes, the session waits     or SEQ + le64 in_seq ─> ExpectPeerSeq ─> Open
//!    READY ─> Open
//!    SEQ ─> ExpectSeq ── le64 ─> Open
//!  Open: MSG / ACK / KEEPALIVE(2)(_ACK) / CLOSE frames both ways
//! ```
//!
//! A monitor client and a monitor walked through every handshake state, byte counts
//! exact:
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Instant;
//!
//! use bytes::BytesMut;
//! use simplemsgr::crypto::SeededRng;
//! use simplemsgr::proto::accept::Decision;
//! use simplemsgr::proto::v1::V1SessionConn;
//! use simplemsgr::proto::{Event, Policy, PolicyTable, ProtoConfig};
//! use simplemsgr::wire::message::Message;
//! use simplemsgr::wire::transmit::Transmit;
//! use simplemsgr::wire::types::{AddrType, AddrVec, EntityAddr, EntityName, EntityType};
//!
//! let now = Instant::now(); // time is an input; any value works
//! let config = |name, addr, policy| {
//!     let mut c = ProtoConfig::new(name, AddrVec(vec![addr]));
//!     c.policies = PolicyTable::new(policy);
//!     Arc::new(c)
//! };
//! let mon = EntityAddr::new(AddrType::LEGACY, "127.0.0.1:6789".parse().unwrap(), 0);
//! // An unbound client (a blank address with a nonce) with a lossy client policy...
//! let mut c = V1SessionConn::outgoing(
//!     config(
//!         EntityName::new(EntityType::CLIENT, u64::MAX),
//!         EntityAddr::blank(AddrType::LEGACY, 7),
//!         Policy::lossy_client(),
//!     ),
//!     Box::new(SeededRng::new(1)),
//!     mon,
//!     EntityType::MON,
//!     now,
//! );
//! c.start_link(1, now); // its TCP connection (link 1) is up
//! // ...and a monitor (a stateless server) that accepted it from 127.0.0.1:40000.
//! let mut s = V1SessionConn::incoming(
//!     config(EntityName::new(EntityType::MON, 0), mon, Policy::stateless_server()),
//!     Box::new(SeededRng::new(2)),
//!     1,
//!     "127.0.0.1:40000".parse().unwrap(),
//!     now,
//! );
//! // Move everything `from` has to send on link 1 into `to`; return the byte count.
//! let wire = |from: &mut V1SessionConn, to: &mut V1SessionConn| {
//!     let (mut t, mut n) = (Transmit::new(), 0);
//!     while from.poll_transmit(1, now, &mut t) {
//!         let mut b = BytesMut::from(&t.to_vec()[..]);
//!         t.clear();
//!         n += b.len();
//!         to.handle_input(1, &mut b, now);
//!     }
//!     n
//! };
//! assert_eq!(wire(&mut c, &mut s), 9); // "ceph v027"
//! assert_eq!(wire(&mut s, &mut c), 9 + 136 + 136); // banner, server addr, client addr seen
//! assert_eq!(wire(&mut c, &mut s), 136 + 33); // client addr, connect
//! // The server asks its owner's session table; a monitor makes every client new.
//! assert!(matches!(s.poll_event(), Some(Event::AcceptRequest(_))));
//! s.decide_accept(Decision::New, now);
//! assert_eq!(wire(&mut s, &mut c), 26 + 8); // connect_reply SEQ, le64 in_seq
//! assert_eq!(wire(&mut c, &mut s), 8); // le64 in_seq: both sides open
//! assert!(c.is_connected() && s.is_connected());
//! assert!(c.link_info().is_some_and(|l| l.seq_exchange));
//! c.send(Message::new(17, vec![0; 60])).unwrap();
//! assert_eq!(wire(&mut c, &mut s), 1 + 53 + 60 + 21); // tag, header, front, footer
//! assert!(matches!(s.poll_event(), Some(Event::Accepted { resumed: false })));
//! assert!(matches!(s.poll_event(), Some(Event::Message(m)) if m.ty == 17 && m.seq == 1));
//! ```

pub mod machine;

pub use machine::{V1Handoff, V1LinkInfo, V1SessionConn};
