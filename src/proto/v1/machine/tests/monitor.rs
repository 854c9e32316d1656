//! A monitor client against a monitor-like server: the handshake byte by byte, refusals,
//! retries, keepalives and bad input, on a virtual clock.

use super::*;

// What `runtime::monc` does: a lossy client (CLIENT) and a stateless server (MON) on
// one link, the server deciding every connect `New` as a monitor does for clients.

const MON_ADDR: SocketAddr = SocketAddr::new(
    core::net::IpAddr::V4(core::net::Ipv4Addr::new(127, 0, 0, 1)),
    6789,
);

fn mon_client_cfg() -> ProtoConfig {
    let mut c = ProtoConfig::new(
        EntityName::new(EntityType::CLIENT, u64::MAX),
        AddrVec(vec![EntityAddr::blank(AddrType::LEGACY, 77)]),
    );
    c.features_supported = features::PACIFIC_ALL;
    c.keepalive_interval = None;
    c.policies.default = Policy::lossy_client();
    c
}

fn mon_server_cfg() -> ProtoConfig {
    let mut c = ProtoConfig::new(
        EntityName::new(EntityType::MON, 0),
        AddrVec(vec![EntityAddr::new(AddrType::LEGACY, MON_ADDR, 0)]),
    );
    c.features_supported = features::PACIFIC_ALL;
    c.keepalive_interval = None;
    c.policies.default = Policy::stateless_server();
    c
}

/// A monitor client and server on link 1 with a virtual clock; every drive is bounded.
struct MonPair {
    now: Instant,
    client: V1SessionConn,
    server: V1SessionConn,
    cev: Vec<Event>,
    sev: Vec<Event>,
    /// Unconsumed input of each side (`handle_input` hands back what it did not use).
    cbuf: BytesMut,
    sbuf: BytesMut,
}

impl MonPair {
    fn new(c: ProtoConfig, s: ProtoConfig) -> MonPair {
        let now = crate::proto::tests::epoch();
        MonPair::with(V1SessionConn::outgoing_to_mon(c, now), s, now)
    }

    fn with(mut client: V1SessionConn, s: ProtoConfig, now: Instant) -> MonPair {
        client.start_link(1, now);
        let server = V1SessionConn::incoming(
            Arc::new(s),
            Box::new(SeededRng::new(2)),
            1,
            CLIENT_ADDR,
            now,
        );
        let mut p = MonPair {
            now,
            client,
            server,
            cev: Vec::new(),
            sev: Vec::new(),
            cbuf: BytesMut::new(),
            sbuf: BytesMut::new(),
        };
        p.collect();
        p
    }

    fn collect(&mut self) {
        self.cev.extend(events(&mut self.client));
        for e in events(&mut self.server) {
            if let Event::AcceptRequest(_) = e {
                self.server.decide_accept(Decision::New, self.now);
            } else {
                self.sev.push(e);
            }
        }
    }

    /// Move bytes both ways until nothing moves (client bytes in 7-byte pieces: the
    /// parser must cope with any split); at most 100 rounds.
    fn drive(&mut self) {
        for _ in 0..100 {
            let mut moved = 0;
            let mut t = Transmit::new();
            while self.client.poll_transmit(1, self.now, &mut t) {
                let bytes = t.to_vec();
                t.clear();
                moved += bytes.len();
                for piece in bytes.chunks(7) {
                    self.feed_server(piece);
                }
            }
            while self.server.poll_transmit(1, self.now, &mut t) {
                let bytes = t.to_vec();
                t.clear();
                moved += bytes.len();
                self.feed_client(&bytes);
            }
            self.collect();
            if moved == 0 {
                return;
            }
        }
        panic!("pair did not settle in 100 rounds (livelock)");
    }

    fn feed_server(&mut self, bytes: &[u8]) {
        self.sbuf.extend_from_slice(bytes);
        self.server.handle_input(1, &mut self.sbuf, self.now);
    }

    fn feed_client(&mut self, bytes: &[u8]) {
        self.cbuf.extend_from_slice(bytes);
        self.client.handle_input(1, &mut self.cbuf, self.now);
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.client.handle_timeout(self.now);
        self.server.handle_timeout(self.now);
        self.drive();
    }
}

