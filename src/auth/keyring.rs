//! Ceph keyring files, as `ceph-authtool` writes them, and Ceph's base64 key encoding.
//!
//! ```text
//! [client.admin]
//! <TAB>key = AQCNWgJr5/OYGhAArDEOYUXjlx05kxd84Y9njQ==
//! <TAB>caps mon = "allow *"
//! ```
//!
//! Accepted syntax (checked against `ceph-authtool -l` 16.2.15): `[name]` section headers at the start
//! of a line, the name not padded; `field = value` lines inside a section, with any whitespace around
//! `=` and `_` in field names read as a space (`caps_mon`); quoted values (`"allow *"`); blank lines;
//! comment lines starting with `#` or `;`, and the same after a value or a header. Fields other than
//! `key` and `caps <service>` (e.g. `auid`) are accepted and ignored.
//!
//! Deliberately stricter than Ceph, which lets the last duplicate win and turns a section without a
//! key into an all-zero key of type 0: a repeated section, a second `key` in a section, and a section
//! without a `key` are errors, because it is then unclear which secret was meant.
//!
//! The key is base64 of Ceph's CryptoKey encoding: `le16 type` (1 = AES), `le32 sec` and `le32 nsec`
//! (creation time), `le16 len`, then `len` secret bytes (16 for AES).

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use super::{KeyStore, Random, Secret, MAX_AUTH_NAME_LEN};
use crate::wire::types::Timespec;
use crate::wire::{Reader, WriteLe};

/// Ceph's CryptoKey type for AES-128 (`CEPH_CRYPTO_AES`).
pub const CRYPTO_AES: u16 = 1;
/// The length of an AES secret, the only kind Ceph keyrings hold.
pub const AES_SECRET_LEN: usize = 16;
/// The longest base64 key text we decode (an AES key is 40 characters).
pub const MAX_KEY_TEXT_LEN: usize = 256;
/// The largest keyring file `load` reads.
pub const MAX_KEYRING_FILE_LEN: u64 = 16 * 1024 * 1024;

/// What is wrong with a base64 key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyProblem {
    /// Longer than [`MAX_KEY_TEXT_LEN`] characters.
    TooLong,
    /// Not valid standard base64 with padding.
    Base64,
    /// The decoded bytes end inside the CryptoKey encoding.
    Truncated,
    /// Bytes follow the secret.
    TrailingBytes,
    /// A key type other than AES (1).
    UnsupportedType(u16),
    /// An AES key whose secret is not 16 bytes.
    BadLength(u16),
}

impl fmt::Display for KeyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyProblem::TooLong => write!(f, "key is longer than {MAX_KEY_TEXT_LEN} characters"),
            KeyProblem::Base64 => f.write_str("key is not valid base64"),
            KeyProblem::Truncated => f.write_str("key is too short for Ceph's key encoding"),
            KeyProblem::TrailingBytes => f.write_str("key has extra bytes after the secret"),
            KeyProblem::UnsupportedType(t) => {
                write!(f, "key type {t} is not supported (only 1, AES)")
            }
            KeyProblem::BadLength(n) => write!(f, "AES key has a {n}-byte secret, expected 16"),
        }
    }
}

/// What is wrong with one line of a keyring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineProblem {
    /// `[` without a closing `]`, or text after it.
    BadSectionHeader,
    /// The section name is empty, longer than 256 bytes or contains control characters.
    BadSectionName,
    /// The same section appears twice.
    DuplicateSection(String),
    /// A `field = value` line before the first section.
    EntryOutsideSection,
    /// A line that is neither a section, a comment nor `field = value`.
    MissingEquals,
    /// A quoted value without its closing quote, or text after it.
    BadQuotedValue,
    /// A second `key` in one section.
    DuplicateKey(String),
    /// The `key` value does not decode.
    BadKey(KeyProblem),
    /// A section without a `key` (reported at the section header's line).
    NoKey(String),
}

