//! Authentication exchanges as sans-IO, bytes-in/bytes-out objects (docs/PROTOCOL.md §4).
//!
//! An exchange object never touches a socket, a clock or a thread. The protocol state machine
//! (`proto`) feeds it the payloads of the peer's AUTH frames and sends whatever it returns as the
//! payloads of its own AUTH frames. Randomness is injected through [`Random`], so the same code runs
//! with fixed nonces to produce the recorded vectors of docs/PROTOCOL.md §4.4 (STYLE habit 7).
//!
//! ```text
//!  client                                   server
//!  ClientAuth::start(rng) ──── AUTH ───────▶ ServerAuth::handle(payload, rng)
//!  ClientAuth::handle(payload) ◀─ AUTH ───── Step::Send(..)          (SECRET only)
//!  Step::SendAndDone(..) ──── AUTH ─────────▶ ServerAuth::handle(..) -> Step::Done
//!  session_key() = Some(..)                  session_key() = Some(..), peer_name()
//! ```
//!
//! Methods: [`Method::NONE`] (§4.3, [`none`]) and [`Method::SECRET`] (§4.4, [`secret`]). Keys come from
//! a Ceph keyring ([`keyring`]). The §4.5 key schedule and frame protection live in `crypto`; this
//! module only produces the `session_key` they start from.

pub mod keyring;
pub mod none;
mod rng_shim;
pub mod secret;

pub use keyring::{Keyring, KeyringError};
pub use none::{NoneClient, NoneServer};
pub use rng_shim::Random;
pub use secret::{SecretClient, SecretServer};

use std::fmt;
use std::sync::atomic::{compiler_fence, Ordering};
use std::sync::Arc;

/// The longest auth name we accept or send, in bytes (docs/PROTOCOL.md §4.4). Ceph entity names
/// (`client.admin`, `osd.12`) are far shorter; the bound keeps a peer from making us allocate.
pub const MAX_AUTH_NAME_LEN: usize = 256;

/// The shortest secret the SECRET method accepts, in bytes (an AES-128 key from a keyring).
pub const MIN_SECRET_LEN: usize = 16;

/// The longest close message we produce (docs/PROTOCOL.md §2.3 `MAX_CLOSE_REASON`).
pub const MAX_CLOSE_MESSAGE_LEN: usize = 1024;

/// An auth method number (docs/PROTOCOL.md §4.1). A newtype so unknown values round-trip.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Method(pub u32);

impl Method {
    /// No authentication (Ceph's `CEPH_AUTH_NONE`), §4.3.
    pub const NONE: Method = Method(0x1);
    /// Shared-secret mutual authentication, §4.4.
    pub const SECRET: Method = Method(0x10);

    /// The method's name, if it is one we define.
    pub fn name(self) -> Option<&'static str> {
        match self {
            Method::NONE => Some("NONE"),
            Method::SECRET => Some("SECRET"),
            _ => None,
        }
    }
}

impl fmt::Debug for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "Method(0x{:x})", self.0),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Secret key bytes: a keyring secret or a derived session key.
///
/// Never printed (`Debug` shows `Secret(<redacted>)`), compared in constant time, and overwritten
/// with zeros when dropped. The zeroing is best effort without `unsafe`: the writes are followed by
/// [`std::hint::black_box`] and a compiler fence so the optimiser cannot prove them dead.
#[derive(Clone)]
pub struct Secret(Box<[u8]>);

impl Secret {
    /// A secret holding a copy of `bytes`. The caller should wipe its own copy.
    pub fn new(bytes: &[u8]) -> Self {
        Secret(bytes.into())
    }

    /// The key bytes, for handing to a MAC or cipher. Do not log them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The length in bytes (not secret).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for a zero-length secret (the NONE method's "session key").
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        constant_time_eq(&self.0, &other.0)
    }
}

impl Eq for Secret {}

impl Drop for Secret {
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            *b = 0;
        }
        std::hint::black_box(&mut self.0);
        compiler_fence(Ordering::SeqCst);
    }
}

