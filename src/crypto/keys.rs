//! The key schedule of docs/PROTOCOL.md §4.5 and the AUTH_DONE signatures.

use std::fmt;

use ring::{hkdf, hmac};

/// The keys of one direction (c2s or s2c). No `Debug` that shows bytes; zeroed on drop.
pub struct DirectionKeys {
    key: [u8; 16],
    iv: [u8; 12],
    mac: [u8; 32],
}

impl DirectionKeys {
    /// Keys from raw bytes (tests, fuzzing, or a key schedule of the caller's own).
    pub fn from_bytes(key: [u8; 16], iv: [u8; 12], mac: [u8; 32]) -> Self {
        DirectionKeys { key, iv, mac }
    }

    /// The AES-128-GCM key.
    pub(crate) fn key(&self) -> &[u8; 16] {
        &self.key
    }

    /// The GCM nonce base.
    pub(crate) fn iv(&self) -> &[u8; 12] {
        &self.iv
    }

    /// The HMAC-SHA256 key of the signed form.
    pub(crate) fn mac(&self) -> &[u8; 32] {
        &self.mac
    }

    /// `(key, iv, mac)` as lowercase hex. For test vectors only: never log these.
    #[doc(hidden)]
    pub fn expose_hex(&self) -> [String; 3] {
        use crate::wire::to_hex;
        [to_hex(&self.key), to_hex(&self.iv), to_hex(&self.mac)]
    }
}

impl fmt::Debug for DirectionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DirectionKeys(<redacted>)")
    }
}

impl Drop for DirectionKeys {
    fn drop(&mut self) {
        // Best effort without `unsafe`: black_box keeps the stores from being elided.
        self.key.fill(0);
        self.iv.fill(0);
        self.mac.fill(0);
        std::hint::black_box((&self.key, &self.iv, &self.mac));
    }
}

/// Every key of one connection (§4.5).
pub struct SessionKeys {
    /// Client-to-server frame keys.
    pub c2s: DirectionKeys,
    /// Server-to-client frame keys.
    pub s2c: DirectionKeys,
    client_done: [u8; 32],
    server_done: [u8; 32],
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKeys(<redacted>)")
    }
}

impl Drop for SessionKeys {
    fn drop(&mut self) {
        self.client_done.fill(0);
        self.server_done.fill(0);
        std::hint::black_box((&self.client_done, &self.server_done));
    }
}

/// An HKDF output length.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// The HKDF `info` prefix (§4.5).
const INFO_PREFIX: &[u8] = b"simplemsgr v2 ";

fn expand<const N: usize>(prk: &hkdf::Prk, label: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    // `expand` fails only if L > 255 * 32 and `fill` only on a length mismatch; N ≤ 32 and
    // the length passed is N, so neither can happen.
    prk.expand(&[INFO_PREFIX, label], Len(N))
        .and_then(|okm| okm.fill(&mut out))
        .expect("HKDF-SHA256 output of at most 32 bytes");
    out
}

/// Derive every key of a connection (§4.5):
/// PRK = HKDF-Extract(salt = T_c ‖ T_s, IKM = session_key);
/// each key = HKDF-Expand(PRK, "simplemsgr v2 " ‖ label, L).
pub fn derive_keys(session_key: &[u8], t_c: &[u8; 32], t_s: &[u8; 32]) -> SessionKeys {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(t_c);
    salt[32..].copy_from_slice(t_s);
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, &salt).extract(session_key);
    SessionKeys {
        c2s: DirectionKeys {
            key: expand(&prk, b"c2s key"),
            iv: expand(&prk, b"c2s iv"),
            mac: expand(&prk, b"c2s mac"),
        },
        s2c: DirectionKeys {
            key: expand(&prk, b"s2c key"),
            iv: expand(&prk, b"s2c iv"),
            mac: expand(&prk, b"s2c mac"),
        },
        client_done: expand(&prk, b"client done"),
        server_done: expand(&prk, b"server done"),
    }
}

impl SessionKeys {
    fn done_key(&self, from_client: bool) -> hmac::Key {
        let k = if from_client {
            &self.client_done
        } else {
            &self.server_done
        };
        hmac::Key::new(hmac::HMAC_SHA256, k)
    }

    /// The AUTH_DONE signature of the client (`from_client`) or server: HMAC-SHA256 over `le64 flags`.
    pub fn auth_done_signature(&self, from_client: bool, flags: u64) -> [u8; 32] {
        let tag = hmac::sign(&self.done_key(from_client), &flags.to_le_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Check an AUTH_DONE signature in constant time.
    pub fn verify_auth_done(&self, from_client: bool, flags: u64, sig: &[u8; 32]) -> bool {
        hmac::verify(&self.done_key(from_client), &flags.to_le_bytes(), sig).is_ok()
    }

    /// `(client done, server done)` keys as lowercase hex. For test vectors only: never log these.
    #[doc(hidden)]
    pub fn expose_done_hex(&self) -> [String; 2] {
        use crate::wire::to_hex;
        [to_hex(&self.client_done), to_hex(&self.server_done)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> SessionKeys {
        let sk: Vec<u8> = (0u8..32).collect();
        derive_keys(&sk, &[0x11; 32], &[0x22; 32])
    }

    #[test]
    fn schedule_matches_an_independent_hkdf() {
        // HKDF written out with HMAC (RFC 5869), to check the labels and the salt order.
        let sk: Vec<u8> = (0u8..32).collect();
        let mut salt = vec![0x11u8; 32];
        salt.extend_from_slice(&[0x22; 32]);
        let prk = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &salt), &sk);
        let t1 = |label: &[u8]| {
            let mut m = b"simplemsgr v2 ".to_vec();
            m.extend_from_slice(label);
            m.push(1);
            hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, prk.as_ref()), &m)
        };
        let k = keys();
        assert_eq!(&k.c2s.key[..], &t1(b"c2s key").as_ref()[..16]);
        assert_eq!(&k.s2c.iv[..], &t1(b"s2c iv").as_ref()[..12]);
        assert_eq!(&k.c2s.mac[..], t1(b"c2s mac").as_ref());
        assert_eq!(&k.server_done[..], t1(b"server done").as_ref());
        assert_ne!(k.c2s.key, k.s2c.key);
    }

    #[test]
    fn auth_done_signatures_bind_side_and_flags() {
        let k = keys();
        let s = k.auth_done_signature(true, 2);
        assert!(k.verify_auth_done(true, 2, &s));
        assert!(!k.verify_auth_done(false, 2, &s));
        assert!(!k.verify_auth_done(true, 1, &s));
        let mut bad = s;
        bad[31] ^= 1;
        assert!(!k.verify_auth_done(true, 2, &bad));
        assert_eq!(format!("{:?}", k.c2s), "DirectionKeys(<redacted>)");
    }
}