impl fmt::Display for LineProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineProblem::BadSectionHeader => {
                f.write_str("malformed section header, expected [name]")
            }
            LineProblem::BadSectionName => f.write_str(
                "section name is empty, longer than 256 bytes or contains control characters",
            ),
            LineProblem::DuplicateSection(n) => write!(f, "section [{n}] appears twice"),
            LineProblem::EntryOutsideSection => f.write_str("entry before the first [section]"),
            LineProblem::MissingEquals => f.write_str("expected `field = value`"),
            LineProblem::BadQuotedValue => {
                f.write_str("unterminated quoted value or text after it")
            }
            LineProblem::DuplicateKey(n) => write!(f, "section [{n}] has a second key"),
            LineProblem::BadKey(p) => write!(f, "bad key: {p}"),
            LineProblem::NoKey(n) => write!(f, "section [{n}] has no key"),
        }
    }
}

/// Why a keyring could not be read.
#[derive(Debug)]
pub enum KeyringError {
    /// The file could not be read.
    Io {
        /// The keyring path.
        path: PathBuf,
        /// The underlying error.
        error: std::io::Error,
    },
    /// The file is larger than [`MAX_KEYRING_FILE_LEN`].
    TooLarge {
        /// The keyring path.
        path: PathBuf,
    },
    /// A line (1-based) is malformed.
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        problem: LineProblem,
    },
}

impl fmt::Display for KeyringError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyringError::Io { path, error } => {
                write!(f, "cannot read keyring {}: {error}", path.display())
            }
            KeyringError::TooLarge { path } => write!(
                f,
                "keyring {} is larger than {MAX_KEYRING_FILE_LEN} bytes",
                path.display()
            ),
            KeyringError::Line { line, problem } => write!(f, "keyring line {line}: {problem}"),
        }
    }
}

impl std::error::Error for KeyringError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KeyringError::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// One `[name]` section of a keyring.
#[derive(Clone, Debug)]
pub struct KeyringEntry {
    /// The entity's auth name, e.g. `client.admin`.
    pub name: String,
    /// The secret (redacted in `Debug`).
    pub key: Secret,
    /// When the key was created, as stored in the key encoding.
    pub created: Timespec,
    /// `caps <service> = "<spec>"` lines, in file order, quotes removed.
    pub caps: Vec<(String, String)>,
}

/// A parsed keyring: entity name to secret. Implements [`KeyStore`].
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    entries: BTreeMap<String, KeyringEntry>,
}

/// Decode a base64 Ceph key into its secret and creation time.
pub fn decode_key(text: &str) -> Result<(Secret, Timespec), KeyProblem> {
    if text.len() > MAX_KEY_TEXT_LEN {
        return Err(KeyProblem::TooLong);
    }
    let mut raw = BASE64
        .decode(text.as_bytes())
        .map_err(|_| KeyProblem::Base64)?;
    let result = decode_key_bytes(&raw);
    raw.iter_mut().for_each(|b| *b = 0);
    std::hint::black_box(&mut raw);
    result
}

fn decode_key_bytes(raw: &[u8]) -> Result<(Secret, Timespec), KeyProblem> {
    let mut r = Reader::new(raw);
    let t = |_| KeyProblem::Truncated;
    let ty = r.le16("type").map_err(t)?;
    let sec = r.le32("created.sec").map_err(t)?;
    let nsec = r.le32("created.nsec").map_err(t)?;
    let len = r.le16("secret length").map_err(t)?;
    if ty != CRYPTO_AES {
        return Err(KeyProblem::UnsupportedType(ty));
    }
    if usize::from(len) != AES_SECRET_LEN {
        return Err(KeyProblem::BadLength(len));
    }
    let secret = r.take(AES_SECRET_LEN, "secret").map_err(t)?;
    r.expect_end("key").map_err(|_| KeyProblem::TrailingBytes)?;
    Ok((Secret::new(secret), Timespec { sec, nsec }))
}

