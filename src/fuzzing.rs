//! Entry points for fuzzers (`fuzz/`, `tests/fuzz_smoke.rs`): one function per decoder.
//!
//! Each function takes arbitrary bytes, must never panic on them, and asserts the
//! decoder's invariants (a decoded value re-encodes to exactly the bytes it came from;
//! splitting the input differently never changes the result; a tampered protected
//! frame is never accepted). A failed assertion is a bug in this crate.

use bytes::Bytes;

use crate::crypto::{derive_keys, Protection, RxProtector, SeededRng, SessionKeys, TxProtector};
use crate::wire::msgr2::{Banner, Decoded, Deframer, Frame, FrameError, Limits};
use crate::wire::transmit::Transmit;

/// Small limits so fuzzed lengths hit them often; big enough for every test vector.
fn limits() -> Limits {
    Limits {
        max_front: 4096,
        max_middle: 4096,
        max_data: 65_536,
        max_frame: 1 + 73 + 4096 + 4096 + 65_536,
    }
}

/// The keys of the test vectors (docs/PROTOCOL.md §8), so the vectors are valid seeds.
fn keys() -> SessionKeys {
    let session_key: Vec<u8> = (0x00u8..=0x1f).collect();
    derive_keys(&session_key, &[0x11; 32], &[0x22; 32])
}

fn rx(p: Protection, k: &SessionKeys) -> RxProtector {
    match p {
        Protection::Plain => RxProtector::plain(),
        _ => RxProtector::new(p, &k.c2s, 1 << 32),
    }
}

/// The banner parser: a parsed banner re-encodes to the bytes it used; "need more" only
/// below the maximum banner length.
pub fn fuzz_banner(data: &[u8]) {
    match Banner::parse(data) {
        Ok(Some((b, used))) => {
            assert!(used <= Banner::MAX_LEN);
            let mut again = Vec::new();
            b.encode(&mut again);
            assert_eq!(&again[..], &data[..used], "banner re-encodes to its bytes");
            let _ = b.negotiate(&Banner {
                supported: 1,
                required: 0,
            });
        }
        Ok(None) => assert!(data.len() < Banner::MAX_LEN, "waits only below MAX_LEN"),
        Err(_) => {}
    }
}

/// `Frame::decode`: a decoded frame re-encodes to exactly the input.
pub fn fuzz_frame(data: &[u8]) {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(frame) = Frame::decode(bytes, &limits()) {
        let mut again = Vec::new();
        frame.encode(&mut again);
        assert_eq!(&again[..], data, "frame re-encodes to its bytes: {frame:?}");
        assert_eq!(frame.encoded_len(), data.len());
        if let Frame::Msg(m) = &frame {
            let _ = m.verify_crcs();
        }
    }
}

