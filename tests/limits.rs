//! Resource limits and graceful refusal (project issue 7), over real loopback sockets:
//! the connection cap (incoming and outgoing), the per-IP limit, and stalled
//! half-open handshakes (slowloris) that must not lock a legitimate client out.
//! Every wait is bounded.
#![allow(clippy::disallowed_methods)]

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use simplemsgr::proto::Policy;
use simplemsgr::runtime::{ChannelDispatcher, Config, Event, Messenger};
use simplemsgr::wire::types::EntityType;

use common::{msg, recv_messages, Echo};

const T: Duration = Duration::from_secs(10);

/// The msgr2 banner without its final newline: a slowloris peer sends it byte by byte.
const BANNER_PREFIX: &[u8] = b"ceph v2";

fn echo_server(cfg: Config) -> Messenger {
    Messenger::builder("osd.0".parse().unwrap())
        .config(cfg)
        .bind("127.0.0.1:0".parse().unwrap())
        .default_policy(Policy::stateless_server())
        .start(Arc::new(Echo))
        .unwrap()
}

fn client(i: u64) -> (Messenger, Receiver<Event>) {
    let (d, ev) = ChannelDispatcher::new();
    let m = Messenger::builder(format!("client.{i}").parse().unwrap())
        .default_policy(Policy::lossless_client())
        .start(Arc::new(d))
        .unwrap();
    (m, ev)
}

/// Poll `cond` every 10 ms until it holds or `timeout` passes.
fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What a raw socket sees within `wait`: `Some(0)` = closed by the server (refused),
/// `Some(n)` = the server spoke (its banner), `None` = still open and silent.
fn probe(s: &mut TcpStream, wait: Duration) -> Option<usize> {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(n) => Some(n),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        Err(_) => Some(0), // reset: refused as well
    }
}

/// True if the server closes `s` (EOF or reset) within `wait`; whatever it sent first
/// (its banner) is skipped.
fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    let end = Instant::now() + wait;
    let mut b = [0u8; 256];
    for _ in 0..1000 {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        s.set_read_timeout(Some(left)).unwrap();
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
    false
}

fn raw_from(src: [u8; 4], to: SocketAddr) -> TcpStream {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.bind(&SocketAddr::from((src, 0)).into()).unwrap();
    sock.connect_timeout(&to.into(), Duration::from_secs(2))
        .unwrap();
    sock.into()
}

#[test]
fn over_the_cap_is_refused_and_established_connections_keep_echoing() {
    common::init_log();
    const CAP: usize = 20;
    let srv = echo_server(Config {
        max_connections: Some(CAP),
        ..Config::default()
    });
    assert_eq!(srv.limits().max_connections, CAP);
    assert!(srv.limits().configured);
    let addr = srv.listen_addr().unwrap();
    let mut clients = Vec::new();
    for i in 0..CAP as u64 {
        let (m, ev) = client(i + 1);
        let c = m.connect(addr, EntityType::OSD).unwrap();
        c.send(msg(i as u32, 32)).unwrap();
        assert_eq!(recv_messages(&ev, 1, T), vec![i as u32]);
        clients.push((m, ev, c));
    }
    assert_eq!(srv.live_connections(), CAP);
    assert_eq!(srv.stats().open, CAP as u64);

    // 30 more raw connections: each is closed at once, before any banner.
    let threads_before = srv.stats().threads;
    let mut extra: Vec<TcpStream> = (0..30)
        .map(|_| TcpStream::connect_timeout(&addr, T).unwrap())
        .collect();
    for s in &mut extra {
        assert_eq!(
            probe(s, T),
            Some(0),
            "an over-cap connection must be closed"
        );
    }
    // One more messenger client: refused too, it keeps retrying in the background.
    let (d, _late_ev) = ChannelDispatcher::new();
    let late = Messenger::builder("client.999".parse().unwrap())
        .config(Config {
            max_backoff: Duration::from_secs(1),
            ..Config::default()
        })
        .default_policy(Policy::lossless_client())
        .start(Arc::new(d))
        .unwrap();
    let lc = late.connect(addr, EntityType::OSD).unwrap();
    lc.send(msg(999, 8)).unwrap();
    assert!(eventually(T, || srv.stats().refused[0].1 >= 31));
    assert!(!lc.is_connected());
    let st = srv.stats();
    assert_eq!(st.refused[0].0.name(), "max_connections");
    assert_eq!(st.open, CAP as u64);
    assert!(
        st.threads <= threads_before,
        "refusals must not start threads"
    );

    // The established ones still exchange messages.
    for (i, (_, ev, c)) in clients.iter().enumerate() {
        c.send(msg(1000 + i as u32, 64)).unwrap();
        assert_eq!(recv_messages(ev, 1, T), vec![1000 + i as u32]);
    }
    // One leaves; the late client gets its place on its next retry.
    let (m0, _, c0) = clients.remove(0);
    c0.mark_down();
    m0.shutdown();
    assert!(eventually(Duration::from_secs(20), || lc.is_connected()));
    for (m, _, _) in clients {
        m.shutdown();
    }
    late.shutdown();
    srv.shutdown();
}

