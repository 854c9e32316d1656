//! Bytes to typed values and back, with no connection state.
//!
//! Everything here is pure: a decoder reads from a [`Reader`] cursor and either
//! produces a value, reports that the input ended early ([`DecodeError::Truncated`]),
//! or reports that the input is malformed. A streaming caller (a deframer) turns
//! `Truncated` into "need more bytes"; a caller that holds a whole frame treats it
//! as an error. Every length that a peer controls is checked against a named limit
//! *before* anything is allocated (docs/PROTOCOL.md §2.3).
//!
//! Layout:
//! - [`types`]: encodings shared by both protocols (entity names and addresses, timespecs).
//! - [`message`]: the message header fields and payload sections common to v1 and msgr2.
//! - `msgr2`: the 2016 msgr2 proposal's banner, frames and deframer.
//! - `v1`: the legacy protocol that real Ceph daemons speak.

pub mod message;
pub mod msgr2;
pub mod transmit;
pub mod types;
pub mod v1;

use std::fmt;

/// Why a decoder rejected its input.
///
/// Small and `Copy` on purpose: the `what` fields name the field being decoded,
/// so a log line says exactly where a peer went wrong without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended before `what` was complete. A streaming caller waits for more bytes.
    Truncated {
        /// The field being read when the input ran out.
        what: &'static str,
    },
    /// A length or count field is larger than the limit we accept.
    TooLarge {
        /// The field that carried the length.
        what: &'static str,
        /// The value the peer sent.
        len: u64,
        /// The largest value we accept (docs/PROTOCOL.md §2.3).
        limit: u64,
    },
    /// A field holds a value that is not allowed.
    Invalid {
        /// The field, and in a few words what is wrong with it.
        what: &'static str,
    },
    /// A tag byte that is not defined in the current protocol phase or at all.
    UnknownTag(u8),
    /// The value decoded completely but bytes were left over.
    TrailingBytes {
        /// The value that was decoded.
        what: &'static str,
        /// How many bytes were left.
        count: usize,
    },
}

impl DecodeError {
    /// True if more input could turn this error into a success.
    pub fn is_truncated(&self) -> bool {
        matches!(self, DecodeError::Truncated { .. })
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { what } => write!(f, "input ended inside {what}"),
            DecodeError::TooLarge { what, len, limit } => {
                write!(f, "{what} is {len}, above the limit of {limit}")
            }
            DecodeError::Invalid { what } => write!(f, "invalid {what}"),
            DecodeError::UnknownTag(t) => write!(f, "unknown tag 0x{t:02x}"),
            DecodeError::TrailingBytes { what, count } => {
                write!(f, "{count} unexpected bytes after {what}")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// A cursor over a byte slice with little-endian readers.
///
/// Reads never panic: running off the end yields [`DecodeError::Truncated`].
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader positioned at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// True if every byte has been consumed.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    /// The unconsumed bytes, without consuming them.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// Consume exactly `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated { what });
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Consume a fixed-size array.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    /// One byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    /// A little-endian u16.
    pub fn le16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    /// A little-endian u32.
    pub fn le32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    /// A little-endian u64.
    pub fn le64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A big-endian u16 (only the legacy sockaddr uses network order).
    pub fn be16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    /// A le32 length followed by that many bytes, the length checked against `limit` first.
    pub fn len_prefixed(
        &mut self,
        limit: u32,
        what: &'static str,
    ) -> Result<&'a [u8], DecodeError> {
        let len = self.le32(what)?;
        if len > limit {
            return Err(DecodeError::TooLarge {
                what,
                len: len.into(),
                limit: limit.into(),
            });
        }
        self.take(len as usize, what)
    }

    /// A le32 element count, checked against `limit` before the caller allocates.
    pub fn count(&mut self, limit: u32, what: &'static str) -> Result<usize, DecodeError> {
        let n = self.le32(what)?;
        if n > limit {
            return Err(DecodeError::TooLarge {
                what,
                len: n.into(),
                limit: limit.into(),
            });
        }
        Ok(n as usize)
    }

    /// Fail unless every byte has been consumed.
    pub fn expect_end(&self, what: &'static str) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            count => Err(DecodeError::TrailingBytes { what, count }),
        }
    }
}

