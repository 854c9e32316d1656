//! `ceph_msg_connect` (33 bytes + authorizer) and `ceph_msg_connect_reply`
//! (26 bytes + authorizer), docs/PROTOCOL.md §10.2.

use super::{Tag, MAX_AUTHORIZER_LEN};
use crate::wire::{Codec, DecodeError, Reader, WriteLe};

/// Fixed part of `ceph_msg_connect`.
pub const CONNECT_LEN: usize = 33;
/// Fixed part of `ceph_msg_connect_reply`.
pub const CONNECT_REPLY_LEN: usize = 26;

/// `ceph_msg_connect`: the client's connection attempt.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectMsg {
    /// Features the client supports.
    pub features: u64,
    /// The client's entity type (`CEPH_ENTITY_TYPE_*`, as a le32).
    pub host_type: u32,
    /// The client's connection counter (any value; a server may ask for a higher one).
    pub global_seq: u32,
    /// Connections made in this session so far; 0 for a new session.
    pub connect_seq: u32,
    /// Protocol version for this peer pair (15 for client to monitor).
    pub protocol_version: u32,
    /// Authorizer protocol (0 none, 2 cephx).
    pub authorizer_protocol: u32,
    /// `CONNECT_FLAG_LOSSY` or 0.
    pub flags: u8,
    /// Authorizer bytes (`authorizer_len` on the wire).
    pub authorizer: Vec<u8>,
}

impl Codec for ConnectMsg {
    const NAME: &'static str = "ceph_msg_connect";

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_le64(self.features);
        out.put_le32(self.host_type);
        out.put_le32(self.global_seq);
        out.put_le32(self.connect_seq);
        out.put_le32(self.protocol_version);
        out.put_le32(self.authorizer_protocol);
        out.put_le32(self.authorizer.len() as u32);
        out.put_u8(self.flags);
        out.extend_from_slice(&self.authorizer);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let features = r.le64("connect.features")?;
        let host_type = r.le32("connect.host_type")?;
        let global_seq = r.le32("connect.global_seq")?;
        let connect_seq = r.le32("connect.connect_seq")?;
        let protocol_version = r.le32("connect.protocol_version")?;
        let authorizer_protocol = r.le32("connect.authorizer_protocol")?;
        let len = r.le32("connect.authorizer_len")?;
        let flags = r.u8("connect.flags")?;
        let authorizer = read_authorizer(r, len, "connect.authorizer")?;
        Ok(ConnectMsg {
            features,
            host_type,
            global_seq,
            connect_seq,
            protocol_version,
            authorizer_protocol,
            flags,
            authorizer,
        })
    }
}

/// `ceph_msg_connect_reply`: the server's answer, tag first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectReply {
    /// What the server decided (READY, SEQ, FEATURES, ...).
    pub tag: Tag,
    /// Features the server supports (FEATURES/BADPROTOVER: `(ours & supported) | required`).
    pub features: u64,
    /// The server's global_seq (RETRY_GLOBAL: the value to exceed).
    pub global_seq: u32,
    /// The connect_seq (RETRY_SESSION: the value to use; success: ours + 1).
    pub connect_seq: u32,
    /// The server's protocol version.
    pub protocol_version: u32,
    /// `CONNECT_FLAG_LOSSY` if the server made the session lossy.
    pub flags: u8,
    /// Authorizer reply bytes.
    pub authorizer: Vec<u8>,
}

