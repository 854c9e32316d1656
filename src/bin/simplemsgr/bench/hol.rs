//! `simplemsgr bench --hol`: head-of-line blocking. Small-message ping-pong latency on a
//! connection while a 256 MiB message is in flight on the same connection, with and
//! without the structured-data extension (docs/PROTOCOL.md §7), against the idle latency
//! of the same connection. In-process, loopback, plain mode; bounded in time (each
//! configuration is capped at 15 s). The messenger's default settings: OS socket
//! buffers (which the runtime bounds to `ms_chunked_sockbuf` once chunks flow) and
//! 64 KiB chunks.
//!
//! Rows (`--hol-rows`, comma separated; default all four):
//! - `off`: without the extension (seed 001 framing): a ping waits for the whole message;
//! - `before`: with chunks, as the runtime sent them before the head-of-line work
//!   (`ms_chunk_yield=false`, `ms_chunked_sockbuf=0`, `ms_chunked_notsent_lowat=0`);
//! - `on`: with chunks and the default settings;
//! - `raw`: the floor. Ping-pong over a raw TCP connection while a raw TCP bulk transfer
//!   runs on *another* connection in the same process, for as long as the slowest
//!   chunked row took. No bytes are queued ahead of its pings, so it measures only the
//!   cost of sharing the cores with a transfer; no framing on one connection beats it.
//!
//! The "forward leg" is the part of a round trip from `send` to the server's dispatch of
//! the ping (one process, one clock). Options for experiments ([`HolOptions`]):
//! `--hol-sockbuf` (SO_SNDBUF and SO_RCVBUF of every socket; 0 = OS default),
//! `--hol-chunk` (chunk size), `--hol-chunked-sockbuf` and `--hol-notsent-lowat`
//! (`ms_chunked_sockbuf` and `ms_chunked_notsent_lowat` of the `on` row); `--hol-legs`
//! prints each busy ping's three legs (forward, back to the client's dispatch, to the
//! waiting thread) on stderr.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use simplemsgr::proto::Policy;
use simplemsgr::runtime::{ConnectionRef, Dispatcher, Messenger};
use simplemsgr::wire::message::Message;
use simplemsgr::wire::msgr2::PROTO_FEATURE_STRUCTURED;
use simplemsgr::wire::types::EntityType;

/// Message type of the pings (echoed by the server).
const PING: u16 = 0x7001;
/// Message type of the big message (counted, not echoed).
const BULK: u16 = 0x7002;
/// Bytes of each ping's front section.
const PING_SIZE: usize = 64;
/// How long one ping may take before the run fails.
const PING_TIMEOUT: Duration = Duration::from_secs(20);

/// Which transport a row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HolMode {
    /// The messenger without the structured-data extension (seed 001 framing).
    Plain,
    /// The messenger with the structured-data extension (chunks).
    Chunked,
    /// Chunks as the runtime sent them before the head-of-line work: no yield between
    /// chunks and OS-tuned socket buffers (`ms_chunk_yield=false`, `ms_chunked_sockbuf=0`,
    /// `ms_chunked_notsent_lowat=0`).
    ChunkedBefore,
    /// Raw TCP: pings on one connection, the bulk transfer on another (the floor).
    RawFloor,
}

impl HolMode {
    /// Every row, in table order.
    pub const ALL: [HolMode; 4] = [
        HolMode::Plain,
        HolMode::ChunkedBefore,
        HolMode::Chunked,
        HolMode::RawFloor,
    ];

    /// A row by its name on the command line (`off`, `before`, `on`, `raw`).
    pub fn parse(name: &str) -> Result<HolMode, String> {
        match name.trim() {
            "off" => Ok(HolMode::Plain),
            "before" => Ok(HolMode::ChunkedBefore),
            "on" => Ok(HolMode::Chunked),
            "raw" => Ok(HolMode::RawFloor),
            other => Err(format!(
                "unknown row '{other}' (expected off, before, on or raw)"
            )),
        }
    }
}

