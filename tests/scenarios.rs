//! Ceph's test_msgr scenarios over real loopback sockets (messenger-anchors §2.3):
//! feature mismatch, idle timeout, stateful and stateless servers, standby
//! clients, connection races, reconnects with messages in flight, and mark_down
//! from inside dispatch. Every wait is bounded.
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use simplemsgr::proto::Policy;
use simplemsgr::runtime::{ChannelDispatcher, ConnectionRef, Dispatcher, Event, Messenger};
use simplemsgr::wire::message::Message;
use simplemsgr::wire::types::EntityType;

use common::{index, msg, recv_messages, wait_for, Echo};

fn server(policy: Policy) -> (Messenger, crossbeam_channel::Receiver<Event>) {
    let (d, ev) = ChannelDispatcher::new();
    let m = Messenger::builder("osd.0".parse().unwrap())
        .bind("127.0.0.1:0".parse().unwrap())
        .default_policy(policy)
        .start(Arc::new(d))
        .unwrap();
    (m, ev)
}

fn client(policy: Policy) -> (Messenger, crossbeam_channel::Receiver<Event>) {
    let (d, ev) = ChannelDispatcher::new();
    let m = Messenger::builder("client.1".parse().unwrap())
        .default_policy(policy)
        .start(Arc::new(d))
        .unwrap();
    (m, ev)
}

const T: Duration = Duration::from_secs(10);

#[test]
fn feature_mismatch_is_refused_without_retry() {
    common::init_log();
    let (d, _sev) = ChannelDispatcher::new();
    let srv = Messenger::builder("osd.0".parse().unwrap())
        .bind("127.0.0.1:0".parse().unwrap())
        .features(u64::MAX, 1 << 13)
        .start(Arc::new(d))
        .unwrap();
    let (d, cev) = ChannelDispatcher::new();
    let cli = Messenger::builder("client.1".parse().unwrap())
        .features(!(1 << 13), 0)
        .default_policy(Policy::lossless_client())
        .start(Arc::new(d))
        .unwrap();
    let conn = cli
        .connect(srv.listen_addr().unwrap(), EntityType::OSD)
        .unwrap();
    conn.send(msg(0, 10)).unwrap();
    let ev = wait_for(&cev, T, |e| matches!(e, Event::Refused(..))).expect("refused");
    let Event::Refused(_, text) = ev else {
        unreachable!()
    };
    assert!(text.contains("missing required features 0x2000"), "{text}");
    assert!(!conn.is_connected());
    // Adding the feature makes it work.
    let (d, cev2) = ChannelDispatcher::new();
    let cli2 = Messenger::builder("client.2".parse().unwrap())
        .start(Arc::new(d))
        .unwrap();
    let c2 = cli2
        .connect(srv.listen_addr().unwrap(), EntityType::OSD)
        .unwrap();
    assert!(wait_for(&cev2, T, |e| matches!(e, Event::Connect(_))).is_some());
    assert!(c2.is_connected());
    for m in [&srv, &cli, &cli2] {
        m.shutdown();
    }
}

#[test]
fn idle_connection_times_out() {
    common::init_log();
    let (d, _sev) = ChannelDispatcher::new();
    let mut b = Messenger::builder("osd.0".parse().unwrap()).bind("127.0.0.1:0".parse().unwrap());
    b.config_mut().keepalive_interval = Duration::ZERO;
    let srv = b
        .default_policy(Policy::stateless_server())
        .start(Arc::new(d))
        .unwrap();
    let (d, cev) = ChannelDispatcher::new();
    let mut b =
        Messenger::builder("client.1".parse().unwrap()).default_policy(Policy::lossy_client());
    b.config_mut().keepalive_interval = Duration::ZERO;
    b.config_mut().idle_timeout = Duration::from_millis(800);
    let cli = b.start(Arc::new(d)).unwrap();
    let conn = cli
        .connect(srv.listen_addr().unwrap(), EntityType::OSD)
        .unwrap();
    assert!(wait_for(&cev, T, |e| matches!(e, Event::Connect(_))).is_some());
    let t0 = Instant::now();
    assert!(
        wait_for(&cev, T, |e| matches!(e, Event::Reset(_))).is_some(),
        "idle lossy connection reset"
    );
    assert!(t0.elapsed() >= Duration::from_millis(500));
    assert!(!conn.is_connected());
    srv.shutdown();
    cli.shutdown();
}

