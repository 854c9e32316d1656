//! Typed monitor messages: the few a client needs to authenticate with `auth none`,
//! learn the fsid and run commands (docs/PROTOCOL.md §10.8; ceph-v1-facts §5.7).
//!
//! Each type converts to and from a [`Message`] (front, and data where the message
//! uses it). Decoders check every count and length against the named limits below.

use std::fmt;
use std::str::FromStr;

use crate::wire::message::{priority, Message};
use crate::wire::{DecodeError, Reader, WriteLe};

/// Message type codes (`CEPH_MSG_*`, `MSG_*`) seen on client-to-monitor connections.
pub mod msg_type {
    /// MMonMap.
    pub const MON_MAP: u16 = 4;
    /// MMonGetMap.
    pub const MON_GET_MAP: u16 = 5;
    /// MMonSubscribe.
    pub const MON_SUBSCRIBE: u16 = 15;
    /// MMonSubscribeAck.
    pub const MON_SUBSCRIBE_ACK: u16 = 16;
    /// MAuth.
    pub const AUTH: u16 = 17;
    /// MAuthReply.
    pub const AUTH_REPLY: u16 = 18;
    /// MMonGetVersion.
    pub const MON_GET_VERSION: u16 = 19;
    /// MMonGetVersionReply.
    pub const MON_GET_VERSION_REPLY: u16 = 20;
    /// MOSDMap.
    pub const OSD_MAP: u16 = 41;
    /// MMonCommand.
    pub const MON_COMMAND: u16 = 50;
    /// MMonCommandAck.
    pub const MON_COMMAND_ACK: u16 = 51;
    /// MConfig.
    pub const CONFIG: u16 = 62;
    /// MMgrMap.
    pub const MGR_MAP: u16 = 0x704;
}

/// Auth protocol numbers (`CEPH_AUTH_*`).
pub mod auth_protocol {
    /// Not chosen yet: the client lists what it supports.
    pub const UNKNOWN: u32 = 0;
    /// No authentication.
    pub const NONE: u32 = 1;
    /// cephx.
    pub const CEPHX: u32 = 2;
}

/// Longest string we accept inside a monitor message (command JSON, rs, names).
pub const MAX_STRING_LEN: u32 = 4 * 1024 * 1024;
/// Longest opaque blob (auth payloads, monmaps).
pub const MAX_BLOB_LEN: u32 = 4 * 1024 * 1024;
/// Most strings in a command vector.
pub const MAX_CMD_ARGS: u32 = 1024;
/// Most auth protocols a client may list.
pub const MAX_AUTH_PROTOCOLS: u32 = 16;
/// Most subscriptions in one MMonSubscribe.
pub const MAX_SUBSCRIPTIONS: u32 = 64;

/// A typed monitor message.
pub trait MonMessage: Sized {
    /// Its message type.
    const TYPE: u16;
    /// Header version we encode.
    const VERSION: u16 = 1;
    /// Header compat_version we encode.
    const COMPAT: u16 = 1;

    /// Encode the front section.
    fn encode_front(&self, out: &mut Vec<u8>);

    /// Decode from a received message (type already matched by the caller or checked here).
    fn decode(m: &Message) -> Result<Self, DecodeError>;

    /// A message ready to send (priority DEFAULT, tid 0).
    fn to_message(&self) -> Message {
        let mut front = Vec::new();
        self.encode_front(&mut front);
        let mut m = Message::new(Self::TYPE, front).with_priority(priority::DEFAULT);
        m.version = Self::VERSION;
        m.compat_version = Self::COMPAT;
        m
    }
}

fn check_type(m: &Message, ty: u16, what: &'static str) -> Result<(), DecodeError> {
    if m.ty != ty {
        return Err(DecodeError::Invalid { what });
    }
    Ok(())
}