/// What to run and how (`simplemsgr bench --hol` and its `--hol-*` options).
#[derive(Debug, Clone)]
pub struct HolOptions {
    /// The rows, in order.
    pub rows: Vec<HolMode>,
    /// Chunk size of the chunked rows.
    pub chunk: usize,
    /// SO_SNDBUF and SO_RCVBUF of every socket; `None` = the OS default.
    pub sockbuf: Option<usize>,
    /// `ms_chunked_sockbuf` of the `on` row; `None` = the runtime's default.
    pub chunked_sockbuf: Option<usize>,
    /// `ms_chunked_notsent_lowat` of the `on` row; `None` = the runtime's default.
    pub chunked_notsent_lowat: Option<usize>,
    /// Print each busy ping's legs on stderr.
    pub legs: bool,
}

impl Default for HolOptions {
    fn default() -> Self {
        HolOptions {
            rows: HolMode::ALL.to_vec(),
            chunk: 64 * 1024,
            sockbuf: None,
            chunked_sockbuf: None,
            chunked_notsent_lowat: None,
            legs: false,
        }
    }
}

/// The `on` row's settings that differ from the runtime's defaults, for its label.
fn on_row_settings(opts: &HolOptions) -> String {
    let mut s = String::new();
    if let Some(n) = opts.chunked_sockbuf {
        s.push_str(&format!(
            ", ms_chunked_sockbuf={}",
            crate::bench::fmt_size(n)
        ));
    }
    if let Some(n) = opts.chunked_notsent_lowat {
        s.push_str(&format!(
            ", ms_chunked_notsent_lowat={}",
            crate::bench::fmt_size(n)
        ));
    }
    s
}

/// What one configuration measured.
#[derive(Debug, Clone)]
pub struct HolResult {
    /// What was measured.
    pub mode: HolMode,
    /// Round trips on the idle connection.
    pub idle: Vec<Duration>,
    /// Round trips while the big message was in flight (each started before it arrived).
    pub busy: Vec<Duration>,
    /// The forward leg of each busy round trip: from `send` to the server's dispatch
    /// (same process, one clock); the rest of the round trip is the reply's way back.
    pub busy_fwd: Vec<Duration>,
    /// From sending the big message to the server dispatching it.
    pub transfer: Duration,
}

/// The `q` quantile (0..=1) of `v`, nearest rank.
pub fn quantile(v: &[Duration], q: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let mut s = v.to_vec();
    s.sort_unstable();
    let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
    s[rank - 1]
}

struct Server {
    bulk: Sender<(Instant, Message)>,
    arrived: Sender<(u64, Instant)>,
}

impl Dispatcher for Server {
    fn dispatch(&self, conn: &ConnectionRef, msg: Message) {
        if msg.ty == PING {
            let _ = self.arrived.send((msg.tid, Instant::now()));
            let _ = conn.send(msg);
        } else {
            // Hand the big message over: freeing 256 MiB here would stall the dispatch
            // of the pings behind it, which measures the allocator, not the messenger.
            let _ = self.bulk.send((Instant::now(), msg));
        }
    }
}

struct Client {
    echo: Sender<(u64, Instant)>,
}

impl Dispatcher for Client {
    fn dispatch(&self, _conn: &ConnectionRef, msg: Message) {
        let _ = self.echo.send((msg.tid, Instant::now()));
    }
}

