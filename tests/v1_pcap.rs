//! Decode a real capture of `ceph -s` over msgr v1 (Pacific CLI against a Pacific
//! monitor, `tests/fixtures/ceph-v1-status.pcap`): every frame of both directions of
//! every connection decodes, passes its crc checks, and re-encodes to the same bytes.

#![allow(clippy::disallowed_methods)]

use std::collections::BTreeMap;

use simplemsgr::capture::{read_packets, reassemble, tcp_segments};
use simplemsgr::mon::{
    msg_type, AuthInitialRequest, MAuth, MAuthReply, MMonCommand, MMonCommandAck, MMonMap,
    MMonSubscribe, MonMessage,
};
use simplemsgr::wire::message::Message;
use simplemsgr::wire::types::{EntityAddr, LEGACY_ADDR_LEN};
use simplemsgr::wire::v1::banner::{read_banner, read_server_hello};
use simplemsgr::wire::v1::{features, ConnectMsg, ConnectReply, Frame, Limits, Tag, BANNER};
use simplemsgr::wire::{Codec, Reader};

const MON_PORT: u16 = 6789;

fn capture() -> Vec<u8> {
    std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ceph-v1-status.pcap"
    ))
    .expect("fixture")
}

/// What one direction of one connection carried.
#[derive(Default, Debug)]
struct Seen {
    messages: Vec<Message>,
    keepalive2: usize,
    keepalive2_ack: usize,
    acks: usize,
    close: usize,
}

/// Decode post-handshake frames from `r` to the end, checking crcs and exact re-encoding.
fn frames(r: &mut Reader<'_>, with_sig: bool, seen: &mut Seen, reencoded: &mut Vec<u8>) {
    // Bounded: every frame consumes at least one byte.
    while !r.is_empty() {
        let before = r.rest();
        let (frame, used) = Frame::parse(before, with_sig, &Limits::default())
            .expect("frame decodes")
            .expect("the capture holds complete frames");
        let mut again = Vec::new();
        frame.encode(&mut again);
        assert_eq!(
            again,
            &before[..used],
            "frame {:?} re-encodes exactly",
            frame.tag()
        );
        reencoded.extend_from_slice(&again);
        r.take(used, "frame").expect("consumed");
        match frame {
            Frame::Msg(raw) => {
                raw.verify().expect("header, front, middle and data crcs");
                assert!(raw.header.crc_ok());
                assert_eq!(raw.footer.sig, Some(0), "no cephx signatures on auth none");
                assert_eq!(raw.footer.flags & 1, 1, "COMPLETE");
                seen.messages.push(raw.to_message());
            }
            Frame::Keepalive2(_) => seen.keepalive2 += 1,
            Frame::Keepalive2Ack(_) => seen.keepalive2_ack += 1,
            Frame::Ack(_) => seen.acks += 1,
            Frame::Close => seen.close += 1,
            Frame::Keepalive => {}
        }
    }
}

