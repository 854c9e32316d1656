//! Encodings shared by both protocols: entity types and names, entity addresses
//! (Ceph's legacy 136-byte form and its newer tagged form), address vectors and
//! timespecs (docs/PROTOCOL.md §2.2).

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::fmt;
use std::str::FromStr;

use super::{Codec, DecodeError, Reader, WriteLe};

/// A Ceph entity type (`CEPH_ENTITY_TYPE_*`). A newtype so unknown values round-trip.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityType(pub u8);

impl EntityType {
    /// A monitor.
    pub const MON: EntityType = EntityType(0x01);
    /// A metadata server.
    pub const MDS: EntityType = EntityType(0x02);
    /// An object storage daemon.
    pub const OSD: EntityType = EntityType(0x04);
    /// A client.
    pub const CLIENT: EntityType = EntityType(0x08);
    /// A manager.
    pub const MGR: EntityType = EntityType(0x10);
    /// The auth service.
    pub const AUTH: EntityType = EntityType(0x20);
    /// Any type (used in policies and wildcards).
    pub const ANY: EntityType = EntityType(0xff);

    /// The lowercase name Ceph prints (`osd`), or `None` for an unknown value.
    pub fn name(self) -> Option<&'static str> {
        Some(match self {
            EntityType::MON => "mon",
            EntityType::MDS => "mds",
            EntityType::OSD => "osd",
            EntityType::CLIENT => "client",
            EntityType::MGR => "mgr",
            EntityType::AUTH => "auth",
            EntityType::ANY => "any",
            _ => return None,
        })
    }

    /// Parse a type name such as `client` or `osd`.
    pub fn from_name(s: &str) -> Option<EntityType> {
        Some(match s {
            "mon" => EntityType::MON,
            "mds" => EntityType::MDS,
            "osd" => EntityType::OSD,
            "client" => EntityType::CLIENT,
            "mgr" => EntityType::MGR,
            "auth" => EntityType::AUTH,
            _ => return None,
        })
    }
}

impl fmt::Debug for EntityType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "type(0x{:02x})", self.0),
        }
    }
}

impl fmt::Display for EntityType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// `ceph_entity_name`: a type and a number, printed `client.4123`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityName {
    /// The entity type.
    pub ty: EntityType,
    /// The number; `u64::MAX` (printed `-1`) means "not yet assigned".
    pub num: u64,
}

impl EntityName {
    /// A name from its parts.
    pub const fn new(ty: EntityType, num: u64) -> Self {
        EntityName { ty, num }
    }
}

impl fmt::Debug for EntityName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.num == u64::MAX {
            write!(f, "{}.-1", self.ty)
        } else {
            write!(f, "{}.{}", self.ty, self.num)
        }
    }
}

impl fmt::Display for EntityName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Why a string is not an entity name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseNameError(pub String);

impl fmt::Display for ParseNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid entity name {:?}: expected TYPE.NUMBER such as client.4123 or osd.3",
            self.0
        )
    }
}

impl std::error::Error for ParseNameError {}

impl FromStr for EntityName {
    type Err = ParseNameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseNameError(s.to_string());
        let (ty, num) = s.split_once('.').ok_or_else(err)?;
        let ty = EntityType::from_name(ty).ok_or_else(err)?;
        let num = if num == "-1" {
            u64::MAX
        } else {
            num.parse().map_err(|_| err())?
        };
        Ok(EntityName { ty, num })
    }
}

impl Codec for EntityName {
    const NAME: &'static str = "entity_name";

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(self.ty.0);
        out.put_le64(self.num);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let ty = EntityType(r.u8("entity_name.type")?);
        let num = r.le64("entity_name.num")?;
        Ok(EntityName { ty, num })
    }
}

/// `entity_addr_t::type`: which protocol an address speaks.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddrType(pub u32);

impl AddrType {
    /// No address.
    pub const NONE: AddrType = AddrType(0);
    /// The legacy v1 protocol (`v1:`).
    pub const LEGACY: AddrType = AddrType(1);
    /// msgr2 (`v2:`).
    pub const MSGR2: AddrType = AddrType(2);
    /// Either protocol.
    pub const ANY: AddrType = AddrType(3);
}

impl fmt::Debug for AddrType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AddrType::NONE => f.write_str("none"),
            AddrType::LEGACY => f.write_str("v1"),
            AddrType::MSGR2 => f.write_str("v2"),
            AddrType::ANY => f.write_str("any"),
            AddrType(t) => write!(f, "addrtype({t})"),
        }
    }
}

