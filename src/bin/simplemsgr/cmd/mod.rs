//! Subcommands.

pub mod ceph;
