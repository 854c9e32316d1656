//! Interop with a real Ceph monitor (Pacific's ceph-mon) over the legacy v1 protocol.
//!
//! If `SIMPLEMSGR_CEPH_MON` (a v1 address such as `v1:127.0.0.1:16789`) is unset, the
//! first test to run installs (if needed) and starts a throwaway auth-none monitor with
//! `scripts/ceph-test-cluster.sh` in `target/ceph-test-mon`, once per test binary. If that
//! fails, every test fails with the script's message: these tests never skip. Stop the
//! monitor afterwards with `scripts/ceph-test-cluster.sh stop target/ceph-test-mon`.
//! With `SIMPLEMSGR_CEPH_MON` set, `SIMPLEMSGR_CEPH_FSID` may give the expected fsid.
#![allow(clippy::disallowed_methods)]

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use simplemsgr::mon::{auth_protocol, AuthInitialRequest, Fsid, MAuth, MonMessage};
use simplemsgr::proto::{Error, Event, Initiator};
use simplemsgr::runtime::monc::{MonClient, MonClientOptions, MonError, V1Stream};
use simplemsgr::wire::message::Message;
use simplemsgr::wire::types::{EntityName, EntityType};
use simplemsgr::wire::v1::{features, Frame, RawMsg};

const TIMEOUT: Duration = Duration::from_secs(10);

struct Mon {
    addr: SocketAddr,
    fsid: Option<Fsid>,
}

fn mon() -> &'static Mon {
    static MON: OnceLock<Result<Mon, String>> = OnceLock::new();
    match MON.get_or_init(start_mon) {
        Ok(m) => m,
        Err(e) => panic!("no Ceph monitor for the interop tests: {e}"),
    }
}

fn parse_v1(s: &str) -> Result<SocketAddr, String> {
    s.trim()
        .trim_start_matches("v1:")
        .parse()
        .map_err(|_| format!("not a v1 address: {s:?}"))
}

