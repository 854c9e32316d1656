//! msgr2 frames in their plain form, `u8 tag | payload` (docs/PROTOCOL.md §3.1, §4–§6).
//!
//! One struct per frame, an enum [`Frame`] over all of them, and exact decoding: a
//! frame's payload must be consumed completely, every length is checked against a
//! named limit before anything is allocated, and values that have two spellings are
//! refused so that re-encoding a decoded frame always gives the same bytes.

use std::fmt;

use bytes::Bytes;

use super::{
    FLAG_ENCRYPTED, FLAG_SIGNED, HEADER2_LEN, IDENT_INITIATOR, IDENT_LOSSY, MSG_FLAG_CHUNKED,
    MSG_FLAG_CRC,
};
use crate::wire::message::Message;
use crate::wire::types::{AddrVec, EntityName, EntityType, Timespec, MAX_ADDRS};
use crate::wire::{ceph_crc32c, Codec, DecodeError, Reader, WriteLe};

/// §2.3 `MAX_AUTH_METHODS`: entries in AUTH_METHODS.
pub const MAX_AUTH_METHODS: u32 = 16;
/// §2.3 `MAX_AUTH_PAYLOAD`: bytes in one AUTH blob.
pub const MAX_AUTH_PAYLOAD: u32 = 65_536;
/// §2.3 `MAX_CLOSE_REASON`: bytes in a CLOSE message.
pub const MAX_CLOSE_REASON: u32 = 1_024;
/// §7 `MAX_CHUNK_LEN`: bytes in one CHUNK frame (also bounded by `max_data_len`).
pub const MAX_CHUNK_LEN: u32 = 16 * 1024 * 1024;
/// §7 `MAX_CHUNK_ABORT_MESSAGE`: bytes in a CHUNK_ABORT message.
pub const MAX_CHUNK_ABORT_MESSAGE: u32 = 1_024;
/// Bytes of a CHUNK frame before its data: tag, xid, offset, seq, crc, le32 length (§7.2).
pub const CHUNK_HEAD_LEN: usize = 1 + 8 + 8 + 8 + 4 + 4;

/// A frame tag. A newtype so that unknown values can be carried and printed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(pub u8);

macro_rules! tags {
    ($($name:ident = $v:literal,)*) => {
        impl Tag {
            $(
                #[doc = concat!("`", stringify!($name), "` (docs/PROTOCOL.md §4–§6).")]
                pub const $name: Tag = Tag($v);
            )*

            /// The name used in docs/PROTOCOL.md, or `None` for an undefined tag.
            pub fn name(self) -> Option<&'static str> {
                match self {
                    $(Tag::$name => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }
    };
}

tags! {
    AUTH_METHODS = 0x01,
    AUTH_SET_METHOD = 0x02,
    AUTH_BAD_METHOD = 0x03,
    AUTH = 0x04,
    AUTH_DONE = 0x05,
    IDENT = 0x10,
    IDENT_MISSING_FEATURES = 0x11,
    IDENT_BAD_PROTOCOL = 0x12,
    RECONNECT = 0x13,
    RECONNECT_OK = 0x14,
    RECONNECT_RETRY_SESSION = 0x15,
    RECONNECT_RETRY_GLOBAL = 0x16,
    RECONNECT_WAIT = 0x17,
    RECONNECT_RESET = 0x18,
    START = 0x19,
    MSG = 0x20,
    ACK = 0x21,
    KEEPALIVE2 = 0x22,
    KEEPALIVE2_ACK = 0x23,
    CLOSE = 0x24,
    CHUNK = 0x30,
    CHUNK_ABORT = 0x31,
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "Tag(0x{:02x})", self.0),
        }
    }
}

/// The reason code of a CLOSE frame (§6.2). A newtype so unknown codes round-trip.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CloseReason(pub u32);

macro_rules! reasons {
    ($($name:ident = $v:literal: $doc:literal,)*) => {
        impl CloseReason {
            $(
                #[doc = $doc]
                pub const $name: CloseReason = CloseReason($v);
            )*

            /// The name used in docs/PROTOCOL.md §6.2, or `None` for an undefined code.
            pub fn name(self) -> Option<&'static str> {
                match self {
                    $(CloseReason::$name => Some(stringify!($name)),)*
                    _ => None,
                }
            }
        }
    };
}

reasons! {
    NORMAL = 0: "Orderly close (mark_down, shutdown).",
    PROTOCOL = 1: "The peer violated docs/PROTOCOL.md.",
    AUTH_FAILED = 2: "Wrong key or unknown entity.",
    AUTH_METHOD = 3: "No common auth method.",
    MODE_REQUIRED = 4: "The peer's signed/secure requirement was not met.",
    FEATURES = 5: "Feature mismatch.",
    POLICY = 6: "Incompatible policies.",
    LIMIT = 7: "A resource limit refused the connection.",
    REKEY = 8: "The frame counter reached its limit.",
    IDLE = 9: "Idle timeout.",
}

impl fmt::Debug for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "CloseReason({})", self.0),
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What a reader accepts for peer-controlled sizes (§2.3). `Default` gives the documented defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest MSG front section (`max_front_len`, default 16 MiB).
    pub max_front: u32,
    /// Largest MSG middle section (`max_middle_len`, default 16 MiB).
    pub max_middle: u32,
    /// Largest MSG data section (`max_data_len`, default 512 MiB).
    pub max_data: u32,
    /// Largest protected-frame `length` (`max_frame_len`, default 1 + 73 + the three above).
    pub max_frame: u32,
}

