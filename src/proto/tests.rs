//! Deterministic tests of the msgr2 state machine: two endpoints, in-memory links,
//! a virtual clock, seeded randomness, and a bounded driver so a livelock fails
//! instead of hanging.

mod pair;
mod scenarios;
