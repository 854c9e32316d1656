//! A man-in-the-middle TCP relay for tests (loopback only, std::net and threads only).
//!
//! ```text
//!   client ──▶ Relay (127.0.0.1:0) ──Tamper(ClientToServer)──▶ target
//!   client ◀── Relay ◀──Tamper(ServerToClient)────────────── target
//! ```
//!
//! Each accepted connection gets its own connection to `target` and two pump threads, one per
//! direction. A pump reads a chunk, hands it to the [`Tamper`] with the chunk's absolute offset in
//! that direction's stream, and writes whatever the tamper produced, one `write_all` per [`Piece`]
//! (both sockets have TCP_NODELAY, so small pieces really leave as small segments).
//!
//! Closing is bounded: when one side closes (EOF), the relay flushes, passes the half-close on
//! (`shutdown(Write)`), and gives the other direction [`DEFAULT_LINGER`] (or the linger given to
//! [`Relay::start_with_linger`]) to finish before it shuts both sockets down. A write error (the
//! destination hung up) stops that direction and gives the other one the same linger, so bytes a
//! side sent just before hanging up still arrive, as over a direct TCP connection. A read error
//! shuts both sockets at once. Dropping the [`Relay`] stops the acceptor, shuts every socket and
//! joins every thread.
//!
//! Ready-made tampers: [`Pass`], [`FlipBit`], [`DropRange`], [`Duplicate`], [`Swap`], [`Split`],
//! [`Record`] (wraps another tamper and keeps every byte read, per connection and direction), and
//! any closure `FnMut(usize, Direction, u64, &[u8], &mut Output)`.
#![allow(dead_code)]
#![allow(clippy::disallowed_methods)] // test helper: sockets, threads and sleeps are the point

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long a connection may stay half-open after one side's EOF before the relay closes it.
pub const DEFAULT_LINGER: Duration = Duration::from_secs(2);
/// How long the relay waits for `target` to accept.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes read per chunk.
const READ_CHUNK: usize = 64 * 1024;

/// Which way bytes flow through the relay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// From the connecting client to the target.
    ClientToServer,
    /// From the target back to the client.
    ServerToClient,
}

/// One write the relay performs, optionally after a pause.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Piece {
    /// Pause before writing (lets the peer see the previous piece as its own segment).
    pub delay: Duration,
    /// The bytes to write.
    pub bytes: Vec<u8>,
}

/// What a tamper wants written, in order.
#[derive(Debug, Default)]
pub struct Output {
    pieces: Vec<Piece>,
}

impl Output {
    /// Write `bytes` (an empty slice writes nothing).
    pub fn send(&mut self, bytes: impl Into<Vec<u8>>) {
        self.send_after(Duration::ZERO, bytes);
    }

    /// Write `bytes` after pausing for `delay`.
    pub fn send_after(&mut self, delay: Duration, bytes: impl Into<Vec<u8>>) {
        let bytes = bytes.into();
        if !bytes.is_empty() {
            self.pieces.push(Piece { delay, bytes });
        }
    }

    /// The pieces so far.
    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }
}

/// Decides what the relay forwards. One instance serves every connection and both directions
/// (behind a mutex), so stateful tampers key their state by connection id.
pub trait Tamper: Send {
    /// `data` was read from `dir`'s source on connection `conn` (numbered from 0 in accept
    /// order); its first byte is at absolute `offset` in that direction's stream. Put what to
    /// forward into `out`.
    fn chunk(&mut self, conn: usize, dir: Direction, offset: u64, data: &[u8], out: &mut Output);

    /// `dir`'s source reached EOF (or failed): flush anything held back into `out`.
    fn eof(&mut self, conn: usize, dir: Direction, out: &mut Output) {
        let _ = (conn, dir, out);
    }
}

impl<F> Tamper for F
where
    F: FnMut(usize, Direction, u64, &[u8], &mut Output) + Send,
{
    fn chunk(&mut self, conn: usize, dir: Direction, offset: u64, data: &[u8], out: &mut Output) {
        self(conn, dir, offset, data, out)
    }
}

/// Forward everything unchanged.
pub struct Pass;

impl Tamper for Pass {
    fn chunk(&mut self, _: usize, _: Direction, _: u64, data: &[u8], out: &mut Output) {
        out.send(data);
    }
}

/// XOR the byte at absolute `offset` of `dir` with `mask` (on every connection).
pub struct FlipBit {
    /// The direction to tamper with.
    pub dir: Direction,
    /// Absolute stream offset of the byte.
    pub offset: u64,
    /// Bits to flip.
    pub mask: u8,
}