impl Limits {
    /// The largest plain MSG frame these limits admit (tag + header2 + sections).
    pub fn max_msg_frame(&self) -> u64 {
        1 + HEADER2_LEN as u64
            + u64::from(self.max_front)
            + u64::from(self.max_middle)
            + u64::from(self.max_data)
    }
}

impl Default for Limits {
    fn default() -> Self {
        const MIB: u32 = 1 << 20;
        let (max_front, max_middle, max_data) = (16 * MIB, 16 * MIB, 512 * MIB);
        Limits {
            max_front,
            max_middle,
            max_data,
            max_frame: 1 + HEADER2_LEN as u32 + max_front + max_middle + max_data,
        }
    }
}

/// AUTH_METHODS (0x01, S): the methods the server allows, in its order of preference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthMethods {
    /// 1..=16 method codes ([`super::AUTH_NONE`], [`super::AUTH_SECRET`], …).
    pub methods: Vec<u32>,
}

/// AUTH_SET_METHOD (0x02, C): the method the client uses from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthSetMethod {
    /// The method code.
    pub method: u32,
}

/// AUTH_BAD_METHOD (0x03, S): the server refuses this method; AUTH_METHODS follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthBadMethod {
    /// The refused method code.
    pub method: u32,
}

/// AUTH (0x04, C or S): one method-specific step.
#[derive(Clone, PartialEq, Eq)]
pub struct Auth {
    /// The method's bytes, at most `MAX_AUTH_PAYLOAD`.
    pub payload: Bytes,
}

/// AUTH_DONE (0x05, C then S): the protection flags and their signature (§4.5).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AuthDone {
    /// 0, [`FLAG_ENCRYPTED`] or [`FLAG_SIGNED`]; anything else is refused by the decoder.
    pub flags: u64,
    /// HMAC-SHA256 over `le64 flags` with the `client done` / `server done` key, or zeros for NONE.
    pub signature: [u8; 32],
}

/// IDENT (0x10, C then S): who the sender is (§5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident {
    /// The sender's addresses.
    pub addrs: AddrVec,
    /// The sender's entity type.
    pub entity_type: EntityType,
    /// The sender's protocol version.
    pub protocol_version: u32,
    /// Ceph feature bits the sender supports.
    pub features_supported: u64,
    /// Ceph feature bits the sender requires.
    pub features_required: u64,
    /// [`IDENT_LOSSY`] | [`IDENT_INITIATOR`]; other bits are refused by the decoder.
    pub flags: u64,
    /// The sender's session cookie.
    pub cookie: u64,
}

/// IDENT_MISSING_FEATURES (0x11, S).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentMissingFeatures {
    /// The features the server requires and the client lacks.
    pub missing: u64,
}

/// IDENT_BAD_PROTOCOL (0x12, S).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentBadProtocol {
    /// The server's protocol version.
    pub protocol_version: u32,
}

/// RECONNECT (0x13, C): resume a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reconnect {
    /// The server's session cookie.
    pub cookie: u64,
    /// The client's global sequence.
    pub global_seq: u64,
    /// The client's connect sequence.
    pub connect_seq: u64,
    /// The client's `in_seq`.
    pub msg_seq: u64,
}

/// RECONNECT_OK (0x14, S).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectOk {
    /// The server's `in_seq`.
    pub msg_seq: u64,
    /// The server's global sequence.
    pub global_seq: u64,
}

/// RECONNECT_RETRY_SESSION (0x15, S).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectRetrySession {
    /// The connect sequence to retry with.
    pub connect_seq: u64,
}

/// RECONNECT_RETRY_GLOBAL (0x16, S).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconnectRetryGlobal {
    /// The global sequence to exceed.
    pub global_seq: u64,
}

/// START (0x19, C then S): begin a new session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    /// Reserved, 0.
    pub flags: u64,
    /// The sender's global sequence.
    pub global_seq: u64,
}

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
        Message::received(
            h.ty,
            h.priority,
            h.version,
            h.compat_version,
            h.tid,
            h.data_off,
            [self.front, self.middle, self.data],
            h.seq,
            h.src,
        )
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

/// ACK (0x21): every message up to `seq` arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The acknowledged sequence.
    pub seq: u64,
}

/// KEEPALIVE2 (0x22).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive2 {
    /// The sender's monotonic clock; only echoed.
    pub stamp: Timespec,
}

/// KEEPALIVE2_ACK (0x23).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive2Ack {
    /// Copied from the KEEPALIVE2.
    pub stamp: Timespec,
}

/// CLOSE (0x24): why the sender is closing (§6.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    /// The reason code.
    pub reason: CloseReason,
    /// A human-readable explanation, at most `MAX_CLOSE_REASON` bytes of UTF-8.
    pub message: String,
}