fn read_string(r: &mut Reader<'_>, what: &'static str) -> Result<String, DecodeError> {
    let b = r.len_prefixed(MAX_STRING_LEN, what)?;
    String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Invalid { what })
}

fn read_strings(r: &mut Reader<'_>, what: &'static str) -> Result<Vec<String>, DecodeError> {
    let n = r.count(MAX_CMD_ARGS, what)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(read_string(r, what)?);
    }
    Ok(v)
}

fn put_strings(out: &mut Vec<u8>, v: &[String]) {
    out.put_le32(v.len() as u32);
    for s in v {
        out.put_len_prefixed(s.as_bytes());
    }
}

/// A cluster fsid: 16 raw bytes in printed order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Fsid(pub [u8; 16]);

impl fmt::Display for Fsid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fsid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Fsid {
    type Err = DecodeError;

    /// `8490f083-1970-49e4-bd70-10e26d638221` (dashes optional).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex: String = s.trim().chars().filter(|c| *c != '-').collect();
        let bytes =
            crate::wire::from_hex(&hex).ok_or(DecodeError::Invalid { what: "fsid text" })?;
        let arr: [u8; 16] = bytes.try_into().map_err(|_| DecodeError::Invalid {
            what: "fsid length",
        })?;
        Ok(Fsid(arr))
    }
}

/// The 18-byte `PaxosServiceMessage` prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaxosHeader {
    /// Map version (0 from clients).
    pub version: u64,
    /// Session monitor rank (-1 from clients).
    pub session_mon: i16,
    /// Session monitor tid (0).
    pub session_mon_tid: u64,
}

impl Default for PaxosHeader {
    fn default() -> Self {
        PaxosHeader {
            version: 0,
            session_mon: -1,
            session_mon_tid: 0,
        }
    }
}

impl PaxosHeader {
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_le64(self.version);
        out.put_le16(self.session_mon as u16);
        out.put_le64(self.session_mon_tid);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(PaxosHeader {
            version: r.le64("paxos.version")?,
            session_mon: r.le16("paxos.session_mon")? as i16,
            session_mon_tid: r.le64("paxos.session_mon_tid")?,
        })
    }
}

/// An auth entity name as MAuth carries it: le32 type + string id (`client.admin`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthName {
    /// Entity type (8 = client).
    pub ty: u32,
    /// The id after the dot (`admin`).
    pub id: String,
}

impl FromStr for AuthName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ty, id) = s
            .split_once('.')
            .ok_or_else(|| format!("invalid entity name {s:?}: expected TYPE.ID"))?;
        let ty = crate::wire::types::EntityType::from_name(ty)
            .ok_or_else(|| format!("invalid entity name {s:?}: unknown type {ty:?}"))?;
        if id.is_empty() {
            return Err(format!("invalid entity name {s:?}: empty id"));
        }
        Ok(AuthName {
            ty: ty.0.into(),
            id: id.to_string(),
        })
    }
}

impl fmt::Display for AuthName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ty = crate::wire::types::EntityType(self.ty as u8);
        write!(f, "{}.{}", ty, self.id)
    }
}

/// The first MAuth's payload when no protocol is chosen yet: what the client supports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthInitialRequest {
    /// Encoding version (1).
    pub struct_v: u8,
    /// Supported protocols (`[1]` for none). Ceph decodes this as a set.
    pub supported: Vec<u32>,
    /// Who we are.
    pub name: AuthName,
    /// Our previous global id (0 the first time).
    pub global_id: u64,
}

