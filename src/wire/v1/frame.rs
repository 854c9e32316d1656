//! Frames after the handshake: MSG (header, sections, footer), ACK, KEEPALIVE,
//! KEEPALIVE2, KEEPALIVE2_ACK and CLOSE (docs/PROTOCOL.md §10.3–10.5).
//!
//! [`Frame::parse`] is incremental: `Ok(None)` means "need more bytes", an error means
//! the stream is malformed. Section lengths are checked against [`Limits`] as soon as
//! the header is complete, before the caller buffers the sections.

use bytes::Bytes;

use super::{Limits, Tag};
use crate::wire::message::Message;
use crate::wire::types::{EntityName, Timespec};
use crate::wire::{ceph_crc32c, Codec, DecodeError, Reader, WriteLe};

/// Size of `ceph_msg_header`.
pub const HEADER_LEN: usize = 53;
/// Bytes of the header covered by its crc.
pub const HEADER_CRC_SPAN: usize = 49;
/// Size of `ceph_msg_footer` (with `sig`, used when MSG_AUTH is negotiated).
pub const FOOTER_LEN: usize = 21;
/// Size of `ceph_msg_footer_old` (without `sig`).
pub const FOOTER_OLD_LEN: usize = 13;

/// Footer flags (`CEPH_MSG_FOOTER_*`).
pub mod footer_flags {
    /// The message is complete; a receiver drops a message without it (aborted).
    pub const COMPLETE: u8 = 1;
    /// data_crc is not set and must not be checked.
    pub const NOCRC: u8 = 2;
    /// `sig` carries a signature.
    pub const SIGNED: u8 = 4;
}

/// `ceph_msg_header` (53 bytes). `crc` is kept as received so a decode re-encodes exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgHeader {
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
    /// Front section length.
    pub front_len: u32,
    /// Middle section length.
    pub middle_len: u32,
    /// Data section length.
    pub data_len: u32,
    /// Data alignment hint.
    pub data_off: u16,
    /// Sender.
    pub src: EntityName,
    /// Oldest compatible encoding version.
    pub compat_version: u16,
    /// Reserved, 0.
    pub reserved: u16,
    /// crc32c (seed 0) of the first 49 bytes.
    pub crc: u32,
}

impl MsgHeader {
    fn encode_body(&self, out: &mut Vec<u8>) {
        out.put_le64(self.seq);
        out.put_le64(self.tid);
        out.put_le16(self.ty);
        out.put_le16(self.priority);
        out.put_le16(self.version);
        out.put_le32(self.front_len);
        out.put_le32(self.middle_len);
        out.put_le32(self.data_len);
        out.put_le16(self.data_off);
        self.src.encode(out);
        out.put_le16(self.compat_version);
        out.put_le16(self.reserved);
    }

    /// The crc the header should carry.
    pub fn computed_crc(&self) -> u32 {
        let mut b = Vec::with_capacity(HEADER_LEN);
        self.encode_body(&mut b);
        ceph_crc32c(0, &b)
    }

    /// Set `crc` to [`computed_crc`](Self::computed_crc).
    pub fn seal(mut self) -> Self {
        self.crc = self.computed_crc();
        self
    }

    /// True if `crc` matches the other fields.
    pub fn crc_ok(&self) -> bool {
        self.crc == self.computed_crc()
    }

    fn check_limits(&self, limits: &Limits) -> Result<(), DecodeError> {
        let check = |what, len: u32, limit: u32| {
            if len > limit {
                Err(DecodeError::TooLarge {
                    what,
                    len: len.into(),
                    limit: limit.into(),
                })
            } else {
                Ok(())
            }
        };
        check("msg.front_len", self.front_len, limits.max_front_len)?;
        check("msg.middle_len", self.middle_len, limits.max_middle_len)?;
        check("msg.data_len", self.data_len, limits.max_data_len)
    }
}

impl Codec for MsgHeader {
    const NAME: &'static str = "ceph_msg_header";

    fn encode(&self, out: &mut Vec<u8>) {
        self.encode_body(out);
        out.put_le32(self.crc);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(MsgHeader {
            seq: r.le64("header.seq")?,
            tid: r.le64("header.tid")?,
            ty: r.le16("header.type")?,
            priority: r.le16("header.priority")?,
            version: r.le16("header.version")?,
            front_len: r.le32("header.front_len")?,
            middle_len: r.le32("header.middle_len")?,
            data_len: r.le32("header.data_len")?,
            data_off: r.le16("header.data_off")?,
            src: EntityName::read(r)?,
            compat_version: r.le16("header.compat_version")?,
            reserved: r.le16("header.reserved")?,
            crc: r.le32("header.crc")?,
        })
    }
}

