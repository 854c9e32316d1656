//! Scenario tests of the msgr2 state machine over the in-memory [`Pair`].

use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::pair::{addr, config, Pair, Side};
use crate::auth::{AuthConfig, Method, Secret};
use crate::crypto::SeededRng;
use crate::proto::msgr2::{Connection, State};
use crate::proto::{Mode, Policy, ProtoConfig};
use crate::wire::message::Message;
use crate::wire::msgr2::{Banner, Deframer, Frame, Limits, AUTH_NONE, AUTH_SECRET};
use crate::wire::transmit::Transmit;
use crate::wire::types::{AddrType, EntityAddr, EntityName, EntityType};

fn msg(i: u32, size: usize) -> Message {
    let mut front = i.to_le_bytes().to_vec();
    front.resize(size.max(4), (i % 251) as u8);
    Message::new(0x4000, front)
}

fn index_of(m: &Message) -> u32 {
    u32::from_le_bytes([m.front[0], m.front[1], m.front[2], m.front[3]])
}

struct OneKey(Secret);

impl crate::auth::KeyStore for OneKey {
    fn key_for(&self, name: &str) -> Option<Secret> {
        (name == "client.admin").then(|| self.0.clone())
    }
}

fn secret_auth(client: bool) -> AuthConfig {
    let key = Secret::new(&[0x42; 16]);
    let mut a = AuthConfig::none();
    a.client_methods = vec![Method::SECRET];
    a.server_methods = vec![Method::SECRET];
    a.name = "client.admin".into();
    if client {
        a.key = Some(key);
    } else {
        a.keys = Some(std::sync::Arc::new(OneKey(key)));
    }
    a
}

fn pair_with(mode: Mode, policy_a: Policy, policy_b: Policy) -> Pair {
    let mut a = config(
        EntityName::new(EntityType::CLIENT, 1),
        EntityAddr::blank(AddrType::MSGR2, 11),
    );
    let mut b = config(EntityName::new(EntityType::OSD, 0), addr(6800, 22));
    a.policies.default = policy_a;
    b.policies.default = policy_b;
    if mode != Mode::Plain {
        a.auth = secret_auth(true);
        b.auth = secret_auth(false);
        a.mode = mode;
        b.min_mode = mode;
    }
    Pair::new(a, b)
}

fn assert_in_order(delivered: &[Message], n: u32) {
    let got: Vec<u32> = delivered.iter().map(index_of).collect();
    let want: Vec<u32> = (0..n).collect();
    assert_eq!(got, want, "every message exactly once and in order");
}

#[test]
fn handshake_and_exchange_in_each_form() {
    for mode in [Mode::Plain, Mode::Signed, Mode::Secure] {
        let mut p = pair_with(mode, Policy::lossless_client(), Policy::stateful_server());
        let c = p.connect(Side::A);
        p.drive();
        assert_eq!(
            p.conn(Side::A, c).state(),
            State::Open,
            "{mode:?}: client open; log {:?}",
            p.ep[0].log
        );
        assert_eq!(p.ep[0].count("connected resumed=false"), 1);
        assert_eq!(p.ep[1].count("accepted resumed=false"), 1);
        let flags = p.conn(Side::A, c).protection_flags();
        assert_eq!(flags, mode.flags());
        for i in 0..10 {
            p.send(Side::A, c, msg(i, 100 + i as usize * 1000));
        }
        p.drive();
        assert_in_order(&p.ep[1].delivered, 10);
        // The server answers on its session.
        let s = p.ep[1]
            .conns
            .iter()
            .position(|c| c.state() == State::Open)
            .unwrap();
        for i in 0..5 {
            p.send(Side::B, s, msg(i, 10));
        }
        p.drive();
        assert_in_order(&p.ep[0].delivered, 5);
        // Standalone ACKs are coalesced (docs/PROTOCOL.md §5.1): let the ack delay pass.
        p.drive_for(Duration::from_millis(10), 1000);
        // Acknowledgements trimmed the replay queues on both sides.
        assert_eq!(p.conn(Side::A, c).session().unacked(), 0, "{mode:?}");
        assert_eq!(p.ep[1].conns[s].session().unacked(), 0, "{mode:?}");
        // Keepalives flow and are answered.
        p.drive_for(Duration::from_secs(25), 1000);
        assert!(
            p.conn(Side::A, c).last_keepalive_ack().is_some(),
            "{mode:?}: keepalive acked"
        );
        assert!(p.ep[1].conns[s].last_keepalive().is_some());
    }
}