impl AuthInitialRequest {
    /// Encode as the MAuth `auth_payload`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(self.struct_v);
        out.put_le32(self.supported.len() as u32);
        for p in &self.supported {
            out.put_le32(*p);
        }
        out.put_le32(self.name.ty);
        out.put_len_prefixed(self.name.id.as_bytes());
        out.put_le64(self.global_id);
    }

    /// Decode an MAuth `auth_payload`.
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        let struct_v = r.u8("auth_payload.struct_v")?;
        let n = r.count(MAX_AUTH_PROTOCOLS, "auth_payload.supported")?;
        let mut supported = Vec::with_capacity(n);
        for _ in 0..n {
            supported.push(r.le32("auth_payload.supported")?);
        }
        let ty = r.le32("auth_payload.entity_type")?;
        let id = read_string(&mut r, "auth_payload.entity_id")?;
        let global_id = r.le64("auth_payload.global_id")?;
        r.expect_end("auth_payload")?;
        Ok(AuthInitialRequest {
            struct_v,
            supported,
            name: AuthName { ty, id },
            global_id,
        })
    }
}

/// MAuth (17): an authentication request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MAuth {
    /// Paxos prefix.
    pub paxos: PaxosHeader,
    /// The protocol (0 = not chosen yet).
    pub protocol: u32,
    /// Protocol-specific payload ([`AuthInitialRequest`] when protocol is 0).
    pub auth_payload: Vec<u8>,
    /// The monmap epoch we have (0: the monitor pushes its map after success).
    pub monmap_epoch: u32,
}

impl MAuth {
    /// The first request of `auth none` for `name`.
    pub fn auth_none(name: AuthName) -> MAuth {
        let mut payload = Vec::new();
        AuthInitialRequest {
            struct_v: 1,
            supported: vec![auth_protocol::NONE],
            name,
            global_id: 0,
        }
        .encode(&mut payload);
        MAuth {
            paxos: PaxosHeader::default(),
            protocol: auth_protocol::UNKNOWN,
            auth_payload: payload,
            monmap_epoch: 0,
        }
    }
}

impl MonMessage for MAuth {
    const TYPE: u16 = msg_type::AUTH;

    fn encode_front(&self, out: &mut Vec<u8>) {
        self.paxos.encode(out);
        out.put_le32(self.protocol);
        out.put_len_prefixed(&self.auth_payload);
        out.put_le32(self.monmap_epoch);
    }

    fn decode(m: &Message) -> Result<Self, DecodeError> {
        check_type(m, Self::TYPE, "MAuth type")?;
        let mut r = Reader::new(&m.front);
        let paxos = PaxosHeader::read(&mut r)?;
        let protocol = r.le32("MAuth.protocol")?;
        let auth_payload = r.len_prefixed(MAX_BLOB_LEN, "MAuth.auth_payload")?.to_vec();
        // Older clients may omit the epoch.
        let monmap_epoch = if r.is_empty() {
            0
        } else {
            r.le32("MAuth.monmap_epoch")?
        };
        r.expect_end("MAuth")?;
        Ok(MAuth {
            paxos,
            protocol,
            auth_payload,
            monmap_epoch,
        })
    }
}

/// MAuthReply (18).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MAuthReply {
    /// The protocol the monitor chose (1 = none).
    pub protocol: u32,
    /// 0 on success, a negative errno otherwise (-95: no common protocol).
    pub result: i32,
    /// The global id assigned to us.
    pub global_id: u64,
    /// Protocol-specific reply (empty for none).
    pub result_bl: Vec<u8>,
    /// Human-readable message.
    pub result_msg: String,
}

impl MonMessage for MAuthReply {
    const TYPE: u16 = msg_type::AUTH_REPLY;

    fn encode_front(&self, out: &mut Vec<u8>) {
        out.put_le32(self.protocol);
        out.put_le32(self.result as u32);
        out.put_le64(self.global_id);
        out.put_len_prefixed(&self.result_bl);
        out.put_len_prefixed(self.result_msg.as_bytes());
    }

