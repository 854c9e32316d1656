//! Legacy v1 sessions between two simplemsgr messengers: `v1:` addresses in
//! `connect_addr`, one listener serving v1 and msgr2, lossless reconnects with
//! injected socket failures, connection races, and a synthetic fault test. Every
//! wait is bounded.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use simplemsgr::proto::Policy;
use simplemsgr::runtime::SeededRng;
use simplemsgr::runtime::{ChannelDispatcher, ConnectionRef, Dispatcher, Event, Messenger};
use simplemsgr::wire::message::Message;
use simplemsgr::wire::types::{AddrType, EntityAddr, EntityName, EntityType};

use common::{index, msg, recv_messages, wait_for, Echo};

const T: Duration = Duration::from_secs(10);

fn v1(addr: SocketAddr) -> EntityAddr {
    EntityAddr::new(AddrType::LEGACY, addr, 0)
}

fn server_with(
    name: &str,
    policy: Policy,
    failures: u64,
    dispatcher: Arc<dyn Dispatcher>,
) -> Messenger {
    let mut b = Messenger::builder(name.parse().unwrap())
        .bind("127.0.0.1:0".parse().unwrap())
        .default_policy(policy);
    b.config_mut().fault.socket_failures = failures;
    b.config_mut().fault.seed = 7;
    b.start(dispatcher).unwrap()
}

fn client(name: &str, policy: Policy) -> (Messenger, Receiver<Event>) {
    let (d, ev) = ChannelDispatcher::new();
    let mut b = Messenger::builder(name.parse().unwrap()).default_policy(policy);
    b.config_mut().initial_backoff = Duration::from_millis(5);
    (b.start(Arc::new(d)).unwrap(), ev)
}

#[test]
fn v1_round_trip_between_two_messengers() {
    common::init_log();
    let srv = server_with("osd.0", Policy::stateful_server(), 0, Arc::new(Echo));
    let (cli, cev) = client("client.1", Policy::lossless_client());
    let conn = cli
        .connect_addr(v1(srv.listen_addr().unwrap()), EntityType::OSD)
        .unwrap();
    assert_eq!(conn.peer.kind, AddrType::LEGACY);
    for i in 0..50 {
        conn.send(msg(i, 32 + i as usize * 331)).unwrap();
    }
    assert!(wait_for(&cev, T, |e| matches!(e, Event::Connect(_))).is_some());
    assert_eq!(recv_messages(&cev, 50, T), (0..50).collect::<Vec<_>>());
    assert!(conn.is_connected());
    assert_eq!(conn.peer_type(), EntityType::OSD);
    // Our messages were acknowledged by v1 ACK frames.
    let end = Instant::now() + T;
    while conn.unacked() > 0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(conn.unacked(), 0);
    srv.shutdown();
    cli.shutdown();
}

#[test]
fn v1_reconnect_with_messages_in_flight_loses_nothing() {
    common::init_log();
    let (d, sev) = ChannelDispatcher::new();
    let srv = server_with("osd.0", Policy::stateful_server(), 20, Arc::new(d));
    let (cli, _cev) = client("client.1", Policy::lossless_client());
    let conn = cli
        .connect_addr(v1(srv.listen_addr().unwrap()), EntityType::OSD)
        .unwrap();
    let n = 3000;
    for i in 0..n {
        conn.send(msg(i, 32 + (i as usize * 97) % 3000)).unwrap();
    }
    let got = recv_messages(&sev, n as usize, Duration::from_secs(60));
    assert_eq!(got, (0..n).collect::<Vec<_>>());
    assert!(srv.faults().socket_failures() > 0, "faults were injected");
    srv.shutdown();
    cli.shutdown();
}

#[test]
fn v1_connection_race_leaves_one_session_each_side() {
    common::init_log();
    for round in 0..5 {
        let (da, ea) = ChannelDispatcher::new();
        let (db, eb) = ChannelDispatcher::new();
        let a = server_with("osd.1", Policy::lossless_peer(), 0, Arc::new(da));
        let b = server_with("osd.2", Policy::lossless_peer(), 0, Arc::new(db));
        let (aa, ba) = (a.listen_addr().unwrap(), b.listen_addr().unwrap());
        let t1 = std::thread::spawn({
            let a = a.clone();
            move || {
                let c = a.connect_addr(v1(ba), EntityType::OSD).unwrap();
                for i in 0..20 {
                    c.send(msg(i, 50)).unwrap();
                }
            }
        });
        let c = b.connect_addr(v1(aa), EntityType::OSD).unwrap();
        for i in 0..20 {
            c.send(msg(i, 50)).unwrap();
        }
        t1.join().unwrap();
        assert_eq!(
            recv_messages(&ea, 20, T),
            (0..20).collect::<Vec<_>>(),
            "round {round}"
        );
        assert_eq!(
            recv_messages(&eb, 20, T),
            (0..20).collect::<Vec<_>>(),
            "round {round}"
        );
        assert_eq!(a.session_count(), 1, "round {round}");
        assert_eq!(b.session_count(), 1, "round {round}");
        a.shutdown();
        b.shutdown();
    }
}

