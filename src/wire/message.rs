//! The message: what users send and receive, in both protocols.
//!
//! A message is opaque to the messenger except for its header fields: a type code,
//! a priority, encoding versions, a transaction id, and three payload sections
//! (front, middle, data). Sequence numbers and the source name are assigned by the
//! protocol and are only meaningful on received messages.

use std::fmt;

use bytes::Bytes;

use super::types::EntityName;

/// Priorities used by Ceph (`CEPH_MSG_PRIO_*`); higher goes first.
pub mod priority {
    /// Background traffic.
    pub const LOW: u16 = 64;
    /// The default.
    pub const DEFAULT: u16 = 127;
    /// Control traffic such as monitor replies.
    pub const HIGH: u16 = 196;
    /// The most urgent (also used to replay unacknowledged messages first).
    pub const HIGHEST: u16 = 255;
}

/// One message.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// Message type (`CEPH_MSG_*`); opaque to the messenger.
    pub ty: u16,
    /// Priority in the sender's queue; see [`priority`].
    pub priority: u16,
    /// Encoding version of the payload.
    pub version: u16,
    /// Oldest version that can decode the payload.
    pub compat_version: u16,
    /// Transaction id, echoed by request/response protocols.
    pub tid: u64,
    /// Alignment hint for the data section.
    pub data_off: u16,
    /// The front section.
    pub front: Bytes,
    /// The middle section.
    pub middle: Bytes,
    /// The data section (bulk payload).
    pub data: Bytes,
    /// Sequence number within the session. Set by the protocol on receipt; ignored on send.
    pub seq: u64,
    /// The sender. Set by the protocol on receipt; ignored on send.
    pub src: EntityName,
    /// Section CRCs computed ahead of time by the sending thread (see
    /// [`Message::precompute_crcs`]); never part of equality or the wire. Decoders
    /// start it empty (`CrcMemo::default()`).
    pub(crate) crcs: CrcMemo,
}

/// The CRC of one section, with the identity (address and length) of the bytes it
/// covers: a section replaced after the computation never meets a stale CRC.
#[derive(Clone, Copy, Debug)]
struct SectionCrc {
    addr: usize,
    len: usize,
    crc: u32,
}

impl SectionCrc {
    fn of(b: &Bytes) -> Self {
        SectionCrc::with(b, super::ceph_crc32c(0, b))
    }

    fn with(b: &Bytes, crc: u32) -> Self {
        SectionCrc {
            addr: b.as_ptr() as usize,
            len: b.len(),
            crc,
        }
    }

    fn covers(&self, b: &Bytes) -> bool {
        self.addr == b.as_ptr() as usize && self.len == b.len()
    }
}

/// Remembered section CRCs (front, middle, data), and the data section's CRCs piece
/// by piece for chunked sending, boxed so that messages without them (all small ones)
/// stay small. Equal to every other memo: a cache is not part of a message's value.
#[derive(Clone, Debug, Default)]
pub(crate) struct CrcMemo(Option<Box<Memo>>);

#[derive(Clone, Debug)]
struct Memo {
    sections: [SectionCrc; 3],
    /// The CRC of each `piece`-byte piece of the data section (the last may be shorter):
    /// the CRCs the CHUNK frames of a chunked message carry (docs/PROTOCOL.md §7.2).
    pieces: Vec<u32>,
    /// The piece length; 0 when `pieces` is empty.
    piece: usize,
}

impl PartialEq for CrcMemo {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for CrcMemo {}

impl Message {
    /// A message of type `ty` with the given front and default everything else.
    pub fn new(ty: u16, front: impl Into<Bytes>) -> Self {
        Message {
            ty,
            priority: priority::DEFAULT,
            version: 1,
            compat_version: 1,
            tid: 0,
            data_off: 0,
            front: front.into(),
            middle: Bytes::new(),
            data: Bytes::new(),
            seq: 0,
            src: EntityName::new(super::types::EntityType::ANY, u64::MAX),
            crcs: CrcMemo::default(),
        }
    }

    /// Compute the CRC32C (Ceph's, seed 0) of every section now, on the calling
    /// thread, and remember them: the runtime does this in `send` for big messages
    /// so that the writer thread (and a replay after a reconnect) only copies bytes.
    /// With `piece` > 0 and a longer data section, the data's CRC is remembered for
    /// each `piece`-byte piece too (the chunks it is sent in when structured data is
    /// negotiated) and the section's CRC is combined from them: one pass either way.
    pub(crate) fn precompute_crcs(&mut self, piece: usize) {
        let (data, pieces, piece) = if piece > 0 && self.data.len() > piece {
            let pieces: Vec<u32> = self
                .data
                .chunks(piece)
                .map(|p| super::ceph_crc32c(0, p))
                .collect();
            let shift = super::Crc32cShift::cached(piece as u64);
            let mut whole = 0;
            for (i, &c) in pieces.iter().enumerate() {
                let len = piece.min(self.data.len() - i * piece);
                whole = if len == piece {
                    shift.apply(whole) ^ c
                } else {
                    super::ceph_crc32c_combine(whole, c, len as u64)
                };
            }
            (SectionCrc::with(&self.data, whole), pieces, piece)
        } else {
            (SectionCrc::of(&self.data), Vec::new(), 0)
        };
        self.crcs = CrcMemo(Some(Box::new(Memo {
            sections: [
                SectionCrc::of(&self.front),
                SectionCrc::of(&self.middle),
                data,
            ],
            pieces,
            piece,
        })));
    }