/// Compare two byte strings in time that depends only on their lengths (lengths are not secret).
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Why an authentication exchange failed. Each variant says who is at fault in its doc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// (server) The client named an entity our key store does not know.
    UnknownEntity(String),
    /// (server) The client's proof did not verify: it holds a different key for `name`.
    BadProof {
        /// The auth name the client claimed.
        name: String,
    },
    /// (client) The server's proof did not verify: it holds a different key, or it is not the
    /// server we think it is.
    ServerProofFailed,
    /// The peer's AUTH payload does not follow docs/PROTOCOL.md §4.3–§4.4, or came when none was due.
    Malformed(&'static str),
    /// The method is not in our allowed list (or is not one we implement).
    MethodNotAllowed(Method),
    /// (local) No key is configured for the named entity.
    MissingKey(String),
    /// (local) The configuration cannot work: a key shorter than 16 bytes, an invalid auth name,
    /// a server allowing SECRET without a key store.
    BadConfig(&'static str),
}

impl AuthError {
    /// The human-readable text to send in CLOSE (docs/PROTOCOL.md §4.2, §6.5), at most
    /// [`MAX_CLOSE_MESSAGE_LEN`] bytes. Local configuration details are not revealed to the peer.
    pub fn close_message(&self) -> String {
        let mut msg = match self {
            AuthError::UnknownEntity(name) => format!("unknown entity {name}"),
            AuthError::BadProof { name } => format!("bad proof for {name}"),
            AuthError::ServerProofFailed => {
                "server proof failed: the server does not hold our key".to_string()
            }
            AuthError::Malformed(what) => format!("malformed AUTH payload: {what}"),
            AuthError::MethodNotAllowed(m) => format!("auth method {m} not allowed"),
            AuthError::MissingKey(_) | AuthError::BadConfig(_) => {
                "authentication is not configured on this side".to_string()
            }
        };
        truncate_on_char_boundary(&mut msg, MAX_CLOSE_MESSAGE_LEN);
        msg
    }

    /// The CLOSE reason code (docs/PROTOCOL.md §6.2): 1 PROTOCOL for a malformed payload,
    /// 3 AUTH_METHOD for a refused method, 2 AUTH_FAILED for everything else.
    pub fn close_reason(&self) -> u32 {
        match self {
            AuthError::Malformed(_) => 1,
            AuthError::MethodNotAllowed(_) => 3,
            _ => 2,
        }
    }
}

fn truncate_on_char_boundary(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::UnknownEntity(name) => {
                write!(f, "authentication failed: no key is known for entity {name:?}")
            }
            AuthError::BadProof { name } => write!(
                f,
                "authentication failed: {name:?} proved a different key than ours (wrong key in one keyring?)"
            ),
            AuthError::ServerProofFailed => f.write_str(
                "authentication failed: the server could not prove it holds our key (wrong key, or not the server we expect)",
            ),
            AuthError::Malformed(what) => write!(f, "malformed AUTH payload from peer: {what}"),
            AuthError::MethodNotAllowed(m) => write!(f, "auth method {m} is not allowed here"),
            AuthError::MissingKey(name) => write!(f, "no secret key configured for {name:?}"),
            AuthError::BadConfig(what) => write!(f, "auth configuration error: {what}"),
        }
    }
}

impl std::error::Error for AuthError {}

/// What an exchange wants the caller to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this as the payload of an AUTH frame, then wait for the peer's next AUTH.
    Send(Vec<u8>),
    /// Send this as the payload of an AUTH frame; this side's exchange is then complete
    /// (`session_key()` is `Some`) and the client may pipeline AUTH_DONE right after it.
    SendAndDone(Vec<u8>),
    /// This side's exchange is complete and there is nothing more to send.
    Done,
    /// Nothing to send yet; wait for the peer's next AUTH. (No current method returns this; it
    /// exists so multi-round methods can be added without changing callers.)
    Wait,
}

/// The client side of one method's exchange.
pub trait ClientAuth: Send {
    /// The method this exchange implements.
    fn method(&self) -> Method;
    /// The payload of the client's first AUTH frame. Call exactly once.
    fn start(&mut self, rng: &mut dyn Random) -> Vec<u8>;
    /// React to a server AUTH payload.
    fn handle(&mut self, payload: &[u8]) -> Result<Step, AuthError>;
    /// The session key once the exchange is complete (an empty slice for NONE).
    fn session_key(&self) -> Option<&[u8]>;
}

