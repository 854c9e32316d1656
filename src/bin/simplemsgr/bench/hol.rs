//! `simplemsgr bench --hol`: head-of-line blocking. Small-message ping-pong latency on a
//! connection while a 256 MiB message is in flight on the same connection, with and
//! without the structured-data extension (docs/PROTOCOL.md §7), against the idle latency
//! of the same connection. In-process, loopback, plain mode; bounded in time (each
//! configuration is capped at 15 s). Both ends use 64 KiB socket buffers (`HOL_SOCKBUF`
//! overrides, 0 = kernel default) and the default 64 KiB chunk size (`HOL_CHUNK` overrides).

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

/// What one configuration measured.
#[derive(Debug, Clone)]
pub struct HolResult {
    /// With the structured-data extension.
    pub structured: bool,
    /// Round trips on the idle connection.
    pub idle: Vec<Duration>,
    /// Round trips while the big message was in flight (each started before it arrived).
    pub busy: Vec<Duration>,
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
}

impl Dispatcher for Server {
    fn dispatch(&self, conn: &ConnectionRef, msg: Message) {
        if msg.ty == PING {
            let _ = conn.send(msg);
        } else {
            // Hand the big message over: freeing 256 MiB here would stall the dispatch
            // of the pings behind it, which measures the allocator, not the messenger.
            let _ = self.bulk.send((Instant::now(), msg));
        }
    }
}

struct Client {
    echo: Sender<u64>,
}

impl Dispatcher for Client {
    fn dispatch(&self, _conn: &ConnectionRef, msg: Message) {
        let _ = self.echo.send(msg.tid);
    }
}

fn ping(conn: &ConnectionRef, echo: &Receiver<u64>, tid: u64) -> Result<Duration, String> {
    let t0 = Instant::now();
    conn.send(Message::new(PING, vec![0x5a; PING_SIZE]).with_tid(tid))
        .map_err(|e| format!("send: {e}"))?;
    loop {
        match echo.recv_timeout(PING_TIMEOUT.saturating_sub(t0.elapsed())) {
            Ok(t) if t == tid => return Ok(t0.elapsed()),
            Ok(_) => continue,
            Err(_) => return Err(format!("ping {tid}: no echo within {PING_TIMEOUT:?}")),
        }
    }
}

/// Measure one configuration: `idle_pings` round trips on the idle connection, then a
/// `big`-byte message and back-to-back pings until the server has dispatched it.
pub fn measure(
    structured: bool,
    big: usize,
    idle_pings: usize,
    cap: Duration,
) -> Result<HolResult, String> {
    let features = if structured {
        PROTO_FEATURE_STRUCTURED
    } else {
        0
    };
    let (bulk_tx, bulk_rx) = bounded(4);
    let sock = |b: &mut simplemsgr::runtime::MessengerBuilder| {
        if let Some(n) = sockbuf() {
            b.config_mut().tcp_sndbuf = n;
            b.config_mut().tcp_rcvbuf = n;
        }
    };
    let mut sb = Messenger::builder("osd.0".parse().map_err(|_| "name")?);
    sock(&mut sb);
    sb = sb.chunk_size(chunk_size());
    let server = sb
        .bind("127.0.0.1:0".parse().map_err(|_| "addr")?)
        .default_policy(Policy::stateful_server())
        .protocol_features(features)
        .start(Arc::new(Server { bulk: bulk_tx }))
        .map_err(|e| format!("server: {e}"))?;
    let (echo_tx, echo_rx) = unbounded();
    let mut cb = Messenger::builder("client.1".parse().map_err(|_| "name")?);
    sock(&mut cb);
    cb = cb.chunk_size(chunk_size());
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
            idle.push(ping(&conn, &echo_rx, tid)?);
        }
        let data = bytes::Bytes::from(vec![0xab_u8; big]);
        // The application keeps its buffer, so the messenger's last reference (dropped
        // when the peer acknowledges) does not free 256 MiB on a messenger thread.
        let keep = data.clone();
        let start = Instant::now();
        conn.send(Message::new(BULK, vec![0u8; 16]).with_data(data))
            .map_err(|e| format!("send bulk: {e}"))?;
        let mut busy = Vec::new();
        let (transfer, got) = loop {
            if let Ok((t, m)) = bulk_rx.try_recv() {
                break (t.saturating_duration_since(start), m);
            }
            if start.elapsed() > cap {
                return Err(format!("the {big}-byte message took longer than {cap:?}"));
            }
            tid += 1;
            let sent = Instant::now();
            let rtt = ping(&conn, &echo_rx, tid)?;
            // Count only pings that started while the big message was still in flight.
            match bulk_rx.try_recv() {
                Ok((t, m)) => {
                    if t >= sent {
                        busy.push(rtt);
                    }
                    break (t.saturating_duration_since(start), m);
                }
                Err(_) => busy.push(rtt),
            }
        };
        if got.data.len() != big || got.data != keep {
            return Err("the big message arrived altered".into());
        }
        drop((got, keep));
        Ok(HolResult {
            structured,
            idle,
            busy,
            transfer,
        })
    })();
    client.shutdown();
    server.shutdown();
    client.wait(Duration::from_secs(10));
    server.wait(Duration::from_secs(10));
    result
}