#[test]
fn first_auth_leaves_before_any_server_byte() {
    let now = crate::proto::tests::epoch();
    let cfg = std::sync::Arc::new(ProtoConfig::new(
        EntityName::new(EntityType::CLIENT, 1),
        crate::wire::types::AddrVec(vec![EntityAddr::blank(AddrType::MSGR2, 1)]),
    ));
    let mut c = Connection::outgoing(
        cfg.clone(),
        Box::new(SeededRng::new(1)),
        addr(6800, 0),
        EntityType::OSD,
        now,
    );
    c.start_link(1, now);
    let mut t = Transmit::new();
    assert!(c.poll_transmit(1, now, &mut t));
    let bytes = t.to_vec();
    let mut d = Deframer::new(Limits::default());
    d.push(&bytes);
    assert_eq!(
        d.take_banner().unwrap(),
        Some(Banner {
            supported: 0,
            required: 0
        })
    );
    let mut rx = crate::crypto::RxProtector::plain();
    let mut tags = Vec::new();
    while let Some(f) = d.next_frame(&mut rx).unwrap() {
        tags.push(f.frame);
    }
    // With NONE the whole first flight is pipelined: nothing waits for the server.
    assert!(matches!(tags[0], Frame::AuthSetMethod(ref m) if m.method == AUTH_NONE));
    assert!(matches!(tags[1], Frame::Auth(_)));
    assert!(matches!(tags[2], Frame::AuthDone(_)));
    assert!(matches!(tags[3], Frame::Ident(_)));
    assert!(matches!(tags[4], Frame::Start(_)));

    // With SECRET the first AUTH (name and client nonce) leaves at once too.
    let mut sc = (*cfg).clone();
    sc.auth = secret_auth(true);
    let mut c = Connection::outgoing(
        std::sync::Arc::new(sc),
        Box::new(SeededRng::new(1)),
        addr(6800, 0),
        EntityType::OSD,
        now,
    );
    c.start_link(1, now);
    let mut t = Transmit::new();
    assert!(c.poll_transmit(1, now, &mut t));
    let mut d = Deframer::new(Limits::default());
    d.push(&t.to_vec());
    d.take_banner().unwrap().unwrap();
    let f1 = d.next_frame(&mut rx).unwrap().unwrap().frame;
    let f2 = d.next_frame(&mut rx).unwrap().unwrap().frame;
    assert!(matches!(f1, Frame::AuthSetMethod(ref m) if m.method == AUTH_SECRET));
    assert!(matches!(f2, Frame::Auth(ref a) if !a.payload.is_empty()));
    assert!(d.next_frame(&mut rx).unwrap().is_none());
}

#[test]
fn reconnect_replays_in_flight_messages_exactly_once() {
    for mode in [Mode::Plain, Mode::Secure] {
        let mut p = pair_with(mode, Policy::lossless_client(), Policy::stateful_server());
        let c = p.connect(Side::A);
        p.drive();
        for i in 0..50 {
            p.send(Side::A, c, msg(i, 64));
        }
        // Deliver part of the stream, then break the link with messages in flight.
        p.max_chunk = 300;
        p.step();
        p.break_links();
        for i in 50..100 {
            p.send(Side::A, c, msg(i, 64));
        }
        p.max_chunk = usize::MAX;
        p.drive_for(Duration::from_secs(5), 5000);
        assert_eq!(
            p.conn(Side::A, c).state(),
            State::Open,
            "{mode:?} {:?}",
            p.ep[0].log
        );
        assert_eq!(
            p.ep[0].count("connected resumed=true"),
            1,
            "{:?}",
            p.ep[0].log
        );
        assert_in_order(&p.ep[1].delivered, 100);
        assert_eq!(p.ep[1].count("remote_reset"), 0);
    }
}

