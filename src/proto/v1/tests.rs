//! Client and server machines driven against each other in memory with a virtual clock.

use std::time::{Duration, Instant};

use super::*;
use crate::wire::types::EntityType;

/// Rewrites a flight of bytes in transit.
type Tamper = Box<dyn FnMut(&mut Vec<u8>)>;

/// Two connections and a virtual clock; every drive is bounded.
struct Pair {
    client: V1Connection,
    server: V1Connection,
    now: Instant,
    client_events: Vec<V1Event>,
    server_events: Vec<V1Event>,
    /// Applied to every client-to-server flight before delivery (tamper hook).
    tamper_c2s: Option<Tamper>,
}

const SERVER_ADDR: &str = "127.0.0.1:6789";
const CLIENT_SOCKET: &str = "127.0.0.1:40000";

fn server_addr() -> EntityAddr {
    EntityAddr::new(AddrType::LEGACY, SERVER_ADDR.parse().unwrap(), 0)
}

impl Pair {
    fn new(ccfg: V1Config, scfg: V1Config) -> Pair {
        Pair::with_session(ccfg, V1Session::new(), scfg, None)
    }

    fn with_session(
        ccfg: V1Config,
        cs: V1Session,
        scfg: V1Config,
        existing: Option<ExistingSession>,
    ) -> Pair {
        let now = crate::proto::tests::epoch();
        let client = V1Connection::client(ccfg, cs, now);
        let mut server =
            V1Connection::server(scfg, V1Session::new(), CLIENT_SOCKET.parse().unwrap(), now);
        server.set_existing_session(existing);
        Pair {
            client,
            server,
            now,
            client_events: vec![],
            server_events: vec![],
            tamper_c2s: None,
        }
    }

    /// Move bytes both ways until nothing moves; at most 100 rounds.
    fn drive(&mut self) {
        for _ in 0..100 {
            let mut moved = false;
            let mut buf = Vec::new();
            if self.client.poll_transmit(&mut buf) {
                if let Some(t) = self.tamper_c2s.as_mut() {
                    t(&mut buf);
                }
                // Deliver in small pieces: the parser must cope with any split.
                for chunk in buf.chunks(7) {
                    self.server.handle_input(chunk, self.now);
                }
                moved = true;
            }
            let mut buf = Vec::new();
            if self.server.poll_transmit(&mut buf) {
                self.client.handle_input(&buf, self.now);
                moved = true;
            }
            while let Some(e) = self.client.poll_event() {
                self.client_events.push(e);
            }
            while let Some(e) = self.server.poll_event() {
                self.server_events.push(e);
            }
            if !moved {
                return;
            }
        }
        panic!("pair did not settle in 100 rounds (livelock)");
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.client.handle_timeout(self.now);
        self.server.handle_timeout(self.now);
        self.drive();
    }
}

fn client_cfg() -> V1Config {
    V1Config::mon_client(EntityName::new(EntityType::CLIENT, u64::MAX))
}

fn server_cfg() -> V1Config {
    V1Config::mon_server(server_addr())
}

fn connected(events: &[V1Event]) -> Option<&V1Event> {
    events
        .iter()
        .find(|e| matches!(e, V1Event::Connected { .. }))
}

fn closed_error(events: &[V1Event]) -> Option<V1Error> {
    events.iter().find_map(|e| match e {
        V1Event::Closed(CloseReason { error, .. }) => error.clone(),
        _ => None,
    })
}

fn messages(events: &[V1Event]) -> Vec<&Message> {
    events
        .iter()
        .filter_map(|e| match e {
            V1Event::Message(m) => Some(m),
            _ => None,
        })
        .collect()
}

