//! The record layer: one object per direction owning the keys and the implicit frame
//! counter (docs/PROTOCOL.md §3.2–§3.4).
//!
//! ```text
//! signed:    confounder[16] | le32 length | tag payload          | hmac[32] | padding[p]
//! encrypted: confounder[16] | le32 length | AES-GCM(tag payload) | gcm[16]  | padding[p]
//! ```

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
use ring::hmac;

use super::{CryptoError, DirectionKeys, Protection, Random};
use crate::wire::msgr2::{Frame, FrameError};
use crate::wire::transmit::Transmit;
use crate::wire::WriteLe;

/// Default `max_frames_per_key` (§3.4): 2^32 frames per direction and key.
pub const DEFAULT_MAX_FRAMES: u64 = 1 << 32;

/// Bytes before the (tag ‖ payload) of a protected frame: confounder and le32 length.
pub(crate) const PROTECTED_HEAD: usize = 20;
const CONFOUNDER: usize = 16;

/// The ring objects built from one [`DirectionKeys`].
struct Keys {
    aead: LessSafeKey,
    mac: hmac::Key,
    iv: [u8; 12],
}

impl Keys {
    fn new(k: &DirectionKeys) -> Self {
        // A 16-byte key is always valid for AES-128-GCM.
        let unbound = UnboundKey::new(&AES_128_GCM, k.key()).expect("16-byte AES-128 key");
        Keys {
            aead: LessSafeKey::new(unbound),
            mac: hmac::Key::new(hmac::HMAC_SHA256, k.mac()),
            iv: *k.iv(),
        }
    }

    /// §3.3: nonce = iv XOR (00000000 ‖ BE64 seq).
    fn nonce(&self, seq: u64) -> Nonce {
        let mut n = self.iv;
        for (b, s) in n[4..].iter_mut().zip(seq.to_be_bytes()) {
            *b ^= s;
        }
        Nonce::assume_unique_for_key(n)
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        self.iv.fill(0);
        std::hint::black_box(&self.iv);
    }
}

/// Compare two MACs without an early exit.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Protects the frames one side sends.
pub struct TxProtector {
    protection: Protection,
    keys: Option<Keys>,
    /// The counter of the next protected frame.
    seq: u64,
    max_frames: u64,
}

impl fmt::Debug for TxProtector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TxProtector")
            .field("protection", &self.protection)
            .field("seq", &self.seq)
            .finish()
    }
}

impl TxProtector {
    /// Plain frames (before AUTH_DONE, or with AUTH_DONE flags 0).
    pub fn plain() -> Self {
        TxProtector {
            protection: Protection::Plain,
            keys: None,
            seq: 0,
            max_frames: u64::MAX,
        }
    }

    /// Protection `p` with this direction's keys; at most `max_frames` frames (counter 0..max_frames).
    pub fn new(p: Protection, keys: &DirectionKeys, max_frames: u64) -> Self {
        let keys = (p != Protection::Plain).then(|| Keys::new(keys));
        TxProtector {
            protection: p,
            keys,
            seq: 0,
            max_frames,
        }
    }

    /// The form this protector produces.
    pub fn protection(&self) -> Protection {
        self.protection
    }

    /// How many more frames may be sealed (`u64::MAX` when plain). A caller sends
    /// CLOSE(REKEY) while this is still at least 1.
    pub fn remaining_frames(&self) -> u64 {
        match self.protection {
            Protection::Plain => u64::MAX,
            _ => self.max_frames.saturating_sub(self.seq),
        }
    }

