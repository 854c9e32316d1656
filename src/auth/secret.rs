//! Method SECRET (docs/PROTOCOL.md §4.4): mutual proof of a shared 16-byte keyring secret.
//!
//! ```text
//!  client (name, K)                                   server (KeyStore)
//!  ExpectStart
//!    start(rng) ── AUTH 1: 01 | string name | client_nonce[32] ──▶ ExpectClientHello
//!                                           key_for(name)? else UnknownEntity
//!  ExpectServerHello ◀─ AUTH: 01 | server_nonce[32] | server_proof[32] ── (Step::Send)
//!    verify server_proof, else ServerProofFailed
//!  Done ── AUTH 2: client_proof[32] (Step::SendAndDone) ──▶ ExpectClientProof
//!                                           verify client_proof, else BadProof
//!                                                                    Done (Step::Done)
//! ```
//!
//! Every proof is HMAC-SHA256(K, label ‖ client_nonce ‖ server_nonce ‖ auth_name) with its own label,
//! so no value can be reflected as another. The labels are fixed, the nonces fixed-size and the name
//! last, so the MAC input is unambiguous. Proofs are checked with `ring::hmac::verify` (constant time).

use ring::hmac;

use super::{AuthError, ClientAuth, KeyStore, Method, Random, Secret, ServerAuth, Step};
use super::{MAX_AUTH_NAME_LEN, MIN_SECRET_LEN};
use crate::wire::{Reader, WriteLe};
use std::sync::Arc;

/// The only version of the SECRET payloads (first byte of AUTH 1 and of the server's AUTH).
pub const SECRET_VERSION: u8 = 1;
/// Length of each side's nonce.
pub const NONCE_LEN: usize = 32;
/// Length of a proof (an HMAC-SHA256 tag).
pub const PROOF_LEN: usize = 32;
/// Length of the derived session key.
pub const SESSION_KEY_LEN: usize = 32;

const LABEL_SERVER: &[u8] = b"simplemsgr-secret server";
const LABEL_CLIENT: &[u8] = b"simplemsgr-secret client";
const LABEL_SESSION: &[u8] = b"simplemsgr-secret session";

/// The bytes a proof or the session key authenticates: label ‖ client_nonce ‖ server_nonce ‖ name.
fn mac_input(label: &[u8], cn: &[u8; NONCE_LEN], sn: &[u8; NONCE_LEN], name: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(label.len() + 2 * NONCE_LEN + name.len());
    m.extend_from_slice(label);
    m.extend_from_slice(cn);
    m.extend_from_slice(sn);
    m.extend_from_slice(name.as_bytes());
    m
}

/// K (as an HMAC key) and the exchange's inputs, from which both proofs and the session key come.
struct Proofs {
    key: hmac::Key,
    cn: [u8; NONCE_LEN],
    sn: [u8; NONCE_LEN],
    name: String,
}

impl Proofs {
    fn new(k: &Secret, cn: [u8; NONCE_LEN], sn: [u8; NONCE_LEN], name: &str) -> Self {
        Proofs {
            key: hmac::Key::new(hmac::HMAC_SHA256, k.expose()),
            cn,
            sn,
            name: name.to_string(),
        }
    }

    fn input(&self, label: &[u8]) -> Vec<u8> {
        mac_input(label, &self.cn, &self.sn, &self.name)
    }

    fn sign(&self, label: &[u8]) -> hmac::Tag {
        hmac::sign(&self.key, &self.input(label))
    }

    fn verify(&self, label: &[u8], proof: &[u8]) -> bool {
        hmac::verify(&self.key, &self.input(label), proof).is_ok()
    }

    fn session_key(&self) -> Secret {
        Secret::new(self.sign(LABEL_SESSION).as_ref())
    }
}

/// Check a local or peer auth name: 1..=256 bytes of UTF-8 without control characters.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("the auth name is empty");
    }
    if name.len() > MAX_AUTH_NAME_LEN {
        return Err("the auth name is longer than 256 bytes");
    }
    if name.chars().any(char::is_control) {
        return Err("the auth name contains control characters");
    }
    Ok(())
}

