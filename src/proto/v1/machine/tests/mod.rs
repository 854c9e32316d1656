//! Two v1 session machines over in-memory links, with the shell's session table
//! played by hand (`decide` + `take_handoff`/`adopt`).

use super::*;
use std::time::Duration;

use crate::crypto::SeededRng;
use crate::proto::accept::decide;
use crate::proto::policy::Policy;
use crate::wire::message::Message;
use crate::wire::types::EntityName;

fn cfg(name: &str, port: u16, nonce: u32, policy: Policy) -> Arc<ProtoConfig> {
    let addr = EntityAddr::new(AddrType::MSGR2, ([127, 0, 0, 1], port).into(), nonce);
    let mut c = ProtoConfig::new(name.parse::<EntityName>().unwrap(), AddrVec(vec![addr]));
    c.policies.default = policy;
    c.keepalive_interval = None;
    Arc::new(c)
}

/// The address the test server (`cfg("osd.0", 6800, 9, …)`) listens on.
fn server_addr() -> EntityAddr {
    cfg("osd.0", 6800, 9, Policy::stateful_server()).addrs.0[0]
}

/// Move every byte `from` has for `link` into `to`.
fn pump(from: &mut V1SessionConn, to: &mut V1SessionConn, link: LinkId, now: Instant) -> usize {
    let mut t = Transmit::new();
    let mut moved = 0;
    while from.poll_transmit(link, now, &mut t) {
        let bytes = t.to_vec();
        t.clear();
        moved += bytes.len();
        let mut b = BytesMut::from(&bytes[..]);
        to.handle_input(link, &mut b, now);
    }
    moved
}

fn events(c: &mut V1SessionConn) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn request(evs: &[Event]) -> Option<AcceptRequest> {
    evs.iter().find_map(|e| match e {
        Event::AcceptRequest(r) => Some(r.clone()),
        _ => None,
    })
}

fn delivered(evs: &[Event]) -> Vec<u8> {
    evs.iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(m.front[0]),
            _ => None,
        })
        .collect()
}

const CLIENT_ADDR: SocketAddr = SocketAddr::new(
    core::net::IpAddr::V4(core::net::Ipv4Addr::new(127, 0, 0, 1)),
    40000,
);

struct World {
    now: Instant,
    client: V1SessionConn,
    server: Option<V1SessionConn>,
    next_link: LinkId,
}

impl World {
    fn new() -> World {
        let now = crate::proto::tests::epoch();
        let ccfg = cfg("client.1", 0, 5, Policy::lossless_client());
        let peer = EntityAddr::new(AddrType::LEGACY, ([127, 0, 0, 1], 6800).into(), 0);
        let client = V1SessionConn::outgoing(
            ccfg,
            Box::new(SeededRng::new(1)),
            peer,
            EntityType::OSD,
            now,
        );
        World {
            now,
            client,
            server: None,
            next_link: 1,
        }
    }

    /// Start a link at the client and the server's machine for it (still deciding
    /// nothing).
    fn new_link(&mut self) -> (LinkId, V1SessionConn) {
        let link = self.next_link;
        self.next_link += 1;
        self.client.start_link(link, self.now);
        let inc = V1SessionConn::incoming(
            cfg("osd.0", 6800, 9, Policy::stateful_server()),
            Box::new(SeededRng::new(link)),
            link,
            CLIENT_ADDR,
            self.now,
        );
        (link, inc)
    }

    /// Open a link from the client and run the handshake, deciding at the server
    /// as the shell does. Returns the events of the client and the server session.
    fn connect(&mut self) -> (Vec<Event>, Vec<Event>) {
        let now = self.now;
        let (link, mut inc) = self.new_link();
        let (mut cev, mut sev) = (Vec::new(), Vec::new());
        for _ in 0..20 {
            let moved = pump(&mut self.client, &mut inc, link, now)
                + pump(&mut inc, &mut self.client, link, now);
            cev.extend(events(&mut self.client));
            let iev = events(&mut inc);
            let req = request(&iev);
            sev.extend(
                iev.into_iter()
                    .filter(|e| !matches!(e, Event::AcceptRequest(_))),
            );
            if let Some(req) = req {
                let view = self.server.as_ref().and_then(|s| s.existing_view());
                let my = server_addr();
                match decide(view.as_ref(), &req.attempt, &req.peer_addr, &my, true) {
                    Decision::Adopt { reset } => {
                        let h = inc.take_handoff().unwrap();
                        let s = self.server.as_mut().unwrap();
                        s.adopt(h, reset, now);
                        inc = std::mem::replace(s, inc);
                    }
                    other => inc.decide_accept(other, now),
                }
                sev.extend(events(&mut inc));
            }
            if moved == 0 {
                break;
            }
        }
        if inc.state() != State::Accepting && inc.state() != State::Closed {
            self.server = Some(inc);
        }
        (cev, sev)
    }

