//! The incremental msgr2 reader: bytes in, frames out (docs/PROTOCOL.md §3).
//!
//! The deframer owns one `BytesMut` input buffer; the shell reads straight into it
//! ([`Deframer::buffer_mut`], sized by [`Deframer::read_hint`]). Frames are split off
//! the buffer without copying (`split_to` + `freeze`), MSG sections are slices of the
//! frame, and encrypted frames are decrypted in place.

use std::fmt;

use bytes::{Buf, Bytes, BytesMut};

use super::frame::{max_plain_len, split_msg};
use super::{
    Banner, BannerError, Chunk, Frame, Limits, MsgHeader2, Tag, CHUNK_HEAD_LEN, HEADER2_LEN,
    MSG_FLAG_CRC,
};
use crate::crypto::{Protection, RxProtector};
use crate::wire::{DecodeError, Reader};

/// What [`Deframer::read_hint`] suggests when no frame size is known yet.
pub const DEFAULT_READ_HINT: usize = 64 * 1024;

/// Bytes before (tag ‖ payload) in a protected frame (§3.2, §3.3).
const PROTECTED_HEAD: usize = 20;

/// One frame out of the deframer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    /// The frame.
    pub frame: Frame,
    /// The exact wire bytes of a plain frame (for the §4.5 transcript hashes); empty for protected frames.
    pub raw: Bytes,
}

/// Why the incoming stream cannot continue. Every one of these closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The (authenticated, decrypted) tag and payload are malformed, or a MSG's CRCs are wrong.
    Decode(DecodeError),
    /// The signature or GCM tag did not verify with the expected frame counter (§3.4 step 3).
    BadSignature,
    /// A frame length above its limit (§2.3, §3.4 step 1).
    TooLong {
        /// The length the peer announced (or the bytes buffered without a frame end).
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// The peer sent more protected frames than `max_frames` allows for one key (§3.4).
    Exhausted,
}

impl From<DecodeError> for FrameError {
    fn from(e: DecodeError) -> Self {
        FrameError::Decode(e)
    }
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Decode(e) => write!(f, "malformed frame: {e}"),
            FrameError::BadSignature => {
                f.write_str("frame failed authentication (bad signature or tag)")
            }
            FrameError::TooLong { len, limit } => {
                write!(f, "frame length {len} is above the limit of {limit}")
            }
            FrameError::Exhausted => f.write_str("peer exceeded the frame limit for one key"),
        }
    }
}

impl std::error::Error for FrameError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FrameError::Decode(e) => Some(e),
            _ => None,
        }
    }
}

/// Splits an incoming byte stream into a banner and then frames.
#[derive(Debug)]
pub struct Deframer {
    buf: BytesMut,
    limits: Limits,
    /// Total size of the frame in progress once known, and the form it was computed for.
    pending: Option<(usize, Protection)>,
    /// Compare the CRCs of plain MSG and CHUNK frames (see [`Deframer::set_check_crcs`]).
    check_crcs: bool,
}

