//! Running the `simplemsgr` binary from tests: bounded runs and a `serve` child.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary, without the test's RUST_LOG (its log would mix into the output).
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_simplemsgr"));
    c.env_remove("RUST_LOG");
    c
}

/// Run with a bounded wait (60 s); returns (status code, stdout, stderr).
pub fn run(args: &[&str]) -> (i32, String, String) {
    let mut child = bin()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("simplemsgr {args:?} did not exit in 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Start `simplemsgr serve` on a free loopback port for at most `secs` seconds, with
/// `extra` arguments; returns the child and the address it printed.
pub fn serve(secs: u32, extra: &[&str]) -> (Child, String) {
    let secs = secs.to_string();
    let mut args = vec!["serve", "--bind", "127.0.0.1:0", "--duration-secs", &secs];
    args.extend_from_slice(extra);
    let mut child = bin()
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .split_whitespace()
        .find_map(|w| w.parse::<SocketAddr>().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (child, addr)
}