/// Encode a 16-byte AES secret as a base64 Ceph key (what `ceph-authtool` prints).
///
/// # Panics
/// If `secret` is longer than 65,535 bytes (it cannot be encoded); callers pass 16 bytes.
pub fn encode_key(secret: &Secret, created: Timespec) -> String {
    let len = u16::try_from(secret.len()).expect("a key secret fits in le16");
    let mut raw = Vec::with_capacity(12 + secret.len());
    raw.put_le16(CRYPTO_AES);
    raw.put_le32(created.sec);
    raw.put_le32(created.nsec);
    raw.put_le16(len);
    raw.extend_from_slice(secret.expose());
    let text = BASE64.encode(&raw);
    raw.iter_mut().for_each(|b| *b = 0);
    std::hint::black_box(&mut raw);
    text
}

/// Strip a `#` or `;` comment from an unquoted value.
fn strip_comment(value: &str) -> &str {
    match value.find(['#', ';']) {
        Some(i) => value[..i].trim_end(),
        None => value,
    }
}

fn valid_section_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_AUTH_NAME_LEN && !name.chars().any(char::is_control)
}

impl Keyring {
    /// An empty keyring.
    pub fn new() -> Self {
        Keyring::default()
    }

    /// Parse keyring text. Errors carry the 1-based line number.
    pub fn parse(text: &str) -> Result<Keyring, KeyringError> {
        struct Open {
            name: String,
            line: usize,
            key: Option<(Secret, Timespec)>,
            caps: Vec<(String, String)>,
        }
        let mut ring = Keyring::new();
        let mut open: Option<Open> = None;

        let close = |ring: &mut Keyring, open: Option<Open>| -> Result<(), KeyringError> {
            let Some(o) = open else { return Ok(()) };
            let Some((key, created)) = o.key else {
                return Err(KeyringError::Line {
                    line: o.line,
                    problem: LineProblem::NoKey(o.name),
                });
            };
            let entry = KeyringEntry {
                name: o.name.clone(),
                key,
                created,
                caps: o.caps,
            };
            ring.entries.insert(o.name, entry);
            Ok(())
        };

        for (idx, raw_line) in text.lines().enumerate() {
            let line = idx + 1;
            let err = |problem| KeyringError::Line { line, problem };
            let l = raw_line.trim();
            if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
                continue;
            }
            if let Some(rest) = l.strip_prefix('[') {
                // Like Ceph: the `[` starts the line, and the name is not padded.
                if !raw_line.starts_with('[') {
                    return Err(err(LineProblem::BadSectionHeader));
                }
                let end = rest.find(']').ok_or(err(LineProblem::BadSectionHeader))?;
                if !strip_comment(rest[end + 1..].trim()).is_empty() {
                    return Err(err(LineProblem::BadSectionHeader));
                }
                let name = &rest[..end];
                if !valid_section_name(name) || name.trim() != name {
                    return Err(err(LineProblem::BadSectionName));
                }
                let same = |o: &Open| o.name == name;
                if ring.entries.contains_key(name) || open.as_ref().is_some_and(same) {
                    return Err(err(LineProblem::DuplicateSection(name.to_string())));
                }
                close(&mut ring, open.take())?;
                open = Some(Open {
                    name: name.to_string(),
                    line,
                    key: None,
                    caps: Vec::new(),
                });
                continue;
            }
            let section = open.as_mut().ok_or(err(LineProblem::EntryOutsideSection))?;
            let (field, value) = l.split_once('=').ok_or(err(LineProblem::MissingEquals))?;
            // Like Ceph, `_` and runs of whitespace in a field name are one space (`caps_mon`).
            let field = field.replace('_', " ");
            let field = field.split_whitespace().collect::<Vec<_>>().join(" ");
            let value = value.trim();
            let value = if let Some(quoted) = value.strip_prefix('"') {
                let end = quoted.find('"').ok_or(err(LineProblem::BadQuotedValue))?;
                if !strip_comment(quoted[end + 1..].trim()).is_empty() {
                    return Err(err(LineProblem::BadQuotedValue));
                }
                &quoted[..end]
            } else {
                strip_comment(value)
            };
            if field == "key" {
                if section.key.is_some() {
                    return Err(err(LineProblem::DuplicateKey(section.name.clone())));
                }
                section.key = Some(decode_key(value).map_err(|p| err(LineProblem::BadKey(p)))?);
            } else if let Some(service) = field.strip_prefix("caps ") {
                section.caps.push((service.to_string(), value.to_string()));
            }
        }
        close(&mut ring, open)?;
        Ok(ring)
    }

    /// Read and parse a keyring file (at most [`MAX_KEYRING_FILE_LEN`] bytes).
    pub fn load(path: impl AsRef<Path>) -> Result<Keyring, KeyringError> {
        let path = path.as_ref();
        let io = |error| KeyringError::Io {
            path: path.to_path_buf(),
            error,
        };
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.len() > MAX_KEYRING_FILE_LEN {
            return Err(KeyringError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        Keyring::parse(&text)
    }

    /// A fresh random AES key created at `created`, as base64 text (like `ceph-authtool --gen-key`).
    pub fn generate_key(rng: &mut dyn Random, created: Timespec) -> String {
        let mut bytes = [0u8; AES_SECRET_LEN];
        rng.fill(&mut bytes);
        let secret = Secret::new(&bytes);
        bytes.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&mut bytes);
        encode_key(&secret, created)
    }

    /// Add or replace the entry for `name`, with no caps.
    pub fn insert(&mut self, name: &str, key: Secret, created: Timespec) {
        let entry = KeyringEntry {
            name: name.to_string(),
            key,
            created,
            caps: Vec::new(),
        };
        self.entries.insert(name.to_string(), entry);
    }

    /// The entry for `name`.
    pub fn get(&self, name: &str) -> Option<&KeyringEntry> {
        self.entries.get(name)
    }

    /// The entity names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// How many entities the keyring holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if the keyring holds no entity.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The keyring in `ceph-authtool`'s format (tab-indented fields, quoted caps). Contains secrets.
    ///
    /// A caps spec holding a `"` cannot be quoted (quoted values have no escapes); it can only
    /// have come from an unquoted value (trimmed, no comment, no leading quote), so it is
    /// written unquoted, which parses back to the same spec.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for e in self.entries.values() {
            out.push_str(&format!(
                "[{}]\n\tkey = {}\n",
                e.name,
                encode_key(&e.key, e.created)
            ));
            for (service, spec) in &e.caps {
                if spec.contains('"') {
                    out.push_str(&format!("\tcaps {service} = {spec}\n"));
                } else {
                    out.push_str(&format!("\tcaps {service} = \"{spec}\"\n"));
                }
            }
        }
        out
    }
}