    /// Append `frame` in this direction's form. Plain MSG sections and signed MSG sections
    /// of 4 KiB or more go out by reference; encryption copies once into `out`.
    /// Draws `16 + p` random bytes (confounder, then padding) for a protected frame.
    pub fn seal(
        &mut self,
        frame: &Frame,
        rng: &mut dyn Random,
        out: &mut Transmit,
    ) -> Result<(), CryptoError> {
        let Some(keys) = &self.keys else {
            seal_plain(frame, out);
            return Ok(());
        };
        if self.seq >= self.max_frames {
            return Err(CryptoError::Exhausted);
        }
        let length = frame.encoded_len() as u64;
        let len32 = u32::try_from(length).map_err(|_| CryptoError::TooLong { len: length })?;
        let p = self.protection.padding(length);
        let mut random = [0u8; CONFOUNDER + 15];
        rng.fill(&mut random[..CONFOUNDER + p]);
        let (confounder, rest) = random.split_at(CONFOUNDER);
        let padding = &rest[..p];
        let seq = self.seq;
        match self.protection {
            Protection::Signed => seal_signed(keys, seq, frame, confounder, len32, padding, out),
            _ => seal_encrypted(keys, seq, frame, confounder, len32, padding, out)?,
        }
        self.seq += 1;
        Ok(())
    }
}

fn seal_plain(frame: &Frame, out: &mut Transmit) {
    match frame {
        Frame::Msg(m) => {
            out.push_with(|buf| {
                buf.put_u8(frame.tag().0);
                m.header.encode(buf);
            });
            out.push_shared(m.front.clone());
            out.push_shared(m.middle.clone());
            out.push_shared(m.data.clone());
        }
        Frame::Chunk(c) => {
            out.push_with(|buf| c.encode_head(buf));
            out.push_shared(c.data.clone());
        }
        _ => {
            out.push_with(|buf| frame.encode(buf));
        }
    }
}

/// §3.2: HMAC over le64 seq ‖ confounder ‖ le32 length ‖ tag ‖ payload ‖ padding,
/// computed incrementally so MSG sections are never copied.
fn seal_signed(
    keys: &Keys,
    seq: u64,
    frame: &Frame,
    confounder: &[u8],
    length: u32,
    padding: &[u8],
    out: &mut Transmit,
) {
    let mut ctx = hmac::Context::with_key(&keys.mac);
    ctx.update(&seq.to_le_bytes());
    let head = out.push_with(|buf| {
        buf.extend_from_slice(confounder);
        buf.put_le32(length);
        match frame {
            Frame::Msg(m) => {
                buf.put_u8(frame.tag().0);
                m.header.encode(buf);
            }
            Frame::Chunk(c) => c.encode_head(buf),
            _ => frame.encode(buf),
        }
    });
    ctx.update(&out.buf_mut()[head]);
    if let Frame::Msg(m) = frame {
        for section in [&m.front, &m.middle, &m.data] {
            ctx.update(section);
            out.push_shared(section.clone());
        }
    }
    if let Frame::Chunk(c) = frame {
        ctx.update(&c.data);
        out.push_shared(c.data.clone());
    }
    ctx.update(padding);
    let sig = ctx.sign();
    out.push_copy(sig.as_ref());
    out.push_copy(padding);
}

/// §3.3: AES-128-GCM in place in `out`'s buffer; AAD = confounder ‖ le32 length ‖ padding.
fn seal_encrypted(
    keys: &Keys,
    seq: u64,
    frame: &Frame,
    confounder: &[u8],
    length: u32,
    padding: &[u8],
    out: &mut Transmit,
) -> Result<(), CryptoError> {
    let total = PROTECTED_HEAD + length as usize + 16 + padding.len();
    let range = out.push_with(|buf| {
        buf.reserve(total);
        buf.extend_from_slice(confounder);
        buf.put_le32(length);
        frame.encode(buf);
    });
    let mut aad = [0u8; PROTECTED_HEAD + 15];
    aad[..CONFOUNDER].copy_from_slice(confounder);
    aad[CONFOUNDER..PROTECTED_HEAD].copy_from_slice(&length.to_le_bytes());
    aad[PROTECTED_HEAD..PROTECTED_HEAD + padding.len()].copy_from_slice(padding);
    let body = &mut out.buf_mut()[range.start + PROTECTED_HEAD..range.end];
    let tag = keys
        .aead
        .seal_in_place_separate_tag(
            keys.nonce(seq),
            Aad::from(&aad[..PROTECTED_HEAD + padding.len()]),
            body,
        )
        .map_err(|_| CryptoError::TooLong { len: length.into() })?;
    out.push_copy(tag.as_ref());
    out.push_copy(padding);
    Ok(())
}