/// One round trip: its time and its forward leg (send to the server's dispatch).
fn ping(
    conn: &ConnectionRef,
    echo: &Receiver<(u64, Instant)>,
    arrived: &Receiver<(u64, Instant)>,
    tid: u64,
    legs: bool,
) -> Result<(Duration, Duration), String> {
    let t0 = Instant::now();
    conn.send(Message::new(PING, vec![0x5a; PING_SIZE]).with_tid(tid))
        .map_err(|e| format!("send: {e}"))?;
    let back = loop {
        match echo.recv_timeout(PING_TIMEOUT.saturating_sub(t0.elapsed())) {
            Ok((t, at)) if t == tid => break at,
            Ok(_) => continue,
            Err(_) => return Err(format!("ping {tid}: no echo within {PING_TIMEOUT:?}")),
        }
    };
    let rtt = t0.elapsed();
    // The server reported the arrival before it sent the echo.
    let mut fwd = rtt;
    while let Ok((t, at)) = arrived.try_recv() {
        if t == tid {
            fwd = at.saturating_duration_since(t0);
            if legs {
                eprintln!(
                    "leg {tid} fwd {:?} back {:?} wake {:?}",
                    fwd,
                    back.saturating_duration_since(at),
                    rtt.saturating_sub(back.saturating_duration_since(t0))
                );
            }
        }
    }
    Ok((rtt, fwd))
}

/// Measure one configuration: `idle_pings` round trips on the idle connection, then a
/// `big`-byte message and back-to-back pings until the server has dispatched it.
pub fn measure(
    mode: HolMode,
    big: usize,
    idle_pings: usize,
    cap: Duration,
    opts: &HolOptions,
) -> Result<HolResult, String> {
    let structured = mode != HolMode::Plain;
    let features = if structured {
        PROTO_FEATURE_STRUCTURED
    } else {
        0
    };
    let (bulk_tx, bulk_rx) = bounded(4);
    let (arrived_tx, arrived_rx) = unbounded();
    let sock = |b: &mut simplemsgr::runtime::MessengerBuilder| {
        if let Some(n) = opts.sockbuf {
            b.config_mut().tcp_sndbuf = n;
            b.config_mut().tcp_rcvbuf = n;
        }
        if mode == HolMode::ChunkedBefore {
            b.config_mut().chunk_yield = false;
            b.config_mut().chunked_sockbuf = 0;
            b.config_mut().chunked_notsent_lowat = 0;
        }
        if mode == HolMode::Chunked {
            if let Some(n) = opts.chunked_sockbuf {
                b.config_mut().chunked_sockbuf = n;
            }
            if let Some(n) = opts.chunked_notsent_lowat {
                b.config_mut().chunked_notsent_lowat = n;
            }
        }
    };
    let mut sb = Messenger::builder("osd.0".parse().map_err(|_| "name")?);
    sock(&mut sb);
    sb = sb.chunk_size(opts.chunk);
    let server = sb
        .bind("127.0.0.1:0".parse().map_err(|_| "addr")?)
        .default_policy(Policy::stateful_server())
        .protocol_features(features)
        .start(Arc::new(Server {
            bulk: bulk_tx,
            arrived: arrived_tx,
        }))
        .map_err(|e| format!("server: {e}"))?;
    let (echo_tx, echo_rx) = unbounded();
    let mut cb = Messenger::builder("client.1".parse().map_err(|_| "name")?);
    sock(&mut cb);
    cb = cb.chunk_size(opts.chunk);
    let client = cb
        .default_policy(Policy::lossless_client())
        .protocol_features(features)
        .start(Arc::new(Client { echo: echo_tx }))
        .map_err(|e| format!("client: {e}"))?;
    let result = (|| {
        let addr = server.listen_addr().ok_or("server has no address")?;
        let conn = client
            .connect(addr, EntityType::OSD)
            .map_err(|e| format!("connect: {e}"))?;
        let mut tid = 0u64;
        let mut idle = Vec::with_capacity(idle_pings);
        for _ in 0..idle_pings {
            tid += 1;
            idle.push(ping(&conn, &echo_rx, &arrived_rx, tid, opts.legs)?.0);
        }
        let data = bytes::Bytes::from(vec![0xab_u8; big]);
        // The application keeps its buffer, so the messenger's last reference (dropped
        // when the peer acknowledges) does not free 256 MiB on a messenger thread.
        let keep = data.clone();
        let start = Instant::now();
        conn.send(Message::new(BULK, vec![0u8; 16]).with_data(data))
            .map_err(|e| format!("send bulk: {e}"))?;
        let mut busy = Vec::new();
        let mut busy_fwd = Vec::new();
        let (transfer, got) = loop {
            if let Ok((t, m)) = bulk_rx.try_recv() {
                break (t.saturating_duration_since(start), m);
            }
            if start.elapsed() > cap {
                return Err(format!("the {big}-byte message took longer than {cap:?}"));
            }
            tid += 1;
            let sent = Instant::now();
            let (rtt, fwd) = ping(&conn, &echo_rx, &arrived_rx, tid, opts.legs)?;
            // Count only pings that started while the big message was still in flight.
            match bulk_rx.try_recv() {
                Ok((t, m)) => {
                    if t >= sent {
                        busy.push(rtt);
                        busy_fwd.push(fwd);
                    }
                    break (t.saturating_duration_since(start), m);
                }
                Err(_) => {
                    busy.push(rtt);
                    busy_fwd.push(fwd);
                }
            }
        };
        if got.data.len() != big || got.data != keep {
            return Err("the big message arrived altered".into());
        }
        drop((got, keep));
        Ok(HolResult {
            mode,
            idle,
            busy,
            busy_fwd,
            transfer,
        })
    })();
    client.shutdown();
    server.shutdown();
    client.wait(Duration::from_secs(10));
    server.wait(Duration::from_secs(10));
    result
}