/// `entity_addr_t`: protocol, instance nonce and an IP socket address.
///
/// The nonce tells apart two instances (processes) at one IP and port; a restarted
/// daemon comes back with a new nonce.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EntityAddr {
    /// Which protocol this address speaks.
    pub kind: AddrType,
    /// The instance nonce.
    pub nonce: u32,
    /// The IP and port, or `None` for a blank address.
    pub addr: Option<SocketAddr>,
}

/// Size of `struct ceph_entity_addr` on the v1 wire: le32 type, le32 nonce, 128-byte sockaddr_storage.
pub const LEGACY_ADDR_LEN: usize = 136;
const SOCKADDR_STORAGE_LEN: usize = 128;
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const SOCKADDR_IN_LEN: u32 = 16;
const SOCKADDR_IN6_LEN: u32 = 28;
/// Longest sockaddr we accept inside the tagged address encoding.
const MAX_SOCKADDR_LEN: u32 = 128;
/// Most addresses in one address vector (docs/PROTOCOL.md §2.3).
pub const MAX_ADDRS: u32 = 16;

impl EntityAddr {
    /// A blank address of the given kind (no IP, port 0).
    pub const fn blank(kind: AddrType, nonce: u32) -> Self {
        EntityAddr {
            kind,
            nonce,
            addr: None,
        }
    }

    /// An address of the given kind for a socket address.
    pub const fn new(kind: AddrType, addr: SocketAddr, nonce: u32) -> Self {
        EntityAddr {
            kind,
            nonce,
            addr: Some(addr),
        }
    }

    /// True if there is no IP (an unbound client).
    pub fn is_blank(&self) -> bool {
        match self.addr {
            None => true,
            Some(a) => a.ip().is_unspecified(),
        }
    }

    /// The legacy 136-byte `ceph_entity_addr` (v1 banner exchange): le32 type (always
    /// written as 0), le32 nonce, then a sockaddr_storage whose family and port are big-endian.
    pub fn encode_legacy(&self, out: &mut Vec<u8>) {
        out.put_le32(0);
        out.put_le32(self.nonce);
        let start = out.len();
        match self.addr {
            None => {}
            Some(SocketAddr::V4(a)) => {
                out.extend_from_slice(&AF_INET.to_be_bytes());
                out.extend_from_slice(&a.port().to_be_bytes());
                out.extend_from_slice(&a.ip().octets());
            }
            Some(SocketAddr::V6(a)) => {
                out.extend_from_slice(&AF_INET6.to_be_bytes());
                out.extend_from_slice(&a.port().to_be_bytes());
                out.put_le32(a.flowinfo().to_be());
                out.extend_from_slice(&a.ip().octets());
                out.put_le32(a.scope_id());
            }
        }
        out.resize(start + SOCKADDR_STORAGE_LEN, 0);
    }

    /// Read the legacy 136-byte form. Its type field is ignored (Ceph writes 0); the
    /// result has kind [`AddrType::LEGACY`].
    pub fn read_legacy(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let _ty = r.le32("legacy_addr.type")?;
        let nonce = r.le32("legacy_addr.nonce")?;
        let ss = r.take(SOCKADDR_STORAGE_LEN, "legacy_addr.sockaddr")?;
        let family = u16::from_be_bytes([ss[0], ss[1]]);
        let port = u16::from_be_bytes([ss[2], ss[3]]);
        let addr = match family {
            0 => None,
            AF_INET => {
                let ip = Ipv4Addr::new(ss[4], ss[5], ss[6], ss[7]);
                Some(SocketAddr::V4(SocketAddrV4::new(ip, port)))
            }
            AF_INET6 => {
                let flow = u32::from_be_bytes([ss[4], ss[5], ss[6], ss[7]]);
                let mut ip = [0u8; 16];
                ip.copy_from_slice(&ss[8..24]);
                let scope = u32::from_le_bytes([ss[24], ss[25], ss[26], ss[27]]);
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(ip),
                    port,
                    flow,
                    scope,
                )))
            }
            _ => {
                return Err(DecodeError::Invalid {
                    what: "legacy_addr.family",
                })
            }
        };
        Ok(EntityAddr {
            kind: AddrType::LEGACY,
            nonce,
            addr,
        })
    }

    fn sockaddr_bytes(&self) -> Vec<u8> {
        // The tagged form stores a raw Linux sockaddr: family in host (little-endian)
        // order, port and address in network order.
        let mut sa = Vec::with_capacity(SOCKADDR_IN6_LEN as usize);
        match self.addr {
            None => {}
            Some(SocketAddr::V4(a)) => {
                sa.put_le16(AF_INET);
                sa.extend_from_slice(&a.port().to_be_bytes());
                sa.extend_from_slice(&a.ip().octets());
                sa.resize(SOCKADDR_IN_LEN as usize, 0);
            }
            Some(SocketAddr::V6(a)) => {
                sa.put_le16(AF_INET6);
                sa.extend_from_slice(&a.port().to_be_bytes());
                sa.extend_from_slice(&a.flowinfo().to_be_bytes());
                sa.extend_from_slice(&a.ip().octets());
                sa.put_le32(a.scope_id());
            }
        }
        sa
    }

    fn parse_sockaddr(sa: &[u8]) -> Result<Option<SocketAddr>, DecodeError> {
        if sa.is_empty() {
            return Ok(None);
        }
        if sa.len() < 4 {
            return Err(DecodeError::Invalid {
                what: "entity_addr.sockaddr length",
            });
        }
        let family = u16::from_le_bytes([sa[0], sa[1]]);
        let port = u16::from_be_bytes([sa[2], sa[3]]);
        match family {
            AF_INET if sa.len() >= 8 => {
                let ip = Ipv4Addr::new(sa[4], sa[5], sa[6], sa[7]);
                Ok(Some(SocketAddr::new(IpAddr::V4(ip), port)))
            }
            AF_INET6 if sa.len() >= 28 => {
                let flow = u32::from_be_bytes([sa[4], sa[5], sa[6], sa[7]]);
                let mut ip = [0u8; 16];
                ip.copy_from_slice(&sa[8..24]);
                let scope = u32::from_le_bytes([sa[24], sa[25], sa[26], sa[27]]);
                Ok(Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(ip),
                    port,
                    flow,
                    scope,
                ))))
            }
            _ => Err(DecodeError::Invalid {
                what: "entity_addr.sockaddr family",
            }),
        }
    }
}

