//! Deterministic tests of the msgr2 state machine: two endpoints, in-memory links,
//! a virtual clock, seeded randomness, and a bounded driver so a livelock fails
//! instead of hanging.
//!
//! The virtual clock starts from one real `Instant` (a base value; nothing reads
//! the clock after that).
#![allow(clippy::disallowed_methods)]

mod chunked;
mod pair;
mod scenarios;