    fn decode(m: &Message) -> Result<Self, DecodeError> {
        check_type(m, Self::TYPE, "MAuthReply type")?;
        let mut r = Reader::new(&m.front);
        let protocol = r.le32("MAuthReply.protocol")?;
        let result = r.le32("MAuthReply.result")? as i32;
        let global_id = r.le64("MAuthReply.global_id")?;
        let result_bl = r
            .len_prefixed(MAX_BLOB_LEN, "MAuthReply.result_bl")?
            .to_vec();
        let result_msg = read_string(&mut r, "MAuthReply.result_msg")?;
        r.expect_end("MAuthReply")?;
        Ok(MAuthReply {
            protocol,
            result,
            global_id,
            result_bl,
            result_msg,
        })
    }
}

/// MMonGetMap (5): empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MMonGetMap;

impl MonMessage for MMonGetMap {
    const TYPE: u16 = msg_type::MON_GET_MAP;

    fn encode_front(&self, _out: &mut Vec<u8>) {}

    fn decode(m: &Message) -> Result<Self, DecodeError> {
        check_type(m, Self::TYPE, "MMonGetMap type")?;
        Reader::new(&m.front).expect_end("MMonGetMap")?;
        Ok(MMonGetMap)
    }
}

/// MMonMap (4): a bufferlist holding the encoded MonMap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MMonMap {
    /// The encoded MonMap.
    pub monmap: Vec<u8>,
}

/// What we read from an encoded MonMap: its fsid and epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonMapSummary {
    /// Encoding version (1 or 2 for the pre-ENCODE_START forms).
    pub struct_v: u8,
    /// The cluster fsid.
    pub fsid: Fsid,
    /// The map epoch.
    pub epoch: u32,
}

/// Newest MonMap compat version we can read the prefix of (Pacific encodes 9/6).
const MONMAP_MAX_COMPAT: u8 = 9;

impl MMonMap {
    /// The fsid and epoch. Handles the ENCODE_START form (Nautilus+: v9/c6 on 16.2,
    /// v5/c3 without SERVER_NAUTILUS) and the old `u16 1` / `u16 2` forms.
    pub fn summary(&self) -> Result<MonMapSummary, DecodeError> {
        let mut r = Reader::new(&self.monmap);
        let head = r.array::<2>("monmap version")?;
        let legacy = u16::from_le_bytes(head);
        let struct_v = if legacy == 1 || legacy == 2 {
            legacy as u8
        } else {
            let (v, compat) = (head[0], head[1]);
            if compat > MONMAP_MAX_COMPAT || compat > v {
                return Err(DecodeError::Invalid {
                    what: "monmap compat version",
                });
            }
            let len = r.le32("monmap length")?;
            if len as usize > r.remaining() {
                return Err(DecodeError::Invalid {
                    what: "monmap length (beyond the bufferlist)",
                });
            }
            v
        };
        let fsid = Fsid(r.array::<16>("monmap fsid")?);
        let epoch = r.le32("monmap epoch")?;
        Ok(MonMapSummary {
            struct_v,
            fsid,
            epoch,
        })
    }
}

impl MonMessage for MMonMap {
    const TYPE: u16 = msg_type::MON_MAP;

    fn encode_front(&self, out: &mut Vec<u8>) {
        out.put_len_prefixed(&self.monmap);
    }

    fn decode(m: &Message) -> Result<Self, DecodeError> {
        check_type(m, Self::TYPE, "MMonMap type")?;
        let mut r = Reader::new(&m.front);
        let monmap = r.len_prefixed(MAX_BLOB_LEN, "MMonMap.monmap")?.to_vec();
        r.expect_end("MMonMap")?;
        Ok(MMonMap { monmap })
    }
}

/// MMonCommand (50): a command for the monitor, as one or more JSON strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MMonCommand {
    /// Paxos prefix.
    pub paxos: PaxosHeader,
    /// Must match the cluster's fsid, else the monitor answers r=-1 "wrong fsid".
    pub fsid: Fsid,
    /// The command, usually one JSON object such as `{"prefix":"status"}`.
    pub cmd: Vec<String>,
}

impl MonMessage for MMonCommand {
    const TYPE: u16 = msg_type::MON_COMMAND;