/// `ceph_msg_footer` (21 bytes, `sig` = `Some`) or `ceph_msg_footer_old` (13 bytes, `sig` = `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Footer {
    /// crc32c of the front section (0 if empty).
    pub front_crc: u32,
    /// crc32c of the middle section.
    pub middle_crc: u32,
    /// crc32c of the data section (unchecked with NOCRC).
    pub data_crc: u32,
    /// The signature field; present exactly when MSG_AUTH is negotiated.
    pub sig: Option<u64>,
    /// [`footer_flags`].
    pub flags: u8,
}

impl Footer {
    /// Encoded size: 21 with `sig`, 13 without.
    pub fn len(&self) -> usize {
        if self.sig.is_some() {
            FOOTER_LEN
        } else {
            FOOTER_OLD_LEN
        }
    }

    /// Never empty; present for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Append the footer in its form.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_le32(self.front_crc);
        out.put_le32(self.middle_crc);
        out.put_le32(self.data_crc);
        if let Some(sig) = self.sig {
            out.put_le64(sig);
        }
        out.put_u8(self.flags);
    }

    /// Read a footer; `with_sig` selects the 21-byte form (MSG_AUTH negotiated).
    pub fn read(r: &mut Reader<'_>, with_sig: bool) -> Result<Self, DecodeError> {
        let front_crc = r.le32("footer.front_crc")?;
        let middle_crc = r.le32("footer.middle_crc")?;
        let data_crc = r.le32("footer.data_crc")?;
        let sig = if with_sig {
            Some(r.le64("footer.sig")?)
        } else {
            None
        };
        let flags = r.u8("footer.flags")?;
        Ok(Footer {
            front_crc,
            middle_crc,
            data_crc,
            sig,
            flags,
        })
    }
}

/// Which section failed its crc check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrcError {
    /// The header crc.
    Header {
        /// Carried in the header.
        got: u32,
        /// Computed over the header.
        want: u32,
    },
    /// A payload section crc.
    Section {
        /// "front", "middle" or "data".
        section: &'static str,
        /// Carried in the footer.
        got: u32,
        /// Computed over the section.
        want: u32,
    },
}

impl std::fmt::Display for CrcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CrcError::Header { got, want } => {
                write!(f, "bad header crc 0x{got:08x} (computed 0x{want:08x})")
            }
            CrcError::Section { section, got, want } => {
                write!(f, "bad {section} crc 0x{got:08x} (computed 0x{want:08x})")
            }
        }
    }
}

/// One MSG frame as it is on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMsg {
    /// The header (with its crc as sent).
    pub header: MsgHeader,
    /// Front section.
    pub front: Bytes,
    /// Middle section.
    pub middle: Bytes,
    /// Data section.
    pub data: Bytes,
    /// The footer (with its crcs as sent).
    pub footer: Footer,
}

impl RawMsg {
    /// Build the wire form of `m` with sequence `seq` from `src`: header crc, section crcs,
    /// footer COMPLETE, and the 21-byte footer iff `with_sig`.
    pub fn from_message(m: &Message, seq: u64, src: EntityName, with_sig: bool) -> RawMsg {
        let header = MsgHeader {
            seq,
            tid: m.tid,
            ty: m.ty,
            priority: m.priority,
            version: m.version,
            front_len: m.front.len() as u32,
            middle_len: m.middle.len() as u32,
            data_len: m.data.len() as u32,
            data_off: m.data_off,
            src,
            compat_version: if m.compat_version == 0 {
                m.version
            } else {
                m.compat_version
            },
            reserved: 0,
            crc: 0,
        }
        .seal();
        let [front_crc, middle_crc, data_crc] = m.section_crcs();
        let footer = Footer {
            front_crc,
            middle_crc,
            data_crc,
            sig: if with_sig { Some(0) } else { None },
            flags: footer_flags::COMPLETE,
        };
        RawMsg {
            header,
            front: m.front.clone(),
            middle: m.middle.clone(),
            data: m.data.clone(),
            footer,
        }
    }