impl V1SessionConn {
    /// A monitor client as `runtime::monc` makes it (it advertises its learned address).
    fn outgoing_to_mon(c: ProtoConfig, now: Instant) -> V1SessionConn {
        let mon = EntityAddr::new(AddrType::LEGACY, MON_ADDR, 0);
        let mut c = V1SessionConn::outgoing(
            Arc::new(c),
            Box::new(SeededRng::new(1)),
            mon,
            EntityType::MON,
            now,
        );
        c.advertise_learned_addr();
        c
    }
}

fn closed_error(evs: &[Event]) -> Option<&Error> {
    evs.iter().find_map(|e| match e {
        Event::LinkClosed { error, .. } => Some(error),
        _ => None,
    })
}

fn refused(evs: &[Event]) -> Option<&Error> {
    evs.iter().find_map(|e| match e {
        Event::Refused(error) => Some(error),
        _ => None,
    })
}

fn messages(evs: &[Event]) -> Vec<&Message> {
    evs.iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(m),
            _ => None,
        })
        .collect()
}

/// A scripted server's bytes: its hello, then `replies`.
fn server_flight(replies: &[ConnectReply]) -> BytesMut {
    let mut b = Vec::new();
    encode_server_hello(
        &EntityAddr::new(AddrType::LEGACY, MON_ADDR, 0),
        &EntityAddr::new(AddrType::LEGACY, CLIENT_ADDR, 0),
        &mut b,
    );
    for r in replies {
        r.encode(&mut b);
    }
    BytesMut::from(&b[..])
}

fn reply(tag: Tag) -> ConnectReply {
    ConnectReply {
        tag,
        features: features::PACIFIC_ALL,
        global_seq: 0,
        connect_seq: 0,
        protocol_version: protocol::MONC,
        flags: 0,
        authorizer: Vec::new(),
    }
}

/// Every `connect` in a client's output (after its banner and address).
fn connects(out: &[u8]) -> Vec<ConnectMsg> {
    let mut r = Reader::new(&out[9 + 136..]);
    std::iter::from_fn(|| ConnectMsg::read(&mut r).ok()).collect()
}

#[test]
fn each_handshake_step_has_its_exact_byte_count() {
    let now = crate::proto::tests::epoch();
    let mut c = V1SessionConn::outgoing_to_mon(mon_client_cfg(), now);
    c.start_link(1, now);
    let mut s = V1SessionConn::incoming(
        Arc::new(mon_server_cfg()),
        Box::new(SeededRng::new(2)),
        1,
        CLIENT_ADDR,
        now,
    );
    assert_eq!(pump(&mut c, &mut s, 1, now), 9, "banner");
    assert_eq!(
        pump(&mut s, &mut c, 1, now),
        9 + 136 + 136,
        "banner, addresses"
    );
    assert_eq!(pump(&mut c, &mut s, 1, now), 136 + 33, "address, connect");
    let req = request(&events(&mut s)).expect("an accept request");
    assert_eq!(req.peer_type, EntityType::CLIENT);
    s.decide_accept(Decision::New, now);
    assert_eq!(pump(&mut s, &mut c, 1, now), 26 + 8, "SEQ reply, in_seq");
    assert!(c.is_connected());
    assert_eq!(pump(&mut c, &mut s, 1, now), 8, "in_seq");
    assert!(s.is_connected());
    c.send(Message::new(17, vec![0; 60])).unwrap();
    assert_eq!(pump(&mut c, &mut s, 1, now), 1 + 53 + 60 + 21, "one MSG");
    let got = events(&mut s);
    assert!(matches!(got[0], Event::Accepted { resumed: false }));
    assert!(matches!(&got[1], Event::Message(m) if m.ty == 17 && m.seq == 1));
}