#[test]
fn repeated_faults_lose_nothing() {
    let mut p = pair_with(
        Mode::Signed,
        Policy::lossless_client(),
        Policy::stateful_server(),
    );
    let c = p.connect(Side::A);
    p.drive();
    let mut sent = 0;
    for round in 0..20 {
        for _ in 0..7 {
            p.send(Side::A, c, msg(sent, 32 + (sent as usize * 37) % 5000));
            sent += 1;
        }
        p.max_chunk = 50 + round * 13;
        p.step();
        p.break_links();
        p.drive_for(Duration::from_secs(20), 5000);
    }
    p.max_chunk = usize::MAX;
    p.drive_for(Duration::from_secs(20), 5000);
    assert_in_order(&p.ep[1].delivered, sent);
}

#[test]
fn connection_race_leaves_exactly_one_link() {
    let mut a = config(EntityName::new(EntityType::OSD, 1), addr(6801, 1));
    let mut b = config(EntityName::new(EntityType::OSD, 2), addr(6802, 2));
    a.policies.default = Policy::lossless_peer();
    b.policies.default = Policy::lossless_peer();
    let mut p = Pair::new(a, b);
    let ca = p.connect(Side::A);
    let cb = p.connect(Side::B);
    p.send(Side::A, ca, msg(0, 10));
    p.send(Side::B, cb, msg(0, 10));
    p.drive_for(Duration::from_secs(5), 5000);
    let open_a: Vec<_> = p
        .live(Side::A)
        .into_iter()
        .filter(|c| c.is_connected())
        .collect();
    let open_b: Vec<_> = p
        .live(Side::B)
        .into_iter()
        .filter(|c| c.is_connected())
        .collect();
    assert_eq!(open_a.len(), 1, "A: {:?}", p.ep[0].log);
    assert_eq!(open_b.len(), 1, "B: {:?}", p.ep[1].log);
    assert_eq!(
        open_a[0].link_id(),
        open_b[0].link_id(),
        "both ends use the same link"
    );
    // The lower address (A) wins: B was told to wait.
    assert!(
        p.ep[0].log.iter().any(|l| l == "decision Wait"),
        "{:?}",
        p.ep[0].log
    );
    assert_eq!(p.ep[0].delivered.len(), 1);
    assert_eq!(p.ep[1].delivered.len(), 1);
}

#[test]
fn server_restart_is_a_remote_reset() {
    let mut p = pair_with(
        Mode::Plain,
        Policy::lossless_client(),
        Policy::stateful_server(),
    );
    let c = p.connect(Side::A);
    p.drive();
    p.send(Side::A, c, msg(0, 10));
    p.drive();
    // The server forgets everything (restart), then the link breaks.
    p.ep[1].conns.clear();
    p.break_links();
    p.send(Side::A, c, msg(1, 10));
    p.drive_for(Duration::from_secs(5), 5000);
    assert_eq!(p.ep[0].count("remote_reset"), 1, "{:?}", p.ep[0].log);
    assert_eq!(p.conn(Side::A, c).state(), State::Open);
}

#[test]
fn lossy_client_fault_is_a_reset() {
    let mut p = pair_with(
        Mode::Plain,
        Policy::lossy_client(),
        Policy::stateless_server(),
    );
    let c = p.connect(Side::A);
    p.drive();
    p.break_links();
    p.drive();
    assert_eq!(p.conn(Side::A, c).state(), State::Closed);
    assert_eq!(p.ep[0].count("reset"), 1, "{:?}", p.ep[0].log);
    assert!(p.conn(Side::A, c).send(msg(0, 1)).is_err());
}