#[test]
fn one_listener_serves_v1_and_msgr2_clients_at_once() {
    common::init_log();
    let (d, sev) = ChannelDispatcher::new();
    let srv = server_with("osd.0", Policy::stateful_server(), 0, Arc::new(d));
    let addr = srv.listen_addr().unwrap();
    // A silent peer must not stall accepts: it holds a socket open without a banner.
    let _silent = std::net::TcpStream::connect(addr).unwrap();
    let (c1, e1) = client("client.1", Policy::lossless_client());
    let (c2, e2) = client("client.2", Policy::lossless_client());
    let k1 = c1.connect_addr(v1(addr), EntityType::OSD).unwrap();
    let k2 = c2.connect(addr, EntityType::OSD).unwrap();
    for i in 0..100 {
        k1.send(msg(i, 100)).unwrap();
        k2.send(msg(1000 + i, 100)).unwrap();
    }
    assert!(wait_for(&e1, T, |e| matches!(e, Event::Connect(_))).is_some());
    assert!(wait_for(&e2, T, |e| matches!(e, Event::Connect(_))).is_some());
    let got = recv_messages(&sev, 200, T);
    let v1_got: Vec<u32> = got.iter().copied().filter(|i| *i < 1000).collect();
    let v2_got: Vec<u32> = got.iter().copied().filter(|i| *i >= 1000).collect();
    assert_eq!(v1_got, (0..100).collect::<Vec<_>>());
    assert_eq!(v2_got, (1000..1100).collect::<Vec<_>>());
    assert_eq!(srv.session_count(), 2);
    for m in [&srv, &c1, &c2] {
        m.shutdown();
    }
    // The thread waiting for the silent peer's banner ends with the messenger.
    assert!(
        srv.wait(Duration::from_secs(5)),
        "every server thread exited"
    );
}

/// Records `(sender, index)` of every message and echoes it back.
struct RecordAndEcho(Sender<(EntityName, u32)>);

