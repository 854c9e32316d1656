//! What a protocol state machine tells the shell, and why connections end.

use std::fmt;

use crate::auth::AuthError;
use crate::wire::message::Message;
use crate::wire::msgr2::{BannerError, CloseReason, FrameError, Tag};
use crate::wire::types::{AddrVec, EntityAddr, EntityType};

use super::accept::Attempt;

/// Identifies one transport (TCP connection) of a session; assigned by the shell.
pub type LinkId = u64;

/// Who started the end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Initiator {
    /// This side's protocol logic (a violation we detected, a timeout).
    Local,
    /// The peer (it sent CLOSE, misbehaved, or hung up).
    Peer,
    /// The application (mark_down, shutdown).
    User,
}

/// Why a connection or session failed. `#[non_exhaustive]`: new causes may be added.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The peer's banner was not acceptable.
    Banner(BannerError),
    /// A frame could not be read (malformed, too long, bad signature).
    Frame(FrameError),
    /// A well-formed frame that is not allowed now.
    UnexpectedFrame {
        /// Its tag.
        tag: Tag,
        /// What we were waiting for.
        expected: &'static str,
    },
    /// The peer broke a rule of docs/PROTOCOL.md.
    PeerMisbehaved(&'static str),
    /// Authentication failed on this side.
    Auth(AuthError),
    /// The peer closed the connection with a reason.
    Closed {
        /// The peer's reason code.
        reason: CloseReason,
        /// The peer's message.
        message: String,
    },
    /// The server allows none of our auth methods.
    NoCommonAuthMethod {
        /// What the server allows.
        offered: Vec<u32>,
    },
    /// The signed/secure mode requirement of one side was not met.
    ModeRefused(String),
    /// The peer lacks Ceph features we require (or we lack ones it requires).
    MissingFeatures {
        /// The missing feature bits.
        missing: u64,
    },
    /// The peer speaks another protocol version.
    BadProtocolVersion {
        /// Ours.
        ours: u32,
        /// Theirs.
        theirs: u32,
    },
    /// The session policies of the two sides cannot work together.
    PolicyMismatch(&'static str),
    /// Nothing arrived for the idle timeout.
    IdleTimeout,
    /// The handshake did not finish in time.
    HandshakeTimeout,
    /// The frame counter of the protection layer reached its limit.
    KeysExhausted,
    /// The transport failed or the peer hung up.
    Transport(String),
    /// The application closed the connection.
    MarkedDown,
    /// A chunked message broke a rule of the structured-data extension (§7.4).
    Chunk(crate::proto::msgr2::ChunkError),
    /// A legacy v1 peer sent something invalid or refused us (the text says what).
    Legacy(String),
}

impl Error {
    /// A permanent error will not go away by reconnecting: the shell reports it
    /// (`handle_refused`) and does not retry.
    pub fn is_permanent(&self) -> bool {
        match self {
            Error::Auth(_)
            | Error::NoCommonAuthMethod { .. }
            | Error::ModeRefused(_)
            | Error::MissingFeatures { .. }
            | Error::BadProtocolVersion { .. }
            | Error::PolicyMismatch(_)
            | Error::Banner(BannerError::IncompatibleFeatures { .. })
            | Error::Banner(BannerError::LegacyBanner)
            | Error::Banner(BannerError::NotCeph)
            | Error::MarkedDown => true,
            Error::Closed { reason, .. } => matches!(
                *reason,
                CloseReason::AUTH_FAILED
                    | CloseReason::AUTH_METHOD
                    | CloseReason::MODE_REQUIRED
                    | CloseReason::FEATURES
                    | CloseReason::POLICY
            ),
            _ => false,
        }
    }

    /// The CLOSE reason that tells the peer about this error, if one should be sent.
    pub fn close_reason(&self) -> Option<CloseReason> {
        Some(match self {
            Error::Frame(_)
            | Error::UnexpectedFrame { .. }
            | Error::PeerMisbehaved(_)
            | Error::Chunk(_) => CloseReason::PROTOCOL,
            // AUTH_FAILED, or AUTH_METHOD / PROTOCOL where the auth error says so (§4.4).
            Error::Auth(e) => CloseReason(e.close_reason()),
            Error::NoCommonAuthMethod { .. } => CloseReason::AUTH_METHOD,
            Error::ModeRefused(_) => CloseReason::MODE_REQUIRED,
            Error::MissingFeatures { .. } => CloseReason::FEATURES,
            Error::PolicyMismatch(_) => CloseReason::POLICY,
            Error::IdleTimeout | Error::HandshakeTimeout => CloseReason::IDLE,
            Error::KeysExhausted => CloseReason::REKEY,
            Error::MarkedDown => CloseReason::NORMAL,
            _ => return None,
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Banner(e) => write!(f, "bad banner: {e}"),
            Error::Frame(e) => write!(f, "bad frame: {e}"),
            Error::UnexpectedFrame { tag, expected } => {
                write!(f, "unexpected frame {tag:?} while waiting for {expected}")
            }
            Error::PeerMisbehaved(what) => write!(f, "peer violated the protocol: {what}"),
            // AuthError texts already say what failed ("authentication failed: …").
            Error::Auth(e) => write!(f, "{e}"),
            Error::Closed { reason, message } if message.is_empty() => {
                write!(f, "peer closed the connection ({reason:?})")
            }
            Error::Closed { reason, message } => {
                write!(f, "peer closed the connection ({reason:?}): {message}")
            }
            Error::NoCommonAuthMethod { offered } => {
                let names: Vec<String> = offered
                    .iter()
                    .map(|m| format!("{:?}", crate::auth::Method(*m)))
                    .collect();
                write!(
                    f,
                    "no common auth method: the server allows [{}]",
                    names.join(", ")
                )
            }
            Error::ModeRefused(m) => write!(f, "connection mode refused: {m}"),
            Error::MissingFeatures { missing } => {
                write!(f, "missing required features 0x{missing:x}")
            }
            Error::BadProtocolVersion { ours, theirs } => {
                write!(f, "protocol version mismatch: ours {ours}, peer {theirs}")
            }
            Error::PolicyMismatch(m) => write!(f, "policy mismatch: {m}"),
            Error::IdleTimeout => f.write_str("idle timeout: nothing received from the peer"),
            Error::HandshakeTimeout => f.write_str("handshake did not complete in time"),
            Error::KeysExhausted => {
                f.write_str("frame counter limit reached; reconnecting with fresh keys")
            }
            Error::Transport(m) => write!(f, "transport: {m}"),
            Error::MarkedDown => f.write_str("connection marked down"),
            Error::Chunk(e) => write!(f, "structured data: {e}"),
            Error::Legacy(m) => write!(f, "v1: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<FrameError> for Error {
    fn from(e: FrameError) -> Self {
        Error::Frame(e)
    }
}

impl From<BannerError> for Error {
    fn from(e: BannerError) -> Self {
        Error::Banner(e)
    }
}

impl From<AuthError> for Error {
    fn from(e: AuthError) -> Self {
        Error::Auth(e)
    }
}

/// An incoming handshake that needs the shell's session table to decide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptRequest {
    /// The peer's type.
    pub peer_type: EntityType,
    /// The peer's advertised addresses.
    pub peer_addrs: AddrVec,
    /// The address that identifies the peer's session (its first advertised address).
    pub peer_addr: EntityAddr,
    /// The peer's session cookie.
    pub peer_cookie: u64,
    /// Whether this is a new session or a resume, with the sequence numbers.
    pub attempt: Attempt,
}

/// Something that happened, for the shell to act on.
#[derive(Debug)]
pub enum Event {
    /// The session is ready, as the connecting side.
    Connected {
        /// True if an existing session was resumed.
        resumed: bool,
    },
    /// The session is ready, as the accepting side.
    Accepted {
        /// True if an existing session was resumed.
        resumed: bool,
    },
    /// A message arrived, in order, exactly once.
    Message(Message),
    /// An incoming handshake waits for [`super::Connection::decide_accept`].
    AcceptRequest(AcceptRequest),
    /// Close this transport (after writing what is pending). The session may continue.
    LinkClosed {
        /// Which transport.
        link: LinkId,
        /// Why.
        error: Error,
        /// Who ended it.
        initiator: Initiator,
    },
    /// Open a new transport to the peer and call `start_link`.
    ReconnectDue,
    /// The session was reset on this side (a lossy fault, a peer restart): messages
    /// may have been lost. Ceph's `ms_handle_reset`.
    Reset,
    /// The peer reset the session: messages may have been lost. `ms_handle_remote_reset`.
    RemoteReset,
    /// The connection was refused for a reason reconnecting will not fix.
    Refused(Error),
    /// The peer aborted a chunked message after partial data (docs/PROTOCOL.md §7.5);
    /// the partial message was discarded and the connection stays open.
    ChunkedAborted {
        /// The aborted message's tid.
        tid: u64,
        /// The peer's error code.
        code: u32,
        /// The peer's explanation.
        message: String,
        /// Data bytes received before the abort.
        received: u64,
        /// Data bytes the message announced.
        total: u64,
    },
}