/// The floor: ping-pong on one raw TCP connection while a raw bulk transfer of at least
/// `big` bytes, lasting at least `min_time`, runs on another, in this process, with the
/// same socket buffers. Nothing is queued ahead of a ping: it only shares the cores
/// (and the loopback) with the bulk. Raw TCP moves bytes several times faster than the
/// messenger, so `min_time` (the messenger's transfer time) keeps the cores busy for
/// as long, for as many chances of a scheduling delay.
pub fn measure_raw(
    big: usize,
    min_time: Duration,
    idle_pings: usize,
    cap: Duration,
    sockbuf: Option<usize>,
) -> Result<HolResult, String> {
    let io = |e: std::io::Error| e.to_string();
    let ping_l = listener(sockbuf)?;
    let bulk_l = listener(sockbuf)?;
    let ping_addr = ping_l.local_addr().map_err(io)?;
    let bulk_addr = bulk_l.local_addr().map_err(io)?;
    let stop = Arc::new(AtomicBool::new(false));
    // Echo: 64 bytes in, the same 64 back, until the client closes.
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = ping_l.accept()?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(PING_TIMEOUT))?;
        let mut b = [0u8; PING_SIZE];
        while s.read_exact(&mut b).is_ok() {
            s.write_all(&b)?;
        }
        Ok(())
    });
    // Bulk receiver: read everything, report when the last byte arrived.
    let (done_tx, done_rx) = bounded::<Result<Instant, String>>(1);
    let stop_r = stop.clone();
    let sink = std::thread::spawn(move || {
        let r = (|| -> std::io::Result<Instant> {
            let (mut s, _) = bulk_l.accept()?;
            s.set_read_timeout(Some(Duration::from_millis(200)))?;
            let mut b = vec![0u8; 64 * 1024];
            let mut got = 0usize;
            loop {
                match s.read(&mut b) {
                    Ok(0) if got >= big => break,
                    Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                    Ok(n) => got += n,
                    Err(e) if stop_r.load(Ordering::Relaxed) => return Err(e),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(Instant::now())
        })();
        let _ = done_tx.send(r.map_err(|e| e.to_string()));
    });
    let result = (|| {
        let mut p = connect(ping_addr, sockbuf)?;
        p.set_nodelay(true).map_err(io)?;
        p.set_read_timeout(Some(PING_TIMEOUT)).map_err(io)?;
        let rt = |p: &mut TcpStream| -> Result<Duration, String> {
            let t0 = Instant::now();
            p.write_all(&[0x5a; PING_SIZE]).map_err(io)?;
            let mut b = [0u8; PING_SIZE];
            p.read_exact(&mut b).map_err(io)?;
            Ok(t0.elapsed())
        };
        let mut idle = Vec::with_capacity(idle_pings);
        for _ in 0..idle_pings {
            idle.push(rt(&mut p)?);
        }
        let mut b = connect(bulk_addr, sockbuf)?;
        let stop_w = stop.clone();
        let start = Instant::now();
        let pump = std::thread::spawn(move || -> std::io::Result<()> {
            let data = vec![0xab_u8; 64 * 1024];
            let mut sent = 0usize;
            while (sent < big || start.elapsed() < min_time)
                && start.elapsed() < cap
                && !stop_w.load(Ordering::Relaxed)
            {
                b.write_all(&data)?;
                sent += data.len();
            }
            b.shutdown(std::net::Shutdown::Write)
        });
        let mut busy = Vec::new();
        let done = loop {
            if let Ok(r) = done_rx.try_recv() {
                break r?;
            }
            if start.elapsed() > cap {
                return Err(format!(
                    "the raw {big}-byte transfer took longer than {cap:?}"
                ));
            }
            let sent = Instant::now();
            let d = rt(&mut p)?;
            match done_rx.try_recv() {
                Ok(r) => {
                    let t = r?;
                    if t >= sent {
                        busy.push(d);
                    }
                    break t;
                }
                Err(_) => busy.push(d),
            }
        };
        let _ = pump.join();
        Ok(HolResult {
            mode: HolMode::RawFloor,
            idle,
            busy_fwd: Vec::new(),
            busy,
            transfer: done.saturating_duration_since(start),
        })
    })();
    stop.store(true, Ordering::Relaxed);
    let _ = sink.join();
    let _ = echo.join();
    result
}

/// A loopback listener with the benchmark's socket buffers (inherited when accepted).
fn listener(sockbuf: Option<usize>) -> Result<TcpListener, String> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .map_err(|e| e.to_string())?;
    set_buffers(&sock, sockbuf)?;
    let addr: std::net::SocketAddr = "127.0.0.1:0".parse().map_err(|_| "addr")?;
    sock.bind(&addr.into()).map_err(|e| e.to_string())?;
    sock.listen(4).map_err(|e| e.to_string())?;
    Ok(sock.into())
}

