//! Scale benchmark (project issue 7): N concurrent handshaken msgr2 connections to an
//! in-process messenger echo server, one echo each.
//!
//! ```text
//! cargo run --release --example many_connections -- [--conns 5000] [--client-threads 16] [--burst 2000]
//! ```
//!
//! After the connections are measured, the clients open a burst of `--burst` raw
//! connects that never handshake (a connect storm; the server refuses what exceeds
//! `ms_max_handshaking` and the rest stall), and echo once more on every established
//! connection while the burst is there.
//!
//! The server is a normal [`Messenger`] (two threads per connection) in this process.
//! The clients run in a *child process* (this same binary with `--client ADDR`), and
//! are lightweight: the crate's sans-IO [`Connection`] driven over blocking sockets by a
//! few threads, each handling its share of connections one after the other. So the
//! server's process holds only its own 2 × N threads (20,000 Messenger threads on both
//! sides in one process would exceed `vm.max_map_count`), and its RSS growth is the
//! server's cost alone.
//!
//! Reported: the server's RSS, memory mappings and threads per connection (from
//! `/proc/self/status` and `/proc/self/maps`, before and after), the time to handshake
//! all connections and the accept rate, the time for one echo on each, the time to
//! tear everything down, the time for the burst and for the echoes under it, and the
//! connection cap the defaults derive on this machine.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use simplemsgr::crypto::SystemRng;
use simplemsgr::proto::msgr2::Connection;
use simplemsgr::proto::{Event, Policy, ProtoConfig};
use simplemsgr::runtime::{Config, FnDispatcher, Messenger};
use simplemsgr::wire::message::Message;
use simplemsgr::wire::transmit::Transmit;
use simplemsgr::wire::types::{AddrType, AddrVec, EntityAddr, EntityName, EntityType};

/// Longest any single phase may take before the benchmark gives up.
const PHASE_LIMIT: Duration = Duration::from_secs(100);
/// Socket read timeout in the clients.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

fn main() {
    let _ = env_logger::try_init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let get = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let conns: usize = get("--conns").map_or(5000, |v| v.parse().expect("--conns N"));
    let threads: usize =
        get("--client-threads").map_or(16, |v| v.parse().expect("--client-threads N"));
    let burst: usize = get("--burst").map_or(2000, |v| v.parse().expect("--burst N"));
    let clients_burst = |a, n, t| clients(a, n, t, burst);
    let result = match get("--client") {
        Some(addr) => clients_burst(addr.parse().expect("--client ADDR"), conns, threads.max(1)),
        None => server(conns, threads.max(1), burst),
    };
    if let Err(e) = result {
        eprintln!("many_connections: {e}");
        std::process::exit(1);
    }
}

// ----- the server side (this process) -------------------------------------------

fn proc_status_kib(key: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn map_count() -> u64 {
    std::fs::read_to_string("/proc/self/maps").map_or(0, |t| t.lines().count() as u64)
}

/// Resident KiB of mappings of exactly `size_kib` (the thread stacks), and of all others.
fn rss_split(size_kib: u64) -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let (mut stacks, mut other, mut cur) = (0, 0, 0);
    for l in text.lines() {
        let mut w = l.split_whitespace();
        match (w.next(), w.next()) {
            (Some("Size:"), Some(v)) => cur = v.parse().unwrap_or(0),
            (Some("Rss:"), Some(v)) => {
                let v: u64 = v.parse().unwrap_or(0);
                if cur == size_kib {
                    stacks += v;
                } else {
                    other += v;
                }
            }
            _ => {}
        }
    }
    (stacks, other)
}

fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn server(n: usize, client_threads: usize, burst: usize) -> Result<(), String> {
    let rss0 = proc_status_kib("VmRSS:");
    let echo = FnDispatcher::new(|c: &simplemsgr::runtime::ConnectionRef, m| {
        let _ = c.send(m);
    });
    let srv = Messenger::builder("osd.0".parse().map_err(|_| "name")?)
        .config(Config::default())
        .bind("127.0.0.1:0".parse().map_err(|_| "addr")?)
        .default_policy(Policy::stateless_server())
        .start(Arc::new(echo))
        .map_err(|e| format!("server: {e}"))?;
    let addr = srv.listen_addr().ok_or("no listen address")?;
    println!("server {addr}, defaults: {}", srv.limits());
    if n > srv.limits().max_connections {
        return Err(format!(
            "{n} connections exceed the cap of {} on this machine",
            srv.limits().max_connections
        ));
    }
    let stack_kib = (srv.limits().thread_stack_bytes / 1024) as u64;
    let split1 = rss_split(stack_kib);
    let (rss1, maps1, thr1) = (
        proc_status_kib("VmRSS:"),
        map_count(),
        proc_status_kib("Threads:"),
    );
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args(["--client", &addr.to_string(), "--conns", &n.to_string()])
        .args(["--client-threads", &client_threads.to_string()])
        .args(["--burst", &burst.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the client process: {e}"))?;
    let (tx, rx) = crossbeam_channel::unbounded::<String>();
    let out = child.stdout.take().ok_or("no child stdout")?;
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines().take(1000).map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = |what: &str| {
        rx.recv_timeout(PHASE_LIMIT)
            .map_err(|_| format!("the clients did not report {what} in time"))
    };
    let handshaken = line("handshakes")?;
    let echoed = line("echoes")?;
    println!("clients: {handshaken}");
    println!("clients: {echoed}");
    let settle = wait_until(Duration::from_secs(30), || srv.stats().open as usize == n);
    let stats = srv.stats();
    let (rss2, maps2, thr2) = (
        proc_status_kib("VmRSS:"),
        map_count(),
        proc_status_kib("Threads:"),
    );
    let split2 = rss_split(stack_kib);
    let hs_secs: f64 = field(&handshaken, "in").ok_or("bad client report")?;
    let echo_secs: f64 = field(&echoed, "in").ok_or("bad client report")?;
    let per = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / n as f64;
    println!("---");
    println!(
        "{n} connections: {} open on the server (settled: {}), {} threads in the process",
        stats.open,
        settle.map_or("no".to_string(), |d| format!(
            "{:.2}s after",
            d.as_secs_f64()
        )),
        thr2
    );
    println!(
        "RSS: {rss0} KiB at start, {rss1} KiB with the server idle, {rss2} KiB with {n} connections \
         => {:.1} KiB per connection",
        per(rss1, rss2)
    );
    println!(
        "  of which thread stacks ({stack_kib} KiB mappings): {:.1} KiB per connection, everything else {:.1} KiB",
        per(split1.0, split2.0),
        per(split1.1, split2.1)
    );
    println!(
        "memory mappings: {maps1} -> {maps2} => {:.2} per connection; threads {thr1} -> {thr2} => {:.2} per connection",
        per(maps1, maps2),
        per(thr1, thr2)
    );
    println!(
        "establish all: {hs_secs:.3}s ({client_threads} client threads) => {:.0} accepts+handshakes/s",
        n as f64 / hs_secs
    );
    println!(
        "one echo on each: {echo_secs:.3}s => {:.0} round trips/s",
        n as f64 / echo_secs
    );
    println!("server stats: {stats}");
    println!(
        "derived cap here: {} ({})",
        srv.limits().resources.derived_cap,
        srv.limits().resources.binding
    );
    // A burst of connects that never handshake: the established ones keep echoing.
    let mut stdin = child.stdin.take().ok_or("no child stdin")?;
    writeln!(stdin, "burst").map_err(|e| format!("child stdin: {e}"))?;
    let under = line("the burst")?;
    println!("clients: {under}");
    println!("server stats after the burst: {}", srv.stats());
    // Let the clients go; time the teardown.
    drop(stdin);
    let t = Instant::now();
    let _ = child.wait();
    let gone = wait_until(Duration::from_secs(60), || srv.live_connections() == 0);
    println!(
        "teardown: {} (client exit {:.2}s)",
        gone.map_or("not finished in 60s".to_string(), |d| format!(
            "{:.2}s",
            d.as_secs_f64()
        )),
        t.elapsed().as_secs_f64()
    );
    let _ = reader.join();
    srv.shutdown();
    srv.wait(Duration::from_secs(10));
    Ok(())
}

/// The number after `key` in a report line.
fn field(line: &str, key: &str) -> Option<f64> {
    let mut it = line.split_whitespace();
    it.by_ref().find(|w| *w == key)?;
    it.next()?.trim_end_matches('s').parse().ok()
}

// ----- the client side (the child process) ---------------------------------------

struct Client {
    stream: TcpStream,
    proto: Connection,
    buf: BytesMut,
    out: Transmit,
    hint: usize,
}

const LINK: u64 = 1;

impl Client {
    fn connect(addr: SocketAddr, cfg: &Arc<ProtoConfig>) -> Result<Client, String> {
        let stream =
            TcpStream::connect_timeout(&addr, IO_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(IO_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let now = Instant::now();
        let mut proto = Connection::outgoing(
            cfg.clone(),
            Box::new(SystemRng::new()),
            EntityAddr::new(AddrType::MSGR2, addr, 0),
            EntityType::OSD,
            now,
        );
        while proto.poll_event().is_some() {}
        proto.start_link(LINK, now);
        let mut c = Client {
            stream,
            proto,
            buf: BytesMut::with_capacity(4096),
            out: Transmit::new(),
            hint: 4096,
        };
        c.pump(|e| matches!(e, Event::Connected { .. }))?;
        Ok(c)
    }

    /// Write what the state machine has, read, until an event matches `done`.
    fn pump(&mut self, done: impl Fn(&Event) -> bool) -> Result<(), String> {
        for _ in 0..10_000 {
            let now = Instant::now();
            while self.proto.poll_transmit(LINK, now, &mut self.out) {
                while !self.out.is_empty() {
                    let mut slices = Vec::new();
                    self.out.io_slices(&mut slices);
                    let n = self
                        .stream
                        .write_vectored(&slices)
                        .map_err(|e| format!("write: {e}"))?;
                    if n == 0 {
                        return Err("write: zero bytes".into());
                    }
                    self.out.consume(n);
                }
                self.out.clear();
            }
            while let Some(ev) = self.proto.poll_event() {
                if done(&ev) {
                    return Ok(());
                }
                if let Event::Refused(e) | Event::LinkClosed { error: e, .. } = ev {
                    return Err(format!("closed: {e}"));
                }
            }
            let start = self.buf.len();
            self.buf.resize(start + self.hint.clamp(1024, 1 << 20), 0);
            let n = match self.stream.read(&mut self.buf[start..]) {
                Ok(0) => return Err("the server closed the connection".into()),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => 0,
                Err(e) => return Err(format!("read: {e}")),
            };
            self.buf.truncate(start + n);
            self.hint = self.proto.handle_input(LINK, &mut self.buf, Instant::now());
        }
        Err("no progress after 10,000 rounds".into())
    }

    fn echo(&mut self, i: u32) -> Result<(), String> {
        let mut front = i.to_le_bytes().to_vec();
        front.resize(64, 0);
        self.proto
            .send(Message::new(0x4000, front))
            .map_err(|_| "session closed".to_string())?;
        self.pump(|e| matches!(e, Event::Message(m) if m.front[..4] == i.to_le_bytes()))
    }
}

fn client_config(id: u32) -> Arc<ProtoConfig> {
    let mut cfg = ProtoConfig::new(
        EntityName::new(EntityType::CLIENT, u64::from(id)),
        AddrVec(vec![EntityAddr::blank(AddrType::MSGR2, id)]),
    );
    cfg.policies.default = Policy::lossy_client();
    cfg.keepalive_interval = None;
    Arc::new(cfg)
}

fn clients(addr: SocketAddr, n: usize, threads: usize, burst: usize) -> Result<(), String> {
    let barrier = Arc::new(Barrier::new(threads + 1));
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let barrier = barrier.clone();
            let share = n / threads + usize::from(t < n % threads);
            std::thread::spawn(move || -> Result<Duration, String> {
                let mut mine = Vec::with_capacity(share);
                for k in 0..share {
                    // Each client is its own entity instance (the server keys
                    // sessions of unbound clients by their nonce).
                    let id = (t * n + k + 1) as u32;
                    match Client::connect(addr, &client_config(id)) {
                        Ok(c) => mine.push(c),
                        Err(e) => {
                            // The others would wait at the barrier: end the process.
                            eprintln!("client thread {t}, connection {k}: {e}");
                            std::process::exit(1);
                        }
                    }
                }
                barrier.wait();
                barrier.wait();
                let t0 = Instant::now();
                for (i, c) in mine.iter_mut().enumerate() {
                    if let Err(e) = c.echo(i as u32) {
                        eprintln!("client thread {t}, echo {i}: {e}");
                        std::process::exit(1);
                    }
                }
                let took = t0.elapsed();
                barrier.wait();
                // The burst: raw connects that never handshake, while we echo again.
                barrier.wait();
                let bshare = burst / threads + usize::from(t < burst % threads);
                let raw: Vec<TcpStream> = (0..bshare)
                    .filter_map(|_| TcpStream::connect_timeout(&addr, IO_TIMEOUT).ok())
                    .collect();
                barrier.wait();
                for (i, c) in mine.iter_mut().enumerate() {
                    if let Err(e) = c.echo(1_000_000 + i as u32) {
                        eprintln!("client thread {t}, echo under burst {i}: {e}");
                        std::process::exit(1);
                    }
                }
                barrier.wait();
                // Hold the connections until the parent closes our stdin.
                barrier.wait();
                drop(raw);
                drop(mine);
                Ok(took)
            })
        })
        .collect();
    let abort = |e: String| -> Result<(), String> { Err(e) };
    // Phase 1: handshakes. A failed client thread never reaches the barrier: give up.
    if !wait_barrier(&barrier, PHASE_LIMIT) {
        return abort("handshakes did not finish in time (see the errors above)".into());
    }
    println!("handshaken {n} in {:.3}s", start.elapsed().as_secs_f64());
    let t1 = Instant::now();
    barrier.wait();
    if !wait_barrier(&barrier, PHASE_LIMIT) {
        return abort("echoes did not finish in time".into());
    }
    println!("echoed {n} in {:.3}s", t1.elapsed().as_secs_f64());
    let _ = std::io::stdout().flush();
    // The parent measures, then says "burst".
    let mut stdin = BufReader::new(std::io::stdin());
    let mut cmd = String::new();
    let _ = stdin.read_line(&mut cmd);
    let t2 = Instant::now();
    barrier.wait();
    if !wait_barrier(&barrier, PHASE_LIMIT) {
        return abort("the burst did not finish in time".into());
    }
    let connected = t2.elapsed();
    let t3 = Instant::now();
    if !wait_barrier(&barrier, PHASE_LIMIT) {
        return abort("echoes under the burst did not finish in time".into());
    }
    println!(
        "burst of {burst} raw connects in {:.3}s, then one echo on each of {n} in {:.3}s",
        connected.as_secs_f64(),
        t3.elapsed().as_secs_f64()
    );
    let _ = std::io::stdout().flush();
    let mut sink = Vec::new();
    let _ = stdin.read_to_end(&mut sink);
    barrier.wait();
    for h in handles {
        if let Ok(Err(e)) = h.join() {
            return Err(e);
        }
    }
    Ok(())
}

/// Wait at `barrier` from a helper thread, at most `limit`; false on timeout (the
/// helper is left blocked, and the process exits soon after).
fn wait_barrier(barrier: &Arc<Barrier>, limit: Duration) -> bool {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let b = barrier.clone();
    std::thread::spawn(move || {
        b.wait();
        let _ = tx.send(());
    });
    rx.recv_timeout(limit).is_ok()
}
