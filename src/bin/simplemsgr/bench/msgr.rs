//! The messenger as a benchmark target, mirroring the raw TCP baseline's workload:
//!
//! - throughput: each connection streams its share of messages (payload in the data
//!   section) with at most `depth` unacknowledged; every `depth/4`-th message and the
//!   last one ask for an acknowledgement, which the server sends back as a small
//!   message (like the raw server's cumulative ack). Latency is enqueue-to-ack of
//!   those messages.
//! - latency: one message in flight, echoed back whole by the server.
//!
//! Each benchmark connection is its own client [`Messenger`], so that N connections
//! really are N sessions (one messenger keeps one session per peer).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use simplemsgr::proto::{Mode as ProtectionMode, Policy};
use simplemsgr::runtime::{Config, ConnectionRef, Dispatcher, Messenger};
use simplemsgr::wire::message::Message;
use simplemsgr::wire::types::EntityType;

use super::{BenchTarget, Histogram, Mode, Progress, RunResult, Workload};

/// Bench data; `tid` is the message's index, `version` 1 asks for an acknowledgement.
pub const MSG_DATA: u16 = 0xb0;
/// An acknowledgement: `tid` is the index of the acknowledged message.
pub const MSG_ACK: u16 = 0xb1;
/// A ping; the server echoes it whole.
pub const MSG_PING: u16 = 0xb2;

/// The server side of the benchmark protocol: acknowledges data that asks for it and
/// echoes everything else. `simplemsgr serve` uses it too.
pub struct BenchServer;

impl Dispatcher for BenchServer {
    fn dispatch(&self, conn: &ConnectionRef, msg: Message) {
        // A peer that went away cannot be answered; that is not the server's problem.
        let _ = match msg.ty {
            MSG_DATA if msg.version == 1 => {
                conn.send(Message::new(MSG_ACK, Bytes::new()).with_tid(msg.tid))
            }
            MSG_DATA => Ok(()),
            _ => conn.send(msg),
        };
    }
}

/// The client's dispatcher. Acknowledgements go to the sending thread through a
/// channel; in a ping-pong run the next ping is sent from the callback itself, as a
/// request/response application would, so no thread hand-off is timed.
struct ClientSide {
    tx: Sender<Message>,
    pinger: parking_lot::Mutex<Option<Pinger>>,
}

/// The state of a ping-pong run, driven from the dispatcher.
struct Pinger {
    payload: Bytes,
    share: u64,
    sent_at: Instant,
    deadline: Instant,
    hist: Histogram,
    done: Sender<(Histogram, bool)>,
}

impl Dispatcher for ClientSide {
    fn dispatch(&self, conn: &ConnectionRef, msg: Message) {
        if msg.ty != MSG_PING {
            let _ = self.tx.send(msg);
            return;
        }
        let mut guard = self.pinger.lock();
        let Some(p) = guard.as_mut() else { return };
        p.hist.record(p.sent_at.elapsed());
        let next = msg.tid + 1;
        let capped = Instant::now() > p.deadline;
        if next >= p.share || capped {
            if let Some(p) = guard.take() {
                let _ = p.done.send((p.hist, capped && next < p.share));
            }
            return;
        }
        p.sent_at = Instant::now();
        let ping = Message::new(MSG_PING, Bytes::new())
            .with_data(p.payload.clone())
            .with_tid(next);
        drop(guard);
        let _ = conn.send(ping);
    }
}

/// Fail fast with a clear message if nothing accepts TCP connections at `addr` (a
/// messenger would otherwise keep retrying in the background).
pub fn probe(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    std::net::TcpStream::connect_timeout(&addr, timeout)
        .map(drop)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))
}

/// The messenger target: an in-process server (or a remote `simplemsgr serve`).
pub struct MessengerTarget {
    name: String,
    server: Option<Messenger>,
    addr: SocketAddr,
    cfg: Config,
    mode: ProtectionMode,
    key: BenchKey,
}

/// The auth name and key that signed and secure runs use.
#[derive(Clone)]
pub struct BenchKey {
    /// The auth name, e.g. `client.admin`.
    pub name: String,
    /// Its key.
    pub key: simplemsgr::auth::Secret,
}

impl Default for BenchKey {
    /// A fixed key for in-process runs (both ends are ours).
    fn default() -> Self {
        BenchKey {
            name: "client.bench".into(),
            key: simplemsgr::auth::Secret::new(&[0x5a; 16]),
        }
    }
}