/// Run a deframer over `data`, pushed in pieces of `step` bytes; return the frames and
/// the error that ended the stream, if any.
fn deframe(p: Protection, data: &[u8], step: usize) -> (Vec<Decoded>, Option<FrameError>) {
    let k = keys();
    let mut rx = rx(p, &k);
    let mut d = Deframer::new(limits());
    let mut out = Vec::new();
    for piece in data.chunks(step.max(1)) {
        d.push(piece);
        // Each frame consumes at least one byte, so this loop is bounded by data.len().
        loop {
            match d.next_frame(&mut rx) {
                Ok(Some(f)) => out.push(f),
                Ok(None) => {
                    assert!(d.read_hint() >= 1);
                    break;
                }
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

fn check_split_invariance(p: Protection, data: &[u8]) -> Vec<Decoded> {
    let whole = deframe(p, data, data.len());
    let step = 1 + data.first().map_or(0, |&b| usize::from(b % 13));
    let pieces = deframe(p, data, step);
    assert_eq!(whole, pieces, "splitting the input changes the result");
    whole.0
}

/// The plain deframer: split-invariant, and each frame's `raw` is its exact encoding.
pub fn fuzz_deframer_plain(data: &[u8]) {
    let mut consumed = 0;
    for d in check_split_invariance(Protection::Plain, data) {
        let mut again = Vec::new();
        d.frame.encode(&mut again);
        assert_eq!(&again[..], &d.raw[..], "raw bytes are the frame's encoding");
        assert_eq!(&data[consumed..consumed + d.raw.len()], &d.raw[..]);
        consumed += d.raw.len();
    }
}

/// Protected deframing: (1) `data` itself, split-invariant; (2) `data` read as a plain frame
/// stream, sealed, must round-trip exactly; (3) the sealed stream with one bit flipped
/// (chosen from the data) is never accepted at or after the frame holding that bit.
fn fuzz_protected(p: Protection, data: &[u8]) {
    for d in check_split_invariance(p, data) {
        assert!(d.raw.is_empty());
        let mut again = Vec::new();
        d.frame.encode(&mut again);
        assert_eq!(
            Frame::decode(Bytes::from(again), &limits()).as_ref(),
            Ok(&d.frame)
        );
    }
    let plain: Vec<Frame> = deframe(Protection::Plain, data, data.len())
        .0
        .into_iter()
        .map(|d| d.frame)
        .collect();
    if plain.is_empty() {
        return;
    }
    let k = keys();
    let mut tx = TxProtector::new(p, &k.c2s, 1 << 32);
    let mut rng = SeededRng::new(data.len() as u64);
    let mut t = Transmit::new();
    let mut ends = Vec::new();
    for f in &plain {
        let f = strip_crcs(f);
        if tx.seal(&f, &mut rng, &mut t).is_err() {
            return;
        }
        ends.push(t.len());
    }
    let sealed = t.to_vec();
    let (back, err) = deframe(p, &sealed, 7);
    assert_eq!(err, None);
    let expected: Vec<Frame> = plain.iter().map(strip_crcs).collect();
    let got: Vec<Frame> = back.into_iter().map(|d| d.frame).collect();
    assert_eq!(got, expected, "sealed frames round-trip");
    let bit = data.iter().fold(0usize, |a, &b| {
        a.wrapping_mul(31).wrapping_add(usize::from(b))
    }) % (sealed.len() * 8);
    let mut bad = sealed;
    bad[bit / 8] ^= 1 << (bit % 8);
    let hit = ends.iter().position(|&e| bit / 8 < e).unwrap_or(ends.len());
    let (accepted, _) = deframe(p, &bad, bad.len());
    assert!(
        accepted.len() <= hit,
        "a frame with a flipped bit was accepted"
    );
    let accepted: Vec<Frame> = accepted.into_iter().map(|d| d.frame).collect();
    assert_eq!(&accepted[..], &expected[..accepted.len()]);
}

/// Protected forms carry no CRCs (docs/PROTOCOL.md §6.1).
fn strip_crcs(f: &Frame) -> Frame {
    match f {
        Frame::Msg(m) => {
            let mut m = m.clone();
            m.header.flags &= !crate::wire::msgr2::MSG_FLAG_CRC;
            m.header.front_crc = 0;
            m.header.middle_crc = 0;
            m.header.data_crc = 0;
            m.header.header_crc = 0;
            Frame::Msg(m)
        }
        Frame::Chunk(c) => Frame::Chunk(crate::wire::msgr2::Chunk {
            crc: 0,
            ..c.clone()
        }),
        other => other.clone(),
    }
}

/// The signed deframer; see `fuzz_protected` for the invariants.
pub fn fuzz_deframer_signed(data: &[u8]) {
    fuzz_protected(Protection::Signed, data);
}

/// The encrypted deframer; see `fuzz_protected` for the invariants.
pub fn fuzz_deframer_encrypted(data: &[u8]) {
    fuzz_protected(Protection::Encrypted, data);
}

// ----- state machines --------------------------------------------------------------

/// Run a client and a server msgr2 machine against each other in memory and return
/// what each sent (client-to-server, server-to-client): seeds for the machine fuzzers.
/// `secure` uses SECRET with a fixed key and the encrypted form.
#[allow(clippy::disallowed_methods)] // one real Instant as the base of a virtual clock
pub fn sample_streams(secure: bool) -> (Vec<u8>, Vec<u8>) {
    let now = std::time::Instant::now();
    let (client_cfg, server_cfg) = machine_configs(secure);
    let mut c = crate::proto::Connection::outgoing(
        client_cfg,
        Box::new(SeededRng::new(1)),
        server_addr(),
        crate::wire::types::EntityType::OSD,
        now,
    );
    c.start_link(1, now);
    let mut s = crate::proto::Connection::incoming(server_cfg, Box::new(SeededRng::new(2)), 1, now);
    let (mut c2s, mut s2c) = (Vec::new(), Vec::new());
    let (mut cbuf, mut sbuf) = (bytes::BytesMut::new(), bytes::BytesMut::new());
    let mut sent = false;
    for _ in 0..64 {
        let mut t = Transmit::new();
        while c.poll_transmit(1, now, &mut t) {
            let v = t.to_vec();
            c2s.extend_from_slice(&v);
            sbuf.extend_from_slice(&v);
            t.clear();
        }
        s.handle_input(1, &mut sbuf, now);
        while let Some(e) = s.poll_event() {
            if let crate::proto::Event::AcceptRequest(_) = e {
                s.decide_accept(crate::proto::accept::Decision::New, now);
            }
        }
        while s.poll_transmit(1, now, &mut t) {
            let v = t.to_vec();
            s2c.extend_from_slice(&v);
            cbuf.extend_from_slice(&v);
            t.clear();
        }
        c.handle_input(1, &mut cbuf, now);
        while c.poll_event().is_some() {}
        if c.is_connected() && !sent {
            for i in 0..3u8 {
                let m = crate::wire::message::Message::new(0x42, vec![i; 10 + usize::from(i)])
                    .with_data(vec![i; 5]);
                let _ = c.send(m.clone());
                let _ = s.send(m);
            }
            sent = true;
        }
    }
    (c2s, s2c)
}

fn server_addr() -> crate::wire::types::EntityAddr {
    crate::wire::types::EntityAddr::new(
        crate::wire::types::AddrType::MSGR2,
        ([127, 0, 0, 1], 6800).into(),
        7,
    )
}

fn machine_configs(
    secure: bool,
) -> (
    std::sync::Arc<crate::proto::ProtoConfig>,
    std::sync::Arc<crate::proto::ProtoConfig>,
) {
    use crate::auth::{AuthConfig, Keyring, Secret};
    use crate::wire::types::{AddrType, AddrVec, EntityAddr, EntityName, EntityType};
    let mut c = crate::proto::ProtoConfig::new(
        EntityName::new(EntityType::CLIENT, 1),
        AddrVec(vec![EntityAddr::blank(AddrType::MSGR2, 3)]),
    );
    let mut s = crate::proto::ProtoConfig::new(
        EntityName::new(EntityType::OSD, 0),
        AddrVec(vec![server_addr()]),
    );
    c.limits = limits();
    s.limits = limits();
    if secure {
        let key = Secret::new(&[0x42; 16]);
        c.auth = AuthConfig::secret_client("client.admin", key.clone());
        let mut ring = Keyring::default();
        ring.insert("client.admin", key, crate::wire::types::Timespec::default());
        s.auth = AuthConfig::secret_server(std::sync::Arc::new(ring));
        c.mode = crate::proto::Mode::Secure;
        s.min_mode = crate::proto::Mode::Secure;
    }
    (std::sync::Arc::new(c), std::sync::Arc::new(s))
}

/// Feed `data` to a machine as the peer's bytes, in pieces whose sizes come from the
/// input itself, answering accept requests; it must never panic, and once it closes
/// the link it must take no more input.
#[allow(clippy::disallowed_methods)] // one real Instant as the base of a virtual clock
fn drive_machine(mut m: crate::proto::Connection, data: &[u8]) {
    let mut now = std::time::Instant::now();
    let (split, data) = data
        .split_first()
        .map_or((7usize, data), |(b, rest)| (usize::from(*b % 32) + 1, rest));
    let mut buf = bytes::BytesMut::new();
    let mut t = Transmit::new();
    for chunk in data.chunks(split) {
        buf.extend_from_slice(chunk);
        m.handle_input(1, &mut buf, now);
        while let Some(e) = m.poll_event() {
            if let crate::proto::Event::AcceptRequest(_) = e {
                m.decide_accept(crate::proto::accept::Decision::New, now);
            }
        }
        while m.poll_transmit(1, now, &mut t) {
            t.clear();
        }
        now += std::time::Duration::from_millis(1);
        m.handle_timeout(now);
        if m.link_id().is_none() {
            assert!(m.link_id().is_none());
            break;
        }
    }
}

/// The msgr2 machine as a server, fed arbitrary client bytes (plain config).
pub fn fuzz_proto_server(data: &[u8]) {
    let (_, s) = machine_configs(data.first().is_some_and(|b| b & 0x80 != 0));
    #[allow(clippy::disallowed_methods)]
    let now = std::time::Instant::now();
    drive_machine(
        crate::proto::Connection::incoming(s, Box::new(SeededRng::new(2)), 1, now),
        data,
    );
}

/// The msgr2 machine as a client, fed arbitrary server bytes.
pub fn fuzz_proto_client(data: &[u8]) {
    let (c, _) = machine_configs(data.first().is_some_and(|b| b & 0x80 != 0));
    #[allow(clippy::disallowed_methods)]
    let now = std::time::Instant::now();
    let mut m = crate::proto::Connection::outgoing(
        c,
        Box::new(SeededRng::new(1)),
        server_addr(),
        crate::wire::types::EntityType::OSD,
        now,
    );
    m.start_link(1, now);
    drive_machine(m, data);
}

/// The v1 frame parser, with and without the signed footer: a parsed frame re-encodes
/// to exactly the bytes it was parsed from.
pub fn fuzz_v1_frame(data: &[u8]) {
    let limits = crate::wire::v1::Limits::default();
    for with_sig in [false, true] {
        if let Ok(Some((frame, used))) = crate::wire::v1::Frame::parse(data, with_sig, &limits) {
            let mut out = Vec::new();
            frame.encode(&mut out);
            assert_eq!(&out[..], &data[..used], "v1 frame re-encodes to its bytes");
        }
    }
}

/// The v1 session machine, as a monitor client and as a monitor-like server, fed
/// arbitrary peer bytes in pieces (accept requests decided `New`): it must never panic,
/// and once it closes the link it must take no more input.
#[allow(clippy::disallowed_methods)] // one real Instant as the base of a virtual clock
pub fn fuzz_v1_machines(data: &[u8]) {
    use crate::proto::v1::V1SessionConn;
    use crate::proto::{Event, Policy, PolicyTable, ProtoConfig};
    use crate::wire::types::{AddrType, AddrVec, EntityAddr, EntityName, EntityType};
    let now = std::time::Instant::now();
    let split = data.first().map_or(5, |b| usize::from(*b % 16) + 1);
    let config = |name: EntityName, addr: EntityAddr, policy: Policy| {
        let mut c = ProtoConfig::new(name, AddrVec(vec![addr]));
        c.features_supported = crate::wire::v1::features::PACIFIC_ALL;
        c.limits = limits();
        c.policies = PolicyTable::new(policy);
        std::sync::Arc::new(c)
    };
    let mut client = V1SessionConn::outgoing(
        config(
            EntityName::new(EntityType::CLIENT, 1),
            EntityAddr::blank(AddrType::LEGACY, 3),
            Policy::lossy_client(),
        ),
        Box::new(SeededRng::new(1)),
        server_addr(),
        EntityType::MON,
        now,
    );
    client.start_link(1, now);
    let server = V1SessionConn::incoming(
        config(
            EntityName::new(EntityType::MON, 0),
            server_addr(),
            Policy::stateless_server(),
        ),
        Box::new(SeededRng::new(2)),
        1,
        ([127, 0, 0, 1], 50000).into(),
        now,
    );
    for mut m in [client, server] {
        let mut buf = bytes::BytesMut::new();
        let mut t = Transmit::new();
        for chunk in data.chunks(split) {
            buf.extend_from_slice(chunk);
            // Input waits (in `buf`) while a decision is pending: feed it again after one.
            for _ in 0..2 {
                m.handle_input(1, &mut buf, now);
                let mut decided = false;
                while let Some(e) = m.poll_event() {
                    if let Event::AcceptRequest(_) = e {
                        m.decide_accept(crate::proto::accept::Decision::New, now);
                        decided = true;
                    }
                }
                if !decided {
                    break;
                }
            }
            while m.poll_transmit(1, now, &mut t) {
                t.clear();
            }
            if m.link_id().is_none() {
                break;
            }
        }
    }
}

// ----- keyring, monitor messages, SECRET, dump, capture ------------------------------

/// `Keyring::parse` on the input as (lossy UTF-8) text: it never panics and its errors
/// display; a parsed keyring's `to_text()` parses again to the same entries (names, keys,
/// creation times and caps) and `to_text()` of that is a fixed point; every entry is what
/// the `KeyStore` hands out for its name. `decode_key` on the whole text and on each of its
/// whitespace-separated words: a decoded key re-encodes (`encode_key`) to a key that decodes
/// to the same secret and creation time.
pub fn fuzz_keyring(data: &[u8]) {
    use crate::auth::keyring::{decode_key, encode_key};
    use crate::auth::{KeyStore, Keyring};
    let text = String::from_utf8_lossy(data);
    match Keyring::parse(&text) {
        Ok(ring) => {
            let written = ring.to_text();
            let again = Keyring::parse(&written)
                .unwrap_or_else(|e| panic!("to_text() does not parse again: {e}\n{written}"));
            assert_eq!(ring.len(), again.len());
            assert_eq!(ring.names().count(), ring.len());
            assert!(ring.names().eq(again.names()), "same names");
            for name in ring.names() {
                let (a, b) = (ring.get(name), again.get(name));
                let (Some(a), Some(b)) = (a, b) else {
                    panic!("entry {name:?} lost in to_text()");
                };
                assert_eq!(a.name, name);
                assert_eq!((&a.name, &a.key, a.created), (&b.name, &b.key, b.created));
                assert_eq!(a.caps, b.caps, "caps of {name:?} survive to_text()");
                assert_eq!(ring.key_for(name).as_ref(), Some(&a.key));
            }
            assert_eq!(again.to_text(), written, "to_text() is a fixed point");
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    for word in std::iter::once(&*text).chain(text.split_whitespace()) {
        match decode_key(word) {
            Ok((secret, created)) => {
                let back = decode_key(&encode_key(&secret, created));
                assert_eq!(back, Ok((secret, created)), "a decoded key round-trips");
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}

/// Decode `front` (and `front` again as the data section) as a `T`, with the header
/// versions `T`'s encoder sets; a decoded value re-encodes (`to_message`) to a message of
/// its type that decodes to the same value and, if `exact` (no optional trailing fields),
/// whose front is exactly `front`.
fn mon_round_trip<T>(front: &[u8], exact: bool) -> Option<T>
where
    T: crate::mon::MonMessage + PartialEq + std::fmt::Debug,
{
    let mut m =
        crate::wire::message::Message::new(T::TYPE, front.to_vec()).with_data(front.to_vec());
    m.version = T::VERSION;
    m.compat_version = T::COMPAT;
    match T::decode(&m) {
        Ok(x) => {
            let again = x.to_message();
            assert_eq!(again.ty, T::TYPE);
            let y = T::decode(&again)
                .unwrap_or_else(|e| panic!("re-encoded {x:?} does not decode: {e}"));
            assert_eq!(y, x, "decode(encode(decode(x))) == decode(x)");
            if exact {
                assert_eq!(&again.front[..], front, "{x:?} re-encodes to its bytes");
            }
            Some(x)
        }
        Err(e) => {
            assert!(!e.to_string().is_empty());
            None
        }
    }
}

/// The monitor messages of `crate::mon`: the first byte picks the type (MAuth, MAuthReply,
/// MMonGetMap, MMonMap, MMonCommand, MMonCommandAck, MMonGetVersion, MMonGetVersionReply,
/// MMonSubscribe), the rest is its front section (and the data section, which only
/// MMonCommandAck reads). Decoding never panics; decode(encode(decode(x))) == decode(x);
/// a type without optional trailing fields (all but MAuth's epoch, MMonGetVersionReply's
/// oldest version and MMonSubscribe's hostname) re-encodes to exactly its front, and so
/// does an MAuth's initial request (protocol 0); an MMonMap's summary never panics.
pub fn fuzz_mon_messages(data: &[u8]) {
    use crate::mon::*;
    let Some((&pick, front)) = data.split_first() else {
        return;
    };
    match pick % 9 {
        0 => {
            if let Some(m) = mon_round_trip::<MAuth>(front, false) {
                if m.protocol == auth_protocol::UNKNOWN {
                    if let Ok(req) = AuthInitialRequest::decode(&m.auth_payload) {
                        let mut out = Vec::new();
                        req.encode(&mut out);
                        assert_eq!(out, m.auth_payload, "initial request re-encodes exactly");
                    }
                }
            }
        }
        1 => drop(mon_round_trip::<MAuthReply>(front, true)),
        2 => drop(mon_round_trip::<MMonGetMap>(front, true)),
        3 => {
            if let Some(m) = mon_round_trip::<MMonMap>(front, true) {
                if let Err(e) = m.summary() {
                    assert!(!e.to_string().is_empty());
                }
            }
        }
        4 => drop(mon_round_trip::<MMonCommand>(front, true)),
        5 => drop(mon_round_trip::<MMonCommandAck>(front, true)),
        6 => drop(mon_round_trip::<MMonGetVersion>(front, true)),
        7 => drop(mon_round_trip::<MMonGetVersionReply>(front, false)),
        _ => drop(mon_round_trip::<MMonSubscribe>(front, false)),
    }
}

/// The auth name and key the SECRET fuzz targets hold.
const SECRET_NAME: &str = "client.admin";
const SECRET_KEY: [u8; 16] = [0x42; 16];
/// RNG seeds of the targets' own nonces; [`sample_secret_payloads`] uses others.
const SECRET_SERVER_SEED: u64 = 0x5ec0_0001;
const SECRET_CLIENT_SEED: u64 = 0x5ec0_0002;

/// Split `data` into at most `n` payloads, each a length byte and then that many bytes
/// (fewer if the input ends first).
fn split_payloads(mut data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while out.len() < n {
        let Some((&len, rest)) = data.split_first() else {
            break;
        };
        let (p, rest) = rest.split_at(usize::from(len).min(rest.len()));
        out.push(p);
        data = rest;
    }
    out
}

/// An `AuthError` displays, and its CLOSE text is bounded.
fn check_auth_error(e: &crate::auth::AuthError) {
    assert!(!e.to_string().is_empty());
    assert!(e.close_message().len() <= crate::auth::MAX_CLOSE_MESSAGE_LEN);
    assert!(matches!(e.close_reason(), 1..=3));
}

/// A SECRET server whose key store holds [`SECRET_NAME`]'s key.
fn secret_server() -> crate::auth::SecretServer {
    let mut ring = crate::auth::Keyring::new();
    ring.insert(
        SECRET_NAME,
        crate::auth::Secret::new(&SECRET_KEY),
        crate::wire::types::Timespec::default(),
    );
    crate::auth::SecretServer::new(std::sync::Arc::new(ring))
}

/// One genuine SECRET exchange (client AUTH 1, server AUTH, client AUTH 2) for the key the
/// SECRET fuzz targets hold, with nonces from other seeds than the targets' own: seeds for
/// [`fuzz_auth_secret`] that reach each step but cannot complete against the target.
pub fn sample_secret_payloads() -> [Vec<u8>; 3] {
    use crate::auth::{ClientAuth, Secret, SecretClient, ServerAuth, Step};
    let key = Secret::new(&SECRET_KEY);
    let mut server = secret_server();
    let Ok(mut client) = SecretClient::new(SECRET_NAME, key) else {
        unreachable!("a valid name and a 16-byte key");
    };
    let c1 = client.start(&mut SeededRng::new(SECRET_CLIENT_SEED + 100));
    let s1 = match server.handle(&c1, &mut SeededRng::new(SECRET_SERVER_SEED + 100)) {
        Ok(Step::Send(p)) => p,
        other => panic!("genuine client hello: {other:?}"),
    };
    let c2 = match client.handle(&s1) {
        Ok(Step::SendAndDone(p)) => p,
        other => panic!("genuine server hello: {other:?}"),
    };
    assert_eq!(server.handle(&c2, &mut SeededRng::new(0)), Ok(Step::Done));
    assert_eq!(server.session_key(), client.session_key());
    [c1, s1, c2]
}

/// The SECRET method fed hostile peer payloads; it must never complete.
///
/// Server (a key store holding `client.admin`'s key): the input is split into up to three
/// length-prefixed payloads, handed to `handle` in turn. Completing needs a client proof,
/// HMAC-SHA256 under the key over (among others) the server nonce, which the server draws
/// from a `SeededRng` with a seed used nowhere else; the input is fixed before that nonce
/// exists and no seed is computed from it ([`sample_secret_payloads`] proves nonces from
/// other seeds), so an input that completes would be a forged proof: `Step::Done`,
/// `session_key()` or `peer_name()` is a bug. Also: the first success is the 65-byte server
/// hello, every error is a typed `AuthError` that displays, and after an error every
/// further payload is refused.
///
/// Client (`SecretClient::new(SECRET_NAME, key)`, `start` with its own seeded nonce): the
/// whole input is the server's reply, then again; the server proof must cover the client
/// nonce, so by the same argument the client never completes (no `session_key()`), and the
/// second reply is always refused.
pub fn fuzz_auth_secret(data: &[u8]) {
    use crate::auth::{AuthError, ClientAuth, Secret, SecretClient};
    use crate::auth::{ServerAuth, Step};
    let key = Secret::new(&SECRET_KEY);
    let mut server = secret_server();
    let mut rng = SeededRng::new(SECRET_SERVER_SEED);
    let mut failed: Option<AuthError> = None;
    for (i, p) in split_payloads(data, 3).into_iter().enumerate() {
        match server.handle(p, &mut rng) {
            Ok(Step::Send(hello)) => {
                assert!(i == 0 && failed.is_none(), "a server hello only first");
                assert_eq!(hello.len(), 65);
                assert_eq!(hello[0], crate::auth::secret::SECRET_VERSION);
            }
            Ok(step) => panic!("the SECRET server accepted a forged exchange: {step:?}"),
            Err(e) => {
                check_auth_error(&e);
                failed.get_or_insert(e);
            }
        }
        assert_eq!(server.session_key(), None, "no session key without a proof");
        assert_eq!(server.peer_name(), None, "no peer name without a proof");
    }
    let Ok(mut client) = SecretClient::new(SECRET_NAME, key) else {
        unreachable!("a valid name and a 16-byte key");
    };
    let hello = client.start(&mut SeededRng::new(SECRET_CLIENT_SEED));
    assert_eq!(hello.first(), Some(&crate::auth::secret::SECRET_VERSION));
    for _ in 0..2 {
        match client.handle(data) {
            Ok(step) => panic!("the SECRET client accepted a forged server proof: {step:?}"),
            Err(e) => check_auth_error(&e),
        }
        assert_eq!(client.session_key(), None);
    }
}

/// `dump::decode_stream` with the protocol detected, forced to msgr2 and forced to v1:
/// it never panics; the records come in stream order (non-decreasing offsets), each
/// inside the input, and print (line and JSON) without panicking; on success the records
/// tile the input exactly and the summary counts every record and every byte; on error the
/// offset is within the input, not before the end of the last record reported, and the
/// error displays.
pub fn fuzz_dump(data: &[u8]) {
    use crate::dump::{decode_stream, DumpOptions, ProtoChoice};
    let len = data.len() as u64;
    for proto in [None, Some(ProtoChoice::Msgr2), Some(ProtoChoice::V1)] {
        let opts = DumpOptions {
            proto,
            keylog: None,
        };
        let mut records = Vec::new();
        let result = decode_stream(data, &opts, &mut |r| records.push(r.clone()));
        let (mut prev, mut end, mut tiles) = (0, 0, true);
        for r in &records {
            assert!(r.offset >= prev, "records out of order: {records:?}");
            assert!(r.offset + r.len <= len, "record beyond the input: {r:?}");
            tiles &= r.offset == end;
            prev = r.offset;
            end = r.offset + r.len;
            assert!(!r.to_line().is_empty() && r.to_json().starts_with('{'));
        }
        match result {
            Ok(summary) => {
                assert!(tiles && end == len, "records do not tile: {records:?}");
                assert_eq!(summary.records, records.len());
                assert_eq!(summary.bytes, len);
            }
            Err(e) => {
                assert!(e.offset <= len, "error offset {} beyond {len}", e.offset);
                assert!(
                    e.offset >= end,
                    "error at {} inside a record: {records:?}",
                    e.offset
                );
                assert!(!e.to_string().is_empty());
            }
        }
    }
}

/// `capture::read_packets` on the input as a pcap / pcapng file: it never panics and its
/// errors display. Of the packets read, `tcp_segments` (and `parse_tcp` packet by packet)
/// never panic and agree; every segment's payload lies within its packet; `reassemble`
/// of every direction seen (at most 16) never panics and never yields more bytes than
/// that direction's payloads hold.
pub fn fuzz_capture(data: &[u8]) {
    use crate::capture::{parse_tcp, read_packets, reassemble, tcp_segments, TcpSegment};
    let packets = match read_packets(data) {
        Ok(p) => p,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    let mut segments: Vec<TcpSegment> = Vec::new();
    let mut first_error = None;
    for (i, p) in packets.iter().enumerate() {
        match parse_tcp(i, p) {
            Ok(Some(s)) => {
                assert_eq!(s.index, i);
                assert!(s.payload.len() <= p.data.len());
                segments.push(s);
            }
            Ok(None) => {}
            Err(e) => {
                assert!(!e.to_string().is_empty());
                first_error.get_or_insert(e);
            }
        }
    }
    match (tcp_segments(&packets), first_error) {
        (Ok(all), None) => assert_eq!(all, segments),
        (Err(e), Some(first)) => assert_eq!(e, first),
        (got, first) => panic!("tcp_segments {got:?} disagrees with parse_tcp ({first:?})"),
    }
    let mut directions: Vec<(u16, u16)> = segments
        .iter()
        .map(|s| (s.src.port(), s.dst.port()))
        .collect();
    directions.sort_unstable();
    directions.dedup();
    for (src, dst) in directions.into_iter().take(16) {
        let held: usize = segments
            .iter()
            .filter(|s| s.src.port() == src && s.dst.port() == dst)
            .map(|s| s.payload.len())
            .sum();
        match reassemble(&segments, src, dst) {
            Ok(stream) => assert!(stream.len() <= held),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::msgr2::sample_frames;

    #[test]
    fn every_entry_point_accepts_the_samples_and_garbage() {
        let mut stream = Vec::new();
        for f in sample_frames(true) {
            let mut one = Vec::new();
            f.encode(&mut one);
            fuzz_frame(&one);
            stream.extend_from_slice(&one);
        }
        fuzz_deframer_plain(&stream);
        fuzz_deframer_signed(&stream);
        fuzz_deframer_encrypted(&stream);
        fuzz_banner(b"ceph 1 0\n");
        for garbage in [&b""[..], b"\x20", b"\xff\xff\xff\xff", &[0u8; 100]] {
            fuzz_banner(garbage);
            fuzz_frame(garbage);
            fuzz_deframer_plain(garbage);
            fuzz_deframer_signed(garbage);
            fuzz_deframer_encrypted(garbage);
            fuzz_keyring(garbage);
            fuzz_mon_messages(garbage);
            fuzz_auth_secret(garbage);
            fuzz_dump(garbage);
            fuzz_capture(garbage);
        }
    }

    #[test]
    fn secret_samples_are_a_genuine_exchange_and_split_as_framed() {
        let [c1, s1, c2] = sample_secret_payloads();
        assert_eq!((c1.len(), s1.len(), c2.len()), (1 + 4 + 12 + 32, 65, 32));
        let mut input = vec![c1.len() as u8];
        input.extend_from_slice(&c1);
        input.push(c2.len() as u8);
        input.extend_from_slice(&c2);
        input.extend_from_slice(&[200, 1, 2]);
        assert_eq!(
            split_payloads(&input, 3),
            vec![&c1[..], &c2[..], &[1, 2][..]]
        );
        assert_eq!(split_payloads(&input, 1), vec![&c1[..]]);
        fuzz_auth_secret(&input);
        fuzz_auth_secret(&s1);
    }
}