/// Decode one connection. Returns (client-to-server, server-to-client).
fn decode_connection(c2s: &[u8], s2c: &[u8]) -> (Seen, Seen) {
    let (mut cs, mut sc) = (Seen::default(), Seen::default());
    let mut rc = Reader::new(c2s);
    let mut rs = Reader::new(s2c);
    let mut c_again = Vec::new();
    let mut s_again = Vec::new();

    // Banner and addresses.
    read_banner(&mut rc).expect("client banner");
    c_again.extend_from_slice(BANNER);
    let (server, client_seen) = read_server_hello(&mut rs).expect("server banner + addresses");
    assert_eq!(server.addr.map(|a| a.port()), Some(MON_PORT));
    assert_eq!(server.nonce, 0);
    s_again.extend_from_slice(BANNER);
    server.encode_legacy(&mut s_again);
    client_seen.encode_legacy(&mut s_again);
    let client = EntityAddr::read_legacy(&mut rc).expect("client address");
    assert_eq!(
        client.addr.map(|a| a.port()),
        Some(0),
        "the CLI sends port 0"
    );
    client.encode_legacy(&mut c_again);
    assert_eq!(c_again.len(), BANNER.len() + LEGACY_ADDR_LEN);

    // connect / connect_reply until READY or SEQ (bounded by the stream length).
    let (connect, reply) = loop {
        let c = ConnectMsg::read(&mut rc).expect("connect");
        c.encode(&mut c_again);
        let reply = ConnectReply::read(&mut rs).expect("connect_reply");
        reply.encode(&mut s_again);
        if reply.tag == Tag::READY || reply.tag == Tag::SEQ {
            break (c, reply);
        }
    };
    assert_eq!(connect.features, features::PACIFIC_ALL);
    assert_eq!(connect.host_type, 8);
    assert_eq!(connect.protocol_version, 15);
    // The bootstrap connection asks for 0, the main one for LOSSY; the server decides (below).
    assert!(connect.flags <= 1, "connect flags {}", connect.flags);
    assert!(connect.authorizer.is_empty());
    assert_eq!(reply.tag, Tag::SEQ, "the CLI offers RECONNECT_SEQ");
    assert_eq!(reply.features, features::PACIFIC_ALL);
    assert_eq!(reply.connect_seq, connect.connect_seq + 1);
    assert_eq!(
        reply.flags, 1,
        "the monitor makes client sessions lossy whatever was asked"
    );
    // SEQ: le64 each way, both 0 on a new session.
    let server_in = rs.le64("server in_seq").expect("server in_seq");
    let client_in = rc.le64("client in_seq").expect("client in_seq");
    assert_eq!((server_in, client_in), (0, 0));
    s_again.extend_from_slice(&server_in.to_le_bytes());
    c_again.extend_from_slice(&client_in.to_le_bytes());

    let with_sig = connect.features & reply.features & features::MSG_AUTH != 0;
    assert!(with_sig, "both sides have MSG_AUTH: 21-byte footers");
    frames(&mut rc, with_sig, &mut cs, &mut c_again);
    frames(&mut rs, with_sig, &mut sc, &mut s_again);
    // The whole stream, rebuilt piece by piece, is byte-identical.
    assert_eq!(c_again, c2s);
    assert_eq!(s_again, s2c);
    (cs, sc)
}

fn count(types: &[u16]) -> BTreeMap<u16, usize> {
    let mut m = BTreeMap::new();
    for t in types {
        *m.entry(*t).or_default() += 1;
    }
    m
}