/// Little-endian writers over `Vec<u8>`; the mirror of [`Reader`].
pub trait WriteLe {
    /// Append one byte.
    fn put_u8(&mut self, v: u8);
    /// Append a little-endian u16.
    fn put_le16(&mut self, v: u16);
    /// Append a little-endian u32.
    fn put_le32(&mut self, v: u32);
    /// Append a little-endian u64.
    fn put_le64(&mut self, v: u64);
    /// Append a le32 length and the bytes.
    fn put_len_prefixed(&mut self, bytes: &[u8]);
}

impl WriteLe for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_le16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_le32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_le64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_len_prefixed(&mut self, bytes: &[u8]) {
        // Callers bound their payloads far below 4 GiB; see docs/PROTOCOL.md §2.3.
        let len = u32::try_from(bytes.len()).expect("length-prefixed field over 4 GiB");
        self.put_le32(len);
        self.extend_from_slice(bytes);
    }
}

/// A value with one exact wire encoding.
pub trait Codec: Sized {
    /// A short name used in error messages.
    const NAME: &'static str;

    /// Append the encoding of `self` to `out`.
    fn encode(&self, out: &mut Vec<u8>);

    /// Read one value from the cursor, leaving it after the value.
    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError>;

    /// Decode a value that must occupy all of `bytes`.
    fn decode_exact(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let v = Self::read(&mut r)?;
        r.expect_end(Self::NAME)?;
        Ok(v)
    }

    /// The encoding as a fresh vector.
    fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }
}

/// Ceph's crc32c: Castagnoli polynomial, register starts at `seed`, no inversion
/// at either end (docs/PROTOCOL.md §5.2; `ceph_crc32c(0, "123456789") == 0x58e3fa20`).
///
/// Computed with `crc-fast` (carry-less multiplication, 3–4× the throughput of the
/// crc32 instruction on large sections). Its CRC-32/ISCSI digest starts from the given
/// register and inverts only at the end, so one more inversion gives Ceph's form.
pub fn ceph_crc32c(seed: u32, data: &[u8]) -> u32 {
    let mut digest =
        crc_fast::Digest::new_with_init_state(crc_fast::CrcAlgorithm::Crc32Iscsi, u64::from(seed));
    digest.update(data);
    // The digest's value fits in 32 bits for a 32-bit CRC.
    !(digest.finalize() as u32)
}

/// Ceph's crc32c of `A` followed by `B`, from `ceph_crc32c(0, A)`, `ceph_crc32c(0, B)` and
/// the length of `B`: the register of `A` run over `len_b` zero bytes, plus `B`'s CRC (the
/// CRC is linear). Costs a pass over `len_b` zeros (the message CRC memo, which combines
/// many pieces of one length, uses a precomputed 32-column map instead).
pub fn ceph_crc32c_combine(crc_a: u32, crc_b: u32, len_b: u64) -> u32 {
    crc_over_zeros(crc_a, len_b) ^ crc_b
}

/// `ceph_crc32c(seed, [0; len])` without a buffer of `len` zeros.
fn crc_over_zeros(mut crc: u32, mut len: u64) -> u32 {
    static ZEROS: [u8; 4096] = [0; 4096];
    while len > 0 {
        let n = len.min(ZEROS.len() as u64) as usize;
        crc = ceph_crc32c(crc, &ZEROS[..n]);
        len -= n as u64;
    }
    crc
}

/// The shift of a crc32c register over a fixed number of zero bytes, as the linear map
/// it is (one column per register bit): `ceph_crc32c(0, A‖B) ==
/// Crc32cShift::new(B.len()).apply(ceph_crc32c(0, A)) ^ ceph_crc32c(0, B)`. Building
/// it costs 32 CRC passes over the length; [`Crc32cShift::cached`] keeps the few in use.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Crc32cShift {
    len: u64,
    cols: [u32; 32],
}

impl Crc32cShift {
    /// The shift over `len` zero bytes.
    pub(crate) fn new(len: u64) -> Self {
        let mut cols = [0u32; 32];
        for (i, c) in cols.iter_mut().enumerate() {
            *c = crc_over_zeros(1 << i, len);
        }
        Crc32cShift { len, cols }
    }

    /// The shift over `len` zero bytes, from a small process-wide cache (a messenger
    /// uses one chunk size).
    pub(crate) fn cached(len: u64) -> Self {
        static CACHE: parking_lot::Mutex<Vec<Crc32cShift>> = parking_lot::Mutex::new(Vec::new());
        if let Some(s) = CACHE.lock().iter().find(|s| s.len == len) {
            return *s;
        }
        let s = Crc32cShift::new(len);
        let mut cache = CACHE.lock();
        if cache.len() >= 8 {
            cache.remove(0);
        }
        cache.push(s);
        s
    }