fn start_mon() -> Result<Mon, String> {
    let _ = env_logger::builder().is_test(true).try_init();
    if let Ok(a) = std::env::var("SIMPLEMSGR_CEPH_MON") {
        let fsid = match std::env::var("SIMPLEMSGR_CEPH_FSID") {
            Ok(f) => Some(
                f.parse()
                    .map_err(|e| format!("SIMPLEMSGR_CEPH_FSID: {e}"))?,
            ),
            Err(_) => None,
        };
        return Ok(Mon {
            addr: parse_v1(&a)?,
            fsid,
        });
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("scripts/ceph-test-cluster.sh");
    let dir = root.join("target/ceph-test-mon");
    let run = |args: &[&str]| -> Result<String, String> {
        let t = Instant::now();
        let out = Command::new("bash")
            .arg(&script)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        eprintln!(
            "ceph-test-cluster.sh {args:?}: {:.2} s",
            t.elapsed().as_secs_f64()
        );
        if !out.status.success() {
            return Err(format!(
                "`{} {}` failed ({}): {}",
                script.display(),
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    run(&["install"])?;
    let dir_s = dir.to_string_lossy().into_owned();
    let out = run(&["start", &dir_s])?;
    let line = out.lines().last().ok_or("the script printed no address")?;
    let fsid_text =
        std::fs::read_to_string(dir.join("fsid")).map_err(|e| format!("reading the fsid: {e}"))?;
    let fsid = fsid_text.parse().map_err(|e| format!("fsid file: {e}"))?;
    Ok(Mon {
        addr: parse_v1(line)?,
        fsid: Some(fsid),
    })
}

/// Returns (seq_exchange, lossy, negotiated features).
fn handshake(opts: MonClientOptions) -> (bool, bool, u64) {
    let mut s =
        V1Stream::connect_to_monitor(mon().addr, &opts).expect("TCP connect to the monitor");
    let deadline = Instant::now() + TIMEOUT;
    // The first event of a successful handshake is Connected.
    match s.next_event(deadline, "handshake").expect("handshake") {
        Event::Connected { resumed: false } => {
            let conn = s.connection();
            let info = conn.link_info().expect("the link");
            assert_eq!(
                info.peer_addr.and_then(|a| a.addr),
                Some(mon().addr),
                "the monitor's legacy address"
            );
            (info.seq_exchange, conn.policy().lossy, info.features)
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn handshake_seq_variant() {
    let (seq, lossy, f) = handshake(MonClientOptions::default());
    assert!(seq, "RECONNECT_SEQ offered: the monitor answers SEQ");
    assert!(lossy, "the monitor makes client sessions lossy");
    assert_eq!(f, features::PACIFIC_ALL);
}

#[test]
fn handshake_ready_variant_without_reconnect_seq() {
    let opts = MonClientOptions {
        features: features::PACIFIC_ALL & !features::RECONNECT_SEQ,
        ..Default::default()
    };
    let (seq, _, f) = handshake(opts.clone());
    assert!(!seq, "without RECONNECT_SEQ the monitor answers READY");
    assert_eq!(f & features::RECONNECT_SEQ, 0);
    // And a whole session works that way too.
    let mut c = MonClient::connect_with(mon().addr, &opts).expect("auth over a READY handshake");
    assert_eq!(c.command(r#"{"prefix":"fsid"}"#).expect("fsid").r, 0);
}

#[test]
fn too_few_features_is_a_clear_features_error() {
    let opts = MonClientOptions {
        features: 0x1,
        ..Default::default()
    };
    let e = MonClient::connect_with(mon().addr, &opts).expect_err("the monitor must refuse");
    let MonError::FeaturesRequired { missing } = e else {
        panic!("expected FeaturesRequired, got {e}")
    };
    assert_ne!(missing, 0);
    assert_eq!(missing & 0x1, 0, "we offered bit 0");
    assert_eq!(
        missing & !features::PACIFIC_ALL,
        0,
        "only real features are reported"
    );
    let text = e.to_string();
    assert!(text.starts_with("monitor requires features 0x"), "{text}");
    eprintln!("{text}");
}

#[test]
fn wrong_protocol_version_is_a_clear_badprotover_error() {
    let opts = MonClientOptions {
        protocol_version: 24,
        ..Default::default()
    };
    let e = MonClient::connect_with(mon().addr, &opts).expect_err("the monitor must refuse");
    assert!(
        matches!(
            e,
            MonError::ProtocolVersion {
                ours: 24,
                theirs: 15
            }
        ),
        "{e}"
    );
    eprintln!("{e}");
}

#[test]
fn auth_none_assigns_a_global_id_and_learns_the_fsid() {
    let c = MonClient::connect(mon().addr, "client.admin", TIMEOUT).expect("connect");
    assert!(c.global_id() > 0, "global id {}", c.global_id());
    if let Some(f) = mon().fsid {
        assert_eq!(c.fsid(), f);
    }
    assert_ne!(c.fsid(), Fsid::default());
}

#[test]
fn status_and_mon_dump_carry_the_fsid() {
    let mut c = MonClient::connect(mon().addr, "client.admin", TIMEOUT).expect("connect");
    let fsid = c.fsid().to_string();
    if let Some(f) = mon().fsid {
        assert_eq!(fsid, f.to_string());
    }
    let st = c
        .command(r#"{"prefix":"status","format":"json"}"#)
        .expect("status");
    assert_eq!(st.r, 0, "rs: {}", st.rs);
    let text = String::from_utf8_lossy(&st.output);
    assert!(text.contains(&format!("\"fsid\":\"{fsid}\"")), "{text}");
    let dump = c.command(r#"{"prefix":"mon dump"}"#).expect("mon dump");
    assert_eq!(dump.r, 0, "rs: {}", dump.rs);
    let text = String::from_utf8_lossy(&dump.output);
    assert!(text.contains(&format!("fsid {fsid}")), "{text}");
    assert!(dump.rs.starts_with("dumped monmap epoch"), "{}", dump.rs);
    // The monitor's own error text comes back in rs.
    let bad = c.command(r#"{"prefix":"no such command"}"#).expect("reply");
    assert!(bad.r < 0);
    assert!(!bad.rs.is_empty());
    let (v, _) = c.get_version("monmap").expect("get_version");
    assert!(v >= 1);
}

#[test]
fn keepalive2_round_trip() {
    let mut c = MonClient::connect(mon().addr, "client.admin", TIMEOUT).expect("connect");
    for _ in 0..3 {
        let rtt = c.keepalive_round_trip().expect("keepalive2 ack");
        assert!(rtt < TIMEOUT);
    }
}

#[test]
fn corrupted_header_crc_makes_the_monitor_drop_us() {
    let mut c = MonClient::connect(mon().addr, "client.admin", TIMEOUT).expect("connect");
    let m = Message::new(simplemsgr::mon::msg_type::MON_GET_VERSION, vec![0; 18]);
    let mut raw = RawMsg::from_message(
        &m,
        2,
        EntityName::new(EntityType::CLIENT, c.global_id()),
        true,
    );
    raw.header.crc ^= 0xdead_beef;
    let mut bytes = Vec::new();
    Frame::Msg(raw).encode(&mut bytes);
    c.stream().write_raw(&bytes).expect("write");
    let reason = c.wait_closed().expect("the monitor closes the connection");
    assert_eq!(reason.initiator, Initiator::Peer);
    assert!(
        matches!(&reason.error, Error::Transport(m) if m.contains("closed by peer")),
        "{reason:?}"
    );
    // And the client reports it on the next request.
    let e = c.keepalive_round_trip().expect_err("closed");
    assert!(e.to_string().contains("closed by peer"), "{e}");
}

/// The real `ceph` CLI connects to our v1 server machine; its first message is MAuth.
#[test]
fn ceph_cli_handshakes_with_our_server() {
    // The CLI must exist; the cluster start installs it.
    let _ = mon();
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut child = Command::new("timeout")
        .args([
            "20",
            "ceph",
            "-c",
            "/dev/null",
            "-m",
            &format!("v1:127.0.0.1:{port}"),
        ])
        .args([
            "--auth-client-required",
            "none",
            "--auth-cluster-required",
            "none",
            "--auth-service-required",
            "none",
        ])
        .args([
            "--connect-timeout",
            "5",
            "--log-file",
            "/dev/null",
            "--admin-socket",
            "",
            "-s",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the ceph CLI (installed by ceph-test-cluster.sh)");
    // A watchdog unblocks accept() if the CLI dies without connecting.
    let watchdog = {
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(15));
            let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        })
    };
    let (stream, _) = listener.accept().expect("accept");
    let mut s = V1Stream::serve_as_monitor(stream, TIMEOUT).expect("serve");
    let deadline = Instant::now() + TIMEOUT;
    let mut connected = None;
    let mut first = None;
    for _ in 0..20 {
        match s.next_event(deadline, "the ceph CLI's handshake and first message") {
            Ok(Event::Accepted { resumed: false }) => {
                let conn = s.connection();
                let info = conn.link_info().expect("the link");
                connected = Some((conn.peer().ty, info.features, info.seq_exchange));
            }
            Ok(Event::Message(m)) => {
                first = Some(m);
                break;
            }
            Ok(_) => {}
            Err(e) => {
                let _ = child.kill();
                let mut err = String::new();
                if let Some(mut e2) = child.stderr.take() {
                    let _ = e2.read_to_string(&mut err);
                }
                panic!("{e}; ceph stderr: {err}");
            }
        }
    }
    s.shutdown();
    let _ = child.kill();
    let _ = child.wait();
    drop(watchdog);
    let (peer_type, f, seq) = connected.expect("handshake completed");
    assert_eq!(peer_type, EntityType::CLIENT);
    assert_eq!(
        f,
        features::PACIFIC_ALL,
        "the 16.2 CLI offers Pacific's full set"
    );
    assert!(seq, "the CLI offers RECONNECT_SEQ");
    let m = first.expect("a first message");
    assert_eq!(m.ty, 17, "the first message is MAuth");
    let auth = MAuth::decode(&m).expect("MAuth decodes");
    assert_eq!(auth.protocol, auth_protocol::UNKNOWN);
    let req = AuthInitialRequest::decode(&auth.auth_payload).expect("initial auth payload");
    assert_eq!(
        req.supported,
        vec![auth_protocol::NONE],
        "auth none was required on the CLI"
    );
    assert_eq!(req.name.to_string(), "client.admin");
    assert_eq!(m.src.ty, EntityType::CLIENT);
}