/// Socket buffer size for both ends (`HOL_SOCKBUF` overrides; 0 = the kernel's default).
/// Bytes in socket buffers are ahead of any new frame whatever the framing, so the
/// benchmark bounds them (64 KiB) for both configurations alike.
fn sockbuf() -> Option<usize> {
    let n = std::env::var("HOL_SOCKBUF")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64 * 1024);
    (n > 0).then_some(n)
}

/// Chunk size (`HOL_CHUNK` overrides the default 64 KiB).
fn chunk_size() -> usize {
    std::env::var("HOL_CHUNK")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64 * 1024)
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

/// The Markdown table of both configurations.
pub fn table(big: usize, results: &[HolResult]) -> String {
    let mut s = format!(
        "Small-message ({PING_SIZE} B) ping-pong latency on one connection while a {} MiB message is in flight (loopback, plain mode, CRC on, socket buffers {})\n\n",
        big >> 20,
        sockbuf().map_or("kernel default".to_string(), |n| format!("{} KiB", n >> 10))
    );
    s.push_str("| structured data | idle p50 ms | idle p99 ms | in-flight p50 ms | in-flight p99 ms | in-flight max ms | pings during transfer | transfer ms | in-flight p99 / idle p99 |\n");
    s.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for r in results {
        let ip99 = quantile(&r.idle, 0.99);
        let bp99 = quantile(&r.busy, 0.99);
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.1}× |\n",
            if r.structured {
                format!("on ({} KiB chunks)", chunk_size() >> 10)
            } else {
                "off (seed 001)".to_string()
            },
            ms(quantile(&r.idle, 0.5)),
            ms(ip99),
            ms(quantile(&r.busy, 0.5)),
            ms(bp99),
            ms(quantile(&r.busy, 1.0)),
            r.busy.len(),
            ms(r.transfer),
            bp99.as_secs_f64() / ip99.as_secs_f64().max(1e-9),
        ));
    }
    s
}

/// Run both configurations and print the table.
pub fn run(big: usize, idle_pings: usize) -> Result<(), String> {
    let mut results = Vec::new();
    for structured in [false, true] {
        results.push(measure(
            structured,
            big,
            idle_pings,
            Duration::from_secs(15),
        )?);
    }
    print!("{}", table(big, &results));
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
        let r = measure(true, 4 << 20, 20, Duration::from_secs(10)).unwrap();
        assert_eq!(r.idle.len(), 20);
        assert!(r.transfer > Duration::ZERO);
        assert!(table(4 << 20, &[r]).contains("| on ("));
    }
}