#[test]
fn connect_over_the_cap_returns_a_clear_error() {
    common::init_log();
    let servers: Vec<Messenger> = (0..3).map(|_| echo_server(Config::default())).collect();
    let (d, ev) = ChannelDispatcher::new();
    let cli = Messenger::builder("client.7".parse().unwrap())
        .config(Config {
            max_connections: Some(2),
            ..Config::default()
        })
        .default_policy(Policy::lossless_client())
        .start(Arc::new(d))
        .unwrap();
    let a: Vec<SocketAddr> = servers.iter().map(|s| s.listen_addr().unwrap()).collect();
    let c0 = cli.connect(a[0], EntityType::OSD).unwrap();
    let c1 = cli.connect(a[1], EntityType::OSD).unwrap();
    // Connecting again to a known peer is not a new connection.
    assert_eq!(cli.connect(a[0], EntityType::OSD).unwrap(), c0);
    let err = cli.connect(a[2], EntityType::OSD).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("local limit reached: 2 connections (ms_max_connections = 2"),
        "{text}"
    );
    assert!(text.contains(&a[2].to_string()), "{text}");
    assert_eq!(cli.stats().refused[0].1, 1);
    // Both sessions work.
    c0.send(msg(1, 8)).unwrap();
    c1.send(msg(2, 8)).unwrap();
    let mut got = recv_messages(&ev, 2, T);
    got.sort_unstable();
    assert_eq!(got, vec![1, 2]);
    // Closing one frees its slot once its thread is gone.
    c1.mark_down();
    assert!(eventually(T, || cli.live_connections() == 1));
    let c2 = cli.connect(a[2], EntityType::OSD).unwrap();
    c2.send(msg(3, 8)).unwrap();
    assert_eq!(recv_messages(&ev, 1, T), vec![3]);
    cli.shutdown();
    for s in servers {
        s.shutdown();
    }
}

#[test]
fn per_ip_limit_refuses_only_that_ip() {
    common::init_log();
    let srv = echo_server(Config {
        max_connections_per_ip: 3,
        ..Config::default()
    });
    let addr = srv.listen_addr().unwrap();
    let mut held: Vec<TcpStream> = (0..3).map(|_| raw_from([127, 0, 0, 1], addr)).collect();
    for s in &mut held {
        assert_ne!(probe(s, Duration::from_millis(300)), Some(0));
    }
    let mut fourth = raw_from([127, 0, 0, 1], addr);
    assert_eq!(probe(&mut fourth, T), Some(0));
    let mut other = raw_from([127, 0, 0, 2], addr);
    assert_ne!(probe(&mut other, Duration::from_millis(300)), Some(0));
    let st = srv.stats();
    assert_eq!(
        (st.refused[2].0.name(), st.refused[2].1, st.refused_total()),
        ("per_ip_limit", 1, 1)
    );
    // One of the three leaves: its IP may connect again.
    drop(held.pop());
    assert!(eventually(T, || srv.live_connections() == 3));
    let mut again = raw_from([127, 0, 0, 1], addr);
    assert_ne!(probe(&mut again, Duration::from_millis(300)), Some(0));
    srv.shutdown();
}

