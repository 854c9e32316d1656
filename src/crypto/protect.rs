//! The record layer: one object per direction owning the keys and the implicit frame
//! counter (docs/PROTOCOL.md §3.2–§3.4).
//!
//! ```text
//! signed:    confounder[16] | le32 length | tag payload          | hmac[32] | padding[p]
//! encrypted: confounder[16] | le32 length | AES-GCM(tag payload) | gcm[16]  | padding[p]
//! ```

use std::fmt;
use std::ops::Range;

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

/// The state one direction's protector keeps: the form, the keys, the implicit frame
/// counter (the next frame's) and its limit. Shared by [`TxProtector`] and
/// [`RxProtector`].
struct Direction {
    protection: Protection,
    keys: Option<Keys>,
    seq: u64,
    max_frames: u64,
}

impl Direction {
    fn plain() -> Self {
        Direction {
            protection: Protection::Plain,
            keys: None,
            seq: 0,
            max_frames: u64::MAX,
        }
    }

    fn new(p: Protection, keys: &DirectionKeys, max_frames: u64) -> Self {
        Direction {
            protection: p,
            keys: (p != Protection::Plain).then(|| Keys::new(keys)),
            seq: 0,
            max_frames,
        }
    }

    fn debug(&self, name: &str, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(name)
            .field("protection", &self.protection)
            .field("seq", &self.seq)
            .finish()
    }
}

/// Protects the frames one side sends.
pub struct TxProtector {
    d: Direction,
}

impl fmt::Debug for TxProtector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.d.debug("TxProtector", f)
    }
}

impl TxProtector {
    /// Plain frames (before AUTH_DONE, or with AUTH_DONE flags 0).
    pub fn plain() -> Self {
        TxProtector {
            d: Direction::plain(),
        }
    }

    /// Protection `p` with this direction's keys; at most `max_frames` frames (counter 0..max_frames).
    pub fn new(p: Protection, keys: &DirectionKeys, max_frames: u64) -> Self {
        TxProtector {
            d: Direction::new(p, keys, max_frames),
        }
    }

    /// The form this protector produces.
    pub fn protection(&self) -> Protection {
        self.d.protection
    }

    /// How many more frames may be sealed (`u64::MAX` when plain). A caller sends
    /// CLOSE(REKEY) while this is still at least 1.
    pub fn remaining_frames(&self) -> u64 {
        match self.d.protection {
            Protection::Plain => u64::MAX,
            _ => self.d.max_frames.saturating_sub(self.d.seq),
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
        let Some(keys) = &self.d.keys else {
            seal_plain(frame, out);
            return Ok(());
        };
        if self.d.seq >= self.d.max_frames {
            return Err(CryptoError::Exhausted);
        }
        let length = frame.encoded_len() as u64;
        let len32 = u32::try_from(length).map_err(|_| CryptoError::TooLong { len: length })?;
        let p = self.d.protection.padding(length);
        let mut random = [0u8; CONFOUNDER + 15];
        rng.fill(&mut random[..CONFOUNDER + p]);
        let (confounder, rest) = random.split_at(CONFOUNDER);
        let padding = &rest[..p];
        let seq = self.d.seq;
        match self.d.protection {
            Protection::Signed => seal_signed(keys, seq, frame, confounder, len32, padding, out),
            _ => seal_encrypted(keys, seq, frame, confounder, len32, padding, out)?,
        }
        self.d.seq += 1;
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

/// Authenticates (and decrypts) the frames one side receives.
pub struct RxProtector {
    d: Direction,
}

impl fmt::Debug for RxProtector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.d.debug("RxProtector", f)
    }
}

impl RxProtector {
    /// Plain frames.
    pub fn plain() -> Self {
        RxProtector {
            d: Direction::plain(),
        }
    }

    /// Protection `p` with the peer's direction keys; at most `max_frames` frames are accepted.
    pub fn new(p: Protection, keys: &DirectionKeys, max_frames: u64) -> Self {
        RxProtector {
            d: Direction::new(p, keys, max_frames),
        }
    }

    /// The form this protector accepts.
    pub fn protection(&self) -> Protection {
        self.d.protection
    }

    /// Frames accepted so far (the counter the next frame must carry).
    pub fn frames_accepted(&self) -> u64 {
        self.d.seq
    }

    /// §3.4 step 3 (and 4's decryption): authenticate a whole protected frame, whose
    /// length field the deframer has already checked, with the expected counter; decrypt
    /// in place. Returns the range of (tag ‖ payload) within `frame`.
    pub(crate) fn open(&mut self, frame: &mut [u8]) -> Result<Range<usize>, FrameError> {
        let Some(keys) = &self.d.keys else {
            return Err(FrameError::BadSignature);
        };
        if self.d.seq >= self.d.max_frames {
            return Err(FrameError::Exhausted);
        }
        let mut len = [0u8; 4];
        len.copy_from_slice(&frame[CONFOUNDER..PROTECTED_HEAD]);
        let end = PROTECTED_HEAD + u32::from_le_bytes(len) as usize;
        let sig_end = end + self.d.protection.sig_size();
        match self.d.protection {
            Protection::Signed => {
                let mut ctx = hmac::Context::with_key(&keys.mac);
                ctx.update(&self.d.seq.to_le_bytes());
                ctx.update(&frame[..end]);
                ctx.update(&frame[sig_end..]);
                if !ct_eq(ctx.sign().as_ref(), &frame[end..sig_end]) {
                    return Err(FrameError::BadSignature);
                }
            }
            _ => {
                let padding = frame.len() - sig_end;
                let mut aad = [0u8; PROTECTED_HEAD + 15];
                aad[..PROTECTED_HEAD].copy_from_slice(&frame[..PROTECTED_HEAD]);
                aad[PROTECTED_HEAD..PROTECTED_HEAD + padding].copy_from_slice(&frame[sig_end..]);
                let aad = Aad::from(&aad[..PROTECTED_HEAD + padding]);
                keys.aead
                    .open_in_place(
                        keys.nonce(self.d.seq),
                        aad,
                        &mut frame[PROTECTED_HEAD..sig_end],
                    )
                    .map_err(|_: ring::error::Unspecified| FrameError::BadSignature)?;
            }
        }
        self.d.seq += 1;
        Ok(PROTECTED_HEAD..end)
    }
}