impl MessengerTarget {
    /// Start an in-process server on 127.0.0.1:0.
    pub fn local(cfg: &Config, mode: ProtectionMode, key: BenchKey) -> Result<Self, String> {
        let mut b = Messenger::builder("osd.0".parse().map_err(|e| format!("{e}"))?)
            .config(cfg.clone())
            .bind("127.0.0.1:0".parse().map_err(|e| format!("{e}"))?)
            .default_policy(Policy::stateful_server());
        b = with_mode(b, mode, false, &key);
        let server = b
            .start(Arc::new(BenchServer))
            .map_err(|e| format!("cannot start the server messenger: {e}"))?;
        let addr = server
            .listen_addr()
            .ok_or("the server messenger has no address")?;
        Ok(MessengerTarget {
            name: name_for(mode),
            server: Some(server),
            addr,
            cfg: cfg.clone(),
            mode,
            key,
        })
    }

    /// Benchmark a remote `simplemsgr serve`.
    pub fn remote(
        addr: SocketAddr,
        cfg: &Config,
        mode: ProtectionMode,
        key: BenchKey,
    ) -> Result<Self, String> {
        probe(addr, cfg.handshake_timeout)?;
        Ok(MessengerTarget {
            name: name_for(mode),
            server: None,
            addr,
            cfg: cfg.clone(),
            mode,
            key,
        })
    }

    fn client(&self, i: usize) -> Result<Client, String> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let name = format!("client.{}", 1000 + i);
        let side = Arc::new(ClientSide {
            tx,
            pinger: parking_lot::Mutex::new(None),
        });
        let b = Messenger::builder(name.parse().map_err(|e| format!("{e}"))?)
            .config(self.cfg.clone())
            .default_policy(Policy::lossless_client());
        let m = with_mode(b, self.mode, true, &self.key)
            .start(side.clone())
            .map_err(|e| format!("cannot start a client messenger: {e}"))?;
        let conn = m
            .connect(self.addr, EntityType::OSD)
            .map_err(|e| format!("connect: {e}"))?;
        // Wait for the handshake so that connection set-up is not timed.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !conn.is_connected() {
            if Instant::now() > deadline {
                return Err(format!("no handshake with {} within 10 s", self.addr));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok((m, conn, rx, side))
    }
}

impl Drop for MessengerTarget {
    fn drop(&mut self) {
        if let Some(s) = &self.server {
            s.shutdown();
        }
    }
}

fn name_for(mode: ProtectionMode) -> String {
    match mode {
        ProtectionMode::Plain => "msgr2".into(),
        ProtectionMode::Signed => "msgr2-signed".into(),
        ProtectionMode::Secure => "msgr2-secure".into(),
    }
}

/// Signed and secure runs use the SECRET method with the benchmark key.
fn with_mode(
    b: simplemsgr::runtime::MessengerBuilder,
    mode: ProtectionMode,
    client: bool,
    key: &BenchKey,
) -> simplemsgr::runtime::MessengerBuilder {
    use simplemsgr::auth::{AuthConfig, Keyring};
    if mode == ProtectionMode::Plain {
        return b;
    }
    let auth = if client {
        AuthConfig::secret_client(key.name.clone(), key.key.clone())
    } else {
        let mut ring = Keyring::default();
        ring.insert(
            &key.name,
            key.key.clone(),
            simplemsgr::wire::types::Timespec::default(),
        );
        AuthConfig::secret_server(Arc::new(ring))
    };
    b.auth(auth).mode(mode, mode)
}

/// A client messenger, its session, its acknowledgement channel and its dispatcher.
type Client = (Messenger, ConnectionRef, Receiver<Message>, Arc<ClientSide>);

/// Release every sender at once, or tell them to give up.
struct Gate {
    rx: Receiver<()>,
}

impl BenchTarget for MessengerTarget {
    fn name(&self) -> &str {
        &self.name
    }