#[test]
fn unknown_method_falls_back_on_the_same_connection() {
    let mut p = pair_with(
        Mode::Plain,
        Policy::lossless_client(),
        Policy::stateful_server(),
    );
    let mut a = (*p.ep[0].cfg).clone();
    a.auth = secret_auth(true);
    a.auth.client_methods = vec![Method::SECRET, Method::NONE];
    p.ep[0].cfg = std::sync::Arc::new(a);
    let c = p.connect(Side::A);
    p.drive();
    assert_eq!(p.conn(Side::A, c).state(), State::Open, "{:?}", p.ep[0].log);
    assert_eq!(p.conn(Side::A, c).auth_method(), AUTH_NONE);
    assert_eq!(p.ep[0].count("reconnect_due"), 1, "no second connection");
}

#[test]
fn no_common_method_is_refused_without_retry() {
    let mut p = pair_with(
        Mode::Plain,
        Policy::lossless_client(),
        Policy::stateful_server(),
    );
    let mut a = (*p.ep[0].cfg).clone();
    a.auth = secret_auth(true);
    p.ep[0].cfg = std::sync::Arc::new(a);
    let c = p.connect(Side::A);
    p.drive_for(Duration::from_secs(60), 5000);
    assert_eq!(p.conn(Side::A, c).state(), State::Closed);
    assert_eq!(p.ep[0].count("refused"), 1, "{:?}", p.ep[0].log);
    assert_eq!(p.ep[0].count("reconnect_due"), 1, "no reconnect storm");
}

#[test]
fn mode_requirement_is_refused_clearly() {
    let mut p = pair_with(
        Mode::Signed,
        Policy::lossless_client(),
        Policy::stateful_server(),
    );
    let mut b = (*p.ep[1].cfg).clone();
    b.min_mode = Mode::Secure;
    p.ep[1].cfg = std::sync::Arc::new(b);
    let c = p.connect(Side::A);
    p.drive_for(Duration::from_secs(60), 5000);
    assert_eq!(p.conn(Side::A, c).state(), State::Closed);
    let refused = p.ep[0]
        .log
        .iter()
        .find(|l| l.starts_with("refused"))
        .cloned()
        .unwrap_or_default();
    assert!(
        refused.contains("requires Secure mode"),
        "{:?}",
        p.ep[0].log
    );
    assert_eq!(p.ep[0].count("reconnect_due"), 1);
}

#[test]
fn missing_features_are_refused() {
    let mut p = pair_with(
        Mode::Plain,
        Policy::lossless_client(),
        Policy::stateful_server(),
    );
    let mut b = (*p.ep[1].cfg).clone();
    b.features_required = 1 << 13;
    p.ep[1].cfg = std::sync::Arc::new(b);
    let mut a = (*p.ep[0].cfg).clone();
    a.features_supported = !(1 << 13);
    p.ep[0].cfg = std::sync::Arc::new(a);
    let c = p.connect(Side::A);
    p.drive_for(Duration::from_secs(60), 5000);
    assert_eq!(p.conn(Side::A, c).state(), State::Closed);
    assert!(
        p.ep[0]
            .log
            .iter()
            .any(|l| l.contains("refused missing required features 0x2000")),
        "{:?}",
        p.ep[0].log
    );
}

#[test]
fn idle_link_times_out() {
    let mut p = pair_with(
        Mode::Plain,
        Policy::lossy_client(),
        Policy::stateless_server(),
    );
    let mut a = (*p.ep[0].cfg).clone();
    a.keepalive_interval = None;
    a.idle_timeout = Some(Duration::from_secs(2));
    p.ep[0].cfg = std::sync::Arc::new(a);
    let mut b = (*p.ep[1].cfg).clone();
    b.keepalive_interval = None;
    p.ep[1].cfg = std::sync::Arc::new(b);
    let c = p.connect(Side::A);
    p.drive();
    p.drive_for(Duration::from_secs(3), 100);
    assert_eq!(p.conn(Side::A, c).state(), State::Closed);
    assert!(
        p.ep[0].log.iter().any(|l| l.contains("idle timeout")),
        "{:?}",
        p.ep[0].log
    );
}

