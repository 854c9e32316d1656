//! The structured-data extension (docs/PROTOCOL.md §7): the receiver's reassembly of a
//! chunked message with NBD's rules, and the sender's state of one chunked transfer.
//!
//! Pure bookkeeping: no I/O, no clock. The exchange phase (`exchange.rs`) drives it.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use bytes::Bytes;

use super::landing::Landing;
use crate::wire::message::Message;
use crate::wire::msgr2::{Chunk, Msg, MsgHeader2};

/// Why a chunked message violates §7. Every one of these closes the connection
/// with CLOSE(PROTOCOL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// CHUNKED MSG, CHUNK or CHUNK_ABORT on a link without the extension (§7.1).
    NotNegotiated,
    /// A CHUNKED MSG whose `data_len` is 0 (§7.3).
    EmptyData {
        /// The transfer id.
        xid: u64,
    },
    /// A CHUNKED MSG while another chunked message is still in flight (§7.3).
    AlreadyInFlight {
        /// The transfer in flight.
        current: u64,
        /// The transfer the peer tried to start.
        xid: u64,
    },
    /// A transfer id that is 0 or not above the previous one on this link (§7.3).
    BadXid {
        /// The id.
        xid: u64,
    },
    /// A CHUNK or CHUNK_ABORT for a transfer that is not in flight (§7.4).
    UnknownTransfer {
        /// The id it named.
        xid: u64,
    },
    /// A chunk reaches past the end of the data section (§7.4 rule 1).
    OutOfBounds {
        /// The transfer id.
        xid: u64,
        /// The chunk's offset.
        offset: u64,
        /// The chunk's length.
        len: u64,
        /// The data section's length.
        total: u64,
    },
    /// A chunk covers bytes that an earlier chunk covered (§7.4 rule 2; includes duplicates).
    Overlap {
        /// The transfer id.
        xid: u64,
        /// The chunk's offset.
        offset: u64,
        /// The chunk's length.
        len: u64,
    },
    /// A chunk carries a sequence number but the message is not complete (§7.4 rule 3).
    SeqBeforeComplete {
        /// The transfer id.
        xid: u64,
        /// The sequence number it carried.
        seq: u64,
    },
    /// The chunk that completes the message carries sequence number 0 (§7.4 rule 3).
    MissingSeq {
        /// The transfer id.
        xid: u64,
    },
    /// The link closed while a chunked message was incomplete (logged; the partial data is
    /// discarded and the sender resends the message, §7.7).
    Incomplete {
        /// The transfer id.
        xid: u64,
        /// Bytes received.
        received: u64,
        /// Bytes announced.
        total: u64,
    },
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ChunkError::NotNegotiated => f.write_str(
                "chunked data without the structured-data extension (protocol feature bit 0)",
            ),
            ChunkError::EmptyData { xid } => {
                write!(f, "chunked message {xid} announces an empty data section")
            }
            ChunkError::AlreadyInFlight { current, xid } => write!(
                f,
                "chunked message {xid} started while chunked message {current} is in flight"
            ),
            ChunkError::BadXid { xid } => {
                write!(f, "chunked message id {xid} is 0 or not increasing")
            }
            ChunkError::UnknownTransfer { xid } => {
                write!(f, "chunk for chunked message {xid}, which is not in flight")
            }
            ChunkError::OutOfBounds {
                xid,
                offset,
                len,
                total,
            } => write!(
                f,
                "chunk {offset}+{len} of message {xid} lies outside its {total}-byte data section"
            ),
            ChunkError::Overlap { xid, offset, len } => write!(
                f,
                "chunk {offset}+{len} of message {xid} covers bytes already received"
            ),
            ChunkError::SeqBeforeComplete { xid, seq } => write!(
                f,
                "chunk of message {xid} carries seq {seq} but the message is not complete"
            ),
            ChunkError::MissingSeq { xid } => write!(
                f,
                "the chunk completing message {xid} carries no sequence number"
            ),
            ChunkError::Incomplete {
                xid,
                received,
                total,
            } => write!(
                f,
                "chunked message {xid} incomplete: {received} of {total} bytes received"
            ),
        }
    }
}

impl std::error::Error for ChunkError {}

/// A byte range set of covered `[start, end)` ranges, merged when adjacent.
#[derive(Debug, Default, Clone)]
pub(crate) struct Coverage {
    ranges: BTreeMap<u64, u64>,
    covered: u64,
}