#[test]
fn stateful_server_keeps_the_session_and_client_sees_remote_reset() {
    common::init_log();
    let (srv, sev) = server(Policy::stateful_server());
    let (cli, cev) = client(Policy::lossless_client());
    let conn = cli
        .connect(srv.listen_addr().unwrap(), EntityType::OSD)
        .unwrap();
    conn.send(msg(0, 10)).unwrap();
    assert_eq!(recv_messages(&sev, 1, T), vec![0]);
    wait_until(T, || conn.unacked() == 0);
    let sconn = server_conn(&srv);
    // The server marks the session down: the client reconnects and learns of the reset.
    sconn.mark_down();
    // Message 1 may leave on the dying link: its fate is then unknown, and the remote
    // reset reports it (Ceph's contract). What is sent after the reset arrives.
    conn.send(msg(1, 10)).unwrap();
    assert!(
        wait_for(&cev, T, |e| matches!(e, Event::RemoteReset(_))).is_some(),
        "client sees the remote reset"
    );
    conn.send(msg(2, 10)).unwrap();
    let got = recv_messages(&sev, 1, T);
    let got = if got == vec![1] {
        recv_messages(&sev, 1, T)
    } else {
        got
    };
    assert_eq!(got, vec![2]);
    assert_eq!(srv.session_count(), 1);
    srv.shutdown();
    cli.shutdown();
}

fn wait_until(timeout: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "condition not reached in {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn server_conn(m: &Messenger) -> ConnectionRef {
    m.sessions().into_iter().next().expect("a session")
}

#[test]
fn stateless_server_forgets_and_lossy_client_resets() {
    common::init_log();
    let (srv, sev) = server(Policy::stateless_server());
    let (cli, cev) = client(Policy::lossy_client());
    let conn = cli
        .connect(srv.listen_addr().unwrap(), EntityType::OSD)
        .unwrap();
    conn.send(msg(0, 10)).unwrap();
    assert_eq!(recv_messages(&sev, 1, T), vec![0]);
    server_conn(&srv).mark_down();
    assert!(wait_for(&cev, T, |e| matches!(e, Event::Reset(_))).is_some());
    assert!(
        conn.send(msg(1, 1)).is_err(),
        "a reset lossy session refuses sends"
    );
    // A new connection works.
    let conn2 = cli
        .connect(srv.listen_addr().unwrap(), EntityType::OSD)
        .unwrap();
    assert_ne!(conn2, conn);
    conn2.send(msg(2, 10)).unwrap();
    assert_eq!(recv_messages(&sev, 1, T), vec![2]);
    srv.shutdown();
    cli.shutdown();
}

#[test]
fn standby_client_reuses_its_connection() {
    common::init_log();
    let (srv, sev) = server(Policy::stateful_server());
    let (cli, cev) = client(Policy::lossless_peer());
    let conn = cli
        .connect(srv.listen_addr().unwrap(), EntityType::OSD)
        .unwrap();
    conn.send(msg(0, 10)).unwrap();
    assert_eq!(recv_messages(&sev, 1, T), vec![0]);
    assert!(wait_for(&cev, T, |e| matches!(e, Event::Connect(_))).is_some());
    wait_until(T, || conn.unacked() == 0);
    server_conn(&srv).mark_down();
    // Idle lossless_peer goes to standby rather than reconnecting.
    let deadline = Instant::now() + T;
    while conn.state() != simplemsgr::proto::msgr2::State::Standby && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(conn.state(), simplemsgr::proto::msgr2::State::Standby);
    // The same handle reconnects on the next send.
    conn.send(msg(1, 10)).unwrap();
    assert!(wait_for(&cev, T, |e| matches!(e, Event::RemoteReset(_))).is_some());
    assert_eq!(recv_messages(&sev, 1, T), vec![1]);
    srv.shutdown();
    cli.shutdown();
}