#[test]
fn every_frame_of_the_status_capture_decodes_and_reencodes() {
    let packets = read_packets(&capture()).expect("pcapng reads");
    let segs = tcp_segments(&packets).expect("TCP segments");
    let mut client_ports: Vec<u16> = segs
        .iter()
        .filter(|s| s.dst.port() == MON_PORT)
        .map(|s| s.src.port())
        .collect();
    client_ports.sort_unstable();
    client_ports.dedup();
    assert_eq!(client_ports.len(), 2, "two connections in the capture");

    let (mut c_types, mut s_types) = (Vec::new(), Vec::new());
    let (mut c_msgs, mut s_msgs) = (Vec::new(), Vec::new());
    let mut keepalives = 0;
    for port in &client_ports {
        let c2s = reassemble(&segs, *port, MON_PORT).expect("client stream");
        let s2c = reassemble(&segs, MON_PORT, *port).expect("server stream");
        let (cs, sc) = decode_connection(&c2s, &s2c);
        // Sequence numbers run from 1 in each direction of each connection.
        for seen in [&cs, &sc] {
            let seqs: Vec<u64> = seen.messages.iter().map(|m| m.seq).collect();
            assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
        }
        assert_eq!(cs.acks + sc.acks, 0, "lossy: no ACK frames");
        assert_eq!(
            cs.keepalive2, sc.keepalive2_ack,
            "every KEEPALIVE2 is answered"
        );
        keepalives += cs.keepalive2;
        c_types.extend(cs.messages.iter().map(|m| m.ty));
        s_types.extend(sc.messages.iter().map(|m| m.ty));
        c_msgs.extend(cs.messages);
        s_msgs.extend(sc.messages);
    }
    assert!(keepalives >= 1, "the CLI sends KEEPALIVE2 after connecting");

    // ceph-v1-facts §4: the message types seen (over the bootstrap and the main connection;
    // each authenticates, hence two AUTH / AUTH_REPLY).
    let c_count = count(&c_types);
    let s_count = count(&s_types);
    let want_c = BTreeMap::from([
        (msg_type::MON_SUBSCRIBE, 4),
        (msg_type::AUTH, 2),
        (msg_type::MON_COMMAND, 2),
    ]);
    let want_s = BTreeMap::from([
        (msg_type::MON_MAP, 4),
        (msg_type::AUTH_REPLY, 2),
        (msg_type::OSD_MAP, 1),
        (msg_type::MON_COMMAND_ACK, 2),
        (msg_type::CONFIG, 2),
        (msg_type::MGR_MAP, 1),
    ]);
    assert_eq!(c_count, want_c, "client to monitor");
    assert_eq!(s_count, want_s, "monitor to client");

    // The typed decoders agree with the capture.
    let auth = c_msgs
        .iter()
        .find(|m| m.ty == msg_type::AUTH)
        .expect("MAuth");
    let auth = MAuth::decode(auth).expect("MAuth decodes");
    let req = AuthInitialRequest::decode(&auth.auth_payload).expect("auth payload");
    assert_eq!(req.name.to_string(), "client.admin");
    for m in s_msgs.iter().filter(|m| m.ty == msg_type::AUTH_REPLY) {
        let r = MAuthReply::decode(m).expect("MAuthReply decodes");
        assert_eq!((r.protocol, r.result), (1, 0));
        assert!(r.global_id > 0);
    }
    let map = s_msgs
        .iter()
        .find(|m| m.ty == msg_type::MON_MAP)
        .expect("MMonMap");
    let summary = MMonMap::decode(map)
        .expect("MMonMap decodes")
        .summary()
        .expect("monmap prefix");
    assert_eq!(summary.struct_v, 9);
    assert_eq!(&map.front[10..26], &summary.fsid.0);
    for m in c_msgs.iter().filter(|m| m.ty == msg_type::MON_SUBSCRIBE) {
        let s = MMonSubscribe::decode(m).expect("MMonSubscribe decodes");
        assert!(!s.what.is_empty());
        assert_eq!(s.to_message().front, m.front, "re-encodes exactly");
    }
    let cmds: Vec<MMonCommand> = c_msgs
        .iter()
        .filter(|m| m.ty == msg_type::MON_COMMAND)
        .map(|m| MMonCommand::decode(m).expect("MMonCommand decodes"))
        .collect();
    assert!(
        cmds.iter().all(|c| c.fsid == summary.fsid),
        "commands carry the monmap's fsid"
    );
    assert!(cmds[0].cmd[0].contains("get_command_descriptions"));
    assert!(cmds[1].cmd[0].contains("\"status\""));
    let acks: Vec<MMonCommandAck> = s_msgs
        .iter()
        .filter(|m| m.ty == msg_type::MON_COMMAND_ACK)
        .map(|m| MMonCommandAck::decode(m).expect("MMonCommandAck decodes"))
        .collect();
    assert!(acks.iter().all(|a| a.r == 0));
    let status = acks.last().expect("status ack");
    assert!(String::from_utf8_lossy(&status.output).contains(&summary.fsid.to_string()));
    for (m, a) in s_msgs
        .iter()
        .filter(|m| m.ty == msg_type::MON_COMMAND_ACK)
        .zip(&acks)
    {
        let again = a.to_message();
        assert_eq!(
            (again.front.clone(), again.data.clone()),
            (m.front.clone(), m.data.clone())
        );
    }
}

