//! The v1 banner and the legacy address exchange (docs/PROTOCOL.md §10.1).
//!
//! ```text
//! C -> S  "ceph v027"                                   (9 bytes, sent at once)
//! S -> C  "ceph v027" + server addr + client addr seen  (9 + 136 + 136 = 281 bytes)
//! C -> S  client addr                                   (136 bytes)
//! ```

use crate::wire::types::{EntityAddr, LEGACY_ADDR_LEN};
use crate::wire::{DecodeError, Reader};

/// `CEPH_BANNER`: nine ASCII bytes, no terminator.
pub const BANNER: &[u8; 9] = b"ceph v027";

/// The server's first flight: banner, its own address, the client's address as seen.
pub const SERVER_HELLO_LEN: usize = BANNER.len() + 2 * LEGACY_ADDR_LEN;

/// Read and check the 9-byte banner.
pub fn read_banner(r: &mut Reader<'_>) -> Result<(), DecodeError> {
    // A msgr2 peer starts with "ceph v2\n": say so instead of only "wrong banner".
    if r.rest().starts_with(b"ceph v2") {
        return Err(DecodeError::Invalid {
            what: "v1 banner: the peer speaks msgr2 (\"ceph v2\"), not v1",
        });
    }
    let b = r.take(BANNER.len(), "v1 banner")?;
    if b != BANNER {
        return Err(DecodeError::Invalid {
            what: "v1 banner (expected \"ceph v027\")",
        });
    }
    Ok(())
}

/// Encode the server's first flight.
pub fn encode_server_hello(server: &EntityAddr, client_seen: &EntityAddr, out: &mut Vec<u8>) {
    out.extend_from_slice(BANNER);
    server.encode_legacy(out);
    client_seen.encode_legacy(out);
}

/// Read the server's first flight: `(server address, our address as the server sees it)`.
pub fn read_server_hello(r: &mut Reader<'_>) -> Result<(EntityAddr, EntityAddr), DecodeError> {
    read_banner(r)?;
    let server = EntityAddr::read_legacy(r)?;
    let seen = EntityAddr::read_legacy(r)?;
    Ok((server, seen))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::types::AddrType;

    #[test]
    fn server_hello_is_281_bytes_and_round_trips() {
        let s = EntityAddr::new(AddrType::LEGACY, "127.0.0.1:6789".parse().unwrap(), 0);
        let c = EntityAddr::new(AddrType::LEGACY, "127.0.0.1:40000".parse().unwrap(), 0);
        let mut out = Vec::new();
        encode_server_hello(&s, &c, &mut out);
        assert_eq!(out.len(), SERVER_HELLO_LEN);
        assert_eq!(out.len(), 281);
        // Port 6789 is big-endian 1a 85 at offset 9 + 10.
        assert_eq!(&out[19..21], &[0x1a, 0x85]);
        let (s2, c2) = read_server_hello(&mut Reader::new(&out)).unwrap();
        assert_eq!((s2, c2), (s, c));
        assert!(read_server_hello(&mut Reader::new(&out[..200]))
            .unwrap_err()
            .is_truncated());
    }

    #[test]
    fn wrong_banner_is_malformed_not_truncated() {
        let e = read_banner(&mut Reader::new(b"ceph v2\n\x10")).unwrap_err();
        assert!(!e.is_truncated());
        assert!(e.to_string().contains("msgr2"), "{e}");
        assert!(!read_banner(&mut Reader::new(b"xeph v027"))
            .unwrap_err()
            .is_truncated());
        assert!(read_banner(&mut Reader::new(b"ceph"))
            .unwrap_err()
            .is_truncated());
    }
}