    fn exchange(&mut self) -> (Vec<Event>, Vec<Event>) {
        let now = self.now;
        let link = self.client.link_id().unwrap();
        let s = self.server.as_mut().unwrap();
        let (mut cev, mut sev) = (Vec::new(), Vec::new());
        for _ in 0..20 {
            let moved = pump(&mut self.client, s, link, now) + pump(s, &mut self.client, link, now);
            cev.extend(events(&mut self.client));
            sev.extend(events(s));
            if moved == 0 {
                break;
            }
        }
        (cev, sev)
    }

    fn break_link(&mut self) {
        let now = self.now;
        let link = self.client.link_id().unwrap();
        self.client
            .link_failed(link, Error::Transport("cut".into()), now);
        if let Some(s) = &mut self.server {
            s.link_failed(link, Error::Transport("cut".into()), now);
        }
    }
}

fn m(tag: u8) -> Message {
    Message::new(0x40, vec![tag; 40])
}

#[test]
fn handshake_messages_and_acks() {
    let mut w = World::new();
    for i in 0..5 {
        w.client.send(m(i)).unwrap();
    }
    let (cev, sev) = w.connect();
    assert!(cev
        .iter()
        .any(|e| matches!(e, Event::Connected { resumed: false })));
    assert!(sev
        .iter()
        .any(|e| matches!(e, Event::Accepted { resumed: false })));
    let (_, sev2) = w.exchange();
    let mut got = delivered(&sev);
    got.extend(delivered(&sev2));
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
    assert_eq!(
        w.client.session().unacked(),
        0,
        "acknowledged by ACK frames"
    );
    assert_eq!(w.client.state(), State::Open);
    assert_eq!(w.client.peer().ty, EntityType::OSD);
}

#[test]
fn a_broken_link_is_resumed_and_replays_exactly_once() {
    let mut w = World::new();
    w.client.send(m(0)).unwrap();
    w.connect();
    w.exchange();
    // Sent but the link dies before the server reads them.
    w.client.send(m(1)).unwrap();
    w.client.send(m(2)).unwrap();
    let link = w.client.link_id().unwrap();
    let mut t = Transmit::new();
    assert!(w.client.poll_transmit(link, w.now, &mut t));
    assert_eq!(w.client.session().unacked(), 2);
    w.break_link();
    assert_eq!(w.client.state(), State::Connecting);
    assert_eq!(w.server.as_ref().unwrap().state(), State::Standby);
    assert!(events(&mut w.client)
        .iter()
        .any(|e| matches!(e, Event::LinkClosed { .. })));
    w.client.handle_timeout(w.now);
    assert!(events(&mut w.client)
        .iter()
        .any(|e| matches!(e, Event::ReconnectDue)));
    w.client.send(m(3)).unwrap();
    let (cev, sev) = w.connect();
    assert!(
        cev.iter()
            .any(|e| matches!(e, Event::Connected { resumed: true })),
        "{cev:?}"
    );
    assert!(
        sev.iter()
            .any(|e| matches!(e, Event::Accepted { resumed: true })),
        "{sev:?}"
    );
    let (_, sev2) = w.exchange();
    let mut got = delivered(&sev);
    got.extend(delivered(&sev2));
    assert_eq!(got, vec![1, 2, 3]);
    // The server's session survived: one session, sequence continues.
    assert_eq!(w.server.as_ref().unwrap().session().in_seq(), 4);
}

