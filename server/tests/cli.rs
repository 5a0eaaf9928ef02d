//! The `peerhub` binary's command line. (Also makes `cargo test --workspace` build
//! the binary, which the process tests in `tests/` start.)

use std::process::Command;

fn peerhub() -> Command {
    Command::new(env!("CARGO_BIN_EXE_peerhub"))
}

#[test]
fn plain_ws_on_a_public_address_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = peerhub()
        .args(["--listen", "0.0.0.0:0", "--data"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to serve plain ws://") && err.contains("--tls-self-signed"),
        "{err}"
    );
    assert!(!dir.path().join("data").exists(), "nothing was created");
}

#[test]
fn half_a_certificate_pair_is_refused() {
    let out = peerhub().args(["--tls-cert", "cert.pem"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--tls-cert and --tls-key go together"));
}

#[test]
fn help_names_every_option() {
    let out = peerhub().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--data",
        "--tls-cert",
        "--tls-key",
        "--tls-self-signed",
        "--demo",
        "--public-url",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}
