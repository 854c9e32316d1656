//! The raw TCP baseline: the fastest honest way to move the same messages over the same
//! loopback sockets, with no protocol at all. It is the yardstick the messenger is
//! measured against, so it batches writes (`BufWriter`, vectored writes for large
//! payloads), acknowledges in batches, and sets TCP_NODELAY like the messenger does.
//!
//! Wire format (not Ceph's; only `simplemsgr serve` and `bench` speak it):
//!
//! ```text
//! client hello (12 bytes): "SMRB" | mode u8 (1 = ack, 2 = echo) | 3 zero bytes | le32 ack_every
//! then frames:             le32 length (1..=64 MiB) | payload
//! ack mode, server → client: le64 cumulative count of frames received, sent whenever
//!                          the server's read buffer runs dry or ack_every frames arrived
//! echo mode, server → client: every frame sent back unchanged
//! ```
//!
//! Threads: per client connection one writer and one reader thread; the server uses one
//! thread per connection (it only reads and writes small acks, or echoes in lockstep).

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use simplemsgr::runtime::transport::{self, write_all_vectored, Transport};
use simplemsgr::runtime::{Config, ResourceLimits};

use super::{BenchTarget, Histogram, Mode, Progress, RunResult, Workload, MAX_BENCH_SIZE};

/// First four bytes of the client hello.
pub const HELLO_MAGIC: [u8; 4] = *b"SMRB";
/// Hello mode: the server acknowledges frames.
pub const MODE_ACK: u8 = 1;
/// Hello mode: the server echoes frames.
pub const MODE_ECHO: u8 = 2;
const HELLO_LEN: usize = 12;
/// Socket-side buffer of each reader and writer.
const IO_BUF: usize = 256 << 10;
/// Payloads at least this large skip the write buffer (one vectored write instead of a copy).
const DIRECT_WRITE: usize = IO_BUF;
/// Throughput mode records the latency of one message in this many.
const SAMPLE_EVERY: u64 = 16;
/// How often blocked client readers look at the stop conditions.
const POLL: Duration = Duration::from_millis(100);
/// A run that is this much past its duration cap is declared stuck.
const STUCK_AFTER: Duration = Duration::from_secs(15);
/// Connect timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Stack of each benchmark thread.
const STACK: usize = 256 << 10;

