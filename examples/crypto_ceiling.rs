//! The crypto ceiling for issue 4's numbers: ring's raw HMAC-SHA256 and AES-128-GCM
//! throughput on one core, for the buffer sizes BENCHMARKS.md uses (64 B, 4 KiB, 64 KiB,
//! 1 MiB). A signed or secure messenger cannot beat these rates, so its measured
//! throughput divided by the matching ceiling shows how much the rest of the stack costs.
//!
//! ```text
//! cargo run --release --example crypto_ceiling            # ~0.5 s per measurement (6 s)
//! cargo run --release --example crypto_ceiling -- 1.0     # seconds per measurement
//! ```
//!
//! Each measurement repeats one operation on one buffer for the given time (bounded also
//! by an iteration cap), on the calling thread only. GCM nonces are distinct per call, as
//! the record layer's are.
#![allow(clippy::disallowed_methods)] // a benchmark: the clock is the point

use std::hint::black_box;
use std::time::{Duration, Instant};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM};
use ring::hmac;

const SIZES: [usize; 4] = [64, 4 << 10, 64 << 10, 1 << 20];
/// Upper bound on iterations of one measurement, whatever the time budget.
const MAX_ITERS: u64 = 50_000_000;

/// Run `op` repeatedly for about `budget`; returns (iterations, elapsed).
fn measure(budget: Duration, mut op: impl FnMut(u64)) -> (u64, Duration) {
    // Warm up (caches, CPU frequency) for a tenth of the budget, unmeasured.
    let warm = Instant::now();
    let mut i = 0u64;
    while warm.elapsed() < budget / 10 && i < MAX_ITERS {
        op(i);
        i += 1;
    }
    let start = Instant::now();
    let mut n = 0u64;
    // Check the clock every few iterations for small buffers, every one for large.
    while n < MAX_ITERS {
        op(i + n);
        n += 1;
        if (n % 64 == 0 || n < 64) && start.elapsed() >= budget {
            break;
        }
    }
    (n, start.elapsed())
}

fn nonce(i: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&i.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn report(what: &str, size: usize, iters: u64, elapsed: Duration) {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let bytes = iters as f64 * size as f64;
    println!(
        "{what:<24} {size:>9} {:>12.1} {:>14.0}",
        bytes / secs / 1e6,
        iters as f64 / secs
    );
}

fn main() {
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .filter(|s: &f64| *s > 0.0 && *s <= 5.0)
        .unwrap_or(0.5);
    let budget = Duration::from_secs_f64(secs);

    let mac_key = hmac::Key::new(hmac::HMAC_SHA256, &[0x5a; 32]);
    let aead = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &[0x3c; 16]).expect("16-byte key"));

    println!("ring raw crypto, one thread, {secs} s per measurement");
    println!(
        "{:<24} {:>9} {:>12} {:>14}",
        "operation", "bytes", "MB/s", "ops/s"
    );
    for size in SIZES {
        let buf = vec![0xa5u8; size];
        let (n, t) = measure(budget, |_| {
            black_box(hmac::sign(&mac_key, black_box(&buf)));
        });
        report("HMAC-SHA256 sign", size, n, t);

        let mut data = vec![0xa5u8; size];
        let (n, t) = measure(budget, |i| {
            let tag = aead
                .seal_in_place_separate_tag(nonce(i), Aad::from(&[0u8; 20]), &mut data)
                .expect("seal");
            black_box(tag.as_ref()[0]);
        });
        report("AES-128-GCM seal", size, n, t);

        // Open needs a valid (ciphertext, tag) for each nonce: seal one per call first
        // would double the work, so open the same sealed buffer under its own nonce.
        let plain = vec![0xa5u8; size];
        let mut sealed = plain.clone();
        let tag = aead
            .seal_in_place_separate_tag(nonce(0), Aad::from(&[0u8; 20]), &mut sealed)
            .expect("seal");
        sealed.extend_from_slice(tag.as_ref());
        let mut work = sealed.clone();
        let (n, t) = measure(budget, |_| {
            work.copy_from_slice(&sealed);
            let out = aead
                .open_in_place(nonce(0), Aad::from(&[0u8; 20]), &mut work)
                .expect("open");
            black_box(out.len());
        });
        report("AES-128-GCM open(+copy)", size, n, t);
    }
}