#[test]
fn handshake_with_seq_then_messages_both_ways() {
    let mut p = Pair::new(client_cfg(), server_cfg());
    p.client.send(Message::new(17, vec![1, 2, 3]));
    p.drive();
    let Some(V1Event::Connected {
        lossy,
        seq_exchange,
        features,
        my_addr_seen,
        ..
    }) = connected(&p.client_events)
    else {
        panic!("client not connected: {:?}", p.client_events)
    };
    assert!(*lossy && *seq_exchange);
    assert_eq!(*features, features::PACIFIC_ALL);
    assert_eq!(my_addr_seen.addr, Some(CLIENT_SOCKET.parse().unwrap()));
    let Some(V1Event::Connected {
        peer_type,
        open,
        peer_addr,
        ..
    }) = connected(&p.server_events)
    else {
        panic!("server not connected")
    };
    assert_eq!(*peer_type, Some(EntityType::CLIENT));
    assert_eq!(*open, Some(OpenKind::New));
    // The blank client address was sent as the seen IP with port 0.
    assert_eq!(peer_addr.addr, Some("127.0.0.1:0".parse().unwrap()));
    let got = messages(&p.server_events);
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].ty, got[0].seq, &got[0].front[..]),
        (17, 1, &[1u8, 2, 3][..])
    );
    p.server
        .send(Message::new(18, vec![9]).with_data(vec![7; 100]));
    p.server.send(Message::new(4, vec![]));
    p.drive();
    let got = messages(&p.client_events);
    assert_eq!(
        got.iter().map(|m| (m.ty, m.seq)).collect::<Vec<_>>(),
        vec![(18, 1), (4, 2)]
    );
    assert_eq!(got[0].data.len(), 100);
    assert_eq!(got[0].src, EntityName::new(EntityType::MON, 0));
}

#[test]
fn handshake_without_reconnect_seq_is_ready_and_old_footer_without_msg_auth() {
    let mut c = client_cfg();
    c.features &= !(features::RECONNECT_SEQ | features::MSG_AUTH);
    let mut p = Pair::new(c, server_cfg());
    p.client.send(Message::new(17, vec![1]));
    p.drive();
    let Some(V1Event::Connected {
        seq_exchange,
        features: f,
        ..
    }) = connected(&p.client_events)
    else {
        panic!("not connected")
    };
    assert!(!seq_exchange);
    assert_eq!(f & features::MSG_AUTH, 0);
    assert!(!p.client.with_sig());
    assert_eq!(messages(&p.server_events).len(), 1);
}

#[test]
fn features_reply_reports_the_missing_bits() {
    let mut s = server_cfg();
    s.required_features = features::MSG_ADDR2 | features::MSG_AUTH;
    let mut c = client_cfg();
    c.features = features::MSG_AUTH | 0xff;
    let mut p = Pair::new(c, s);
    p.drive();
    let e = closed_error(&p.client_events).expect("client failed");
    let V1Error::MissingFeatures { missing, .. } = e else {
        panic!("{e:?}")
    };
    assert_eq!(missing & features::MSG_ADDR2, features::MSG_ADDR2);
    assert_eq!(missing & features::MSG_AUTH, 0);
    assert!(e.to_string().contains("0x"));
    assert!(p.server_events.iter().any(|e| matches!(
        e,
        V1Event::Refused {
            tag: Tag::FEATURES,
            row: 3
        }
    )));
    assert!(
        !p.server.is_closed(),
        "server waits for a corrected connect"
    );
}

#[test]
fn bad_protocol_version_is_a_clear_error() {
    let mut c = client_cfg();
    c.protocol_version = 24;
    let mut p = Pair::new(c, server_cfg());
    p.drive();
    assert_eq!(
        closed_error(&p.client_events),
        Some(V1Error::BadProtocolVersion {
            ours: 24,
            theirs: 15
        })
    );
}

#[test]
fn retry_session_then_reconnect_replaces_the_existing_session() {
    let mut s = server_cfg();
    s.lossy = false;
    s.resetcheck = true;
    let mut c = client_cfg();
    c.lossy = false;
    let cs = V1Session {
        connect_seq: 1,
        global_seq: 5,
        ..V1Session::new()
    };
    let ex = ExistingSession {
        state: ExistingState::Standby,
        connect_seq: 3,
        peer_global_seq: 2,
        lossy: false,
    };
    let mut p = Pair::with_session(c, cs, s, Some(ex));
    p.drive();
    assert!(p.server_events.iter().any(|e| matches!(
        e,
        V1Event::Refused {
            tag: Tag::RETRY_SESSION,
            row: 9
        }
    )));
    let Some(V1Event::Connected {
        connect_seq, open, ..
    }) = connected(&p.server_events)
    else {
        panic!("no open")
    };
    // RETRY_SESSION(4), then cseq 4 > 3 is an ordinary reconnect (row 13).
    assert_eq!(*connect_seq, 5);
    assert_eq!(
        *open,
        Some(OpenKind::Replace {
            reset_existing: false,
            peer_reset: false
        })
    );
    assert_eq!(p.client.session().connect_seq, 5);
}