    /// Check the header crc, then the section crcs (data only without NOCRC).
    pub fn verify(&self) -> Result<(), CrcError> {
        let want = self.header.computed_crc();
        if self.header.crc != want {
            return Err(CrcError::Header {
                got: self.header.crc,
                want,
            });
        }
        let sections: [(&'static str, &Bytes, u32); 3] = [
            ("front", &self.front, self.footer.front_crc),
            ("middle", &self.middle, self.footer.middle_crc),
            ("data", &self.data, self.footer.data_crc),
        ];
        for (section, bytes, got) in sections {
            if section == "data" && self.footer.flags & footer_flags::NOCRC != 0 {
                continue;
            }
            let want = ceph_crc32c(0, bytes);
            if got != want {
                return Err(CrcError::Section { section, got, want });
            }
        }
        Ok(())
    }

    /// The message as delivered to a user.
    pub fn to_message(&self) -> Message {
        let h = &self.header;
        Message {
            ty: h.ty,
            priority: h.priority,
            version: h.version,
            compat_version: h.compat_version,
            tid: h.tid,
            data_off: h.data_off,
            front: self.front.clone(),
            middle: self.middle.clone(),
            data: self.data.clone(),
            seq: h.seq,
            src: h.src,
            crcs: Default::default(),
        }
    }

    /// Encoded size including the tag byte.
    pub fn wire_len(&self) -> usize {
        1 + HEADER_LEN + self.front.len() + self.middle.len() + self.data.len() + self.footer.len()
    }
}

/// One frame after the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `07` + message.
    Msg(RawMsg),
    /// `08` + le64 seq.
    Ack(u64),
    /// `09`.
    Keepalive,
    /// `0e` + timespec.
    Keepalive2(Timespec),
    /// `0f` + the echoed timespec.
    Keepalive2Ack(Timespec),
    /// `06`.
    Close,
}

impl Frame {
    /// The tag this frame starts with.
    pub fn tag(&self) -> Tag {
        match self {
            Frame::Msg(_) => Tag::MSG,
            Frame::Ack(_) => Tag::ACK,
            Frame::Keepalive => Tag::KEEPALIVE,
            Frame::Keepalive2(_) => Tag::KEEPALIVE2,
            Frame::Keepalive2Ack(_) => Tag::KEEPALIVE2_ACK,
            Frame::Close => Tag::CLOSE,
        }
    }

