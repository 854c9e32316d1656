//! msgr2 as proposed in 2016: banner, frames and the incremental deframer
//! (docs/PROTOCOL.md §2, §3, §6).
//!
//! - [`Banner`]: the first bytes in each direction.
//! - [`Frame`]: one struct per frame with exact encode/decode of the plain form.
//! - [`Deframer`]: splits an incoming byte stream into frames in any of the three
//!   forms, asking a [`crate::crypto::RxProtector`] to authenticate (and decrypt)
//!   protected frames *before* anything of them is interpreted (§3.4).
//!
//! Nothing here reads a clock, spawns a thread or touches a socket.

mod banner;
mod deframer;
mod frame;

pub use banner::{Banner, BannerError};
pub use deframer::{Decoded, Deframer, FrameError, DEFAULT_READ_HINT};
pub use frame::{
    Ack, Auth, AuthBadMethod, AuthDone, AuthMethods, AuthSetMethod, Chunk, ChunkAbort, Close,
    CloseReason, Frame, Ident, IdentBadProtocol, IdentMissingFeatures, Keepalive2, Keepalive2Ack,
    Limits, Msg, MsgHeader2, Reconnect, ReconnectOk, ReconnectRetryGlobal, ReconnectRetrySession,
    Start, Tag, CHUNK_HEAD_LEN, MAX_AUTH_METHODS, MAX_AUTH_PAYLOAD, MAX_CHUNK_ABORT_MESSAGE,
    MAX_CHUNK_LEN, MAX_CLOSE_REASON,
};

use crate::wire::message::Message;
use crate::wire::types::{AddrVec, EntityName, EntityType, Timespec};
use bytes::Bytes;

/// Auth method NONE (Ceph's `CEPH_AUTH_NONE`, §4.1).
pub const AUTH_NONE: u32 = 1;
/// Auth method SECRET, the shared-secret method of §4.4.
pub const AUTH_SECRET: u32 = 0x10;
/// AUTH_DONE flag: frames after AUTH_DONE are encrypted (§3.3).
pub const FLAG_ENCRYPTED: u64 = 1;
/// AUTH_DONE flag: frames after AUTH_DONE are signed (§3.2).
pub const FLAG_SIGNED: u64 = 2;
/// IDENT flag: the sender wants a lossy session (§5).
pub const IDENT_LOSSY: u64 = 1;
/// IDENT flag: the sender re-establishes the session after a fault (§5).
pub const IDENT_INITIATOR: u64 = 2;
/// Protocol-feature bit 0 in the banner: the structured-data extension (§2.1, §7).
pub const PROTO_FEATURE_STRUCTURED: u64 = 1;
/// header2 flag: the four CRC fields are set and checked (§6.1).
pub const MSG_FLAG_CRC: u16 = 1;
/// header2 flag: the data section is chunked (§7).
pub const MSG_FLAG_CHUNKED: u16 = 2;
/// Size of `ceph_msg_header2` (§6.1).
pub const HEADER2_LEN: usize = 73;

/// One representative instance of every frame type, in tag order: the frames of the
/// test vectors (docs/PROTOCOL.md §8), the unit tests and the fuzzing seeds. `crc`
/// selects the MSG variant: with CRCs for the plain form, without for the protected forms (§6.1).
#[doc(hidden)]
pub fn sample_frames(crc: bool) -> Vec<Frame> {
    let client = EntityName::new(EntityType::CLIENT, 4123);
    let msg = Message::new(0x0f, &b"ping"[..])
        .with_middle(&b"mid"[..])
        .with_data(&b"0123456789"[..])
        .with_tid(7);
    let addrs = AddrVec(vec![
        "v2:127.0.0.1:3300/42".parse().expect("literal address"),
        "v1:[::1]:6789/42".parse().expect("literal address"),
    ]);
    vec![
        Frame::AuthMethods(AuthMethods {
            methods: vec![AUTH_SECRET, AUTH_NONE],
        }),
        Frame::AuthSetMethod(AuthSetMethod {
            method: AUTH_SECRET,
        }),
        Frame::AuthBadMethod(AuthBadMethod { method: AUTH_NONE }),
        Frame::Auth(Auth {
            payload: Bytes::from_static(b"\x01auth payload"),
        }),
        Frame::AuthDone(AuthDone {
            flags: FLAG_SIGNED,
            signature: [0xa5; 32],
        }),
        Frame::Ident(Ident {
            addrs,
            entity_type: EntityType::CLIENT,
            protocol_version: 2,
            features_supported: 0x3fff_ffff_ffff_ffff,
            features_required: 0x1,
            flags: IDENT_INITIATOR,
            cookie: 0x0123_4567_89ab_cdef,
        }),
        Frame::IdentMissingFeatures(IdentMissingFeatures { missing: 0x40 }),
        Frame::IdentBadProtocol(IdentBadProtocol {
            protocol_version: 3,
        }),
        Frame::Reconnect(Reconnect {
            cookie: 0x0123_4567_89ab_cdef,
            global_seq: 5,
            connect_seq: 2,
            msg_seq: 9,
        }),
        Frame::ReconnectOk(ReconnectOk {
            msg_seq: 11,
            global_seq: 6,
        }),
        Frame::ReconnectRetrySession(ReconnectRetrySession { connect_seq: 3 }),
        Frame::ReconnectRetryGlobal(ReconnectRetryGlobal { global_seq: 8 }),
        Frame::ReconnectWait,
        Frame::ReconnectReset,
        Frame::Start(Start {
            flags: 0,
            global_seq: 1,
        }),
        Frame::Msg(Msg::from_message(&msg, 1, 0, client, crc)),
        Frame::Ack(Ack { seq: 1 }),
        Frame::Keepalive2(Keepalive2 {
            stamp: Timespec {
                sec: 12,
                nsec: 345_000,
            },
        }),
        Frame::Keepalive2Ack(Keepalive2Ack {
            stamp: Timespec {
                sec: 12,
                nsec: 345_000,
            },
        }),
        Frame::Close(Close {
            reason: CloseReason::NORMAL,
            message: "bye".into(),
        }),
        Frame::Chunk(Chunk {
            xid: 1,
            offset: 4,
            seq: 2,
            crc: if crc {
                crate::wire::ceph_crc32c(0, b"456789")
            } else {
                0
            },
            data: Bytes::from_static(b"456789"),
        }),
        Frame::ChunkAbort(ChunkAbort {
            xid: 1,
            code: 5,
            message: "eio".into(),
        }),
    ]
}

/// A short lowercase name per frame type for file names (`auth_methods`, `msg`, …).
#[doc(hidden)]
pub fn frame_file_name(tag: Tag) -> String {
    match tag.name() {
        Some(n) => n.to_ascii_lowercase(),
        None => format!("tag_{:02x}", tag.0),
    }
}