#[test]
fn retry_global_raises_the_global_seq() {
    let mut s = server_cfg();
    s.lossy = false;
    let mut c = client_cfg();
    c.lossy = false;
    let ex = ExistingSession {
        state: ExistingState::Connecting,
        connect_seq: 0,
        peer_global_seq: 10,
        lossy: false,
    };
    let mut p = Pair::with_session(c, V1Session::new(), s, Some(ex));
    p.drive();
    assert!(p.server_events.iter().any(|e| matches!(
        e,
        V1Event::Refused {
            tag: Tag::RETRY_GLOBAL,
            row: 6
        }
    )));
    assert!(connected(&p.client_events).is_some());
    assert_eq!(p.client.session().global_seq, 11);
    assert_eq!(p.server.session().peer_global_seq, 11);
}

#[test]
fn reset_session_when_the_server_lost_it() {
    let mut s = server_cfg();
    s.lossy = false;
    let mut c = client_cfg();
    c.lossy = false;
    let cs = V1Session {
        connect_seq: 2,
        out_seq: 4,
        in_seq: 3,
        ..V1Session::new()
    };
    let mut p = Pair::with_session(c, cs, s, None);
    p.drive();
    assert!(p
        .client_events
        .iter()
        .any(|e| matches!(e, V1Event::SessionReset)));
    assert!(connected(&p.client_events).is_some());
    assert_eq!(p.client.session().in_seq, 0);
    assert_eq!(p.client.session().connect_seq, 1);
}

#[test]
fn wait_is_reported_to_the_client() {
    let mut s = server_cfg();
    s.lossy = false;
    s.server_policy = false;
    // Our server address sorts below the client's socket address: its own connect wins.
    s.my_addr = EntityAddr::new(AddrType::LEGACY, "127.0.0.1:1".parse().unwrap(), 0);
    let mut c = client_cfg();
    c.lossy = false;
    c.my_addr = EntityAddr::new(AddrType::LEGACY, "127.0.0.1:5000".parse().unwrap(), 1);
    let ex = ExistingSession {
        state: ExistingState::Connecting,
        connect_seq: 0,
        peer_global_seq: 0,
        lossy: false,
    };
    let mut p = Pair::with_session(c, V1Session::new(), s, Some(ex));
    p.drive();
    assert_eq!(closed_error(&p.client_events), Some(V1Error::Wait));
}

#[test]
fn lossless_session_acks_and_replays_unacked_messages() {
    let mut s = server_cfg();
    s.lossy = false;
    let mut c = client_cfg();
    c.lossy = false;
    let mut p = Pair::new(c, s);
    for i in 0..3u8 {
        p.client.send(Message::new(50, vec![i]));
    }
    p.drive();
    assert_eq!(messages(&p.server_events).len(), 3);
    // The server acked everything, so nothing is left to replay.
    assert!(p.client.session().sent.is_empty());
    // Now lose the server's ack: a new message stays in the replay queue...
    p.client.send(Message::new(50, vec![9]));
    let mut lost = Vec::new();
    p.client.poll_transmit(&mut lost);
    assert_eq!(p.client.session().sent.len(), 1);
    // ...and is replayed with its original seq on the next connection.
    let session = std::mem::replace(
        &mut p.client,
        V1Connection::client(client_cfg(), V1Session::new(), p.now),
    )
    .into_session();
    let mut s = server_cfg();
    s.lossy = false;
    let ex = ExistingSession {
        state: ExistingState::Standby,
        connect_seq: 1,
        peer_global_seq: 1,
        lossy: false,
    };
    let mut c = client_cfg();
    c.lossy = false;
    let server_session = std::mem::replace(
        &mut p.server,
        V1Connection::server(
            s.clone(),
            V1Session::new(),
            CLIENT_SOCKET.parse().unwrap(),
            p.now,
        ),
    )
    .into_session();
    let mut q = Pair::with_session(c, session, s, Some(ex));
    q.server = V1Connection::server(
        server_cfg_lossless(),
        server_session,
        CLIENT_SOCKET.parse().unwrap(),
        q.now,
    );
    q.server.set_existing_session(Some(ex));
    q.drive();
    let got = messages(&q.server_events);
    assert_eq!(
        got.iter().map(|m| (m.seq, m.front[0])).collect::<Vec<_>>(),
        vec![(4, 9)]
    );
    assert!(q.client.session().sent.is_empty());
}

fn server_cfg_lossless() -> V1Config {
    let mut s = server_cfg();
    s.lossy = false;
    s
}

