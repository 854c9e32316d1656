//! `simplemsgr ceph`: run one monitor command over the legacy v1 protocol, like a tiny
//! `ceph` CLI (auth none only).
//!
//! ```text
//! simplemsgr ceph --mon v1:127.0.0.1:6789 status
//! simplemsgr ceph --mon v1:127.0.0.1:6789 --format json mon dump
//! simplemsgr ceph --mon v1:127.0.0.1:6789 '{"prefix":"osd tree"}'
//! ```

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use simplemsgr::runtime::monc::{MonClient, MonError};

/// Output format asked of the monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The monitor's plain-text rendering.
    Plain,
    /// JSON (`"format":"json"` added to the command).
    Json,
}

/// Arguments of `simplemsgr ceph`.
#[derive(Debug, Clone, clap::Args)]
pub struct CephArgs {
    /// The monitor's v1 address, `v1:IP:PORT` (or `IP:PORT`). Required; like the other
    /// options it may also follow the command words (`ceph status --mon ADDR`).
    #[arg(long, value_name = "ADDR")]
    pub mon: Option<String>,
    /// Entity name to authenticate as (auth none).
    #[arg(long, default_value = "client.admin")]
    pub name: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Plain)]
    pub format: Format,
    /// Bound, in seconds, on connecting and on each request.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub timeout: f64,
    /// The command: words such as `status` or `mon dump` (`key=value` words become
    /// arguments), or one JSON object string.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "WORDS"
    )]
    pub words: Vec<String>,
}

impl CephArgs {
    /// Options written after the command words, as Ceph's own CLI allows (`ceph status
    /// --format json`). The parser hands every word after the first one over verbatim (a
    /// command may carry flags of its own, such as `--yes-i-really-mean-it`), so our
    /// options among them, as `--opt VALUE` or `--opt=VALUE`, are lifted out here; every
    /// other word stays part of the command.
    pub fn lift_trailing_options(&mut self) -> Result<(), String> {
        let mut words = Vec::with_capacity(self.words.len());
        let mut it = std::mem::take(&mut self.words).into_iter();
        while let Some(word) = it.next() {
            let (name, inline) = match word.split_once('=') {
                Some((n, v)) if n.starts_with("--") => (n.to_string(), Some(v.to_string())),
                _ => (word.clone(), None),
            };
            if !matches!(name.as_str(), "--mon" | "--name" | "--format" | "--timeout") {
                words.push(word);
                continue;
            }
            let value = match inline {
                Some(v) => v,
                None => it.next().ok_or_else(|| format!("{name} needs a value"))?,
            };
            match name.as_str() {
                "--mon" => self.mon = Some(value),
                "--name" => self.name = value,
                "--format" => {
                    self.format = <Format as clap::ValueEnum>::from_str(&value, true)
                        .map_err(|_| format!("invalid --format {value:?}: plain or json"))?
                }
                _ => {
                    self.timeout = value
                        .parse()
                        .map_err(|_| format!("invalid --timeout {value:?}: a number of seconds"))?
                }
            }
        }
        if words.is_empty() {
            return Err("no command words (such as `status`)".into());
        }
        self.words = words;
        Ok(())
    }
}

/// Exit code for usage errors (bad address, bad command words).
const EXIT_USAGE: u8 = 2;
/// Exit code when the monitor cannot be reached or the protocol fails.
const EXIT_UNREACHABLE: u8 = 1;

/// Parse `v1:IP:PORT` or `IP:PORT`.
pub fn parse_mon_addr(s: &str) -> Result<SocketAddr, String> {
    if s.starts_with("v2:") {
        return Err(format!("{s:?} is a msgr2 address; `simplemsgr ceph` speaks the legacy v1 protocol (use v1:IP:PORT)"));
    }
    let rest = s.strip_prefix("v1:").unwrap_or(s);
    let rest = rest.split('/').next().unwrap_or(rest);
    rest.parse().map_err(|_| {
        format!("invalid monitor address {s:?}: expected v1:IP:PORT, e.g. v1:127.0.0.1:6789")
    })
}

