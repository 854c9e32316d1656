//! The blocking shell: the only code that touches sockets, threads and the clock.
#![allow(clippy::disallowed_methods)]

pub mod monc;