/// CHUNK (0x30, §7.2): `data.len()` bytes of a chunked message's data section at `offset`.
#[derive(Clone, PartialEq, Eq)]
pub struct Chunk {
    /// The transfer id: header2.seq of the CHUNKED MSG this chunk belongs to.
    pub xid: u64,
    /// Where `data` goes in the data section.
    pub offset: u64,
    /// 0, or the message's sequence number if this chunk completes the message (§7.4).
    pub seq: u64,
    /// Plain form: Ceph crc32c (seed 0) of `data`; protected forms: 0 (§7.2).
    pub crc: u32,
    /// The bytes (1..=`MAX_CHUNK_LEN`); a zero-copy slice of the received frame.
    pub data: Bytes,
}

impl fmt::Debug for Chunk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chunk")
            .field("xid", &self.xid)
            .field("offset", &self.offset)
            .field("seq", &self.seq)
            .field("crc", &self.crc)
            .field("len", &self.data.len())
            .finish()
    }
}

/// CHUNK_ABORT (0x31, §7.5): the sender gives up on a chunked message in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkAbort {
    /// The transfer id of the aborted message.
    pub xid: u64,
    /// An application error code (opaque to the messenger).
    pub code: u32,
    /// Why, at most `MAX_CHUNK_ABORT_MESSAGE` bytes of UTF-8.
    pub message: String,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Auth payloads hold nonces and proofs, never secrets, but keep logs short.
        f.debug_struct("Auth")
            .field("payload", &crate::wire::HexDump(&self.payload))
            .finish()
    }
}

impl fmt::Debug for AuthDone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthDone")
            .field("flags", &self.flags)
            .field("signature", &crate::wire::HexDump(&self.signature))
            .finish()
    }
}

/// One msgr2 frame, in any form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// AUTH_METHODS (0x01).
    AuthMethods(AuthMethods),
    /// AUTH_SET_METHOD (0x02).
    AuthSetMethod(AuthSetMethod),
    /// AUTH_BAD_METHOD (0x03).
    AuthBadMethod(AuthBadMethod),
    /// AUTH (0x04).
    Auth(Auth),
    /// AUTH_DONE (0x05).
    AuthDone(AuthDone),
    /// IDENT (0x10).
    Ident(Ident),
    /// IDENT_MISSING_FEATURES (0x11).
    IdentMissingFeatures(IdentMissingFeatures),
    /// IDENT_BAD_PROTOCOL (0x12).
    IdentBadProtocol(IdentBadProtocol),
    /// RECONNECT (0x13).
    Reconnect(Reconnect),
    /// RECONNECT_OK (0x14).
    ReconnectOk(ReconnectOk),
    /// RECONNECT_RETRY_SESSION (0x15).
    ReconnectRetrySession(ReconnectRetrySession),
    /// RECONNECT_RETRY_GLOBAL (0x16).
    ReconnectRetryGlobal(ReconnectRetryGlobal),
    /// RECONNECT_WAIT (0x17, S): empty.
    ReconnectWait,
    /// RECONNECT_RESET (0x18, S): empty.
    ReconnectReset,
    /// START (0x19).
    Start(Start),
    /// MSG (0x20).
    Msg(Msg),
    /// ACK (0x21).
    Ack(Ack),
    /// KEEPALIVE2 (0x22).
    Keepalive2(Keepalive2),
    /// KEEPALIVE2_ACK (0x23).
    Keepalive2Ack(Keepalive2Ack),
    /// CLOSE (0x24).
    Close(Close),
    /// CHUNK (0x30, §7).
    Chunk(Chunk),
    /// CHUNK_ABORT (0x31, §7).
    ChunkAbort(ChunkAbort),
}

/// Largest `entity_addr` the tagged-form reader of `types.rs` will wait for: marker, version,
/// compat, le32 length, then at most 12 + 128 bytes (type, nonce, sockaddr blob of ≤ 128).
/// Canonical addresses are shorter (≤ 47 bytes); non-canonical ones are refused once read.
const MAX_ADDR_LEN: usize = 3 + 4 + 12 + 128;

/// The largest plain frame of each non-MSG kind: a plain deframer never buffers more than
/// this while waiting for such a frame (§3.1), so garbage cannot make it buffer forever.
pub(crate) fn max_plain_len(tag: Tag) -> Option<usize> {
    Some(match tag {
        Tag::AUTH_METHODS => 1 + 4 + 4 * MAX_AUTH_METHODS as usize,
        Tag::AUTH_SET_METHOD | Tag::AUTH_BAD_METHOD | Tag::IDENT_BAD_PROTOCOL => 1 + 4,
        Tag::AUTH => 1 + 4 + MAX_AUTH_PAYLOAD as usize,
        Tag::AUTH_DONE => 1 + 8 + 32,
        Tag::IDENT => 1 + (1 + 4 + MAX_ADDRS as usize * MAX_ADDR_LEN) + 1 + 4 + 8 * 4,
        Tag::IDENT_MISSING_FEATURES
        | Tag::RECONNECT_RETRY_SESSION
        | Tag::RECONNECT_RETRY_GLOBAL
        | Tag::ACK
        | Tag::KEEPALIVE2
        | Tag::KEEPALIVE2_ACK => 1 + 8,
        Tag::RECONNECT => 1 + 32,
        Tag::RECONNECT_OK | Tag::START => 1 + 16,
        Tag::RECONNECT_WAIT | Tag::RECONNECT_RESET => 1,
        Tag::CLOSE => 1 + 4 + 4 + MAX_CLOSE_REASON as usize,
        Tag::CHUNK => CHUNK_HEAD_LEN + MAX_CHUNK_LEN as usize,
        Tag::CHUNK_ABORT => 1 + 8 + 4 + 4 + MAX_CHUNK_ABORT_MESSAGE as usize,
        _ => return None,
    })
}