impl Tamper for FlipBit {
    fn chunk(&mut self, _: usize, dir: Direction, offset: u64, data: &[u8], out: &mut Output) {
        let mut data = data.to_vec();
        if dir == self.dir && (offset..offset + data.len() as u64).contains(&self.offset) {
            data[(self.offset - offset) as usize] ^= self.mask;
        }
        out.send(data);
    }
}

/// Drop the bytes at absolute offsets `range` of `dir`.
pub struct DropRange {
    /// The direction to tamper with.
    pub dir: Direction,
    /// Absolute stream offsets to drop.
    pub range: Range<u64>,
}

impl Tamper for DropRange {
    fn chunk(&mut self, _: usize, dir: Direction, offset: u64, data: &[u8], out: &mut Output) {
        if dir != self.dir {
            return out.send(data);
        }
        let kept: Vec<u8> = (offset..)
            .zip(data)
            .filter(|(o, _)| !self.range.contains(o))
            .map(|(_, b)| *b)
            .collect();
        out.send(kept);
    }
}

/// Replay the bytes at `range` of `dir` a second time, inserted just before absolute offset `at`
/// (`at >= range.end`; `at` equal to the stream's length inserts them at EOF).
pub struct Duplicate {
    /// The direction to tamper with.
    pub dir: Direction,
    /// The bytes to copy.
    pub range: Range<u64>,
    /// Where the copy goes.
    pub at: u64,
    state: HashMap<usize, (Vec<u8>, bool, u64)>,
}

impl Duplicate {
    /// Copy `range` of `dir` and insert it before offset `at`.
    pub fn new(dir: Direction, range: Range<u64>, at: u64) -> Self {
        assert!(at >= range.end, "the copy must come after the original");
        Duplicate {
            dir,
            range,
            at,
            state: HashMap::new(),
        }
    }
}

impl Tamper for Duplicate {
    fn chunk(&mut self, conn: usize, dir: Direction, offset: u64, data: &[u8], out: &mut Output) {
        if dir != self.dir {
            return out.send(data);
        }
        let (saved, inserted, pos) = self.state.entry(conn).or_default();
        let mut bytes = Vec::with_capacity(data.len());
        for (o, b) in (offset..).zip(data) {
            if o == self.at && !*inserted {
                bytes.extend_from_slice(saved);
                *inserted = true;
            }
            if self.range.contains(&o) {
                saved.push(*b);
            }
            bytes.push(*b);
        }
        *pos = offset + data.len() as u64;
        out.send(bytes);
    }

    fn eof(&mut self, conn: usize, dir: Direction, out: &mut Output) {
        if let Some((saved, inserted, pos)) = self.state.get_mut(&conn).filter(|_| dir == self.dir)
        {
            if !*inserted && *pos == self.at {
                *inserted = true;
                out.send(saved.clone());
            }
        }
    }
}

/// Exchange the bytes at `first` and `second` of `dir` (`first.end <= second.start`). Bytes from
/// `first.start` are held back until `second.end` has been read; at EOF anything held is flushed
/// unchanged.
pub struct Swap {
    /// The direction to tamper with.
    pub dir: Direction,
    /// The earlier range.
    pub first: Range<u64>,
    /// The later range.
    pub second: Range<u64>,
    held: HashMap<usize, Vec<u8>>,
}

impl Swap {
    /// Swap `first` and `second` of `dir`.
    pub fn new(dir: Direction, first: Range<u64>, second: Range<u64>) -> Self {
        assert!(first.end <= second.start && !first.is_empty() && !second.is_empty());
        Swap {
            dir,
            first,
            second,
            held: HashMap::new(),
        }
    }
}

impl Tamper for Swap {
    fn chunk(&mut self, conn: usize, dir: Direction, offset: u64, data: &[u8], out: &mut Output) {
        if dir != self.dir {
            return out.send(data);
        }
        let held = self.held.entry(conn).or_default();
        let mut bytes = Vec::with_capacity(data.len());
        for (o, b) in (offset..).zip(data) {
            if (self.first.start..self.second.end).contains(&o) {
                held.push(*b);
                if o + 1 == self.second.end {
                    let a = (self.first.end - self.first.start) as usize;
                    let mid = (self.second.start - self.first.start) as usize;
                    bytes.extend_from_slice(&held[mid..]);
                    bytes.extend_from_slice(&held[a..mid]);
                    bytes.extend_from_slice(&held[..a]);
                    held.clear();
                }
            } else {
                bytes.push(*b);
            }
        }
        out.send(bytes);
    }

    fn eof(&mut self, conn: usize, dir: Direction, out: &mut Output) {
        if dir == self.dir {
            if let Some(held) = self.held.remove(&conn) {
                out.send(held);
            }
        }
    }
}