#[test]
fn mon_handshake_with_seq_then_messages_both_ways() {
    let mut p = MonPair::new(mon_client_cfg(), mon_server_cfg());
    p.client.send(Message::new(17, vec![1, 2, 3])).unwrap();
    p.drive();
    assert!(p
        .cev
        .iter()
        .any(|e| matches!(e, Event::Connected { resumed: false })));
    let info = p.client.link_info().expect("a link");
    assert!(info.open && info.seq_exchange);
    assert_eq!(info.features, features::PACIFIC_ALL);
    assert!(p.client.policy().lossy, "the server decides: lossy");
    assert_eq!(info.addr_seen.and_then(|a| a.addr), Some(CLIENT_ADDR));
    assert_eq!(info.peer_addr.and_then(|a| a.addr), Some(MON_ADDR));
    assert!(p
        .sev
        .iter()
        .any(|e| matches!(e, Event::Accepted { resumed: false })));
    assert_eq!(p.server.peer().ty, EntityType::CLIENT);
    // The blank client address went out as the IP the server saw, port 0, our nonce.
    let seen = p
        .server
        .link_info()
        .and_then(|i| i.peer_addr)
        .expect("addr");
    assert_eq!(seen.addr, Some("127.0.0.1:0".parse().unwrap()));
    assert_eq!(seen.nonce, 77);
    let got = messages(&p.sev);
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].ty, got[0].seq, &got[0].front[..]),
        (17, 1, &[1u8, 2, 3][..])
    );
    p.server
        .send(Message::new(18, vec![9]).with_data(vec![7; 100]))
        .unwrap();
    p.server.send(Message::new(4, vec![])).unwrap();
    p.drive();
    let got = messages(&p.cev);
    assert_eq!(
        got.iter().map(|m| (m.ty, m.seq)).collect::<Vec<_>>(),
        vec![(18, 1), (4, 2)]
    );
    assert_eq!(got[0].data.len(), 100);
    assert_eq!(got[0].src, EntityName::new(EntityType::MON, 0));
}

#[test]
fn without_reconnect_seq_the_reply_is_ready_and_without_msg_auth_the_footer_is_old() {
    let mut c = mon_client_cfg();
    c.features_supported &= !(features::RECONNECT_SEQ | features::MSG_AUTH);
    let mut p = MonPair::new(c, mon_server_cfg());
    p.client.send(Message::new(17, vec![1])).unwrap();
    p.drive();
    let info = p.client.link_info().expect("a link");
    assert!(info.open && !info.seq_exchange);
    assert_eq!(info.features & features::MSG_AUTH, 0);
    assert!(!p.client.link.as_ref().unwrap().with_sig());
    assert_eq!(messages(&p.sev).len(), 1);
}

#[test]
fn a_features_reply_refuses_with_the_missing_bits_and_the_server_waits() {
    let mut s = mon_server_cfg();
    s.features_required = features::MSG_ADDR2 | features::MSG_AUTH;
    let mut c = mon_client_cfg();
    c.features_supported = features::MSG_AUTH | 0xff;
    let mut p = MonPair::new(c, s);
    p.drive();
    let Some(Error::MissingFeatures { missing }) = refused(&p.cev) else {
        panic!("{:?}", p.cev)
    };
    assert_eq!(missing & features::MSG_ADDR2, features::MSG_ADDR2);
    assert_eq!(missing & features::MSG_AUTH, 0);
    assert_eq!(p.client.state(), State::Closed);
    assert!(
        p.server.link_id().is_some() && p.server.state() == State::Accepting,
        "the server waits for a corrected connect"
    );
}

#[test]
fn badprotover_is_a_typed_refusal_with_both_versions() {
    let now = crate::proto::tests::epoch();
    let mut client = V1SessionConn::outgoing_to_mon(mon_client_cfg(), now);
    client.set_protocol_version(24);
    let mut p = MonPair::with(client, mon_server_cfg(), now);
    p.drive();
    assert_eq!(
        refused(&p.cev),
        Some(&Error::BadProtocolVersion {
            ours: 24,
            theirs: 15
        })
    );
    assert!(Error::BadProtocolVersion {
        ours: 24,
        theirs: 15
    }
    .is_permanent());
    // A server told to speak another version refuses a standard client the same way.
    let mut p = MonPair::new(mon_client_cfg(), mon_server_cfg());
    p.server.set_protocol_version(24);
    p.drive();
    assert_eq!(
        refused(&p.cev),
        Some(&Error::BadProtocolVersion {
            ours: 15,
            theirs: 24
        }),
        "the reply carries the server's version"
    );
}

