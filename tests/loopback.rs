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
    let server = Messenger::builder("osd.0".parse().unwrap())
        .bind("127.0.0.1:0".parse().unwrap())
        .default_policy(Policy::stateful_server())
        .start(Arc::new(sd))
        .unwrap();
    let (cd, _ce) = ChannelDispatcher::new();
    let client = Messenger::builder("client.1".parse().unwrap())
        .default_policy(Policy::lossless_client())
        .start(Arc::new(cd))
        .unwrap();
    let conn = client
        .connect(server.listen_addr().unwrap(), EntityType::OSD)
        .unwrap();
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
