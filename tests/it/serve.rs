//! The built binary as an operator runs it: `serve` against simulated
//! apiservers (its `/metrics` passes `promtool check metrics`, SIGTERM drains
//! and writes the state), `--check-config` on good and bad files, and `demo`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::daemon::{start_world, test_dir};
use crate::support::process::{Guard, Serve, bin, free_port};

const WORLD: &str = r#"
name = "serve-binary"
cache_ttl = "1s"
speed = 1.0
page_kib = 32
[[instances]]
version = "1.35.0"
count = 2
[[clients]]
kind = "legacy_manual"
interval = "1s"
targets = "all"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_exports_checked_metrics_and_drains_on_sigterm() {
    let dir = test_dir("serve-binary");
    let (sim, _, _) = start_world(WORLD, &dir).await;
    let state = dir.join("state.json");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"
listen = "127.0.0.1:0"
[scrape]
interval = "1s"
timeout = "800ms"
[targets.kubernetes]
api_server = "https://{service}"
token_file = "{token}"
ca_file = "{ca}"
[cutovers.legacy-tokens]
window = "1m"
coverage_tolerance = "10s"
[state]
path = "{state}"
[log]
format = "json"
level = "info"
"#,
            service = sim.service_address(),
            token = sim.token_path().display(),
            ca = sim.ca_path().display(),
            state = state.display(),
        ),
    )
    .unwrap();
    let mut serve = Serve::start(&config);
    let base = serve.base();

    // Ready after the first evaluation; then every instance scraped and the
    // cutover judged in use.
    let client = reqwest::Client::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let page = loop {
        let page = match client.get(format!("{base}/metrics")).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let scraped = sim.instance_addresses().iter().all(|addr| {
            page.contains(&format!("cutover_scrape_success{{apiserver=\"{addr}\"}} 1"))
        });
        let judged = page.contains("cutover_state{cutover=\"legacy-tokens\",state=\"in_use\"} 1");
        if scraped && judged {
            break page;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "every instance scraped and legacy-tokens in use within 30 s:\n{page}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200, "ready after the first evaluation");
    let metrics_file = dir.join("metrics.txt");
    std::fs::write(&metrics_file, &page).unwrap();
    let promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&metrics_file).unwrap())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}); install the Debian package `prometheus`")
        });
    assert!(
        promtool.status.success() && promtool.stdout.is_empty() && promtool.stderr.is_empty(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&promtool.stdout),
        String::from_utf8_lossy(&promtool.stderr)
    );
    let html = client
        .get(format!("{base}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("legacy-tokens"), "{html}");

    // SIGHUP, SIGUSR1, SIGUSR2: logged and ignored; the daemon keeps serving.
    let pid = serve.child.0.id().to_string();
    for sig in ["HUP", "USR1", "USR2"] {
        assert!(
            Command::new("kill")
                .args([&format!("-{sig}"), &pid])
                .status()
                .unwrap()
                .success()
        );
        serve.wait_log("signal log", |l| {
            l.contains("signal received") && l.contains(&format!("SIG{sig}"))
        });
        assert!(
            serve.child.0.try_wait().unwrap().is_none(),
            "{sig} ended the daemon"
        );
        let health = client.get(format!("{base}/healthz")).send().await;
        assert!(health.is_ok_and(|r| r.status() == 200), "{sig}: /healthz");
    }

    // SIGTERM: drain, write the state, exit 0 within the grace period.
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = serve.exit_within(Duration::from_secs(15));
    assert!(status.success(), "exit status {status}");
    assert!(state.exists(), "state written on shutdown");
    let logs = serve.logs();
    let token = std::fs::read_to_string(sim.token_path()).unwrap();
    for line in &logs {
        let parsed: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert!(
            parsed.get("level").is_some() || parsed.get("fields").is_some(),
            "{line}"
        );
        assert!(
            !line.contains(token.trim()),
            "a log line holds the token: {line}"
        );
    }
    assert!(
        logs.iter().any(|l| l.contains("verdict changed")),
        "{logs:#?}"
    );
    for sig in ["SIGHUP", "SIGUSR1", "SIGUSR2"] {
        assert!(
            logs.iter()
                .any(|l| l.contains(sig) && l.contains("ignored")),
            "{sig} not logged: {logs:#?}"
        );
    }
    sim.shutdown().await;
}

#[test]
fn sigquit_drains_and_writes_the_state() {
    let dir = test_dir("serve-sigquit");
    let state = dir.join("state.json");
    let config = dir.join("config.toml");
    let token = dir.join("token");
    std::fs::write(&token, "a-token\n").unwrap();
    let ca = dir.join("ca.crt");
    cutover_auditor::simulator::tls::ClusterCa::generate()
        .unwrap()
        .write(&ca)
        .unwrap();
    // A target nobody listens on (a port just closed): the daemon runs, blind.
    let target_port = crate::support::process::free_port();
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\n[scrape]\ninterval = \"1s\"\ntimeout = \"500ms\"\n\
             [[targets.static]]\nurl = \"https://127.0.0.1:{target_port}\"\ntoken_file = \"{}\"\nca_file = \"{}\"\n\
             [state]\npath = \"{}\"\n[log]\nformat = \"text\"\nlevel = \"info\"\n",
            token.display(),
            ca.display(),
            state.display()
        ),
    )
    .unwrap();
    let mut serve = Serve::start(&config);
    let pid = serve.child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-QUIT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = serve.exit_within(Duration::from_secs(15));
    assert!(status.success(), "SIGQUIT drains and exits 0: {status}");
    assert!(state.exists(), "state written on the SIGQUIT drain");
}