#[test]
fn the_client_retries_with_the_numbers_the_server_asks_for() {
    let now = crate::proto::tests::epoch();
    let mut c = V1SessionConn::outgoing_to_mon(mon_client_cfg(), now);
    c.start_link(1, now);
    let mut retry_session = reply(Tag::RETRY_SESSION);
    retry_session.connect_seq = 4;
    let mut retry_global = reply(Tag::RETRY_GLOBAL);
    retry_global.global_seq = 40;
    let mut input = server_flight(&[retry_session, retry_global, reply(Tag::RESETSESSION)]);
    c.handle_input(1, &mut input, now);
    let mut t = Transmit::new();
    assert!(c.poll_transmit(1, now, &mut t));
    let sent = connects(&t.to_vec());
    assert_eq!(sent.len(), 4, "the first connect and three retries");
    assert_eq!(sent[0].connect_seq, 0);
    assert_eq!(sent[1].connect_seq, 4, "RETRY_SESSION: its connect_seq");
    assert!(
        sent[2].global_seq > 40,
        "RETRY_GLOBAL: above its global_seq"
    );
    assert_eq!(sent[3].connect_seq, 0, "RESETSESSION: a new session");
    assert!(events(&mut c)
        .iter()
        .any(|e| matches!(e, Event::RemoteReset)));
    assert!(sent.iter().all(|m| m.flags == CONNECT_FLAG_LOSSY));
}

#[test]
fn a_bad_banner_or_connect_reply_closes_the_link_with_a_typed_error() {
    let now = crate::proto::tests::epoch();
    // A server fed an msgr2 banner.
    let mut s = V1SessionConn::incoming(
        Arc::new(mon_server_cfg()),
        Box::new(SeededRng::new(2)),
        1,
        CLIENT_ADDR,
        now,
    );
    let mut b = BytesMut::from(&b"ceph v2\n\x10\x00"[..]);
    s.handle_input(1, &mut b, now);
    assert_eq!(s.state(), State::Closed);
    assert!(s.link_id().is_none());
    let evs = events(&mut s);
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert!(matches!(
        &evs[0],
        Event::LinkClosed { error: Error::Legacy(m), initiator: Initiator::Local, .. }
            if m.contains("client banner")
    ));
    // A client fed a reply tag that is not a connect_reply tag.
    let mut c = V1SessionConn::outgoing_to_mon(mon_client_cfg(), now);
    c.start_link(1, now);
    let mut input = server_flight(&[reply(Tag::MSG)]);
    c.handle_input(1, &mut input, now);
    let evs = events(&mut c);
    assert!(
        matches!(closed_error(&evs), Some(Error::Legacy(m)) if m.contains("unexpected connect_reply tag")),
        "{evs:?}"
    );
    assert!(
        evs.iter().any(|e| matches!(e, Event::Reset)),
        "a lossy session ends"
    );
    assert_eq!(c.state(), State::Closed);
    // A client fed a server hello that is not Ceph's.
    let mut c = V1SessionConn::outgoing_to_mon(mon_client_cfg(), now);
    c.start_link(1, now);
    let mut b = BytesMut::from(&[b'x'; 300][..]);
    c.handle_input(1, &mut b, now);
    assert!(matches!(
        closed_error(&events(&mut c)),
        Some(Error::Legacy(m)) if m.contains("server banner")
    ));
}

#[test]
fn duplicate_messages_are_dropped_by_in_seq() {
    let mut p = MonPair::new(mon_client_cfg(), mon_server_cfg());
    p.drive();
    let m = Message::new(50, vec![1]);
    let raw = RawMsg::from_message(&m, 1, EntityName::new(EntityType::CLIENT, 1), true);
    let mut bytes = Vec::new();
    Frame::Msg(raw.clone()).encode(&mut bytes);
    Frame::Msg(raw).encode(&mut bytes);
    p.feed_server(&bytes);
    p.collect();
    assert_eq!(messages(&p.sev).len(), 1);
    assert!(p.server.is_connected());
}

#[test]
fn a_corrupted_header_crc_is_a_fault() {
    let mut p = MonPair::new(mon_client_cfg(), mon_server_cfg());
    p.drive();
    p.client.send(Message::new(50, vec![1])).unwrap();
    let mut t = Transmit::new();
    assert!(p.client.poll_transmit(1, p.now, &mut t));
    let mut bytes = t.to_vec();
    bytes[1] ^= 0xff;
    p.feed_server(&bytes);
    p.collect();
    assert!(
        matches!(closed_error(&p.sev), Some(Error::Legacy(m)) if m.contains("crc")),
        "{:?}",
        p.sev
    );
    assert!(messages(&p.sev).is_empty());
    assert_eq!(p.server.state(), State::Closed);
}