    fn encode_front(&self, out: &mut Vec<u8>) {
        self.paxos.encode(out);
        out.extend_from_slice(&self.fsid.0);
        put_strings(out, &self.cmd);
    }

    fn decode(m: &Message) -> Result<Self, DecodeError> {
        check_type(m, Self::TYPE, "MMonCommand type")?;
        let mut r = Reader::new(&m.front);
        let paxos = PaxosHeader::read(&mut r)?;
        let fsid = Fsid(r.array::<16>("MMonCommand.fsid")?);
        let cmd = read_strings(&mut r, "MMonCommand.cmd")?;
        r.expect_end("MMonCommand")?;
        Ok(MMonCommand { paxos, fsid, cmd })
    }
}

/// MMonCommandAck (51): the result; the command's output is the **data** section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MMonCommandAck {
    /// Paxos prefix.
    pub paxos: PaxosHeader,
    /// 0 or a negative errno.
    pub r: i32,
    /// The status string (the error text on failure).
    pub rs: String,
    /// The command, echoed.
    pub cmd: Vec<String>,
    /// The output (data section).
    pub output: Vec<u8>,
}

impl MonMessage for MMonCommandAck {
    const TYPE: u16 = msg_type::MON_COMMAND_ACK;

    fn encode_front(&self, out: &mut Vec<u8>) {
        self.paxos.encode(out);
        out.put_le32(self.r as u32);
        out.put_len_prefixed(self.rs.as_bytes());
        put_strings(out, &self.cmd);
    }

    fn decode(m: &Message) -> Result<Self, DecodeError> {
        check_type(m, Self::TYPE, "MMonCommandAck type")?;
        let mut r = Reader::new(&m.front);
        let paxos = PaxosHeader::read(&mut r)?;
        let rv = r.le32("MMonCommandAck.r")? as i32;
        let rs = read_string(&mut r, "MMonCommandAck.rs")?;
        let cmd = read_strings(&mut r, "MMonCommandAck.cmd")?;
        r.expect_end("MMonCommandAck")?;
        Ok(MMonCommandAck {
            paxos,
            r: rv,
            rs,
            cmd,
            output: m.data.to_vec(),
        })
    }

    fn to_message(&self) -> Message {
        let mut front = Vec::new();
        self.encode_front(&mut front);
        Message::new(Self::TYPE, front).with_data(self.output.clone())
    }
}

/// MMonGetVersion (19): ask for the newest version of a map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MMonGetVersion {
    /// Echoed in the reply.
    pub handle: u64,
    /// `osdmap`, `monmap`, `mdsmap`, ...
    pub what: String,
}

impl MonMessage for MMonGetVersion {
    const TYPE: u16 = msg_type::MON_GET_VERSION;

    fn encode_front(&self, out: &mut Vec<u8>) {
        out.put_le64(self.handle);
        out.put_len_prefixed(self.what.as_bytes());
    }

    fn decode(m: &Message) -> Result<Self, DecodeError> {
        check_type(m, Self::TYPE, "MMonGetVersion type")?;
        let mut r = Reader::new(&m.front);
        let handle = r.le64("MMonGetVersion.handle")?;
        let what = read_string(&mut r, "MMonGetVersion.what")?;
        r.expect_end("MMonGetVersion")?;
        Ok(MMonGetVersion { handle, what })
    }
}

/// MMonGetVersionReply (20, header v2/2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MMonGetVersionReply {
    /// The request's handle.
    pub handle: u64,
    /// Newest version.
    pub version: u64,
    /// Oldest version still held.
    pub oldest_version: u64,
}

impl MonMessage for MMonGetVersionReply {
    const TYPE: u16 = msg_type::MON_GET_VERSION_REPLY;
    const VERSION: u16 = 2;
    const COMPAT: u16 = 2;

