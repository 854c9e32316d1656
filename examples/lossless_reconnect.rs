//! A lossless session surviving TCP faults: the server's reads fail on about 1 in 20
//! (Ceph's `ms_inject_socket_failures`), the client reconnects and replays what was not
//! acknowledged, and every message still arrives exactly once and in order.
//!
//! ```sh
//! cargo run --release --example lossless_reconnect
//! RUST_LOG=simplemsgr=info cargo run --example lossless_reconnect   # watch the faults
//! ```
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use simplemsgr::proto::Policy;
use simplemsgr::runtime::{ChannelDispatcher, Event, Messenger};
use simplemsgr::wire::message::Message;
use simplemsgr::wire::types::EntityType;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let (d, events) = ChannelDispatcher::new();
    let mut b = Messenger::builder("osd.0".parse()?)
        .bind("127.0.0.1:0".parse()?)
        .default_policy(Policy::stateful_server());
    b.config_mut().set("ms_inject_socket_failures", "20")?;
    let server = b.start(Arc::new(d))?;

    let (cd, _) = ChannelDispatcher::new();
    let client = Messenger::builder("client.1".parse()?)
        .default_policy(Policy::lossless_client())
        .start(Arc::new(cd))?;
    let conn = client.connect(server.listen_addr().ok_or("no address")?, EntityType::OSD)?;

    const N: u64 = 5_000;
    let start = Instant::now();
    for i in 0..N {
        conn.send(Message::new(0x100, i.to_le_bytes().to_vec()).with_tid(i))?;
    }
    let mut next = 0u64;
    while next < N {
        match events.recv_timeout(Duration::from_secs(30))? {
            Event::Message(_, m) => {
                assert_eq!(m.tid, next, "exactly once and in order");
                next += 1;
            }
            Event::Accept(c) => println!("server accepted {c:?}"),
            _ => {}
        }
    }
    println!(
        "{N} messages delivered exactly once and in order in {:.2?}, across {} injected socket failures",
        start.elapsed(),
        server.faults().socket_failures()
    );
    client.shutdown();
    server.shutdown();
    Ok(())
}