enum ClientState {
    ExpectStart {
        fixed_nonce: Option<[u8; NONCE_LEN]>,
    },
    ExpectServerHello {
        cn: [u8; NONCE_LEN],
    },
    Done {
        session_key: Secret,
    },
    Failed,
}

/// The client side of SECRET.
pub struct SecretClient {
    name: String,
    key: Secret,
    state: ClientState,
}

impl SecretClient {
    /// An exchange authenticating as `name` with `key`. Fails on an invalid name or a key shorter
    /// than [`MIN_SECRET_LEN`].
    pub fn new(name: &str, key: Secret) -> Result<Self, AuthError> {
        check_name(name).map_err(AuthError::BadConfig)?;
        if key.len() < MIN_SECRET_LEN {
            return Err(AuthError::BadConfig(
                "the secret key is shorter than 16 bytes",
            ));
        }
        Ok(SecretClient {
            name: name.to_string(),
            key,
            state: ClientState::ExpectStart { fixed_nonce: None },
        })
    }

    /// Like [`SecretClient::new`] but with a fixed client nonce, for recorded vectors.
    // Used by the vector tests here and by `proto`'s recorded-handshake tests.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn with_nonce(
        name: &str,
        key: Secret,
        client_nonce: [u8; NONCE_LEN],
    ) -> Result<Self, AuthError> {
        let mut c = SecretClient::new(name, key)?;
        c.state = ClientState::ExpectStart {
            fixed_nonce: Some(client_nonce),
        };
        Ok(c)
    }
}

impl std::fmt::Debug for SecretClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            ClientState::ExpectStart { .. } => "ExpectStart",
            ClientState::ExpectServerHello { .. } => "ExpectServerHello",
            ClientState::Done { .. } => "Done",
            ClientState::Failed => "Failed",
        };
        f.debug_struct("SecretClient")
            .field("name", &self.name)
            .field("state", &state)
            .finish()
    }
}

/// Parse the server's AUTH: `u8 version`, `server_nonce[32]`, `server_proof[32]`, nothing more.
fn read_server_hello(payload: &[u8]) -> Result<([u8; NONCE_LEN], [u8; PROOF_LEN]), AuthError> {
    let mut r = Reader::new(payload);
    let version = r
        .u8("")
        .map_err(|_| AuthError::Malformed("the server's SECRET reply is empty"))?;
    if version != SECRET_VERSION {
        return Err(AuthError::Malformed(
            "the server's SECRET reply has an unknown version",
        ));
    }
    let truncated = |_| AuthError::Malformed("the server's SECRET reply is truncated");
    let sn = r.array::<NONCE_LEN>("").map_err(truncated)?;
    let proof = r.array::<PROOF_LEN>("").map_err(truncated)?;
    r.expect_end("")
        .map_err(|_| AuthError::Malformed("the server's SECRET reply has trailing bytes"))?;
    Ok((sn, proof))
}

impl ClientAuth for SecretClient {
    fn method(&self) -> Method {
        Method::SECRET
    }

    /// AUTH 1: `u8 1`, `string auth_name`, `client_nonce[32]` (§4.4 step 1). A second call fails
    /// the exchange and returns an empty payload.
    fn start(&mut self, rng: &mut dyn Random) -> Vec<u8> {
        let fixed = match std::mem::replace(&mut self.state, ClientState::Failed) {
            ClientState::ExpectStart { fixed_nonce } => fixed_nonce,
            _ => return Vec::new(),
        };
        let cn = fixed.unwrap_or_else(|| {
            let mut n = [0u8; NONCE_LEN];
            rng.fill(&mut n);
            n
        });
        let mut out = Vec::with_capacity(1 + 4 + self.name.len() + NONCE_LEN);
        out.put_u8(SECRET_VERSION);
        out.put_len_prefixed(self.name.as_bytes());
        out.extend_from_slice(&cn);
        self.state = ClientState::ExpectServerHello { cn };
        out
    }

