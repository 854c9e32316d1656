//! TEMPORARY local copy of the randomness seam.
//!
//! The crypto engineer defines `crate::crypto::Random` with exactly this signature. When `src/crypto`
//! lands, the lead replaces this file's contents with `pub use crate::crypto::Random;` and nothing else
//! in `src/auth` has to change.

/// A source of random bytes, injected so that every exchange can be replayed with fixed nonces
/// (docs/PROTOCOL.md §4.4, STYLE habit 7).
pub trait Random: Send {
    /// Fill `dest` completely with random bytes.
    fn fill(&mut self, dest: &mut [u8]);
}
