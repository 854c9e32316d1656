//! MonClient and V1Stream against a scripted monitor (our own v1 server machine).

use std::net::TcpListener;

use super::*;
use crate::mon::{MMonCommand, MMonMap};
use crate::wire::WriteLe;

/// A scripted monitor: our own server machine answering with `answer`, for one client.
fn fake_mon(answer: impl Fn(&Message) -> Vec<Message> + Send + 'static) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        let Ok((stream, _)) = l.accept() else {
            return;
        };
        let Ok(mut s) = V1Stream::serve_as_monitor(stream, Duration::from_secs(10)) else {
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        // Bounded: at most 50 events or the deadline.
        for _ in 0..50 {
            match s.next_event(deadline, "client") {
                Ok(Event::Message(m)) => {
                    for reply in answer(&m) {
                        s.send(reply);
                    }
                    let _ = s.flush();
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    addr
}

fn monmap(fsid: Fsid) -> Message {
    let mut body = fsid.0.to_vec();
    body.put_le32(1);
    let mut mm = vec![9, 6];
    mm.put_le32(body.len() as u32);
    mm.extend_from_slice(&body);
    MMonMap { monmap: mm }.to_message()
}

#[test]
fn auth_refusal_is_a_typed_readable_error() {
    let addr = fake_mon(|m| {
        assert_eq!(m.ty, MAuth::TYPE);
        let r = MAuthReply {
            protocol: 0,
            result: -95,
            global_id: 0,
            result_bl: vec![],
            result_msg: String::new(),
        };
        vec![r.to_message()]
    });
    let e = MonClient::connect(addr, "client.admin", Duration::from_secs(5)).expect_err("refused");
    assert!(
        matches!(e, MonError::AuthRefused { result: -95, .. }),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with("monitor refused auth none (result -95): "),
        "{e}"
    );
}

#[test]
fn command_round_trip_against_a_scripted_monitor() {
    let fsid = Fsid([0x42; 16]);
    let addr = fake_mon(move |m| match m.ty {
        t if t == MAuth::TYPE => {
            let r = MAuthReply {
                protocol: 1,
                result: 0,
                global_id: 77,
                result_bl: vec![],
                result_msg: String::new(),
            };
            vec![r.to_message(), monmap(fsid)]
        }
        t if t == MMonCommand::TYPE => {
            let c = MMonCommand::decode(m).expect("command");
            let ok = c.fsid == fsid;
            let ack = MMonCommandAck {
                paxos: PaxosHeader::default(),
                r: if ok { 0 } else { -1 },
                rs: if ok {
                    String::new()
                } else {
                    "wrong fsid".into()
                },
                cmd: c.cmd,
                output: b"HEALTH_OK".to_vec(),
            };
            vec![ack.to_message().with_tid(m.tid)]
        }
        _ => vec![],
    });
    let mut c = MonClient::connect(addr, "client.admin", Duration::from_secs(5)).expect("connect");
    assert_eq!((c.fsid(), c.global_id()), (fsid, 77));
    let r = c.command(r#"{"prefix":"health"}"#).expect("reply");
    assert_eq!((r.r, r.output.as_slice()), (0, &b"HEALTH_OK"[..]));
    c.keepalive_round_trip().expect("keepalive");
}

#[test]
fn a_wrong_protocol_version_is_a_typed_badprotover_error() {
    let addr = fake_mon(|_| vec![]);
    let opts = MonClientOptions {
        protocol_version: 24,
        timeout: Duration::from_secs(5),
        ..Default::default()
    };
    let e = MonClient::connect_with(addr, &opts).expect_err("refused");
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
    assert!(e.to_string().contains("BADPROTOVER"), "{e}");
}

#[test]
fn a_silent_monitor_times_out_the_handshake() {
    // Accepts and never answers: the handshake timeout (the options' timeout) fires.
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    let holder = std::thread::spawn(move || l.accept().map(|(s, _)| s));
    let opts = MonClientOptions {
        timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let t = Instant::now();
    let e = MonClient::connect_with(addr, &opts).expect_err("times out");
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(
        matches!(
            &e,
            MonError::Timeout { .. }
                | MonError::Connection(CloseReason {
                    error: Error::HandshakeTimeout,
                    initiator: Initiator::Local,
                })
        ),
        "{e}"
    );
    drop(holder.join());
}

#[test]
fn close_sends_close_and_a_dropped_monitor_is_reported() {
    let fsid = Fsid([7; 16]);
    let auth_ok = move |m: &Message| {
        if m.ty != MAuth::TYPE {
            return vec![];
        }
        let r = MAuthReply {
            protocol: 1,
            result: 0,
            global_id: 5,
            result_bl: vec![],
            result_msg: String::new(),
        };
        vec![r.to_message(), monmap(fsid)]
    };
    // A monitor that authenticates us, then hangs up if `hang_up`, else waits for
    // the link to close and returns how.
    let serve = move |hang_up: bool| {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let mon = std::thread::spawn(move || {
            let (stream, _) = l.accept().expect("accept");
            let mut s = V1Stream::serve_as_monitor(stream, Duration::from_secs(10)).expect("serve");
            let deadline = Instant::now() + Duration::from_secs(10);
            for _ in 0..50 {
                match s.next_event(deadline, "client") {
                    Ok(Event::Message(m)) => {
                        for reply in auth_ok(&m) {
                            s.send(reply);
                        }
                        s.flush().expect("flush");
                        if hang_up && m.ty == MMonGetMap::TYPE {
                            s.shutdown();
                            return None;
                        }
                    }
                    Ok(Event::LinkClosed {
                        error, initiator, ..
                    }) => return Some((error, initiator)),
                    Ok(_) => {}
                    Err(_) => return None,
                }
            }
            None
        });
        (addr, mon)
    };
    // Our CLOSE ends the monitor side's link as initiated by the peer.
    let (addr, mon) = serve(false);
    let c = MonClient::connect(addr, "client.admin", Duration::from_secs(5)).expect("connect");
    assert_eq!((c.fsid(), c.global_id()), (fsid, 5));
    c.close();
    let (error, initiator) = mon.join().expect("mon thread").expect("closed");
    assert_eq!(initiator, Initiator::Peer);
    assert!(
        matches!(&error, Error::Transport(m) if m.contains("CLOSE")),
        "{error}"
    );
    // A monitor that goes away: the client reads EOF and says so.
    let (addr, mon) = serve(true);
    let mut c = MonClient::connect(addr, "client.admin", Duration::from_secs(5)).expect("connect");
    assert!(mon.join().expect("mon thread").is_none());
    let reason = c.wait_closed().expect("closed");
    assert_eq!(reason.initiator, Initiator::Peer);
    assert!(
        matches!(&reason.error, Error::Transport(m) if m.contains("closed by peer")),
        "{reason:?}"
    );
    let e = c.keepalive_round_trip().expect_err("closed");
    assert!(e.to_string().contains("closed by peer"), "{e}");
}

#[test]
fn bad_names_and_refused_connections_are_clear() {
    let e = MonClient::connect(
        "127.0.0.1:1".parse().unwrap(),
        "admin",
        Duration::from_secs(1),
    )
    .unwrap_err();
    assert!(e.to_string().contains("expected TYPE.ID"), "{e}");
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    let e = MonClient::connect(addr, "client.admin", Duration::from_secs(1)).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("cannot connect to monitor at v1:127.0.0.1:"),
        "{e}"
    );
}
