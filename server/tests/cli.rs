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

#[test]
fn help_names_the_audit_command_and_verify_help_is_complete() {
    let out = peerhub().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("audit"), "{help}");

    let out = peerhub()
        .args(["audit", "verify", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for words in [
        "--data <DIR>",
        "audit chain OK: N entries, last hash H",
        "audit chain BROKEN at entry S: reason",
        "exits 0",
        "exits 1",
        "Exits 2",
        "stop the server first",
    ] {
        assert!(help.contains(words), "{words:?} missing from:\n{help}");
    }
}

#[test]
fn audit_verify_without_a_data_folder_is_a_usage_error() {
    let out = peerhub()
        .args(["audit", "verify"])
        .env_remove("PEERHUB_DATA")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--data <DIR>"));
}

#[test]
fn serving_flags_are_refused_with_the_audit_command() {
    let out = peerhub()
        .args(["--listen", "127.0.0.1:0", "audit", "verify", "--data", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
}

#[test]
fn audit_verify_of_a_folder_without_a_store_exits_2_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = peerhub()
        .args(["audit", "verify", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("holds no peerhub store"), "{err}");
    assert!(out.stdout.is_empty());
    assert!(!data.exists(), "verifying never creates a store");
}

#[test]
fn audit_verify_of_a_fresh_store_is_ok_with_no_entries() {
    let dir = tempfile::tempdir().unwrap();
    drop(peerhub_server::store::Store::open(dir.path()).unwrap());
    let out = peerhub()
        .args(["audit", "verify", "--data"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("audit chain OK: 0 entries, last hash {}", "0".repeat(64))
    );
}

#[test]
fn every_command_has_help_naming_its_options() {
    let commands: &[(&[&str], &[&str])] = &[
        (&["backup"], &["--data", "--out"]),
        (&["restore"], &["--from", "--data"]),
        (
            &["invite"],
            &["--data", "--role", "--group", "--hours", "--public-url"],
        ),
        (&["export"], &["--data", "--key"]),
        (&["erase"], &["--data", "--key", "stop the server first"]),
        (
            &["group", "create"],
            &[
                "--data",
                "--id",
                "--title",
                "--kind",
                "--window",
                "--agreement",
            ],
        ),
        (&["group", "schedule"], &["--data", "--group", "--window"]),
        (&["group", "list"], &["--data"]),
        (
            &["escalation", "list"],
            &[
                "--data",
                "--all",
                "--state",
                "--limit",
                "Never a flag's words",
            ],
        ),
        (
            &["escalation", "resolve"],
            &["--data", "<ID>", "--outcome", "already resolved"],
        ),
        (&["rota", "list"], &["--data"]),
        (&["rota", "set"], &["--data", "--file"]),
        (&["audit", "verify"], &["--data"]),
    ];
    for (command, options) in commands {
        let out = peerhub().args(*command).arg("--help").output().unwrap();
        assert!(out.status.success(), "{command:?} --help");
        let help = String::from_utf8_lossy(&out.stdout);
        for option in *options {
            assert!(
                help.contains(option),
                "{command:?} --help lacks {option}:\n{help}"
            );
        }
    }
    let out = peerhub().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for command in [
        "backup",
        "restore",
        "invite",
        "export",
        "erase",
        "group",
        "rota",
        "audit",
        "escalation",
    ] {
        assert!(help.contains(command), "--help lacks the {command} command");
    }
}