impl Frame {
    /// The frame's tag.
    pub fn tag(&self) -> Tag {
        match self {
            Frame::AuthMethods(_) => Tag::AUTH_METHODS,
            Frame::AuthSetMethod(_) => Tag::AUTH_SET_METHOD,
            Frame::AuthBadMethod(_) => Tag::AUTH_BAD_METHOD,
            Frame::Auth(_) => Tag::AUTH,
            Frame::AuthDone(_) => Tag::AUTH_DONE,
            Frame::Ident(_) => Tag::IDENT,
            Frame::IdentMissingFeatures(_) => Tag::IDENT_MISSING_FEATURES,
            Frame::IdentBadProtocol(_) => Tag::IDENT_BAD_PROTOCOL,
            Frame::Reconnect(_) => Tag::RECONNECT,
            Frame::ReconnectOk(_) => Tag::RECONNECT_OK,
            Frame::ReconnectRetrySession(_) => Tag::RECONNECT_RETRY_SESSION,
            Frame::ReconnectRetryGlobal(_) => Tag::RECONNECT_RETRY_GLOBAL,
            Frame::ReconnectWait => Tag::RECONNECT_WAIT,
            Frame::ReconnectReset => Tag::RECONNECT_RESET,
            Frame::Start(_) => Tag::START,
            Frame::Msg(_) => Tag::MSG,
            Frame::Ack(_) => Tag::ACK,
            Frame::Keepalive2(_) => Tag::KEEPALIVE2,
            Frame::Keepalive2Ack(_) => Tag::KEEPALIVE2_ACK,
            Frame::Close(_) => Tag::CLOSE,
            Frame::Chunk(_) => Tag::CHUNK,
            Frame::ChunkAbort(_) => Tag::CHUNK_ABORT,
        }
    }

    /// Bytes of the plain form (tag + payload).
    pub fn encoded_len(&self) -> usize {
        match self {
            Frame::Msg(m) => 1 + HEADER2_LEN + m.front.len() + m.middle.len() + m.data.len(),
            Frame::AuthMethods(a) => 1 + 4 + 4 * a.methods.len(),
            Frame::Auth(a) => 1 + 4 + a.payload.len(),
            Frame::Close(c) => 1 + 8 + c.message.len(),
            Frame::Chunk(c) => CHUNK_HEAD_LEN + c.data.len(),
            Frame::ChunkAbort(a) => 1 + 8 + 4 + 4 + a.message.len(),
            Frame::AuthSetMethod(_) | Frame::AuthBadMethod(_) | Frame::IdentBadProtocol(_) => 1 + 4,
            Frame::AuthDone(_) => 1 + 8 + 32,
            Frame::Ident(i) => 1 + i.addrs.to_vec().len() + 1 + 4 + 8 * 4,
            Frame::IdentMissingFeatures(_)
            | Frame::ReconnectRetrySession(_)
            | Frame::ReconnectRetryGlobal(_)
            | Frame::Ack(_)
            | Frame::Keepalive2(_)
            | Frame::Keepalive2Ack(_) => 1 + 8,
            Frame::Reconnect(_) => 1 + 32,
            Frame::ReconnectOk(_) | Frame::Start(_) => 1 + 16,
            Frame::ReconnectWait | Frame::ReconnectReset => 1,
        }
    }

