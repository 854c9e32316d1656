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

/// Auth method on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthArg {
    /// No authentication (plain mode only).
    None,
    /// Shared secret from a Ceph keyring (docs/PROTOCOL.md §4.4).
    Secret,
}

/// Frame protection on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModeArg {
    /// No protection.
    Plain,
    /// HMAC-SHA256 on every frame.
    Signed,
    /// AES-128-GCM on every frame.
    Secure,
}

impl ModeArg {
    /// The protocol's mode.
    pub fn mode(self) -> simplemsgr::proto::Mode {
        match self {
            ModeArg::Plain => simplemsgr::proto::Mode::Plain,
            ModeArg::Signed => simplemsgr::proto::Mode::Signed,
            ModeArg::Secure => simplemsgr::proto::Mode::Secure,
        }
    }
}

/// `--auth`, `--keyring`, `--name`: who we are and which keys we hold.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthArgs {
    /// Auth method.
    #[arg(long, value_enum, default_value_t = AuthArg::None)]
    pub auth: AuthArg,
    /// A Ceph keyring (as ceph-authtool writes it) with the key(s) for `--auth secret`.
    #[arg(long, value_name = "FILE")]
    pub keyring: Option<std::path::PathBuf>,
    /// Our auth name (TYPE.ID) as it appears in the keyring.
    #[arg(long, value_name = "TYPE.ID", default_value = "client.admin")]
    pub name: String,
}

impl AuthArgs {
    fn keyring(&self) -> Result<Option<simplemsgr::auth::Keyring>, CliError> {
        if self.auth == AuthArg::None {
            return Ok(None);
        }
        let path = self
            .keyring
            .as_ref()
            .ok_or_else(|| CliError::usage("--auth secret needs --keyring FILE"))?;
        simplemsgr::auth::Keyring::load(path)
            .map(Some)
            .map_err(|e| CliError::failed(format!("cannot use keyring {}: {e}", path.display())))
    }

    /// The client side's auth configuration for `mode`.
    pub fn client(&self, mode: ModeArg) -> Result<simplemsgr::auth::AuthConfig, CliError> {
        check_mode(self.auth, mode)?;
        match self.keyring()? {
            None => Ok(simplemsgr::auth::AuthConfig::none()),
            Some(ring) => {
                let entry = ring.get(&self.name).ok_or_else(|| {
                    CliError::failed(format!(
                        "the keyring has no key for {} (use --name)",
                        self.name
                    ))
                })?;
                Ok(simplemsgr::auth::AuthConfig::secret_client(
                    self.name.clone(),
                    entry.key.clone(),
                ))
            }
        }
    }

    /// The server side's auth configuration for `mode` (which is then the weakest mode
    /// the server accepts).
    pub fn server(&self, mode: ModeArg) -> Result<simplemsgr::auth::AuthConfig, CliError> {
        check_mode(self.auth, mode)?;
        match self.keyring()? {
            None => Ok(simplemsgr::auth::AuthConfig::none()),
            Some(ring) => Ok(simplemsgr::auth::AuthConfig::secret_server(
                std::sync::Arc::new(ring),
            )),
        }
    }
}

fn check_mode(auth: AuthArg, mode: ModeArg) -> Result<(), CliError> {
    if auth == AuthArg::None && mode != ModeArg::Plain {
        return Err(CliError::usage(
            format!(
                "--mode {mode:?} needs --auth secret: auth none has no key to sign or encrypt with"
            )
            .to_lowercase(),
        ));
    }
    Ok(())
}