impl Dispatcher for RecordAndEcho {
    fn dispatch(&self, conn: &ConnectionRef, m: Message) {
        let _ = self.0.send((m.src, index(&m)));
        let _ = conn.send(m);
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    delivered: usize,
    lost: usize,
    duplicated: usize,
    reordered: usize,
}

fn tally(sent: u32, got: &[u32]) -> Tally {
    let mut seen = vec![0u32; sent as usize];
    let mut t = Tally {
        delivered: got.len(),
        ..Tally::default()
    };
    for (k, &i) in got.iter().enumerate() {
        if let Some(c) = seen.get_mut(i as usize) {
            *c += 1;
        }
        if k > 0 && i < got[k - 1] {
            t.reordered += 1;
        }
    }
    t.lost = seen.iter().filter(|c| **c == 0).count();
    t.duplicated = seen.iter().map(|c| c.saturating_sub(1) as usize).sum();
    t
}

#[test]
fn v1_synthetic_fault_test_exactly_once_in_order() {
    common::init_log();
    const CONNS: usize = 3;
    const PER_CONN: u32 = 120;
    let budget = Duration::from_secs(20);
    let (tx, rx) = crossbeam_channel::unbounded();
    let srv = server_with(
        "osd.0",
        Policy::stateful_server(),
        30,
        Arc::new(RecordAndEcho(tx)),
    );
    let addr = srv.listen_addr().unwrap();
    let mut clients = Vec::new();
    let mut rng = SeededRng::new(0x5eed);
    let start = Instant::now();
    for c in 0..CONNS {
        let name = format!("client.{}", c + 1);
        let (mut b, ev) = {
            let (d, ev) = ChannelDispatcher::new();
            let mut b =
                Messenger::builder(name.parse().unwrap()).default_policy(Policy::lossless_client());
            b.config_mut().initial_backoff = Duration::from_millis(5);
            b.config_mut().fault.socket_failures = 30;
            b.config_mut().fault.seed = 11 + c as u64;
            (b, (d, ev))
        };
        b.config_mut().max_backoff = Duration::from_millis(200);
        let (d, ev) = ev;
        let m = b.start(Arc::new(d)).unwrap();
        let conn = m.connect_addr(v1(addr), EntityType::OSD).unwrap();
        for i in 0..PER_CONN {
            // Log-uniform sizes from 32 B to 1 MiB.
            let exp = rng.next_f64() * 15.0;
            let size = (32.0 * 2f64.powf(exp)) as usize;
            conn.send(msg(i, size.clamp(32, 1 << 20))).unwrap();
        }
        clients.push((name.parse::<EntityName>().unwrap(), m, ev));
    }
    // Collect what the server delivered (by sender) and the echoes each client got.
    let deadline = start + budget;
    let mut at_server: HashMap<EntityName, Vec<u32>> = HashMap::new();
    let want = CONNS * PER_CONN as usize;
    let mut n = 0;
    while n < want {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((src, i)) => {
                at_server.entry(src).or_default().push(i);
                n += 1;
            }
            Err(_) => break,
        }
    }
    let mut echoes: Vec<Vec<u32>> = Vec::new();
    for (_, _, ev) in &clients {
        let mut got = Vec::new();
        while got.len() < PER_CONN as usize {
            let left = deadline.saturating_duration_since(Instant::now());
            match ev.recv_timeout(left) {
                Ok(Event::Message(_, m)) => got.push(index(&m)),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        echoes.push(got);
    }
    // A short grace period catches late duplicates.
    let grace = Instant::now() + Duration::from_millis(300);
    while let Ok((src, i)) = rx.recv_timeout(grace.saturating_duration_since(Instant::now())) {
        at_server.entry(src).or_default().push(i);
    }
    let faults = srv.faults().socket_failures()
        + clients
            .iter()
            .map(|(_, m, _)| m.faults().socket_failures())
            .sum::<u64>();
    let mut ok = true;
    for (k, (name, _, _)) in clients.iter().enumerate() {
        let up = tally(PER_CONN, at_server.get(name).map_or(&[][..], |v| &v[..]));
        let down = tally(PER_CONN, &echoes[k]);
        println!("{name}: sent {PER_CONN}; to server {up:?}; echoed back {down:?}",);
        for t in [up, down] {
            ok &= t.delivered == PER_CONN as usize
                && t.lost == 0
                && t.duplicated == 0
                && t.reordered == 0;
        }
    }
    println!(
        "v1 fault test: {CONNS} connections, {} messages each way, {faults} injected socket failures, {:?}",
        want,
        start.elapsed()
    );
    assert!(
        ok,
        "every message exactly once and in order on every connection"
    );
    assert!(faults > 0, "faults were injected");
    srv.shutdown();
    for (_, m, _) in &clients {
        m.shutdown();
    }
}

/// Ceph's clients advertise the IP the server saw with port 0 and their own nonce, so
/// every client on one host shows the same address: the server must tell them apart by
/// nonce, not take the second for a restart of the first.
#[test]
fn unbound_clients_on_one_host_get_sessions_of_their_own() {
    use simplemsgr::proto::Event as ProtoEvent;
    use simplemsgr::runtime::monc::{MonClientOptions, V1Stream};
    common::init_log();
    let srv = server_with("mon.0", Policy::stateless_server(), 0, Arc::new(Echo));
    let addr = srv.listen_addr().unwrap();
    let opts = MonClientOptions::default();
    let open = |s: &mut V1Stream| {
        let end = Instant::now() + T;
        loop {
            match s.next_event(end, "handshake").unwrap() {
                ProtoEvent::Connected { .. } => return,
                _ => continue,
            }
        }
    };
    let echo = |s: &mut V1Stream, i: u32| {
        s.send(msg(i, 40));
        let end = Instant::now() + T;
        loop {
            match s.next_event(end, "echo").unwrap() {
                ProtoEvent::Message(m) => return index(&m),
                _ => continue,
            }
        }
    };
    let mut a = V1Stream::connect_to_monitor(addr, &opts).unwrap();
    open(&mut a);
    assert_eq!(echo(&mut a, 1), 1);
    let mut b = V1Stream::connect_to_monitor(addr, &opts).unwrap();
    open(&mut b);
    let (la, lb) = (a.connection().link_info(), b.connection().link_info());
    let (la, lb) = (la.unwrap(), lb.unwrap());
    // Both advertised 127.0.0.1:0 (what the server saw, port 0) with different nonces.
    let seen = |i: &simplemsgr::proto::v1::V1LinkInfo| i.addr_seen.and_then(|a| a.addr);
    assert_eq!(seen(&la).map(|a| a.ip()), seen(&lb).map(|a| a.ip()));
    assert_eq!(echo(&mut b, 2), 2);
    // The first client's session survived the second's handshake.
    assert_eq!(echo(&mut a, 3), 3);
    assert_eq!(echo(&mut b, 4), 4);
    srv.shutdown();
}
