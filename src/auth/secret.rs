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
    use crate::auth::{AuthConfig, KeyStore, Keyring};
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

    const C1: &str = "010c000000636c69656e742e61646d696ec1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1";
    const S1: &str = "015e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5ed0b09b7900b1006332753998339fdc66a80dddbbabbacfb36a47c1c0323a2724";
    const C2: &str = "ed8e226f816ed6e78caf35b5e1964710e53884b1091590895a134bc4dca84e72";
    const SESSION: &str = "cc2cee262309deda1f4bc03fede8ba3cf91d06f0b659e0b6e63687ecdb9cbd75";

    /// A server that has just answered `c1` (fixed nonce), ready for AUTH 2.
    fn server_after_hello(c1: &[u8]) -> SecretServer {
        let mut s = SecretServer::with_nonce(keyring(), [0x5e; 32]);
        assert!(matches!(
            s.handle(c1, &mut CountingRng(0)),
            Ok(Step::Send(_))
        ));
        s
    }

    /// A client that has sent AUTH 1 (fixed nonce), ready for the server's AUTH.
    fn client_after_start(key: Secret) -> SecretClient {
        let mut c = SecretClient::with_nonce(NAME, key, [0xc1; 32]).expect("client");
        c.start(&mut CountingRng(0));
        c
    }

    /// Deterministic garbage (xorshift), so a failure names its input.
    fn garbage(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn recorded_exchange_matches_the_vector() {
        let t = recorded();
        assert_eq!(
            to_hex(admin_key().expose()),
            "ac310e6145e3971d3993177ce18f678d"
        );
        assert_eq!(to_hex(&t.c1), C1);
        assert_eq!(to_hex(&t.s1), S1);
        assert_eq!(to_hex(&t.c2), C2);
        assert_eq!(to_hex(&t.key), SESSION);
    }

    /// docs/PROTOCOL.md §4.4 shows the same bytes as the code produces.
    #[test]
    fn protocol_md_vectors_match_the_code() {
        let doc = include_str!("../../docs/PROTOCOL.md");
        let mut found = std::collections::BTreeMap::new();
        let mut lines = doc.lines();
        while let Some(line) = lines.next() {
            let Some(label) = line.strip_prefix("vector: auth.secret ") else {
                continue;
            };
            assert_eq!(lines.next(), Some("```hex"), "block for {label}");
            let body: String = lines.by_ref().take_while(|l| *l != "```").collect();
            let bytes = crate::wire::from_hex(&body).expect("hex block");
            assert!(
                found.insert(label.to_string(), to_hex(&bytes)).is_none(),
                "{label} twice"
            );
        }
        let t = recorded();
        let expected = [
            ("K", to_hex(admin_key().expose())),
            ("c2s auth 1", to_hex(&t.c1)),
            ("s2c auth", to_hex(&t.s1)),
            ("c2s auth 2", to_hex(&t.c2)),
            ("session_key", to_hex(&t.key)),
        ];
        assert_eq!(
            found.len(),
            expected.len(),
            "labels in the doc: {:?}",
            found.keys()
        );
        for (label, hex) in expected {
            assert_eq!(found.get(label), Some(&hex), "vector {label}");
        }
    }

    #[test]
    fn full_exchange_through_config_with_fresh_nonces() {
        let client_cfg = AuthConfig::secret_client(NAME, admin_key());
        let server_cfg = AuthConfig::secret_server(keyring());
        let mut keys = Vec::new();
        for seed in [1u8, 100] {
            let mut rng = CountingRng(seed);
            let mut c = client_cfg.client_for(Method::SECRET).expect("client");
            let mut s = server_cfg.server_for(Method::SECRET).expect("server");
            assert_eq!((c.method(), s.method()), (Method::SECRET, Method::SECRET));
            let c1 = c.start(&mut rng);
            assert_eq!(c.session_key(), None);
            let Ok(Step::Send(s1)) = s.handle(&c1, &mut rng) else {
                panic!("no reply")
            };
            assert_eq!((s.session_key(), s.peer_name()), (None, None));
            let Ok(Step::SendAndDone(c2)) = c.handle(&s1) else {
                panic!("no proof")
            };
            assert_eq!(s.handle(&c2, &mut rng), Ok(Step::Done));
            let key = c.session_key().expect("client done").to_vec();
            assert_eq!(key.len(), SESSION_KEY_LEN);
            assert_eq!(s.session_key(), Some(key.as_slice()));
            assert_eq!(s.peer_name(), Some(NAME));
            // The secret itself never appears in any payload.
            let k = admin_key();
            for p in [&c1, &s1, &c2] {
                assert!(!p.windows(16).any(|w| w == k.expose()));
            }
            keys.push(key);
        }
        assert_ne!(keys[0], keys[1], "fresh nonces give fresh session keys");
    }

    #[test]
    fn wrong_key_is_caught_by_the_client() {
        let mut c = client_after_start(Secret::new(&[0x42; 16]));
        let s1 = crate::wire::from_hex(S1).expect("hex");
        assert_eq!(c.handle(&s1), Err(AuthError::ServerProofFailed));
        assert_eq!(c.session_key(), None);
        // The failed exchange stays failed.
        assert!(matches!(c.handle(&s1), Err(AuthError::Malformed(_))));
    }

    #[test]
    fn wrong_key_is_caught_by_the_server() {
        // A client holding a different key that proves anyway (it ignores the server's proof).
        let c1 = crate::wire::from_hex(C1).expect("hex");
        let wrong = Proofs::new(&Secret::new(&[0x42; 16]), [0xc1; 32], [0x5e; 32], NAME);
        let mut s = server_after_hello(&c1);
        let err = s.handle(wrong.sign(LABEL_CLIENT).as_ref(), &mut CountingRng(0));
        assert_eq!(err, Err(AuthError::BadProof { name: NAME.into() }));
        assert_eq!((s.session_key(), s.peer_name()), (None, None));
        let mut s = server_after_hello(&c1);
        let err = s.handle(&[0u8; 32], &mut CountingRng(0));
        assert_eq!(err, Err(AuthError::BadProof { name: NAME.into() }));
    }

    #[test]
    fn unknown_entity_is_its_own_error() {
        let mut c = SecretClient::new("client.nobody", admin_key()).expect("client");
        let c1 = c.start(&mut CountingRng(3));
        let mut s = SecretServer::new(keyring());
        let err = s.handle(&c1, &mut CountingRng(4)).unwrap_err();
        assert_eq!(err, AuthError::UnknownEntity("client.nobody".into()));
        assert_eq!(err.close_message(), "unknown entity client.nobody");
        assert_ne!(
            err,
            AuthError::BadProof {
                name: "client.nobody".into()
            }
        );
    }

    #[test]
    fn a_recorded_exchange_replayed_to_a_fresh_server_fails() {
        let t = recorded();
        // Same client payloads, but the new server picks its own nonce.
        let mut s = SecretServer::new(keyring());
        let mut rng = CountingRng(0x77);
        let Ok(Step::Send(s1)) = s.handle(&t.c1, &mut rng) else {
            panic!("no reply")
        };
        assert_ne!(s1, t.s1);
        assert_eq!(
            s.handle(&t.c2, &mut rng),
            Err(AuthError::BadProof { name: NAME.into() })
        );
        // And the recorded server reply does not fool a client with a new nonce.
        let mut c = SecretClient::new(NAME, admin_key()).expect("client");
        c.start(&mut CountingRng(0x99));
        assert_eq!(c.handle(&t.s1), Err(AuthError::ServerProofFailed));
    }

    #[test]
    fn a_flipped_bit_anywhere_fails_the_exchange() {
        let t = recorded();
        for i in 0..t.c1.len() * 8 {
            let mut c1 = t.c1.clone();
            c1[i / 8] ^= 1 << (i % 8);
            let mut s = SecretServer::with_nonce(keyring(), [0x5e; 32]);
            // Either AUTH 1 is refused, or the recorded proof no longer matches.
            if let Ok(Step::Send(_)) = s.handle(&c1, &mut CountingRng(0)) {
                assert!(
                    s.handle(&t.c2, &mut CountingRng(0)).is_err(),
                    "bit {i} of c1"
                );
            }
        }
        for i in 0..t.s1.len() * 8 {
            let mut s1 = t.s1.clone();
            s1[i / 8] ^= 1 << (i % 8);
            let mut c = client_after_start(admin_key());
            assert!(c.handle(&s1).is_err(), "bit {i} of s1");
        }
        for i in 0..t.c2.len() * 8 {
            let mut c2 = t.c2.clone();
            c2[i / 8] ^= 1 << (i % 8);
            let mut s = server_after_hello(&t.c1);
            assert!(s.handle(&c2, &mut CountingRng(0)).is_err(), "bit {i} of c2");
        }
    }

    #[test]
    fn truncated_and_extended_payloads_are_malformed() {
        let t = recorded();
        let malformed = |r: Result<Step, AuthError>| matches!(r, Err(AuthError::Malformed(_)));
        for cut in 0..t.c1.len() {
            let mut s = SecretServer::new(keyring());
            assert!(
                malformed(s.handle(&t.c1[..cut], &mut CountingRng(0))),
                "c1[..{cut}]"
            );
        }
        for cut in 0..t.s1.len() {
            let mut c = client_after_start(admin_key());
            assert!(malformed(c.handle(&t.s1[..cut])), "s1[..{cut}]");
        }
        for cut in 0..t.c2.len() {
            let mut s = server_after_hello(&t.c1);
            assert!(
                malformed(s.handle(&t.c2[..cut], &mut CountingRng(0))),
                "c2[..{cut}]"
            );
        }
        let extend = |p: &[u8]| [p, &[0u8]].concat();
        let mut s = SecretServer::new(keyring());
        assert!(malformed(s.handle(&extend(&t.c1), &mut CountingRng(0))));
        assert!(malformed(
            client_after_start(admin_key()).handle(&extend(&t.s1))
        ));
        let mut s = server_after_hello(&t.c1);
        assert!(malformed(s.handle(&extend(&t.c2), &mut CountingRng(0))));
    }

    #[test]
    fn garbage_of_every_length_is_an_error_not_a_panic() {
        for len in 0..=400 {
            for seed in [1u64, 0xdead_beef] {
                let mut g = garbage(len, seed + len as u64);
                for version in [None, Some(SECRET_VERSION)] {
                    if let (Some(v), Some(first)) = (version, g.first_mut()) {
                        *first = v;
                    }
                    let mut s = SecretServer::new(keyring());
                    assert!(
                        s.handle(&g, &mut CountingRng(0)).is_err(),
                        "server, len {len}"
                    );
                    let mut c = client_after_start(admin_key());
                    assert!(c.handle(&g).is_err(), "client, len {len}");
                    let mut s = server_after_hello(&crate::wire::from_hex(C1).expect("hex"));
                    assert!(
                        s.handle(&g, &mut CountingRng(0)).is_err(),
                        "proof, len {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn names_are_bounded_and_checked() {
        let hello = |name: &[u8], declared: u32| {
            let mut p = vec![SECRET_VERSION];
            p.put_le32(declared);
            p.extend_from_slice(name);
            p.extend_from_slice(&[0xc1; 32]);
            p
        };
        let malformed = |p: &[u8]| {
            let r = SecretServer::new(keyring()).handle(p, &mut CountingRng(0));
            matches!(r, Err(AuthError::Malformed(_)))
        };
        let long = "c".repeat(MAX_AUTH_NAME_LEN + 1);
        assert!(malformed(&hello(long.as_bytes(), long.len() as u32)));
        assert!(malformed(&hello(b"", u32::MAX)));
        assert!(malformed(&hello(b"", 0)));
        assert!(malformed(&hello(b"client.\xff", 8)));
        assert!(malformed(&hello(b"client.\n", 8)));
        assert!(malformed(&[2u8]));
        // A 256-byte name is fine when the key store knows it.
        let name = "c".repeat(MAX_AUTH_NAME_LEN);
        let mut ring = Keyring::new();
        ring.insert(
            &name,
            admin_key(),
            crate::wire::types::Timespec { sec: 0, nsec: 0 },
        );
        let mut s = SecretServer::new(Arc::new(ring));
        let r = s.handle(
            &hello(name.as_bytes(), name.len() as u32),
            &mut CountingRng(0),
        );
        assert!(matches!(r, Ok(Step::Send(_))));
        // Locally, an over-long name or a short key is a configuration error.
        assert!(matches!(
            SecretClient::new(&long, admin_key()),
            Err(AuthError::BadConfig(_))
        ));
        assert!(matches!(
            SecretClient::new("", admin_key()),
            Err(AuthError::BadConfig(_))
        ));
        let short = Secret::new(&[1; 15]);
        assert!(matches!(
            SecretClient::new(NAME, short),
            Err(AuthError::BadConfig(_))
        ));
    }

    #[test]
    fn frames_out_of_order_are_malformed() {
        let t = recorded();
        let mut c = SecretClient::new(NAME, admin_key()).expect("client");
        assert!(matches!(c.handle(&t.s1), Err(AuthError::Malformed(_))));
        let mut c = client_after_start(admin_key());
        assert!(
            c.start(&mut CountingRng(0)).is_empty(),
            "a second start fails the exchange"
        );
        assert!(matches!(c.handle(&t.s1), Err(AuthError::Malformed(_))));
        // After completion, more AUTH frames are refused on both sides.
        let mut c = client_after_start(admin_key());
        assert!(matches!(c.handle(&t.s1), Ok(Step::SendAndDone(_))));
        assert!(matches!(c.handle(&t.s1), Err(AuthError::Malformed(_))));
        let mut s = server_after_hello(&t.c1);
        assert_eq!(s.handle(&t.c2, &mut CountingRng(0)), Ok(Step::Done));
        assert!(matches!(
            s.handle(&t.c2, &mut CountingRng(0)),
            Err(AuthError::Malformed(_))
        ));
        assert!(format!("{s:?}").contains("Failed"));
    }
}