/// A loopback connection with the benchmark's socket buffers.
fn connect(addr: std::net::SocketAddr, sockbuf: Option<usize>) -> Result<TcpStream, String> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .map_err(|e| e.to_string())?;
    set_buffers(&sock, sockbuf)?;
    sock.connect_timeout(&addr.into(), Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    Ok(sock.into())
}

fn set_buffers(sock: &socket2::Socket, sockbuf: Option<usize>) -> Result<(), String> {
    if let Some(n) = sockbuf {
        sock.set_send_buffer_size(n).map_err(|e| e.to_string())?;
        sock.set_recv_buffer_size(n).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

/// The Markdown table of the measured rows.
pub fn table(big: usize, results: &[HolResult], opts: &HolOptions) -> String {
    let mut s = format!(
        "Small-message ({PING_SIZE} B) ping-pong latency on one connection while a {} MiB message is in flight (loopback, plain mode, CRC on, socket buffers {})\n\n",
        big >> 20,
        opts.sockbuf.map_or("OS default; the runtime bounds them to ms_chunked_sockbuf once chunks flow".to_string(), |n| format!("{} KiB at every socket", n >> 10))
    );
    s.push_str("| row | idle p50 ms | idle p99 ms | in-flight p50 ms | in-flight p99 ms | in-flight max ms | forward leg p50 / p99 ms | pings during transfer | transfer ms | in-flight p99 / idle p99 |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|---|\n");
    for r in results {
        let ip99 = quantile(&r.idle, 0.99);
        let bp99 = quantile(&r.busy, 0.99);
        let fwd = if r.busy_fwd.is_empty() {
            "–".to_string()
        } else {
            format!(
                "{} / {}",
                ms(quantile(&r.busy_fwd, 0.5)),
                ms(quantile(&r.busy_fwd, 0.99))
            )
        };
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1}× |\n",
            match r.mode {
                HolMode::Chunked =>
                    format!(
                        "structured data on ({} KiB chunks){}",
                        opts.chunk >> 10,
                        on_row_settings(opts)
                    ),
                HolMode::ChunkedBefore => format!(
                    "structured data on ({} KiB chunks), ms_chunk_yield=false, ms_chunked_sockbuf=0, ms_chunked_notsent_lowat=0 (as before)",
                    opts.chunk >> 10
                ),
                HolMode::Plain => "structured data off (seed 001)".to_string(),
                HolMode::RawFloor =>
                    "floor: raw TCP pings, raw bulk on another connection for as long".to_string(),
            },
            ms(quantile(&r.idle, 0.5)),
            ms(ip99),
            ms(quantile(&r.busy, 0.5)),
            ms(bp99),
            ms(quantile(&r.busy, 1.0)),
            fwd,
            r.busy.len(),
            ms(r.transfer),
            bp99.as_secs_f64() / ip99.as_secs_f64().max(1e-9),
        ));
    }
    s
}

