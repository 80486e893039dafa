//! The binary's commands as a user runs them: exit codes and output.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cutover_auditor::config::Config;

use crate::support::process::{Guard, Serve, bin};

/// A fresh directory for one test's files.
fn test_dir(name: &str) -> PathBuf {
    crate::support::daemon::test_dir(&format!("cli-{name}"))
}

/// The child's stdout, line by line, as it comes.
fn stdout_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Reads lines until one contains `needle`; returns every line read.
#[track_caller]
fn read_until(lines: &mpsc::Receiver<String>, needle: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let done = line.contains(needle);
                seen.push(line);
                if done {
                    return seen;
                }
            }
            Err(err) => panic!("no line with {needle:?} ({err}); got {seen:#?}"),
        }
    }
}

/// Sends `signal` (e.g. "INT") to the child with kill(1).
fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal}");
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
        &["simulate", "--scenario", "x.toml", "--speed", "0"],
        &["serve", "--config", "x.toml", "--clock-start", "banana"],
        &["serve", "--config", "x.toml", "--speed", "fast"],
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

#[test]
fn a_taken_port_exits_69_and_says_how_to_choose_another() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address").to_string();

    let out = bin()
        .args(["demo", "--listen", &addr, "--for", "1m"])
        .output()
        .expect("demo runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "demo: {stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot listen on {addr}: address in use: pass --listen ADDR"
        )),
        "{stderr}"
    );

    let dir = test_dir("taken-port");
    let ca = dir.join("ca.crt");
    cutover_auditor::simulator::tls::ClusterCa::generate()
        .expect("CA")
        .write(&ca)
        .expect("write CA");
    let token = dir.join("token");
    std::fs::write(&token, "not-a-real-token\n").expect("token");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"{addr}\"\n[[targets.static]]\nurl = \"https://127.0.0.10:6443\"\nca_file = \"{}\"\ntoken_file = \"{}\"\n[state]\npath = \"\"\n",
            ca.display(),
            token.display()
        ),
    )
    .expect("config");
    let out = bin()
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .expect("serve runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "serve: {stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot listen on {addr}: address in use: set `listen` in {}",
            config.display()
        )),
        "{stderr}"
    );
    drop(taken);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn demo_says_when_it_stops_and_prints_the_scripted_restart() {
    // 41 simulated minutes at 600x: about four real seconds.
    let mut child = Guard(
        bin()
            .args([
                "demo",
                "--listen",
                "127.0.0.1:0",
                "--speed",
                "600",
                "--for",
                "41m",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("demo starts"),
    );
    let lines = stdout_lines(&mut child.0);
    let head = read_until(&lines, "runs for");
    assert!(
        head.last()
            .is_some_and(|l| l.contains("runs for 41m of simulated time")),
        "{head:#?}"
    );
    let restart = read_until(&lines, "restarts");
    let restart = restart.last().expect("a line");
    assert!(
        restart.starts_with("[+40m] apiserver instance 1 (https://127.0.0.11:"),
        "{restart}"
    );
    read_until(&lines, "[+41m] --for 41m reached: stopping");
    let status = child.0.wait().expect("demo ends");
    assert!(status.success(), "{status}");
}

#[test]
fn demo_for_says_what_a_duration_looks_like() {
    for value in ["banana", "0s", "15"] {
        let out = bin()
            .args(["demo", "--for", value])
            .output()
            .expect("demo runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{value}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "--for {value:?}: expected a duration like 90s, 15m, 2h"
            )),
            "{stderr}"
        );
    }
}

