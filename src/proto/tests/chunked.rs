//! The structured-data extension (docs/PROTOCOL.md §7) over the in-memory [`Pair`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::pair::{addr, config, Pair, Side};
use crate::auth::{AuthConfig, Method, Secret};
use crate::crypto::{KeyLog, KeyLogFile, RxProtector};
use crate::proto::msgr2::{AbortOutcome, State};
use crate::proto::{Mode, Policy, ProtoConfig};
use crate::wire::message::Message;
use crate::wire::msgr2::{
    Banner, Chunk, Deframer, Frame, Limits, Msg, Tag, PROTO_FEATURE_STRUCTURED,
};
use crate::wire::types::{AddrType, EntityAddr, EntityName, EntityType};

const BIG: usize = 100_000;

fn small(i: u32) -> Message {
    Message::new(0x4000, i.to_le_bytes().to_vec()).with_tid(u64::from(i))
}

fn big(i: u32) -> Message {
    let data: Vec<u8> = (0..BIG).map(|j| (j % 251) as u8 ^ i as u8).collect();
    small(i).with_data(data)
}

fn index_of(m: &Message) -> u32 {
    u32::from_le_bytes([m.front[0], m.front[1], m.front[2], m.front[3]])
}

struct OneKey(Secret);

impl crate::auth::KeyStore for OneKey {
    fn key_for(&self, name: &str) -> Option<Secret> {
        (name == "client.admin").then(|| self.0.clone())
    }
}

#[derive(Debug, Default)]
struct Collect(Mutex<Vec<String>>);

impl KeyLog for Collect {
    fn log(&self, line: &str) {
        self.0.lock().expect("key log lock").push(line.to_string());
    }
}

fn cfgs(mode: Mode, a_bit: bool, b_bit: bool) -> (ProtoConfig, ProtoConfig) {
    let mut a = config(
        EntityName::new(EntityType::CLIENT, 1),
        EntityAddr::blank(AddrType::MSGR2, 11),
    );
    let mut b = config(EntityName::new(EntityType::OSD, 0), addr(6800, 22));
    a.policies.default = Policy::lossless_client();
    b.policies.default = Policy::stateful_server();
    a.keepalive_interval = None;
    b.keepalive_interval = None;
    a.chunk_size = 4096;
    b.chunk_size = 4096;
    a.max_batch_bytes = 8192;
    if a_bit {
        a.protocol_features = PROTO_FEATURE_STRUCTURED;
    }
    if b_bit {
        b.protocol_features = PROTO_FEATURE_STRUCTURED;
    }
    if mode != Mode::Plain {
        let key = Secret::new(&[0x42; 16]);
        let mut ca = AuthConfig::none();
        ca.client_methods = vec![Method::SECRET];
        ca.name = "client.admin".into();
        ca.key = Some(key.clone());
        let mut sa = AuthConfig::none();
        sa.server_methods = vec![Method::SECRET];
        sa.keys = Some(Arc::new(OneKey(key)));
        a.auth = ca;
        b.auth = sa;
        a.mode = mode;
        b.min_mode = mode;
    }
    (a, b)
}

fn open_pair(mode: Mode, a_bit: bool, b_bit: bool) -> (Pair, usize) {
    let (a, b) = cfgs(mode, a_bit, b_bit);
    let mut p = Pair::new(a, b);
    let c = p.connect(Side::A);
    p.drive();
    assert_eq!(p.conn(Side::A, c).state(), State::Open);
    (p, c)
}

/// Every frame A sent on the wire, decoded (plain mode: auth none, no protection).
fn record_a_frames(p: &mut Pair) -> Arc<Mutex<Vec<u8>>> {
    let wire = Arc::new(Mutex::new(Vec::new()));
    let w2 = wire.clone();
    p.tamper = Some(Box::new(move |from, _, bytes| {
        if from == Side::A {
            w2.lock().expect("lock").extend_from_slice(&bytes);
        }
        bytes
    }));
    wire
}

fn tags_of(wire: &[u8]) -> Vec<Tag> {
    let mut d = Deframer::new(Limits::default());
    d.push(wire);
    let mut rx = RxProtector::plain();
    let mut out = Vec::new();
    for _ in 0..100_000 {
        match d.next_frame(&mut rx).expect("frame") {
            Some(f) => out.push(f.frame.tag()),
            None => break,
        }
    }
    assert_eq!(d.buffered(), 0);
    out
}

