//! msgr2 frames in their plain form, `u8 tag | payload` (docs/PROTOCOL.md §3.1, §4–§6).
//!
//! One struct per frame, an enum [`Frame`] over all of them, and exact decoding: a
//! frame's payload must be consumed completely, every length is checked against a
//! named limit before anything is allocated, and values that have two spellings are
//! refused so that re-encoding a decoded frame always gives the same bytes.

mod msg;

pub use msg::{Msg, MsgHeader2};

use std::fmt;

use bytes::Bytes;

use super::{FLAG_ENCRYPTED, FLAG_SIGNED, HEADER2_LEN, IDENT_INITIATOR, IDENT_LOSSY};
use crate::wire::types::{AddrVec, EntityType, Timespec, MAX_ADDRS};
use crate::wire::{Codec, DecodeError, Reader, WriteLe};

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
pub(crate) mod tests;