#[test]
fn tampering_with_a_protected_frame_is_detected() {
    for mode in [Mode::Signed, Mode::Secure] {
        let mut p = pair_with(mode, Policy::lossless_client(), Policy::stateful_server());
        let c = p.connect(Side::A);
        p.drive();
        let armed = std::rc::Rc::new(std::cell::Cell::new(true));
        let flag = armed.clone();
        p.tamper = Some(Box::new(move |from, _link, mut bytes| {
            if from == Side::A && flag.get() && bytes.len() > 40 {
                bytes[30] ^= 0x01;
                flag.set(false);
            }
            bytes
        }));
        p.send(Side::A, c, msg(7, 200));
        p.step();
        assert!(
            p.ep[1].delivered.is_empty(),
            "{mode:?}: nothing tampered is delivered"
        );
        assert!(
            p.ep[1].log.iter().any(|l| l.contains("link_closed")),
            "{mode:?}: {:?}",
            p.ep[1].log
        );
        // The lossless session recovers on a new link and delivers the message once.
        p.drive_for(Duration::from_secs(5), 5000);
        let got: Vec<u32> = p.ep[1].delivered.iter().map(index_of).collect();
        assert_eq!(got, vec![7]);
        // §3.4: the detecting side told the sender why (CLOSE(PROTOCOL)).
        assert!(
            p.ep[0]
                .log
                .iter()
                .any(|l| l.contains("peer closed the connection (PROTOCOL)")),
            "{mode:?}: {:?}",
            p.ep[0].log
        );
    }
}

#[test]
fn frame_limit_closes_with_rekey_and_resumes_with_fresh_keys() {
    for mode in [Mode::Signed, Mode::Secure] {
        let mut p = pair_with(mode, Policy::lossless_client(), Policy::stateful_server());
        for ep in &mut p.ep {
            std::sync::Arc::get_mut(&mut ep.cfg)
                .expect("config not shared yet")
                .max_frames_per_key = 12;
        }
        let c = p.connect(Side::A);
        p.drive();
        for i in 0..100 {
            p.send(Side::A, c, msg(i, 64));
        }
        p.drive_for(Duration::from_secs(20), 20_000);
        assert_in_order(&p.ep[1].delivered, 100);
        // And the other way, so that the server's counter runs out too.
        let j = p.ep[1]
            .conns
            .iter()
            .position(|c| c.state() == State::Open)
            .expect("the server's session is open");
        for i in 0..100 {
            p.send(Side::B, j, msg(i, 64));
        }
        p.drive_for(Duration::from_secs(20), 20_000);
        assert_in_order(&p.ep[0].delivered, 100);
        for side in [Side::A, Side::B] {
            let log = &p.ep[side as usize].log;
            let local = |l: &String| l.contains("Local frame counter limit reached");
            let told = |l: &String| l.contains("peer closed the connection (REKEY)");
            assert!(log.iter().any(local), "{mode:?} {side:?} rekeyed: {log:?}");
            assert!(log.iter().any(told), "{mode:?} {side:?} was told: {log:?}");
            // Never a frame past the limit, so never an authentication failure.
            assert!(
                !log.iter()
                    .any(|l| l.contains("authentication (bad")
                        || l.contains("exceeded the frame limit")),
                "{mode:?} {side:?}: {log:?}"
            );
        }
    }
}

