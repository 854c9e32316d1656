//! Proves each capability of the test relay (tests/common/relay.rs) against a tiny echo server on
//! loopback. Every wait is bounded by a socket timeout or `wait_quiet`.
#![allow(clippy::disallowed_methods)] // tests: sockets and threads are the point

#[path = "common/relay.rs"]
mod relay;

use relay::{
    Direction, DropRange, Duplicate, FlipBit, Output, Pass, Record, Relay, Split, Swap, Tamper,
};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const C2S: Direction = Direction::ClientToServer;
const S2C: Direction = Direction::ServerToClient;
const TIMEOUT: Duration = Duration::from_secs(10);

/// What the echo server does with each connection.
#[derive(Clone, Copy)]
enum Mode {
    /// Echo until EOF, then close.
    Echo,
    /// Close at once without reading.
    CloseAtOnce,
}

/// A loopback server; each connection is served on its own thread. Drop stops it.
struct EchoServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// The size of every read, per connection, in order.
    reads: Arc<Mutex<Vec<Vec<usize>>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl EchoServer {
    fn start(mode: Mode) -> EchoServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(Mutex::new(Vec::new()));
        let (stop2, reads2) = (stop.clone(), reads.clone());
        let acceptor = thread::spawn(move || {
            let mut served = Vec::new();
            for s in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut s) = s else { continue };
                let _ = s.set_read_timeout(Some(TIMEOUT));
                let idx = {
                    let mut r = reads2.lock().unwrap();
                    r.push(Vec::new());
                    r.len() - 1
                };
                let reads3 = reads2.clone();
                served.push(thread::spawn(move || {
                    if let Mode::Echo = mode {
                        let mut buf = [0u8; 4096];
                        while let Ok(n) = s.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            reads3.lock().unwrap()[idx].push(n);
                            if s.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                    let _ = s.shutdown(Shutdown::Both);
                }));
            }
            for t in served {
                let _ = t.join();
            }
        });
        EchoServer {
            addr,
            stop,
            reads,
            acceptor: Some(acceptor),
        }
    }

    fn reads(&self, conn: usize) -> Vec<usize> {
        self.reads
            .lock()
            .unwrap()
            .get(conn)
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
    s.set_read_timeout(Some(TIMEOUT)).expect("timeout");
    s.set_write_timeout(Some(TIMEOUT)).expect("timeout");
    s
}

/// Send `data` in writes of `write_size`, half-close, and read everything that comes back. The
/// reading happens on its own thread, so large echoes cannot deadlock on full socket buffers.
fn round_trip(addr: SocketAddr, data: &[u8], write_size: usize) -> Vec<u8> {
    let mut s = connect(addr);
    let mut r = s.try_clone().expect("clone");
    let reader = thread::spawn(move || {
        let mut back = Vec::new();
        r.read_to_end(&mut back).map(|_| back)
    });
    for piece in data.chunks(write_size) {
        s.write_all(piece).expect("write");
    }
    s.shutdown(Shutdown::Write).expect("half-close");
    let back = reader.join().expect("reader thread");
    back.expect("read echo (bounded by the read timeout)")
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

fn through(tamper: Box<dyn Tamper>, data: &[u8], write_size: usize) -> Vec<u8> {
    let echo = EchoServer::start(Mode::Echo);
    let relay = Relay::start(echo.addr, tamper);
    let back = round_trip(relay.addr(), data, write_size);
    assert_eq!(relay.connections(), 1);
    assert!(relay.wait_quiet(TIMEOUT), "pump threads still running");
    back
}

#[test]
fn pass_forwards_both_directions_unchanged() {
    let data = pattern(200_000);
    assert_eq!(through(Box::new(Pass), &data, 7_000), data);
}

#[test]
fn chunks_carry_contiguous_absolute_offsets() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let tamper = move |_c: usize, dir: Direction, off: u64, data: &[u8], out: &mut Output| {
        seen2.lock().unwrap().push((dir, off, data.len() as u64));
        out.send(data);
    };
    let data = pattern(50_000);
    assert_eq!(through(Box::new(tamper), &data, 1_000), data);
    for dir in [C2S, S2C] {
        let chunks: Vec<_> = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.0 == dir)
            .copied()
            .collect();
        let mut next = 0;
        for (_, off, len) in chunks {
            assert_eq!(off, next, "{dir:?}");
            next += len;
        }
        assert_eq!(next, data.len() as u64, "{dir:?}");
    }
}

#[test]
fn flip_bit_at_an_absolute_offset_in_either_direction() {
    let data = pattern(30_000);
    for (dir, offset, mask) in [
        (C2S, 0u64, 0x01u8),
        (C2S, 12_345, 0x80),
        (S2C, 29_999, 0x10),
    ] {
        let mut expected = data.clone();
        expected[offset as usize] ^= mask;
        let back = through(Box::new(FlipBit { dir, offset, mask }), &data, 1_000);
        assert_eq!(back, expected, "{dir:?} offset {offset}");
    }
}

#[test]
fn drop_range_removes_exactly_those_bytes() {
    let data = pattern(10_000);
    let back = through(
        Box::new(DropRange {
            dir: C2S,
            range: 990..3_010,
        }),
        &data,
        500,
    );
    assert_eq!(back, [&data[..990], &data[3_010..]].concat());
}