    fn encode_front(&self, out: &mut Vec<u8>) {
        out.put_le64(self.handle);
        out.put_le64(self.version);
        out.put_le64(self.oldest_version);
    }

    fn decode(m: &Message) -> Result<Self, DecodeError> {
        check_type(m, Self::TYPE, "MMonGetVersionReply type")?;
        let mut r = Reader::new(&m.front);
        let handle = r.le64("MMonGetVersionReply.handle")?;
        let version = r.le64("MMonGetVersionReply.version")?;
        // Version 1 of the message has no oldest_version.
        let oldest_version = if r.is_empty() {
            0
        } else {
            r.le64("MMonGetVersionReply.oldest_version")?
        };
        r.expect_end("MMonGetVersionReply")?;
        Ok(MMonGetVersionReply {
            handle,
            version,
            oldest_version,
        })
    }
}

/// One MMonSubscribe item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The map name (`monmap`, `osdmap`, `config`, `mgrmap`).
    pub what: String,
    /// First version wanted.
    pub start: u64,
    /// 1 = ONETIME.
    pub flags: u8,
}

/// MMonSubscribe (15, header v3/1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MMonSubscribe {
    /// The subscriptions, in wire order.
    pub what: Vec<Subscription>,
    /// The client's hostname.
    pub hostname: String,
}

impl MonMessage for MMonSubscribe {
    const TYPE: u16 = msg_type::MON_SUBSCRIBE;
    const VERSION: u16 = 3;

    fn encode_front(&self, out: &mut Vec<u8>) {
        out.put_le32(self.what.len() as u32);
        for s in &self.what {
            out.put_len_prefixed(s.what.as_bytes());
            out.put_le64(s.start);
            out.put_u8(s.flags);
        }
        out.put_len_prefixed(self.hostname.as_bytes());
    }

