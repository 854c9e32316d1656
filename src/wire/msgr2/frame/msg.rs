//! MSG (0x20): `ceph_msg_header2` and the message frame built from a user
//! [`Message`], with its CRCs (docs/PROTOCOL.md §6.1).

use std::fmt;

use bytes::Bytes;

use super::super::{HEADER2_LEN, MSG_FLAG_CHUNKED, MSG_FLAG_CRC};
use super::Limits;
use crate::wire::message::Message;
use crate::wire::types::EntityName;
use crate::wire::{ceph_crc32c, Codec, DecodeError, Reader};

/// `ceph_msg_header2`, 73 bytes (§6.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgHeader2 {
    /// Sequence number in the session (from 1).
    pub seq: u64,
    /// Transaction id.
    pub tid: u64,
    /// Message type.
    pub ty: u16,
    /// Priority.
    pub priority: u16,
    /// Encoding version.
    pub version: u16,
    /// Length of the front section.
    pub front_len: u32,
    /// Length of the middle section.
    pub middle_len: u32,
    /// Length of the data section.
    pub data_len: u32,
    /// Alignment hint for the data section.
    pub data_off: u16,
    /// The sender.
    pub src: EntityName,
    /// Oldest compatible encoding version.
    pub compat_version: u16,
    /// [`MSG_FLAG_CRC`] | [`MSG_FLAG_CHUNKED`]; other bits are refused by the decoder.
    pub flags: u16,
    /// Highest sequence the sender has received.
    pub ack_seq: u64,
    /// crc32c of the front section (or 0).
    pub front_crc: u32,
    /// crc32c of the middle section (or 0).
    pub middle_crc: u32,
    /// crc32c of the data section (or 0).
    pub data_crc: u32,
    /// crc32c of header bytes 0..69 (or 0).
    pub header_crc: u32,
}

/// Offset of `header_crc` in header2: it covers the bytes before it.
const HEADER2_CRC_OFF: usize = 69;

impl MsgHeader2 {
    /// Write the 73 bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_bytes());
    }

    /// The 73 bytes as an array, without allocating.
    pub fn to_bytes(&self) -> [u8; HEADER2_LEN] {
        let mut out = [0u8; HEADER2_LEN];
        let mut pos = 0;
        let mut put = |b: &[u8]| {
            out[pos..pos + b.len()].copy_from_slice(b);
            pos += b.len();
        };
        put(&self.seq.to_le_bytes());
        put(&self.tid.to_le_bytes());
        put(&self.ty.to_le_bytes());
        put(&self.priority.to_le_bytes());
        put(&self.version.to_le_bytes());
        put(&self.front_len.to_le_bytes());
        put(&self.middle_len.to_le_bytes());
        put(&self.data_len.to_le_bytes());
        put(&self.data_off.to_le_bytes());
        put(&[self.src.ty.0]);
        put(&self.src.num.to_le_bytes());
        put(&self.compat_version.to_le_bytes());
        put(&self.flags.to_le_bytes());
        put(&self.ack_seq.to_le_bytes());
        put(&self.front_crc.to_le_bytes());
        put(&self.middle_crc.to_le_bytes());
        put(&self.data_crc.to_le_bytes());
        put(&self.header_crc.to_le_bytes());
        out
    }

    /// Read the 73 bytes; the section lengths are checked against `limits`.
    pub fn read(r: &mut Reader<'_>, limits: &Limits) -> Result<Self, DecodeError> {
        let h = MsgHeader2 {
            seq: r.le64("header2.seq")?,
            tid: r.le64("header2.tid")?,
            ty: r.le16("header2.type")?,
            priority: r.le16("header2.priority")?,
            version: r.le16("header2.version")?,
            front_len: r.le32("header2.front_len")?,
            middle_len: r.le32("header2.middle_len")?,
            data_len: r.le32("header2.data_len")?,
            data_off: r.le16("header2.data_off")?,
            src: EntityName::read(r)?,
            compat_version: r.le16("header2.compat_version")?,
            flags: r.le16("header2.flags")?,
            ack_seq: r.le64("header2.ack_seq")?,
            front_crc: r.le32("header2.front_crc")?,
            middle_crc: r.le32("header2.middle_crc")?,
            data_crc: r.le32("header2.data_crc")?,
            header_crc: r.le32("header2.header_crc")?,
        };
        h.check(limits)?;
        Ok(h)
    }

    /// The section-length and flag checks of [`MsgHeader2::read`].
    pub(crate) fn check(&self, limits: &Limits) -> Result<(), DecodeError> {
        // §2.3: every section length is checked before anything is allocated or awaited.
        let check = |what, len: u32, limit: u32| {
            if len > limit {
                return Err(DecodeError::TooLarge {
                    what,
                    len: len.into(),
                    limit: limit.into(),
                });
            }
            Ok(())
        };
        check("header2.front_len", self.front_len, limits.max_front)?;
        check("header2.middle_len", self.middle_len, limits.max_middle)?;
        check("header2.data_len", self.data_len, limits.max_data)?;
        if self.flags & !(MSG_FLAG_CRC | MSG_FLAG_CHUNKED) != 0 {
            return Err(DecodeError::Invalid {
                what: "header2.flags (undefined bit)",
            });
        }
        Ok(())
    }

    /// Total bytes of the sections that travel in the MSG frame itself: all three, or
    /// front and middle only for a CHUNKED message, whose data follows in CHUNK frames (§7.3).
    pub fn sections_len(&self) -> u64 {
        u64::from(self.front_len) + u64::from(self.middle_len) + u64::from(self.wire_data_len())
    }

    /// `data_len`, or 0 for a CHUNKED message (its data is not in the MSG frame).
    pub fn wire_data_len(&self) -> u32 {
        if self.flags & MSG_FLAG_CHUNKED != 0 {
            0
        } else {
            self.data_len
        }
    }
}