/// Run the rows and print the table.
pub fn run(big: usize, idle_pings: usize, opts: &HolOptions) -> Result<(), String> {
    let cap = Duration::from_secs(15);
    let mut results = Vec::new();
    for &mode in &opts.rows {
        results.push(match mode {
            HolMode::Plain | HolMode::Chunked | HolMode::ChunkedBefore => {
                measure(mode, big, idle_pings, cap, opts)?
            }
            HolMode::RawFloor => {
                // As long as the slowest messenger row with chunks, for a fair floor.
                let min_time = results
                    .iter()
                    .filter(|r: &&HolResult| r.mode != HolMode::Plain)
                    .map(|r| r.transfer)
                    .max()
                    .unwrap_or_default();
                measure_raw(big, min_time, idle_pings, cap, opts.sockbuf)?
            }
        });
    }
    print!("{}", table(big, &results, opts));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&v, 1.0), Duration::from_millis(100));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn small_run_measures_both_modes() {
        let opts = HolOptions::default();
        let r = measure(
            HolMode::Chunked,
            4 << 20,
            20,
            Duration::from_secs(10),
            &opts,
        )
        .unwrap();
        assert_eq!(r.idle.len(), 20);
        assert!(r.transfer > Duration::ZERO);
        assert!(!r.busy_fwd.is_empty() || r.busy.is_empty());
        assert!(r.busy_fwd.iter().zip(&r.busy).all(|(f, b)| f <= b));
        assert!(table(4 << 20, &[r], &opts).contains("| structured data on (64 KiB"));
    }

    #[test]
    fn raw_floor_moves_every_byte() {
        let r = measure_raw(
            4 << 20,
            Duration::from_millis(50),
            20,
            Duration::from_secs(10),
            None,
        )
        .unwrap();
        assert!(r.transfer >= Duration::from_millis(50));
        assert_eq!(r.idle.len(), 20);
        assert!(r.transfer > Duration::ZERO);
        assert!(table(4 << 20, &[r], &HolOptions::default()).contains("| floor: raw TCP"));
    }

    #[test]
    fn rows_parse_by_name_and_unknown_names_are_refused() {
        assert_eq!(HolMode::parse(" on").unwrap(), HolMode::Chunked);
        assert_eq!(HolMode::parse("raw").unwrap(), HolMode::RawFloor);
        let e = HolMode::parse("fast").unwrap_err();
        assert!(e.contains("unknown row 'fast'"), "{e}");
    }
}