    fn handle(&mut self, payload: &[u8]) -> Result<Step, AuthError> {
        let cn = match std::mem::replace(&mut self.state, ClientState::Failed) {
            ClientState::ExpectServerHello { cn } => cn,
            ClientState::ExpectStart { .. } => {
                return Err(AuthError::Malformed(
                    "a server AUTH arrived before ours was sent",
                ))
            }
            ClientState::Done { .. } | ClientState::Failed => {
                return Err(AuthError::Malformed(
                    "a server AUTH after the SECRET exchange ended",
                ))
            }
        };
        let (sn, server_proof) = read_server_hello(payload)?;
        let proofs = Proofs::new(&self.key, cn, sn, &self.name);
        // §4.4 step 3: the client checks server_proof before it proves anything itself.
        if !proofs.verify(LABEL_SERVER, &server_proof) {
            return Err(AuthError::ServerProofFailed);
        }
        let client_proof = proofs.sign(LABEL_CLIENT).as_ref().to_vec();
        self.state = ClientState::Done {
            session_key: proofs.session_key(),
        };
        Ok(Step::SendAndDone(client_proof))
    }

    fn session_key(&self) -> Option<&[u8]> {
        match &self.state {
            ClientState::Done { session_key } => Some(session_key.expose()),
            _ => None,
        }
    }
}

enum ServerState {
    ExpectClientHello,
    ExpectClientProof { proofs: Box<Proofs> },
    Done { session_key: Secret, name: String },
    Failed,
}

/// The server side of SECRET.
pub struct SecretServer {
    keys: Arc<dyn KeyStore>,
    fixed_nonce: Option<[u8; NONCE_LEN]>,
    state: ServerState,
}

impl SecretServer {
    /// An exchange that looks clients up in `keys`.
    pub fn new(keys: Arc<dyn KeyStore>) -> Self {
        SecretServer {
            keys,
            fixed_nonce: None,
            state: ServerState::ExpectClientHello,
        }
    }

    /// Like [`SecretServer::new`] but with a fixed server nonce, for recorded vectors.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn with_nonce(keys: Arc<dyn KeyStore>, server_nonce: [u8; NONCE_LEN]) -> Self {
        SecretServer {
            fixed_nonce: Some(server_nonce),
            ..SecretServer::new(keys)
        }
    }
}

impl std::fmt::Debug for SecretServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            ServerState::ExpectClientHello => "ExpectClientHello",
            ServerState::ExpectClientProof { .. } => "ExpectClientProof",
            ServerState::Done { .. } => "Done",
            ServerState::Failed => "Failed",
        };
        f.debug_struct("SecretServer")
            .field("state", &state)
            .finish()
    }
}

/// Parse AUTH 1: `u8 version`, `string auth_name` (≤ 256 bytes), `client_nonce[32]`, nothing more.
fn read_client_hello(payload: &[u8]) -> Result<(String, [u8; NONCE_LEN]), AuthError> {
    let mut r = Reader::new(payload);
    let version = r
        .u8("")
        .map_err(|_| AuthError::Malformed("the client's first SECRET AUTH is empty"))?;
    if version != SECRET_VERSION {
        return Err(AuthError::Malformed(
            "the client's SECRET AUTH has an unknown version",
        ));
    }
    // The length is checked against MAX_AUTH_NAME_LEN before anything is taken or allocated.
    let name = r
        .len_prefixed(MAX_AUTH_NAME_LEN as u32, "")
        .map_err(|e| match e {
            crate::wire::DecodeError::TooLarge { .. } => {
                AuthError::Malformed("the client's auth name is longer than 256 bytes")
            }
            _ => AuthError::Malformed("the client's first SECRET AUTH is truncated"),
        })?;
    let name = std::str::from_utf8(name)
        .map_err(|_| AuthError::Malformed("the client's auth name is not UTF-8"))?;
    check_name(name).map_err(AuthError::Malformed)?;
    let cn = r
        .array::<NONCE_LEN>("")
        .map_err(|_| AuthError::Malformed("the client's first SECRET AUTH is truncated"))?;
    r.expect_end("")
        .map_err(|_| AuthError::Malformed("the client's first SECRET AUTH has trailing bytes"))?;
    Ok((name.to_string(), cn))
}

impl ServerAuth for SecretServer {
    fn method(&self) -> Method {
        Method::SECRET
    }