#[test]
fn duplicate_replays_a_range_later() {
    let data = pattern(10_000);
    let back = through(Box::new(Duplicate::new(C2S, 100..300, 5_000)), &data, 700);
    assert_eq!(
        back,
        [&data[..5_000], &data[100..300], &data[5_000..]].concat()
    );
    // Inserting at the very end happens at EOF.
    let back = through(Box::new(Duplicate::new(S2C, 0..10, 10_000)), &data, 700);
    assert_eq!(back, [&data[..], &data[..10]].concat());
}

#[test]
fn swap_exchanges_two_ranges() {
    let data = pattern(10_000);
    let back = through(Box::new(Swap::new(C2S, 10..20, 4_000..4_100)), &data, 333);
    let expected = [
        &data[..10],
        &data[4_000..4_100],
        &data[20..4_000],
        &data[10..20],
        &data[4_100..],
    ]
    .concat();
    assert_eq!(back, expected);
}

#[test]
fn split_sends_small_segments_the_peer_sees_separately() {
    let echo = EchoServer::start(Mode::Echo);
    let split = Split {
        dir: Some(C2S),
        max: 7,
        gap: Duration::from_millis(3),
    };
    let relay = Relay::start(echo.addr, Box::new(split));
    let data = pattern(200);
    assert_eq!(round_trip(relay.addr(), &data, 200), data);
    let sizes = relay.write_sizes(0, C2S);
    assert!(sizes.iter().all(|n| *n <= 7), "{sizes:?}");
    assert_eq!(sizes.iter().sum::<usize>(), 200);
    assert!(sizes.len() >= 200 / 7, "{sizes:?}");
    // With TCP_NODELAY and a pause between pieces, the server's reads are many, not one.
    let reads = echo.reads(0);
    assert_eq!(reads.iter().sum::<usize>(), 200);
    assert!(
        reads.len() > 1,
        "the server read everything at once: {reads:?}"
    );
    assert!(relay.wait_quiet(TIMEOUT));
}

#[test]
fn record_keeps_every_byte_for_replay_into_another_connection() {
    let echo = EchoServer::start(Mode::Echo);
    let (rec, recording) = Record::new(Box::new(Pass));
    let relay = Relay::start(echo.addr, Box::new(rec));
    let data = pattern(20_000);
    assert_eq!(round_trip(relay.addr(), &data, 3_000), data);
    assert!(relay.wait_quiet(TIMEOUT));
    let c2s = recording.bytes(0, C2S);
    assert_eq!(c2s, data);
    assert_eq!(recording.bytes(0, S2C), data);
    // Replay what the client sent into a new connection, straight to the server and via the relay.
    assert_eq!(round_trip(echo.addr, &c2s, 20_000), data);
    assert_eq!(round_trip(relay.addr(), &c2s, 20_000), data);
    assert_eq!(recording.bytes(1, C2S), data);
}

#[test]
fn pumps_exit_when_the_client_closes() {
    let echo = EchoServer::start(Mode::Echo);
    let relay = Relay::start(echo.addr, Box::new(Pass));
    let mut s = connect(relay.addr());
    s.write_all(b"abc").expect("write");
    let mut buf = [0u8; 3];
    s.read_exact(&mut buf).expect("echo");
    assert_eq!(&buf, b"abc");
    drop(s);
    assert!(
        relay.wait_quiet(TIMEOUT),
        "pumps still running after the client closed"
    );
}

#[test]
fn pumps_exit_when_the_server_closes_even_if_the_client_stays() {
    let server = EchoServer::start(Mode::CloseAtOnce);
    let relay = Relay::start_with_linger(server.addr, Box::new(Pass), Duration::from_millis(200));
    let mut s = connect(relay.addr());
    let mut buf = [0u8; 1];
    let n = s.read(&mut buf).expect("EOF, not a timeout");
    assert_eq!(n, 0);
    // The client keeps its socket open; the relay still ends both pumps after the linger.
    assert!(
        relay.wait_quiet(TIMEOUT),
        "pumps still running after the server closed"
    );
    drop(s);
}

#[test]
fn an_unreachable_target_closes_the_client() {
    let dead = TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_addr = dead.local_addr().expect("addr");
    drop(dead);
    let relay = Relay::start(dead_addr, Box::new(Pass));
    let mut s = connect(relay.addr());
    let mut buf = [0u8; 1];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("read {n} bytes from a relay with no target"),
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "timed out: {e}"
        ),
    }
    assert_eq!(relay.connections(), 0);
}

#[test]
fn drop_stops_everything() {
    let echo = EchoServer::start(Mode::Echo);
    let relay = Relay::start(echo.addr, Box::new(Pass));
    let addr = relay.addr();
    let mut s = connect(addr);
    s.write_all(b"x").expect("write");
    let mut buf = [0u8; 1];
    s.read_exact(&mut buf).expect("echo");
    let started = Instant::now();
    drop(relay); // joins the acceptor and both pumps of the open connection
    assert!(started.elapsed() < TIMEOUT);
    match s.read(&mut buf) {
        Ok(n) => assert_eq!(n, 0),
        Err(e) => assert!(
            !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "the relayed connection stayed open: {e}"
        ),
    }
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "still listening"
    );
}