/// The in-process (or `simplemsgr serve`) raw TCP server.
#[derive(Debug)]
pub struct RawServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl RawServer {
    /// Listen on `addr` and serve every connection on its own thread.
    pub fn bind(addr: SocketAddr, cfg: &Config) -> io::Result<Self> {
        let listener = transport::bind_listener(addr, cfg)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let cfg = cfg.clone();
        let acceptor = thread::Builder::new()
            .name("raw-accept".into())
            .stack_size(STACK)
            .spawn(move || accept_loop(listener, &stop2, &cfg))?;
        Ok(RawServer {
            addr,
            stop,
            acceptor: Some(acceptor),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.acceptor.take() {
            // Wake the blocking accept with a throwaway connection.
            let mut wake = self.addr;
            if wake.ip().is_unspecified() {
                wake.set_ip(if wake.is_ipv4() {
                    [127, 0, 0, 1].into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                });
            }
            if TcpStream::connect_timeout(&wake, Duration::from_secs(1)).is_ok() {
                let _ = h.join();
            }
        }
    }
}

fn accept_loop(listener: TcpListener, stop: &AtomicBool, cfg: &Config) {
    // One thread per connection: cap them like the messenger would.
    let cap = cfg
        .max_connections
        .unwrap_or_else(|| ResourceLimits::read(STACK).derived_cap);
    let live = Arc::new(AtomicUsize::new(0));
    let mut failures = 0u32;
    for conn in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        match conn {
            Ok(s) => {
                failures = 0;
                let peer = s.peer_addr().map(|a| a.to_string()).unwrap_or_default();
                if live.load(Ordering::SeqCst) >= cap {
                    log::warn!(
                        "raw server: refusing {peer}: {cap} connections open (ms_max_connections)"
                    );
                    continue;
                }
                live.fetch_add(1, Ordering::SeqCst);
                let live2 = Arc::clone(&live);
                let cfg = cfg.clone();
                let spawned = thread::Builder::new()
                    .name("raw-conn".into())
                    .stack_size(STACK)
                    .spawn(move || {
                        if let Err(e) = serve_conn(s, &cfg) {
                            log::debug!("raw server: connection from {peer}: {e}");
                        }
                        live2.fetch_sub(1, Ordering::SeqCst);
                    });
                if let Err(e) = spawned {
                    live.fetch_sub(1, Ordering::SeqCst);
                    log::warn!("raw server: cannot start a connection thread: {e}");
                }
            }
            Err(e) => {
                failures += 1;
                log::warn!("raw server: accept failed: {e}");
                if failures > 100 {
                    log::error!("raw server: giving up after {failures} accept failures in a row");
                    return;
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn serve_conn(stream: TcpStream, cfg: &Config) -> io::Result<()> {
    transport::configure_stream(&stream, cfg)?;
    let (rh, wh) = Transport::new(stream)?.split();
    rh.set_read_timeout(Some(cfg.idle_timeout))?;
    let mut rd = BufReader::with_capacity(IO_BUF, rh);
    let mut wr = BufWriter::with_capacity(IO_BUF, wh);
    let mut hello = [0u8; HELLO_LEN];
    rd.read_exact(&mut hello)?;
    if hello[..4] != HELLO_MAGIC || !(hello[4] == MODE_ACK || hello[4] == MODE_ECHO) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad raw-bench hello",
        ));
    }
    let mode = hello[4];
    let ack_every = u64::from(u32::from_le_bytes([
        hello[8], hello[9], hello[10], hello[11],
    ]))
    .max(1);
    let mut received: u64 = 0;
    let mut acked: u64 = 0;
    let mut buf = Vec::new();
    loop {
        let mut hdr = [0u8; 4];
        match rd.read_exact(&mut hdr) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
        let len = u32::from_le_bytes(hdr) as usize;
        // Peer-controlled: checked before anything is sized by it.
        if len == 0 || len > MAX_BENCH_SIZE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("frame length {len} out of range"),
            ));
        }
        if mode == MODE_ACK {
            let mut left = len;
            while left > 0 {
                let avail = rd.fill_buf()?;
                if avail.is_empty() {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                let n = avail.len().min(left);
                rd.consume(n);
                left -= n;
            }
            received += 1;
            if rd.buffer().is_empty() || received - acked >= ack_every {
                wr.write_all(&received.to_le_bytes())?;
                wr.flush()?;
                acked = received;
            }
        } else {
            buf.resize(len, 0);
            rd.read_exact(&mut buf)?;
            wr.write_all(&hdr)?;
            wr.write_all(&buf)?;
            if rd.buffer().is_empty() {
                wr.flush()?;
            }
        }
    }
}

fn hello(mode: u8, ack_every: u32) -> [u8; HELLO_LEN] {
    let mut h = [0u8; HELLO_LEN];
    h[..4].copy_from_slice(&HELLO_MAGIC);
    h[4] = mode;
    h[8..].copy_from_slice(&ack_every.to_le_bytes());
    h
}

/// The raw TCP target.
#[derive(Debug)]
pub struct RawTcp {
    name: String,
    addr: SocketAddr,
    cfg: Config,
    _server: Option<RawServer>,
}

impl RawTcp {
    /// Start an in-process server on 127.0.0.1:0 and benchmark against it.
    pub fn local(cfg: &Config) -> io::Result<Self> {
        let server = RawServer::bind(SocketAddr::from(([127, 0, 0, 1], 0)), cfg)?;
        Ok(RawTcp {
            name: "raw-tcp".into(),
            addr: server.addr(),
            cfg: cfg.clone(),
            _server: Some(server),
        })
    }

    /// Benchmark against a `simplemsgr serve` at `addr`.
    #[cfg(test)]
    pub fn remote(addr: SocketAddr, cfg: &Config) -> Self {
        RawTcp {
            name: "raw-tcp".into(),
            addr,
            cfg: cfg.clone(),
            _server: None,
        }
    }