    /// The section CRCs (front, middle, data): remembered ones where they still cover
    /// the section, computed now otherwise.
    pub(crate) fn section_crcs(&self) -> [u32; 3] {
        let sections = [&self.front, &self.middle, &self.data];
        let mut out = [0u32; 3];
        for (i, (o, b)) in out.iter_mut().zip(sections).enumerate() {
            *o = match self.crcs.0.as_deref().map(|m| m.sections[i]) {
                Some(m) if m.covers(b) => m.crc,
                _ => super::ceph_crc32c(0, b),
            };
        }
        out
    }

    /// The CRC of `data[start..end]`: remembered if it is one of the pieces
    /// [`Message::precompute_crcs`] computed (and the data section is still the one it
    /// saw), computed now otherwise. Panics like slicing if the range is out of bounds.
    pub(crate) fn data_crc(&self, start: usize, end: usize) -> u32 {
        let memo = self.crcs.0.as_deref();
        if let Some(m) = memo.filter(|m| m.piece > 0 && m.sections[2].covers(&self.data)) {
            if start % m.piece == 0 && end == (start + m.piece).min(self.data.len()) {
                if let Some(&c) = m.pieces.get(start / m.piece) {
                    return c;
                }
            }
        }
        super::ceph_crc32c(0, &self.data[start..end])
    }

    /// Set the data section.
    pub fn with_data(mut self, data: impl Into<Bytes>) -> Self {
        self.data = data.into();
        self
    }

    /// Set the middle section.
    pub fn with_middle(mut self, middle: impl Into<Bytes>) -> Self {
        self.middle = middle.into();
        self
    }

    /// Set the priority.
    pub fn with_priority(mut self, priority: u16) -> Self {
        self.priority = priority;
        self
    }

    /// Set the transaction id.
    pub fn with_tid(mut self, tid: u64) -> Self {
        self.tid = tid;
        self
    }

    /// Total payload bytes (front + middle + data): what the byte throttles count.
    pub fn payload_len(&self) -> usize {
        self.front.len() + self.middle.len() + self.data.len()
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("ty", &format_args!("0x{:x}", self.ty))
            .field("seq", &self.seq)
            .field("tid", &self.tid)
            .field("prio", &self.priority)
            .field("src", &self.src)
            .field("front", &self.front.len())
            .field("middle", &self.middle.len())
            .field("data", &self.data.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ceph_crc32c;

    fn sample() -> Message {
        Message::new(7, vec![1u8; 100])
            .with_middle(vec![2u8; 10])
            .with_data(vec![3u8; 5000])
    }

    fn fresh(m: &Message) -> [u32; 3] {
        [
            ceph_crc32c(0, &m.front),
            ceph_crc32c(0, &m.middle),
            ceph_crc32c(0, &m.data),
        ]
    }

    #[test]
    fn remembered_crcs_equal_computed_ones() {
        let mut m = sample();
        let want = fresh(&m);
        assert_eq!(m.section_crcs(), want, "without a memo");
        m.precompute_crcs(0);
        assert_eq!(m.section_crcs(), want, "with a memo");
        // A clone shares the sections and the memo.
        assert_eq!(m.clone().section_crcs(), want);
    }

    #[test]
    fn a_section_replaced_after_precomputing_is_never_paired_with_its_old_crc() {
        let mut m = sample();
        m.precompute_crcs(0);
        m.data = Bytes::from(vec![4u8; 5000]); // same length, other bytes
        m.front = Bytes::from(vec![1u8; 99]); // other length
        assert_eq!(m.section_crcs(), fresh(&m));
        assert_ne!(m.section_crcs()[2], ceph_crc32c(0, &[3u8; 5000]));
    }

    /// Pieces at the chunk size: each piece's CRC as the CHUNK frames need it, the
    /// section's CRC combined from them; other ranges, and a replaced data section,
    /// are computed from the bytes.
    #[test]
    fn piece_crcs_match_the_bytes_and_combine_into_the_sections() {
        let data: Vec<u8> = (0..300_001u32).map(|i| (i % 253) as u8 ^ 0x5a).collect();
        let mut m = sample().with_data(data.clone());
        let piece = 65_536;
        m.precompute_crcs(piece);
        assert_eq!(m.section_crcs(), fresh(&m));
        let mut start = 0;
        while start < data.len() {
            let end = (start + piece).min(data.len());
            assert_eq!(
                m.data_crc(start, end),
                ceph_crc32c(0, &data[start..end]),
                "{start}"
            );
            start = end;
        }
        for (a, b) in [(1, 65_537), (0, 100), (65_536, 131_071), (300_001, 300_001)] {
            assert_eq!(m.data_crc(a, b), ceph_crc32c(0, &data[a..b]), "{a}..{b}");
        }
        m.data = Bytes::from(vec![9u8; data.len()]);
        assert_eq!(m.data_crc(0, piece), ceph_crc32c(0, &m.data[..piece]));
        assert_eq!(m.section_crcs(), fresh(&m));
        // A data section no longer than one piece keeps a single CRC.
        let mut small = sample();
        small.precompute_crcs(65_536);
        assert_eq!(small.section_crcs(), fresh(&small));
        assert_eq!(small.data_crc(0, 10), ceph_crc32c(0, &small.data[..10]));
    }

    #[test]
    fn the_memo_is_not_part_of_equality() {
        let a = sample();
        let mut b = a.clone();
        b.precompute_crcs(0);
        assert_eq!(a, b);
    }
}