/// The `# vector:` blocks of docs/PROTOCOL.md §10, by name.
fn doc_vectors() -> BTreeMap<String, Vec<u8>> {
    let doc = include_str!("../docs/PROTOCOL.md");
    let sec = &doc[doc.find("## 10. Legacy v1").expect("§10 exists")..];
    let mut out = BTreeMap::new();
    let mut lines = sec.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix("# vector: ") else {
            continue;
        };
        let name = rest.split_whitespace().next().expect("a name").to_string();
        let mut hex = String::new();
        for l in lines.by_ref() {
            if l.starts_with("```") {
                break;
            }
            if !l.starts_with('#') {
                hex.push_str(l);
            }
        }
        out.insert(
            name,
            simplemsgr::wire::from_hex(&hex).expect("vector is hex"),
        );
    }
    out
}

#[test]
fn protocol_md_v1_vectors_match_the_code_and_the_capture() {
    use simplemsgr::wire::types::{AddrType, EntityName, EntityType, Timespec};
    use simplemsgr::wire::v1::RawMsg;
    let v = doc_vectors();
    let names: Vec<&str> = v.keys().map(|k| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "v1.banner",
            "v1.client_addr",
            "v1.connect",
            "v1.connect_reply",
            "v1.keepalive2",
            "v1.mauth_frame"
        ]
    );
    assert_eq!(v["v1.banner"], BANNER);
    let mut addr = Vec::new();
    EntityAddr::new(
        AddrType::LEGACY,
        "127.0.0.1:0".parse().unwrap(),
        0x7866_d7df,
    )
    .encode_legacy(&mut addr);
    assert_eq!(v["v1.client_addr"], addr[..16]);
    let connect = ConnectMsg {
        features: features::PACIFIC_ALL,
        host_type: 8,
        global_seq: 1,
        connect_seq: 0,
        protocol_version: 15,
        authorizer_protocol: 0,
        flags: 1,
        authorizer: vec![],
    };
    assert_eq!(v["v1.connect"], connect.to_vec());
    let reply = ConnectReply {
        tag: Tag::SEQ,
        features: features::PACIFIC_ALL,
        global_seq: 4,
        connect_seq: 1,
        protocol_version: 15,
        flags: 1,
        authorizer: vec![],
    };
    let mut r = reply.to_vec();
    r.extend_from_slice(&0u64.to_le_bytes());
    assert_eq!(v["v1.connect_reply"], r);
    let mut ka = Vec::new();
    Frame::Keepalive2(Timespec {
        sec: 0x6b02_4ecc,
        nsec: 0x0230_11bc,
    })
    .encode(&mut ka);
    assert_eq!(v["v1.keepalive2"], ka);
    let m = MAuth::auth_none("client.admin".parse().unwrap()).to_message();
    let raw = RawMsg::from_message(&m, 1, EntityName::new(EntityType::CLIENT, u64::MAX), true);
    let mut frame = Vec::new();
    Frame::Msg(raw).encode(&mut frame);
    assert_eq!(v["v1.mauth_frame"], frame);
    // And every vector occurs verbatim in the capture's main connection.
    let packets = read_packets(&capture()).expect("pcapng reads");
    let segs = tcp_segments(&packets).expect("TCP segments");
    let c2s = reassemble(&segs, 55044, MON_PORT).expect("stream");
    let s2c = reassemble(&segs, MON_PORT, 55044).expect("stream");
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    assert!(contains(&c2s, &v["v1.connect"]));
    assert!(contains(&s2c, &v["v1.connect_reply"]));
    assert!(contains(&c2s, &v["v1.keepalive2"]));
    assert!(contains(&c2s, &v["v1.mauth_frame"]));
    assert!(contains(&c2s, &v["v1.client_addr"]));
}

