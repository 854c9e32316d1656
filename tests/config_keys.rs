//! Every configuration key, set to a value other than its default that a user could
//! choose and still expect a working messenger, on both ends of a connection: small
//! messages and a chunked 1 MiB message still come back intact. (`ms_crc_data=false`
//! used to break every plain connection; this is the net that would have caught it.)
// Wall-clock deadlines are fine outside the sans-IO core.
#![allow(clippy::disallowed_methods)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use simplemsgr::proto::Policy;
use simplemsgr::runtime::config::KEYS;
use simplemsgr::runtime::{ChannelDispatcher, Event, Messenger};
use simplemsgr::wire::msgr2::PROTO_FEATURE_STRUCTURED;
use simplemsgr::wire::types::EntityType;

use common::{index, msg, Echo};

/// The value each key is tried with (`None`: set on its own by the test).
fn value(key: &str) -> Option<&'static str> {
    Some(match key {
        "name" | "ms_bind_addr" => return None,
        "ms_rwthread_stack_bytes" => "128K",
        "ms_tcp_listen_backlog" => "16",
        "ms_tcp_nodelay" => "false",
        "ms_tcp_rcvbuf" | "ms_tcp_sndbuf" => "64K",
        "ms_tcp_keepalive_time" => "30",
        "ms_keepalive_interval" => "0.02",
        "ms_connection_idle_timeout" | "ms_tcp_read_timeout" | "ms_standby_timeout" => "30",
        "ms_connection_ready_timeout" | "ms_handshake_timeout" => "5",
        "ms_initial_backoff" => "0.01",
        "ms_max_backoff" => "0.5",
        "ms_backoff_jitter" => "0",
        // Smaller than the big message: the throttle must still let it through.
        "ms_dispatch_throttle_bytes" => "64K",
        "ms_dispatch_throttle_messages" => "1",
        "ms_max_front_len" | "ms_max_middle_len" => "64K",
        "ms_max_data_len" => "2M",
        "ms_crc_data" | "ms_crc_header" => "false",
        "ms_chunk_yield" => "false",
        "ms_chunked_sockbuf" | "ms_chunked_notsent_lowat" => "0",
        "ms_max_connections" => "4",
        "ms_max_handshaking" => "2",
        "ms_handshake_evict_after" => "0",
        "ms_max_connections_per_ip" => "2",
        "ms_inject_socket_failures" => "40",
        "ms_inject_delay_max" => "0.005",
        "ms_inject_delay_probability" => "0.2",
        "ms_inject_internal_delays" => "0.001",
        "ms_inject_seed" => "5",
        other => panic!("no test value for the new key {other}: add one here"),
    })
}

/// Start a pair with `key=val` on both ends and echo 8 small messages and a 1 MiB one.
fn echo_with(key: &str, val: &str) -> Result<(), String> {
    let big: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 239) as u8).collect();
    let mut b = Messenger::builder("osd.0".parse().unwrap())
        .bind("127.0.0.1:0".parse().unwrap())
        .default_policy(Policy::stateful_server())
        .protocol_features(PROTO_FEATURE_STRUCTURED);
    b.config_mut().set(key, val).map_err(|e| e.to_string())?;
    // Lossless client: with injected failures the messages are replayed, not lost.
    let srv = b.start(Arc::new(Echo)).map_err(|e| e.to_string())?;
    let mut b = Messenger::builder("client.1".parse().unwrap())
        .default_policy(Policy::lossless_client())
        .protocol_features(PROTO_FEATURE_STRUCTURED);
    b.config_mut().set(key, val).map_err(|e| e.to_string())?;
    let (d, events) = ChannelDispatcher::new();
    let cli = b.start(Arc::new(d)).map_err(|e| e.to_string())?;
    let result = (|| {
        let conn = cli
            .connect(srv.listen_addr().unwrap(), EntityType::OSD)
            .map_err(|e| e.to_string())?;
        for i in 0..8 {
            conn.send(msg(i, 200)).map_err(|e| e.to_string())?;
        }
        conn.send(msg(8, 40).with_data(big.clone()))
            .map_err(|e| e.to_string())?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut got = Vec::new();
        while got.len() < 9 {
            let left = deadline.saturating_duration_since(Instant::now());
            match events.recv_timeout(left) {
                Ok(Event::Message(_, m)) => {
                    if index(&m) == 8 && m.data[..] != big[..] {
                        return Err("the 1 MiB echo arrived altered".into());
                    }
                    got.push(index(&m));
                }
                Ok(_) => {}
                Err(_) => return Err(format!("only {got:?} came back within 30 s")),
            }
        }
        got.sort_unstable();
        if got != (0..9).collect::<Vec<_>>() {
            return Err(format!("echoes {got:?}"));
        }
        Ok(())
    })();
    cli.shutdown();
    srv.shutdown();
    result
}

#[test]
fn every_key_at_a_non_default_value_still_echoes() {
    common::init_log();
    let mut failures = Vec::new();
    for key in KEYS {
        let Some(val) = value(key) else { continue };
        if let Err(e) = echo_with(key, val) {
            failures.push(format!("{key}={val}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