/// The server side of one method's exchange.
pub trait ServerAuth: Send {
    /// The method this exchange implements.
    fn method(&self) -> Method;
    /// React to a client AUTH payload.
    fn handle(&mut self, payload: &[u8], rng: &mut dyn Random) -> Result<Step, AuthError>;
    /// The session key once the exchange is complete (an empty slice for NONE).
    fn session_key(&self) -> Option<&[u8]>;
    /// The authenticated client name (e.g. `client.admin`) once complete. Always `None` for NONE,
    /// which authenticates nobody.
    fn peer_name(&self) -> Option<&str>;
}

/// Server-side key lookup by auth name.
pub trait KeyStore: Send + Sync {
    /// The secret for `name`, or `None` if the entity is unknown.
    fn key_for(&self, name: &str) -> Option<Secret>;
}

/// Which methods each side allows, and the keys they use.
#[derive(Clone)]
pub struct AuthConfig {
    /// Methods the client side tries, in preference order.
    pub client_methods: Vec<Method>,
    /// Methods the server side allows, in server preference order (sent in AUTH_METHODS).
    pub server_methods: Vec<Method>,
    /// Our auth name, e.g. `client.admin` (client side).
    pub name: String,
    /// Our secret (client side).
    pub key: Option<Secret>,
    /// Secrets of the clients we accept (server side).
    pub keys: Option<Arc<dyn KeyStore>>,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("client_methods", &self.client_methods)
            .field("server_methods", &self.server_methods)
            .field("name", &self.name)
            .field("key", &self.key)
            .field("keys", &self.keys.as_ref().map(|_| "<key store>"))
            .finish()
    }
}

impl AuthConfig {
    /// NONE on both sides, no name and no keys.
    pub fn none() -> Self {
        AuthConfig {
            client_methods: vec![Method::NONE],
            server_methods: vec![Method::NONE],
            name: String::new(),
            key: None,
            keys: None,
        }
    }

    /// A client that authenticates as `name` with `key` using SECRET only.
    pub fn secret_client(name: impl Into<String>, key: Secret) -> Self {
        AuthConfig {
            client_methods: vec![Method::SECRET],
            server_methods: vec![Method::SECRET],
            name: name.into(),
            key: Some(key),
            keys: None,
        }
    }

    /// A server that accepts SECRET only, looking clients up in `keys`.
    pub fn secret_server(keys: Arc<dyn KeyStore>) -> Self {
        AuthConfig {
            client_methods: vec![Method::SECRET],
            server_methods: vec![Method::SECRET],
            name: String::new(),
            key: None,
            keys: Some(keys),
        }
    }

    /// A fresh client exchange for `m`, which must be in `client_methods`.
    pub fn client_for(&self, m: Method) -> Result<Box<dyn ClientAuth>, AuthError> {
        if !self.client_methods.contains(&m) {
            return Err(AuthError::MethodNotAllowed(m));
        }
        match m {
            Method::NONE => Ok(Box::new(NoneClient::new())),
            Method::SECRET => {
                let key = self
                    .key
                    .clone()
                    .ok_or_else(|| AuthError::MissingKey(self.name.clone()))?;
                Ok(Box::new(SecretClient::new(&self.name, key)?))
            }
            other => Err(AuthError::MethodNotAllowed(other)),
        }
    }

    /// A fresh server exchange for `m`, which must be in `server_methods`.
    pub fn server_for(&self, m: Method) -> Result<Box<dyn ServerAuth>, AuthError> {
        if !self.server_methods.contains(&m) {
            return Err(AuthError::MethodNotAllowed(m));
        }
        match m {
            Method::NONE => Ok(Box::new(NoneServer::new())),
            Method::SECRET => {
                let keys = self.keys.clone().ok_or(AuthError::BadConfig(
                    "the server allows SECRET but has no key store (AuthConfig::keys)",
                ))?;
                Ok(Box::new(SecretServer::new(keys)))
            }
            other => Err(AuthError::MethodNotAllowed(other)),
        }
    }