    fn connect(&self, mode: u8, ack_every: u32) -> Result<TcpStream, String> {
        let mut s = transport::connect(self.addr, CONNECT_TIMEOUT, &self.cfg)
            .map_err(|e| format!("cannot connect to {}: {e}", self.addr))?;
        s.write_all(&hello(mode, ack_every))
            .map_err(|e| format!("{}: sending hello: {e}", self.addr))?;
        Ok(s)
    }
}

/// What one throughput connection reports.
struct ConnOutcome {
    hist: Histogram,
    acked: u64,
    capped: bool,
}

impl BenchTarget for RawTcp {
    fn name(&self) -> &str {
        &self.name
    }

    fn run_throughput(&self, w: &Workload, progress: &Progress) -> Result<RunResult, String> {
        let depth = w.depth.max(1);
        let ack_every = u32::try_from((depth / 4).max(1)).unwrap_or(u32::MAX);
        let streams = (0..w.conns)
            .map(|_| self.connect(MODE_ACK, ack_every))
            .collect::<Result<Vec<_>, _>>()?;
        let payload: Vec<u8> = (0..w.size).map(|i| i as u8).collect();
        let (outcomes, elapsed) = run_conns(streams, |i, stream, gate| {
            throughput_conn(stream, w.share(i), depth, &payload, w, gate, progress)
        })?;
        let mut hist = Histogram::new();
        let (mut acked, mut capped) = (0, false);
        for o in outcomes {
            hist.merge(&o.hist);
            acked += o.acked;
            capped |= o.capped;
        }
        Ok(RunResult::new(
            &self.name,
            Mode::Throughput,
            w,
            acked,
            elapsed,
            &hist,
            capped,
        ))
    }