/// Forward `dir` (or both directions if `None`) in writes of at most `max` bytes, pausing `gap`
/// before every piece after the first so the peer's reads see them separately.
pub struct Split {
    /// The direction to split, or both.
    pub dir: Option<Direction>,
    /// Largest write, at least 1.
    pub max: usize,
    /// Pause between pieces.
    pub gap: Duration,
}

impl Tamper for Split {
    fn chunk(&mut self, _: usize, dir: Direction, _: u64, data: &[u8], out: &mut Output) {
        if self.dir.is_some_and(|d| d != dir) {
            return out.send(data);
        }
        for (i, piece) in data.chunks(self.max.max(1)).enumerate() {
            let delay = if i == 0 { Duration::ZERO } else { self.gap };
            out.send_after(delay, piece);
        }
    }
}

/// Bytes read, per (connection, direction).
type Streams = BTreeMap<(usize, Direction), Vec<u8>>;

/// Everything a [`Record`] saw, shared with the test.
#[derive(Clone, Default)]
pub struct Recording {
    bytes: Arc<Mutex<Streams>>,
}

impl Recording {
    /// The bytes read from `dir`'s source on connection `conn`, before tampering.
    pub fn bytes(&self, conn: usize, dir: Direction) -> Vec<u8> {
        lock(&self.bytes)
            .get(&(conn, dir))
            .cloned()
            .unwrap_or_default()
    }
}

/// Record every byte read (per connection and direction), then let `inner` decide what to send.
pub struct Record {
    inner: Box<dyn Tamper>,
    recording: Recording,
}

impl Record {
    /// A recorder around `inner`, and the handle to read the recording with.
    pub fn new(inner: Box<dyn Tamper>) -> (Record, Recording) {
        let recording = Recording::default();
        (
            Record {
                inner,
                recording: recording.clone(),
            },
            recording,
        )
    }
}

impl Tamper for Record {
    fn chunk(&mut self, conn: usize, dir: Direction, offset: u64, data: &[u8], out: &mut Output) {
        lock(&self.recording.bytes)
            .entry((conn, dir))
            .or_default()
            .extend_from_slice(data);
        self.inner.chunk(conn, dir, offset, data, out);
    }

    fn eof(&mut self, conn: usize, dir: Direction, out: &mut Output) {
        self.inner.eof(conn, dir, out);
    }
}

/// Lock, ignoring poisoning (a panicking tamper must not wedge the relay's shutdown).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The two sockets of one relayed connection and how many of its pumps have finished.
struct Conn {
    client: TcpStream,
    server: TcpStream,
    finished: Mutex<u8>,
    cv: Condvar,
}

impl Conn {
    fn shutdown_all(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
    }
}

struct Shared {
    target: SocketAddr,
    linger: Duration,
    stop: AtomicBool,
    tamper: Mutex<Box<dyn Tamper>>,
    conns: Mutex<Vec<Arc<Conn>>>,
    pumps: Mutex<Vec<JoinHandle<()>>>,
    accepted: AtomicUsize,
    active: Mutex<usize>,
    idle: Condvar,
    writes: Mutex<Vec<(usize, Direction, usize)>>,
}

/// A running relay. Drop stops it.
pub struct Relay {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Relay {
    /// Listen on 127.0.0.1:0 and relay every accepted connection to `target` through `tamper`.
    pub fn start(target: SocketAddr, tamper: Box<dyn Tamper>) -> Relay {
        Relay::start_with_linger(target, tamper, DEFAULT_LINGER)
    }

