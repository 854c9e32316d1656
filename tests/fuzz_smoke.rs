//! A stable, deterministic mutation fuzzer over `simplemsgr::fuzzing`.
//!
//! Seeds: every test vector in `tests/vectors/` (plus banners and a concatenated stream);
//! mutations: bit flips, byte sets, insertions, deletions, truncations, duplications and
//! splices with another seed, chosen by a SplitMix64 generator with a fixed seed. Each
//! entry point runs for at most `MAX_INPUTS` inputs and at most `MAX_TIME`.
#![allow(clippy::disallowed_methods)] // tests may read the clock

use std::time::{Duration, Instant};

use simplemsgr::crypto::SeededRng;
use simplemsgr::fuzzing;
use simplemsgr::wire::from_hex;

const MAX_INPUTS: usize = 100_000;
const MAX_TIME: Duration = Duration::from_secs(8);
/// The bound of the later targets (keyring, mon messages, SECRET, dump, capture), so the
/// file's wall time stays close to what it was with the first nine.
const NEW_MAX_TIME: Duration = Duration::from_secs(4);

fn seeds(forms: &[&str]) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("tests/vectors")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| forms.iter().any(|f| n.ends_with(&format!(".{f}.hex"))))
        .collect();
    names.sort();
    let mut out: Vec<Vec<u8>> = names
        .iter()
        .map(|n| {
            from_hex(&std::fs::read_to_string(dir.join(n)).expect("read vector"))
                .expect("hex vector")
        })
        .collect();
    assert!(!out.is_empty(), "no seeds for {forms:?}");
    let stream: Vec<u8> = out.concat();
    out.push(stream);
    out.push(b"ceph 1 0\n".to_vec());
    out.push(b"ceph ffffffffffffffff ffffffffffffffff\n".to_vec());
    out.push(b"ceph v027".to_vec());
    out
}

struct Mutator {
    rng: SeededRng,
}

impl Mutator {
    fn below(&mut self, n: usize) -> usize {
        (self.rng.next_u64() % n.max(1) as u64) as usize
    }

    fn mutate(&mut self, seeds: &[Vec<u8>]) -> Vec<u8> {
        let mut v = seeds[self.below(seeds.len())].clone();
        for _ in 0..1 + self.below(4) {
            let len = v.len();
            match self.below(7) {
                0 if len > 0 => {
                    let bit = self.below(len * 8);
                    v[bit / 8] ^= 1 << (bit % 8);
                }
                1 if len > 0 => {
                    let i = self.below(len);
                    v[i] = [0, 1, 0x7f, 0x80, 0xff, 0x20, 0x10][self.below(7)];
                }
                2 => {
                    let i = self.below(len + 1);
                    let n = 1 + self.below(8);
                    let bytes: Vec<u8> = (0..n).map(|_| self.rng.next_u64() as u8).collect();
                    v.splice(i..i, bytes);
                }
                3 if len > 0 => {
                    let i = self.below(len);
                    let n = 1 + self.below((len - i).min(16));
                    v.drain(i..i + n);
                }
                4 => v.truncate(self.below(len + 1)),
                5 if len > 0 => {
                    let i = self.below(len);
                    let n = 1 + self.below((len - i).min(64));
                    let dup = v[i..i + n].to_vec();
                    v.splice(i..i, dup);
                }
                _ => {
                    let other = &seeds[self.below(seeds.len())];
                    let cut = self.below(len + 1);
                    let from = self.below(other.len() + 1);
                    v.truncate(cut);
                    v.extend_from_slice(&other[from..]);
                }
            }
        }
        v
    }
}

fn run(name: &str, forms: &[&str], f: fn(&[u8])) {
    let seeds = seeds(forms);
    for s in &seeds {
        f(s);
    }
    let mut m = Mutator {
        rng: SeededRng::new(0x5eed),
    };
    let start = Instant::now();
    let mut count = seeds.len();
    while count < MAX_INPUTS && start.elapsed() < MAX_TIME {
        let input = m.mutate(&seeds);
        f(&input);
        count += 1;
    }
    println!("{name}: {count} inputs in {:.2?}", start.elapsed());
    assert!(count >= seeds.len());
}

