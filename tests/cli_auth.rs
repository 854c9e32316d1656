//! `--auth secret --keyring FILE --name TYPE.ID --mode …` on serve, ping and bench,
//! with the real ceph-authtool keyring fixture; errors people understand.
#![allow(clippy::disallowed_methods)]

mod common;

use common::cli::run;

const KEYRING: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/client.admin.keyring"
);

/// `serve` with extra arguments for at most 20 s; returns the child and its address.
fn serve(extra: &[&str]) -> (std::process::Child, String) {
    common::cli::serve(20, extra)
}

#[test]
fn secure_ping_with_a_keyring_and_clear_refusals() {
    let (mut srv, addr) = serve(&["--auth", "secret", "--keyring", KEYRING, "--mode", "secure"]);
    // The right key, secure mode: works.
    let ok = run(&[
        "ping",
        &addr,
        "--count",
        "2",
        "--interval-ms",
        "0",
        "--auth",
        "secret",
        "--keyring",
        KEYRING,
        "--mode",
        "secure",
    ]);
    // A client that only offers plain: refused, with the server's reason.
    let plain = run(&["ping", &addr, "--count", "1"]);
    // Signed is weaker than the server's minimum: refused, named.
    let signed = run(&[
        "ping",
        &addr,
        "--count",
        "1",
        "--auth",
        "secret",
        "--keyring",
        KEYRING,
        "--mode",
        "signed",
    ]);
    // Another entity of the keyring with the wrong key for it: auth fails.
    let dir = std::env::temp_dir().join(format!("simplemsgr-cli-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let wrong = dir.join("wrong.keyring");
    std::fs::write(
        &wrong,
        "[client.admin]\n\tkey = AQAAAAAAAAAAABAAAAAAAAAAAAAAAAAAAAAAAA==\n",
    )
    .unwrap();
    let bad_key = run(&[
        "ping",
        &addr,
        "--count",
        "1",
        "--auth",
        "secret",
        "--keyring",
        wrong.to_str().unwrap(),
        "--mode",
        "secure",
    ]);
    srv.kill().unwrap();
    srv.wait().unwrap();
    let _ = std::fs::remove_dir_all(&dir);

    assert_eq!(ok.0, 0, "{}", ok.2);
    assert!(ok.1.contains("2 round trips"), "{}", ok.1);
    assert_eq!(plain.0, 1, "{}", plain.2);
    assert!(plain.2.contains("refused"), "{}", plain.2);
    assert_eq!(signed.0, 1, "{}", signed.2);
    assert!(signed.2.contains("requires Secure mode"), "{}", signed.2);
    assert_eq!(bad_key.0, 1, "{}", bad_key.2);
    assert!(
        bad_key.2.contains("refused") || bad_key.2.contains("key"),
        "{}",
        bad_key.2
    );
}

#[test]
fn contradictory_or_missing_auth_flags_are_usage_errors() {
    let (code, _, err) = run(&["ping", "127.0.0.1:1", "--mode", "secure"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("needs --auth secret"), "{err}");
    let (code, _, err) = run(&["ping", "127.0.0.1:1", "--auth", "secret"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("needs --keyring"), "{err}");
    let (code, _, err) = run(&[
        "ping",
        "127.0.0.1:1",
        "--auth",
        "secret",
        "--keyring",
        "/nonexistent/keyring",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cannot use keyring /nonexistent/keyring"),
        "{err}"
    );
    let (code, _, err) = run(&[
        "ping",
        "127.0.0.1:1",
        "--auth",
        "secret",
        "--keyring",
        KEYRING,
        "--name",
        "client.nobody",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no key for client.nobody"), "{err}");
    let (code, _, err) = run(&["serve", "--mode", "signed"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(&["ping", "127.0.0.1:1", "--mode", "sometimes"]);
    assert_eq!(code, 2, "{err}");
}