#[test]
fn a_failed_final_state_write_exits_74_with_the_os_reason() {
    let dir = test_dir("serve-final-write");
    let port = free_port();
    // Tests run as root, where a read-only mode does not stop writes: the
    // state file's directory is removed under the running daemon instead.
    let state_dir = dir.join("state");
    std::fs::create_dir_all(&state_dir).unwrap();
    let state = state_dir.join("state.json");
    let config = dir.join("config.toml");
    let token = dir.join("token");
    std::fs::write(&token, "a-token\n").unwrap();
    let ca = dir.join("ca.crt");
    cutover_auditor::simulator::tls::ClusterCa::generate()
        .unwrap()
        .write(&ca)
        .unwrap();
    let target_port = free_port();
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\n[scrape]\ninterval = \"1s\"\ntimeout = \"500ms\"\n\
             [[targets.static]]\nurl = \"https://127.0.0.1:{target_port}\"\ntoken_file = \"{}\"\nca_file = \"{}\"\n\
             [state]\npath = \"{}\"\n[log]\nformat = \"text\"\nlevel = \"info\"\n",
            token.display(),
            ca.display(),
            state.display()
        ),
    )
    .unwrap();
    let mut child = Guard(
        bin()
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start serve"),
    );
    let stderr = child.0.stderr.take().expect("stderr");
    let logs = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "not listening within 20 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::remove_dir_all(&state_dir).unwrap();
    let pid = child.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no exit within 15 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let logs = logs.join().unwrap();
    assert_eq!(status.code(), Some(74), "EX_IOERR: {logs:#?}");
    let reason = "No such file or directory (os error 2)";
    assert!(
        logs.iter()
            .any(|l| l.contains("state not saved") && l.contains(reason)),
        "the log line names the OS reason: {logs:#?}"
    );
    assert!(
        logs.iter().any(|l| l.starts_with("cutover-auditor: ")
            && l.contains("final state write failed")
            && l.contains(reason)),
        "the exit message says why: {logs:#?}"
    );
}

/// Runs `serve --check-config` on `text`; returns (exit code, stderr + stdout).
fn check_config(dir: &Path, name: &str, text: &str) -> (Option<i32>, String) {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let out = bin()
        .args(["serve", "--check-config", "--config"])
        .arg(&path)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    (out.status.code(), text)
}