#[test]
fn small_messages_overtake_a_chunked_message_and_every_message_arrives_once() {
    for mode in [Mode::Plain, Mode::Signed, Mode::Secure] {
        let (mut p, c) = open_pair(mode, true, true);
        assert_eq!(
            p.conn(Side::A, c).protocol_features(),
            PROTO_FEATURE_STRUCTURED
        );
        p.send(Side::A, c, big(0));
        for i in 1..6 {
            p.send(Side::A, c, small(i));
        }
        p.drive();
        let got: Vec<u32> = p.ep[1].delivered.iter().map(index_of).collect();
        assert_eq!(got, vec![1, 2, 3, 4, 5, 0], "{mode:?}: small ones first");
        let seqs: Vec<u64> = p.ep[1].delivered.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6], "seq = delivery order");
        assert_eq!(p.ep[1].delivered[5].data, big(0).data);
        // Standalone ACKs are coalesced (§5.1): let the ack delay pass.
        p.drive_for(std::time::Duration::from_millis(10), 1000);
        assert_eq!(p.conn(Side::A, c).session().unacked(), 0, "all acked");
    }
}

#[test]
fn chunks_interleave_with_messages_on_the_wire() {
    let (mut p, c) = open_pair(Mode::Plain, true, true);
    let wire = record_a_frames(&mut p);
    p.send(Side::A, c, big(0));
    p.send(Side::A, c, small(1));
    p.send(Side::A, c, small(2));
    p.drive();
    let tags = tags_of(&wire.lock().expect("lock"));
    let chunks = tags.iter().filter(|t| **t == Tag::CHUNK).count();
    assert_eq!(chunks, BIG.div_ceil(4096));
    let first_small = tags.iter().position(|t| *t == Tag::MSG).map(|i| i + 1);
    let last_chunk = tags.iter().rposition(|t| *t == Tag::CHUNK);
    assert!(first_small < last_chunk, "{tags:?}");
}

#[test]
fn a_peer_without_the_bit_gets_seed_001_behaviour() {
    for (a_bit, b_bit) in [(true, false), (false, true)] {
        let (mut p, c) = open_pair(Mode::Plain, a_bit, b_bit);
        assert_eq!(p.conn(Side::A, c).protocol_features(), 0);
        let wire = record_a_frames(&mut p);
        p.send(Side::A, c, big(0));
        p.send(Side::A, c, small(1));
        p.drive();
        let got: Vec<u32> = p.ep[1].delivered.iter().map(index_of).collect();
        assert_eq!(got, vec![0, 1], "queue order, one MSG each");
        let tags = tags_of(&wire.lock().expect("lock"));
        assert!(!tags.contains(&Tag::CHUNK), "{tags:?}");
        assert_eq!(tags.iter().filter(|t| **t == Tag::MSG).count(), 2);
    }
}

/// Move exactly one transmit batch (at most `max_batch_bytes` + one frame) from A to B;
/// returns its bytes.
fn move_batch(p: &mut Pair, c: usize) -> Vec<u8> {
    let now = p.now;
    let link = p.conn(Side::A, c).link_id().expect("A's link");
    let mut t = crate::wire::transmit::Transmit::new();
    assert!(p.conn(Side::A, c).poll_transmit(link, now, &mut t));
    let bytes = t.to_vec();
    let b = p.ep[1]
        .conns
        .iter_mut()
        .find(|c| c.link_id() == Some(link))
        .expect("B's end of the link");
    b.handle_input(link, &mut BytesMut::from(&bytes[..]), now);
    bytes
}

/// Move one transmit batch from A to B ([`move_batch`]); returns its length.
fn one_batch(p: &mut Pair, c: usize) -> usize {
    move_batch(p, c).len()
}

/// Move one transmit batch from A to B ([`move_batch`]); returns its frames' tags.
fn batch_tags(p: &mut Pair, c: usize) -> Vec<Tag> {
    tags_of(&move_batch(p, c))
}

