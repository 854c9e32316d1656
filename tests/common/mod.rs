//! Helpers shared by the integration tests: logging, messages that carry an index,
//! bounded waits, an echo dispatcher.
#![allow(dead_code, clippy::disallowed_methods)]

pub mod cli;
pub mod relay;

use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use simplemsgr::runtime::{ConnectionRef, Dispatcher, Event};
use simplemsgr::wire::message::Message;

/// Log to stderr when RUST_LOG is set (once per test binary).
pub fn init_log() {
    let _ = env_logger::builder().is_test(true).try_init();
}

/// A message whose front starts with `i` (le32), `size` bytes long.
pub fn msg(i: u32, size: usize) -> Message {
    let mut front = i.to_le_bytes().to_vec();
    front.resize(size.max(4), (i % 251) as u8);
    Message::new(0x4000, front)
}

/// The index carried by a message from [`msg`].
pub fn index(m: &Message) -> u32 {
    u32::from_le_bytes([m.front[0], m.front[1], m.front[2], m.front[3]])
}

/// Collect the indices of `n` messages, failing after `timeout`.
pub fn recv_messages(events: &Receiver<Event>, n: usize, timeout: Duration) -> Vec<u32> {
    let deadline = Instant::now() + timeout;
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(Event::Message(_, m)) => got.push(index(&m)),
            Ok(_) => {}
            Err(_) => panic!("timed out with {} of {n} messages", got.len()),
        }
    }
    got
}

/// Wait for the first event matching `pred`, or `None` after `timeout`.
pub fn wait_for(
    events: &Receiver<Event>,
    timeout: Duration,
    pred: impl Fn(&Event) -> bool,
) -> Option<Event> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match events.recv_timeout(left) {
            Ok(e) if pred(&e) => return Some(e),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// Sends every message back on the connection it came from.
pub struct Echo;

impl Dispatcher for Echo {
    fn dispatch(&self, conn: &ConnectionRef, msg: Message) {
        let _ = conn.send(msg);
    }
}
