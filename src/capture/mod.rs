//! Reading packet captures (pcap and pcapng) and reassembling one direction of a TCP
//! stream, so recorded Ceph traffic can be decoded and checked byte for byte.
//!
//! The file formats are read with the `pcap-file` crate (the format is detected from
//! the magic number, not the file name). Link, IP and TCP headers are parsed here by
//! hand: Ethernet (with 802.1Q tags), Linux cooked v1/v2, BSD loopback and raw IP;
//! IPv4 and IPv6; TCP. Reassembly places payloads by sequence number, so
//! retransmitted and out-of-order segments are handled; a hole is an error.
//!
//! Pure and in-memory: the caller reads the file.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use pcap_file::pcap::PcapParser;
use pcap_file::pcapng::{Block, PcapNgParser};
use pcap_file::{DataLink, PcapError};

/// Largest reassembled stream we build (a guard against absurd sequence gaps).
pub const MAX_STREAM_LEN: u64 = 256 * 1024 * 1024;

/// Why a capture could not be read or reassembled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureError {
    /// The pcap / pcapng container is malformed.
    Format(String),
    /// A link type we do not parse.
    UnsupportedLink(u32),
    /// A packet's headers are cut short or inconsistent.
    BadPacket {
        /// Index of the packet in the file.
        index: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// The stream has a hole: bytes at `offset` were never captured.
    Gap {
        /// Stream offset of the first missing byte.
        offset: u64,
    },
    /// Two captured copies of the same stream bytes differ.
    Conflict {
        /// Stream offset of the overlap.
        offset: u64,
    },
    /// The stream would exceed [`MAX_STREAM_LEN`].
    TooLong,
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaptureError::Format(e) => write!(f, "malformed capture file: {e}"),
            CaptureError::UnsupportedLink(l) => write!(f, "unsupported link type {l}"),
            CaptureError::BadPacket { index, what } => write!(f, "packet {index}: {what}"),
            CaptureError::Gap { offset } => write!(f, "TCP stream has a hole at offset {offset}"),
            CaptureError::Conflict { offset } => {
                write!(
                    f,
                    "retransmitted TCP data at offset {offset} differs from the original"
                )
            }
            CaptureError::TooLong => write!(f, "TCP stream longer than {MAX_STREAM_LEN} bytes"),
        }
    }
}

impl std::error::Error for CaptureError {}

/// One captured frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Capture time since the Unix epoch.
    pub timestamp: Duration,
    /// Link type of `data`.
    pub link: DataLink,
    /// The frame, from the link-layer header on.
    pub data: Vec<u8>,
}

/// Read every packet of a pcap or pcapng file held in memory (parsed in place: no
/// buffer besides the packets returned).
pub fn read_packets(file: &[u8]) -> Result<Vec<Packet>, CaptureError> {
    const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];
    let fmt_err = |e: PcapError| {
        CaptureError::Format(match e {
            // The file ends inside a header or a packet.
            PcapError::IncompleteBuffer => "unexpected end of file".to_string(),
            e => e.to_string(),
        })
    };
    let mut out = Vec::new();
    if file.starts_with(&PCAPNG_MAGIC) {
        let (mut rest, mut parser) = PcapNgParser::new(file).map_err(fmt_err)?;
        // Interface link types of the current section, by interface id.
        let mut links: Vec<DataLink> = Vec::new();
        while !rest.is_empty() {
            let (more, block) = parser.next_block(rest).map_err(fmt_err)?;
            rest = more;
            match block {
                Block::SectionHeader(_) => links.clear(),
                Block::InterfaceDescription(i) => links.push(i.linktype),
                Block::EnhancedPacket(p) => {
                    let link = *links.get(p.interface_id as usize).ok_or_else(|| {
                        CaptureError::Format("packet for an undeclared interface".into())
                    })?;
                    out.push(Packet {
                        timestamp: p.timestamp,
                        link,
                        data: p.data.into_owned(),
                    });
                }
                Block::SimplePacket(p) => {
                    let link = *links.first().ok_or_else(|| {
                        CaptureError::Format("simple packet without an interface".into())
                    })?;
                    out.push(Packet {
                        timestamp: Duration::ZERO,
                        link,
                        data: p.data.into_owned(),
                    });
                }
                _ => {}
            }
        }
    } else {
        let (mut rest, parser) = PcapParser::new(file).map_err(fmt_err)?;
        let link = parser.header().datalink;
        while !rest.is_empty() {
            let (more, p) = parser.next_packet(rest).map_err(fmt_err)?;
            rest = more;
            out.push(Packet {
                timestamp: p.timestamp,
                link,
                data: p.data.into_owned(),
            });
        }
    }
    Ok(out)
}