#[test]
fn a_new_session_survives_a_link_lost_during_the_seq_exchange() {
    // The server answers a new session's connect with SEQ and waits for the
    // client's in_seq; the client opens at once and sends its in_seq with its first
    // messages. If the link dies before those bytes reach the server, the server
    // must keep the session (as Ceph, which registers it before the SEQ exchange):
    // the client resumes it, and a RESETSESSION would drop the messages it sent.
    let mut w = World::new();
    for i in 0..3 {
        w.client.send(m(i)).unwrap();
    }
    let now = w.now;
    let (link, mut inc) = w.new_link();
    // Banner, server hello, client address, connect.
    pump(&mut w.client, &mut inc, link, now);
    pump(&mut inc, &mut w.client, link, now);
    pump(&mut w.client, &mut inc, link, now);
    let req = request(&events(&mut inc)).expect("an accept request");
    let my = server_addr();
    let decision = decide(None, &req.attempt, &req.peer_addr, &my, true);
    assert_eq!(decision, Decision::New);
    inc.decide_accept(decision, now);
    // SEQ and the server's in_seq reach the client, which opens...
    pump(&mut inc, &mut w.client, link, now);
    assert!(events(&mut w.client)
        .iter()
        .any(|e| matches!(e, Event::Connected { resumed: false })));
    // ...and sends its in_seq and the three messages, which the link loses.
    let mut t = Transmit::new();
    assert!(w.client.poll_transmit(link, now, &mut t));
    assert_eq!(w.client.session().unacked(), 3);
    w.client
        .link_failed(link, Error::Transport("cut".into()), now);
    inc.link_failed(link, Error::Transport("cut".into()), now);
    assert_eq!(
        inc.state(),
        State::Standby,
        "the server keeps the session it answered with SEQ"
    );
    assert!(inc.existing_view().is_some());
    w.server = Some(inc);
    events(&mut w.client);
    w.client.handle_timeout(now);
    let (cev, sev) = w.connect();
    assert!(
        !cev.iter().any(|e| matches!(e, Event::RemoteReset)),
        "{cev:?}"
    );
    assert!(
        cev.iter()
            .any(|e| matches!(e, Event::Connected { resumed: true })),
        "{cev:?}"
    );
    let (_, sev2) = w.exchange();
    let mut got = delivered(&sev);
    got.extend(delivered(&sev2));
    assert_eq!(got, vec![0, 1, 2], "nothing lost");
}

#[test]
fn refusals_map_to_v1_reply_tags() {
    let now = crate::proto::tests::epoch();
    let scfg = cfg("osd.0", 6800, 9, Policy::stateful_server());
    for (decision, tag) in [
        (Decision::RetrySession(7), Tag::RETRY_SESSION),
        (Decision::RetryGlobal(9), Tag::RETRY_GLOBAL),
        (Decision::Reset, Tag::RESETSESSION),
        (Decision::Wait, Tag::WAIT),
    ] {
        let mut s = V1SessionConn::incoming(
            scfg.clone(),
            Box::new(SeededRng::new(3)),
            1,
            CLIENT_ADDR,
            now,
        );
        let mut input = BytesMut::new();
        input.extend_from_slice(crate::wire::v1::BANNER);
        legacy(EntityAddr::blank(AddrType::LEGACY, 5)).encode_legacy_into(&mut input);
        ConnectMsg {
            features: u64::MAX,
            host_type: u32::from(EntityType::CLIENT.0),
            global_seq: 3,
            connect_seq: 2,
            protocol_version: protocol::OSDC,
            ..Default::default()
        }
        .encode_into(&mut input);
        s.handle_input(1, &mut input, now);
        let req = request(&events(&mut s)).expect("an accept request");
        assert_eq!(req.attempt.resume, Some((V1_COOKIE, 2)));
        assert_eq!(req.attempt.global_seq, 3);
        let mut t = Transmit::new();
        s.poll_transmit(1, now, &mut t); // the server hello
        t.clear();
        s.decide_accept(decision, now);
        assert!(s.poll_transmit(1, now, &mut t));
        let bytes = t.to_vec();
        let reply = ConnectReply::read(&mut Reader::new(&bytes)).unwrap();
        assert_eq!(reply.tag, tag);
        match decision {
            Decision::RetrySession(n) => assert_eq!(u64::from(reply.connect_seq), n),
            Decision::RetryGlobal(g) => assert_eq!(u64::from(reply.global_seq), g),
            _ => {}
        }
    }
}

#[test]
fn wait_makes_the_client_wait_and_features_refuse() {
    let mut w = World::new();
    let now = w.now;
    w.client.start_link(1, now);
    let mut reply = Vec::new();
    encode_server_hello(
        &EntityAddr::new(AddrType::LEGACY, ([127, 0, 0, 1], 6800).into(), 9),
        &EntityAddr::new(AddrType::LEGACY, CLIENT_ADDR, 0),
        &mut reply,
    );
    ConnectReply {
        tag: Tag::WAIT,
        features: 0,
        global_seq: 0,
        connect_seq: 0,
        protocol_version: protocol::OSDC,
        flags: 0,
        authorizer: Vec::new(),
    }
    .encode(&mut reply);
    let mut b = BytesMut::from(&reply[..]);
    w.client.handle_input(1, &mut b, now);
    assert_eq!(w.client.state(), State::Wait);
    assert!(w.client.link_id().is_none());
    // FEATURES is permanent: the session is refused.
    w.client.handle_timeout(now + Duration::from_secs(60));
    w.client.start_link(2, now);
    let mut reply2 = Vec::new();
    encode_server_hello(
        &EntityAddr::new(AddrType::LEGACY, ([127, 0, 0, 1], 6800).into(), 9),
        &EntityAddr::new(AddrType::LEGACY, CLIENT_ADDR, 0),
        &mut reply2,
    );
    ConnectReply {
        tag: Tag::FEATURES,
        features: 1 << 63,
        global_seq: 0,
        connect_seq: 0,
        protocol_version: protocol::OSDC,
        flags: 0,
        authorizer: Vec::new(),
    }
    .encode(&mut reply2);
    let mut b = BytesMut::from(&reply2[..]);
    events(&mut w.client);
    w.client.handle_input(2, &mut b, now);
    assert_eq!(w.client.state(), State::Closed);
    assert!(events(&mut w.client)
        .iter()
        .any(|e| matches!(e, Event::Refused(Error::MissingFeatures { .. }))));
}