#[test]
fn banner() {
    run("fuzz_banner", &["plain"], fuzzing::fuzz_banner);
}

#[test]
fn frame() {
    run("fuzz_frame", &["plain"], fuzzing::fuzz_frame);
}

#[test]
fn deframer_plain() {
    run(
        "fuzz_deframer_plain",
        &["plain"],
        fuzzing::fuzz_deframer_plain,
    );
}

#[test]
fn deframer_signed() {
    run(
        "fuzz_deframer_signed",
        &["signed", "plain"],
        fuzzing::fuzz_deframer_signed,
    );
}

#[test]
fn deframer_encrypted() {
    run(
        "fuzz_deframer_encrypted",
        &["encrypted", "plain"],
        fuzzing::fuzz_deframer_encrypted,
    );
}

/// Seeds for the machine fuzzers: real byte streams of a plain and a secure session
/// (the first byte of a machine input selects the split size and the config).
fn machine_seeds(client_side: bool) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for (secure, flag) in [(false, 0x00u8), (true, 0x80u8)] {
        let (c2s, s2c) = fuzzing::sample_streams(secure);
        let stream = if client_side { s2c } else { c2s };
        assert!(stream.len() > 50, "the sample session produced bytes");
        for split in [0u8, 6, 31] {
            let mut v = vec![flag | split];
            v.extend_from_slice(&stream);
            out.push(v);
        }
    }
    out
}

fn run_seeded(name: &str, seeds: Vec<Vec<u8>>, f: fn(&[u8])) {
    run_seeded_for(name, seeds, f, MAX_TIME);
}

fn run_seeded_for(name: &str, seeds: Vec<Vec<u8>>, f: fn(&[u8]), max_time: Duration) {
    assert!(!seeds.is_empty(), "no seeds for {name}");
    for s in &seeds {
        f(s);
    }
    let mut m = Mutator {
        rng: SeededRng::new(0x5eed),
    };
    let start = Instant::now();
    let mut count = seeds.len();
    while count < MAX_INPUTS && start.elapsed() < max_time {
        let input = m.mutate(&seeds);
        f(&input);
        count += 1;
    }
    println!("{name}: {count} inputs in {:.2?}", start.elapsed());
}

#[test]
fn proto_server() {
    run_seeded(
        "fuzz_proto_server",
        machine_seeds(false),
        fuzzing::fuzz_proto_server,
    );
}

#[test]
fn proto_client() {
    run_seeded(
        "fuzz_proto_client",
        machine_seeds(true),
        fuzzing::fuzz_proto_client,
    );
}

/// Seeds for v1: both directions of every connection of the captured `ceph -s`, whole
/// (for the machines) and from the first message on (for the frame parser), plus a few
/// hand-made frames.
fn v1_seeds() -> Vec<Vec<u8>> {
    use simplemsgr::capture::{read_packets, reassemble, tcp_segments};
    const MON_PORT: u16 = 6789;
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ceph-v1-status.pcap");
    let file = std::fs::read(&path).expect("the v1 capture fixture");
    let segs = tcp_segments(&read_packets(&file).expect("capture")).expect("segments");
    let mut ports: Vec<u16> = segs
        .iter()
        .filter(|s| s.dst.port() == MON_PORT)
        .map(|s| s.src.port())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    let mut out = vec![
        vec![0x07],
        vec![0x08, 1, 0, 0, 0, 0, 0, 0, 0],
        vec![0x0e, 1, 0, 0, 0, 2, 0, 0, 0],
    ];
    for port in ports {
        for stream in [
            reassemble(&segs, port, MON_PORT),
            reassemble(&segs, MON_PORT, port),
        ] {
            let stream = stream.expect("stream");
            // From the first MSG tag on (after banner, addresses and connect exchange).
            if let Some(i) = stream.iter().position(|b| *b == 0x07) {
                out.push(stream[i..].to_vec());
            }
            out.push(stream);
        }
    }
    assert!(out.len() > 5, "the capture yields streams");
    out
}