/// TCP flag bits.
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
}

/// One TCP segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSegment {
    /// Index of the packet in the capture.
    pub index: usize,
    /// Capture time.
    pub timestamp: Duration,
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// Sequence number.
    pub seq: u32,
    /// Flags ([`tcp_flags`]).
    pub flags: u8,
    /// Payload.
    pub payload: Vec<u8>,
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const IPPROTO_TCP: u8 = 6;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
        *b.get(at + 2)?,
        *b.get(at + 3)?,
    ]))
}

/// Parse a frame down to TCP. `Ok(None)`: not TCP over IP (ARP, UDP, ...).
pub fn parse_tcp(index: usize, p: &Packet) -> Result<Option<TcpSegment>, CaptureError> {
    let bad = |what| CaptureError::BadPacket { index, what };
    let d = &p.data[..];
    // Link layer: find the network protocol and where the IP header starts.
    let (ethertype, ip_start) = match p.link {
        DataLink::ETHERNET => {
            let mut et = be16(d, 12).ok_or(bad("short Ethernet header"))?;
            let mut at = 14;
            while et == ETHERTYPE_VLAN {
                et = be16(d, at + 2).ok_or(bad("short 802.1Q tag"))?;
                at += 4;
            }
            (et, at)
        }
        DataLink::LINUX_SLL => (be16(d, 14).ok_or(bad("short Linux cooked header"))?, 16),
        DataLink::LINUX_SLL2 => (be16(d, 0).ok_or(bad("short Linux cooked v2 header"))?, 20),
        DataLink::NULL | DataLink::LOOP => {
            let fam = d.get(..4).ok_or(bad("short loopback header"))?;
            // The family is in the capturing host's byte order (NULL) or network order (LOOP).
            let v = u32::from_le_bytes([fam[0], fam[1], fam[2], fam[3]])
                .min(u32::from_be_bytes([fam[0], fam[1], fam[2], fam[3]]));
            let et = match v {
                2 => ETHERTYPE_IPV4,
                24 | 28 | 30 => ETHERTYPE_IPV6,
                _ => return Ok(None),
            };
            (et, 4)
        }
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => match d.first().map(|b| b >> 4) {
            Some(4) => (ETHERTYPE_IPV4, 0),
            Some(6) => (ETHERTYPE_IPV6, 0),
            _ => return Ok(None),
        },
        other => return Err(CaptureError::UnsupportedLink(u32::from(other))),
    };
    let ip = d
        .get(ip_start..)
        .ok_or(bad("frame ends before the IP header"))?;
    // Network layer: addresses, and the TCP bytes trimmed to the IP length (no link padding).
    let (src_ip, dst_ip, tcp) = match ethertype {
        ETHERTYPE_IPV4 => {
            let ihl = usize::from(ip.first().ok_or(bad("empty IPv4 header"))? & 0x0f) * 4;
            let total = usize::from(be16(ip, 2).ok_or(bad("short IPv4 header"))?);
            if ihl < 20 || total < ihl || ip.len() < total {
                return Err(bad("inconsistent IPv4 lengths (truncated capture?)"));
            }
            let frag = be16(ip, 6).ok_or(bad("short IPv4 header"))?;
            if frag & 0x3fff != 0 {
                return Err(bad("fragmented IPv4 packet (not supported)"));
            }
            if ip[9] != IPPROTO_TCP {
                return Ok(None);
            }
            let src = IpAddr::V4(Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]));
            let dst = IpAddr::V4(Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]));
            (src, dst, &ip[ihl..total])
        }
        ETHERTYPE_IPV6 => {
            if ip.len() < 40 {
                return Err(bad("short IPv6 header"));
            }
            let payload_len = usize::from(be16(ip, 4).ok_or(bad("short IPv6 header"))?);
            if ip[6] != IPPROTO_TCP {
                return Ok(None);
            }
            if ip.len() < 40 + payload_len {
                return Err(bad("IPv6 payload cut short (truncated capture?)"));
            }
            let mut s = [0u8; 16];
            s.copy_from_slice(&ip[8..24]);
            let mut t = [0u8; 16];
            t.copy_from_slice(&ip[24..40]);
            (
                IpAddr::V6(Ipv6Addr::from(s)),
                IpAddr::V6(Ipv6Addr::from(t)),
                &ip[40..40 + payload_len],
            )
        }
        _ => return Ok(None),
    };
    let sport = be16(tcp, 0).ok_or(bad("short TCP header"))?;
    let dport = be16(tcp, 2).ok_or(bad("short TCP header"))?;
    let seq = be32(tcp, 4).ok_or(bad("short TCP header"))?;
    let off = usize::from(tcp.get(12).ok_or(bad("short TCP header"))? >> 4) * 4;
    let flags = *tcp.get(13).ok_or(bad("short TCP header"))?;
    if off < 20 || tcp.len() < off {
        return Err(bad("bad TCP data offset"));
    }
    Ok(Some(TcpSegment {
        index,
        timestamp: p.timestamp,
        src: SocketAddr::new(src_ip, sport),
        dst: SocketAddr::new(dst_ip, dport),
        seq,
        flags,
        payload: tcp[off..].to_vec(),
    }))
}