    /// Like [`Relay::start`], with the time a half-closed connection may stay open.
    pub fn start_with_linger(
        target: SocketAddr,
        tamper: Box<dyn Tamper>,
        linger: Duration,
    ) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("relay: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("relay: local_addr");
        let shared = Arc::new(Shared {
            target,
            linger,
            stop: AtomicBool::new(false),
            tamper: Mutex::new(tamper),
            conns: Mutex::new(Vec::new()),
            pumps: Mutex::new(Vec::new()),
            accepted: AtomicUsize::new(0),
            active: Mutex::new(0),
            idle: Condvar::new(),
            writes: Mutex::new(Vec::new()),
        });
        let sh = shared.clone();
        let acceptor = thread::Builder::new()
            .name("relay-accept".into())
            .spawn(move || accept_loop(listener, sh))
            .expect("relay: spawn acceptor");
        Relay {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted and relayed so far.
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Sizes of the writes the relay made on connection `conn` in direction `dir`, in order.
    pub fn write_sizes(&self, conn: usize, dir: Direction) -> Vec<usize> {
        lock(&self.shared.writes)
            .iter()
            .filter(|(c, d, _)| *c == conn && *d == dir)
            .map(|(_, _, n)| *n)
            .collect()
    }

    /// Wait up to `timeout` until no pump thread is running; true if that happened.
    pub fn wait_quiet(&self, timeout: Duration) -> bool {
        let guard = lock(&self.shared.active);
        let (guard, _) = self
            .shared
            .idle
            .wait_timeout_while(guard, timeout, |n| *n > 0)
            .unwrap_or_else(|e| e.into_inner());
        *guard == 0
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocked accept() with a connection of our own; it sees `stop` and returns.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        for c in lock(&self.shared.conns).iter() {
            c.shutdown_all();
        }
        let pumps = std::mem::take(&mut *lock(&self.shared.pumps));
        for p in pumps {
            let _ = p.join();
        }
    }
}

fn accept_loop(listener: TcpListener, sh: Arc<Shared>) {
    for incoming in listener.incoming() {
        if sh.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = incoming else { continue };
        let Ok(server) = TcpStream::connect_timeout(&sh.target, CONNECT_TIMEOUT) else {
            continue; // dropping `client` closes it: the target is unreachable
        };
        let clones = (client.try_clone(), server.try_clone());
        let (Ok(client2), Ok(server2)) = clones else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let id = sh.accepted.fetch_add(1, Ordering::SeqCst);
        let conn = Arc::new(Conn {
            client,
            server,
            finished: Mutex::new(0),
            cv: Condvar::new(),
        });
        lock(&sh.conns).push(conn.clone());
        *lock(&sh.active) += 2;
        for (dir, src, dst) in [
            (Direction::ClientToServer, client2, conn.server.try_clone()),
            (Direction::ServerToClient, server2, conn.client.try_clone()),
        ] {
            let (sh2, conn2) = (sh.clone(), conn.clone());
            let spawned = dst.and_then(|dst| {
                thread::Builder::new()
                    .name(format!("relay-{id}-{dir:?}"))
                    .spawn(move || pump(sh2, conn2, id, dir, src, dst))
            });
            match spawned {
                Ok(h) => lock(&sh.pumps).push(h),
                Err(_) => {
                    conn.shutdown_all();
                    pump_finished(&sh);
                }
            }
        }
    }
}

fn pump_finished(sh: &Shared) {
    let mut active = lock(&sh.active);
    *active = active.saturating_sub(1);
    sh.idle.notify_all();
}

fn write_pieces(
    sh: &Shared,
    id: usize,
    dir: Direction,
    dst: &mut TcpStream,
    out: Output,
) -> io::Result<()> {
    for piece in out.pieces {
        if sh.stop.load(Ordering::SeqCst) {
            return Err(io::ErrorKind::Interrupted.into());
        }
        if !piece.delay.is_zero() {
            thread::sleep(piece.delay);
        }
        dst.write_all(&piece.bytes)?;
        lock(&sh.writes).push((id, dir, piece.bytes.len()));
    }
    Ok(())
}

fn pump(
    sh: Arc<Shared>,
    conn: Arc<Conn>,
    id: usize,
    dir: Direction,
    mut src: TcpStream,
    mut dst: TcpStream,
) {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut offset = 0u64;
    let mut write_failed = false;
    let clean_eof = loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break false,
        };
        let mut out = Output::default();
        lock(&sh.tamper).chunk(id, dir, offset, &buf[..n], &mut out);
        offset += n as u64;
        if write_pieces(&sh, id, dir, &mut dst, out).is_err() {
            write_failed = true;
            break false;
        }
    };
    let mut out = Output::default();
    lock(&sh.tamper).eof(id, dir, &mut out);
    let flushed = !write_failed && write_pieces(&sh, id, dir, &mut dst, out).is_ok();

    let mut finished = lock(&conn.finished);
    *finished += 1;
    conn.cv.notify_all();
    // A clean EOF, or `dst` refusing our writes (it hung up): like TCP, the other
    // direction still delivers what its source already sent (a farewell such as a CLOSE
    // written just before the hang-up), within `linger`. A read error cuts both at once.
    if ((clean_eof && flushed) || write_failed) && !sh.stop.load(Ordering::SeqCst) {
        if write_failed {
            let _ = src.shutdown(Shutdown::Read);
        } else {
            // Pass the half-close on, then give the other direction `linger` to finish.
            let _ = dst.shutdown(Shutdown::Write);
        }
        let deadline = Instant::now() + sh.linger;
        while *finished < 2 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            finished = conn
                .cv
                .wait_timeout(finished, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
    let both_done = *finished >= 2;
    drop(finished);
    if !both_done {
        conn.shutdown_all();
    } else {
        let _ = src.shutdown(Shutdown::Both);
        let _ = dst.shutdown(Shutdown::Both);
    }
    pump_finished(&sh);
}