    /// The first of our `client_methods` that the server lists in AUTH_METHODS (§4.2).
    pub fn pick_client_method(&self, server_allowed: &[u32]) -> Option<Method> {
        self.client_methods
            .iter()
            .copied()
            .find(|m| server_allowed.contains(&m.0))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A deterministic generator for tests: a counter stream, distinct per seed.
    pub(crate) struct CountingRng(pub u8);

    impl Random for CountingRng {
        fn fill(&mut self, dest: &mut [u8]) {
            for b in dest {
                *b = self.0;
                self.0 = self.0.wrapping_add(1);
            }
        }
    }

    #[test]
    fn method_debug_prints_name_or_hex() {
        assert_eq!(format!("{:?}", Method::NONE), "NONE");
        assert_eq!(format!("{:?}", Method::SECRET), "SECRET");
        assert_eq!(format!("{:?}", Method(2)), "Method(0x2)");
        assert_eq!(Method::SECRET.0, 0x10);
    }

    #[test]
    fn secret_is_redacted_and_compares_by_value() {
        let a = Secret::new(&[7u8; 16]);
        assert_eq!(format!("{a:?}"), "Secret(<redacted>)");
        assert_eq!(a, a.clone());
        assert_ne!(a, Secret::new(&[8u8; 16]));
        assert_ne!(a, Secret::new(&[7u8; 17]));
        let cfg = AuthConfig::secret_client("client.admin", a);
        let text = format!("{cfg:?}");
        assert!(
            text.contains("<redacted>") && !text.contains("7, 7"),
            "{text}"
        );
    }

    #[test]
    fn pick_client_method_follows_client_preference() {
        let mut cfg = AuthConfig::none();
        cfg.client_methods = vec![Method::SECRET, Method::NONE];
        assert_eq!(cfg.pick_client_method(&[1, 0x10]), Some(Method::SECRET));
        assert_eq!(cfg.pick_client_method(&[1]), Some(Method::NONE));
        assert_eq!(cfg.pick_client_method(&[2]), None);
        assert_eq!(cfg.pick_client_method(&[]), None);
    }

    #[test]
    fn factories_refuse_methods_outside_the_lists_and_missing_keys() {
        let cfg = AuthConfig::none();
        assert_eq!(
            cfg.client_for(Method::SECRET).err(),
            Some(AuthError::MethodNotAllowed(Method::SECRET))
        );
        assert_eq!(
            cfg.server_for(Method(7)).err(),
            Some(AuthError::MethodNotAllowed(Method(7)))
        );
        let mut cfg = AuthConfig::none();
        cfg.client_methods = vec![Method::SECRET];
        cfg.server_methods = vec![Method::SECRET];
        cfg.name = "client.x".into();
        assert_eq!(
            cfg.client_for(Method::SECRET).err(),
            Some(AuthError::MissingKey("client.x".into()))
        );
        assert!(matches!(
            cfg.server_for(Method::SECRET).err(),
            Some(AuthError::BadConfig(_))
        ));
        cfg.key = Some(Secret::new(&[1u8; 8]));
        assert!(matches!(
            cfg.client_for(Method::SECRET).err(),
            Some(AuthError::BadConfig(_))
        ));
    }

    #[test]
    fn close_messages_are_bounded_and_distinct() {
        let long = "x".repeat(5000);
        assert!(AuthError::UnknownEntity(long).close_message().len() <= MAX_CLOSE_MESSAGE_LEN);
        let msgs = [
            AuthError::UnknownEntity("client.a".into()).close_message(),
            AuthError::BadProof {
                name: "client.a".into(),
            }
            .close_message(),
            AuthError::ServerProofFailed.close_message(),
        ];
        assert_eq!(msgs[0], "unknown entity client.a");
        assert_eq!(msgs[1], "bad proof for client.a");
        assert!(msgs[0] != msgs[2] && msgs[1] != msgs[2]);
        assert_eq!(AuthError::Malformed("x").close_reason(), 1);
        assert_eq!(AuthError::BadProof { name: "a".into() }.close_reason(), 2);
        assert_eq!(AuthError::MethodNotAllowed(Method(9)).close_reason(), 3);
    }
}
