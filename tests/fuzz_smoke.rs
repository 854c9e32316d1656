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