#[test]
fn check_config_exits_64_naming_the_key() {
    let dir = test_dir("check-config");
    // The files a target names are checked too: a real token and CA.
    let token = dir.join("token");
    std::fs::write(&token, "a-token\n").unwrap();
    let ca = dir.join("ca.crt");
    cutover_auditor::simulator::tls::ClusterCa::generate()
        .unwrap()
        .write(&ca)
        .unwrap();
    let junk = dir.join("junk.crt");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let target = |url: &str, token: &Path, ca: &Path| {
        format!(
            "[[targets.static]]\nurl = \"{url}\"\ntoken_file = \"{}\"\nca_file = \"{}\"\n",
            token.display(),
            ca.display()
        )
    };
    let good = target("https://127.0.0.1:6443", &token, &ca);
    let cases: Vec<(&str, String, i32, &str)> = vec![
        (
            "good.toml",
            good.clone(),
            0,
            "valid (3 cutovers, scrape every 30s)",
        ),
        (
            "unknown.toml",
            "[scrape]\nintervall = \"30s\"\n".into(),
            64,
            "unknown field `intervall`",
        ),
        (
            "timeout.toml",
            "[scrape]\ninterval = \"10s\"\ntimeout = \"20s\"\n[[targets.static]]\nurl = \"https://a:1\"\n".into(),
            64,
            "scrape.timeout: must be shorter than scrape.interval (10s)",
        ),
        (
            "not-in-cluster.toml",
            String::new(),
            64,
            "targets.kubernetes.api_server: not set and KUBERNETES_SERVICE_HOST",
        ),
        (
            "missing-token.toml",
            target("https://127.0.0.1:6443", &dir.join("no-token"), &ca),
            64,
            "targets.static[0].token_file: cannot read token file",
        ),
        (
            "bad-ca.toml",
            target("https://127.0.0.1:6443", &token, &junk),
            64,
            "targets.static[0].ca_file: CA file",
        ),
        (
            "state-dev-null.toml",
            format!("{good}[state]\npath = \"/dev/null\"\n"),
            64,
            "state.path: state file /dev/null is a character device, not a regular file",
        ),
        (
            "state-dir.toml",
            format!("{good}[state]\npath = \"{}\"\n", dir.display()),
            64,
            "is a directory, not a regular file",
        ),
        (
            "huge-interval.toml",
            format!("[scrape]\ninterval = \"300000000000y\"\n{good}"),
            64,
            "scrape.interval: \"300000000000y\"",
        ),
        (
            "log-level.toml",
            format!("{good}[log]\nlevel = \"cutover_auditor=loud\"\n"),
            64,
            "log.level: log level \"cutover_auditor=loud\"",
        ),
        (
            "service.toml",
            target("https://kubernetes.default.svc", &token, &ca),
            64,
            "is the `kubernetes` Service",
        ),
        (
            "tolerance.toml",
            format!("{good}[cutovers.legacy-tokens]\ncoverage_tolerance = \"30s\"\n"),
            64,
            "cutovers.legacy-tokens.coverage_tolerance: 30s is shorter than one scrape round",
        ),
    ];
    for (name, text, code, message) in &cases {
        let (got, output) = check_config(&dir, name, text);
        assert_eq!(got, Some(*code), "{name}: {output}");
        assert!(
            output.contains(message),
            "{name}: expected {message:?} in {output}"
        );
        if *code == 64 {
            assert!(
                output.contains(name),
                "{name}: the message names the file: {output}"
            );
        }
    }
    let missing = bin()
        .args(["serve", "--check-config", "--config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(64));
}

#[test]
fn shipped_configs_are_valid() {
    // tests/config.rs parses them; here the binary checks them, files
    // included. Outside a pod the in-cluster token and CA are absent, and
    // they must be the only problems reported, each named.
    let in_pod = Path::new("/var/run/secrets/kubernetes.io/serviceaccount/token").exists();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in ["config.example.toml", "deploy/base/config.toml"] {
        let out = bin()
            .args(["serve", "--check-config", "--config"])
            .arg(root.join(file))
            .env("KUBERNETES_SERVICE_HOST", "10.96.0.1")
            .env("KUBERNETES_SERVICE_PORT", "443")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if in_pod {
            assert!(out.status.success(), "{file}: {stderr}");
            continue;
        }
        assert_eq!(out.status.code(), Some(64), "{file}: {stderr}");
        let problems = stderr
            .trim()
            .split_once("invalid config: ")
            .map(|(_, p)| p)
            .unwrap_or_else(|| panic!("{file}: {stderr}"));
        let keys: Vec<&str> = problems
            .split("; ")
            .map(|p| p.split(':').next().unwrap_or_default())
            .collect();
        assert_eq!(
            keys,
            [
                "targets.kubernetes.token_file",
                "targets.kubernetes.ca_file"
            ],
            "{file}: {stderr}"
        );
        assert!(
            stderr.contains("/var/run/secrets/kubernetes.io/serviceaccount/"),
            "{stderr}"
        );
    }
}

#[test]
fn demo_shows_both_cutovers_turn_ready_through_a_restart() {
    // At 120x the demo's 65 simulated minutes take about 33 real seconds.
    let out = bin()
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--speed",
            "120",
            "--for",
            "65m",
        ])
        .output()
        .expect("run demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("status page: http://127.0.0.1:"),
        "{stdout}"
    );
    // Each transition line: (from -> to, reason).
    let path_of = |cutover: &str| -> Vec<(String, String)> {
        stdout
            .lines()
            .filter_map(|l| l.split_once("] ").map(|(_, rest)| rest))
            .filter_map(|rest| rest.strip_prefix(&format!("{cutover}: ")))
            .filter_map(|rest| rest.split_once(" ("))
            .map(|(step, why)| {
                let reason = why.split([',', ')']).next().unwrap_or_default();
                (step.to_owned(), reason.to_owned())
            })
            .collect()
    };
    // What the demo's world guarantees: blind, then in use, then ready by
    // the end; once ready, never in use again (the restart at 40m resets
    // counters, which is no use). A loaded machine may deliver a scrape late
    // at 120x, which is an honest coverage gap: blind for a while, nothing
    // else.
    for cutover in ["legacy-tokens", "token-expiry-extension"] {
        let path = path_of(cutover);
        let steps: Vec<&str> = path.iter().map(|(step, _)| step.as_str()).collect();
        assert_eq!(
            steps.get(..2),
            Some(&["(start) -> blind", "blind -> in_use"][..]),
            "{cutover}: blind, then in use\n{stdout}"
        );
        assert!(
            steps.last().is_some_and(|s| s.ends_with("-> ready")),
            "{cutover}: ready at the end\n{stdout}"
        );
        let first_ready = steps.iter().position(|s| s.ends_with("-> ready")).unwrap();
        assert!(
            steps[first_ready..]
                .iter()
                .all(|s| !s.ends_with("-> in_use")),
            "{cutover}: in use again after ready\n{stdout}"
        );
        for (step, reason) in &path[2..] {
            if step.ends_with("-> blind") {
                assert_eq!(reason, "coverage_gap", "{cutover}: {step}\n{stdout}");
            }
        }
    }
    assert!(!stdout.contains("REGRESSION"), "{stdout}");
}