impl Coverage {
    /// Add `[start, end)`; false (and no change) if any byte is already covered.
    pub(crate) fn insert(&mut self, start: u64, end: u64) -> bool {
        // The range starting at or before `start` must end at or before it.
        if let Some((_, &e)) = self.ranges.range(..=start).next_back() {
            if e > start {
                return false;
            }
        }
        // No range may start inside [start, end).
        if self.ranges.range(start..end).next().is_some() {
            return false;
        }
        let mut new_start = start;
        let mut new_end = end;
        if let Some((&s, &e)) = self.ranges.range(..=start).next_back() {
            if e == start {
                new_start = s;
                self.ranges.remove(&s);
            }
        }
        if let Some(&e) = self.ranges.get(&end) {
            new_end = e;
            self.ranges.remove(&end);
        }
        self.ranges.insert(new_start, new_end);
        self.covered += end - start;
        true
    }

    /// Bytes covered.
    pub(crate) fn covered(&self) -> u64 {
        self.covered
    }
}

/// One chunked message being received (§7.4).
pub(crate) struct InTransfer {
    pub(crate) xid: u64,
    header: MsgHeader2,
    front: Bytes,
    middle: Bytes,
    /// `None` once the message completed.
    data: Option<Landing>,
    coverage: Coverage,
}

/// The outcome of one accepted chunk.
pub(crate) enum ChunkOutcome {
    /// More chunks are needed.
    Partial,
    /// The message is complete: its sequence number and the message.
    Complete(Box<Msg>),
}

impl InTransfer {
    /// Start receiving the chunked message whose header (and front, middle) arrived.
    /// `data_len` was checked against `max_data_len` by the decoder; the buffer is
    /// allocated zeroed (the same memory bound as one plain MSG; see `landing.rs`).
    pub(crate) fn new(msg: Msg) -> Result<Self, ChunkError> {
        let xid = msg.header.seq;
        if msg.header.data_len == 0 {
            return Err(ChunkError::EmptyData { xid });
        }
        Ok(InTransfer {
            xid,
            data: Some(Landing::new(msg.header.data_len as usize)),
            header: msg.header,
            front: msg.front,
            middle: msg.middle,
            coverage: Coverage::default(),
        })
    }

    /// Bytes received so far and bytes announced.
    pub(crate) fn progress(&self) -> (u64, u64) {
        (self.coverage.covered(), u64::from(self.header.data_len))
    }

    /// The message's tid.
    pub(crate) fn tid(&self) -> u64 {
        self.header.tid
    }

    /// Apply NBD's rules to one chunk (§7.4).
    pub(crate) fn accept(&mut self, chunk: &Chunk) -> Result<ChunkOutcome, ChunkError> {
        let xid = self.xid;
        let total = u64::from(self.header.data_len);
        let len = chunk.data.len() as u64;
        let end = chunk
            .offset
            .checked_add(len)
            .filter(|&e| e <= total)
            .ok_or(ChunkError::OutOfBounds {
                xid,
                offset: chunk.offset,
                len,
                total,
            })?;
        if !self.coverage.insert(chunk.offset, end) {
            return Err(ChunkError::Overlap {
                xid,
                offset: chunk.offset,
                len,
            });
        }
        let Some(data) = self.data.as_mut() else {
            // A completed transfer is no longer `current`; nothing reaches here.
            return Err(ChunkError::UnknownTransfer { xid });
        };
        // Both bounds were checked against the buffer's length above.
        data.write(chunk.offset as usize, &chunk.data);
        let complete = self.coverage.covered() == total;
        match (complete, chunk.seq) {
            (false, 0) => Ok(ChunkOutcome::Partial),
            (false, seq) => Err(ChunkError::SeqBeforeComplete { xid, seq }),
            (true, 0) => Err(ChunkError::MissingSeq { xid }),
            (true, seq) => {
                let mut header = self.header;
                header.seq = seq;
                let msg = Msg {
                    header,
                    front: std::mem::take(&mut self.front),
                    middle: std::mem::take(&mut self.middle),
                    data: self
                        .data
                        .take()
                        .map(Landing::into_bytes)
                        .unwrap_or_default(),
                };
                Ok(ChunkOutcome::Complete(Box::new(msg)))
            }
        }
    }
}

impl fmt::Debug for InTransfer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InTransfer")
            .field("xid", &self.xid)
            .field("progress", &self.progress())
            .finish()
    }
}

/// One chunked message being sent (§7.6).
#[derive(Debug)]
pub(crate) struct OutTransfer {
    /// The transfer id on this link.
    pub(crate) xid: u64,
    /// The message. For a replay, `msg.seq` is its (already assigned) sequence number.
    pub(crate) msg: Message,
    /// True for a replay of a message that already has its sequence number.
    pub(crate) replay: bool,
    /// Where the next chunk starts.
    pub(crate) next_offset: u64,
}