    fn run_latency(&self, w: &Workload) -> Result<RunResult, String> {
        let streams = (0..w.conns)
            .map(|_| self.connect(MODE_ECHO, 1))
            .collect::<Result<Vec<_>, _>>()?;
        let payload: Vec<u8> = (0..w.size).map(|i| i as u8).collect();
        let (outcomes, elapsed) = run_conns(streams, |i, stream, gate| {
            ping_pong_conn(stream, w.share(i), &payload, w, gate)
        })?;
        let mut hist = Histogram::new();
        let mut capped = false;
        for (h, c) in outcomes {
            hist.merge(&h);
            capped |= c;
        }
        let n = hist.count();
        Ok(RunResult::new(
            &self.name,
            Mode::Latency,
            w,
            n,
            elapsed,
            &hist,
            capped,
        ))
    }
}

/// Starts every client thread at the same moment, or tells them all to give up.
struct Gate {
    rx: crossbeam_channel::Receiver<()>,
    go: AtomicBool,
}

impl Gate {
    /// Block until the gate opens; false means "abort, do not run".
    fn wait(&self) -> bool {
        // The sender never sends: its drop (disconnection) is the signal.
        let _ = self.rx.recv();
        self.go.load(Ordering::SeqCst)
    }
}

/// Run `f` on its own thread for every stream, start them together, and time them
/// from the start to the last thread's end. Connection setup is not timed.
fn run_conns<T: Send>(
    streams: Vec<TcpStream>,
    f: impl Fn(usize, TcpStream, &Gate) -> Result<T, String> + Sync,
) -> Result<(Vec<T>, Duration), String> {
    let (tx, rx) = crossbeam_channel::bounded::<()>(0);
    let gate = Gate {
        rx,
        go: AtomicBool::new(false),
    };
    thread::scope(|scope| {
        let mut handles = Vec::with_capacity(streams.len());
        let mut spawn_err = None;
        for (i, stream) in streams.into_iter().enumerate() {
            let (gate, f) = (&gate, &f);
            match thread::Builder::new()
                .name(format!("raw-c{i}"))
                .stack_size(STACK)
                .spawn_scoped(scope, move || f(i, stream, gate))
            {
                Ok(h) => handles.push(h),
                Err(e) => {
                    spawn_err = Some(format!("cannot start a client thread: {e}"));
                    break;
                }
            }
        }
        gate.go.store(spawn_err.is_none(), Ordering::SeqCst);
        let start = Instant::now();
        drop(tx);
        let mut out = Vec::with_capacity(handles.len());
        let mut first_err = spawn_err;
        for h in handles {
            match h.join() {
                Ok(Ok(v)) => out.push(v),
                Ok(Err(e)) => first_err = first_err.or(Some(e)),
                Err(_) => first_err = first_err.or(Some("a client thread panicked".to_string())),
            }
        }
        let elapsed = start.elapsed();
        match first_err {
            Some(e) => Err(e),
            None => Ok((out, elapsed)),
        }
    })
}

/// One throughput connection: a writer thread (this one spawns it) and a reader (this one).
fn throughput_conn(
    stream: TcpStream,
    share: u64,
    depth: usize,
    payload: &[u8],
    w: &Workload,
    gate: &Gate,
    progress: &Progress,
) -> Result<ConnOutcome, String> {
    let peer = stream.peer_addr().map_err(|e| e.to_string())?;
    let (rh, wh) = Transport::new(stream).map_err(|e| e.to_string())?.split();
    rh.set_read_timeout(Some(POLL)).map_err(|e| e.to_string())?;
    let (credit_tx, credit_rx) = crossbeam_channel::unbounded::<u64>();
    let (sample_tx, sample_rx) = crossbeam_channel::unbounded::<(u64, Instant)>();
    let target = AtomicU64::new(share);
    let aborted = AtomicBool::new(false);
    if !gate.wait() {
        return Err("aborted".into());
    }
    let deadline = Instant::now() + w.duration_cap;
    thread::scope(|scope| {
        let writer = thread::Builder::new()
            .name("raw-w".into())
            .stack_size(STACK)
            .spawn_scoped(scope, || {
                let r = write_side(
                    wh, share, depth, payload, deadline, &credit_rx, &sample_tx, &target,
                );
                if r.is_err() {
                    aborted.store(true, Ordering::SeqCst);
                }
                r
            });
        let writer = writer.map_err(|e| format!("cannot start a writer thread: {e}"))?;
        let read = read_side(
            rh, deadline, &credit_tx, &sample_rx, &target, &aborted, progress,
        );
        drop(credit_tx); // unblocks a writer waiting for credits if the reader failed
        let wrote = writer
            .join()
            .map_err(|_| "writer thread panicked".to_string())?;
        let (bw, capped) = wrote.map_err(|e| format!("{peer}: write: {e}"))?;
        drop(bw); // only now close the socket: the reader needed it open
        let (hist, acked) = read.map_err(|e| format!("{peer}: read: {e}"))?;
        Ok(ConnOutcome {
            hist,
            acked,
            capped,
        })
    })
}

#[allow(clippy::too_many_arguments)]
fn write_side<W: Write>(
    wh: W,
    share: u64,
    depth: usize,
    payload: &[u8],
    deadline: Instant,
    credit_rx: &crossbeam_channel::Receiver<u64>,
    sample_tx: &crossbeam_channel::Sender<(u64, Instant)>,
    target: &AtomicU64,
) -> io::Result<(BufWriter<W>, bool)> {
    let mut bw = BufWriter::with_capacity(IO_BUF, wh);
    let hdr = (payload.len() as u32).to_le_bytes();
    let mut credits = depth as u64;
    let mut capped = false;
    for i in 0..share {
        if credits == 0 {
            bw.flush()?;
            match credit_rx.recv_timeout(stuck_timeout(deadline)) {
                Ok(n) => credits += n,
                Err(_) => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no acks from the server",
                    ))
                }
            }
            credits += credit_rx.try_iter().sum::<u64>();
        }
        if i % 64 == 0 && Instant::now() >= deadline {
            target.store(i, Ordering::SeqCst);
            capped = true;
            break;
        }
        if i % SAMPLE_EVERY == 0 {
            // The reader may be gone after an error; sampling is best effort.
            let _ = sample_tx.send((i + 1, Instant::now()));
        }
        if payload.len() >= DIRECT_WRITE {
            bw.flush()?;
            write_all_vectored(bw.get_mut(), &[&hdr, payload])?;
        } else {
            bw.write_all(&hdr)?;
            bw.write_all(payload)?;
        }
        credits -= 1;
    }
    bw.flush()?;
    Ok((bw, capped))
}