impl Codec for EntityAddr {
    const NAME: &'static str = "entity_addr";

    /// The tagged form: u8 marker 1, u8 version 1, u8 compat 1, le32 length of the rest,
    /// le32 type, le32 nonce, le32 sockaddr length, the sockaddr.
    fn encode(&self, out: &mut Vec<u8>) {
        let sa = self.sockaddr_bytes();
        out.put_u8(1);
        out.put_u8(1);
        out.put_u8(1);
        out.put_le32(12 + sa.len() as u32);
        out.put_le32(self.kind.0);
        out.put_le32(self.nonce);
        out.put_le32(sa.len() as u32);
        out.extend_from_slice(&sa);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        if r.u8("entity_addr.marker")? != 1 {
            return Err(DecodeError::Invalid {
                what: "entity_addr.marker (expected 1)",
            });
        }
        let _version = r.u8("entity_addr.version")?;
        let compat = r.u8("entity_addr.compat")?;
        if compat > 1 {
            return Err(DecodeError::Invalid {
                what: "entity_addr.compat (newer than 1)",
            });
        }
        let body = r.len_prefixed(12 + MAX_SOCKADDR_LEN, "entity_addr.length")?;
        let mut b = Reader::new(body);
        let kind = AddrType(b.le32("entity_addr.type")?);
        let nonce = b.le32("entity_addr.nonce")?;
        let sa = b.len_prefixed(MAX_SOCKADDR_LEN, "entity_addr.sockaddr")?;
        // Later versions may append fields: the length prefix lets us skip them.
        let addr = EntityAddr::parse_sockaddr(sa)?;
        Ok(EntityAddr { kind, nonce, addr })
    }
}

impl fmt::Debug for EntityAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.addr {
            Some(a) => write!(f, "{:?}:{}/{}", self.kind, a, self.nonce),
            None => write!(f, "{:?}:-/{}", self.kind, self.nonce),
        }
    }
}

impl fmt::Display for EntityAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Why a string is not an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseAddrError(pub String);

impl fmt::Display for ParseAddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid address {:?}: expected [v1:|v2:]IP:PORT[/NONCE], e.g. v2:127.0.0.1:3300",
            self.0
        )
    }
}

impl std::error::Error for ParseAddrError {}

impl FromStr for EntityAddr {
    type Err = ParseAddrError;

    /// `v1:127.0.0.1:6789`, `v2:[::1]:3300/42` or a bare `IP:PORT` (msgr2).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseAddrError(s.to_string());
        let (kind, rest) = if let Some(r) = s.strip_prefix("v1:") {
            (AddrType::LEGACY, r)
        } else if let Some(r) = s.strip_prefix("v2:") {
            (AddrType::MSGR2, r)
        } else if let Some(r) = s.strip_prefix("any:") {
            (AddrType::ANY, r)
        } else {
            (AddrType::MSGR2, s)
        };
        let (sock, nonce) = match rest.rsplit_once('/') {
            Some((a, n)) => (a, n.parse::<u32>().map_err(|_| err())?),
            None => (rest, 0),
        };
        let addr: SocketAddr = sock.parse().map_err(|_| err())?;
        Ok(EntityAddr::new(kind, addr, nonce))
    }
}

