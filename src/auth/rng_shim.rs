//! The randomness seam is defined in `crate::crypto`; re-exported here for the auth exchanges.

pub use crate::crypto::Random;
