//! The opt-in key log (docs/PROTOCOL.md §11): one line per direction of every keyed
//! connection, so a capture of one direction can be decrypted offline (as TLS tools use
//! `SSLKEYLOGFILE`). Formatting and parsing only; the runtime owns the file.

use std::fmt;

use super::{DirectionKeys, SessionKeys};
use crate::wire::{from_hex, to_hex};

/// The first word of every key-log line.
pub const KEY_LOG_LABEL: &str = "SIMPLEMSGR2";

/// A sink for key-log lines (docs/PROTOCOL.md §11). Implementations append each line
/// (without its newline) to the opt-in file. Keys must never go anywhere else.
pub trait KeyLog: Send + Sync + fmt::Debug {
    /// Record one line.
    fn log(&self, line: &str);
}

/// The two lines for one connection: `SIMPLEMSGR2 c2s T_c key iv mac` and the same for
/// s2c with `T_s`, where `T_c` / `T_s` are the §4.5 transcript hashes, which identify
/// the connection from the bytes of one direction alone.
pub fn key_log_lines(keys: &SessionKeys, t_c: &[u8; 32], t_s: &[u8; 32]) -> [String; 2] {
    let line = |dir: &str, t: &[u8; 32], k: &DirectionKeys| {
        let [key, iv, mac] = k.expose_hex();
        format!("{KEY_LOG_LABEL} {dir} {} {key} {iv} {mac}", to_hex(t))
    };
    [line("c2s", t_c, &keys.c2s), line("s2c", t_s, &keys.s2c)]
}

/// Write both lines of a connection to `sink`, if there is one.
pub fn log_keys(sink: Option<&dyn KeyLog>, keys: &SessionKeys, t_c: &[u8; 32], t_s: &[u8; 32]) {
    if let Some(sink) = sink {
        for l in key_log_lines(keys, t_c, t_s) {
            sink.log(&l);
        }
    }
}

/// A key-log line that does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLogError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub what: &'static str,
}

impl fmt::Display for KeyLogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key log line {}: {}", self.line, self.what)
    }
}

impl std::error::Error for KeyLogError {}

/// One parsed line.
#[derive(Debug)]
pub struct KeyLogEntry {
    /// `c2s` or `s2c`.
    pub direction: String,
    /// The direction's transcript hash (`T_c` or `T_s`).
    pub transcript: [u8; 32],
    /// The direction's frame keys.
    pub keys: DirectionKeys,
}

/// A parsed key-log file.
#[derive(Debug, Default)]
pub struct KeyLogFile {
    /// Every entry, in file order.
    pub entries: Vec<KeyLogEntry>,
}

impl KeyLogFile {
    /// Parse the text of a key-log file. Blank lines and lines starting with `#` are skipped.
    pub fn parse(text: &str) -> Result<KeyLogFile, KeyLogError> {
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |what| KeyLogError { line: i + 1, what };
            let f: Vec<&str> = line.split_ascii_whitespace().collect();
            if f.len() != 6 || f[0] != KEY_LOG_LABEL {
                return Err(err("expected: SIMPLEMSGR2 c2s|s2c TRANSCRIPT KEY IV MAC"));
            }
            if f[1] != "c2s" && f[1] != "s2c" {
                return Err(err("direction must be c2s or s2c"));
            }
            fn arr<const N: usize>(s: &str) -> Option<[u8; N]> {
                from_hex(s)?.try_into().ok()
            }
            let transcript = arr::<32>(f[2]).ok_or(err("transcript: 64 hex digits"))?;
            let key = arr::<16>(f[3]).ok_or(err("key: 32 hex digits"))?;
            let iv = arr::<12>(f[4]).ok_or(err("iv: 24 hex digits"))?;
            let mac = arr::<32>(f[5]).ok_or(err("mac: 64 hex digits"))?;
            entries.push(KeyLogEntry {
                direction: f[1].to_string(),
                transcript,
                keys: DirectionKeys::from_bytes(key, iv, mac),
            });
        }
        Ok(KeyLogFile { entries })
    }

    /// The keys of the direction whose transcript hash is `t`.
    pub fn find(&self, t: &[u8; 32]) -> Option<&KeyLogEntry> {
        self.entries.iter().find(|e| &e.transcript == t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::derive_keys;

    #[test]
    fn lines_round_trip() {
        let keys = derive_keys(&[1u8; 32], &[0x11; 32], &[0x22; 32]);
        let lines = key_log_lines(&keys, &[0x11; 32], &[0x22; 32]);
        assert!(lines[0].starts_with("SIMPLEMSGR2 c2s 1111"));
        let text = format!("# comment\n\n{}\n{}\n", lines[0], lines[1]);
        let f = KeyLogFile::parse(&text).unwrap();
        assert_eq!(f.entries.len(), 2);
        let e = f.find(&[0x22; 32]).unwrap();
        assert_eq!(e.direction, "s2c");
        assert_eq!(e.keys.expose_hex(), keys.s2c.expose_hex());
        assert!(f.find(&[0x33; 32]).is_none());
        assert_eq!(
            KeyLogFile::parse("SIMPLEMSGR2 c2s 00 11 22 33").unwrap_err(),
            KeyLogError {
                line: 1,
                what: "transcript: 64 hex digits"
            }
        );
    }
}
