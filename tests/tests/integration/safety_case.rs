//! docs/SAFETY.md stays true: every hazard has controls, every control names the
//! code that implements it and at least one automated test, and every named test
//! and code path exists in this repository.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() && !path.ends_with("target") {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Names of every `#[test]` / `#[tokio::test]` function in the workspace.
fn test_names() -> HashSet<String> {
    let mut files = Vec::new();
    for dir in ["protocol", "server", "tests"] {
        rust_files(&repo().join(dir), &mut files);
    }
    let mut names = HashSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut after_attribute = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with("#[test]") || line.starts_with("#[tokio::test") {
                after_attribute = true;
            } else if after_attribute && (line.starts_with("async fn ") || line.starts_with("fn "))
            {
                let name = line.trim_start_matches("async ").trim_start_matches("fn ");
                names.insert(name.split('(').next().unwrap().to_string());
                after_attribute = false;
            } else if after_attribute && !line.starts_with("#[") && !line.starts_with("//") {
                after_attribute = false;
            }
        }
    }
    names
}

fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn every_control_in_the_safety_case_names_code_and_existing_tests() {
    let doc = std::fs::read_to_string(repo().join("docs/SAFETY.md")).expect("docs/SAFETY.md");
    let tests = test_names();
    let mut hazards = 0;
    let mut controls_in_hazard = 0;
    let mut problems = Vec::new();
    for line in doc.lines() {
        if line.starts_with("### H-") {
            if hazards > 0 && controls_in_hazard == 0 {
                problems.push(format!("hazard {hazards} has no control"));
            }
            hazards += 1;
            controls_in_hazard = 0;
            continue;
        }
        let Some(rest) = line.strip_prefix("- **C") else {
            continue;
        };
        controls_in_hazard += 1;
        let id = rest.split("**").next().unwrap_or("?");
        let (Some(code_at), Some(tests_at)) = (rest.find("*Code:*"), rest.find("*Tests:*")) else {
            problems.push(format!("C{id}: needs *Code:* and *Tests:*"));
            continue;
        };
        for path in backticked(&rest[code_at..tests_at]) {
            if path.contains('/') && !repo().join(&path).exists() {
                problems.push(format!("C{id}: code path {path} does not exist"));
            }
        }
        let named = backticked(&rest[tests_at..]);
        if named.is_empty() {
            problems.push(format!("C{id}: names no test"));
        }
        for test in named {
            // A browser end-to-end test is named by its file in tests/browser.
            if test.ends_with(".test.js") {
                if !repo().join("tests/browser").join(&test).is_file() {
                    problems.push(format!("C{id}: no browser test file {test}"));
                }
                continue;
            }
            if !tests.contains(&test) {
                problems.push(format!("C{id}: no test named {test}"));
            }
        }
    }
    if controls_in_hazard == 0 {
        problems.push(format!("hazard {hazards} has no control"));
    }
    assert!(
        hazards >= 10,
        "the log covers at least H-001 to H-010 (found {hazards})"
    );
    assert!(
        problems.is_empty(),
        "docs/SAFETY.md is out of date:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_consistency_check_notices_a_missing_test() {
    // The checker above must be able to fail: a made-up name is not found.
    assert!(!test_names().contains("a_test_that_does_not_exist_anywhere"));
    assert!(test_names().contains("every_control_in_the_safety_case_names_code_and_existing_tests"));
    assert!(repo().join("tests/browser/phone.test.js").is_file());
    assert!(!repo().join("tests/browser/no-such.test.js").is_file());
}
