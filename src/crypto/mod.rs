//! Frame protection: plain, signed (HMAC-SHA256) or encrypted (AES-128-GCM)
//! (docs/PROTOCOL.md §3, §4.5).
//!
//! One record-layer object per direction ([`TxProtector`], [`RxProtector`]) owns the
//! keys and the implicit frame counter that goes into every MAC and nonce. Keys are
//! derived by [`derive_keys`]; randomness is injected through [`Random`].
//! Nothing here reads a clock, spawns a thread or touches a socket.
//!
//! ```
//! use simplemsgr::crypto::{derive_keys, Protection, RxProtector, SeededRng, TxProtector};
//! use simplemsgr::wire::msgr2::{Ack, Deframer, Frame, FrameError, Limits};
//! use simplemsgr::wire::transmit::Transmit;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let keys = derive_keys(&[7u8; 32], &[0x11; 32], &[0x22; 32]);
//! let mut tx = TxProtector::new(Protection::Signed, &keys.c2s, 1 << 32);
//! let mut rx = RxProtector::new(Protection::Signed, &keys.c2s, 1 << 32);
//! let mut out = Transmit::new();
//! tx.seal(&Frame::Ack(Ack { seq: 1 }), &mut SeededRng::new(1), &mut out)?;
//! let wire = out.to_vec();
//! assert_eq!(wire.len(), 16 + 4 + 9 + 32 + 3); // confounder, length, ACK, HMAC, padding
//!
//! let mut d = Deframer::new(Limits::default());
//! d.push(&wire[..30]);
//! assert!(d.next_frame(&mut rx)?.is_none()); // incomplete is not an error
//! d.push(&wire[30..]);
//! assert_eq!(d.next_frame(&mut rx)?.map(|f| f.frame), Some(Frame::Ack(Ack { seq: 1 })));
//!
//! d.push(&wire); // the same frame again: a replay
//! assert_eq!(d.next_frame(&mut rx), Err(FrameError::BadSignature));
//! # Ok(())
//! # }
//! ```

mod keylog;
mod keys;
mod protect;
mod rng;

use std::fmt;

pub use keylog::{
    key_log_lines, log_keys, KeyLog, KeyLogEntry, KeyLogError, KeyLogFile, KEY_LOG_LABEL,
};
pub use keys::{derive_keys, DirectionKeys, SessionKeys};
pub use protect::{RxProtector, TxProtector, DEFAULT_MAX_FRAMES};
pub use rng::{Random, SeededRng, SystemRng};

use crate::wire::msgr2::{FLAG_ENCRYPTED, FLAG_SIGNED};

/// How the frames of one direction are protected after that side's AUTH_DONE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protection {
    /// `u8 tag | payload` (§3.1).
    Plain,
    /// HMAC-SHA256 signed (§3.2).
    Signed,
    /// AES-128-GCM encrypted (§3.3).
    Encrypted,
}

impl Protection {
    /// From AUTH_DONE flags: 0, [`FLAG_ENCRYPTED`] or [`FLAG_SIGNED`]; `None` for anything else (§4.1).
    pub fn from_flags(flags: u64) -> Option<Protection> {
        match flags {
            0 => Some(Protection::Plain),
            FLAG_ENCRYPTED => Some(Protection::Encrypted),
            FLAG_SIGNED => Some(Protection::Signed),
            _ => None,
        }
    }

    /// The AUTH_DONE flags value.
    pub fn flags(self) -> u64 {
        match self {
            Protection::Plain => 0,
            Protection::Encrypted => FLAG_ENCRYPTED,
            Protection::Signed => FLAG_SIGNED,
        }
    }

    /// Bytes of the signature field: 32 (HMAC), 16 (GCM tag) or 0 (plain).
    pub fn sig_size(self) -> usize {
        match self {
            Protection::Plain => 0,
            Protection::Signed => 32,
            Protection::Encrypted => 16,
        }
    }

    /// Padding after the signature so that `4 + length + sig_size + padding` is a multiple of 16.
    pub fn padding(self, length: u64) -> usize {
        ((16 - (4 + length + self.sig_size() as u64) % 16) % 16) as usize
    }
}

/// Why a frame could not be protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CryptoError {
    /// The frame counter would reach `max_frames`: send CLOSE(REKEY) earlier and reconnect (§3.4).
    Exhausted,
    /// The frame is longer than a le32 length can say.
    TooLong {
        /// The frame's length (tag + payload).
        len: u64,
    },
}

impl fmt::Display for CryptoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CryptoError::Exhausted => {
                f.write_str("frame counter exhausted for this key; rekey by reconnecting")
            }
            CryptoError::TooLong { len } => {
                write!(f, "frame of {len} bytes is too long to protect")
            }
        }
    }
}

impl std::error::Error for CryptoError {}
