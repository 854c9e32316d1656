//! The blocking shell: sockets, threads and the clock live here and nowhere else.
//!
//! The protocol core (`wire`, `proto`, …) is sans-IO; this module is the only code
//! allowed to call the methods that `clippy.toml` forbids elsewhere, which is why the
//! inner `allow` below covers every submodule.
//!
//! Building blocks, each usable on its own:
//!
//! | module | what it gives the messenger |
//! |---|---|
//! | [`config`] | [`Config`] and [`FaultConfig`]: every knob, with documented defaults and Ceph option names |
//! | [`throttle`] | [`Throttle`]: blocking message/byte budget (policy and dispatch throttles) |
//! | [`dispatch`] | [`Dispatcher`]: the user callback trait, plus channel and closure adapters |
//! | [`transport`] | socket setup, listeners, connects with a timeout, and read/write halves that wake each other |
//! | [`fault`] | [`FaultInjector`]: seeded, reproducible socket failures and delays |
//! | [`limits`] | [`ResourceLimits`]: how many connections this process can afford, from `/proc` |
//! | [`admission`] | [`ConnectionLimits`]: the caps in force, and clean refusal beyond them |
//! | [`stats`] | [`Stats`]: lock-free counters and printable snapshots |
//!
//! The messenger itself (`messenger.rs`, `conn/`, `sessions.rs`) plugs into these.
#![allow(clippy::disallowed_methods)]

pub mod admission;
pub mod config;
pub mod conn;
pub mod detect;
pub mod dispatch;
pub mod fault;
pub mod keylog;
pub mod limits;
pub mod messenger;
pub mod monc;
pub mod stats;
pub mod throttle;
pub mod transport;

use std::fmt;
use std::io;

pub use admission::{ConnectionLimits, Refusal};
pub use config::{Config, ConfigError, FaultConfig};
pub use dispatch::{ChannelDispatcher, Dispatcher, Event, FnDispatcher};
pub use fault::{FaultInjector, SeededRng};
pub use limits::ResourceLimits;
pub use stats::{Stats, StatsSnapshot};
pub use throttle::{Throttle, ThrottleGuard};

pub use conn::ConnectionRef;
pub use messenger::{Messenger, MessengerBuilder};

/// Errors reported by the runtime. `#[non_exhaustive]`: later versions may add
/// variants without a breaking change.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A socket operation failed.
    Io(io::Error),
    /// The configuration is invalid.
    Config(ConfigError),
    /// The peer or a local limit refused the connection.
    Refused {
        /// Why, in a few words.
        reason: String,
    },
    /// An operation did not finish in time.
    Timeout {
        /// What timed out.
        what: &'static str,
    },
    /// The messenger is shutting down.
    Shutdown,
    /// A message was refused before it was queued: one of its sections is longer than
    /// this messenger's limit for it (`ms_max_front_len`, `ms_max_middle_len`,
    /// `ms_max_data_len`), which a peer with the same limits would not accept.
    TooLarge {
        /// `front`, `middle` or `data`.
        section: &'static str,
        /// Its length.
        len: u64,
        /// The limit.
        limit: u32,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Config(e) => write!(f, "configuration error: {e}"),
            Error::Refused { reason } => write!(f, "connection refused: {reason}"),
            Error::Timeout { what } => write!(f, "{what} timed out"),
            Error::Shutdown => f.write_str("the messenger is shutting down"),
            Error::TooLarge {
                section,
                len,
                limit,
            } => write!(
                f,
                "message refused: its {section} section is {len} bytes, above the limit of \
                 {limit} (ms_max_{section}_len)"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            Error::Config(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io(e)
    }
}

impl From<crate::proto::msgr2::SendError> for Error {
    fn from(e: crate::proto::msgr2::SendError) -> Self {
        use crate::proto::msgr2::SendError;
        match e {
            SendError::Closed => Error::Refused {
                reason: "connection is closed".into(),
            },
            SendError::TooLarge {
                section,
                len,
                limit,
            } => Error::TooLarge {
                section,
                len,
                limit,
            },
        }
    }
}

impl From<ConfigError> for Error {
    fn from(e: ConfigError) -> Self {
        Error::Config(e)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Io(e) => e,
            Error::Config(e) => io::Error::new(io::ErrorKind::InvalidInput, e),
            Error::Refused { reason } => io::Error::new(io::ErrorKind::ConnectionRefused, reason),
            Error::Timeout { what } => {
                io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"))
            }
            Error::Shutdown => io::Error::new(
                io::ErrorKind::NotConnected,
                "the messenger is shutting down",
            ),
            e @ Error::TooLarge { .. } => {
                io::Error::new(io::ErrorKind::InvalidInput, e.to_string())
            }
        }
    }
}