#[test]
fn duplicate_messages_are_dropped_by_in_seq() {
    let mut p = Pair::new(client_cfg(), server_cfg());
    p.drive();
    // Hand-craft seq 1 twice.
    let m = Message::new(50, vec![1]);
    let raw = RawMsg::from_message(&m, 1, EntityName::new(EntityType::CLIENT, 1), true);
    let mut bytes = Vec::new();
    Frame::Msg(raw.clone()).encode(&mut bytes);
    Frame::Msg(raw).encode(&mut bytes);
    p.server.handle_input(&bytes, p.now);
    p.drive();
    assert_eq!(messages(&p.server_events).len(), 1);
    assert!(!p.server.is_closed());
}

#[test]
fn corrupted_header_crc_is_a_fault() {
    let mut p = Pair::new(client_cfg(), server_cfg());
    p.drive();
    p.tamper_c2s = Some(Box::new(|b: &mut Vec<u8>| b[1] ^= 0xff));
    p.client.send(Message::new(50, vec![1]));
    p.drive();
    let e = closed_error(&p.server_events).expect("server faulted");
    assert!(matches!(e, V1Error::Crc(CrcError::Header { .. })), "{e:?}");
    assert!(messages(&p.server_events).is_empty());
}

#[test]
fn keepalive2_round_trip_echoes_the_stamp() {
    let mut p = Pair::new(client_cfg(), server_cfg());
    p.drive();
    p.now += Duration::from_millis(1500);
    let now = p.now;
    p.client.send_keepalive(now);
    p.drive();
    let stamp = p.client_events.iter().find_map(|e| match e {
        V1Event::KeepaliveAck { stamp } => Some(*stamp),
        _ => None,
    });
    assert_eq!(
        stamp,
        Some(Timespec {
            sec: 1,
            nsec: 500_000_000
        })
    );
}

#[test]
fn handshake_times_out_on_the_virtual_clock() {
    let mut c = V1Connection::client(client_cfg(), V1Session::new(), crate::proto::tests::epoch());
    let deadline = c.poll_timeout().expect("a handshake deadline");
    c.handle_timeout(deadline - Duration::from_millis(1));
    assert!(!c.is_closed());
    c.handle_timeout(deadline);
    let e = closed_error(&std::iter::from_fn(|| c.poll_event()).collect::<Vec<_>>());
    assert!(matches!(e, Some(V1Error::HandshakeTimeout { .. })));
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn periodic_keepalives_on_the_virtual_clock() {
    let mut c = client_cfg();
    c.keepalive_interval = Some(Duration::from_secs(5));
    let mut p = Pair::new(c, server_cfg());
    p.drive();
    for _ in 0..3 {
        let at = p.client.poll_timeout().expect("keepalive timer");
        p.advance(at - p.now);
    }
    let acks = p
        .client_events
        .iter()
        .filter(|e| matches!(e, V1Event::KeepaliveAck { .. }))
        .count();
    assert_eq!(acks, 3);
}

#[test]
fn wrong_banner_closes_the_server_side() {
    let now = crate::proto::tests::epoch();
    let mut s = V1Connection::server(
        server_cfg(),
        V1Session::new(),
        CLIENT_SOCKET.parse().unwrap(),
        now,
    );
    s.handle_input(b"ceph v2\n\x10\x00", now);
    assert!(s.is_closed());
    s.handle_eof();
    let evs: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
    assert_eq!(evs.len(), 1);
}

/// A tiny deterministic generator for the garbage test.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u8 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) as u8
    }
}

#[test]
fn garbage_in_any_phase_never_panics_and_ends_in_a_typed_close() {
    let mut rng = Lcg(7);
    for round in 0..200 {
        let mut p = Pair::new(client_cfg(), server_cfg());
        // Reach a random phase: none, after the hellos, or open.
        match round % 3 {
            0 => {}
            1 => {
                let mut b = Vec::new();
                p.server.poll_transmit(&mut b);
                p.client.handle_input(&b, p.now);
            }
            _ => p.drive(),
        }
        let len = 1 + usize::from(rng.next()) * 4;
        let junk: Vec<u8> = (0..len).map(|_| rng.next()).collect();
        p.server.handle_input(&junk, p.now);
        p.client.handle_input(&junk, p.now);
        // Either still waiting for more bytes or closed with an error; never a panic.
        for c in [&mut p.client, &mut p.server] {
            let evs: Vec<V1Event> = std::iter::from_fn(|| c.poll_event()).collect();
            if c.is_closed() {
                assert!(closed_error(&evs).is_some(), "round {round}: {evs:?}");
            }
        }
    }
}
