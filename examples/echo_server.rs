//! An echo server: every message is sent back on the connection it came from.
//!
//! ```sh
//! cargo run --example echo_server -- 127.0.0.1:6800
//! cargo run --example echo_client -- 127.0.0.1:6800
//! ```
#![allow(clippy::disallowed_methods)]

use std::sync::Arc;

use simplemsgr::proto::Policy;
use simplemsgr::runtime::{ConnectionRef, Dispatcher, Messenger};
use simplemsgr::wire::message::Message;

struct Echo;

impl Dispatcher for Echo {
    fn dispatch(&self, conn: &ConnectionRef, msg: Message) {
        // The peer may be gone already; then there is nobody to answer.
        let _ = conn.send(msg);
    }

    fn handle_accept(&self, conn: &ConnectionRef) {
        println!("accepted {conn:?}");
    }

    fn handle_remote_reset(&self, conn: &ConnectionRef) {
        println!("{conn:?} reset its session");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let bind = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:6800".into());
    let server = Messenger::builder("osd.0".parse()?)
        .bind(bind.parse()?)
        .default_policy(Policy::stateful_server())
        .start(Arc::new(Echo))?;
    println!(
        "echo server {} listening on {}",
        server.name(),
        server.my_addr()
    );
    loop {
        std::thread::sleep(std::time::Duration::from_secs(10));
        println!("{}", server.stats());
    }
}