impl Codec for ConnectReply {
    const NAME: &'static str = "ceph_msg_connect_reply";

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(self.tag.0);
        out.put_le64(self.features);
        out.put_le32(self.global_seq);
        out.put_le32(self.connect_seq);
        out.put_le32(self.protocol_version);
        out.put_le32(self.authorizer.len() as u32);
        out.put_u8(self.flags);
        out.extend_from_slice(&self.authorizer);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let tag = Tag(r.u8("connect_reply.tag")?);
        let features = r.le64("connect_reply.features")?;
        let global_seq = r.le32("connect_reply.global_seq")?;
        let connect_seq = r.le32("connect_reply.connect_seq")?;
        let protocol_version = r.le32("connect_reply.protocol_version")?;
        let len = r.le32("connect_reply.authorizer_len")?;
        let flags = r.u8("connect_reply.flags")?;
        let authorizer = read_authorizer(r, len, "connect_reply.authorizer")?;
        Ok(ConnectReply {
            tag,
            features,
            global_seq,
            connect_seq,
            protocol_version,
            flags,
            authorizer,
        })
    }
}

fn read_authorizer(
    r: &mut Reader<'_>,
    len: u32,
    what: &'static str,
) -> Result<Vec<u8>, DecodeError> {
    // A peer-chosen length: checked before we wait for (or copy) that many bytes.
    if len > MAX_AUTHORIZER_LEN {
        return Err(DecodeError::TooLarge {
            what,
            len: len.into(),
            limit: MAX_AUTHORIZER_LEN.into(),
        });
    }
    Ok(r.take(len as usize, what)?.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::from_hex;
    use crate::wire::v1::{features, protocol, CONNECT_FLAG_LOSSY};

    /// What the 16.2 CLI sends to a monitor (ceph-v1-facts §5.3).
    fn cli_connect() -> ConnectMsg {
        ConnectMsg {
            features: features::PACIFIC_ALL,
            host_type: 8,
            global_seq: 1,
            connect_seq: 0,
            protocol_version: protocol::MONC,
            authorizer_protocol: 0,
            flags: CONNECT_FLAG_LOSSY,
            authorizer: Vec::new(),
        }
    }

    #[test]
    fn connect_is_33_bytes_with_the_documented_layout() {
        let bytes = cli_connect().to_vec();
        assert_eq!(bytes.len(), CONNECT_LEN);
        let want =
            from_hex("fffffdffbdcf013f 08000000 01000000 00000000 0f000000 00000000 00000000 01")
                .unwrap();
        assert_eq!(bytes, want);
        assert_eq!(ConnectMsg::decode_exact(&bytes).unwrap(), cli_connect());
    }

    #[test]
    fn connect_reply_is_26_bytes_with_the_documented_layout() {
        let reply = ConnectReply {
            tag: Tag::SEQ,
            features: features::PACIFIC_ALL,
            global_seq: 7,
            connect_seq: 1,
            protocol_version: 15,
            flags: CONNECT_FLAG_LOSSY,
            authorizer: Vec::new(),
        };
        let bytes = reply.to_vec();
        assert_eq!(bytes.len(), CONNECT_REPLY_LEN);
        let want = from_hex("0d fffffdffbdcf013f 07000000 01000000 0f000000 00000000 01").unwrap();
        assert_eq!(bytes, want);
        assert_eq!(ConnectReply::decode_exact(&bytes).unwrap(), reply);
    }

    #[test]
    fn authorizer_bytes_follow_and_are_limited() {
        let mut c = cli_connect();
        c.authorizer = vec![0xaa; 5];
        c.authorizer_protocol = 2;
        let bytes = c.to_vec();
        assert_eq!(bytes.len(), CONNECT_LEN + 5);
        assert_eq!(ConnectMsg::decode_exact(&bytes).unwrap(), c);
        // Incomplete authorizer: need more, not malformed.
        assert!(ConnectMsg::decode_exact(&bytes[..35])
            .unwrap_err()
            .is_truncated());
        // A length above the limit is refused before waiting for the bytes.
        let mut big = cli_connect().to_vec();
        big[28..32].copy_from_slice(&(MAX_AUTHORIZER_LEN + 1).to_le_bytes());
        assert!(matches!(
            ConnectMsg::decode_exact(&big),
            Err(DecodeError::TooLarge { .. })
        ));
    }
}