/// Source of [`RxProtector`] identities, so that a [`SignedVerify`] begun by one
/// protector is never finished by another (the deframer keeps the verification of a
/// partly received frame across calls, and the shell may replace the protector).
static NEXT_RX_ID: AtomicU64 = AtomicU64::new(1);

/// Authenticates (and decrypts) the frames one side receives.
pub struct RxProtector {
    protection: Protection,
    keys: Option<Keys>,
    /// The counter the next frame must carry.
    seq: u64,
    max_frames: u64,
    /// This protector's identity (see [`NEXT_RX_ID`]).
    id: u64,
}

/// The HMAC of a signed frame computed while its bytes arrive (§3.4 step 3, done
/// incrementally so the receiver hashes in step with the sender instead of after it).
///
/// Begun by [`RxProtector::begin_signed`] for the protector's current counter, fed the
/// frame's bytes in order from its first (confounder) byte with [`SignedVerify::update`],
/// and ended by [`RxProtector::finish_signed`], which alone decides whether the frame is
/// authentic. Nothing of the frame is interpreted before that.
pub(crate) struct SignedVerify {
    ctx: hmac::Context,
    /// The protector that began it, and the counter it was begun with.
    owner: u64,
    seq: u64,
    /// Bytes of the frame (confounder ‖ length ‖ tag ‖ payload) hashed so far.
    hashed: usize,
}

impl fmt::Debug for SignedVerify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedVerify")
            .field("seq", &self.seq)
            .field("hashed", &self.hashed)
            .finish()
    }
}

impl SignedVerify {
    /// Bytes of the frame hashed so far (the offset of the next byte to feed).
    pub(crate) fn hashed(&self) -> usize {
        self.hashed
    }

    /// Hash the frame's next bytes, which follow the [`SignedVerify::hashed`] bytes
    /// already fed. Only confounder, length, tag and payload go in here: the caller
    /// stops at the signature.
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        self.ctx.update(bytes);
        self.hashed += bytes.len();
    }
}

impl fmt::Debug for RxProtector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RxProtector")
            .field("protection", &self.protection)
            .field("seq", &self.seq)
            .finish()
    }
}