#[test]
fn v1_frame() {
    run_seeded("fuzz_v1_frame", v1_seeds(), fuzzing::fuzz_v1_frame);
}

#[test]
fn v1_machines() {
    run_seeded("fuzz_v1_machines", v1_seeds(), fuzzing::fuzz_v1_machines);
}

// ----- keyring, monitor messages, SECRET, dump, capture ------------------------------

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Seeds for the keyring: the real `ceph-authtool` keyring, a two-entry keyring written by
/// `to_text`, bare keys, and a few hand-made forms (comments, unquoted caps, `caps_mon`).
fn keyring_seeds() -> Vec<Vec<u8>> {
    use simplemsgr::auth::keyring::encode_key;
    use simplemsgr::auth::{Keyring, Secret};
    use simplemsgr::wire::types::Timespec;
    let real = fixture("client.admin.keyring");
    let parsed = Keyring::parse(std::str::from_utf8(&real).expect("UTF-8")).expect("fixture");
    assert_eq!(parsed.len(), 2);
    let mut two = Keyring::new();
    let t = Timespec {
        sec: 1_700_000_000,
        nsec: 123_456_789,
    };
    two.insert("client.admin", Secret::new(&[0x11; 16]), t);
    two.insert("osd.0", Secret::new(&[0xee; 16]), Timespec::default());
    let key = encode_key(&Secret::new(&[0x5a; 16]), t);
    let mut out = vec![
        real,
        two.to_text().into_bytes(),
        key.clone().into_bytes(),
        format!("# comment\n; other\n[mon.]\nkey = {key} # trailing\ncaps_mon = allow *\n")
            .into_bytes(),
        format!("[a]\n\tkey = \"{key}\"\n\tcaps  osd = \"allow rw\" ; c\n[b]\nkey={key}\n")
            .into_bytes(),
    ];
    out.extend(parsed.names().map(|n| {
        let e = parsed.get(n).expect("entry");
        encode_key(&e.key, e.created).into_bytes()
    }));
    out
}

#[test]
fn keyring() {
    run_seeded_for(
        "fuzz_keyring",
        keyring_seeds(),
        fuzzing::fuzz_keyring,
        NEW_MAX_TIME,
    );
}