    fn run_throughput(&self, w: &Workload, progress: &Progress) -> Result<RunResult, String> {
        let depth = w.depth.max(1) as u64;
        let ack_every = (depth / 4).max(1);
        let clients = (0..w.conns)
            .map(|i| self.client(i))
            .collect::<Result<Vec<_>, _>>()?;
        let payload = Bytes::from((0..w.size).map(|i| i as u8).collect::<Vec<u8>>());
        let (go_tx, go_rx) = crossbeam_channel::bounded::<()>(0);
        let gate = Gate { rx: go_rx };
        let results = std::thread::scope(|scope| {
            let mut handles = Vec::new();
            for (i, (_m, conn, rx, _)) in clients.iter().enumerate() {
                let share = w.share(i);
                let (gate, payload) = (&gate, &payload);
                handles.push(scope.spawn(move || {
                    let _ = gate.rx.recv();
                    stream(conn, rx, share, depth, ack_every, payload, w, progress)
                }));
            }
            let start = Instant::now();
            drop(go_tx);
            let outs: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
            (outs, start.elapsed())
        });
        let (outs, elapsed) = results;
        let mut hist = Histogram::new();
        let (mut acked, mut capped) = (0, false);
        for o in outs {
            let (h, a, c) = o.map_err(|_| "a sender thread panicked".to_string())??;
            hist.merge(&h);
            acked += a;
            capped |= c;
        }
        for (m, _, _, _) in clients {
            m.shutdown();
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
        let clients = (0..w.conns)
            .map(|i| self.client(i))
            .collect::<Result<Vec<_>, _>>()?;
        let payload = Bytes::from((0..w.size).map(|i| i as u8).collect::<Vec<u8>>());
        let start = Instant::now();
        let mut waits = Vec::new();
        for (i, (_m, conn, _rx, side)) in clients.iter().enumerate() {
            let share = w.share(i);
            if share == 0 {
                continue;
            }
            let (done_tx, done_rx) = crossbeam_channel::bounded(1);
            *side.pinger.lock() = Some(Pinger {
                payload: payload.clone(),
                share,
                sent_at: Instant::now(),
                deadline: start + w.duration_cap,
                hist: Histogram::new(),
                done: done_tx,
            });
            conn.send(
                Message::new(MSG_PING, Bytes::new())
                    .with_data(payload.clone())
                    .with_tid(0),
            )
            .map_err(|e| format!("send: {e}"))?;
            waits.push(done_rx);
        }
        let outs: Vec<Result<(Histogram, bool), String>> = waits
            .into_iter()
            .map(|rx| {
                rx.recv_timeout(w.duration_cap + Duration::from_secs(10))
                    .map_err(|_| "no echo for 10 s".to_string())
            })
            .collect();
        let elapsed = start.elapsed();
        let mut hist = Histogram::new();
        let mut capped = false;
        for o in outs {
            let (h, c) = o?;
            hist.merge(&h);
            capped |= c;
        }
        for (m, _, _, _) in clients {
            m.shutdown();
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

/// Stream `share` messages with at most `depth` unacknowledged.
#[allow(clippy::too_many_arguments)]
fn stream(
    conn: &ConnectionRef,
    rx: &Receiver<Message>,
    share: u64,
    depth: u64,
    ack_every: u64,
    payload: &Bytes,
    w: &Workload,
    progress: &Progress,
) -> Result<(Histogram, u64, bool), String> {
    let mut hist = Histogram::new();
    let start = Instant::now();
    let mut sent = 0u64;
    let mut acked = 0u64;
    let mut pending: std::collections::VecDeque<(u64, Instant)> = std::collections::VecDeque::new();
    let mut capped = false;
    while acked < share {
        while sent < share && sent - acked < depth {
            let ask = (sent + 1) % ack_every == 0 || sent + 1 == share;
            let mut m = Message::new(MSG_DATA, Bytes::new())
                .with_data(payload.clone())
                .with_tid(sent);
            if ask {
                m.version = 1;
                pending.push_back((sent, Instant::now()));
            }
            conn.send(m).map_err(|e| format!("send: {e}"))?;
            sent += 1;
        }
        if start.elapsed() > w.duration_cap {
            capped = true;
            break;
        }
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(m) if m.ty == MSG_ACK => {
                let upto = m.tid + 1;
                while pending.front().is_some_and(|(i, _)| *i < upto) {
                    if let Some((_, t)) = pending.pop_front() {
                        hist.record(t.elapsed());
                    }
                }
                progress.add(upto.saturating_sub(acked));
                acked = acked.max(upto);
            }
            Ok(_) => {}
            Err(_) => {
                return Err(format!(
                    "no acknowledgement for 10 s ({acked}/{share} acknowledged)"
                ))
            }
        }
    }
    Ok((hist, acked, capped))
}