    /// Append the plain form: tag + payload.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(self.tag().0);
        match self {
            Frame::AuthMethods(a) => {
                out.put_le32(a.methods.len() as u32);
                for m in &a.methods {
                    out.put_le32(*m);
                }
            }
            Frame::AuthSetMethod(a) => out.put_le32(a.method),
            Frame::AuthBadMethod(a) => out.put_le32(a.method),
            Frame::Auth(a) => out.put_len_prefixed(&a.payload),
            Frame::AuthDone(a) => {
                out.put_le64(a.flags);
                out.extend_from_slice(&a.signature);
            }
            Frame::Ident(i) => {
                i.addrs.encode(out);
                out.put_u8(i.entity_type.0);
                out.put_le32(i.protocol_version);
                out.put_le64(i.features_supported);
                out.put_le64(i.features_required);
                out.put_le64(i.flags);
                out.put_le64(i.cookie);
            }
            Frame::IdentMissingFeatures(i) => out.put_le64(i.missing),
            Frame::IdentBadProtocol(i) => out.put_le32(i.protocol_version),
            Frame::Reconnect(r) => {
                out.put_le64(r.cookie);
                out.put_le64(r.global_seq);
                out.put_le64(r.connect_seq);
                out.put_le64(r.msg_seq);
            }
            Frame::ReconnectOk(r) => {
                out.put_le64(r.msg_seq);
                out.put_le64(r.global_seq);
            }
            Frame::ReconnectRetrySession(r) => out.put_le64(r.connect_seq),
            Frame::ReconnectRetryGlobal(r) => out.put_le64(r.global_seq),
            Frame::ReconnectWait | Frame::ReconnectReset => {}
            Frame::Start(s) => {
                out.put_le64(s.flags);
                out.put_le64(s.global_seq);
            }
            Frame::Msg(m) => {
                m.header.encode(out);
                out.extend_from_slice(&m.front);
                out.extend_from_slice(&m.middle);
                out.extend_from_slice(&m.data);
            }
            Frame::Ack(a) => out.put_le64(a.seq),
            Frame::Keepalive2(k) => k.stamp.encode(out),
            Frame::Keepalive2Ack(k) => k.stamp.encode(out),
            Frame::Close(c) => {
                out.put_le32(c.reason.0);
                out.put_len_prefixed(c.message.as_bytes());
            }
            Frame::Chunk(c) => {
                out.put_le64(c.xid);
                out.put_le64(c.offset);
                out.put_le64(c.seq);
                out.put_le32(c.crc);
                out.put_len_prefixed(&c.data);
            }
            Frame::ChunkAbort(a) => {
                out.put_le64(a.xid);
                out.put_le32(a.code);
                out.put_len_prefixed(a.message.as_bytes());
            }
        }
    }

    /// Decode a frame that occupies `bytes` exactly (tag + payload). MSG sections are
    /// zero-copy slices of `bytes`. CRCs are not checked here (see [`Msg::verify_crcs`]).
    pub fn decode(bytes: Bytes, limits: &Limits) -> Result<Frame, DecodeError> {
        let tag = Tag(*bytes
            .first()
            .ok_or(DecodeError::Truncated { what: "frame tag" })?);
        if tag == Tag::MSG {
            let mut r = Reader::new(&bytes[1..]);
            let header = MsgHeader2::read(&mut r, limits)?;
            let need = 1 + HEADER2_LEN as u64 + header.sections_len();
            let have = bytes.len() as u64;
            if have < need {
                return Err(DecodeError::Truncated {
                    what: "MSG sections",
                });
            }
            if have > need {
                return Err(DecodeError::TrailingBytes {
                    what: "MSG",
                    count: (have - need) as usize,
                });
            }
            return Ok(Frame::Msg(split_msg(header, bytes)));
        }
        if tag == Tag::CHUNK {
            let (chunk, len) = Chunk::read_head(&bytes, limits)?;
            let need = CHUNK_HEAD_LEN + len;
            if bytes.len() < need {
                return Err(DecodeError::Truncated { what: "CHUNK.data" });
            }
            if bytes.len() > need {
                return Err(DecodeError::TrailingBytes {
                    what: "CHUNK",
                    count: bytes.len() - need,
                });
            }
            return Ok(Frame::Chunk(Chunk {
                data: bytes.slice(CHUNK_HEAD_LEN..need),
                ..chunk
            }));
        }
        let mut r = Reader::new(&bytes);
        let frame = Frame::read_non_msg(&mut r)?;
        r.expect_end(tag.name().unwrap_or("frame"))?;
        Ok(frame)
    }

    /// Read a frame other than MSG from the cursor (tag first), leaving the cursor after it.
    pub(crate) fn read_non_msg(r: &mut Reader<'_>) -> Result<Frame, DecodeError> {
        let tag = Tag(r.u8("frame tag")?);
        Ok(match tag {
            Tag::AUTH_METHODS => {
                let n = r.count(MAX_AUTH_METHODS, "AUTH_METHODS.count")?;
                if n == 0 {
                    return Err(DecodeError::Invalid {
                        what: "AUTH_METHODS.count (zero)",
                    });
                }
                let mut methods = Vec::with_capacity(n);
                for _ in 0..n {
                    methods.push(r.le32("AUTH_METHODS.method")?);
                }
                Frame::AuthMethods(AuthMethods { methods })
            }
            Tag::AUTH_SET_METHOD => Frame::AuthSetMethod(AuthSetMethod {
                method: r.le32("AUTH_SET_METHOD.method")?,
            }),
            Tag::AUTH_BAD_METHOD => Frame::AuthBadMethod(AuthBadMethod {
                method: r.le32("AUTH_BAD_METHOD.method")?,
            }),
            Tag::AUTH => {
                let payload = r.len_prefixed(MAX_AUTH_PAYLOAD, "AUTH.payload")?;
                Frame::Auth(Auth {
                    payload: Bytes::copy_from_slice(payload),
                })
            }
            Tag::AUTH_DONE => {
                let flags = r.le64("AUTH_DONE.flags")?;
                let signature = r.array("AUTH_DONE.signature")?;
                // §4.1: 0, ENCRYPTED or SIGNED; 3 would be a second spelling of ENCRYPTED.
                if flags != 0 && flags != FLAG_ENCRYPTED && flags != FLAG_SIGNED {
                    return Err(DecodeError::Invalid {
                        what: "AUTH_DONE.flags (must be 0, 1 or 2)",
                    });
                }
                Frame::AuthDone(AuthDone { flags, signature })
            }
            Tag::IDENT => {
                let start = r.rest();
                let addrs = AddrVec::read(r)?;
                // Only the canonical encoding is accepted, so a frame re-encodes to itself.
                let used = &start[..start.len() - r.remaining()];
                if addrs.to_vec() != used {
                    return Err(DecodeError::Invalid {
                        what: "IDENT.addrs (non-canonical entity_addrvec)",
                    });
                }
                let ident = Ident {
                    addrs,
                    entity_type: EntityType(r.u8("IDENT.entity_type")?),
                    protocol_version: r.le32("IDENT.protocol_version")?,
                    features_supported: r.le64("IDENT.features_supported")?,
                    features_required: r.le64("IDENT.features_required")?,
                    flags: r.le64("IDENT.flags")?,
                    cookie: r.le64("IDENT.cookie")?,
                };
                if ident.flags & !(IDENT_LOSSY | IDENT_INITIATOR) != 0 {
                    return Err(DecodeError::Invalid {
                        what: "IDENT.flags (undefined bit)",
                    });
                }
                Frame::Ident(ident)
            }
            Tag::IDENT_MISSING_FEATURES => Frame::IdentMissingFeatures(IdentMissingFeatures {
                missing: r.le64("IDENT_MISSING_FEATURES.missing")?,
            }),
            Tag::IDENT_BAD_PROTOCOL => Frame::IdentBadProtocol(IdentBadProtocol {
                protocol_version: r.le32("IDENT_BAD_PROTOCOL.protocol_version")?,
            }),
            Tag::RECONNECT => Frame::Reconnect(Reconnect {
                cookie: r.le64("RECONNECT.cookie")?,
                global_seq: r.le64("RECONNECT.global_seq")?,
                connect_seq: r.le64("RECONNECT.connect_seq")?,
                msg_seq: r.le64("RECONNECT.msg_seq")?,
            }),
            Tag::RECONNECT_OK => Frame::ReconnectOk(ReconnectOk {
                msg_seq: r.le64("RECONNECT_OK.msg_seq")?,
                global_seq: r.le64("RECONNECT_OK.global_seq")?,
            }),
            Tag::RECONNECT_RETRY_SESSION => Frame::ReconnectRetrySession(ReconnectRetrySession {
                connect_seq: r.le64("RECONNECT_RETRY_SESSION.connect_seq")?,
            }),
            Tag::RECONNECT_RETRY_GLOBAL => Frame::ReconnectRetryGlobal(ReconnectRetryGlobal {
                global_seq: r.le64("RECONNECT_RETRY_GLOBAL.global_seq")?,
            }),
            Tag::RECONNECT_WAIT => Frame::ReconnectWait,
            Tag::RECONNECT_RESET => Frame::ReconnectReset,
            Tag::START => Frame::Start(Start {
                flags: r.le64("START.flags")?,
                global_seq: r.le64("START.global_seq")?,
            }),
            Tag::ACK => Frame::Ack(Ack {
                seq: r.le64("ACK.seq")?,
            }),
            Tag::KEEPALIVE2 => Frame::Keepalive2(Keepalive2 {
                stamp: Timespec::read(r)?,
            }),
            Tag::KEEPALIVE2_ACK => Frame::Keepalive2Ack(Keepalive2Ack {
                stamp: Timespec::read(r)?,
            }),
            Tag::CLOSE => {
                let reason = CloseReason(r.le32("CLOSE.reason")?);
                let msg = r.len_prefixed(MAX_CLOSE_REASON, "CLOSE.message")?;
                let message = std::str::from_utf8(msg)
                    .map_err(|_| DecodeError::Invalid {
                        what: "CLOSE.message (not UTF-8)",
                    })?
                    .to_owned();
                Frame::Close(Close { reason, message })
            }
            Tag::CHUNK => {
                let xid = r.le64("CHUNK.xid")?;
                let offset = r.le64("CHUNK.offset")?;
                let seq = r.le64("CHUNK.seq")?;
                let crc = r.le32("CHUNK.crc")?;
                let data = r.len_prefixed(MAX_CHUNK_LEN, "CHUNK.data")?;
                if data.is_empty() {
                    return Err(DecodeError::Invalid {
                        what: "CHUNK.data (empty)",
                    });
                }
                Frame::Chunk(Chunk {
                    xid,
                    offset,
                    seq,
                    crc,
                    data: Bytes::copy_from_slice(data),
                })
            }
            Tag::CHUNK_ABORT => {
                let xid = r.le64("CHUNK_ABORT.xid")?;
                let code = r.le32("CHUNK_ABORT.code")?;
                let msg = r.len_prefixed(MAX_CHUNK_ABORT_MESSAGE, "CHUNK_ABORT.message")?;
                let message = std::str::from_utf8(msg)
                    .map_err(|_| DecodeError::Invalid {
                        what: "CHUNK_ABORT.message (not UTF-8)",
                    })?
                    .to_owned();
                Frame::ChunkAbort(ChunkAbort { xid, code, message })
            }
            other => return Err(DecodeError::UnknownTag(other.0)),
        })
    }
}