#[test]
fn a_keepalive2_is_echoed_with_its_stamp() {
    let mut p = MonPair::new(mon_client_cfg(), mon_server_cfg());
    // Asked for before the handshake: sent once it completes.
    p.client.send_keepalive();
    p.drive();
    assert_eq!(p.client.last_keepalive_ack(), Some(p.now));
    assert_eq!(p.server.last_keepalive(), Some(p.now));
    p.now += Duration::from_millis(1500);
    p.client.send_keepalive();
    assert!(p.client.wants_transmit(1));
    let mut t = Transmit::new();
    assert!(p.client.poll_transmit(1, p.now, &mut t));
    let bytes = t.to_vec();
    let stamp = Timespec {
        sec: 1,
        nsec: 500_000_000,
    };
    let mut want = Vec::new();
    Frame::Keepalive2(stamp).encode(&mut want);
    assert_eq!(
        bytes, want,
        "stamped with the time since the session was made"
    );
    p.feed_server(&bytes);
    let mut echo = Transmit::new();
    assert!(p.server.poll_transmit(1, p.now, &mut echo));
    let mut want = Vec::new();
    Frame::Keepalive2Ack(stamp).encode(&mut want);
    assert_eq!(echo.to_vec(), want);
    p.feed_client(&want);
    assert_eq!(p.client.last_keepalive_ack(), Some(p.now));
    // Without KEEPALIVE2 the plain KEEPALIVE tag goes out.
    let mut c = mon_client_cfg();
    c.features_supported &= !features::MSGR_KEEPALIVE2;
    let mut p = MonPair::new(c, mon_server_cfg());
    p.drive();
    p.client.send_keepalive();
    let mut t = Transmit::new();
    assert!(p.client.poll_transmit(1, p.now, &mut t));
    assert_eq!(t.to_vec(), vec![Tag::KEEPALIVE.0]);
}

#[test]
fn the_handshake_times_out_on_the_virtual_clock() {
    let mut c = mon_client_cfg();
    c.handshake_timeout = Duration::from_secs(3);
    let now = crate::proto::tests::epoch();
    let mut c = V1SessionConn::outgoing_to_mon(c, now);
    c.start_link(1, now);
    let deadline = c.poll_timeout().expect("a handshake deadline");
    assert_eq!(deadline, now + Duration::from_secs(3));
    c.handle_timeout(deadline - Duration::from_millis(1));
    assert!(c.link_id().is_some());
    c.handle_timeout(deadline);
    let evs = events(&mut c);
    assert!(
        matches!(
            evs.iter().find(|e| matches!(e, Event::LinkClosed { .. })),
            Some(Event::LinkClosed {
                error: Error::HandshakeTimeout,
                initiator: Initiator::Local,
                ..
            })
        ),
        "{evs:?}"
    );
    assert_eq!(c.state(), State::Closed);
    assert_eq!(c.poll_timeout(), None);
}

#[test]
fn periodic_keepalives_on_the_virtual_clock() {
    let mut c = mon_client_cfg();
    c.keepalive_interval = Some(Duration::from_secs(5));
    let mut p = MonPair::new(c, mon_server_cfg());
    p.drive();
    let mut acks = 0;
    for _ in 0..3 {
        let at = p.client.poll_timeout().expect("keepalive timer");
        assert_eq!(at, p.now + Duration::from_secs(5));
        p.advance(at - p.now);
        if p.client.last_keepalive_ack() == Some(p.now) {
            acks += 1;
        }
    }
    assert_eq!(acks, 3);
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
        let mut p = MonPair::new(mon_client_cfg(), mon_server_cfg());
        // Reach a random phase: none, after the hellos, or open.
        match round % 3 {
            0 => {}
            1 => {
                let mut t = Transmit::new();
                assert!(p.server.poll_transmit(1, p.now, &mut t));
                p.feed_client(&t.to_vec());
            }
            _ => p.drive(),
        }
        p.collect();
        let len = 1 + usize::from(rng.next()) * 4;
        let junk: Vec<u8> = (0..len).map(|_| rng.next()).collect();
        p.feed_server(&junk);
        p.feed_client(&junk);
        // Either still waiting for more bytes or closed with an error; never a panic.
        for c in [&mut p.client, &mut p.server] {
            let evs = events(c);
            if c.link_id().is_none() {
                assert!(closed_error(&evs).is_some(), "round {round}: {evs:?}");
            }
        }
    }
}

