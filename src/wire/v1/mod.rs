//! The legacy v1 wire protocol (`ceph v027`), byte for byte (docs/PROTOCOL.md §10).
//!
//! A v1 connection is: the banner and a legacy address exchange ([`banner`]), the
//! connect / connect_reply negotiation ([`connect`]), then tagged frames ([`frame`]):
//! messages with a 53-byte header and a footer, ACKs, keepalives and CLOSE.
//!
//! Everything here is pure encoding; the per-connection state machines live in
//! `crate::proto::v1`.

pub mod banner;
pub mod connect;
pub mod frame;

use std::fmt;

pub use banner::{read_banner, BANNER};
pub use connect::{ConnectMsg, ConnectReply};
pub use frame::{Footer, Frame, MsgHeader, RawMsg};

/// Feature bits (`CEPH_FEATURE_*`) that change what goes on the v1 wire (docs/PROTOCOL.md §10.6).
pub mod features {
    /// Bit 6: the SEQ handshake (tag 13 + le64 each way) instead of READY.
    pub const RECONNECT_SEQ: u64 = 1 << 6;
    /// Bit 23: the 21-byte footer with a signature field, when both sides have it.
    pub const MSG_AUTH: u64 = 1 << 23;
    /// Bit 42: KEEPALIVE2 (with a timestamp) instead of the bare KEEPALIVE.
    pub const MSGR_KEEPALIVE2: u64 = 1 << 42;
    /// Bit 59: entity_addr_t inside messages uses the tagged encoding.
    pub const MSG_ADDR2: u64 = 1 << 59;
    /// Bits 2, 5 and 15 (SERVER_NAUTILUS, MONNAMES, MONENC) select the MonMap encoding.
    pub const SERVER_NAUTILUS: u64 = 1 << 2;
    /// MonMap with names.
    pub const MONNAMES: u64 = 1 << 5;
    /// MonMap with the versioned encoding.
    pub const MONENC: u64 = 1 << 15;
    /// Pacific's `CEPH_FEATURES_ALL`: what a 16.2 monitor answers and its CLI sends.
    pub const PACIFIC_ALL: u64 = 0x3f01_cfbd_fffd_ffff;
    /// What a fresh Pacific monitor required from a v1 client when observed (depends on
    /// the cluster's crush tunables, so never rely on it: handle tag FEATURES instead).
    pub const PACIFIC_MON_REQUIRED_OBSERVED: u64 = 0x0401_0200_0204_0000;
}

/// `protocol_version` values in `ceph_msg_connect`.
pub mod protocol {
    /// Client to monitor (`CEPH_MONC_PROTOCOL`).
    pub const MONC: u32 = 15;
    /// Client to OSD.
    pub const OSDC: u32 = 24;
    /// Client to MDS.
    pub const MDSC: u32 = 32;
    /// Monitor to monitor.
    pub const MON: u32 = 5;
    /// OSD to OSD.
    pub const OSD: u32 = 8;
    /// MDS to MDS.
    pub const MDS: u32 = 12;
}

/// Largest authorizer we accept in connect / connect_reply. Real cephx authorizers are
/// a few hundred bytes; 64 KiB leaves room without letting a peer make us hold megabytes.
pub const MAX_AUTHORIZER_LEN: u32 = 64 * 1024;
/// Default largest front section (docs/PROTOCOL.md §2.3).
pub const MAX_FRONT_LEN: u32 = 16 * 1024 * 1024;
/// Default largest middle section.
pub const MAX_MIDDLE_LEN: u32 = 16 * 1024 * 1024;
/// Default largest data section.
pub const MAX_DATA_LEN: u32 = 512 * 1024 * 1024;

/// Per-connection limits on the three message sections, checked against the header
/// before any section byte is buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest front section.
    pub max_front_len: u32,
    /// Largest middle section.
    pub max_middle_len: u32,
    /// Largest data section.
    pub max_data_len: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_front_len: MAX_FRONT_LEN,
            max_middle_len: MAX_MIDDLE_LEN,
            max_data_len: MAX_DATA_LEN,
        }
    }
}

/// A v1 tag byte (`CEPH_MSGR_TAG_*`): a newtype so unknown values round-trip and print as hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(pub u8);

