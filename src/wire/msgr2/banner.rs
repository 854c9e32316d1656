//! The msgr2 banner: `"ceph " HEX(supported) " " HEX(required) "\n"` (docs/PROTOCOL.md §2.1).

use std::fmt;

/// Both sides' first bytes: the protocol features they support and require.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Banner {
    /// Protocol features this side supports (§2.1 table).
    pub supported: u64,
    /// Protocol features the peer must support.
    pub required: u64,
}

/// Why a banner was refused. On any of these the connection is closed without a reply (§2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BannerError {
    /// The first bytes are not `ceph `.
    NotCeph,
    /// `ceph v…`: the peer speaks the legacy v1 protocol (§10).
    LegacyBanner,
    /// The banner is not in the one canonical form; the text says how.
    Malformed(&'static str),
    /// One side requires protocol features the other does not support.
    IncompatibleFeatures {
        /// The required bits that are not supported.
        missing: u64,
    },
}

impl fmt::Display for BannerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BannerError::NotCeph => f.write_str("peer did not send a ceph banner"),
            BannerError::LegacyBanner => f.write_str("peer sent a legacy v1 banner (ceph v027)"),
            BannerError::Malformed(why) => write!(f, "malformed msgr2 banner: {why}"),
            BannerError::IncompatibleFeatures { missing } => {
                write!(f, "incompatible protocol features: missing 0x{missing:x}")
            }
        }
    }
}

impl std::error::Error for BannerError {}

const PREFIX: &[u8; 5] = b"ceph ";

impl Banner {
    /// The longest banner: `ceph ` + 16 digits + space + 16 digits + newline (§2.3 `MAX_BANNER_LEN`).
    pub const MAX_LEN: usize = 39;

    /// Append the banner's canonical encoding.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(
            format!("ceph {:x} {:x}\n", self.supported, self.required).as_bytes(),
        );
    }

    /// Parse a banner at the start of `buf`. `Ok(None)`: not enough bytes yet.
    /// On success also returns how many bytes the banner used.
    pub fn parse(buf: &[u8]) -> Result<Option<(Banner, usize)>, BannerError> {
        // Judge the prefix as soon as any byte of it is present, so a v1 or garbage peer
        // is refused without waiting for bytes it will never send.
        let n = buf.len().min(PREFIX.len());
        if buf[..n] != PREFIX[..n] {
            return Err(BannerError::NotCeph);
        }
        if buf.len() <= PREFIX.len() {
            return Ok(None);
        }
        if buf[5] == b'v' {
            return Err(BannerError::LegacyBanner);
        }
        let window = &buf[..buf.len().min(Self::MAX_LEN)];
        let Some(nl) = window.iter().position(|&b| b == b'\n') else {
            if buf.len() >= Self::MAX_LEN {
                return Err(BannerError::Malformed("banner too long"));
            }
            return Ok(None);
        };
        let body = &buf[PREFIX.len()..nl];
        let mut parts = body.split(|&b| b == b' ');
        let (Some(sup), Some(req), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(BannerError::Malformed(
                "expected exactly two space-separated numbers",
            ));
        };
        let supported = parse_hex(sup)?;
        let required = parse_hex(req)?;
        Ok(Some((
            Banner {
                supported,
                required,
            },
            nl + 1,
        )))
    }

    /// Check both sides' requirements (`self` is ours) and return the negotiated
    /// features, `our.supported & peer.supported` (§2.1).
    pub fn negotiate(&self, peer: &Banner) -> Result<u64, BannerError> {
        let missing = peer.required & !self.supported;
        if missing != 0 {
            return Err(BannerError::IncompatibleFeatures { missing });
        }
        let missing = self.required & !peer.supported;
        if missing != 0 {
            return Err(BannerError::IncompatibleFeatures { missing });
        }
        Ok(self.supported & peer.supported)
    }
}