#[test]
fn a_message_queued_during_a_chunked_transfer_is_the_next_frame_out() {
    let (mut p, c) = open_pair(Mode::Plain, true, true);
    let b_conn = |p: &mut Pair| p.ep[1].conns.iter().any(|c| c.receiving_chunked());
    assert!(!p.conn(Side::A, c).sending_chunked());
    p.send(Side::A, c, big(0));
    // Queued, not started: nothing is in flight yet.
    assert!(!p.conn(Side::A, c).sending_chunked());
    assert_eq!(batch_tags(&mut p, c), vec![Tag::MSG, Tag::CHUNK]);
    assert!(p.conn(Side::A, c).sending_chunked());
    assert!(b_conn(&mut p), "B is assembling the chunked message");
    // Each batch holds one chunk; a message queued meanwhile goes out first in the next.
    assert_eq!(batch_tags(&mut p, c), vec![Tag::CHUNK]);
    p.send(Side::A, c, small(1));
    assert_eq!(batch_tags(&mut p, c), vec![Tag::MSG, Tag::CHUNK]);
    p.drive();
    assert!(!p.conn(Side::A, c).sending_chunked());
    assert!(!b_conn(&mut p), "the transfer is complete");
    let got: Vec<u32> = p.ep[1].delivered.iter().map(index_of).collect();
    assert_eq!(got, vec![1, 0]);
    assert_eq!(p.ep[1].delivered[1].data, big(0).data);
}

#[test]
fn abort_in_mid_message_keeps_the_connection() {
    let (mut p, c) = open_pair(Mode::Plain, true, true);
    p.send(Side::A, c, big(7));
    let sent = one_batch(&mut p, c);
    assert!(
        sent > 4096 && sent < BIG,
        "{sent}: part of the data is on the wire"
    );
    assert_eq!(
        p.conn(Side::A, c).abort_send(7, 5, "source went away"),
        AbortOutcome::Aborted
    );
    assert_eq!(
        p.conn(Side::A, c).abort_send(7, 5, "again"),
        AbortOutcome::NotFound
    );
    p.send(Side::A, c, small(1));
    p.send(Side::A, c, small(2).with_tid(99));
    assert_eq!(
        p.conn(Side::A, c).abort_send(99, 1, "never sent"),
        AbortOutcome::Dequeued
    );
    p.drive();
    assert_eq!(p.conn(Side::A, c).state(), State::Open);
    assert_eq!(
        p.ep[1].count("chunk_aborted tid=7 code=5"),
        1,
        "{:?}",
        p.ep[1].log
    );
    assert_eq!(p.ep[1].count("link_closed"), 0, "{:?}", p.ep[1].log);
    let got: Vec<(u32, u64)> = p.ep[1]
        .delivered
        .iter()
        .map(|m| (index_of(m), m.seq))
        .collect();
    assert_eq!(
        got,
        vec![(1, 1)],
        "the aborted message used no sequence number"
    );
}

#[test]
fn reconnect_in_mid_message_replays_exactly_once_in_order() {
    for mode in [Mode::Plain, Mode::Secure] {
        let (mut p, c) = open_pair(mode, true, true);
        p.send(Side::A, c, small(0));
        p.send(Side::A, c, big(1));
        p.send(Side::A, c, small(2));
        p.send(Side::A, c, big(3));
        let sent = one_batch(&mut p, c);
        assert!(sent < BIG, "{sent}: the first big message is in flight");
        p.break_links();
        p.send(Side::A, c, small(4));
        p.drive_for(Duration::from_secs(5), 5000);
        assert_eq!(p.conn(Side::A, c).state(), State::Open, "{:?}", p.ep[0].log);
        assert_eq!(
            p.ep[0].count("connected resumed=true"),
            1,
            "{:?}",
            p.ep[0].log
        );
        let mut got: Vec<u32> = p.ep[1].delivered.iter().map(index_of).collect();
        let seqs: Vec<u64> = p.ep[1].delivered.iter().map(|m| m.seq).collect();
        assert_eq!(seqs, (1..=5).collect::<Vec<u64>>(), "{mode:?} contiguous");
        got.sort_unstable();
        assert_eq!(got, vec![0, 1, 2, 3, 4], "{mode:?} each exactly once");
        for m in &p.ep[1].delivered {
            if index_of(m) % 2 == 1 && index_of(m) < 4 {
                assert_eq!(m.data, big(index_of(m)).data);
            }
        }
        assert_eq!(p.conn(Side::A, c).session().unacked(), 0);
    }
}

/// Open plain link, then raw frames straight into B: its verdict.
fn inject(frames: &[Frame]) -> Vec<String> {
    let (mut p, _) = open_pair(Mode::Plain, true, true);
    let i = p.ep[1]
        .conns
        .iter()
        .position(|c| c.state() == State::Open)
        .expect("B's session");
    let link = p.conn(Side::B, i).link_id().expect("link");
    let mut bytes = Vec::new();
    for f in frames {
        f.encode(&mut bytes);
    }
    let mut buf = BytesMut::from(&bytes[..]);
    let now = p.now;
    p.conn(Side::B, i).handle_input(link, &mut buf, now);
    let mut log = Vec::new();
    while let Some(ev) = p.conn(Side::B, i).poll_event() {
        log.push(format!("{ev:?}"));
    }
    log
}

