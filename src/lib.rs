//! # simplemsgr
//!
//! A thread-per-connection, blocking implementation of the Ceph messenger protocols:
//! msgr2 as proposed in 2016 (specified byte for byte in `docs/PROTOCOL.md`) and the
//! legacy v1 protocol that real Ceph daemons speak.
//!
//! ## Architecture
//!
//! ```text
//!   wire      bytes <-> typed frames (msgr2, v1), no state          ┐
//!   crypto    frame protection: plain | signed | encrypted          │ sans-IO core:
//!   auth      auth exchanges as bytes-in/bytes-out objects          │ no sockets, threads
//!   proto     per-connection state machines, sessions, policies     ┘ or clock
//!   runtime   the blocking shell: acceptor, reader/writer threads, session table, dispatch
//!   bin       the `simplemsgr` command (serve, ping, bench, dump, ceph)
//! ```
//!
//! Dependencies point downwards only. Only `runtime` (and the binary, tests and
//! examples) may touch sockets, threads or the clock; `clippy.toml` enforces it.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod capture;
pub mod crypto;
pub mod dump;
#[doc(hidden)]
pub mod fuzzing;
pub mod mon;
pub mod proto;
pub mod runtime;
pub mod wire;