/// Every TCP segment of the capture, in capture order.
pub fn tcp_segments(packets: &[Packet]) -> Result<Vec<TcpSegment>, CaptureError> {
    let mut out = Vec::new();
    for (i, p) in packets.iter().enumerate() {
        if let Some(s) = parse_tcp(i, p)? {
            out.push(s);
        }
    }
    Ok(out)
}

/// Reassemble the bytes sent from port `src_port` to port `dst_port`, in stream order.
///
/// Payloads are placed by sequence number relative to the SYN (or to the lowest
/// sequence seen if the capture started mid-stream). Retransmitted copies must match
/// what was placed before ([`CaptureError::Conflict`]); missing bytes are a
/// [`CaptureError::Gap`].
pub fn reassemble(
    segments: &[TcpSegment],
    src_port: u16,
    dst_port: u16,
) -> Result<Vec<u8>, CaptureError> {
    let seg: Vec<&TcpSegment> = segments
        .iter()
        .filter(|s| s.src.port() == src_port && s.dst.port() == dst_port)
        .collect();
    let Some(first) = seg.first() else {
        return Ok(Vec::new());
    };
    // Offsets relative to the first segment, signed so wrap-around and earlier
    // retransmissions sort correctly.
    let rel = |s: &TcpSegment| i64::from(s.seq.wrapping_sub(first.seq) as i32);
    let base = match seg.iter().find(|s| s.flags & tcp_flags::SYN != 0) {
        Some(syn) => rel(syn) + 1,
        None => seg
            .iter()
            .filter(|s| !s.payload.is_empty())
            .map(|s| rel(s))
            .min()
            .unwrap_or(0),
    };
    let mut pieces: Vec<(u64, &[u8])> = Vec::new();
    for s in &seg {
        if s.payload.is_empty() {
            continue;
        }
        let off = rel(s) - base;
        let off = u64::try_from(off).map_err(|_| CaptureError::BadPacket {
            index: s.index,
            what: "data before the SYN",
        })?;
        if off + s.payload.len() as u64 > MAX_STREAM_LEN {
            return Err(CaptureError::TooLong);
        }
        pieces.push((off, &s.payload));
    }
    pieces.sort_by_key(|(off, _)| *off);
    let mut out: Vec<u8> = Vec::new();
    for (off, data) in pieces {
        let have = out.len() as u64;
        if off > have {
            return Err(CaptureError::Gap { offset: have });
        }
        let start = (have - off) as usize;
        let overlap = start.min(data.len());
        if out[off as usize..off as usize + overlap] != data[..overlap] {
            return Err(CaptureError::Conflict { offset: off });
        }
        out.extend_from_slice(&data[overlap..]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet + IPv4 + TCP frame.
    fn frame(sport: u16, dport: u16, seq: u32, flags: u8, payload: &[u8]) -> Packet {
        let mut d = vec![0u8; 12];
        d.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let total = 20 + 20 + payload.len();
        let mut ip = vec![
            0x45,
            0,
            0,
            0,
            0,
            0,
            0x40,
            0,
            64,
            IPPROTO_TCP,
            0,
            0,
            127,
            0,
            0,
            1,
            127,
            0,
            0,
            1,
        ];
        ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        d.extend_from_slice(&ip);
        let mut tcp = vec![0u8; 20];
        tcp[0..2].copy_from_slice(&sport.to_be_bytes());
        tcp[2..4].copy_from_slice(&dport.to_be_bytes());
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = flags;
        d.extend_from_slice(&tcp);
        d.extend_from_slice(payload);
        d.extend_from_slice(&[0; 6]); // Ethernet padding, excluded by the IP length.
        Packet {
            timestamp: Duration::ZERO,
            link: DataLink::ETHERNET,
            data: d,
        }
    }

    #[test]
    fn a_capture_cut_short_is_a_clear_error() {
        let file = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/ceph-v1-status.pcap"
        ))
        .expect("fixture");
        let all = read_packets(&file).expect("the whole capture");
        assert!(all.len() > 10);
        // Only the section header block (pcapng): no packets, no error.
        assert_eq!(file[..4], [0x0a, 0x0d, 0x0d, 0x0a]);
        let shb = u32::from_le_bytes([file[4], file[5], file[6], file[7]]) as usize;
        assert_eq!(read_packets(&file[..shb]).expect("header only"), vec![]);
        // A classic pcap file header alone (little-endian, microseconds, Ethernet).
        let mut pcap = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        pcap.extend_from_slice(&[0; 8]);
        pcap.extend_from_slice(&65_535u32.to_le_bytes());
        pcap.extend_from_slice(&1u32.to_le_bytes());
        assert_eq!(read_packets(&pcap).expect("pcap header only"), vec![]);
        let e = read_packets(&pcap[..20]).expect_err("pcap header cut short");
        assert_eq!(
            e.to_string(),
            "malformed capture file: unexpected end of file",
            "{e}"
        );
        // Cut inside a packet: the packets before it, then a clear error.
        let e = read_packets(&file[..file.len() - 3]).expect_err("cut short");
        assert_eq!(
            e.to_string(),
            "malformed capture file: unexpected end of file",
            "{e}"
        );
        // Not a capture at all.
        assert!(read_packets(b"not a capture file").is_err());
    }

    #[test]
    fn reassembles_out_of_order_and_retransmitted_segments() {
        let isn = u32::MAX - 2; // wraps inside the stream
        let pkts = vec![
            frame(1, 2, isn, tcp_flags::SYN, b""),
            frame(1, 2, isn.wrapping_add(1 + 5), 0, b"world"),
            frame(1, 2, isn.wrapping_add(1), 0, b"hello"),
            frame(1, 2, isn.wrapping_add(1), 0, b"hello"), // retransmission
            frame(2, 1, 77, 0, b"other direction"),
            frame(1, 2, isn.wrapping_add(1 + 3), 0, b"lowor"), // overlapping, consistent
        ];
        let segs = tcp_segments(&pkts).unwrap();
        assert_eq!(segs.len(), 6);
        assert_eq!(segs[1].payload, b"world");
        assert_eq!(reassemble(&segs, 1, 2).unwrap(), b"helloworld");
        assert_eq!(reassemble(&segs, 2, 1).unwrap(), b"other direction");
    }

    #[test]
    fn gaps_and_conflicts_are_errors() {
        let pkts = vec![
            frame(1, 2, 10, tcp_flags::SYN, b""),
            frame(1, 2, 11, 0, b"ab"),
            frame(1, 2, 15, 0, b"cd"),
        ];
        let segs = tcp_segments(&pkts).unwrap();
        assert_eq!(
            reassemble(&segs, 1, 2),
            Err(CaptureError::Gap { offset: 2 })
        );
        let pkts = vec![
            frame(1, 2, 10, tcp_flags::SYN, b""),
            frame(1, 2, 11, 0, b"ab"),
            frame(1, 2, 11, 0, b"xb"),
        ];
        let segs = tcp_segments(&pkts).unwrap();
        assert_eq!(
            reassemble(&segs, 1, 2),
            Err(CaptureError::Conflict { offset: 0 })
        );
    }

    #[test]
    fn linux_cooked_and_truncated_frames() {
        let eth = frame(1, 2, 10, 0, b"x");
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        sll.extend_from_slice(&eth.data[14..]);
        let p = Packet {
            timestamp: Duration::ZERO,
            link: DataLink::LINUX_SLL,
            data: sll,
        };
        assert_eq!(parse_tcp(0, &p).unwrap().unwrap().payload, b"x");
        let cut = Packet {
            data: eth.data[..30].to_vec(),
            ..eth
        };
        assert!(matches!(
            parse_tcp(3, &cut),
            Err(CaptureError::BadPacket { index: 3, .. })
        ));
    }
}