fn header(xid: u64, total: usize) -> Frame {
    let m = Message::new(1, &b"f"[..]).with_data(vec![0u8; total]);
    Frame::Msg(Msg::chunked(
        &m,
        xid,
        0,
        EntityName::new(EntityType::CLIENT, 1),
        true,
    ))
}

fn chunk(xid: u64, offset: u64, len: usize, seq: u64) -> Frame {
    Frame::Chunk(Chunk {
        xid,
        offset,
        seq,
        crc: crate::wire::ceph_crc32c(0, &vec![0u8; len]),
        data: Bytes::from(vec![0u8; len]),
    })
}

#[test]
fn receiver_enforces_the_chunk_rules() {
    let closed = |log: &[String], what: &str| {
        assert!(
            log.iter()
                .any(|l| l.contains("LinkClosed") && l.contains(what)),
            "expected a close for {what}: {log:?}"
        );
    };
    closed(
        &inject(&[header(1, 10), chunk(1, 0, 4, 0), chunk(1, 2, 4, 0)]),
        "Overlap",
    );
    closed(
        &inject(&[header(1, 10), chunk(1, 0, 4, 0), chunk(1, 0, 4, 0)]),
        "Overlap",
    );
    closed(&inject(&[header(1, 10), chunk(1, 8, 4, 0)]), "OutOfBounds");
    closed(
        &inject(&[header(1, 10), chunk(1, 0, 4, 1)]),
        "SeqBeforeComplete",
    );
    closed(&inject(&[header(1, 4), chunk(1, 0, 4, 0)]), "MissingSeq");
    closed(
        &inject(&[header(1, 10), chunk(2, 0, 4, 0)]),
        "UnknownTransfer",
    );
    closed(&inject(&[header(1, 10), header(2, 10)]), "AlreadyInFlight");
    closed(&inject(&[chunk(1, 0, 4, 0)]), "UnknownTransfer");
    // Incomplete: nothing is delivered until every byte is covered, and nothing fails.
    let partial = inject(&[header(1, 10), chunk(1, 6, 4, 0), chunk(1, 0, 3, 0)]);
    assert!(partial.is_empty(), "{partial:?}");
    // Out of order is fine: the message completes and is delivered.
    let ok = inject(&[
        header(1, 10),
        chunk(1, 6, 4, 0),
        chunk(1, 0, 3, 0),
        chunk(1, 3, 3, 1),
    ]);
    assert!(ok.iter().any(|l| l.starts_with("Message")), "{ok:?}");
    assert!(!ok.iter().any(|l| l.contains("LinkClosed")), "{ok:?}");
}

#[test]
fn receiver_without_the_bit_rejects_chunked_frames() {
    let (mut p, _) = open_pair(Mode::Plain, false, false);
    let i = p.ep[1]
        .conns
        .iter()
        .position(|c| c.state() == State::Open)
        .expect("B's session");
    let link = p.conn(Side::B, i).link_id().expect("link");
    let mut bytes = Vec::new();
    header(1, 10).encode(&mut bytes);
    let mut buf = BytesMut::from(&bytes[..]);
    let now = p.now;
    p.conn(Side::B, i).handle_input(link, &mut buf, now);
    let ev = p.conn(Side::B, i).poll_event();
    assert!(format!("{ev:?}").contains("NotNegotiated"), "{ev:?}");
}

#[test]
fn key_log_lines_match_each_direction_transcript() {
    let (mut a, mut b) = cfgs(Mode::Secure, false, false);
    let la = Arc::new(Collect::default());
    let lb = Arc::new(Collect::default());
    a.key_log = Some(la.clone());
    b.key_log = Some(lb.clone());
    let mut p = Pair::new(a, b);
    let c = p.connect(Side::A);
    p.drive();
    assert_eq!(p.conn(Side::A, c).state(), State::Open);
    let a_lines = la.0.lock().expect("lock").clone();
    let b_lines = lb.0.lock().expect("lock").clone();
    assert_eq!(a_lines.len(), 2);
    assert_eq!(a_lines, b_lines, "both sides derive and log the same keys");
    let f = KeyLogFile::parse(&a_lines.join("\n")).expect("parses");
    assert_eq!(f.entries[0].direction, "c2s");
    assert_eq!(f.entries[1].direction, "s2c");
    let _ = Banner::MAX_LEN;
}