/// Turn command words into Ceph's command JSON.
pub fn command_json(words: &[String], format: Format) -> Result<String, String> {
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut object: Option<String> = None;
    if words.len() == 1 && words[0].trim_start().starts_with('{') {
        object = Some(words[0].trim().to_string());
    } else {
        let mut prefix = Vec::new();
        for w in words {
            match w.split_once('=') {
                Some((k, v)) if !k.is_empty() => fields.push((k.to_string(), v.to_string())),
                _ if !fields.is_empty() => {
                    return Err(format!("command word {w:?} after key=value arguments"));
                }
                _ => prefix.push(w.as_str()),
            }
        }
        if prefix.is_empty() {
            return Err("no command given (e.g. `status` or `mon dump`)".into());
        }
        fields.insert(0, ("prefix".into(), prefix.join(" ")));
    }
    if let Some(obj) = object {
        let body = obj
            .strip_suffix('}')
            .ok_or_else(|| format!("command {obj:?} is not a JSON object"))?;
        if format == Format::Json && !obj.contains("\"format\"") {
            let sep = if body.trim_end().ends_with('{') {
                ""
            } else {
                ","
            };
            return Ok(format!("{body}{sep}\"format\":\"json\"}}"));
        }
        return Ok(obj);
    }
    if format == Format::Json && !fields.iter().any(|(k, _)| k == "format") {
        fields.push(("format".into(), "json".into()));
    }
    let parts: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}:{}", json_str(k), json_str(v)))
        .collect();
    Ok(format!("{{{}}}", parts.join(",")))
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Run `simplemsgr ceph`.
pub fn run(args: &CephArgs) -> ExitCode {
    let mut args = args.clone();
    if let Err(e) = args.lift_trailing_options() {
        return fail(EXIT_USAGE, &e);
    }
    let Some(mon) = args.mon.as_deref() else {
        return fail(
            EXIT_USAGE,
            "the monitor's address is required: --mon <ADDR> (v1:IP:PORT)",
        );
    };
    let addr = match parse_mon_addr(mon) {
        Ok(a) => a,
        Err(e) => return fail(EXIT_USAGE, &e),
    };
    let cmd = match command_json(&args.words, args.format) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_USAGE, &e),
    };
    if !(args.timeout.is_finite() && args.timeout > 0.0 && args.timeout <= 3600.0) {
        return fail(EXIT_USAGE, "--timeout must be between 0 and 3600 seconds");
    }
    let timeout = Duration::from_secs_f64(args.timeout);
    let mut client = match MonClient::connect(addr, &args.name, timeout) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_UNREACHABLE, &e.to_string()),
    };
    log::debug!("sending {cmd} to {addr} (fsid {})", client.fsid());
    let reply = match client.command(&cmd) {
        Ok(r) => r,
        Err(e) => return fail(EXIT_UNREACHABLE, &describe(&e)),
    };
    client.close();
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(&reply.output);
    if !reply.output.is_empty() && !reply.output.ends_with(b"\n") {
        let _ = stdout.write_all(b"\n");
    }
    let _ = stdout.flush();
    if reply.r < 0 {
        let text = if reply.rs.is_empty() {
            std::io::Error::from_raw_os_error(-reply.r).to_string()
        } else {
            reply.rs
        };
        eprintln!("Error {}: {}", reply.r, text);
        return ExitCode::from(u8::try_from(-reply.r).unwrap_or(1).max(1));
    }
    if !reply.rs.is_empty() {
        eprintln!("{}", reply.rs);
    }
    ExitCode::SUCCESS
}

fn describe(e: &MonError) -> String {
    e.to_string()
}

fn fail(code: u8, msg: &str) -> ExitCode {
    eprintln!("simplemsgr ceph: {msg}");
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    fn args(words: &[&str]) -> CephArgs {
        CephArgs {
            mon: None,
            name: "client.admin".into(),
            format: Format::Plain,
            timeout: 10.0,
            words: w(words),
        }
    }

    /// `ceph status --format json --mon ADDR`, as Ceph users type it: our options after
    /// the words are lifted out (both spellings); the command's own flags stay.
    #[test]
    fn options_after_the_words_are_ours_other_flags_stay_in_the_command() {
        let mut a = args(&["status", "--format", "json", "--mon=v1:127.0.0.1:6789"]);
        a.lift_trailing_options().unwrap();
        assert_eq!(a.words, w(&["status"]));
        assert_eq!(a.format, Format::Json);
        assert_eq!(a.mon.as_deref(), Some("v1:127.0.0.1:6789"));
        let mut a = args(&[
            "osd",
            "pool",
            "rm",
            "p",
            "p",
            "--yes-i-really-really-mean-it",
            "--timeout",
            "2.5",
            "--name",
            "client.x",
        ]);
        a.lift_trailing_options().unwrap();
        assert_eq!(
            a.words,
            w(&[
                "osd",
                "pool",
                "rm",
                "p",
                "p",
                "--yes-i-really-really-mean-it"
            ])
        );
        assert_eq!((a.timeout, a.name.as_str()), (2.5, "client.x"));
        for (bad, want) in [
            (&["status", "--mon"][..], "--mon needs a value"),
            (&["status", "--format", "xml"], "invalid --format"),
            (&["status", "--timeout=soon"], "invalid --timeout"),
            (&["--format", "json"], "no command words"),
        ] {
            let err = args(bad).lift_trailing_options().unwrap_err();
            assert!(err.contains(want), "{bad:?}: {err}");
        }
    }

    #[test]
    fn words_become_command_json() {
        assert_eq!(
            command_json(&w(&["status"]), Format::Plain).unwrap(),
            r#"{"prefix":"status"}"#
        );
        assert_eq!(
            command_json(&w(&["mon", "dump"]), Format::Json).unwrap(),
            r#"{"prefix":"mon dump","format":"json"}"#
        );
        assert_eq!(
            command_json(&w(&["config", "get", "who=mon.a", "key=x"]), Format::Plain).unwrap(),
            r#"{"prefix":"config get","who":"mon.a","key":"x"}"#
        );
        assert_eq!(
            command_json(&w(&[r#"{"prefix":"fsid"}"#]), Format::Json).unwrap(),
            r#"{"prefix":"fsid","format":"json"}"#
        );
        assert!(command_json(&w(&["a=b"]), Format::Plain).is_err());
        assert!(command_json(&w(&["x=1", "status"]), Format::Plain).is_err());
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse_mon_addr("v1:127.0.0.1:6789").unwrap(),
            "127.0.0.1:6789".parse().unwrap()
        );
        assert_eq!(
            parse_mon_addr("127.0.0.1:1/0").unwrap(),
            "127.0.0.1:1".parse().unwrap()
        );
        assert!(parse_mon_addr("v2:127.0.0.1:3300")
            .unwrap_err()
            .contains("msgr2"));
        assert!(parse_mon_addr("nonsense").is_err());
    }
}