    /// Append the frame (tag first).
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(self.tag().0);
        match self {
            Frame::Msg(m) => {
                m.header.encode(out);
                out.extend_from_slice(&m.front);
                out.extend_from_slice(&m.middle);
                out.extend_from_slice(&m.data);
                m.footer.encode(out);
            }
            Frame::Ack(seq) => out.put_le64(*seq),
            Frame::Keepalive | Frame::Close => {}
            Frame::Keepalive2(ts) | Frame::Keepalive2Ack(ts) => ts.encode(out),
        }
    }

    /// Parse one frame from the start of `buf`. `Ok(None)`: need more bytes.
    /// `Ok(Some((frame, used)))`: a frame of `used` bytes. `with_sig` selects the
    /// footer form (MSG_AUTH negotiated). Crcs are not checked here: see [`RawMsg::verify`].
    pub fn parse(
        buf: &[u8],
        with_sig: bool,
        limits: &Limits,
    ) -> Result<Option<(Frame, usize)>, DecodeError> {
        let mut r = Reader::new(buf);
        match Self::read(&mut r, with_sig, limits) {
            Ok(f) => Ok(Some((f, r.position()))),
            Err(e) if e.is_truncated() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Read one frame; running out of input is [`DecodeError::Truncated`].
    pub fn read(r: &mut Reader<'_>, with_sig: bool, limits: &Limits) -> Result<Frame, DecodeError> {
        let tag = Tag(r.u8("frame tag")?);
        Ok(match tag {
            Tag::MSG => {
                let header = MsgHeader::read(r)?;
                // Limits before the sections: a huge length fails now instead of waiting.
                header.check_limits(limits)?;
                let front = Bytes::copy_from_slice(r.take(header.front_len as usize, "msg.front")?);
                let middle =
                    Bytes::copy_from_slice(r.take(header.middle_len as usize, "msg.middle")?);
                let data = Bytes::copy_from_slice(r.take(header.data_len as usize, "msg.data")?);
                let footer = Footer::read(r, with_sig)?;
                Frame::Msg(RawMsg {
                    header,
                    front,
                    middle,
                    data,
                    footer,
                })
            }
            Tag::ACK => Frame::Ack(r.le64("ack.seq")?),
            Tag::KEEPALIVE => Frame::Keepalive,
            Tag::KEEPALIVE2 => Frame::Keepalive2(Timespec::read(r)?),
            Tag::KEEPALIVE2_ACK => Frame::Keepalive2Ack(Timespec::read(r)?),
            Tag::CLOSE => Frame::Close,
            other => return Err(DecodeError::UnknownTag(other.0)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::from_hex;
    use crate::wire::types::EntityType;

    /// The first MAuth of ceph-v1-facts §5.6 (front content is irrelevant to the header).
    fn mauth_header() -> MsgHeader {
        MsgHeader {
            seq: 1,
            tid: 0,
            ty: 17,
            priority: 127,
            version: 1,
            front_len: 60,
            middle_len: 0,
            data_len: 0,
            data_off: 0,
            src: EntityName::new(EntityType::CLIENT, u64::MAX),
            compat_version: 1,
            reserved: 0,
            crc: 0,
        }
        .seal()
    }

    #[test]
    fn header_matches_the_live_vector() {
        let h = mauth_header();
        assert_eq!(h.crc, 0xe2ab_4b69);
        let bytes = h.to_vec();
        assert_eq!(bytes.len(), HEADER_LEN);
        let want = from_hex(
            "0100000000000000 0000000000000000 1100 7f00 0100 3c000000 00000000 00000000 0000 08 ffffffffffffffff 0100 0000 694babe2",
        )
        .unwrap();
        assert_eq!(bytes, want);
        let back = MsgHeader::decode_exact(&bytes).unwrap();
        assert!(back.crc_ok());
        let mut bad = bytes.clone();
        bad[0] ^= 1;
        assert!(!MsgHeader::decode_exact(&bad).unwrap().crc_ok());
    }

    #[test]
    fn footers_in_both_forms() {
        let f = Footer {
            front_crc: 0x35a7_635b,
            middle_crc: 0,
            data_crc: 0,
            sig: Some(0),
            flags: 1,
        };
        let mut out = Vec::new();
        f.encode(&mut out);
        assert_eq!(
            out,
            from_hex("5b63a735 00000000 00000000 0000000000000000 01").unwrap()
        );
        assert_eq!(Footer::read(&mut Reader::new(&out), true).unwrap(), f);
        let old = Footer { sig: None, ..f };
        let mut out = Vec::new();
        old.encode(&mut out);
        assert_eq!(out.len(), FOOTER_OLD_LEN);
        assert_eq!(Footer::read(&mut Reader::new(&out), false).unwrap(), old);
    }

    #[test]
    fn message_round_trip_with_crc_checks() {
        let m = Message::new(50, vec![1, 2, 3])
            .with_data(vec![9; 10])
            .with_tid(5);
        for with_sig in [true, false] {
            let raw = RawMsg::from_message(&m, 3, EntityName::new(EntityType::CLIENT, 1), with_sig);
            let mut bytes = Vec::new();
            Frame::Msg(raw.clone()).encode(&mut bytes);
            assert_eq!(bytes.len(), raw.wire_len());
            // Every prefix is "need more", never an error.
            for cut in 0..bytes.len() {
                assert!(Frame::parse(&bytes[..cut], with_sig, &Limits::default())
                    .unwrap()
                    .is_none());
            }
            let (f, used) = Frame::parse(&bytes, with_sig, &Limits::default())
                .unwrap()
                .unwrap();
            assert_eq!(used, bytes.len());
            let Frame::Msg(back) = f else {
                panic!("not a msg")
            };
            back.verify().unwrap();
            assert_eq!(back.to_message().data, m.data);
            assert_eq!(back.header.seq, 3);
            let mut flipped = back.clone();
            flipped.data = Bytes::from(vec![8; 10]);
            assert!(matches!(
                flipped.verify(),
                Err(CrcError::Section {
                    section: "data",
                    ..
                })
            ));
            flipped.footer.flags |= footer_flags::NOCRC;
            assert!(flipped.verify().is_ok());
        }
    }

    #[test]
    fn oversized_sections_fail_before_the_bytes_arrive() {
        let m = Message::new(1, vec![0; 4]);
        let raw = RawMsg::from_message(&m, 1, EntityName::new(EntityType::CLIENT, 1), true);
        let mut bytes = Vec::new();
        Frame::Msg(raw).encode(&mut bytes);
        let limits = Limits {
            max_front_len: 3,
            ..Limits::default()
        };
        let e = Frame::parse(&bytes[..1 + HEADER_LEN], true, &limits).unwrap_err();
        assert!(matches!(
            e,
            DecodeError::TooLarge {
                what: "msg.front_len",
                ..
            }
        ));
    }

    #[test]
    fn small_frames_round_trip() {
        let ts = Timespec { sec: 5, nsec: 6 };
        for f in [
            Frame::Ack(9),
            Frame::Keepalive,
            Frame::Keepalive2(ts),
            Frame::Keepalive2Ack(ts),
            Frame::Close,
        ] {
            let mut out = Vec::new();
            f.encode(&mut out);
            let (back, used) = Frame::parse(&out, true, &Limits::default())
                .unwrap()
                .unwrap();
            assert_eq!((back, used), (f, out.len()));
        }
        assert_eq!(
            Frame::parse(&[0x42], true, &Limits::default()),
            Err(DecodeError::UnknownTag(0x42))
        );
    }
}