    fn decode(m: &Message) -> Result<Self, DecodeError> {
        check_type(m, Self::TYPE, "MMonSubscribe type")?;
        let mut r = Reader::new(&m.front);
        let n = r.count(MAX_SUBSCRIPTIONS, "MMonSubscribe.count")?;
        let mut what = Vec::with_capacity(n);
        for _ in 0..n {
            let name = read_string(&mut r, "MMonSubscribe.what")?;
            let start = r.le64("MMonSubscribe.start")?;
            let flags = r.u8("MMonSubscribe.flags")?;
            what.push(Subscription {
                what: name,
                start,
                flags,
            });
        }
        let hostname = if r.is_empty() {
            String::new()
        } else {
            read_string(&mut r, "MMonSubscribe.hostname")?
        };
        r.expect_end("MMonSubscribe")?;
        Ok(MMonSubscribe { what, hostname })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ceph_crc32c;

    #[test]
    fn mauth_auth_none_matches_the_live_vector() {
        let m = MAuth::auth_none("client.admin".parse().unwrap()).to_message();
        // 60-byte front, 30-byte payload, front crc 0x35a7635b (ceph-v1-facts §5.6).
        assert_eq!(m.front.len(), 60);
        assert_eq!(ceph_crc32c(0, &m.front), 0x35a7_635b);
        let back = MAuth::decode(&m).unwrap();
        assert_eq!(back.auth_payload.len(), 30);
        let req = AuthInitialRequest::decode(&back.auth_payload).unwrap();
        assert_eq!(req.supported, vec![auth_protocol::NONE]);
        assert_eq!(req.name.to_string(), "client.admin");
    }

    #[test]
    fn auth_reply_round_trip() {
        let r = MAuthReply {
            protocol: 1,
            result: -95,
            global_id: 4100,
            result_bl: vec![],
            result_msg: "x".into(),
        };
        let m = r.to_message();
        assert_eq!(MAuthReply::decode(&m).unwrap(), r);
        assert!(
            MAuthReply::decode(&MAuth::auth_none("client.a".parse().unwrap()).to_message())
                .is_err()
        );
    }

    #[test]
    fn monmap_fsid_in_all_prefix_forms() {
        let fsid: Fsid = "8490f083-1970-49e4-bd70-10e26d638221".parse().unwrap();
        assert_eq!(fsid.to_string(), "8490f083-1970-49e4-bd70-10e26d638221");
        // ENCODE_START(9,6): the fsid sits at front offset 10..26.
        let mut body = fsid.0.to_vec();
        body.extend_from_slice(&3u32.to_le_bytes());
        body.extend_from_slice(&[0; 20]);
        let mut mm = vec![9, 6];
        mm.put_le32(body.len() as u32);
        mm.extend_from_slice(&body);
        let msg = MMonMap { monmap: mm }.to_message();
        assert_eq!(&msg.front[10..26], &fsid.0);
        let s = MMonMap::decode(&msg).unwrap().summary().unwrap();
        assert_eq!((s.struct_v, s.fsid, s.epoch), (9, fsid, 3));
        // The old u16 1 form.
        let mut old = vec![1, 0];
        old.extend_from_slice(&fsid.0);
        old.extend_from_slice(&7u32.to_le_bytes());
        let s = MMonMap { monmap: old }.summary().unwrap();
        assert_eq!((s.struct_v, s.fsid, s.epoch), (1, fsid, 7));
        // A length beyond the buffer is malformed.
        let mut bad = vec![9, 6];
        bad.put_le32(1000);
        bad.extend_from_slice(&[0; 20]);
        assert!(MMonMap { monmap: bad }.summary().is_err());
    }

    #[test]
    fn command_and_ack_round_trip_with_output_in_data() {
        let c = MMonCommand {
            paxos: PaxosHeader::default(),
            fsid: Fsid([7; 16]),
            cmd: vec![r#"{"prefix":"status"}"#.into()],
        };
        let m = c.to_message();
        assert_eq!(m.front.len(), 18 + 16 + 4 + 4 + 19);
        assert_eq!(&m.front[8..10], &[0xff, 0xff]);
        assert_eq!(MMonCommand::decode(&m).unwrap(), c);
        let ack = MMonCommandAck {
            paxos: PaxosHeader::default(),
            r: -1,
            rs: "wrong fsid".into(),
            cmd: c.cmd.clone(),
            output: b"out".to_vec(),
        };
        let m = ack.to_message();
        assert_eq!(&m.data[..], b"out");
        assert_eq!(MMonCommandAck::decode(&m).unwrap(), ack);
    }

    #[test]
    fn command_vector_count_is_limited() {
        let mut front = Vec::new();
        PaxosHeader::default().encode(&mut front);
        front.extend_from_slice(&[0; 16]);
        front.put_le32(MAX_CMD_ARGS + 1);
        let m = Message::new(msg_type::MON_COMMAND, front);
        assert!(matches!(
            MMonCommand::decode(&m),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn get_version_and_subscribe_round_trip() {
        let g = MMonGetVersion {
            handle: 3,
            what: "osdmap".into(),
        };
        assert_eq!(g.to_message().front.len(), 18);
        assert_eq!(MMonGetVersion::decode(&g.to_message()).unwrap(), g);
        let r = MMonGetVersionReply {
            handle: 3,
            version: 5,
            oldest_version: 1,
        };
        let m = r.to_message();
        assert_eq!((m.version, m.front.len()), (2, 24));
        assert_eq!(MMonGetVersionReply::decode(&m).unwrap(), r);
        let s = MMonSubscribe {
            what: vec![
                Subscription {
                    what: "config".into(),
                    start: 0,
                    flags: 0,
                },
                Subscription {
                    what: "monmap".into(),
                    start: 0,
                    flags: 0,
                },
            ],
            hostname: "vm".into(),
        };
        assert_eq!(s.to_message().front.len(), 48);
        assert_eq!(MMonSubscribe::decode(&s.to_message()).unwrap(), s);
    }
}