/// Seeds for the monitor messages: one real encoding of each type (selector byte first,
/// in `fuzz_mon_messages`' order), plus the empty front of each.
fn mon_seeds() -> Vec<Vec<u8>> {
    use simplemsgr::mon::*;
    let fsid: Fsid = "a7f64266-0894-4f1e-a635-d0aeaca0e993"
        .parse()
        .expect("fsid");
    let paxos = PaxosHeader::default();
    let cmd = vec![r#"{"prefix":"status","format":"json"}"#.to_string()];
    // An ENCODE_START v9/c6 monmap prefix: version, compat, length, fsid, epoch.
    let mut monmap = vec![9u8, 6];
    monmap.extend_from_slice(&20u32.to_le_bytes());
    monmap.extend_from_slice(&fsid.0);
    monmap.extend_from_slice(&3u32.to_le_bytes());
    let fronts: Vec<Vec<u8>> = vec![
        front(&MAuth::auth_none(AuthName {
            ty: 8,
            id: "admin".into(),
        })),
        front(&MAuthReply {
            protocol: auth_protocol::NONE,
            result: 0,
            global_id: 4242,
            result_bl: vec![1, 2, 3],
            result_msg: "ok".into(),
        }),
        front(&MMonGetMap),
        front(&MMonMap { monmap }),
        front(&MMonCommand {
            paxos,
            fsid,
            cmd: cmd.clone(),
        }),
        front(&MMonCommandAck {
            paxos,
            r: -2,
            rs: "no such thing".into(),
            cmd,
            output: Vec::new(),
        }),
        front(&MMonGetVersion {
            handle: 7,
            what: "osdmap".into(),
        }),
        front(&MMonGetVersionReply {
            handle: 7,
            version: 31,
            oldest_version: 1,
        }),
        front(&MMonSubscribe {
            what: vec![
                Subscription {
                    what: "monmap".into(),
                    start: 0,
                    flags: 0,
                },
                Subscription {
                    what: "osdmap".into(),
                    start: 12,
                    flags: 1,
                },
            ],
            hostname: "host-a".into(),
        }),
    ];
    let mut out = Vec::new();
    for (pick, f) in fronts.into_iter().enumerate() {
        let mut v = vec![pick as u8];
        v.extend_from_slice(&f);
        out.push(v);
        out.push(vec![pick as u8]);
    }
    let real = captured_mon_fronts();
    assert!(real.len() >= 4, "the capture holds monitor messages");
    out.extend(real);
    out
}

/// The monitor messages of the captured `ceph -s` (real Ceph encodings), selector first.
fn captured_mon_fronts() -> Vec<Vec<u8>> {
    use simplemsgr::mon::msg_type as t;
    use simplemsgr::wire::v1::{Frame, Limits};
    const ORDER: [u16; 9] = [
        t::AUTH,
        t::AUTH_REPLY,
        t::MON_GET_MAP,
        t::MON_MAP,
        t::MON_COMMAND,
        t::MON_COMMAND_ACK,
        t::MON_GET_VERSION,
        t::MON_GET_VERSION_REPLY,
        t::MON_SUBSCRIBE,
    ];
    let limits = Limits::default();
    let mut out = Vec::new();
    for stream in v1_seeds().into_iter().filter(|s| s.first() == Some(&0x07)) {
        for with_sig in [false, true] {
            let mut rest = &stream[..];
            let mut found = Vec::new();
            // Each frame takes at least one byte: bounded by the stream length.
            while let Ok(Some((frame, used))) = Frame::parse(rest, with_sig, &limits) {
                if let Frame::Msg(m) = frame {
                    if let Some(pick) = ORDER.iter().position(|&ty| ty == m.header.ty) {
                        let mut v = vec![pick as u8];
                        v.extend_from_slice(&m.front);
                        found.push(v);
                    }
                }
                rest = &rest[used..];
            }
            if rest.is_empty() {
                out.extend(found);
                break;
            }
        }
    }
    out
}

fn front<T: simplemsgr::mon::MonMessage>(m: &T) -> Vec<u8> {
    let mut out = Vec::new();
    m.encode_front(&mut out);
    out
}

#[test]
fn mon_messages() {
    run_seeded_for(
        "fuzz_mon_messages",
        mon_seeds(),
        fuzzing::fuzz_mon_messages,
        NEW_MAX_TIME,
    );
}

/// Seeds for SECRET: a genuine exchange's payloads, as the server's input (length-prefixed
/// client payloads, one and both) and as the client's (the server reply, whole and cut).
fn secret_seeds() -> Vec<Vec<u8>> {
    let [c1, s1, c2] = fuzzing::sample_secret_payloads();
    let lp = |ps: &[&[u8]]| -> Vec<u8> {
        let mut v = Vec::new();
        for p in ps {
            v.push(u8::try_from(p.len()).expect("short payload"));
            v.extend_from_slice(p);
        }
        v
    };
    vec![
        lp(&[&c1]),
        lp(&[&c1, &c2]),
        lp(&[&c1, &c2, &c2]),
        lp(&[&c1, &s1]),
        s1.clone(),
        s1[..33].to_vec(),
        c1,
        c2,
    ]
}

#[test]
fn auth_secret() {
    run_seeded_for(
        "fuzz_auth_secret",
        secret_seeds(),
        fuzzing::fuzz_auth_secret,
        NEW_MAX_TIME,
    );
}

/// Seeds for `dump`: what `tests/dump.rs` decodes (plain and secure msgr2 sessions, each
/// direction, whole, cut and with garbage after; both directions of the v1 capture), and
/// the plain test vectors after a banner.
fn dump_seeds() -> Vec<Vec<u8>> {
    use simplemsgr::wire::msgr2::Banner;
    let mut out = Vec::new();
    for secure in [false, true] {
        let (c2s, s2c) = fuzzing::sample_streams(secure);
        for s in [c2s, s2c] {
            out.push(s[..s.len() - 5].to_vec());
            let mut g = s.clone();
            g.extend_from_slice(b"\xee\xee\xee garbage");
            out.push(g);
            out.push(s);
        }
    }
    let mut banner = Vec::new();
    Banner {
        supported: 1,
        required: 0,
    }
    .encode(&mut banner);
    let vectors = seeds(&["plain"]);
    let stream = vectors
        .iter()
        .rev()
        .nth(3)
        .expect("the concatenated stream");
    let mut v = banner.clone();
    v.extend_from_slice(stream);
    out.push(v);
    // v1: the capture's streams (banner on), not the from-the-first-MSG copies.
    out.extend(
        v1_seeds()
            .into_iter()
            .filter(|s| s.starts_with(b"ceph v027")),
    );
    out.push(b"ceph ".to_vec());
    out
}

#[test]
fn dump() {
    run_seeded_for("fuzz_dump", dump_seeds(), fuzzing::fuzz_dump, NEW_MAX_TIME);
}

/// Seeds for the capture reader: the real v1 capture and a truncated copy, and (small, so
/// most inputs are quick) its first packets as pcapng and as pcap with the Ethernet header
/// replaced by each other link layer `parse_tcp` reads (raw IP, Linux cooked, BSD loopback).
fn capture_seeds() -> Vec<Vec<u8>> {
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
    use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;
    use pcap_file::pcapng::PcapNgWriter;
    use pcap_file::DataLink;
    use simplemsgr::capture::read_packets;
    const FEW: usize = 12;
    let pcap = fixture("ceph-v1-status.pcap");
    let packets = read_packets(&pcap).expect("the v1 capture fixture");
    assert!(packets.len() > FEW && packets.iter().all(|p| p.link == DataLink::ETHERNET));
    let few = &packets[..FEW];
    let mut w = PcapNgWriter::new(Vec::new()).expect("pcapng header");
    w.write_pcapng_block(InterfaceDescriptionBlock {
        linktype: DataLink::ETHERNET,
        snaplen: 0,
        options: vec![],
    })
    .expect("interface block");
    for p in few {
        w.write_pcapng_block(EnhancedPacketBlock {
            interface_id: 0,
            timestamp: p.timestamp,
            original_len: p.data.len() as u32,
            data: p.data.as_slice().into(),
            options: vec![],
        })
        .expect("packet block");
    }
    let pcapng = w.into_inner();
    assert_eq!(read_packets(&pcapng).expect("pcapng").len(), FEW);
    let mut out = vec![pcap[..pcap.len() * 2 / 3].to_vec(), pcapng];
    // (link, header before the IPv4 packet)
    let mut sll = vec![0u8; 14];
    sll.extend_from_slice(&0x0800u16.to_be_bytes());
    let links: [(DataLink, Vec<u8>); 4] = [
        (DataLink::ETHERNET, Vec::new()),
        (DataLink::RAW, Vec::new()),
        (DataLink::LINUX_SLL, sll),
        (DataLink::NULL, 2u32.to_le_bytes().to_vec()),
    ];
    for (link, head) in links {
        let header = PcapHeader {
            datalink: link,
            ..PcapHeader::default()
        };
        let mut w = PcapWriter::with_header(Vec::new(), header).expect("pcap header");
        for p in few {
            let mut data = p.data.clone();
            if link != DataLink::ETHERNET {
                data.splice(..14, head.iter().copied());
            }
            w.write_packet(&PcapPacket::new(p.timestamp, data.len() as u32, &data))
                .expect("packet");
        }
        out.push(w.into_writer());
    }
    out.push(pcap);
    out
}

#[test]
fn capture() {
    run_seeded_for(
        "fuzz_capture",
        capture_seeds(),
        fuzzing::fuzz_capture,
        NEW_MAX_TIME,
    );
}