#[test]
fn a_resume_of_a_session_we_do_not_have_is_reset() {
    // Existing session that never connected presents cookie 0: a v1 resume
    // (cookie V1_COOKIE) is decided Reset, like Ceph's row 12.
    let w = World::new();
    let view = w.client.existing_view().unwrap();
    assert_eq!(view.cookie, 0);
    let me = EntityAddr::new(AddrType::MSGR2, ([127, 0, 0, 1], 1).into(), 1);
    let peer = EntityAddr::new(AddrType::MSGR2, ([127, 0, 0, 1], 2).into(), 2);
    let attempt = Attempt {
        global_seq: 5,
        resume: Some((V1_COOKIE, 3)),
    };
    assert_eq!(
        decide(Some(&view), &attempt, &peer, &me, false),
        Decision::Reset
    );
}

#[test]
fn v1_is_refused_where_auth_or_protection_is_required() {
    let now = crate::proto::tests::epoch();
    let mut c = (*cfg("client.1", 0, 5, Policy::lossless_client())).clone();
    c.min_mode = crate::proto::Mode::Signed;
    let peer = EntityAddr::new(AddrType::LEGACY, ([127, 0, 0, 1], 6800).into(), 0);
    let mut client = V1SessionConn::outgoing(
        Arc::new(c),
        Box::new(SeededRng::new(1)),
        peer,
        EntityType::OSD,
        now,
    );
    client.start_link(1, now);
    assert_eq!(client.state(), State::Closed);
    assert!(events(&mut client)
        .iter()
        .any(|e| matches!(e, Event::Refused(Error::ModeRefused(_)))));
    // A server that allows no auth-none peers closes the link at connect.
    let mut s = (*cfg("osd.0", 6800, 9, Policy::stateful_server())).clone();
    s.auth
        .server_methods
        .retain(|m| m.0 != crate::wire::msgr2::AUTH_NONE);
    let mut server = V1SessionConn::incoming(
        Arc::new(s),
        Box::new(SeededRng::new(2)),
        1,
        CLIENT_ADDR,
        now,
    );
    let mut w = World::new();
    w.client.start_link(1, now);
    pump(&mut w.client, &mut server, 1, now);
    pump(&mut server, &mut w.client, 1, now);
    pump(&mut w.client, &mut server, 1, now);
    assert_eq!(server.state(), State::Closed);
    assert!(request(&events(&mut server)).is_none(), "no accept request");
}

#[test]
fn protocol_versions_match_on_both_sides() {
    use EntityType as T;
    for (a, b) in [
        (T::CLIENT, T::MON),
        (T::CLIENT, T::OSD),
        (T::OSD, T::MON),
        (T::OSD, T::OSD),
        (T::MDS, T::OSD),
    ] {
        assert_eq!(
            protocol_version_for(a, b, true),
            protocol_version_for(b, a, false),
            "{a:?} -> {b:?}"
        );
    }
    assert_eq!(
        protocol_version_for(T::CLIENT, T::MON, true),
        protocol::MONC
    );
    assert_eq!(protocol_version_for(T::OSD, T::OSD, true), protocol::OSD);
}

trait EncodeInto {
    fn encode_into(&self, out: &mut BytesMut);
}

impl EncodeInto for ConnectMsg {
    fn encode_into(&self, out: &mut BytesMut) {
        let mut v = Vec::new();
        self.encode(&mut v);
        out.extend_from_slice(&v);
    }
}

trait LegacyInto {
    fn encode_legacy_into(&self, out: &mut BytesMut);
}

impl LegacyInto for EntityAddr {
    fn encode_legacy_into(&self, out: &mut BytesMut) {
        let mut v = Vec::new();
        self.encode_legacy(&mut v);
        out.extend_from_slice(&v);
    }
}

mod monitor;
