//! The `crogia` binary on its own, before any server or engine is involved:
//! what an operator sees when the command line or the config is wrong.
//!
//! Being an integration test of this package also makes `cargo test
//! --workspace` build `target/debug/crogia` with the workspace's features,
//! which the end-to-end tests in `tests/` then run as is.

use std::process::{Command, Output};

fn crogia(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_crogia"))
        .args(args)
        .env_remove("CROGIA_CONFIG")
        .output()
        .expect("running crogia")
}

#[test]
fn a_config_with_an_unknown_key_stops_the_binary_with_its_name_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("crogia.toml");
    std::fs::write(&config, "[sandbox]\nmemroy = \"1g\"\n").unwrap();
    let out = crogia(&["serve", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("memroy") && stderr.contains(&config.display().to_string()),
        "{stderr}"
    );
}

#[test]
fn a_missing_config_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("absent.toml");
    let out = crogia(&["serve", "--config", config.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("absent.toml"), "{stderr}");
}

#[test]
fn version_and_help_name_the_commands() {
    let out = crogia(&["--version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("crogia {}", env!("CARGO_PKG_VERSION"))
    );
    let out = crogia(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for command in ["serve", "gc", "tools"] {
        assert!(help.contains(command), "{command} missing from:\n{help}");
    }
}

#[test]
fn an_unknown_subcommand_fails_with_usage() {
    let out = crogia(&["serv"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("serve") && stderr.contains("Usage"),
        "{stderr}"
    );
}

#[test]
fn a_misspelt_crogia_variable_stops_the_binary_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("crogia.toml");
    std::fs::write(&config, "").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_crogia"))
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("CROGIA_AUHT_TOKENS", "0123456789abcdef0123")
        .output()
        .expect("running crogia");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("CROGIA_AUHT_TOKENS") && stderr.contains("no configuration section [auht]"),
        "{stderr}"
    );
}