    /// The register `crc` run over the zeros.
    pub(crate) fn apply(&self, crc: u32) -> u32 {
        let mut out = 0;
        for (i, c) in self.cols.iter().enumerate() {
            if crc & (1 << i) != 0 {
                out ^= c;
            }
        }
        out
    }
}

/// A `Debug` wrapper that prints bytes as hex, shortened past 64 bytes.
pub struct HexDump<'a>(pub &'a [u8]);

impl fmt::Debug for HexDump<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOW: usize = 64;
        for b in self.0.iter().take(SHOW) {
            write!(f, "{b:02x}")?;
        }
        if self.0.len() > SHOW {
            write!(f, "…(+{} bytes)", self.0.len() - SHOW)?;
        }
        Ok(())
    }
}

/// Lowercase hex of `bytes` (test vectors, key logs).
pub fn to_hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Parse hex, ignoring ASCII whitespace; `None` on an odd count or a non-hex character.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if digits.len() % 2 != 0 {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            Some((hi * 16 + lo) as u8)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Combining the CRCs of two pieces gives the CRC of the whole, for pieces of any
    /// length (including empty ones) and at any split.
    #[test]
    fn crc32c_combine_equals_the_crc_of_the_concatenation() {
        let data: Vec<u8> = (0..200_003u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for split in [0usize, 1, 7, 4096, 65_536, 100_000, 199_999, 200_003] {
            let (a, b) = data.split_at(split);
            assert_eq!(
                ceph_crc32c_combine(ceph_crc32c(0, a), ceph_crc32c(0, b), b.len() as u64),
                ceph_crc32c(0, &data),
                "split at {split}"
            );
        }
        // Folding 64 KiB pieces left to right with the shift map, as the memo does.
        let shift = Crc32cShift::cached(65_536);
        let mut whole = 0;
        for piece in data.chunks(65_536) {
            let c = ceph_crc32c(0, piece);
            whole = if piece.len() == 65_536 {
                shift.apply(whole) ^ c
            } else {
                ceph_crc32c_combine(whole, c, piece.len() as u64)
            };
        }
        assert_eq!(whole, ceph_crc32c(0, &data));
        assert_eq!(
            Crc32cShift::new(7).apply(0xdead_beef),
            crc_over_zeros(0xdead_beef, 7)
        );
    }

    #[test]
    fn ceph_crc32c_matches_the_published_vectors() {
        assert_eq!(ceph_crc32c(0, b"123456789"), 0x58e3_fa20);
        assert_eq!(ceph_crc32c(0xffff_ffff, b"123456789"), 0x1cf9_6d7c);
        assert_eq!(ceph_crc32c(0, b""), 0);
    }

    /// The bit-at-a-time definition: reflected Castagnoli, register = seed, no inversion.
    fn crc_reference(seed: u32, data: &[u8]) -> u32 {
        let mut crc = seed;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
            }
        }
        crc
    }

    #[test]
    fn crc_matches_the_bitwise_definition_at_every_length_and_seed() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let data: Vec<u8> = (0..70_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        for len in (0..300).chain([1023, 1024, 4095, 4096, 4097, 65_536, 70_000]) {
            for seed in [0, 1, 0x1234_5678, 0xffff_ffff] {
                assert_eq!(
                    ceph_crc32c(seed, &data[..len]),
                    crc_reference(seed, &data[..len]),
                    "len {len} seed {seed:#x}"
                );
            }
        }
    }

    #[test]
    fn reader_reports_truncation_and_trailing_bytes() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.le16("x").unwrap(), 0x0201);
        assert!(r.le16("y").unwrap_err().is_truncated());
        assert_eq!(
            r.expect_end("v"),
            Err(DecodeError::TrailingBytes {
                what: "v",
                count: 1
            })
        );
    }

    #[test]
    fn length_prefix_is_checked_before_taking() {
        let mut buf = Vec::new();
        buf.put_le32(1_000_000);
        let mut r = Reader::new(&buf);
        assert!(matches!(
            r.len_prefixed(100, "blob"),
            Err(DecodeError::TooLarge { len: 1_000_000, .. })
        ));
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(from_hex("00ff 10\n").unwrap(), vec![0, 0xff, 0x10]);
        assert_eq!(to_hex(&[0xab, 1]), "ab01");
        assert!(from_hex("abc").is_none());
        assert!(from_hex("zz").is_none());
    }
}