impl KeyStore for Keyring {
    fn key_for(&self, name: &str) -> Option<Secret> {
        self.entries.get(name).map(|e| e.key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::tests::CountingRng;

    /// Written by `ceph-authtool` 16.2.15 (pacific): `--create-keyring --gen-key -n client.admin
    /// --cap mon 'allow *' ...` then `--gen-key -n client.bob --cap mon 'allow r'`.
    const FIXTURE: &str = include_str!("../../tests/fixtures/client.admin.keyring");

    fn line_problem(text: &str) -> (usize, LineProblem) {
        match Keyring::parse(text) {
            Err(KeyringError::Line { line, problem }) => (line, problem),
            other => panic!("expected a line error, got {other:?}"),
        }
    }

    #[test]
    fn parses_real_ceph_authtool_output() {
        let ring = Keyring::parse(FIXTURE).expect("fixture parses");
        assert_eq!(
            ring.names().collect::<Vec<_>>(),
            ["client.admin", "client.bob"]
        );
        let admin = ring.get("client.admin").expect("admin entry");
        assert_eq!(admin.key.len(), 16);
        // AQCNWgJr...: type 1, created.sec = 0x6b025a8d, nsec = 0x1a98f3e7.
        assert_eq!(
            admin.created,
            Timespec {
                sec: 0x6b02_5a8d,
                nsec: 0x1a98_f3e7
            }
        );
        assert_eq!(
            crate::wire::to_hex(admin.key.expose()),
            "ac310e6145e3971d3993177ce18f678d"
        );
        assert_eq!(admin.caps.len(), 4);
        assert_eq!(admin.caps[2], ("mon".to_string(), "allow *".to_string()));
        assert_eq!(
            ring.get("client.bob").map(|e| e.caps.clone()),
            Some(vec![("mon".into(), "allow r".into())])
        );
        assert!(ring.key_for("client.admin").is_some());
        assert!(ring.key_for("client.nobody").is_none());
        // Our writer reproduces ceph-authtool's text byte for byte.
        assert_eq!(ring.to_text(), FIXTURE);
    }

    #[test]
    fn accepts_comments_blank_lines_and_spacing() {
        // `ceph-authtool -l` accepts this text too.
        let text = "# a comment\n; another\n\n[client.x]   # trailing\nkey=AQCNWgJr5/OYGhAArDEOYUXjlx05kxd84Y9njQ==\r\n\tcaps   osd =   \"allow rw\" ; why\n\tcaps_mon = \"allow r\"\n\tauid = 0\n";
        let ring = Keyring::parse(text).expect("parses");
        let e = ring.get("client.x").expect("entry");
        let caps = [("osd", "allow rw"), ("mon", "allow r")].map(|(a, b)| (a.into(), b.into()));
        assert_eq!(e.caps, caps);
        assert_eq!(
            Keyring::parse(FIXTURE)
                .unwrap()
                .get("client.admin")
                .unwrap()
                .key,
            e.key
        );
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(
            line_problem("key = x\n"),
            (1, LineProblem::EntryOutsideSection)
        );
        assert_eq!(line_problem("[a\n"), (1, LineProblem::BadSectionHeader));
        assert_eq!(line_problem("[a] x\n"), (1, LineProblem::BadSectionHeader));
        // Ceph refuses these two as well.
        assert_eq!(line_problem("  [a]\n"), (1, LineProblem::BadSectionHeader));
        assert_eq!(line_problem("[ a ]\n"), (1, LineProblem::BadSectionName));
        assert_eq!(line_problem("\n[ ]\n"), (2, LineProblem::BadSectionName));
        assert_eq!(
            line_problem("[a]\nnonsense\n"),
            (2, LineProblem::MissingEquals)
        );
        assert_eq!(
            line_problem("[a]\n\n[b]\n"),
            (1, LineProblem::NoKey("a".into()))
        );
        assert_eq!(
            line_problem("[a]\ncaps mon = \"allow\n"),
            (2, LineProblem::BadQuotedValue)
        );
        assert_eq!(
            line_problem("[a]\nkey = !!!\n"),
            (2, LineProblem::BadKey(KeyProblem::Base64))
        );
        let key = "AQCNWgJr5/OYGhAArDEOYUXjlx05kxd84Y9njQ==";
        let dup = format!("[a]\nkey = {key}\n[a]\nkey = {key}\n");
        assert_eq!(
            line_problem(&dup),
            (3, LineProblem::DuplicateSection("a".into()))
        );
        let dup = format!("[a]\nkey = {key}\nkey = {key}\n");
        assert_eq!(
            line_problem(&dup),
            (3, LineProblem::DuplicateKey("a".into()))
        );
        let long = format!("[{}]\n", "n".repeat(MAX_AUTH_NAME_LEN + 1));
        assert_eq!(line_problem(&long), (1, LineProblem::BadSectionName));
        let err = Keyring::parse("[a]\nx\n").unwrap_err().to_string();
        assert_eq!(err, "keyring line 2: expected `field = value`");
    }

    #[test]
    fn key_encoding_is_checked_field_by_field() {
        let enc = |ty: u16, len: u16, secret: &[u8], extra: &[u8]| {
            let mut raw = Vec::new();
            raw.put_le16(ty);
            raw.put_le32(1);
            raw.put_le32(2);
            raw.put_le16(len);
            raw.extend_from_slice(secret);
            raw.extend_from_slice(extra);
            BASE64.encode(raw)
        };
        assert!(decode_key(&enc(1, 16, &[9; 16], &[])).is_ok());
        assert_eq!(
            decode_key(&enc(0, 16, &[9; 16], &[])).err(),
            Some(KeyProblem::UnsupportedType(0))
        );
        assert_eq!(
            decode_key(&enc(1, 32, &[9; 32], &[])).err(),
            Some(KeyProblem::BadLength(32))
        );
        assert_eq!(
            decode_key(&enc(1, 16, &[9; 15], &[])).err(),
            Some(KeyProblem::Truncated)
        );
        assert_eq!(
            decode_key(&enc(1, 16, &[9; 16], &[0])).err(),
            Some(KeyProblem::TrailingBytes)
        );
        assert_eq!(
            decode_key(&"A".repeat(300)).err(),
            Some(KeyProblem::TooLong)
        );
        for cut in 0..12 {
            let raw = &[1u8, 0, 1, 0, 0, 0, 2, 0, 0, 0, 16, 0][..cut];
            assert_eq!(
                decode_key(&BASE64.encode(raw)).err(),
                Some(KeyProblem::Truncated)
            );
        }
    }

    #[test]
    fn generated_keys_round_trip() {
        let created = Timespec {
            sec: 0x6b02_5a8d,
            nsec: 7,
        };
        let text = Keyring::generate_key(&mut CountingRng(0x40), created);
        assert_eq!(text.len(), 40);
        assert!(text.starts_with("AQCNWgJr"), "{text}");
        let (secret, when) = decode_key(&text).expect("decodes");
        assert_eq!(when, created);
        assert_eq!(
            secret.expose(),
            (0x40u8..0x50).collect::<Vec<_>>().as_slice()
        );
        let other = Keyring::generate_key(&mut CountingRng(0x41), created);
        assert_ne!(text, other);
    }

    /// Found by `fuzzing::fuzz_keyring`: an unquoted caps spec holding a `"` was written
    /// quoted, and the written text no longer parsed.
    #[test]
    fn caps_with_a_quote_survive_to_text() {
        let key = encode_key(&Secret::new(&[7; 16]), Timespec::default());
        let text = format!("[a]\nkey = {key}\ncaps osd = allow \"x\" rw\ncaps mon = \"allow r\"\n");
        let ring = Keyring::parse(&text).expect("parses");
        let written = ring.to_text();
        let again = Keyring::parse(&written).expect("to_text parses again");
        let caps = &again.get("a").expect("entry").caps;
        assert_eq!(
            caps,
            &[
                ("osd".to_string(), "allow \"x\" rw".to_string()),
                ("mon".to_string(), "allow r".to_string())
            ]
        );
        assert!(written.contains("caps mon = \"allow r\""), "{written}");
        assert_eq!(again.to_text(), written);
    }

    #[test]
    fn load_reads_files_and_reports_the_path() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let ring = Keyring::load(dir.join("tests/fixtures/client.admin.keyring")).expect("loads");
        assert_eq!(ring.len(), 2);
        let err = Keyring::load(dir.join("tests/fixtures/does-not-exist")).unwrap_err();
        assert!(err.to_string().contains("does-not-exist"), "{err}");
    }
}