/// Lowercase hex, 1..=16 digits, no leading zero except the number 0 itself.
fn parse_hex(digits: &[u8]) -> Result<u64, BannerError> {
    if digits.is_empty() {
        return Err(BannerError::Malformed("empty number"));
    }
    if digits.len() > 16 {
        return Err(BannerError::Malformed("number longer than 16 hex digits"));
    }
    if digits.len() > 1 && digits[0] == b'0' {
        return Err(BannerError::Malformed("leading zero"));
    }
    let mut v = 0u64;
    for &d in digits {
        let x = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return Err(BannerError::Malformed("not a lowercase hex digit")),
        };
        v = (v << 4) | u64::from(x);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(b: Banner) -> Vec<u8> {
        let mut v = Vec::new();
        b.encode(&mut v);
        v
    }

    #[test]
    fn encodes_canonically_and_round_trips() {
        assert_eq!(
            enc(Banner {
                supported: 1,
                required: 0
            }),
            b"ceph 1 0\n"
        );
        let max = Banner {
            supported: u64::MAX,
            required: u64::MAX,
        };
        let bytes = enc(max);
        assert_eq!(bytes.len(), Banner::MAX_LEN);
        assert_eq!(Banner::parse(&bytes).unwrap(), Some((max, 39)));
        let mut with_more = enc(Banner {
            supported: 0xabc,
            required: 0,
        });
        with_more.extend_from_slice(b"\x01\x02");
        assert_eq!(
            Banner::parse(&with_more).unwrap(),
            Some((
                Banner {
                    supported: 0xabc,
                    required: 0
                },
                11
            ))
        );
    }

    #[test]
    fn every_prefix_needs_more() {
        let bytes = enc(Banner {
            supported: 0x1234,
            required: 1,
        });
        for i in 0..bytes.len() {
            assert_eq!(Banner::parse(&bytes[..i]), Ok(None), "prefix {i}");
        }
    }

    #[test]
    fn refuses_everything_but_the_canonical_form() {
        assert_eq!(
            Banner::parse(b"GET / HTTP/1.1\r\n"),
            Err(BannerError::NotCeph)
        );
        assert_eq!(Banner::parse(b"cex"), Err(BannerError::NotCeph));
        assert_eq!(Banner::parse(b"ceph v027"), Err(BannerError::LegacyBanner));
        let bad: &[&[u8]] = &[
            b"ceph 1\n",
            b"ceph 1 0 0\n",
            b"ceph  1 0\n",
            b"ceph 1 0 \n",
            b"ceph 01 0\n",
            b"ceph A 0\n",
            b"ceph 1 \n",
            b"ceph 11111111111111111 0\n",
            b"ceph 1 0\r\n",
        ];
        for b in bad {
            assert!(
                matches!(Banner::parse(b), Err(BannerError::Malformed(_))),
                "{:?}",
                b
            );
        }
        assert_eq!(
            Banner::parse(&[b'c', b'e', b'p', b'h', b' ', b'1'].repeat(7)),
            Err(BannerError::Malformed("banner too long"))
        );
    }

    #[test]
    fn negotiation_checks_both_directions() {
        let ours = Banner {
            supported: 1,
            required: 0,
        };
        assert_eq!(
            ours.negotiate(&Banner {
                supported: 3,
                required: 1
            }),
            Ok(1)
        );
        assert_eq!(
            ours.negotiate(&Banner {
                supported: 0,
                required: 0
            }),
            Ok(0)
        );
        assert_eq!(
            ours.negotiate(&Banner {
                supported: 6,
                required: 4
            }),
            Err(BannerError::IncompatibleFeatures { missing: 4 })
        );
        let strict = Banner {
            supported: 1,
            required: 1,
        };
        assert_eq!(
            strict.negotiate(&Banner {
                supported: 0,
                required: 0
            }),
            Err(BannerError::IncompatibleFeatures { missing: 1 })
        );
    }
}