/// The sender's chunking state of one link (§7.6).
#[derive(Debug, Default)]
pub(crate) struct ChunkTx {
    /// The transfer whose header is on the wire and whose chunks are being sent.
    pub(crate) active: Option<OutTransfer>,
    /// New big messages popped from the queue while another transfer was active, in order.
    pub(crate) deferred: VecDeque<Message>,
    /// The last transfer id used on this link.
    pub(crate) last_xid: u64,
}

impl ChunkTx {
    /// True if a chunk or a deferred message waits.
    pub(crate) fn pending(&self) -> bool {
        self.active.is_some() || !self.deferred.is_empty()
    }

    /// The messages that never completed on this link (new ones only: replays are in the
    /// session's sent list already), in their original order.
    pub(crate) fn take_unfinished(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        if let Some(t) = self.active.take() {
            if !t.replay {
                out.push(t.msg);
            }
        }
        out.extend(self.deferred.drain(..));
        out
    }

    /// A new transfer id.
    pub(crate) fn next_xid(&mut self) -> u64 {
        self.last_xid += 1;
        self.last_xid
    }
}

/// The receiver's chunking state of one link.
#[derive(Debug, Default)]
pub(crate) struct ChunkRx {
    /// The chunked message in flight.
    pub(crate) current: Option<InTransfer>,
    /// The last transfer id seen on this link.
    pub(crate) last_xid: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::msgr2::MSG_FLAG_CHUNKED;
    use crate::wire::types::{EntityName, EntityType};

    fn transfer(total: usize) -> InTransfer {
        let m = Message::new(1, &b"f"[..]).with_data(vec![0u8; total]);
        let mut msg = Msg::from_message(&m, 7, 0, EntityName::new(EntityType::OSD, 1), false);
        msg.header.flags |= MSG_FLAG_CHUNKED;
        msg.data = Bytes::new();
        InTransfer::new(msg).unwrap()
    }

    fn chunk(offset: u64, data: &[u8], seq: u64) -> Chunk {
        Chunk {
            xid: 7,
            offset,
            seq,
            crc: 0,
            data: Bytes::copy_from_slice(data),
        }
    }

    #[test]
    fn out_of_order_chunks_complete_the_message() {
        let mut t = transfer(10);
        assert!(matches!(
            t.accept(&chunk(6, b"6789", 0)),
            Ok(ChunkOutcome::Partial)
        ));
        assert!(matches!(
            t.accept(&chunk(0, b"012", 0)),
            Ok(ChunkOutcome::Partial)
        ));
        let Ok(ChunkOutcome::Complete(m)) = t.accept(&chunk(3, b"345", 3)) else {
            panic!("complete")
        };
        assert_eq!(&m.data[..], b"0123456789");
        assert_eq!(m.header.seq, 3);
    }

    #[test]
    fn violations_are_rejected() {
        let mut t = transfer(10);
        assert_eq!(
            t.accept(&chunk(8, b"abc", 0)).err(),
            Some(ChunkError::OutOfBounds {
                xid: 7,
                offset: 8,
                len: 3,
                total: 10
            })
        );
        assert!(matches!(
            t.accept(&chunk(u64::MAX, b"a", 0)).err(),
            Some(ChunkError::OutOfBounds { .. })
        ));
        t.accept(&chunk(2, b"234", 0)).ok().unwrap();
        // Exact duplicate, overlap at either end, and a range that contains it.
        for (off, data) in [(2u64, &b"234"[..]), (0, b"012"), (4, b"45"), (1, b"12345")] {
            assert_eq!(
                t.accept(&chunk(off, data, 0)).err(),
                Some(ChunkError::Overlap {
                    xid: 7,
                    offset: off,
                    len: data.len() as u64
                }),
                "{off}"
            );
        }
        assert_eq!(
            t.accept(&chunk(5, b"5", 9)).err(),
            Some(ChunkError::SeqBeforeComplete { xid: 7, seq: 9 })
        );
        let mut t = transfer(2);
        t.accept(&chunk(0, b"0", 0)).ok().unwrap();
        assert_eq!(
            t.accept(&chunk(1, b"1", 0)).err(),
            Some(ChunkError::MissingSeq { xid: 7 })
        );
        assert_eq!(t.progress(), (2, 2));
    }

    #[test]
    fn coverage_merges_neighbours() {
        let mut c = Coverage::default();
        assert!(c.insert(10, 20));
        assert!(c.insert(0, 10));
        assert!(c.insert(20, 30));
        assert_eq!(c.ranges.len(), 1);
        assert!(!c.insert(29, 31));
        assert!(!c.insert(5, 6));
        assert!(c.insert(30, 31));
        assert_eq!(c.covered(), 31);
    }
}