impl Chunk {
    /// Write the 33 bytes before the data: tag, xid, offset, seq, crc, le32 length.
    pub fn encode_head(&self, out: &mut Vec<u8>) {
        out.put_u8(Tag::CHUNK.0);
        out.put_le64(self.xid);
        out.put_le64(self.offset);
        out.put_le64(self.seq);
        out.put_le32(self.crc);
        out.put_le32(u32::try_from(self.data.len()).unwrap_or(u32::MAX));
    }

    /// Read the head of a CHUNK frame (tag included) from `buf`, which holds at least
    /// [`CHUNK_HEAD_LEN`] bytes; returns the chunk without data and the data length,
    /// checked against `MAX_CHUNK_LEN` and `max_data` before anything is awaited.
    pub(crate) fn read_head(buf: &[u8], limits: &Limits) -> Result<(Chunk, usize), DecodeError> {
        let mut r = Reader::new(buf);
        if Tag(r.u8("frame tag")?) != Tag::CHUNK {
            return Err(DecodeError::Invalid { what: "CHUNK tag" });
        }
        let xid = r.le64("CHUNK.xid")?;
        let offset = r.le64("CHUNK.offset")?;
        let seq = r.le64("CHUNK.seq")?;
        let crc = r.le32("CHUNK.crc")?;
        let len = r.le32("CHUNK.data length")?;
        let limit = MAX_CHUNK_LEN.min(limits.max_data);
        if len > limit {
            return Err(DecodeError::TooLarge {
                what: "CHUNK.data",
                len: len.into(),
                limit: limit.into(),
            });
        }
        if len == 0 {
            return Err(DecodeError::Invalid {
                what: "CHUNK.data (empty)",
            });
        }
        let chunk = Chunk {
            xid,
            offset,
            seq,
            crc,
            data: Bytes::new(),
        };
        Ok((chunk, len as usize))
    }
}