/// Time left before the run counts as stuck.
fn stuck_timeout(deadline: Instant) -> Duration {
    (deadline + STUCK_AFTER)
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1))
}

fn read_side<R: Read>(
    mut rh: R,
    deadline: Instant,
    credit_tx: &crossbeam_channel::Sender<u64>,
    sample_rx: &crossbeam_channel::Receiver<(u64, Instant)>,
    target: &AtomicU64,
    aborted: &AtomicBool,
    progress: &Progress,
) -> io::Result<(Histogram, u64)> {
    let mut hist = Histogram::new();
    let mut samples: VecDeque<(u64, Instant)> = VecDeque::new();
    let mut acked = 0u64;
    let mut buf = [0u8; 8];
    let mut filled = 0;
    while acked < target.load(Ordering::SeqCst) {
        match rh.read(&mut buf[filled..]) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if aborted.load(Ordering::SeqCst) {
                    return Ok((hist, acked));
                }
                if Instant::now() > deadline + STUCK_AFTER {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "acks stopped arriving",
                    ));
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if filled < buf.len() {
            continue;
        }
        filled = 0;
        let n = u64::from_le_bytes(buf);
        if n <= acked {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("ack {n} does not advance past {acked}"),
            ));
        }
        let delta = n - acked;
        acked = n;
        // The writer may have finished already; surplus credits are harmless.
        let _ = credit_tx.send(delta);
        progress.add(delta);
        let now = Instant::now();
        samples.extend(sample_rx.try_iter());
        while let Some(&(idx, t)) = samples.front() {
            if idx > acked {
                break;
            }
            hist.record(now - t);
            samples.pop_front();
        }
    }
    Ok((hist, acked))
}

/// One ping-pong connection: send, wait for the echo, repeat.
fn ping_pong_conn(
    mut stream: TcpStream,
    count: u64,
    payload: &[u8],
    w: &Workload,
    gate: &Gate,
) -> Result<(Histogram, bool), String> {
    let peer = stream.peer_addr().map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(w.duration_cap + STUCK_AFTER))
        .map_err(|e| e.to_string())?;
    let hdr = (payload.len() as u32).to_le_bytes();
    let mut back = vec![0u8; 4 + payload.len()];
    let mut hist = Histogram::new();
    if !gate.wait() {
        return Err("aborted".into());
    }
    let deadline = Instant::now() + w.duration_cap;
    for _ in 0..count {
        let t = Instant::now();
        if t >= deadline {
            return Ok((hist, true));
        }
        write_all_vectored(&mut stream, &[&hdr, payload])
            .map_err(|e| format!("{peer}: write: {e}"))?;
        stream
            .read_exact(&mut back)
            .map_err(|e| format!("{peer}: read: {e}"))?;
        hist.record(t.elapsed());
        if back[..4] != hdr {
            return Err(format!("{peer}: echo has the wrong length"));
        }
    }
    Ok((hist, false))
}

