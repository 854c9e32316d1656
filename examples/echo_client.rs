//! Sends a few messages to an echo server and waits for each one to come back.
//!
//! ```sh
//! cargo run --example echo_server -- 127.0.0.1:6800
//! cargo run --example echo_client -- 127.0.0.1:6800
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
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:6800".into())
        .parse()?;
    let (dispatcher, events) = ChannelDispatcher::new();
    let client = Messenger::builder("client.1".parse()?)
        .default_policy(Policy::lossless_client())
        .start(Arc::new(dispatcher))?;
    let conn = client.connect(addr, EntityType::OSD)?;
    for i in 0..5u64 {
        let t = Instant::now();
        conn.send(Message::new(0x100, format!("hello #{i}").into_bytes()).with_tid(i))?;
        loop {
            match events.recv_timeout(Duration::from_secs(5))? {
                Event::Message(_, m) if m.tid == i => {
                    println!("{} in {:?}", String::from_utf8_lossy(&m.front), t.elapsed());
                    break;
                }
                Event::Refused(_, e) => return Err(e.into()),
                _ => {}
            }
        }
    }
    client.shutdown();
    Ok(())
}