#[test]
fn stalled_handshakes_do_not_lock_out_a_legitimate_client() {
    common::init_log();
    const STALLED: usize = 500;
    const MAX_HS: usize = 64;
    let timeout = Duration::from_secs(2);
    let srv = echo_server(Config {
        handshake_timeout: timeout,
        max_handshaking: MAX_HS,
        // Deadlines alone here (eviction is the next test's subject).
        handshake_evict_after: Duration::ZERO,
        ..Config::default()
    });
    let addr = srv.listen_addr().unwrap();
    let base_threads = srv.stats().threads;
    // 500 half-open peers: half send nothing, half one byte now and then (slowloris).
    let t0 = Instant::now();
    let mut stalled: Vec<TcpStream> = (0..STALLED)
        .map(|_| TcpStream::connect_timeout(&addr, T).unwrap())
        .collect();
    for s in stalled.iter_mut().skip(1).step_by(2) {
        let _ = s.write_all(&BANNER_PREFIX[..1]);
    }
    assert!(eventually(T, || srv.stats().handshaking == MAX_HS as u64
        && srv.stats().refused[1].1 == (STALLED - MAX_HS) as u64));
    assert!(srv.stats().threads <= base_threads + 2 * MAX_HS as u64);

    // The legitimate client, while the stalled ones fill the handshake slots.
    let (cli, ev) = client(1);
    let started = Instant::now();
    let c = cli.connect(addr, EntityType::OSD).unwrap();
    c.send(msg(42, 100)).unwrap();
    // Keep the slowloris ones dribbling while we wait.
    let deadline = started + Duration::from_secs(12);
    let mut got = None;
    let mut dribble = 0;
    while got.is_none() && Instant::now() < deadline {
        if let Ok(Event::Message(_, m)) = ev.recv_timeout(Duration::from_millis(500)) {
            got = Some(common::index(&m));
        }
        // The next byte of a valid banner, never its end: the handshake stalls.
        dribble += 1;
        if let Some(b) = BANNER_PREFIX.get(dribble) {
            for s in stalled.iter_mut().skip(1).step_by(2).take(MAX_HS) {
                let _ = s.write_all(&[*b]);
            }
        }
    }
    let took = started.elapsed();
    assert_eq!(got, Some(42), "no echo after {took:?} ({dribble} dribbles)");
    // The stalled handshakes die at their deadline (plus the timer's granularity), so
    // the legitimate client waits at most about one handshake timeout plus a backoff.
    assert!(
        took < timeout + Duration::from_secs(5),
        "legit client took {took:?}"
    );
    // Every admitted stalled handshake was cut by the deadline and its threads exited.
    assert!(eventually(T, || srv.stats().refused[3].1 >= MAX_HS as u64));
    assert!(eventually(T, || srv.stats().handshaking == 0));
    assert!(
        eventually(T, || srv.stats().threads <= base_threads + 2),
        "threads left: {} (base {base_threads})",
        srv.stats().threads
    );
    // The first stalled socket (admitted) was closed by the server after the deadline.
    assert!(closed_within(&mut stalled[0], T));
    assert!(t0.elapsed() >= timeout);
    // And the legitimate client keeps working.
    c.send(msg(43, 100)).unwrap();
    assert_eq!(recv_messages(&ev, 1, T), vec![43]);
    cli.shutdown();
    srv.shutdown();
}

