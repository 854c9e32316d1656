//! Deterministic tests of the msgr2 state machine: two endpoints, in-memory links,
//! a virtual clock, seeded randomness, and a bounded driver so a livelock fails
//! instead of hanging.
//!
//! The virtual clock starts from one real `Instant` (a base value; nothing reads
//! the clock after that): [`epoch`], shared by every test of the core.

mod chunked;
mod pair;
mod scenarios;

use std::time::Instant;

/// The one real instant the proto tests take: the origin their virtual clocks count
/// from (the machines never read a clock; time is an input).
#[allow(clippy::disallowed_methods)]
pub(crate) fn epoch() -> Instant {
    Instant::now()
}