impl Deframer {
    /// An empty deframer enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Deframer {
            buf: BytesMut::new(),
            limits,
            pending: None,
            check_crcs: true,
        }
    }

    /// Whether to compare the CRCs a plain MSG or CHUNK carries with the bytes (on by
    /// default). Off, the comparisons are skipped, never the rule that a plain MSG has
    /// its `CRC` flag set (§6.1): a receiver may choose not to check, a sender may not
    /// choose not to fill them (`ms_crc_data=false`).
    pub fn set_check_crcs(&mut self, on: bool) {
        self.check_crcs = on;
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The input buffer; a shell reads straight into it.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Append received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered and not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// At least 1: the bytes still missing for the frame in progress when its size is
    /// known (so a 4 MiB MSG can be read in one go), else [`DEFAULT_READ_HINT`].
    pub fn read_hint(&self) -> usize {
        match self.pending {
            Some((total, _)) if total > self.buf.len() => total - self.buf.len(),
            _ => DEFAULT_READ_HINT,
        }
    }

    /// Take the peer's banner off the front of the buffer (§2.1). `Ok(None)`: need more bytes.
    pub fn take_banner(&mut self) -> Result<Option<Banner>, BannerError> {
        match Banner::parse(&self.buf)? {
            Some((banner, used)) => {
                self.buf.advance(used);
                Ok(Some(banner))
            }
            None => Ok(None),
        }
    }

    /// The next frame, in the form `rx` accepts. `Ok(None)`: need more bytes.
    ///
    /// After an error the stream is unusable: the caller closes the connection.
    pub fn next_frame(&mut self, rx: &mut RxProtector) -> Result<Option<Decoded>, FrameError> {
        let protection = rx.protection();
        if let Some((total, p)) = self.pending {
            if p == protection && self.buf.len() < total {
                return Ok(None);
            }
        }
        self.pending = None;
        let out = match protection {
            Protection::Plain => self.next_plain()?,
            _ => self.next_protected(rx)?,
        };
        Ok(out)
    }

    /// §3.1: the frame's extent comes from its tag and the payload's own length fields.
    fn next_plain(&mut self) -> Result<Option<Decoded>, FrameError> {
        let Some(&tag) = self.buf.first() else {
            return Ok(None);
        };
        if Tag(tag) == Tag::MSG {
            if self.buf.len() < 1 + HEADER2_LEN {
                return Ok(None);
            }
            let header = MsgHeader2::read(
                &mut Reader::new(&self.buf[1..1 + HEADER2_LEN]),
                &self.limits,
            )?;
            // The three lengths were checked against their limits, so this fits comfortably.
            let total =
                usize::try_from(1 + HEADER2_LEN as u64 + header.sections_len()).map_err(|_| {
                    FrameError::TooLong {
                        len: 1 + HEADER2_LEN as u64 + header.sections_len(),
                        limit: usize::MAX as u64,
                    }
                })?;
            if self.buf.len() < total {
                self.pending = Some((total, Protection::Plain));
                return Ok(None);
            }
            let raw = self.buf.split_to(total).freeze();
            let msg = split_msg(header, raw.clone());
            // §6.1: a plain MSG carries CRCs, and they must match.
            if msg.header.flags & MSG_FLAG_CRC == 0 {
                return Err(DecodeError::Invalid {
                    what: "header2.flags (plain MSG without CRC)",
                }
                .into());
            }
            if self.check_crcs {
                msg.verify_crcs()?;
            }
            return Ok(Some(Decoded {
                frame: Frame::Msg(msg),
                raw,
            }));
        }
        if Tag(tag) == Tag::CHUNK {
            // §7.2: the extent is known from the 29-byte head, like a MSG's.
            if self.buf.len() < CHUNK_HEAD_LEN {
                return Ok(None);
            }
            let (_, len) = Chunk::read_head(&self.buf[..CHUNK_HEAD_LEN], &self.limits)?;
            let total = CHUNK_HEAD_LEN + len;
            if self.buf.len() < total {
                self.pending = Some((total, Protection::Plain));
                return Ok(None);
            }
            let raw = self.buf.split_to(total).freeze();
            let frame = Frame::decode(raw.clone(), &self.limits)?;
            // §7.2: a plain CHUNK carries the CRC of its bytes.
            if let Frame::Chunk(c) = &frame {
                if self.check_crcs && crate::wire::ceph_crc32c(0, &c.data) != c.crc {
                    return Err(DecodeError::Invalid {
                        what: "CHUNK.crc (mismatch)",
                    }
                    .into());
                }
            }
            return Ok(Some(Decoded { frame, raw }));
        }
        let Some(max) = max_plain_len(Tag(tag)) else {
            return Err(DecodeError::UnknownTag(tag).into());
        };
        let mut r = Reader::new(&self.buf);
        match Frame::read_non_msg(&mut r) {
            Ok(frame) => {
                let used = r.position();
                let raw = self.buf.split_to(used).freeze();
                Ok(Some(Decoded { frame, raw }))
            }
            // Incomplete: wait, but never for more than this frame kind's largest size.
            Err(e) if e.is_truncated() && self.buf.len() < max => Ok(None),
            Err(e) if e.is_truncated() => Err(FrameError::TooLong {
                len: self.buf.len() as u64,
                limit: max as u64,
            }),
            Err(e) => Err(e.into()),
        }
    }

    /// §3.4: length check, wait for the whole frame, authenticate, only then decode.
    fn next_protected(&mut self, rx: &mut RxProtector) -> Result<Option<Decoded>, FrameError> {
        if self.buf.len() < PROTECTED_HEAD {
            return Ok(None);
        }
        let mut len = [0u8; 4];
        len.copy_from_slice(&self.buf[16..PROTECTED_HEAD]);
        let length = u32::from_le_bytes(len);
        if length == 0 {
            return Err(DecodeError::Invalid {
                what: "protected frame length (zero)",
            }
            .into());
        }
        if length > self.limits.max_frame {
            return Err(FrameError::TooLong {
                len: length.into(),
                limit: self.limits.max_frame.into(),
            });
        }
        let protection = rx.protection();
        let total = PROTECTED_HEAD
            + length as usize
            + protection.sig_size()
            + protection.padding(length.into());
        if self.buf.len() < total {
            self.pending = Some((total, protection));
            return Ok(None);
        }
        let mut frame = self.buf.split_to(total);
        let body = rx.open(&mut frame)?;
        let body = frame.freeze().slice(body);
        let frame = Frame::decode(body, &self.limits)?;
        if let Frame::Msg(m) = &frame {
            // §6.1: the MAC covers everything, so protected MSGs carry no CRCs.
            if m.header.flags & MSG_FLAG_CRC != 0 {
                return Err(DecodeError::Invalid {
                    what: "header2.flags (CRC in a protected frame)",
                }
                .into());
            }
            m.verify_crcs()?;
        }
        if let Frame::Chunk(c) = &frame {
            // §7.2: the MAC covers the chunk; its CRC field must be 0.
            if c.crc != 0 {
                return Err(DecodeError::Invalid {
                    what: "CHUNK.crc (non-zero in a protected frame)",
                }
                .into());
            }
        }
        Ok(Some(Decoded {
            frame,
            raw: Bytes::new(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{
        derive_keys, CryptoError, SeededRng, SessionKeys, TxProtector, DEFAULT_MAX_FRAMES,
    };
    use crate::wire::message::Message;
    use crate::wire::msgr2::{sample_frames, Ack, Msg};
    use crate::wire::transmit::Transmit;
    use crate::wire::types::{EntityName, EntityType};

    const FORMS: [Protection; 3] = [Protection::Plain, Protection::Signed, Protection::Encrypted];

    fn keys() -> SessionKeys {
        let sk: Vec<u8> = (0u8..32).collect();
        derive_keys(&sk, &[0x11; 32], &[0x22; 32])
    }

    fn pair(p: Protection, max: u64) -> (TxProtector, RxProtector) {
        let k = keys();
        if p == Protection::Plain {
            return (TxProtector::plain(), RxProtector::plain());
        }
        (
            TxProtector::new(p, &k.c2s, max),
            RxProtector::new(p, &k.c2s, max),
        )
    }

    fn samples(p: Protection) -> Vec<Frame> {
        let mut v = sample_frames(p == Protection::Plain);
        for size in [0usize, 1 << 20] {
            let msg = Message::new(1, vec![1u8; size])
                .with_middle(vec![2u8; size])
                .with_data(vec![3u8; size]);
            let crc = p == Protection::Plain;
            v.push(Frame::Msg(Msg::from_message(
                &msg,
                2,
                1,
                EntityName::new(EntityType::OSD, 0),
                crc,
            )));
        }
        v
    }

    /// Seal every frame, then feed the bytes in pieces of `step` (0 = pseudo-random sizes).
    fn round_trip(p: Protection, step: usize, frames: &[Frame]) {
        let (mut tx, mut rx) = pair(p, DEFAULT_MAX_FRAMES);
        let mut rng = SeededRng::new(7);
        let mut t = Transmit::new();
        let mut per_frame = Vec::new();
        for f in frames {
            let before = t.len();
            tx.seal(f, &mut rng, &mut t).unwrap();
            per_frame.push(t.to_vec()[before..].to_vec());
        }
        let wire = t.to_vec();
        let mut d = Deframer::new(Limits::default());
        let mut got = Vec::new();
        let mut pos = 0;
        let mut sizes = SeededRng::new(step as u64);
        let mut pushes = 0usize;
        while pos < wire.len() {
            pushes += 1;
            let n = if step == 0 {
                1 + (sizes.next_u64() % 70_000) as usize
            } else {
                step
            };
            let end = (pos + n).min(wire.len());
            d.push(&wire[pos..end]);
            pos = end;
            while let Some(dec) = d.next_frame(&mut rx).unwrap() {
                assert!(d.read_hint() >= 1);
                got.push(dec);
            }
        }
        assert_eq!(d.buffered(), 0);
        if step == 1 {
            assert_eq!(pushes, wire.len(), "one push per byte");
            assert!(wire.len() > 3 << 20, "includes the 1 MiB sections");
        }
        assert_eq!(got.len(), frames.len(), "{p:?} step {step}");
        for ((dec, f), bytes) in got.iter().zip(frames).zip(&per_frame) {
            assert_eq!(&dec.frame, f, "{p:?} step {step}");
            if p == Protection::Plain {
                assert_eq!(&dec.raw[..], &bytes[..], "raw is the exact wire bytes");
            } else {
                assert!(dec.raw.is_empty());
                assert_eq!(bytes.len() % 16, 0, "protected frames are whole blocks");
            }
        }
    }

    #[test]
    fn round_trips_in_all_forms_one_byte_at_a_time() {
        for p in FORMS {
            round_trip(p, 1, &samples(p));
        }
    }

    #[test]
    fn round_trips_in_all_forms_with_big_messages_and_odd_splits() {
        for p in FORMS {
            let all = samples(p);
            round_trip(p, 7, &all);
            round_trip(p, 0, &all);
            round_trip(p, usize::MAX / 2, &all);
        }
    }

    #[test]
    fn read_hint_asks_for_the_rest_of_a_big_frame() {
        for p in FORMS {
            let (mut tx, mut rx) = pair(p, DEFAULT_MAX_FRAMES);
            let f = samples(p).pop().unwrap();
            let mut t = Transmit::new();
            tx.seal(&f, &mut SeededRng::new(1), &mut t).unwrap();
            let wire = t.to_vec();
            let mut d = Deframer::new(Limits::default());
            assert_eq!(d.read_hint(), DEFAULT_READ_HINT);
            d.push(&wire[..100]);
            assert!(d.next_frame(&mut rx).unwrap().is_none());
            assert_eq!(d.read_hint(), wire.len() - 100, "{p:?}");
            d.buffer_mut().extend_from_slice(&wire[100..]);
            assert_eq!(d.next_frame(&mut rx).unwrap().unwrap().frame, f);
            assert_eq!(d.read_hint(), DEFAULT_READ_HINT);
        }
    }

    #[test]
    fn plain_msg_is_zero_copy_and_sealing_shares_big_sections() {
        let f = samples(Protection::Plain).pop().unwrap();
        let Frame::Msg(m) = &f else { unreachable!() };
        for p in [Protection::Plain, Protection::Signed] {
            let (mut tx, _) = pair(p, DEFAULT_MAX_FRAMES);
            let mut t = Transmit::new();
            tx.seal(&f, &mut SeededRng::new(1), &mut t).unwrap();
            let mut slices = Vec::new();
            t.io_slices(&mut slices);
            assert!(
                slices.iter().any(|s| s.as_ptr() == m.data.as_ptr()),
                "{p:?}: data not copied"
            );
        }
        let mut t = Transmit::new();
        TxProtector::plain()
            .seal(&f, &mut SeededRng::new(1), &mut t)
            .unwrap();
        let mut d = Deframer::new(Limits::default());
        d.push(&t.to_vec());
        let dec = d.next_frame(&mut RxProtector::plain()).unwrap().unwrap();
        let Frame::Msg(back) = dec.frame else {
            unreachable!()
        };
        assert_eq!(
            back.data.as_ptr(),
            dec.raw[1 + HEADER2_LEN + (2 << 20)..].as_ptr()
        );
    }

    /// What the deframer does with exactly `wire` buffered.
    fn outcome(p: Protection, wire: &[u8]) -> Result<Option<Decoded>, FrameError> {
        let (_, mut rx) = pair(p, DEFAULT_MAX_FRAMES);
        let mut d = Deframer::new(Limits::default());
        d.push(wire);
        d.next_frame(&mut rx)
    }

    /// Flip every bit of one protected frame. Each flip must give an error, or — only for a
    /// bit of the length field that makes the length larger — `Ok(None)`: the frame never
    /// completes from these bytes. No flipped frame is ever accepted.
    #[test]
    fn every_single_bit_flip_is_rejected() {
        let f = Frame::Ack(Ack { seq: 0x55 });
        for p in [Protection::Signed, Protection::Encrypted] {
            let (mut tx, _) = pair(p, DEFAULT_MAX_FRAMES);
            let mut t = Transmit::new();
            tx.seal(&f, &mut SeededRng::new(3), &mut t).unwrap();
            let wire = t.to_vec();
            assert!(
                wire.len() % 16 == 0 && wire.len() > 20 + 9 + p.sig_size(),
                "has padding"
            );
            assert_eq!(outcome(p, &wire).unwrap().unwrap().frame, f);
            let mut errors = 0;
            for bit in 0..wire.len() * 8 {
                let mut bad = wire.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                match outcome(p, &bad) {
                    Err(_) => errors += 1,
                    Ok(None) => {
                        assert!(
                            (16..20).contains(&(bit / 8)),
                            "{p:?} bit {bit}: only a length bit may stall"
                        );
                        let len = u32::from_le_bytes(bad[16..20].try_into().unwrap());
                        assert!(len > 9, "{p:?} bit {bit}: stalls only when the length grew");
                    }
                    Ok(Some(d)) => panic!("{p:?} bit {bit}: accepted a tampered frame: {d:?}"),
                }
            }
            assert!(errors > wire.len() * 8 - 32, "{p:?}: {errors}");
        }
    }

    #[test]
    fn replayed_dropped_and_swapped_frames_are_detected() {
        for p in [Protection::Signed, Protection::Encrypted] {
            let (mut tx, _) = pair(p, DEFAULT_MAX_FRAMES);
            let mut rng = SeededRng::new(5);
            let frames: Vec<Vec<u8>> = (0..3)
                .map(|i| {
                    let mut t = Transmit::new();
                    tx.seal(&Frame::Ack(Ack { seq: i }), &mut rng, &mut t)
                        .unwrap();
                    t.to_vec()
                })
                .collect();
            let run = |order: &[usize]| -> Result<usize, FrameError> {
                let (_, mut rx) = pair(p, DEFAULT_MAX_FRAMES);
                let mut d = Deframer::new(Limits::default());
                let mut n = 0;
                for &i in order {
                    d.push(&frames[i]);
                    if d.next_frame(&mut rx)?.is_some() {
                        n += 1;
                    }
                }
                Ok(n)
            };
            assert_eq!(run(&[0, 1, 2]), Ok(3));
            assert_eq!(run(&[0, 0]), Err(FrameError::BadSignature), "{p:?} replay");
            assert_eq!(run(&[0, 2]), Err(FrameError::BadSignature), "{p:?} drop");
            assert_eq!(run(&[1, 0]), Err(FrameError::BadSignature), "{p:?} swap");
            // The other direction's keys do not verify either (reflection).
            let k = keys();
            let mut rx = RxProtector::new(p, &k.s2c, DEFAULT_MAX_FRAMES);
            let mut d = Deframer::new(Limits::default());
            d.push(&frames[0]);
            assert_eq!(d.next_frame(&mut rx), Err(FrameError::BadSignature));
        }
    }

    #[test]
    fn counters_are_exhausted_at_max_frames() {
        for p in [Protection::Signed, Protection::Encrypted] {
            let (mut tx, mut rx) = pair(p, 3);
            let mut rng = SeededRng::new(9);
            let mut t = Transmit::new();
            for i in 0..3 {
                assert_eq!(tx.remaining_frames(), 3 - i);
                tx.seal(&Frame::Ack(Ack { seq: i }), &mut rng, &mut t)
                    .unwrap();
            }
            assert_eq!(tx.remaining_frames(), 0);
            let before = t.len();
            assert_eq!(
                tx.seal(&Frame::ReconnectWait, &mut rng, &mut t),
                Err(CryptoError::Exhausted)
            );
            assert_eq!(t.len(), before, "nothing written");
            let mut d = Deframer::new(Limits::default());
            d.push(&t.to_vec());
            for _ in 0..3 {
                assert!(d.next_frame(&mut rx).unwrap().is_some());
            }
            // A fourth frame (sealed by a sender with a higher limit) is refused by the receiver.
            let (mut tx4, _) = pair(p, 10);
            let mut t4 = Transmit::new();
            for i in 0..4 {
                t4.clear();
                tx4.seal(&Frame::Ack(Ack { seq: i }), &mut rng, &mut t4)
                    .unwrap();
            }
            d.push(&t4.to_vec());
            assert_eq!(d.next_frame(&mut rx), Err(FrameError::Exhausted));
        }
        assert_eq!(TxProtector::plain().remaining_frames(), u64::MAX);
    }

    #[test]
    fn limits_are_enforced_before_buffering() {
        let small = Limits {
            max_front: 100,
            max_middle: 100,
            max_data: 100,
            max_frame: 1000,
        };
        // Protected: 20 bytes announce a length above max_frame.
        for p in [Protection::Signed, Protection::Encrypted] {
            let (_, mut rx) = pair(p, DEFAULT_MAX_FRAMES);
            let mut d = Deframer::new(small);
            let mut head = vec![0u8; 16];
            head.extend_from_slice(&1001u32.to_le_bytes());
            d.push(&head);
            assert_eq!(
                d.next_frame(&mut rx),
                Err(FrameError::TooLong {
                    len: 1001,
                    limit: 1000
                })
            );
            let mut d = Deframer::new(small);
            d.push(&[0u8; 20]);
            assert!(
                matches!(d.next_frame(&mut rx), Err(FrameError::Decode(_))),
                "length 0"
            );
        }
        // Plain MSG: the header alone is enough to refuse a big section.
        let mut h = vec![0u8; 1 + HEADER2_LEN];
        h[0] = Tag::MSG.0;
        h[1 + 30..1 + 34].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut d = Deframer::new(small);
        d.push(&h);
        assert!(matches!(
            d.next_frame(&mut RxProtector::plain()),
            Err(FrameError::Decode(DecodeError::TooLarge {
                what: "header2.data_len",
                ..
            }))
        ));
        // Plain AUTH with a huge blob length: refused from its first 5 bytes.
        let mut d = Deframer::new(small);
        d.push(&[Tag::AUTH.0, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            d.next_frame(&mut RxProtector::plain()),
            Err(FrameError::Decode(DecodeError::TooLarge { .. }))
        ));
        // Unknown tag: refused at once.
        let mut d = Deframer::new(small);
        d.push(&[0x7f]);
        assert_eq!(
            d.next_frame(&mut RxProtector::plain()),
            Err(FrameError::Decode(DecodeError::UnknownTag(0x7f)))
        );
    }

    #[test]
    fn plain_msg_crcs_are_required_and_checked_protected_crcs_refused() {
        let msg = Message::new(1, &b"abc"[..]);
        let src = EntityName::new(EntityType::MON, 0);
        let encode = |m: Msg| {
            let mut v = Vec::new();
            Frame::Msg(m).encode(&mut v);
            v
        };
        for (m, ok) in [
            (Msg::from_message(&msg, 1, 0, src, true), true),
            (Msg::from_message(&msg, 1, 0, src, false), false),
        ] {
            let mut d = Deframer::new(Limits::default());
            d.push(&encode(m.clone()));
            assert_eq!(d.next_frame(&mut RxProtector::plain()).is_ok(), ok);
            let mut bad = encode(m);
            let last = bad.len() - 1;
            bad[last] ^= 1;
            let mut d = Deframer::new(Limits::default());
            d.push(&bad);
            assert!(d.next_frame(&mut RxProtector::plain()).is_err());
        }
        let (mut tx, mut rx) = pair(Protection::Signed, DEFAULT_MAX_FRAMES);
        let mut t = Transmit::new();
        tx.seal(
            &Frame::Msg(Msg::from_message(&msg, 1, 0, src, true)),
            &mut SeededRng::new(1),
            &mut t,
        )
        .unwrap();
        let mut d = Deframer::new(Limits::default());
        d.push(&t.to_vec());
        assert!(matches!(
            d.next_frame(&mut rx),
            Err(FrameError::Decode(DecodeError::Invalid { .. }))
        ));
    }

    /// `set_check_crcs(false)` (`ms_crc_data=false`): wrong CRCs in a plain MSG or CHUNK
    /// pass, a plain MSG without its `CRC` flag still does not.
    #[test]
    fn unchecked_crcs_skip_the_comparisons_not_the_flag_rule() {
        let msg = Message::new(1, &b"abc"[..]);
        let src = EntityName::new(EntityType::MON, 0);
        let mut corrupt = Vec::new();
        Frame::Msg(Msg::from_message(&msg, 1, 0, src, true)).encode(&mut corrupt);
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1; // the front's last byte: front_crc no longer matches
        let mut no_flag = Vec::new();
        Frame::Msg(Msg::from_message(&msg, 1, 0, src, false)).encode(&mut no_flag);
        let mut bad_chunk = Vec::new();
        Frame::Chunk(Chunk {
            xid: 1,
            offset: 0,
            seq: 0,
            crc: 0xdead_beef,
            data: Bytes::from_static(b"chunk"),
        })
        .encode(&mut bad_chunk);
        let run = |check: bool, wire: &[u8]| {
            let mut d = Deframer::new(Limits::default());
            d.set_check_crcs(check);
            d.push(wire);
            d.next_frame(&mut RxProtector::plain())
        };
        assert!(run(true, &corrupt).is_err());
        match run(false, &corrupt) {
            Ok(Some(Decoded {
                frame: Frame::Msg(m),
                ..
            })) => assert_eq!(&m.front[..], b"abb"),
            other => panic!("{other:?}"),
        }
        assert!(run(true, &bad_chunk).is_err());
        assert!(matches!(
            run(false, &bad_chunk),
            Ok(Some(Decoded {
                frame: Frame::Chunk(_),
                ..
            }))
        ));
        for check in [true, false] {
            assert!(run(check, &no_flag).is_err(), "check_crcs {check}");
        }
    }

    #[test]
    fn banner_then_frames_from_one_buffer() {
        let mut wire = Vec::new();
        Banner {
            supported: 1,
            required: 0,
        }
        .encode(&mut wire);
        Frame::ReconnectReset.encode(&mut wire);
        let mut d = Deframer::new(Limits::default());
        for (i, b) in wire.iter().enumerate() {
            d.push(&[*b]);
            let got = d.take_banner().unwrap();
            assert_eq!(got.is_some(), i == 8, "byte {i}");
            if got.is_some() {
                break;
            }
        }
        d.push(&wire[9..]);
        let dec = d.next_frame(&mut RxProtector::plain()).unwrap().unwrap();
        assert_eq!(dec.frame, Frame::ReconnectReset);
        assert_eq!(&dec.raw[..], &[Tag::RECONNECT_RESET.0]);
    }
}
