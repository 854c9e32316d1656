//! Randomness as an injected dependency (confounders, padding, nonces, cookies).
//!
//! `ring::rand::SecureRandom` is sealed, so the protocol core takes its own [`Random`]
//! trait: [`SystemRng`] in production, [`SeededRng`] in tests and test vectors.

use ring::rand::{SecureRandom, SystemRandom};

/// A source of random bytes.
pub trait Random: Send {
    /// Fill `dest` with random bytes.
    fn fill(&mut self, dest: &mut [u8]);
}

/// Bytes fetched from the OS per refill.
const SYSTEM_RNG_BUFFER: usize = 4096;

/// The operating system's CSPRNG (via `ring`), buffered: it is asked for 4 KiB at a time,
/// so the 16–31 random bytes of each protected frame do not cost a system call.
pub struct SystemRng {
    rng: SystemRandom,
    buf: Box<[u8; SYSTEM_RNG_BUFFER]>,
    /// Bytes of `buf` already handed out.
    used: usize,
}

impl SystemRng {
    /// A new buffered adapter (no bytes are fetched until first use).
    pub fn new() -> Self {
        SystemRng {
            rng: SystemRandom::new(),
            buf: Box::new([0; SYSTEM_RNG_BUFFER]),
            used: SYSTEM_RNG_BUFFER,
        }
    }

    fn os_fill(&self, dest: &mut [u8]) {
        // The OS generator failing is unrecoverable and not caused by a peer: no secure
        // confounder or nonce can be produced, so stopping is the only safe choice.
        self.rng
            .fill(dest)
            .expect("operating system random number generator failed");
    }
}

impl Default for SystemRng {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for SystemRng {
    fn drop(&mut self) {
        // Unused random bytes are not secret keys, but do not leave them behind either.
        self.buf.fill(0);
        std::hint::black_box(&self.buf);
    }
}

impl Random for SystemRng {
    fn fill(&mut self, dest: &mut [u8]) {
        if dest.len() > SYSTEM_RNG_BUFFER / 2 {
            self.os_fill(dest);
            return;
        }
        if SYSTEM_RNG_BUFFER - self.used < dest.len() {
            let mut fresh = [0u8; SYSTEM_RNG_BUFFER];
            self.os_fill(&mut fresh);
            *self.buf = fresh;
            self.used = 0;
        }
        let end = self.used + dest.len();
        dest.copy_from_slice(&self.buf[self.used..end]);
        // Each byte is handed out once.
        self.buf[self.used..end].fill(0);
        self.used = end;
    }
}

/// A deterministic generator for tests and test vectors. **NOT secure**: anyone who knows
/// the seed knows every byte.
///
/// The output is the stream of little-endian 64-bit words of SplitMix64 started at `seed`
/// (state += 0x9e3779b97f4a7c15; z = state; z = (z ^ z>>30) * 0xbf58476d1ce4e5b9;
/// z = (z ^ z>>27) * 0x94d049bb133111eb; out = z ^ z>>31), independent of how `fill`
/// calls split it.
#[derive(Debug, Clone)]
pub struct SeededRng {
    state: u64,
    word: [u8; 8],
    /// Bytes of `word` already handed out.
    used: usize,
}

impl SeededRng {
    /// A generator whose output depends only on `seed`.
    pub fn new(seed: u64) -> Self {
        SeededRng {
            state: seed,
            word: [0; 8],
            used: 8,
        }
    }

    /// The next SplitMix64 output.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl Random for SeededRng {
    fn fill(&mut self, dest: &mut [u8]) {
        for b in dest {
            if self.used == 8 {
                self.word = self.next_u64().to_le_bytes();
                self.used = 0;
            }
            *b = self.word[self.used];
            self.used += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_is_a_stream_independent_of_call_sizes() {
        let mut a = SeededRng::new(1);
        let mut whole = [0u8; 40];
        a.fill(&mut whole);
        let mut b = SeededRng::new(1);
        let mut parts = [0u8; 40];
        let (x, rest) = parts.split_at_mut(3);
        b.fill(x);
        let (y, z) = rest.split_at_mut(17);
        b.fill(y);
        b.fill(z);
        assert_eq!(whole, parts);
        // SplitMix64 reference value for seed 0 (first output 0xe220a8397b1dcdaf).
        assert_eq!(SeededRng::new(0).next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_ne!(whole, [0u8; 40]);
    }

    #[test]
    fn system_rng_produces_distinct_bytes_across_refills() {
        let mut r = SystemRng::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..600 {
            let mut c = [0u8; 16];
            r.fill(&mut c);
            assert!(seen.insert(c), "a 128-bit confounder repeated");
        }
        let mut big = vec![0u8; 10_000];
        r.fill(&mut big);
        assert!(big.iter().any(|&b| b != 0));
    }
}