const SIXTY_X: &str = "name = \"sixty\"\nspeed = 60.0\npage_kib = 16\n[[instances]]\nversion = \"1.35.0\"\ncount = 2\n[[clients]]\nkind = \"legacy_manual\"\ninterval = \"10s\"\ntargets = \"all\"\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_hands_serve_a_ready_config_and_command() {
    let dir = test_dir("simulate-serve");
    let scenario = dir.join("sixty.toml");
    std::fs::write(&scenario, SIXTY_X).expect("scenario");
    let out_dir = dir.join("sim");
    let mut sim = Guard(
        bin()
            .args(["simulate", "--scenario"])
            .arg(&scenario)
            .arg("--dir")
            .arg(&out_dir)
            .stdout(Stdio::piped())
            .spawn()
            .expect("simulate starts"),
    );
    let lines = stdout_lines(&mut sim.0);
    let printed = read_until(&lines, "audit them with:");
    let command = lines
        .recv_timeout(Duration::from_secs(10))
        .expect("the serve command");
    let file = out_dir.join("cutover-auditor.toml");
    assert!(
        printed
            .iter()
            .any(|l| l.contains(&format!("daemon configuration: {}", file.display()))),
        "{printed:#?}"
    );

    // The file is a valid configuration: the static targets are the
    // instances, with the CA and token, and every tolerance covers a scrape.
    let config = Config::load(&file, |_| None).expect("the written config loads");
    let addresses: Vec<&str> = printed
        .iter()
        .filter_map(|l| l.trim().strip_prefix("instance "))
        .filter_map(|l| l.split("https://").nth(1))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(addresses.len(), 2, "{printed:#?}");
    let text = std::fs::read_to_string(&file).expect("config text");
    for addr in &addresses {
        assert!(
            text.contains(&format!("url = \"https://{addr}\"")),
            "{text}"
        );
    }
    assert!(text.contains(&format!("{}", out_dir.join("ca.crt").display())));
    assert!(text.contains(&format!("{}", out_dir.join("token").display())));
    assert!(text.contains(&format!("{}", out_dir.join("state.json").display())));
    assert_eq!(config.cutovers.len(), 3);
    for cutover in &config.cutovers {
        assert!(
            cutover.tolerance >= config.scrape.interval + config.scrape.timeout,
            "{}: tolerance {:?} below interval + timeout",
            cutover.name,
            cutover.tolerance
        );
        assert!(cutover.window > cutover.tolerance, "{}", cutover.name);
    }
    let check = bin()
        .args(["serve", "--config"])
        .arg(&file)
        .arg("--check-config")
        .output()
        .expect("check runs");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    // The printed command, on a port it picks, scrapes every instance.
    let args: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(
        args[..4],
        [
            "cutover-auditor",
            "serve",
            "--config",
            file.to_str().expect("UTF-8")
        ],
        "{command}"
    );
    assert!(command.contains("--speed 60 --clock-start "), "{command}");
    let moved = dir.join("serve.toml");
    std::fs::write(
        &moved,
        text.replace("listen = \"127.0.0.1:9877\"", "listen = \"127.0.0.1:0\""),
    )
    .expect("config on a port it picks");
    let mut command = bin();
    command.args(&args[1..3]).arg(&moved).args(&args[4..]);
    let serve = Serve::spawn(command);
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/status", serve.base());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    loop {
        if let Ok(response) = client.get(&url).send().await {
            last = response.text().await.unwrap_or_default();
            let status: serde_json::Value = serde_json::from_str(&last).unwrap_or_default();
            let targets = status["targets"].as_array().cloned().unwrap_or_default();
            let up: Vec<&str> = targets
                .iter()
                .filter(|t| t["up"] == true && t["last_error"].is_null())
                .filter_map(|t| t["instance"].as_str())
                .collect();
            if targets.len() == 2 && addresses.iter().all(|a| up.contains(a)) {
                // On the simulation's clock: the legacy client's uses are seen.
                let legacy = status["cutovers"]
                    .as_array()
                    .and_then(|c| c.iter().find(|c| c["name"] == "legacy-tokens"));
                if legacy.is_some_and(|c| c["state"] == "in_use") {
                    break;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "targets not up and uses not seen within 30 s: {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(sim);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn simulate_removes_its_temp_dir_on_sigint_and_sigterm() {
    let tmp = test_dir("simulate-signal");
    let scenario = tmp.join("forever.toml");
    std::fs::write(
        &scenario,
        "name = \"forever\"\n[[instances]]\nversion = \"1.30.2\"\n",
    )
    .expect("scenario");
    for sig in ["INT", "TERM"] {
        let mut child = Guard(
            bin()
                .args(["simulate", "--scenario"])
                .arg(&scenario)
                .env("TMPDIR", &tmp)
                .stdout(Stdio::piped())
                .spawn()
                .expect("simulate starts"),
        );
        let lines = stdout_lines(&mut child.0);
        let printed = read_until(&lines, "CA file: ");
        let ca = printed
            .last()
            .and_then(|l| l.split("CA file: ").nth(1))
            .map(PathBuf::from)
            .expect("CA path");
        let dir = ca.parent().expect("the temp dir").to_path_buf();
        assert!(dir.starts_with(&tmp), "{}", dir.display());
        read_until(&lines, "audit them with:");
        assert!(dir.join("cutover-auditor.toml").exists());
        signal(&child.0, sig);
        let status = child.0.wait().expect("simulate ends");
        assert!(status.success(), "SIG{sig}: {status}");
        assert!(
            !Path::new(&dir).exists(),
            "SIG{sig}: {} left behind",
            dir.display()
        );
    }
    let _ = std::fs::remove_dir_all(&tmp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_follows_the_clock_of_a_simulation_with_a_fixed_start() {
    let dir = test_dir("simulate-fixed-start");
    let scenario = dir.join("june.toml");
    // 2026-06-01T00:00:00Z, months before any real clock running this test.
    let start_ms: i64 = 1_780_272_000_000;
    std::fs::write(
        &scenario,
        format!("start = \"2026-06-01T00:00:00Z\"\n{SIXTY_X}"),
    )
    .expect("scenario");
    let out_dir = dir.join("sim");
    let mut sim = Guard(
        bin()
            .args(["simulate", "--scenario"])
            .arg(&scenario)
            .arg("--dir")
            .arg(&out_dir)
            .stdout(Stdio::piped())
            .spawn()
            .expect("simulate starts"),
    );
    let lines = stdout_lines(&mut sim.0);
    read_until(&lines, "audit them with:");
    let command = lines
        .recv_timeout(Duration::from_secs(10))
        .expect("the serve command");
    assert!(
        command.contains("--speed 60 --clock-start 1780272000.000@"),
        "{command}"
    );
    let file = out_dir.join("cutover-auditor.toml");
    let moved = dir.join("serve.toml");
    let text = std::fs::read_to_string(&file).expect("config text");
    std::fs::write(
        &moved,
        text.replace("listen = \"127.0.0.1:9877\"", "listen = \"127.0.0.1:0\""),
    )
    .expect("config on a port it picks");
    let args: Vec<&str> = command.split_whitespace().collect();
    let mut command = bin();
    command.args(&args[1..3]).arg(&moved).args(&args[4..]);
    let serve = Serve::spawn(command);
    let client = reqwest::Client::new();
    let url = format!("{}/api/v1/status", serve.base());
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    loop {
        if let Ok(response) = client.get(&url).send().await {
            last = response.text().await.unwrap_or_default();
            let status: serde_json::Value = serde_json::from_str(&last).unwrap_or_default();
            let targets = status["targets"].as_array().cloned().unwrap_or_default();
            let all_up = targets.len() == 2 && targets.iter().all(|t| t["up"] == true);
            if let (true, Some(at)) = (all_up, status["evaluated_at"].as_i64()) {
                // On the simulation's clock: within its first simulated hour.
                assert!(
                    (start_ms..start_ms + 3_600_000).contains(&at),
                    "evaluated at {at}, not on the simulation's clock: {last}"
                );
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "targets not up within 30 s: {last}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(sim);
    let _ = std::fs::remove_dir_all(&dir);
}
