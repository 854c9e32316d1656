//! Messenger integration tests over real loopback sockets (Ceph's test_msgr
//! scenarios, docs: messenger-anchors §2.3 T2–T13). Every wait is bounded.
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use simplemsgr::proto::Policy;
use simplemsgr::runtime::{ChannelDispatcher, Event, Messenger};
use simplemsgr::wire::message::Message;
use simplemsgr::wire::types::EntityType;

use common::{msg, recv_messages, wait_for, Echo};

#[test]
fn round_trip_and_mark_down() {
    common::init_log();
    let server = Messenger::builder("osd.0".parse().unwrap())
        .bind("127.0.0.1:0".parse().unwrap())
        .default_policy(Policy::stateless_server())
        .start(Arc::new(Echo))
        .unwrap();
    let (d, events) = ChannelDispatcher::new();
    let client = Messenger::builder("client.1".parse().unwrap())
        .default_policy(Policy::lossy_client())
        .start(Arc::new(d))
        .unwrap();
    let conn = client
        .connect(server.listen_addr().unwrap(), EntityType::OSD)
        .unwrap();
    for i in 0..100 {
        conn.send(msg(i, 100)).unwrap();
    }
    let got = recv_messages(&events, 100, Duration::from_secs(10));
    assert_eq!(got, (0..100).collect::<Vec<_>>());
    assert!(conn.is_connected());
    // Connecting again returns the same session.
    let again = client
        .connect(server.listen_addr().unwrap(), EntityType::OSD)
        .unwrap();
    assert_eq!(again, conn);
    conn.mark_down();
    assert!(!conn.is_connected());
    assert!(conn.send(msg(0, 1)).is_err());
    client.shutdown();
    server.shutdown();
    assert!(client.wait(Duration::from_secs(5)));
    assert!(server.wait(Duration::from_secs(5)));
}

#[test]
fn dead_server_is_a_reset_for_a_lossy_client() {
    common::init_log();
    // Bind a port, then close it so nobody listens there.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (d, events) = ChannelDispatcher::new();
    let client = Messenger::builder("client.1".parse().unwrap())
        .default_policy(Policy::lossy_client())
        .start(Arc::new(d))
        .unwrap();
    let conn = client.connect(addr, EntityType::OSD).unwrap();
    // The connect may already have failed and reset the session: then send refuses.
    let _ = conn.send(msg(0, 10));
    let ev = wait_for(&events, Duration::from_secs(10), |e| {
        matches!(e, Event::Reset(_))
    });
    assert!(
        ev.is_some(),
        "a lossy connection to a dead server reports a reset"
    );
    assert!(!conn.is_connected());
    client.shutdown();
}

#[test]
fn large_messages_arrive_intact() {
    common::init_log();
    let (sd, sevents) = ChannelDispatcher::new();
    let (server, client, conn, _ce) = lossless_pair(Arc::new(sd));
    let front: Vec<u8> = (0..780_000u32).map(|i| (i % 253) as u8).collect();
    let data: Vec<u8> = (0..(4u32 << 20))
        .map(|i| (i.wrapping_mul(31) % 251) as u8)
        .collect();
    let m = Message::new(0x4001, front.clone()).with_data(data.clone());
    conn.send(m).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let got = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match sevents.recv_timeout(left) {
            Ok(Event::Message(_, m)) => break m,
            Ok(_) => continue,
            Err(e) => panic!("no message: {e}"),
        }
    };
    assert_eq!(&got.front[..], &front[..]);
    assert_eq!(&got.data[..], &data[..]);
    client.shutdown();
    server.shutdown();
}

/// A message nobody answers is still acknowledged within about `ack_delay` (2 ms):
/// the reader wakes the parked writer for the delayed ACK when the dispatcher sent no
/// reply to carry it (the writer otherwise sleeps up to a second).
#[test]
fn unanswered_message_is_acknowledged_promptly() {
    common::init_log();
    let (sd, server_events) = ChannelDispatcher::new();
    let (server, client, conn, _events) = lossless_pair(Arc::new(sd));
    // Warm up: connected, and the server's writer has parked since.
    conn.send(msg(0, 10)).unwrap();
    assert_eq!(
        recv_messages(&server_events, 1, Duration::from_secs(10)),
        [0]
    );
    assert!(poll_until(Duration::from_secs(10), || conn.unacked() == 0));
    std::thread::sleep(Duration::from_millis(50));
    let mut slowest = Duration::ZERO;
    for i in 1..=5 {
        let sent = Instant::now();
        conn.send(msg(i, 10)).unwrap();
        assert_eq!(
            recv_messages(&server_events, 1, Duration::from_secs(10)),
            [i]
        );
        assert!(
            poll_until(Duration::from_secs(10), || conn.unacked() == 0),
            "message {i} never acknowledged"
        );
        slowest = slowest.max(sent.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    // The writer's own wake-up comes after up to 1 s; a prompt ACK takes milliseconds
    // (generous bound for a loaded CI machine).
    assert!(
        slowest < Duration::from_millis(500),
        "slowest acknowledgement took {slowest:?}"
    );
    client.shutdown();
    server.shutdown();
}

/// Poll `f` every millisecond until it holds or `timeout` passes.
fn poll_until(timeout: Duration, f: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    f()
}

/// Replies sent from inside dispatch callbacks (a burst of requests, so not written
/// inline one by one) leave promptly: the reader writes them after its batch, or wakes
/// the parked writer; nothing waits for the writer's own wake-up (up to a second).
#[test]
fn replies_from_dispatch_callbacks_leave_promptly() {
    common::init_log();
    let (server, client, conn, events) = lossless_pair(Arc::new(Echo));
    conn.send(msg(0, 10)).unwrap();
    assert_eq!(recv_messages(&events, 1, Duration::from_secs(10)), [0]);
    let mut slowest = Duration::ZERO;
    for round in 0..4u32 {
        // Let both writers park, then a burst.
        std::thread::sleep(Duration::from_millis(30));
        let start = Instant::now();
        let first = 1 + round * 50;
        for i in first..first + 50 {
            conn.send(msg(i, 100)).unwrap();
        }
        let got = recv_messages(&events, 50, Duration::from_secs(10));
        assert_eq!(got, (first..first + 50).collect::<Vec<_>>());
        slowest = slowest.max(start.elapsed());
    }
    assert!(
        slowest < Duration::from_millis(500),
        "slowest burst of 50 echoes took {slowest:?}"
    );
    client.shutdown();
    server.shutdown();
}

/// A `stateful_server` messenger with dispatcher `server`, a `lossless_client` one
/// dispatching into a channel, and the client's session to the server.
fn lossless_pair(
    server: Arc<dyn simplemsgr::runtime::Dispatcher>,
) -> (
    Messenger,
    Messenger,
    simplemsgr::runtime::ConnectionRef,
    crossbeam_channel::Receiver<Event>,
) {
    let server = Messenger::builder("osd.0".parse().unwrap())
        .bind("127.0.0.1:0".parse().unwrap())
        .default_policy(Policy::stateful_server())
        .start(server)
        .unwrap();
    let (d, events) = ChannelDispatcher::new();
    let client = Messenger::builder("client.1".parse().unwrap())
        .default_policy(Policy::lossless_client())
        .start(Arc::new(d))
        .unwrap();
    let conn = client
        .connect(server.listen_addr().unwrap(), EntityType::OSD)
        .unwrap();
    (server, client, conn, events)
}
