//! One module per subcommand; shared argument parsers and the error type.

pub mod bench;
pub mod ceph;
pub mod dump;
pub mod ping;
pub mod serve;

use std::net::{SocketAddr, ToSocketAddrs};

use simplemsgr::wire::types::EntityAddr;

/// A failed command: the message for stderr and the exit status.
#[derive(Debug)]
pub struct CliError {
    /// What went wrong, in one line.
    pub msg: String,
    /// Exit status: 1 = runtime failure, 2 = usage error.
    pub code: u8,
}

impl CliError {
    /// A runtime failure (exit 1).
    pub fn failed(msg: impl Into<String>) -> Self {
        CliError {
            msg: msg.into(),
            code: 1,
        }
    }

    /// A usage error (exit 2, like clap's own).
    pub fn usage(msg: impl Into<String>) -> Self {
        CliError {
            msg: msg.into(),
            code: 2,
        }
    }
}

/// `IP:PORT`, `[v6]:PORT`, `v2:IP:PORT[/NONCE]`, or `host:PORT`.
pub fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Some(a) = s.parse::<EntityAddr>().ok().and_then(|e| e.addr) {
        return Ok(a);
    }
    if s.contains(':') {
        if let Some(a) = s.to_socket_addrs().ok().and_then(|mut it| it.next()) {
            return Ok(a);
        }
    }
    Err(format!(
        "invalid address '{s}': expected IP:PORT such as 127.0.0.1:6800 (v1:/v2: prefixes allowed)"
    ))
}

/// Positive, finite seconds.
pub fn parse_secs(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86_400.0 => Ok(v),
        _ => Err(format!(
            "invalid duration '{s}': expected seconds greater than 0, e.g. 2 or 0.5"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(parse_addr("127.0.0.1:6800").unwrap().port(), 6800);
        assert_eq!(parse_addr("v2:[::1]:3300/7").unwrap().port(), 3300);
        assert!(parse_addr("nonsense")
            .unwrap_err()
            .contains("expected IP:PORT"));
        assert!(parse_addr("127.0.0.1").is_err());
        assert!(
            parse_secs("0").is_err() && parse_secs("nan").is_err() && parse_secs("1.5").is_ok()
        );
    }
}