/// `entity_addrvec_t`: the addresses one entity listens on.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct AddrVec(pub Vec<EntityAddr>);

impl AddrVec {
    /// The first address of the given kind, or the first address at all.
    pub fn pick(&self, kind: AddrType) -> Option<&EntityAddr> {
        self.0
            .iter()
            .find(|a| a.kind == kind)
            .or_else(|| self.0.first())
    }
}

impl fmt::Debug for AddrVec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

impl Codec for AddrVec {
    const NAME: &'static str = "entity_addrvec";

    /// u8 marker 2, le32 count, then each address in the tagged form.
    fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(2);
        out.put_le32(self.0.len() as u32);
        for a in &self.0 {
            a.encode(out);
        }
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        if r.u8("entity_addrvec.marker")? != 2 {
            return Err(DecodeError::Invalid {
                what: "entity_addrvec.marker (expected 2)",
            });
        }
        let n = r.count(MAX_ADDRS, "entity_addrvec.count")?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(EntityAddr::read(r)?);
        }
        Ok(AddrVec(v))
    }
}

/// `ceph_timespec`: le32 seconds, le32 nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timespec {
    /// Seconds.
    pub sec: u32,
    /// Nanoseconds, below 1,000,000,000.
    pub nsec: u32,
}

impl Timespec {
    /// From a duration since the sender's epoch (wrapping after 2^32 seconds).
    pub fn from_duration(d: std::time::Duration) -> Self {
        Timespec {
            sec: d.as_secs() as u32,
            nsec: d.subsec_nanos(),
        }
    }

    /// As a duration since the sender's epoch.
    pub fn to_duration(self) -> std::time::Duration {
        std::time::Duration::new(self.sec.into(), self.nsec)
    }
}

impl Codec for Timespec {
    const NAME: &'static str = "timespec";

    fn encode(&self, out: &mut Vec<u8>) {
        out.put_le32(self.sec);
        out.put_le32(self.nsec);
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let sec = r.le32("timespec.sec")?;
        let nsec = r.le32("timespec.nsec")?;
        Ok(Timespec { sec, nsec })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::from_hex;

    #[test]
    fn legacy_addr_matches_the_v1_facts_example() {
        // ceph-v1-facts §5.2: nonce 0x12345678, 127.0.0.1 port 0.
        let a = EntityAddr::new(
            AddrType::LEGACY,
            "127.0.0.1:0".parse().unwrap(),
            0x1234_5678,
        );
        let mut out = Vec::new();
        a.encode_legacy(&mut out);
        assert_eq!(out.len(), LEGACY_ADDR_LEN);
        assert_eq!(
            &out[..16],
            &from_hex("00000000 78563412 0002 0000 7f000001").unwrap()[..]
        );
        assert!(out[16..].iter().all(|&b| b == 0));
        let back = EntityAddr::read_legacy(&mut Reader::new(&out)).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn tagged_addr_and_addrvec_round_trip() {
        let v = AddrVec(vec![
            "v2:127.0.0.1:3300/7".parse().unwrap(),
            "v1:[::1]:6789".parse().unwrap(),
        ]);
        let bytes = v.to_vec();
        assert_eq!(bytes[0], 2);
        assert_eq!(AddrVec::decode_exact(&bytes).unwrap(), v);
        // IPv4 tagged form: 3 + 4 + 12 + 16 bytes.
        let one = v.0[0].to_vec();
        assert_eq!(one.len(), 35);
        assert_eq!(&one[19..23], &[2, 0, 0x0c, 0xe4]);
    }

    #[test]
    fn addrvec_count_is_limited() {
        let mut bytes = vec![2];
        bytes.put_le32(MAX_ADDRS + 1);
        assert!(matches!(
            AddrVec::decode_exact(&bytes),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn names_parse_and_print() {
        let n: EntityName = "client.4123".parse().unwrap();
        assert_eq!(n, EntityName::new(EntityType::CLIENT, 4123));
        assert_eq!(n.to_string(), "client.4123");
        assert_eq!("client.-1".parse::<EntityName>().unwrap().num, u64::MAX);
        assert!("bogus.1".parse::<EntityName>().is_err());
        assert!("osd".parse::<EntityName>().is_err());
    }

    #[test]
    fn addresses_parse() {
        let a: EntityAddr = "v1:127.0.0.1:6789".parse().unwrap();
        assert_eq!(a.kind, AddrType::LEGACY);
        assert!("v9:1.2.3.4:5".parse::<EntityAddr>().is_err());
        assert!("127.0.0.1".parse::<EntityAddr>().is_err());
    }
}
