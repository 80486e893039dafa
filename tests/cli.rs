//! The binary's commands as a user runs them: exit codes and output.

use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cutover-auditor"))
}

#[test]
fn simulate_runs_a_scenario_and_prints_where_to_connect() {
    let dir = std::env::temp_dir().join(format!("cutover-cli-simulate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let scenario = dir.join("short.toml");
    std::fs::write(
        &scenario,
        "name = \"short\"\nspeed = 200.0\nduration = \"40s\"\n[[instances]]\nversion = \"1.30.2\"\ncount = 2\n",
    )
    .unwrap();
    let out = bin()
        .args(["simulate", "--scenario"])
        .arg(&scenario)
        .arg("--dir")
        .arg(dir.join("files"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("instance 1: https://127.0.0.11:"),
        "{stdout}"
    );
    let token = std::fs::read_to_string(dir.join("files/token")).unwrap();
    assert!(!token.trim().is_empty());
    assert!(
        !stdout.contains(token.trim()),
        "the token must never be printed"
    );
    assert!(dir.join("files/ca.crt").exists());
}

#[test]
fn usage_errors_exit_64() {
    for args in [
        &["simulate"][..],
        &["simulate", "--scenario"],
        &["frobnicate"],
        &[],
    ] {
        let out = bin().args(args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(64),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("Usage: cutover-auditor"));
    }
}

#[test]
fn a_bad_scenario_is_named() {
    let out = bin()
        .args(["simulate", "--scenario", "/nonexistent/scenario.toml"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(66),
        "unreadable input is EX_NOINPUT"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/scenario.toml"), "{stderr}");
}
