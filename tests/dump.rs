//! `simplemsgr dump`: one-direction decoding of msgr2 traffic recorded between two real
//! messengers through a relay (plain, and secure with a key log), of the real ceph CLI's
//! v1 capture, and clear offset-naming errors on truncated or garbage input.
#![allow(clippy::disallowed_methods)]

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use simplemsgr::auth::{AuthConfig, Keyring, Method, Secret};
use simplemsgr::crypto::KeyLogFile;
use simplemsgr::dump::{decode_stream, DumpOptions, Record};
use simplemsgr::proto::{Mode, Policy};
use simplemsgr::runtime::keylog::FileKeyLog;
use simplemsgr::runtime::{ChannelDispatcher, Messenger};
use simplemsgr::wire::msgr2::PROTO_FEATURE_STRUCTURED;
use simplemsgr::wire::types::{EntityType, Timespec};

use common::relay::{Direction, Pass, Record as Rec, Relay};
use common::{msg, recv_messages, Echo};

const MESSAGES: u32 = 21;
const BIG: usize = 1 << 20;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("simplemsgr-dump-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

/// A bench-like exchange (20 small messages and one 1 MiB data section, echoed back)
/// between two messengers through a recording relay. Returns (c2s, s2c).
fn record_traffic(secure: bool, keylog: Option<&PathBuf>) -> (Vec<u8>, Vec<u8>) {
    common::init_log();
    let key = Secret::new(&[0x5a; 16]);
    let mut server = Messenger::builder("osd.0".parse().unwrap())
        .bind("127.0.0.1:0".parse().unwrap())
        .default_policy(Policy::stateful_server())
        .protocol_features(PROTO_FEATURE_STRUCTURED);
    let (cd, events) = ChannelDispatcher::new();
    let mut client = Messenger::builder("client.1".parse().unwrap())
        .default_policy(Policy::lossless_client())
        .protocol_features(PROTO_FEATURE_STRUCTURED);
    if secure {
        let mut keyring = Keyring::new();
        keyring.insert("client.admin", key.clone(), Timespec { sec: 1, nsec: 0 });
        let mut sa = AuthConfig::none();
        sa.server_methods = vec![Method::SECRET];
        sa.keys = Some(Arc::new(keyring));
        let mut ca = AuthConfig::none();
        ca.client_methods = vec![Method::SECRET];
        ca.name = "client.admin".into();
        ca.key = Some(key);
        server = server.auth(sa).mode(Mode::Secure, Mode::Secure);
        client = client.auth(ca).mode(Mode::Secure, Mode::Secure);
    }
    if let Some(path) = keylog {
        let _ = std::fs::remove_file(path);
        client = client.key_log(Arc::new(FileKeyLog::open(path).expect("key log file")));
    }
    let server = server.start(Arc::new(Echo)).unwrap();
    let (rec, recording) = Rec::new(Box::new(Pass));
    let relay = Relay::start(server.listen_addr().unwrap(), Box::new(rec));
    let client = client.start(Arc::new(cd)).unwrap();
    let conn = client.connect(relay.addr(), EntityType::OSD).unwrap();
    for i in 0..MESSAGES - 1 {
        conn.send(msg(i, if i % 2 == 0 { 64 } else { 4096 }))
            .unwrap();
    }
    let data: Vec<u8> = (0..BIG).map(|j| (j % 249) as u8).collect();
    conn.send(msg(MESSAGES - 1, 64).with_data(data)).unwrap();
    let mut got = recv_messages(&events, MESSAGES as usize, Duration::from_secs(20));
    got.sort_unstable();
    assert_eq!(got, (0..MESSAGES).collect::<Vec<_>>());
    client.shutdown();
    server.shutdown();
    assert!(client.wait(Duration::from_secs(5)));
    assert!(server.wait(Duration::from_secs(5)));
    assert!(relay.wait_quiet(Duration::from_secs(5)));
    (
        recording.bytes(0, Direction::ClientToServer),
        recording.bytes(0, Direction::ServerToClient),
    )
}

fn decode(bytes: &[u8], keylog: Option<&PathBuf>) -> (Vec<Record>, Result<(), String>) {
    let opts = DumpOptions {
        proto: None,
        keylog: keylog.map(|p| KeyLogFile::parse(&std::fs::read_to_string(p).unwrap()).unwrap()),
    };
    let mut recs = Vec::new();
    let r = decode_stream(bytes, &opts, &mut |r| recs.push(r.clone()));
    (recs, r.map(|_| ()).map_err(|e| e.to_string()))
}

fn count(recs: &[Record], kind: &str) -> usize {
    recs.iter().filter(|r| r.kind == kind).count()
}

/// Each direction: every echoed message is a MSG (the 1 MiB one a CHUNKED MSG + 16 CHUNKs
/// of 64 KiB), and the records tile the stream exactly.
fn check_direction(recs: &[Record], len: usize) {
    assert_eq!(recs[0].kind, "BANNER");
    assert_eq!(count(recs, "MSG"), MESSAGES as usize, "{recs:#?}");
    assert_eq!(count(recs, "CHUNK"), BIG / (64 * 1024));
    let chunked: Vec<&Record> = recs
        .iter()
        .filter(|r| r.to_line().contains("chunked=yes"))
        .collect();
    assert_eq!(chunked.len(), 1);
    let mut pos = 0;
    for r in recs {
        assert_eq!(r.offset, pos, "{}", r.to_line());
        pos += r.len;
    }
    assert_eq!(pos, len as u64);
}

#[test]
fn plain_msgr2_capture_decodes_in_each_direction() {
    let (c2s, s2c) = record_traffic(false, None);
    for bytes in [&c2s, &s2c] {
        let (recs, r) = decode(bytes, None);
        r.unwrap();
        check_direction(&recs, bytes.len());
        assert!(recs[0].to_line().contains("supported=0x1"));
    }
    // Truncated: what decoded is reported, then the error names the offset of the cut frame.
    let cut = c2s.len() - 5;
    let (recs, r) = decode(&c2s[..cut], None);
    let e = r.unwrap_err();
    let last = recs.last().unwrap();
    let at = last.offset + last.len;
    assert!(
        e.contains(&format!("byte offset {at}:")) && e.contains("truncated"),
        "{e}"
    );
    // Garbage after the last frame.
    let mut g = c2s.clone();
    g.extend_from_slice(b"\xee\xee\xee garbage");
    let (recs, r) = decode(&g, None);
    assert_eq!(count(&recs, "MSG"), MESSAGES as usize);
    let e = r.unwrap_err();
    assert!(e.contains(&format!("byte offset {}:", c2s.len())), "{e}");
}

#[test]
fn secure_msgr2_capture_decrypts_with_the_key_log() {
    let keylog = tmp("secure.keylog");
    let (c2s, s2c) = record_traffic(true, Some(&keylog));
    let text = std::fs::read_to_string(&keylog).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    for bytes in [&c2s, &s2c] {
        // Without keys: the plain part decodes, then a clear error after AUTH_DONE.
        let (recs, r) = decode(bytes, None);
        let e = r.unwrap_err();
        let done = recs
            .iter()
            .find(|r| r.kind == "AUTH_DONE")
            .expect("AUTH_DONE");
        assert!(
            e.contains(&format!("byte offset {}:", done.offset + done.len))
                && e.contains("key-log"),
            "{e}"
        );
        // With the key log: everything.
        let (recs, r) = decode(bytes, Some(&keylog));
        r.unwrap();
        check_direction(&recs, bytes.len());
        assert!(recs
            .iter()
            .filter(|r| r.kind == "MSG")
            .all(|r| r.to_line().contains("form=encrypted")));
    }
    // The CLI on a file, as JSON lines.
    let file = tmp("secure.c2s");
    std::fs::write(&file, &c2s).unwrap();
    let out = cli(&[
        file.to_str().unwrap(),
        "--keylog",
        keylog.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.matches("\"frame\":\"CHUNK\"").count(), 16);
    assert!(stdout
        .lines()
        .all(|l| l.starts_with('{') && l.ends_with('}')));
    // Truncated through the CLI: lines first, then the error with the offset, exit 1.
    std::fs::write(&file, &c2s[..c2s.len() - 7]).unwrap();
    let out = cli(&[file.to_str().unwrap(), "--keylog", keylog.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("decoding failed at byte offset"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(" MSG "));
}

fn cli(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_simplemsgr"))
        .arg("dump")
        .args(args)
        .output()
        .expect("run simplemsgr dump")
}

fn fixture() -> String {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ceph-v1-status.pcap"
    )
    .to_string()
}

#[test]
fn v1_capture_of_the_ceph_cli_decodes_in_each_direction() {
    // Client to monitor.
    let out = cli(&[&fixture(), "--port", "6789", "--direction", "to"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let to = String::from_utf8(out.stdout).unwrap();
    assert_eq!(to.matches("# stream").count(), 2, "two connections:\n{to}");
    assert!(to.contains(" CONNECT "));
    assert!(to.contains("type=17"), "MAuth:\n{to}");
    assert!(to.contains("type=50"), "MMonCommand:\n{to}");
    assert!(!to.contains("crc=BAD"));
    // Monitor to client, as JSON lines.
    let out = cli(&[
        &fixture(),
        "--port",
        "6789",
        "--direction",
        "from",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let from = String::from_utf8(out.stdout).unwrap();
    assert!(
        from.contains("\"frame\":\"CONNECT_REPLY\",\"tag\":\"SEQ\""),
        "{from}"
    );
    assert!(from.contains("\"type\":51"), "MMonCommandAck:\n{from}");
    assert!(from.contains("\"src\":\"mon.0\""));
    assert_eq!(from.matches("\"stream\"").count(), 2);
    // Raw bytes of one direction, cut short: the error names the offset.
    let packets = simplemsgr::capture::read_packets(&std::fs::read(fixture()).unwrap()).unwrap();
    let segs = simplemsgr::capture::tcp_segments(&packets).unwrap();
    let port = segs
        .iter()
        .find(|s| s.dst.port() == 6789)
        .unwrap()
        .src
        .port();
    let s2c = simplemsgr::capture::reassemble(&segs, 6789, port).unwrap();
    let (recs, r) = decode(&s2c, None);
    r.unwrap();
    assert!(count(&recs, "MSG") >= 4);
    let (recs2, r) = decode(&s2c[..s2c.len() - 1], None);
    let e = r.unwrap_err();
    let last = recs2.last().unwrap();
    assert!(
        e.contains(&format!("byte offset {}:", last.offset + last.len)),
        "{e}"
    );
    assert_eq!(recs2.len(), recs.len() - 1);
}

/// `simplemsgr serve` and `simplemsgr bench ADDR` (plain msgr2), as separate processes,
/// through the recording relay: every direction of every connection decodes completely.
#[test]
fn bench_traffic_through_a_relay_decodes_in_each_direction() {
    use std::io::{BufRead, BufReader};
    let mut serve = Command::new(env!("CARGO_BIN_EXE_simplemsgr"))
        .args([
            "serve",
            "--bind",
            "127.0.0.1:0",
            "--duration-secs",
            "30",
            "-q",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start simplemsgr serve");
    let mut line = String::new();
    let stdout = serve.stdout.take().expect("serve stdout");
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("serve prints its address");
    let addr: std::net::SocketAddr = line
        .split_whitespace()
        .find_map(|w| w.trim_end_matches(',').parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let (rec, recording) = Rec::new(Box::new(Pass));
    let relay = Relay::start(addr, Box::new(rec));
    let out = Command::new(env!("CARGO_BIN_EXE_simplemsgr"))
        .args(["bench", &relay.addr().to_string()])
        .args([
            "--size", "64,4k", "--count", "200", "--conns", "1", "--mode", "plain",
        ])
        .args(["--no-raw", "--budget-secs", "10", "-q"])
        .output()
        .expect("run simplemsgr bench");
    let _ = serve.kill();
    let _ = serve.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(relay.wait_quiet(Duration::from_secs(5)));
    let conns = relay.connections();
    assert!(conns >= 1);
    let mut msgs = 0;
    for c in 0..conns {
        for dir in [Direction::ClientToServer, Direction::ServerToClient] {
            let bytes = recording.bytes(c, dir);
            let (recs, r) = decode(&bytes, None);
            r.unwrap_or_else(|e| panic!("connection {c} {dir:?}: {e}"));
            let mut pos = 0;
            for r in &recs {
                assert_eq!(r.offset, pos);
                pos += r.len;
            }
            assert_eq!(pos, bytes.len() as u64);
            msgs += count(&recs, "MSG");
        }
    }
    assert!(msgs >= 2 * 200, "{msgs} messages in the capture");
}
