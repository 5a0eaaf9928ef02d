//! Configuration layers on the real binary: defaults < file < environment < flags,
//! every bad value refused with its key named and nothing started, secrets never
//! printed. `--check-config` prints the merged result and exits.

#![allow(
    clippy::unwrap_used,
    reason = "tests may unwrap; allow-unwrap-in-tests does not reach helpers outside #[test] fns"
)]

use std::path::Path;
use std::process::{Command, Output};

/// A bad configuration: environment, arguments, and what the refusal must name.
type BadCase<'a> = (Vec<(&'a str, &'a str)>, Vec<String>, &'a str);

/// The binary with an empty environment, so the machine's own variables play no
/// part (the tests give each layer explicitly).
fn peerhub(env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_peerhub"));
    command.env_clear();
    for (k, v) in env {
        command.env(k, v);
    }
    command
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

fn check(env: &[(&str, &str)], args: &[&str]) -> Output {
    peerhub(env)
        .arg("--check-config")
        .args(args)
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The value printed for `key` in `section` ("" for top-level keys).
fn value(out: &Output, section: &str, key: &str) -> String {
    let text = stdout(out);
    let mut current = "";
    for line in text.lines() {
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = name;
        } else if current == section {
            if let Some(v) = line.strip_prefix(&format!("{key} = ")) {
                return v.to_string();
            }
        }
    }
    panic!("{section}.{key} not printed in\n{text}")
}

#[test]
fn each_layer_overrides_the_one_below() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "peerhub.toml",
        "listen = \"127.0.0.1:7171\"\n\
         [limits]\nmessages_per_second = 7\nmessage_burst = 9\nflags_per_minute = 30\n\
         [escalation]\nurgent_deadline_ms = 120000\n",
    );
    // Defaults alone.
    let out = check(&[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(value(&out, "", "listen"), "\"127.0.0.1:7070\"");
    assert_eq!(value(&out, "limits", "messages_per_second"), "5");
    // The file over the defaults.
    let out = check(&[], &["--config", &file]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(value(&out, "", "listen"), "\"127.0.0.1:7171\"");
    assert_eq!(value(&out, "limits", "messages_per_second"), "7");
    assert_eq!(
        value(&out, "limits", "commands_per_second"),
        "5",
        "untouched"
    );
    // The environment over the file (the file named by PEERHUB_CONFIG too).
    let env = [
        ("PEERHUB_CONFIG", file.as_str()),
        ("PEERHUB_LIMITS_MESSAGES_PER_SECOND", "8"),
        ("PEERHUB_LIMITS_MESSAGE_BURST", "10"),
        (
            "PEERHUB_ALLOW_ORIGINS",
            "https://a.example, https://b.example",
        ),
    ];
    let out = check(&env, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(value(&out, "limits", "messages_per_second"), "8");
    assert_eq!(value(&out, "limits", "message_burst"), "10");
    assert_eq!(
        value(&out, "limits", "flags_per_minute"),
        "30",
        "from the file"
    );
    assert_eq!(
        value(&out, "", "allow_origins"),
        "[\"https://a.example\", \"https://b.example\"]"
    );
    // Flags over the environment.
    let out = check(
        &env,
        &[
            "--message-burst",
            "11",
            "--deadline-urgent-ms",
            "90000",
            "--listen",
            "127.0.0.1:7272",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(value(&out, "limits", "message_burst"), "11");
    assert_eq!(
        value(&out, "limits", "messages_per_second"),
        "8",
        "env kept"
    );
    assert_eq!(value(&out, "escalation", "urgent_deadline_ms"), "90000");
    assert_eq!(value(&out, "", "listen"), "\"127.0.0.1:7272\"");
}

#[test]
fn bad_configuration_is_refused_with_its_key_named_and_nothing_started() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_string_lossy().into_owned();
    let cases: Vec<BadCase> = vec![
        (
            vec![],
            vec![
                "--config".into(),
                write(
                    dir.path(),
                    "typo.toml",
                    "[limits]\nmesages_per_second = 7\n",
                ),
            ],
            "limits.mesages_per_second",
        ),
        (
            vec![],
            vec![
                "--config".into(),
                write(
                    dir.path(),
                    "section.toml",
                    "[limit]\nmessages_per_second = 7\n",
                ),
            ],
            "`limit`",
        ),
        (
            vec![],
            vec![
                "--config".into(),
                write(
                    dir.path(),
                    "type.toml",
                    "[limits]\nmax_connections = \"many\"\n",
                ),
            ],
            "limits.max_connections",
        ),
        (
            vec![],
            vec![
                "--config".into(),
                write(
                    dir.path(),
                    "zero.toml",
                    "[limits]\nmax_members_per_group = 0\n",
                ),
            ],
            "limits.max_members_per_group",
        ),
        (
            vec![],
            vec![
                "--config".into(),
                write(dir.path(), "broken.toml", "listen = \n"),
            ],
            "broken.toml",
        ),
        (
            vec![],
            vec![
                "--config".into(),
                dir.path().join("missing.toml").to_string_lossy().into(),
            ],
            "missing.toml",
        ),
        (
            vec![("PEERHUB_LIMITS_FLAGS_PER_MINUTE", "lots")],
            vec![],
            "PEERHUB_LIMITS_FLAGS_PER_MINUTE",
        ),
        (
            vec![("PEERHUB_LIMTS_FLAGS", "3")],
            vec![],
            "PEERHUB_LIMTS_FLAGS",
        ),
        (
            vec![],
            vec!["--messages-per-second".into(), "0".into()],
            "limits.messages_per_second",
        ),
        (
            vec![],
            vec![
                "--config".into(),
                write(
                    dir.path(),
                    "idle.toml",
                    "[limits]\nping_interval_secs = 60\nidle_timeout_secs = 30\n",
                ),
            ],
            "limits.idle_timeout_secs",
        ),
    ];
    for (env, args, named) in cases {
        let out = peerhub(&env)
            .args(&args)
            .args(["--data", &data])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{env:?} {args:?}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains(named),
            "{env:?} {args:?} should name {named}: {}",
            stderr(&out)
        );
        assert!(
            !Path::new(&data).exists(),
            "{env:?} {args:?}: refused before creating anything"
        );
    }
}

#[test]
fn secrets_are_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "https://pager.example/hook?token=s3cr3t-t0ken";
    let file = write(
        dir.path(),
        "p.toml",
        &format!("[escalation]\npager_url = \"{secret}\"\n"),
    );
    let out = check(&[], &["--config", &file]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(value(&out, "escalation", "pager_url"), "\"(hidden)\"");
    // A bad one is refused without being quoted.
    for bad in ["ftp://s3cr3t-t0ken", "s3cr3t-t0ken"] {
        let out = check(&[("PEERHUB_ESCALATION_PAGER_URL", bad)], &[]);
        assert_eq!(out.status.code(), Some(2));
        let said = stderr(&out) + &stdout(&out);
        assert!(said.contains("escalation.pager_url"), "{said}");
        assert!(!said.contains("s3cr3t"), "{said}");
    }
    let out = check(&[], &["--pager-url", "ftp://s3cr3t-t0ken"]);
    assert!(!(stderr(&out) + &stdout(&out)).contains("s3cr3t"));
}

#[test]
fn the_shipped_example_file_is_valid_and_changes_nothing() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../peerhub.example.toml");
    let with = check(&[], &["--config", example]);
    assert!(with.status.success(), "{}", stderr(&with));
    let without = check(&[], &[]);
    assert_eq!(stdout(&with), stdout(&without));
}

#[test]
fn help_documents_the_layers_and_every_flag() {
    let out = peerhub(&[]).arg("--help").output().unwrap();
    let help = stdout(&out);
    for needle in [
        "--config",
        "--check-config",
        "PEERHUB_CONFIG",
        "PEERHUB_LIMITS_MESSAGES_PER_SECOND",
        "peerhub.example.toml",
        "--metrics-public",
        "[key: limits.flags_per_minute",
    ] {
        assert!(
            help.contains(needle),
            "{needle} missing from --help:\n{help}"
        );
    }
}

#[test]
fn environment_values_take_their_keys_types() {
    // A folder named 2024 is a folder, not a number; a boolean key wants a boolean.
    let out = check(
        &[
            ("PEERHUB_DATA", "2024"),
            // (public_url must now be a URL: a free-text key stands in for it)
            ("PEERHUB_ESCALATION_SUPPORT_WORDING", "true"),
            ("PEERHUB_DEMO", "true"),
        ],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(value(&out, "", "data"), "\"2024\"");
    assert_eq!(value(&out, "escalation", "support_wording"), "\"true\"");
    assert_eq!(value(&out, "", "demo"), "true");
    let out = check(&[("PEERHUB_DEMO", "yes")], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("PEERHUB_DEMO"), "{}", stderr(&out));
}

#[test]
fn alerting_settings_are_checked_and_the_pager_key_is_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "a.toml",
        "[escalation]\npager_url = \"https://events.pagerduty.com/v2/enqueue\"\n\
         pager_format = \"pagerduty\"\npager_key = \"r0ut1ng-s3cr3t\"\n\
         push_contact = \"mailto:oncall@example.org\"\n",
    );
    let out = check(
        &[("PEERHUB_ESCALATION_PUSH_REPEAT_SECS", "45")],
        &["--config", &file],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(value(&out, "escalation", "pager_format"), "\"pagerduty\"");
    assert_eq!(value(&out, "escalation", "pager_key"), "\"(hidden)\"");
    assert_eq!(value(&out, "escalation", "push_repeat_secs"), "45");
    assert!(!stdout(&out).contains("s3cr3t"));
    for (env, key) in [
        ("PEERHUB_ESCALATION_PAGER_FORMAT", "escalation.pager_format"),
        ("PEERHUB_ESCALATION_PUSH_CONTACT", "escalation.push_contact"),
        (
            "PEERHUB_ESCALATION_PUSH_REPEAT_SECS",
            "escalation.push_repeat_secs",
        ),
    ] {
        let bad = if env.ends_with("SECS") {
            "0"
        } else {
            "pagerdooty"
        };
        let out = check(&[(env, bad)], &[]);
        assert_eq!(out.status.code(), Some(2), "{env}={bad}");
        let said = stderr(&out) + &stdout(&out);
        assert!(said.contains(key), "{said}");
    }
}