impl Tag {
    /// Server to client: ready for messages.
    pub const READY: Tag = Tag(0x01);
    /// Server to client: the session was reset; reconnect with connect_seq 0.
    pub const RESETSESSION: Tag = Tag(0x02);
    /// A racing connection from the server will win; wait.
    pub const WAIT: Tag = Tag(0x03);
    /// Retry with reply.connect_seq.
    pub const RETRY_SESSION: Tag = Tag(0x04);
    /// Retry with a global_seq above reply.global_seq.
    pub const RETRY_GLOBAL: Tag = Tag(0x05);
    /// Close the connection.
    pub const CLOSE: Tag = Tag(0x06);
    /// A message follows.
    pub const MSG: Tag = Tag(0x07);
    /// le64 seq: every message up to seq arrived.
    pub const ACK: Tag = Tag(0x08);
    /// Bare keepalive, no payload.
    pub const KEEPALIVE: Tag = Tag(0x09);
    /// Bad protocol version.
    pub const BADPROTOVER: Tag = Tag(0x0a);
    /// Bad authorizer.
    pub const BADAUTHORIZER: Tag = Tag(0x0b);
    /// Missing required features; reply.features carries what is required.
    pub const FEATURES: Tag = Tag(0x0c);
    /// Ready, with a le64 in_seq exchange following.
    pub const SEQ: Tag = Tag(0x0d);
    /// Keepalive with a timestamp.
    pub const KEEPALIVE2: Tag = Tag(0x0e);
    /// The echo of a KEEPALIVE2 timestamp.
    pub const KEEPALIVE2_ACK: Tag = Tag(0x0f);
    /// cephx v2 challenge during connect (not used on client-to-mon connections).
    pub const CHALLENGE_AUTHORIZER: Tag = Tag(0x10);

    /// The name Ceph uses, or `None` for an unknown value.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            Tag::READY => "READY",
            Tag::RESETSESSION => "RESETSESSION",
            Tag::WAIT => "WAIT",
            Tag::RETRY_SESSION => "RETRY_SESSION",
            Tag::RETRY_GLOBAL => "RETRY_GLOBAL",
            Tag::CLOSE => "CLOSE",
            Tag::MSG => "MSG",
            Tag::ACK => "ACK",
            Tag::KEEPALIVE => "KEEPALIVE",
            Tag::BADPROTOVER => "BADPROTOVER",
            Tag::BADAUTHORIZER => "BADAUTHORIZER",
            Tag::FEATURES => "FEATURES",
            Tag::SEQ => "SEQ",
            Tag::KEEPALIVE2 => "KEEPALIVE2",
            Tag::KEEPALIVE2_ACK => "KEEPALIVE2_ACK",
            Tag::CHALLENGE_AUTHORIZER => "CHALLENGE_AUTHORIZER",
            _ => return None,
        })
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}(0x{:02x})", self.0),
            None => write!(f, "Tag(0x{:02x})", self.0),
        }
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// `CEPH_MSG_CONNECT_LOSSY`: the connect / connect_reply flag for a lossy session.
pub const CONNECT_FLAG_LOSSY: u8 = 1;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_print_names_and_unknown_values() {
        assert_eq!(format!("{:?}", Tag::SEQ), "SEQ(0x0d)");
        assert_eq!(format!("{:?}", Tag(0x42)), "Tag(0x42)");
        assert_eq!(Tag::CHALLENGE_AUTHORIZER.0, 16);
        assert_eq!(Tag::KEEPALIVE2_ACK.0, 15);
    }

    #[test]
    fn feature_bits_match_the_facts() {
        assert_eq!(features::RECONNECT_SEQ, 0x40);
        assert_eq!(features::MSG_AUTH, 0x80_0000);
        assert_eq!(features::MSGR_KEEPALIVE2, 0x400_0000_0000);
        assert_eq!(features::MSG_ADDR2, 0x0800_0000_0000_0000);
        // All four are in Pacific's ALL; the observed required mask is a subset.
        for bit in [
            features::RECONNECT_SEQ,
            features::MSG_AUTH,
            features::MSGR_KEEPALIVE2,
            features::MSG_ADDR2,
        ] {
            assert_ne!(features::PACIFIC_ALL & bit, 0);
        }
        assert_eq!(
            features::PACIFIC_MON_REQUIRED_OBSERVED & !features::PACIFIC_ALL,
            0
        );
    }
}