#[test]
fn connection_race_leaves_one_session_each_side() {
    common::init_log();
    for round in 0..5 {
        let (da, ea) = ChannelDispatcher::new();
        let (db, eb) = ChannelDispatcher::new();
        let a = Messenger::builder("osd.1".parse().unwrap())
            .bind("127.0.0.1:0".parse().unwrap())
            .default_policy(Policy::lossless_peer())
            .start(Arc::new(da))
            .unwrap();
        let b = Messenger::builder("osd.2".parse().unwrap())
            .bind("127.0.0.1:0".parse().unwrap())
            .default_policy(Policy::lossless_peer())
            .start(Arc::new(db))
            .unwrap();
        let (aa, ba) = (a.listen_addr().unwrap(), b.listen_addr().unwrap());
        let t1 = std::thread::spawn({
            let a = a.clone();
            move || {
                let c = a.connect(ba, EntityType::OSD).unwrap();
                for i in 0..20 {
                    c.send(msg(i, 50)).unwrap();
                }
            }
        });
        let c = b.connect(aa, EntityType::OSD).unwrap();
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

/// A stateful server whose reads fail about 1 in `failures` (fault seed `seed`) and a
/// lossless client connected to it that reconnects after 5 ms; both offer `features`.
/// Returns the server, its events, the client and the connection.
fn faulty_server_pair(
    failures: u64,
    seed: u64,
    features: u64,
) -> (
    Messenger,
    crossbeam_channel::Receiver<Event>,
    Messenger,
    ConnectionRef,
) {
    let (d, sev) = ChannelDispatcher::new();
    let mut b = Messenger::builder("osd.0".parse().unwrap())
        .bind("127.0.0.1:0".parse().unwrap())
        .default_policy(Policy::stateful_server())
        .protocol_features(features);
    b.config_mut().fault.socket_failures = failures;
    b.config_mut().fault.seed = seed;
    let srv = b.start(Arc::new(d)).unwrap();
    let mut b = Messenger::builder("client.1".parse().unwrap())
        .default_policy(Policy::lossless_client())
        .protocol_features(features);
    b.config_mut().initial_backoff = Duration::from_millis(5);
    let (d, _cev) = ChannelDispatcher::new();
    let cli = b.start(Arc::new(d)).unwrap();
    let conn = cli
        .connect(srv.listen_addr().unwrap(), EntityType::OSD)
        .unwrap();
    (srv, sev, cli, conn)
}

#[test]
fn reconnect_with_messages_in_flight_loses_nothing() {
    common::init_log();
    // The server's reads fail about 1 in 20: the client reconnects and replays.
    let (srv, sev, cli, conn) = faulty_server_pair(20, 7, 0);
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

/// Marks the *other* connection down from inside dispatch, holding a user lock.
struct MarkOther {
    others: Mutex<Vec<ConnectionRef>>,
    count: AtomicUsize,
}

impl Dispatcher for MarkOther {
    fn dispatch(&self, conn: &ConnectionRef, m: Message) {
        let others = self.others.lock();
        for o in others.iter() {
            if o != conn {
                o.mark_down();
            }
        }
        drop(others);
        self.count.fetch_add(1, Ordering::SeqCst);
        let _ = conn.send(m);
    }
}

#[test]
fn mark_down_inside_dispatch_does_not_deadlock() {
    common::init_log();
    let (s1, _) = server(Policy::stateless_server());
    let (s2, _) = server(Policy::stateless_server());
    let md = Arc::new(MarkOther {
        others: Mutex::new(Vec::new()),
        count: AtomicUsize::new(0),
    });
    let cli = Messenger::builder("client.1".parse().unwrap())
        .default_policy(Policy::lossy_client())
        .start(md.clone())
        .unwrap();
    // Both servers echo.
    let e1 = Messenger::builder("osd.1".parse().unwrap())
        .bind("127.0.0.1:0".parse().unwrap())
        .default_policy(Policy::stateless_server())
        .start(Arc::new(Echo))
        .unwrap();
    let e2 = Messenger::builder("osd.2".parse().unwrap())
        .bind("127.0.0.1:0".parse().unwrap())
        .default_policy(Policy::stateless_server())
        .start(Arc::new(Echo))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    for i in 0..200 {
        let c1 = cli
            .connect(e1.listen_addr().unwrap(), EntityType::OSD)
            .unwrap();
        let c2 = cli
            .connect(e2.listen_addr().unwrap(), EntityType::OSD)
            .unwrap();
        *md.others.lock() = vec![c1.clone(), c2.clone()];
        let before = md.count.load(Ordering::SeqCst);
        let _ = c1.send(msg(i, 10));
        let _ = c2.send(msg(i, 10));
        while md.count.load(Ordering::SeqCst) == before {
            assert!(
                Instant::now() < deadline,
                "no progress at iteration {i}: deadlock?"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    for m in [&s1, &s2, &cli, &e1, &e2] {
        m.shutdown();
    }
}

#[test]
fn loopback_messages_in_order_from_many_threads() {
    common::init_log();
    let (srv, sev) = server(Policy::stateful_server());
    let (cli, _cev) = client(Policy::lossless_client());
    let conn = cli
        .connect(srv.listen_addr().unwrap(), EntityType::OSD)
        .unwrap();
    // One sender thread per priority class; per-sender FIFO must hold.
    let mut hs = Vec::new();
    for t in 0..4u32 {
        let c = conn.clone();
        hs.push(std::thread::spawn(move || {
            for i in 0..500u32 {
                c.send(msg(t * 10_000 + i, 40)).unwrap();
            }
        }));
    }
    for h in hs {
        h.join().unwrap();
    }
    let got = recv_messages(&sev, 2000, T);
    for t in 0..4u32 {
        let mine: Vec<u32> = got.iter().copied().filter(|g| g / 10_000 == t).collect();
        assert_eq!(mine, (0..500).map(|i| t * 10_000 + i).collect::<Vec<_>>());
    }
    let _ = index;
    srv.shutdown();
    cli.shutdown();
}

#[test]
fn loopback_connection_delivers_locally_in_order() {
    common::init_log();
    let (d, ev) = ChannelDispatcher::new();
    let m = Messenger::builder("osd.7".parse().unwrap())
        .start(Arc::new(d))
        .unwrap();
    let me = m.loopback().unwrap();
    assert_eq!(m.loopback().unwrap(), me, "one loopback connection");
    assert!(me.is_connected());
    for i in 0..100 {
        me.send(msg(i, 20)).unwrap();
    }
    assert_eq!(recv_messages(&ev, 100, T), (0..100).collect::<Vec<_>>());
    me.mark_down();
    assert!(me.send(msg(0, 1)).is_err());
    m.shutdown();
    assert!(
        m.wait(Duration::from_secs(5)),
        "the local delivery thread ends"
    );
}

#[test]
fn a_departed_clients_standby_session_expires() {
    common::init_log();
    let (d, sev) = ChannelDispatcher::new();
    let mut b = Messenger::builder("osd.0".parse().unwrap())
        .bind("127.0.0.1:0".parse().unwrap())
        .default_policy(Policy::stateful_server());
    b.config_mut().standby_timeout = Duration::from_millis(500);
    let srv = b.start(Arc::new(d)).unwrap();
    let (cli, _cev) = client(Policy::lossless_client());
    let conn = cli
        .connect(srv.listen_addr().unwrap(), EntityType::OSD)
        .unwrap();
    conn.send(msg(0, 10)).unwrap();
    assert_eq!(recv_messages(&sev, 1, T), vec![0]);
    assert_eq!(srv.session_count(), 1);
    let threads_with_client = srv.stats().threads;
    // The client goes away for good: the server's session waits in standby, then
    // expires (a reset), releasing its writer thread and its connection slot.
    cli.shutdown();
    assert!(
        wait_for(&sev, T, |e| matches!(e, Event::Reset(_))).is_some(),
        "the standby session expired"
    );
    wait_until(T, || {
        srv.session_count() == 0 && srv.live_connections() == 0
    });
    wait_until(T, || srv.stats().threads < threads_with_client);
    srv.shutdown();
}

#[test]
fn a_chunked_message_can_be_aborted_without_closing_the_connection() {
    use simplemsgr::proto::msgr2::AbortOutcome;
    use simplemsgr::wire::msgr2::PROTO_FEATURE_STRUCTURED;
    common::init_log();
    let (d, sev) = ChannelDispatcher::new();
    let srv = Messenger::builder("osd.0".parse().unwrap())
        .bind("127.0.0.1:0".parse().unwrap())
        .default_policy(Policy::stateful_server())
        .protocol_features(PROTO_FEATURE_STRUCTURED)
        .start(Arc::new(d))
        .unwrap();
    let (cd, cev) = ChannelDispatcher::new();
    let cli = Messenger::builder("client.1".parse().unwrap())
        .default_policy(Policy::lossless_client())
        .protocol_features(PROTO_FEATURE_STRUCTURED)
        .chunk_size(16 * 1024)
        .start(Arc::new(cd))
        .unwrap();
    let conn = cli
        .connect(srv.listen_addr().unwrap(), EntityType::OSD)
        .unwrap();
    assert!(wait_for(&cev, T, |e| matches!(e, Event::Connect(_))).is_some());
    // 64 MiB in 16 KiB chunks: still in flight when the abort comes.
    let big = Message::new(0x6000, vec![1u8; 16])
        .with_data(vec![7u8; 64 << 20])
        .with_tid(99);
    conn.send(big).unwrap();
    let outcome = conn.abort_send(99, 125, "cancelled by the test");
    assert!(
        matches!(outcome, AbortOutcome::Aborted | AbortOutcome::Dequeued),
        "{outcome:?}"
    );
    assert_eq!(conn.abort_send(99, 125, "again"), AbortOutcome::NotFound);
    conn.send(msg(1, 10)).unwrap();
    let got = recv_messages(&sev, 1, T);
    assert_eq!(
        got,
        vec![1],
        "the small message arrives; the aborted one never does"
    );
    assert!(conn.is_connected(), "the connection stays open");
    assert!(wait_for(&sev, Duration::from_millis(300), |e| matches!(
        e,
        Event::Message(..)
    ))
    .is_none());
    cli.shutdown();
    srv.shutdown();
}

/// Big chunked messages (structured data on both sides, data sections from 64 KiB to
/// 3 MiB, so both the heap and the mapped reassembly buffers are used) cross a link
/// whose server reads fail about 1 in 100: transfers cut in mid-message are discarded
/// and resent after the reconnect, and every message arrives exactly once, byte for
/// byte, in the order §7.6 defines.
#[test]
fn chunked_messages_survive_socket_failures_intact_and_in_order() {
    use simplemsgr::wire::msgr2::PROTO_FEATURE_STRUCTURED;
    common::init_log();
    let (srv, sev, cli, conn) = faulty_server_pair(100, 11, PROTO_FEATURE_STRUCTURED);
    let sizes: [usize; 7] = [(3 << 20) + 5, 0, 1 << 20, 65_537, (1 << 20) - 1, 0, 2 << 20];
    let data = |i: usize| -> Vec<u8> {
        (0..sizes[i])
            .map(|j| (j.wrapping_mul(29) ^ i) as u8)
            .collect()
    };
    for i in 0..sizes.len() {
        conn.send(msg(i as u32, 40).with_data(data(i))).unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    while got.len() < sizes.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match sev.recv_timeout(left) {
            Ok(Event::Message(_, m)) => {
                let i = index(&m) as usize;
                assert_eq!(m.data.len(), sizes[i], "message {i}'s length");
                assert!(m.data[..] == data(i)[..], "message {i} arrived altered");
                got.push(i);
            }
            Ok(_) => {}
            Err(e) => panic!("only {got:?} arrived: {e}"),
        }
    }
    // Delivery order is completion order (docs/PROTOCOL.md §7.6): small messages may
    // overtake a chunked one, but the chunked ones (one in flight at a time) keep their
    // order among themselves, and so do the others.
    let chunked = |i: &usize| sizes[*i] > 64 * 1024;
    let mut all = got.clone();
    all.sort_unstable();
    assert_eq!(all, (0..sizes.len()).collect::<Vec<_>>(), "exactly once");
    let big: Vec<usize> = got.iter().copied().filter(chunked).collect();
    assert_eq!(big, [0, 2, 3, 4, 6]);
    let small: Vec<usize> = got.iter().copied().filter(|i| !chunked(i)).collect();
    assert_eq!(small, [1, 5]);
    assert!(srv.faults().socket_failures() > 0, "faults were injected");
    srv.shutdown();
    cli.shutdown();
}

/// `ms_crc_data=false` on either side or both: messages (small ones and a chunked 2 MiB
/// one) cross in both directions intact. The option only stops checking; plain frames
/// still carry their CRCs (docs/PROTOCOL.md §6.1). Before, a side with the option off
/// sent plain MSGs without CRCs and its peer closed every connection over them.
#[test]
fn crc_checking_off_on_either_side_still_talks() {
    use simplemsgr::wire::msgr2::PROTO_FEATURE_STRUCTURED;
    common::init_log();
    let data: Vec<u8> = (0..(2u32 << 20)).map(|i| (i % 241) as u8).collect();
    for (client_checks, server_checks) in [(false, false), (false, true), (true, false)] {
        let mut b = Messenger::builder("osd.0".parse().unwrap())
            .bind("127.0.0.1:0".parse().unwrap())
            .default_policy(Policy::stateful_server())
            .protocol_features(PROTO_FEATURE_STRUCTURED);
        b.config_mut()
            .set("ms_crc_data", if server_checks { "true" } else { "false" })
            .unwrap();
        let srv = b.start(Arc::new(Echo)).unwrap();
        let mut b = Messenger::builder("client.1".parse().unwrap())
            .default_policy(Policy::lossless_client())
            .protocol_features(PROTO_FEATURE_STRUCTURED);
        b.config_mut()
            .set("ms_crc_data", if client_checks { "true" } else { "false" })
            .unwrap();
        let (d, cev) = ChannelDispatcher::new();
        let cli = b.start(Arc::new(d)).unwrap();
        let conn = cli
            .connect(srv.listen_addr().unwrap(), EntityType::OSD)
            .unwrap();
        for i in 0..10 {
            conn.send(msg(i, 100)).unwrap();
        }
        conn.send(msg(10, 40).with_data(data.clone())).unwrap();
        let deadline = Instant::now() + T;
        let mut got = Vec::new();
        while got.len() < 11 {
            let left = deadline.saturating_duration_since(Instant::now());
            match cev.recv_timeout(left) {
                Ok(Event::Message(_, m)) => {
                    if index(&m) == 10 {
                        assert!(m.data[..] == data[..], "the chunked echo arrived altered");
                    }
                    got.push(index(&m));
                }
                Ok(_) => {}
                Err(e) => panic!(
                    "client checks {client_checks}, server checks {server_checks}: \
                     only {got:?} came back: {e}"
                ),
            }
        }
        got.sort_unstable();
        assert_eq!(got, (0..11).collect::<Vec<_>>());
        cli.shutdown();
        srv.shutdown();
    }
}