#[test]
fn garbage_input_closes_the_link_without_panicking() {
    let now = crate::proto::tests::epoch();
    let cfg = std::sync::Arc::new(config(EntityName::new(EntityType::OSD, 0), addr(6800, 1)));
    for garbage in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        b"ceph v027",
        b"ceph 0 0\n\xff\xff\xff\xff",
        b"ceph 00 0\n",
    ] {
        let mut c = Connection::incoming(cfg.clone(), Box::new(SeededRng::new(3)), 1, now);
        let mut buf = BytesMut::from(garbage);
        c.handle_input(1, &mut buf, now);
        let mut closed = false;
        while let Some(ev) = c.poll_event() {
            closed |= matches!(ev, crate::proto::Event::LinkClosed { .. });
        }
        assert!(closed, "{:?}", String::from_utf8_lossy(garbage));
        assert_eq!(c.state(), State::Closed);
    }
    let _ = Bytes::new();
}

/// A section above this side's own limit is refused by `send`, with the section, its
/// length and the limit; nothing is queued.
#[test]
fn send_refuses_a_section_above_our_limit() {
    let mut a = config(
        EntityName::new(EntityType::CLIENT, 1),
        EntityAddr::blank(AddrType::MSGR2, 11),
    );
    a.limits.max_data = 64 * 1024;
    a.limits.max_front = 1024;
    let b = config(EntityName::new(EntityType::OSD, 0), addr(6800, 22));
    let mut p = Pair::new(a, b);
    let c = p.connect(Side::A);
    p.drive();
    let conn = p.conn(Side::A, c);
    assert_eq!(
        conn.send(Message::new(1, vec![0u8; 16]).with_data(vec![0u8; 64 * 1024 + 1])),
        Err(crate::proto::msgr2::SendError::TooLarge {
            section: "data",
            len: 64 * 1024 + 1,
            limit: 64 * 1024
        })
    );
    assert!(matches!(
        conn.send(Message::new(1, vec![0u8; 1025])),
        Err(crate::proto::msgr2::SendError::TooLarge {
            section: "front",
            ..
        })
    ));
    assert!(!conn.session().has_outgoing(), "nothing was queued");
    conn.send(Message::new(1, vec![0u8; 1024]).with_data(vec![0u8; 64 * 1024]))
        .unwrap();
    p.drive();
    assert_eq!(
        p.ep[1].delivered.len(),
        1,
        "a message at the limits goes through"
    );
}

/// A message above the *peer's* limit (ours is larger): the peer closes every link that
/// carries it with CLOSE(PROTOCOL), and the lossless client must not come straight back
/// each time (that was a hot loop, ~440 connections a second). Each such close counts
/// as a failed attempt and the backoff doubles through the handshakes: over 20 virtual
/// seconds a handful of attempts (0.2 + 0.4 + … s), not thousands.
#[test]
fn a_peer_that_refuses_what_we_replay_is_retried_with_a_growing_backoff() {
    let mut a = config(
        EntityName::new(EntityType::CLIENT, 1),
        EntityAddr::blank(AddrType::MSGR2, 11),
    );
    a.policies.default = Policy::lossless_client();
    a.backoff_jitter = 0.0;
    let mut b = config(EntityName::new(EntityType::OSD, 0), addr(6800, 22));
    b.policies.default = Policy::stateful_server();
    b.limits.max_data = 64 * 1024;
    let mut p = Pair::new(a, b);
    let c = p.connect(Side::A);
    p.drive();
    p.send(
        Side::A,
        c,
        Message::new(1, vec![0u8; 16]).with_data(vec![0u8; 100_000]),
    );
    p.drive_for(Duration::from_secs(20), 20_000);
    let closes = p.ep[0]
        .log
        .iter()
        .filter(|l| l.starts_with("link_closed") && l.contains("PROTOCOL"))
        .count();
    // 0.2, 0.4, 0.8, 1.6, 3.2, 6.4 s between attempts: 6 or 7 in 20 s.
    assert!(
        (4..=8).contains(&closes),
        "{closes} closes: {:?}",
        p.ep[0].log
    );
    assert!(p.ep[1].delivered.is_empty());
    // The session is still there and still trying (lossless: nothing is dropped).
    assert_ne!(p.conn(Side::A, c).state(), State::Closed);
}