    fn handle(&mut self, payload: &[u8], rng: &mut dyn Random) -> Result<Step, AuthError> {
        match std::mem::replace(&mut self.state, ServerState::Failed) {
            ServerState::ExpectClientHello => {
                let (name, cn) = read_client_hello(payload)?;
                let key = self
                    .keys
                    .key_for(&name)
                    .ok_or(AuthError::UnknownEntity(name.clone()))?;
                if key.len() < MIN_SECRET_LEN {
                    return Err(AuthError::BadConfig(
                        "a stored secret is shorter than 16 bytes",
                    ));
                }
                let sn = self.fixed_nonce.take().unwrap_or_else(|| {
                    let mut n = [0u8; NONCE_LEN];
                    rng.fill(&mut n);
                    n
                });
                let proofs = Proofs::new(&key, cn, sn, &name);
                let mut out = Vec::with_capacity(1 + NONCE_LEN + PROOF_LEN);
                out.put_u8(SECRET_VERSION);
                out.extend_from_slice(&sn);
                out.extend_from_slice(proofs.sign(LABEL_SERVER).as_ref());
                self.state = ServerState::ExpectClientProof {
                    proofs: Box::new(proofs),
                };
                Ok(Step::Send(out))
            }
            ServerState::ExpectClientProof { proofs } => {
                if payload.len() != PROOF_LEN {
                    return Err(AuthError::Malformed(
                        "the client's SECRET proof is not 32 bytes",
                    ));
                }
                if !proofs.verify(LABEL_CLIENT, payload) {
                    return Err(AuthError::BadProof {
                        name: proofs.name.clone(),
                    });
                }
                let session_key = proofs.session_key();
                self.state = ServerState::Done {
                    session_key,
                    name: proofs.name.clone(),
                };
                Ok(Step::Done)
            }
            ServerState::Done { .. } | ServerState::Failed => Err(AuthError::Malformed(
                "a client AUTH after the SECRET exchange ended",
            )),
        }
    }

    fn session_key(&self) -> Option<&[u8]> {
        match &self.state {
            ServerState::Done { session_key, .. } => Some(session_key.expose()),
            _ => None,
        }
    }

    fn peer_name(&self) -> Option<&str> {
        match &self.state {
            ServerState::Done { name, .. } => Some(name),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::tests::CountingRng;
    use crate::auth::{KeyStore, Keyring};
    use crate::wire::to_hex;

    const FIXTURE: &str = include_str!("../../tests/fixtures/client.admin.keyring");
    const NAME: &str = "client.admin";

    fn keyring() -> Arc<Keyring> {
        Arc::new(Keyring::parse(FIXTURE).expect("fixture parses"))
    }

    fn admin_key() -> Secret {
        keyring().key_for(NAME).expect("client.admin in fixture")
    }

    /// The payloads of one exchange: client AUTH 1, server AUTH, client AUTH 2.
    struct Transcript {
        c1: Vec<u8>,
        s1: Vec<u8>,
        c2: Vec<u8>,
        key: Vec<u8>,
    }

    fn run(mut c: SecretClient, mut s: SecretServer, rng: &mut CountingRng) -> Transcript {
        let c1 = c.start(rng);
        let Ok(Step::Send(s1)) = s.handle(&c1, rng) else {
            panic!("server did not reply")
        };
        let Ok(Step::SendAndDone(c2)) = c.handle(&s1) else {
            panic!("client did not prove")
        };
        assert_eq!(s.handle(&c2, rng), Ok(Step::Done));
        assert_eq!(s.peer_name(), Some(NAME));
        let key = c.session_key().expect("client complete").to_vec();
        assert_eq!(s.session_key(), Some(key.as_slice()));
        Transcript { c1, s1, c2, key }
    }

    fn recorded() -> Transcript {
        let c = SecretClient::with_nonce(NAME, admin_key(), [0xc1; 32]).expect("client");
        let s = SecretServer::with_nonce(keyring(), [0x5e; 32]);
        run(c, s, &mut CountingRng(0))
    }

    #[test]
    fn print_vector() {
        let t = recorded();
        println!("c1 {}", to_hex(&t.c1));
        println!("s1 {}", to_hex(&t.s1));
        println!("c2 {}", to_hex(&t.c2));
        println!("key {}", to_hex(&t.key));
    }
}