/// Slowloris that reopens every connection the moment it is cut: with the handshake
/// deadline at 60 s, only eviction (`ms_handshake_evict_after`) lets a legitimate client
/// in. Bounded: the attacker runs until the test ends or 20 s pass.
#[test]
fn a_persistent_slowloris_is_evicted_for_a_legitimate_client() {
    use std::sync::atomic::{AtomicBool, Ordering};
    common::init_log();
    const MAX_HS: usize = 8;
    let srv = echo_server(Config {
        handshake_timeout: Duration::from_secs(60),
        max_handshaking: MAX_HS,
        handshake_evict_after: Duration::from_millis(300),
        ..Config::default()
    });
    let addr = srv.listen_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = (0..MAX_HS)
                .map(|_| TcpStream::connect_timeout(&addr, T).unwrap())
                .collect();
            let mut reopened = 0u64;
            let end = Instant::now() + Duration::from_secs(20);
            while !stop.load(Ordering::Acquire) && Instant::now() < end {
                for s in held.iter_mut() {
                    // Cut (EOF or reset): take the slot again at once.
                    if probe(s, Duration::from_millis(1)).is_some() {
                        if let Ok(n) = TcpStream::connect_timeout(&addr, T) {
                            *s = n;
                            reopened += 1;
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            reopened
        })
    };
    assert!(eventually(T, || srv.stats().handshaking == MAX_HS as u64));
    // Let the attacker's handshakes age past the eviction bound.
    std::thread::sleep(Duration::from_millis(400));
    let (cli, ev) = client(1);
    let started = Instant::now();
    let c = cli.connect(addr, EntityType::OSD).unwrap();
    c.send(msg(42, 100)).unwrap();
    let got = recv_messages(&ev, 1, Duration::from_secs(8));
    let took = started.elapsed();
    assert_eq!(got, vec![42], "no echo after {took:?} with the table held");
    let evicted = |s: &simplemsgr::runtime::StatsSnapshot| {
        s.refused
            .iter()
            .find(|(r, _)| r.name() == "handshake_evicted")
            .map_or(0, |(_, n)| *n)
    };
    assert!(evicted(&srv.stats()) >= 1);
    // The attacker keeps reopening; the established client keeps working.
    std::thread::sleep(Duration::from_millis(400));
    c.send(msg(43, 100)).unwrap();
    assert_eq!(recv_messages(&ev, 1, T), vec![43]);
    stop.store(true, Ordering::Release);
    let reopened = attacker.join().unwrap();
    assert!(reopened >= 1, "the attacker never saw a cut");
    cli.shutdown();
    srv.shutdown();
}

#[test]
fn serve_prints_limits_and_stats_and_echoes() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_simplemsgr"))
        .args([
            "-q",
            "-o",
            "ms_max_connections=5",
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--duration-secs",
            "20",
            "--stats-interval",
            "0.2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = crossbeam_channel::unbounded::<String>();
    let out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines().take(10_000) {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = || rx.recv_timeout(T).expect("serve printed nothing in time");
    let first = next();
    let addr: SocketAddr = first
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no address in {first:?}"));
    assert!(first.contains("(msgr2"), "{first}");
    let limits = next();
    assert!(
        limits.starts_with("max connections 5 (configured ms_max_connections"),
        "{limits}"
    );
    let mut header = Vec::new();
    for _ in 0..20 {
        let l = next();
        if l.contains("connection cap") {
            header.push(l);
            break;
        }
        header.push(l);
    }
    assert!(header.iter().any(|l| l.contains("bound by")), "{header:?}");
    let (cli, ev) = client(5);
    let c = cli.connect(addr, EntityType::OSD).unwrap();
    c.send(msg(7, 300)).unwrap();
    assert_eq!(recv_messages(&ev, 1, T), vec![7]);
    // A stats line that counts our connection and the echoed message.
    let mut seen = None;
    let end = Instant::now() + T;
    while seen.is_none() && Instant::now() < end {
        let l = next();
        if l.contains("1 live / cap 5") && l.contains("conns 1 open") && l.contains("in 1 msgs") {
            seen = Some(l);
        }
    }
    assert!(seen.is_some(), "no stats line with the connection");
    cli.shutdown();
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();
}

/// Many clients whose connect attempt failed at the same instant do not retry in
/// lock-step: each delay is the backoff shortened by a random fraction of up to
/// `backoff_jitter`; with no jitter they all retry at the same instant.
#[test]
fn reconnect_delays_are_jittered() {
    use simplemsgr::crypto::SeededRng;
    use simplemsgr::proto::{Connection, Error as ProtoError, ProtoConfig};
    use simplemsgr::wire::types::{AddrType, AddrVec, EntityAddr};
    let delays = |jitter: f64| -> Vec<Duration> {
        let now = Instant::now();
        let mut cfg = ProtoConfig::new("client.1".parse().unwrap(), AddrVec::default());
        cfg.backoff_jitter = jitter;
        cfg.policies.default = Policy::lossless_client();
        let cfg = Arc::new(cfg);
        let peer = EntityAddr::new(AddrType::MSGR2, "127.0.0.1:1".parse().unwrap(), 0);
        (0..200u64)
            .map(|seed| {
                let mut c = Connection::outgoing(
                    cfg.clone(),
                    Box::new(SeededRng::new(seed)),
                    peer,
                    EntityType::OSD,
                    now,
                );
                c.start_link(1, now);
                c.link_failed(1, ProtoError::Transport("refused".into()), now);
                c.poll_timeout().expect("a reconnect is scheduled") - now
            })
            .collect()
    };
    let initial = Duration::from_millis(200);
    let d = delays(0.2);
    assert!(
        d.iter()
            .all(|d| *d <= initial && *d >= initial.mul_f64(0.8)),
        "{d:?}"
    );
    let (min, max) = (d.iter().min().unwrap(), d.iter().max().unwrap());
    assert!(
        *max - *min >= Duration::from_millis(30),
        "spread {min:?}..{max:?}"
    );
    let distinct: std::collections::HashSet<_> = d.iter().collect();
    assert!(
        distinct.len() >= 150,
        "only {} distinct delays",
        distinct.len()
    );
    assert!(delays(0.0).iter().all(|d| *d == initial));
}

/// A message whose data section is above this messenger's `ms_max_data_len` is refused
/// by `send` with an error that names the section, the length and the option; the
/// connection goes on carrying messages within the limit.
#[test]
fn send_refuses_a_message_above_our_limits_with_a_clear_error() {
    common::init_log();
    let srv = echo_server(Config::default());
    let mut b =
        Messenger::builder("client.9".parse().unwrap()).default_policy(Policy::lossless_client());
    b.config_mut().set("ms_max_data_len", "64K").unwrap();
    let (d, events) = ChannelDispatcher::new();
    let cli = b.start(Arc::new(d)).unwrap();
    let conn = cli
        .connect(srv.listen_addr().unwrap(), EntityType::OSD)
        .unwrap();
    let err = conn
        .send(msg(0, 10).with_data(vec![1u8; 100_000]))
        .unwrap_err();
    assert!(
        matches!(
            err,
            simplemsgr::runtime::Error::TooLarge {
                section: "data",
                len: 100_000,
                limit: 65_536
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("ms_max_data_len") && text.contains("100000"),
        "{text}"
    );
    conn.send(msg(1, 10).with_data(vec![1u8; 65_536])).unwrap();
    assert_eq!(recv_messages(&events, 1, Duration::from_secs(10)), vec![1]);
    cli.shutdown();
    srv.shutdown();
}
