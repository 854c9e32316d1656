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
        }
    }
}