#[test]
fn set_my_name_changes_the_source_of_later_messages() {
    let mut p = MonPair::new(mon_client_cfg(), mon_server_cfg());
    p.client.send(Message::new(17, vec![1])).unwrap();
    p.drive();
    p.client
        .set_my_name(EntityName::new(EntityType::CLIENT, 4242));
    p.client.send(Message::new(50, vec![2])).unwrap();
    p.drive();
    let got = messages(&p.sev);
    assert_eq!(
        got.iter().map(|m| m.src.num).collect::<Vec<_>>(),
        vec![u64::MAX, 4242]
    );
}

#[test]
fn the_server_checks_rows_1_to_4_before_asking_the_session_table() {
    // Each refused connect is answered on the same link, which then waits for the next;
    // only an acceptable one becomes an accept request.
    let now = crate::proto::tests::epoch();
    let mut s = mon_server_cfg();
    s.features_required = features::MSG_AUTH;
    let mut s = V1SessionConn::incoming(
        Arc::new(s),
        Box::new(SeededRng::new(2)),
        1,
        CLIENT_ADDR,
        now,
    );
    let good = ConnectMsg {
        features: features::PACIFIC_ALL,
        host_type: u32::from(EntityType::CLIENT.0),
        global_seq: 1,
        connect_seq: 0,
        protocol_version: protocol::MONC,
        ..Default::default()
    };
    let mut input = BytesMut::new();
    input.extend_from_slice(crate::wire::v1::BANNER);
    EntityAddr::blank(AddrType::LEGACY, 5).encode_legacy_into(&mut input);
    s.handle_input(1, &mut input, now);
    let mut t = Transmit::new();
    assert!(s.poll_transmit(1, now, &mut t), "the server hello");
    t.clear();
    let cases = [
        (
            ConnectMsg {
                protocol_version: 24,
                ..good.clone()
            },
            Tag::BADPROTOVER,
        ),
        (
            ConnectMsg {
                features: features::PACIFIC_ALL & !features::MSG_AUTH,
                ..good.clone()
            },
            Tag::FEATURES,
        ),
        (
            ConnectMsg {
                authorizer_protocol: 2,
                authorizer: vec![1, 2, 3],
                ..good.clone()
            },
            Tag::BADAUTHORIZER,
        ),
    ];
    for (connect, tag) in cases {
        let mut b = BytesMut::new();
        connect.encode_into(&mut b);
        s.handle_input(1, &mut b, now);
        assert!(
            request(&events(&mut s)).is_none(),
            "{tag}: no accept request"
        );
        assert!(s.poll_transmit(1, now, &mut t));
        let bytes = t.to_vec();
        t.clear();
        let reply = ConnectReply::read(&mut Reader::new(&bytes)).unwrap();
        assert_eq!(reply.tag, tag);
        assert_eq!(reply.protocol_version, protocol::MONC);
        if tag == Tag::FEATURES {
            assert_eq!(reply.features & features::MSG_AUTH, features::MSG_AUTH);
        }
        assert_eq!(
            (reply.global_seq, reply.connect_seq, reply.flags),
            (0, 0, 0)
        );
    }
    // An empty authorizer of any protocol is accepted.
    let mut b = BytesMut::new();
    ConnectMsg {
        authorizer_protocol: 2,
        ..good
    }
    .encode_into(&mut b);
    s.handle_input(1, &mut b, now);
    assert!(request(&events(&mut s)).is_some());
}

#[test]
fn an_unbound_client_advertises_a_blank_address_unless_asked_to_learn_it() {
    let now = crate::proto::tests::epoch();
    for learn in [false, true] {
        let mut c = V1SessionConn::outgoing(
            Arc::new(mon_client_cfg()),
            Box::new(SeededRng::new(1)),
            EntityAddr::new(AddrType::LEGACY, MON_ADDR, 0),
            EntityType::MON,
            now,
        );
        if learn {
            c.advertise_learned_addr();
        }
        let mut p = MonPair::with(c, mon_server_cfg(), now);
        p.drive();
        assert!(p.server.is_connected());
        let sent = p
            .server
            .link_info()
            .and_then(|i| i.peer_addr)
            .expect("addr");
        assert_eq!(sent.nonce, 77);
        if learn {
            assert_eq!(sent.addr, Some("127.0.0.1:0".parse().unwrap()));
        } else {
            // The messenger keys this session by nonce alone.
            assert!(sent.is_blank(), "{sent}");
        }
    }
}
