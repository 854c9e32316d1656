//! The synthetic fault test (Ceph's SyntheticInjectTest, messenger-anchors §2.1/T10):
//! several servers and clients, lossless sessions, random message sizes from 32 B to
//! 4 MiB with some high-priority noise, random mark_downs of server sessions, socket
//! failures injected on about 1 in 30 reads and random delays. Every message sent on a
//! lossless session must be delivered exactly once and in order per sender, and the
//! run is bounded in count and time. It prints its counts.
//!
//! To hunt a rare loss, the knobs can be turned up from the environment (each run
//! stays bounded): `SYNTHETIC_SOCKET_FAILURES` (1 in N reads fail, default 30),
//! `SYNTHETIC_MARK_DOWN` (1 in N sends marks the session down first, default 60),
//! `SYNTHETIC_MESSAGES` (per stream, default 150) and `SYNTHETIC_SEED` (added to every
//! seed, default 0), e.g. `SYNTHETIC_SOCKET_FAILURES=5 SYNTHETIC_MARK_DOWN=20`.
#![allow(clippy::disallowed_methods)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use simplemsgr::proto::Policy;
use simplemsgr::runtime::{ConnectionRef, Dispatcher, Messenger};
use simplemsgr::wire::message::{priority, Message};
use simplemsgr::wire::types::{AddrType, EntityAddr, EntityType};

/// What the servers saw: per (client, stream, epoch) the sequence of message indices.
/// A client that marks a session down starts a new epoch of that stream.
#[derive(Default)]
struct Seen {
    by_stream: Mutex<HashMap<(u32, u32, u32), Vec<u32>>>,
    total: std::sync::atomic::AtomicU64,
}

struct Record(Arc<Seen>);

impl Dispatcher for Record {
    fn dispatch(&self, _conn: &ConnectionRef, m: Message) {
        // front: client id, stream id (one per server), epoch, index; data: a pattern.
        let f = &m.front;
        let word = |i: usize| u32::from_le_bytes([f[i], f[i + 1], f[i + 2], f[i + 3]]);
        let (client, stream, epoch, index) = (word(0), word(4), word(8), word(12));
        assert!(
            m.data
                .iter()
                .enumerate()
                .all(|(i, b)| *b == pattern(index, i)),
            "payload corrupted"
        );
        self.0
            .by_stream
            .lock()
            .entry((client, stream, epoch))
            .or_default()
            .push(index);
        self.0
            .total
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn pattern(index: u32, i: usize) -> u8 {
    (index as usize).wrapping_mul(131).wrapping_add(i) as u8
}

/// SplitMix64, seeded: the run is reproducible (except for thread timing).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Sizes from 32 B to 4 MiB, most of them small (like Ceph's 100 random buffers).
fn size(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=59 => 32 + rng.below(4096) as usize,
        60..=94 => 4096 + rng.below(256 << 10) as usize,
        _ => (256 << 10) + rng.below((4 << 20) - (256 << 10)) as usize,
    }
}

#[test]
fn synthetic_faults_lose_nothing() {
    synthetic(AddrType::MSGR2);
}

/// The same test over legacy v1 sessions (`v1:` addresses).
#[test]
fn synthetic_faults_lose_nothing_v1() {
    synthetic(AddrType::LEGACY);
}

/// A knob from the environment (see the module documentation), or its default.
fn knob(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number")),
        Err(_) => default,
    }
}