/// Round-trip `count` echoes of `size` bytes against a raw server (the `ping` command).
#[cfg(test)]
pub fn ping(
    addr: SocketAddr,
    cfg: &Config,
    count: u64,
    size: usize,
    interval: Duration,
    mut each: impl FnMut(u64, Duration),
) -> Result<Histogram, String> {
    let target = RawTcp::remote(addr, cfg);
    let mut stream = target.connect(MODE_ECHO, 1)?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let hdr = (size as u32).to_le_bytes();
    let mut back = vec![0u8; 4 + size];
    let mut hist = Histogram::new();
    for seq in 0..count {
        if seq > 0 {
            thread::sleep(interval);
        }
        let t = Instant::now();
        write_all_vectored(&mut stream, &[&hdr, &payload])
            .map_err(|e| format!("{addr}: write: {e}"))?;
        stream
            .read_exact(&mut back)
            .map_err(|e| format!("{addr}: no reply: {e}"))?;
        let rtt = t.elapsed();
        if back[..4] != hdr || back[4..] != payload[..] {
            return Err(format!("{addr}: reply does not match what was sent"));
        }
        hist.record(rtt);
        each(seq, rtt);
    }
    Ok(hist)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(size: usize, count: u64, conns: usize, depth: usize) -> Workload {
        Workload {
            size,
            count,
            conns,
            depth,
            duration_cap: Duration::from_secs(20),
        }
    }

    #[test]
    fn throughput_delivers_every_message() {
        let t = RawTcp::local(&Config::default()).unwrap();
        for (size, conns, depth) in [(64, 1, 1), (100, 3, 8), (70_000, 2, 4)] {
            let w = small(size, 301, conns, depth);
            let p = Progress::new(false);
            let r = t.run_throughput(&w, &p).unwrap();
            assert_eq!(
                (r.messages, r.bytes, r.capped),
                (301, 301 * size as u64, false)
            );
            assert_eq!(p.done(), 301);
            assert!(r.latency.count >= 301 / SAMPLE_EVERY);
        }
    }

    #[test]
    fn latency_round_trips_and_cap() {
        let t = RawTcp::local(&Config::default()).unwrap();
        let r = t.run_latency(&small(1000, 50, 1, 1)).unwrap();
        assert_eq!((r.messages, r.latency.count, r.capped), (50, 50, false));
        assert!(r.latency.p50 > Duration::ZERO && r.latency.p50 <= r.latency.max);
        let capped = Workload {
            duration_cap: Duration::ZERO,
            ..small(64, 1_000_000, 1, 1)
        };
        let r = t.run_latency(&capped).unwrap();
        assert!(r.capped && r.messages < 1_000_000);
        let capped = Workload {
            duration_cap: Duration::from_millis(50),
            ..small(64, u64::MAX / 2, 2, 16)
        };
        let r = t.run_throughput(&capped, &Progress::new(false)).unwrap();
        assert!(r.capped && r.messages > 0);
    }

    #[test]
    fn server_rejects_bad_hello_and_lengths() {
        let server = RawServer::bind("127.0.0.1:0".parse().unwrap(), &Config::default()).unwrap();
        for bytes in [
            &b"HTTP/1.1 GET /\r\n"[..],
            &[
                b'S', b'M', b'R', b'B', 1, 0, 0, 0, 1, 0, 0, 0, 0xff, 0xff, 0xff, 0xff,
            ],
        ] {
            let mut s = TcpStream::connect(server.addr()).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s.write_all(bytes).unwrap();
            let mut b = [0u8; 8];
            // The server drops the connection instead of answering or allocating.
            assert!(matches!(s.read(&mut b), Ok(0) | Err(_)));
        }
        let h = ping(
            server.addr(),
            &Config::default(),
            3,
            10,
            Duration::ZERO,
            |_, _| {},
        )
        .unwrap();
        assert_eq!(h.count(), 3);
    }

    #[test]
    fn server_caps_connections() {
        let cfg = Config {
            max_connections: Some(1),
            ..Config::default()
        };
        let server = RawServer::bind("127.0.0.1:0".parse().unwrap(), &cfg).unwrap();
        let first = RawTcp::remote(server.addr(), &cfg);
        let mut held = first.connect(MODE_ECHO, 1).unwrap();
        // The acceptor takes connections in order, so the second one is over the cap.
        let mut s = TcpStream::connect(server.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // Writes may fail once the server has closed the socket; the read decides.
        let _ = s.write_all(&hello(MODE_ECHO, 1));
        let _ = s.write_all(&[1, 0, 0, 0, 9]);
        assert!(
            matches!(s.read(&mut [0u8; 5]), Ok(0) | Err(_)),
            "a second connection was served despite ms_max_connections=1"
        );
        // The held connection still works.
        held.write_all(&[1, 0, 0, 0, 9]).unwrap();
        let mut back = [0u8; 5];
        held.read_exact(&mut back).unwrap();
        assert_eq!(back, [1, 0, 0, 0, 9]);
    }
}