/// Our machines consume the real streams: the server role eats the CLI's bytes and the
/// client role eats the monitor's bytes, fed in small odd-sized pieces (test plan T16).
#[test]
fn our_machines_consume_the_captured_streams_in_any_split() {
    use std::time::Instant;

    use std::sync::Arc;

    use bytes::BytesMut;
    use simplemsgr::crypto::SeededRng;
    use simplemsgr::proto::accept::Decision;
    use simplemsgr::proto::v1::V1SessionConn;
    use simplemsgr::proto::{Event, Policy, PolicyTable, ProtoConfig};
    use simplemsgr::wire::types::{AddrType, AddrVec, EntityName, EntityType};

    /// Feed `stream` to `m` on link 1 in pieces of `chunk`, deciding accept requests
    /// `New`; return the types of the messages it delivered.
    fn feed(m: &mut V1SessionConn, stream: &[u8], chunk: usize, now: Instant) -> Vec<u16> {
        let mut buf = BytesMut::new();
        let mut types = Vec::new();
        for piece in stream.chunks(chunk) {
            buf.extend_from_slice(piece);
            // Input waits (in `buf`) while a decision is pending: feed it again after one.
            for _ in 0..2 {
                m.handle_input(1, &mut buf, now);
                let mut decided = false;
                while let Some(e) = m.poll_event() {
                    match e {
                        Event::AcceptRequest(_) => {
                            m.decide_accept(Decision::New, now);
                            decided = true;
                        }
                        Event::Message(msg) => types.push(msg.ty),
                        _ => {}
                    }
                }
                if !decided {
                    break;
                }
            }
        }
        types
    }

    let config = |name: EntityName, addr: EntityAddr, policy: Policy| {
        let mut c = ProtoConfig::new(name, AddrVec(vec![addr]));
        c.features_supported = features::PACIFIC_ALL;
        c.keepalive_interval = None;
        c.policies = PolicyTable::new(policy);
        Arc::new(c)
    };
    let packets = read_packets(&capture()).expect("pcapng reads");
    let segs = tcp_segments(&packets).expect("TCP segments");
    let c2s = reassemble(&segs, 55044, MON_PORT).expect("stream");
    let s2c = reassemble(&segs, MON_PORT, 55044).expect("stream");
    // What the frame-level decoder found, to compare with what the machines deliver.
    let (cs, sc) = decode_connection(&c2s, &s2c);
    let want_c: Vec<u16> = cs.messages.iter().map(|m| m.ty).collect();
    let want_s: Vec<u16> = sc.messages.iter().map(|m| m.ty).collect();
    assert_eq!(want_c, [17, 15, 15, 15, 50, 50]);
    let now = Instant::now();
    for chunk in [1usize, 3, 7, 64, 1500] {
        let me = EntityAddr::new(AddrType::LEGACY, "127.0.0.1:6789".parse().unwrap(), 0);
        let mut server = V1SessionConn::incoming(
            config(
                EntityName::new(EntityType::MON, 0),
                me,
                Policy::stateless_server(),
            ),
            Box::new(SeededRng::new(2)),
            1,
            "127.0.0.1:55044".parse().unwrap(),
            now,
        );
        let types = feed(&mut server, &c2s, chunk, now);
        assert!(server.is_connected(), "chunk {chunk}: {server:?}");
        assert_eq!(types, want_c, "chunk {chunk}");

        let mut client = V1SessionConn::outgoing(
            config(
                EntityName::new(EntityType::CLIENT, u64::MAX),
                EntityAddr::blank(AddrType::LEGACY, 0),
                Policy::lossy_client(),
            ),
            Box::new(SeededRng::new(1)),
            me,
            EntityType::MON,
            now,
        );
        client.start_link(1, now);
        let types = feed(&mut client, &s2c, chunk, now);
        assert!(client.is_connected(), "chunk {chunk}: {client:?}");
        assert_eq!(types, want_s, "chunk {chunk}");
    }
}
