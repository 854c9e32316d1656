//! Per-connection protocol state machines (sans-IO).

pub mod v1;