impl RxProtector {
    /// Plain frames.
    pub fn plain() -> Self {
        RxProtector {
            protection: Protection::Plain,
            keys: None,
            seq: 0,
            max_frames: u64::MAX,
            id: NEXT_RX_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Protection `p` with the peer's direction keys; at most `max_frames` frames are accepted.
    pub fn new(p: Protection, keys: &DirectionKeys, max_frames: u64) -> Self {
        let keys = (p != Protection::Plain).then(|| Keys::new(keys));
        RxProtector {
            protection: p,
            keys,
            seq: 0,
            max_frames,
            id: NEXT_RX_ID.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The form this protector accepts.
    pub fn protection(&self) -> Protection {
        self.protection
    }

    /// Frames accepted so far (the counter the next frame must carry).
    pub fn frames_accepted(&self) -> u64 {
        self.seq
    }

    /// Start authenticating the next signed frame before all of it is buffered: the
    /// HMAC with the counter this frame must carry. `None` unless this protector is
    /// signed. Feed it the frame from its first byte, then call [`Self::finish_signed`].
    pub(crate) fn begin_signed(&self) -> Option<SignedVerify> {
        let keys = self
            .keys
            .as_ref()
            .filter(|_| self.protection == Protection::Signed)?;
        let mut ctx = hmac::Context::with_key(&keys.mac);
        ctx.update(&self.seq.to_le_bytes());
        Some(SignedVerify {
            ctx,
            owner: self.id,
            seq: self.seq,
            hashed: 0,
        })
    }

    /// True if `v` was begun by this protector for the frame it expects next, so that
    /// feeding it more of that frame and finishing it here is meaningful.
    pub(crate) fn continues(&self, v: &SignedVerify) -> bool {
        v.owner == self.id && v.seq == self.seq
    }

    /// §3.4 step 3 for a signed frame whose bytes up to `v.hashed()` were fed to `v`:
    /// hash the rest of (confounder ‖ length ‖ tag ‖ payload) and the padding, and
    /// compare with the frame's signature in constant time. `frame` is the whole frame,
    /// whose length field the deframer has already checked. A `v` begun by another
    /// protector, for another counter or fed past the payload is discarded and the
    /// frame hashed from its start. Returns the range of (tag ‖ payload) within `frame`.
    pub(crate) fn finish_signed(
        &mut self,
        v: Option<SignedVerify>,
        frame: &[u8],
    ) -> Result<Range<usize>, FrameError> {
        if self.protection != Protection::Signed {
            return Err(FrameError::BadSignature);
        }
        if self.seq >= self.max_frames {
            return Err(FrameError::Exhausted);
        }
        let end = body_end(frame);
        let sig_end = end + self.protection.sig_size();
        let v = v.filter(|v| self.continues(v) && v.hashed <= end);
        let Some(mut v) = v.or_else(|| self.begin_signed()) else {
            return Err(FrameError::BadSignature);
        };
        let from = v.hashed;
        v.update(&frame[from..end]);
        v.ctx.update(&frame[sig_end..]);
        if !ct_eq(v.ctx.sign().as_ref(), &frame[end..sig_end]) {
            return Err(FrameError::BadSignature);
        }
        self.seq += 1;
        Ok(PROTECTED_HEAD..end)
    }

    /// §3.4 step 3 (and 4's decryption): authenticate a whole protected frame, whose
    /// length field the deframer has already checked, with the expected counter; decrypt
    /// in place. Returns the range of (tag ‖ payload) within `frame`.
    pub(crate) fn open(&mut self, frame: &mut [u8]) -> Result<Range<usize>, FrameError> {
        let Some(keys) = &self.keys else {
            return Err(FrameError::BadSignature);
        };
        if self.protection == Protection::Signed {
            return self.finish_signed(None, frame);
        }
        if self.seq >= self.max_frames {
            return Err(FrameError::Exhausted);
        }
        let end = body_end(frame);
        let sig_end = end + self.protection.sig_size();
        let padding = frame.len() - sig_end;
        let mut aad = [0u8; PROTECTED_HEAD + 15];
        aad[..PROTECTED_HEAD].copy_from_slice(&frame[..PROTECTED_HEAD]);
        aad[PROTECTED_HEAD..PROTECTED_HEAD + padding].copy_from_slice(&frame[sig_end..]);
        let aad = Aad::from(&aad[..PROTECTED_HEAD + padding]);
        keys.aead
            .open_in_place(
                keys.nonce(self.seq),
                aad,
                &mut frame[PROTECTED_HEAD..sig_end],
            )
            .map_err(|_: ring::error::Unspecified| FrameError::BadSignature)?;
        self.seq += 1;
        Ok(PROTECTED_HEAD..end)
    }
}

/// The end of (tag ‖ payload) in a protected frame: the head plus its le32 length.
fn body_end(frame: &[u8]) -> usize {
    let mut len = [0u8; 4];
    len.copy_from_slice(&frame[CONFOUNDER..PROTECTED_HEAD]);
    PROTECTED_HEAD + u32::from_le_bytes(len) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{derive_keys, SeededRng};
    use crate::wire::msgr2::Ack;

    fn keys() -> crate::crypto::SessionKeys {
        derive_keys(&[9u8; 32], &[0x11; 32], &[0x22; 32])
    }

    /// `n` signed ACK frames sealed with counters 0..n.
    fn signed_acks(n: u64) -> Vec<Vec<u8>> {
        let mut tx = TxProtector::new(Protection::Signed, &keys().c2s, DEFAULT_MAX_FRAMES);
        let mut rng = SeededRng::new(4);
        (0..n)
            .map(|i| {
                let mut t = Transmit::new();
                tx.seal(&Frame::Ack(Ack { seq: i }), &mut rng, &mut t)
                    .unwrap();
                t.to_vec()
            })
            .collect()
    }

    #[test]
    fn incremental_verification_at_every_split_matches_open() {
        let frames = signed_acks(1);
        let wire = &frames[0];
        let end = body_end(wire);
        let mut whole = RxProtector::new(Protection::Signed, &keys().c2s, DEFAULT_MAX_FRAMES);
        assert_eq!(whole.open(&mut wire.clone()), Ok(PROTECTED_HEAD..end));
        for a in 0..=end {
            for b in a..=end {
                let mut rx = RxProtector::new(Protection::Signed, &keys().c2s, DEFAULT_MAX_FRAMES);
                let mut v = rx.begin_signed().unwrap();
                v.update(&wire[..a]);
                v.update(&wire[a..b]);
                assert_eq!(v.hashed(), b);
                assert!(rx.continues(&v));
                assert_eq!(
                    rx.finish_signed(Some(v), wire),
                    Ok(PROTECTED_HEAD..end),
                    "{a}..{b}"
                );
                assert_eq!(rx.frames_accepted(), 1);
            }
        }
    }

    #[test]
    fn a_verification_that_does_not_fit_is_redone_from_the_start() {
        let frames = signed_acks(2);
        let k = keys();
        let mut rx = RxProtector::new(Protection::Signed, &k.c2s, DEFAULT_MAX_FRAMES);
        // Fed past the payload (into the signature): discarded, the frame still verifies.
        let mut v = rx.begin_signed().unwrap();
        v.update(&frames[0][..body_end(&frames[0]) + 5]);
        assert!(rx.finish_signed(Some(v), &frames[0]).is_ok());
        // Fed garbage, but begun for counter 0 while the protector now expects 1: discarded.
        let mut stale = RxProtector::new(Protection::Signed, &k.c2s, DEFAULT_MAX_FRAMES)
            .begin_signed()
            .unwrap();
        stale.update(b"not the frame");
        assert!(!rx.continues(&stale), "another protector's");
        assert!(rx.finish_signed(Some(stale), &frames[1]).is_ok());
        // Begun for counter 0 of this protector, which has moved on: discarded, so the
        // frame is checked against counter 2 and refused (it was sealed with 0).
        let mut rx = RxProtector::new(Protection::Signed, &k.c2s, DEFAULT_MAX_FRAMES);
        let mut v = rx.begin_signed().unwrap();
        v.update(&frames[0][..10]);
        assert!(rx.open(&mut frames[0].clone()).is_ok());
        assert!(!rx.continues(&v));
        assert_eq!(
            rx.finish_signed(Some(v), &frames[0]),
            Err(FrameError::BadSignature)
        );
        // A verification fed other bytes than the frame's refuses the frame.
        let mut rx = RxProtector::new(Protection::Signed, &k.c2s, DEFAULT_MAX_FRAMES);
        let mut v = rx.begin_signed().unwrap();
        let mut other = frames[0].clone();
        other[25] ^= 1;
        v.update(&other[..27]);
        assert_eq!(
            rx.finish_signed(Some(v), &frames[0]),
            Err(FrameError::BadSignature)
        );
        assert_eq!(rx.frames_accepted(), 0);
    }

    #[test]
    fn only_signed_protectors_verify_incrementally_and_the_limit_still_holds() {
        let k = keys();
        let frames = signed_acks(2);
        assert!(RxProtector::plain().begin_signed().is_none());
        let mut enc = RxProtector::new(Protection::Encrypted, &k.c2s, DEFAULT_MAX_FRAMES);
        assert!(enc.begin_signed().is_none());
        assert_eq!(
            enc.finish_signed(None, &frames[0]),
            Err(FrameError::BadSignature)
        );
        let mut rx = RxProtector::new(Protection::Signed, &k.c2s, 1);
        let v = rx.begin_signed();
        assert!(rx.finish_signed(v, &frames[0]).is_ok());
        let mut v = rx.begin_signed().unwrap();
        v.update(&frames[1][..body_end(&frames[1])]);
        assert_eq!(
            rx.finish_signed(Some(v), &frames[1]),
            Err(FrameError::Exhausted)
        );
    }
}