/// MSG (0x20): a message. The sections are zero-copy slices of the received frame.
#[derive(Clone, PartialEq, Eq)]
pub struct Msg {
    /// The header.
    pub header: MsgHeader2,
    /// Front section.
    pub front: Bytes,
    /// Middle section.
    pub middle: Bytes,
    /// Data section.
    pub data: Bytes,
}

impl Msg {
    /// Build from a user Message: sets seq, ack_seq, src; if `crc` sets MSG_FLAG_CRC and
    /// computes the 4 CRCs (Ceph crc32c seed 0) else all CRC fields 0.
    ///
    /// Pass `crc = true` for the plain form and `false` for the protected forms (§6.1); the
    /// deframer rejects anything else. Section lengths must fit in u32; callers enforce
    /// [`Limits`] on what they send.
    pub fn from_message(msg: &Message, seq: u64, ack_seq: u64, src: EntityName, crc: bool) -> Msg {
        let len32 = |b: &Bytes| u32::try_from(b.len()).unwrap_or(u32::MAX);
        let mut header = MsgHeader2 {
            seq,
            tid: msg.tid,
            ty: msg.ty,
            priority: msg.priority,
            version: msg.version,
            front_len: len32(&msg.front),
            middle_len: len32(&msg.middle),
            data_len: len32(&msg.data),
            data_off: msg.data_off,
            src,
            compat_version: msg.compat_version,
            flags: 0,
            ack_seq,
            front_crc: 0,
            middle_crc: 0,
            data_crc: 0,
            header_crc: 0,
        };
        if crc {
            header.flags = MSG_FLAG_CRC;
            [header.front_crc, header.middle_crc, header.data_crc] = msg.section_crcs();
            header.header_crc = ceph_crc32c(0, &header.to_bytes()[..HEADER2_CRC_OFF]);
        }
        Msg {
            header,
            front: msg.front.clone(),
            middle: msg.middle.clone(),
            data: msg.data.clone(),
        }
    }

    /// The MSG that starts a chunked message (§7.3): header2 with `CHUNKED`, `seq` = the
    /// transfer id `xid`, `data_len` = the whole data section, `data_crc` 0 (each CHUNK
    /// carries its own CRC), front and middle, and no data.
    pub fn chunked(msg: &Message, xid: u64, ack_seq: u64, src: EntityName, crc: bool) -> Msg {
        let mut front_only = msg.clone();
        front_only.data = Bytes::new();
        let mut m = Msg::from_message(&front_only, xid, ack_seq, src, crc);
        m.header.flags |= MSG_FLAG_CHUNKED;
        m.header.data_len = u32::try_from(msg.data.len()).unwrap_or(u32::MAX);
        if crc {
            m.header.header_crc = ceph_crc32c(0, &m.header.to_bytes()[..HEADER2_CRC_OFF]);
        }
        m
    }

    /// The user message, with `seq` and `src` filled from the header.
    pub fn into_message(self) -> Message {
        let h = self.header;
        Message {
            ty: h.ty,
            priority: h.priority,
            version: h.version,
            compat_version: h.compat_version,
            tid: h.tid,
            data_off: h.data_off,
            front: self.front,
            middle: self.middle,
            data: self.data,
            seq: h.seq,
            src: h.src,
            crcs: Default::default(),
        }
    }

    /// With [`MSG_FLAG_CRC`]: check all four CRCs. Without: require all four to be 0 (§6.1).
    pub fn verify_crcs(&self) -> Result<(), DecodeError> {
        let h = &self.header;
        if h.flags & MSG_FLAG_CRC == 0 {
            if h.front_crc | h.middle_crc | h.data_crc | h.header_crc != 0 {
                return Err(DecodeError::Invalid {
                    what: "header2 CRC fields (non-zero without CRC flag)",
                });
            }
            return Ok(());
        }
        if ceph_crc32c(0, &h.to_bytes()[..HEADER2_CRC_OFF]) != h.header_crc {
            return Err(DecodeError::Invalid {
                what: "header2.header_crc (mismatch)",
            });
        }
        if ceph_crc32c(0, &self.front) != h.front_crc {
            return Err(DecodeError::Invalid {
                what: "header2.front_crc (mismatch)",
            });
        }
        if ceph_crc32c(0, &self.middle) != h.middle_crc {
            return Err(DecodeError::Invalid {
                what: "header2.middle_crc (mismatch)",
            });
        }
        // §7.3: a CHUNKED message's data arrives in CHUNKs, each with its own CRC.
        if h.flags & MSG_FLAG_CHUNKED != 0 {
            if h.data_crc != 0 {
                return Err(DecodeError::Invalid {
                    what: "header2.data_crc (must be 0 in a CHUNKED MSG)",
                });
            }
        } else if ceph_crc32c(0, &self.data) != h.data_crc {
            return Err(DecodeError::Invalid {
                what: "header2.data_crc (mismatch)",
            });
        }
        Ok(())
    }
}

impl fmt::Debug for Msg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Msg")
            .field("header", &self.header)
            .field("front", &crate::wire::HexDump(&self.front))
            .field("middle", &self.middle.len())
            .field("data", &self.data.len())
            .finish()
    }
}