fn synthetic(kind: AddrType) {
    common::init_log();
    const SERVERS: usize = 3;
    const CLIENTS: usize = 4;
    let socket_failures = knob("SYNTHETIC_SOCKET_FAILURES", 30);
    let mark_down = knob("SYNTHETIC_MARK_DOWN", 60).max(1);
    // Per (client, server) stream.
    let messages = knob("SYNTHETIC_MESSAGES", 150).clamp(1, 10_000) as u32;
    let seed = knob("SYNTHETIC_SEED", 0);
    let seen = Arc::new(Seen::default());
    let servers: Vec<Messenger> = (0..SERVERS)
        .map(|i| {
            let mut b = Messenger::builder(format!("osd.{i}").parse().unwrap())
                .bind("127.0.0.1:0".parse().unwrap())
                .default_policy(Policy::stateful_server());
            b.config_mut().fault.socket_failures = socket_failures;
            b.config_mut().fault.delay_max = Duration::from_millis(5);
            b.config_mut().fault.delay_probability = 0.01;
            b.config_mut().fault.internal_delays = Duration::from_millis(2);
            b.config_mut().fault.seed = seed.wrapping_add(1000 + i as u64);
            b.start(Arc::new(Record(seen.clone()))).unwrap()
        })
        .collect();
    let addrs: Vec<_> = servers.iter().map(|s| s.listen_addr().unwrap()).collect();
    let clients: Vec<Messenger> = (0..CLIENTS)
        .map(|i| {
            let mut b = Messenger::builder(format!("client.{i}").parse().unwrap())
                .default_policy(Policy::lossless_client());
            b.config_mut().fault.socket_failures = socket_failures;
            b.config_mut().fault.seed = seed.wrapping_add(2000 + i as u64);
            b.config_mut().initial_backoff = Duration::from_millis(10);
            b.config_mut().max_backoff = Duration::from_millis(200);
            b.start(Arc::new(common::Echo)).unwrap()
        })
        .collect();

    let started = Instant::now();
    let mut sent = 0u64;
    let mut bytes = 0u64;
    let mut mark_downs = 0u32;
    let mut final_epochs: Vec<Vec<u32>> = Vec::new();
    // The first index of every epoch, by (client, stream, epoch).
    let mut epoch_starts: HashMap<(u32, u32, u32), u32> = HashMap::new();
    std::thread::scope(|scope| {
        let handles: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(c, client)| {
                let addrs = &addrs;
                scope.spawn(move || {
                    let mut rng = Rng(seed.wrapping_add(77 + c as u64));
                    let conns: Vec<_> = addrs
                        .iter()
                        .map(|a| {
                            client
                                .connect_addr(EntityAddr::new(kind, *a, 0), EntityType::OSD)
                                .unwrap()
                        })
                        .collect();
                    let mut conns = conns;
                    let mut next = vec![0u32; conns.len()];
                    let mut epoch = vec![0u32; conns.len()];
                    let mut starts: Vec<(u32, u32, u32)> = Vec::new();
                    let (mut sent, mut bytes, mut downs) = (0u64, 0u64, 0u32);
                    while next.iter().any(|n| *n < messages) {
                        let s = rng.below(conns.len() as u64) as usize;
                        if next[s] >= messages {
                            continue;
                        }
                        // About 1 send in 60 (by default): mark this session down (dropping whatever it
                        // still holds) and continue on a new session: a new epoch.
                        if rng.below(mark_down) == 0 {
                            conns[s].mark_down();
                            conns[s] = client
                                .connect_addr(EntityAddr::new(kind, addrs[s], 0), EntityType::OSD)
                                .unwrap();
                            epoch[s] += 1;
                            starts.push((s as u32, epoch[s], next[s]));
                            downs += 1;
                        }
                        let index = next[s];
                        let len = size(&mut rng);
                        let mut front = Vec::with_capacity(16);
                        for w in [c as u32, s as u32, epoch[s], index] {
                            front.extend_from_slice(&w.to_le_bytes());
                        }
                        let data: Vec<u8> = (0..len).map(|i| pattern(index, i)).collect();
                        // 5% high-priority noise to disorganize the regular flow (per-stream
                        // order still holds: one stream always uses one priority).
                        let prio = if s == 0 {
                            priority::HIGH
                        } else {
                            priority::DEFAULT
                        };
                        conns[s]
                            .send(
                                Message::new(0x5000, front)
                                    .with_data(data)
                                    .with_priority(prio),
                            )
                            .unwrap();
                        next[s] += 1;
                        sent += 1;
                        bytes += len as u64;
                        // Bound the in-flight memory: wait while too much is queued.
                        let deadline = Instant::now() + Duration::from_secs(60);
                        while conns[s].queued() + conns[s].unacked() > 64 {
                            assert!(Instant::now() < deadline, "stream {c}/{s} stuck");
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                    (sent, bytes, downs, epoch, starts)
                })
            })
            .collect();
        for h in handles {
            let (s, b, d, e, st) = h.join().unwrap();
            let c = final_epochs.len() as u32;
            for (stream, epoch, start) in st {
                epoch_starts.insert((c, stream, epoch), start);
            }
            sent += s;
            bytes += b;
            mark_downs += d;
            final_epochs.push(e);
        }
    });
    // Wait until every stream's final epoch arrived in full (bounded).
    let complete = |by: &HashMap<(u32, u32, u32), Vec<u32>>| {
        final_epochs.iter().enumerate().all(|(c, eps)| {
            eps.iter().enumerate().all(|(s, e)| {
                by.get(&(c as u32, s as u32, *e)).and_then(|v| v.last()) == Some(&(messages - 1))
            })
        })
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    while !complete(&seen.by_stream.lock()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let by_stream = seen.by_stream.lock();
    // Within one epoch, indices must be contiguous and increasing (exactly once, in
    // order, nothing skipped) from the epoch's first message: the servers never lose a
    // session here, so no reset may drop the head of an epoch, abandoned or not. An
    // abandoned epoch may stop early (mark_down drops what it held), the final epoch of
    // each stream must reach the last message.
    let (mut delivered, mut duplicated, mut reordered, mut lost) = (0u64, 0u64, 0u64, 0u64);
    for (&(c, s, e), got) in by_stream.iter() {
        delivered += got.len() as u64;
        for w in got.windows(2) {
            if w[1] <= w[0] {
                if w[1] == w[0] {
                    duplicated += 1;
                } else {
                    reordered += 1;
                }
            } else if w[1] != w[0] + 1 {
                lost += u64::from(w[1] - w[0] - 1);
                eprintln!(
                    "gap in client {c} stream {s} epoch {e}: {} -> {} (final epoch {})",
                    w[0], w[1], final_epochs[c as usize][s as usize]
                );
            }
        }
        let start = epoch_starts.get(&(c, s, e)).copied().unwrap_or(0);
        if let Some(first) = got.first().filter(|f| **f != start) {
            eprintln!("head of client {c} stream {s} epoch {e} (start {start}): first {first}");
            lost += u64::from(first.saturating_sub(start));
        }
        if final_epochs[c as usize][s as usize] == e {
            // The final epoch must also reach the last message.
            let tail = messages - 1 - got.last().copied().unwrap_or(0);
            if tail > 0 {
                eprintln!("final epoch of client {c} stream {s} (epoch {e}, start {start}): first {:?} last {:?}", got.first(), got.last());
            }
            lost += u64::from(tail);
        }
    }
    for (c, eps) in final_epochs.iter().enumerate() {
        for (s, e) in eps.iter().enumerate() {
            let key = (c as u32, s as u32, *e);
            if !by_stream.contains_key(&key) {
                let start = epoch_starts.get(&key).copied().unwrap_or(0);
                eprintln!("final epoch of client {c} stream {s} (epoch {e}, start {start}): nothing delivered");
                lost += u64::from(messages - start);
            }
        }
    }
    let faults: u64 = servers
        .iter()
        .chain(clients.iter())
        .map(|m| m.faults().socket_failures())
        .sum();
    let delays: u64 = servers.iter().map(|m| m.faults().delays()).sum();
    println!(
        "synthetic {kind:?}: sent {sent} ({:.1} MiB), delivered {delivered}, lost {lost}, duplicated {duplicated}, \
         reordered {reordered}, socket faults injected {faults}, delays injected {delays}, mark_downs {mark_downs}, \
         {:.1}s",
        bytes as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64()
    );
    for m in servers.iter().chain(clients.iter()) {
        m.shutdown();
    }
    assert_eq!(sent, (CLIENTS * SERVERS) as u64 * u64::from(messages));
    assert_eq!(
        (lost, duplicated, reordered),
        (0, 0, 0),
        "exactly once and in order"
    );
    assert!(faults > 0, "faults were injected");
    assert!(mark_downs > 0, "sessions were marked down");
}
