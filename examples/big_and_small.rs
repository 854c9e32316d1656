//! One big message and small ones on the same connection, with the structured-data
//! extension (docs/PROTOCOL.md §7): the big message's data travels as chunks, and the
//! small messages sent meanwhile are dispatched long before it completes.
//!
//! ```sh
//! cargo run --release --example big_and_small -- 64     # size of the big message in MiB
//! ```
//!
//! Prints when each small message and the big one arrived, relative to the big send.
//! Run it with `--no-chunks` to see seed 001's framing: every small message then waits
//! for the whole big one.
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Sender};
use simplemsgr::proto::Policy;
use simplemsgr::runtime::{ConnectionRef, Dispatcher, Messenger};
use simplemsgr::wire::message::Message;
use simplemsgr::wire::msgr2::PROTO_FEATURE_STRUCTURED;
use simplemsgr::wire::types::EntityType;

const SMALL: u16 = 0x7101;
const BIG: u16 = 0x7102;
/// How many small messages, and how far apart.
const SMALL_COUNT: u64 = 10;
const SMALL_GAP: Duration = Duration::from_millis(2);

/// Reports each arrival (type, tid, data length) to the main thread.
struct Arrivals(Sender<(u16, u64, usize, Instant)>);

impl Dispatcher for Arrivals {
    fn dispatch(&self, _conn: &ConnectionRef, msg: Message) {
        let _ = self
            .0
            .send((msg.ty, msg.tid, msg.data.len(), Instant::now()));
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let chunks = !args.iter().any(|a| a == "--no-chunks");
    let mib: usize = match args.iter().find(|a| !a.starts_with("--")) {
        Some(s) => s
            .parse()
            .ok()
            .filter(|n| (1..=512).contains(n))
            .ok_or_else(|| format!("size '{s}': expected MiB from 1 to 512"))?,
        None => 64,
    };
    let features = if chunks { PROTO_FEATURE_STRUCTURED } else { 0 };

    let (tx, rx) = unbounded();
    let server = Messenger::builder("osd.0".parse()?)
        .bind("127.0.0.1:0".parse()?)
        .default_policy(Policy::stateful_server())
        .protocol_features(features)
        .start(Arc::new(Arrivals(tx)))?;
    let client = Messenger::builder("client.1".parse()?)
        .default_policy(Policy::lossless_client())
        .protocol_features(features)
        .chunk_size(64 * 1024)
        .start(Arc::new(Arrivals(unbounded().0)))?;
    let addr = server.listen_addr().ok_or("the server has no address")?;
    let conn = client.connect(addr, EntityType::OSD)?;

    let big = vec![0x5a_u8; mib << 20];
    let start = Instant::now();
    conn.send(Message::new(BIG, &b"big"[..]).with_data(big))?;
    for i in 0..SMALL_COUNT {
        std::thread::sleep(SMALL_GAP);
        conn.send(Message::new(SMALL, vec![0u8; 64]).with_tid(i))?;
    }

    // Bounded: every message, or 60 s.
    let deadline = start + Duration::from_secs(60);
    let mut left = SMALL_COUNT + 1;
    while left > 0 {
        let wait = deadline.saturating_duration_since(Instant::now());
        let (ty, tid, len, at) = rx
            .recv_timeout(wait)
            .map_err(|_| "timed out waiting for the messages")?;
        let ms = at.duration_since(start).as_secs_f64() * 1e3;
        match ty {
            BIG => println!("{ms:9.2} ms  big message complete ({} MiB)", len >> 20),
            _ => println!("{ms:9.2} ms  small message {tid}"),
        }
        left -= 1;
    }
    println!(
        "structured data {} (both sides {} the banner's feature bit)",
        if chunks { "on" } else { "off" },
        if chunks { "set" } else { "leave out" }
    );
    client.shutdown();
    server.shutdown();
    Ok(())
}