/// Slice a complete, length-checked MSG frame (`bytes` = tag + header2 + sections) without copying.
pub(crate) fn split_msg(header: MsgHeader2, bytes: Bytes) -> Msg {
    let f0 = 1 + HEADER2_LEN;
    let f1 = f0 + header.front_len as usize;
    let m1 = f1 + header.middle_len as usize;
    let d1 = m1 + header.wire_data_len() as usize;
    Msg {
        header,
        front: bytes.slice(f0..f1),
        middle: bytes.slice(f1..m1),
        data: bytes.slice(m1..d1),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::wire::from_hex;
    use crate::wire::msgr2::{AUTH_NONE, AUTH_SECRET};

    /// One representative instance of every frame type (also used by the vectors).
    pub(crate) fn samples() -> Vec<Frame> {
        crate::wire::msgr2::sample_frames(true)
    }

    fn enc(f: &Frame) -> Vec<u8> {
        let mut v = Vec::new();
        f.encode(&mut v);
        v
    }

    #[test]
    fn every_sample_round_trips_and_knows_its_length() {
        let limits = Limits::default();
        let s = samples();
        assert_eq!(s.len(), 22, "one sample per frame type");
        for f in s {
            let bytes = enc(&f);
            assert_eq!(bytes[0], f.tag().0);
            assert_eq!(f.encoded_len(), bytes.len(), "{:?}", f.tag());
            assert_eq!(
                Frame::decode(Bytes::from(bytes.clone()), &limits).unwrap(),
                f
            );
        }
    }

    #[test]
    fn exact_bytes() {
        let f = Frame::AuthMethods(AuthMethods {
            methods: vec![AUTH_SECRET, AUTH_NONE],
        });
        assert_eq!(enc(&f), from_hex("01 02000000 10000000 01000000").unwrap());
        let f = Frame::Close(Close {
            reason: CloseReason::AUTH_FAILED,
            message: "no".into(),
        });
        assert_eq!(enc(&f), from_hex("24 02000000 02000000 6e6f").unwrap());
        let f = Frame::Start(Start {
            flags: 0,
            global_seq: 0x0102,
        });
        assert_eq!(
            enc(&f),
            from_hex("19 0000000000000000 0201000000000000").unwrap()
        );
        assert_eq!(enc(&Frame::ReconnectReset), vec![0x18]);
        let m = Msg::from_message(
            &Message::new(7, &b"hi"[..]),
            1,
            0,
            EntityName::new(EntityType::CLIENT, 4),
            true,
        );
        let bytes = enc(&Frame::Msg(m.clone()));
        assert_eq!(bytes.len(), 1 + 73 + 2);
        assert_eq!(&bytes[1..9], &1u64.to_le_bytes());
        assert_eq!(&bytes[1 + 22..1 + 26], &2u32.to_le_bytes());
        assert_eq!(bytes[1 + 36], 0x08);
        assert_eq!(&bytes[1 + 47..1 + 49], &MSG_FLAG_CRC.to_le_bytes());
        assert_eq!(&bytes[1 + 57..1 + 61], &ceph_crc32c(0, b"hi").to_le_bytes());
        assert_eq!(
            &bytes[1 + 69..1 + 73],
            &ceph_crc32c(0, &bytes[1..1 + 69]).to_le_bytes()
        );
        m.verify_crcs().unwrap();
    }

    #[test]
    fn every_truncation_is_truncated_and_trailing_bytes_are_refused() {
        let limits = Limits::default();
        for f in samples() {
            let bytes = enc(&f);
            for i in 0..bytes.len() {
                let err = Frame::decode(Bytes::copy_from_slice(&bytes[..i]), &limits).unwrap_err();
                assert!(err.is_truncated(), "{:?} prefix {i}: {err}", f.tag());
            }
            let mut longer = bytes.clone();
            longer.push(0);
            let err = Frame::decode(Bytes::from(longer), &limits).unwrap_err();
            assert!(
                matches!(err, DecodeError::TrailingBytes { count: 1, .. }),
                "{:?}: {err}",
                f.tag()
            );
        }
    }

    #[test]
    fn unknown_tags_are_refused() {
        let known: Vec<u8> = samples().iter().map(|f| f.tag().0).collect();
        for t in 0..=255u8 {
            if known.contains(&t) {
                continue;
            }
            let err = Frame::decode(
                Bytes::from(vec![t, 0, 0, 0, 0, 0, 0, 0, 0]),
                &Limits::default(),
            );
            assert_eq!(err, Err(DecodeError::UnknownTag(t)));
            assert!(max_plain_len(Tag(t)).is_none() && Tag(t).name().is_none());
            assert_eq!(format!("{:?}", Tag(t)), format!("Tag(0x{t:02x})"));
        }
        assert_eq!(format!("{:?}", Tag::MSG), "MSG");
        assert_eq!(format!("{:?}", CloseReason::REKEY), "REKEY");
    }

    #[test]
    fn samples_fit_their_maximum_plain_length() {
        for f in samples() {
            if let Some(max) = max_plain_len(f.tag()) {
                assert!(enc(&f).len() <= max, "{:?}", f.tag());
            }
        }
    }

    #[test]
    fn limits_and_invalid_values() {
        let d = Limits::default();
        let check =
            |hex: &str, limits: &Limits| Frame::decode(Bytes::from(from_hex(hex).unwrap()), limits);
        assert!(matches!(
            check("01 11000000", &d),
            Err(DecodeError::TooLarge { len: 17, .. })
        ));
        assert!(matches!(
            check("01 00000000", &d),
            Err(DecodeError::Invalid { .. })
        ));
        assert!(matches!(
            check("04 01000100", &d),
            Err(DecodeError::TooLarge { len: 65_537, .. })
        ));
        assert!(matches!(
            check("24 00000000 01040000", &d),
            Err(DecodeError::TooLarge { len: 1_025, .. })
        ));
        assert!(matches!(
            check("24 00000000 01000000 ff", &d),
            Err(DecodeError::Invalid { .. })
        ));
        let flags3 = format!("05 0300000000000000 {}", "00".repeat(32));
        assert!(matches!(
            check(&flags3, &d),
            Err(DecodeError::Invalid { .. })
        ));
        // MSG: each section length is checked against its own limit before anything else.
        let small = Limits {
            max_front: 10,
            max_middle: 10,
            max_data: 10,
            max_frame: 1000,
        };
        for (off, name) in [
            (22, "header2.front_len"),
            (26, "header2.middle_len"),
            (30, "header2.data_len"),
        ] {
            let mut h = vec![0u8; 1 + HEADER2_LEN];
            h[0] = 0x20;
            h[1 + off..1 + off + 4].copy_from_slice(&11u32.to_le_bytes());
            let err = Frame::decode(Bytes::from(h), &small).unwrap_err();
            assert_eq!(
                err,
                DecodeError::TooLarge {
                    what: name,
                    len: 11,
                    limit: 10
                }
            );
        }
        let mut h = vec![0u8; 1 + HEADER2_LEN];
        h[0] = 0x20;
        h[1 + 47] = 4;
        assert!(matches!(
            Frame::decode(Bytes::from(h), &small),
            Err(DecodeError::Invalid { .. })
        ));
    }

    #[test]
    fn ident_must_be_canonical_and_flags_defined() {
        let Frame::Ident(mut ident) = samples()
            .into_iter()
            .find(|f| f.tag() == Tag::IDENT)
            .unwrap()
        else {
            unreachable!()
        };
        let good = enc(&Frame::Ident(ident.clone()));
        // Version byte of the first address changed from 1 to 2: decodable by types.rs but not canonical.
        let mut odd = good.clone();
        odd[1 + 5 + 1] = 2;
        assert!(matches!(
            Frame::decode(Bytes::from(odd), &Limits::default()),
            Err(DecodeError::Invalid { .. })
        ));
        ident.flags = 4;
        let bad = enc(&Frame::Ident(ident));
        assert!(matches!(
            Frame::decode(Bytes::from(bad), &Limits::default()),
            Err(DecodeError::Invalid { .. })
        ));
    }

    #[test]
    fn msg_sections_are_zero_copy_and_crcs_checked() {
        let msg = Message::new(0x10, &b"front"[..])
            .with_middle(&b"mid"[..])
            .with_data(vec![7u8; 5000]);
        let m = Msg::from_message(&msg, 3, 2, EntityName::new(EntityType::OSD, 1), true);
        let bytes = Bytes::from(enc(&Frame::Msg(m.clone())));
        let Frame::Msg(back) = Frame::decode(bytes.clone(), &Limits::default()).unwrap() else {
            unreachable!()
        };
        assert_eq!(back, m);
        assert_eq!(
            back.data.as_ptr(),
            bytes[1 + 73 + 8..].as_ptr(),
            "data is a slice of the input"
        );
        back.verify_crcs().unwrap();
        let again = back.clone().into_message();
        assert_eq!(
            (again.seq, again.src, again.front.clone()),
            (3, EntityName::new(EntityType::OSD, 1), msg.front.clone())
        );
        let mut bad = back.clone();
        bad.header.data_crc ^= 1;
        assert!(bad.verify_crcs().is_err());
        let plain = Msg::from_message(&msg, 3, 2, EntityName::new(EntityType::OSD, 1), false);
        assert_eq!(plain.header.flags, 0);
        plain.verify_crcs().unwrap();
        let mut bad = plain;
        bad.header.header_crc = 1;
        assert!(bad.verify_crcs().is_err());
    }
}
