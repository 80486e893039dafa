//! Attribution against the simulator: token Secrets (metadata only), the
//! workloads mounting them, named under their cutover; a 403 gives a clear
//! reason and leaves the verdicts untouched; the config section is strict.
//!
//! - `who_names_the_workload_listing_secrets_as_metadata_only`
//! - `a_ready_cutover_lists_the_secrets_safe_to_delete`
//! - `a_403_makes_attribution_unavailable_and_leaves_the_verdicts_untouched`
//! - `the_request_record_catches_a_client_that_asks_for_secret_data`
//! - `attribution_config_is_validated_and_strict`
//! - `the_attribution_component_adds_exactly_its_permissions_and_the_default_install_has_none`
//! - `the_audit_log_survives_rotation_and_restart_without_loss_or_double_counting`
//! - `memory_stays_bounded_with_100000_distinct_audit_subjects`
//! - `audit_log_subjects_are_named_under_their_cutovers`

use std::time::Duration;

use cutover_auditor::attribution::secrets::{Date, METADATA_ACCEPT};
use cutover_auditor::config::Config;
use cutover_auditor::verdict::State;

use crate::support::daemon::{Daemon, config_for, sample, start_world, test_dir};

const WINDOWS: &str = r#"
[cutovers.legacy-tokens]
window = "20m"
[cutovers.legacy-auto-tokens]
window = "20m"
[cutovers.token-expiry-extension]
window = "20m"
"#;

/// Page size 1 forces paging through `continue`.
const ATTRIBUTION: &str = r#"
[attribution]
token_secrets = true
workloads = true
interval = "1m"
page_size = 1
"#;

const BUSY_WORLD: &str = r#"
name = "attribution-busy"
speed = 150.0
scraper_counts_as = "valid"
page_kib = 8

[[instances]]
version = "1.30.4"
count = 1

[[clients]]
kind = "legacy"
interval = "10s"
targets = "all"
"#;

const QUIET_WORLD: &str = r#"
name = "attribution-quiet"
speed = 150.0
scraper_counts_as = "valid"
page_kib = 8

[[instances]]
version = "1.30.4"
count = 1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_names_the_workload_listing_secrets_as_metadata_only() {
    let dir = test_dir("attribution-who");
    let (sim, clock, _) = start_world(BUSY_WORLD, &dir).await;
    let a = sim.attribution();
    a.set_tracking_since(Some("2025-01-10"));
    a.add_token_secret("ci", "builder-token-x7k2p", "builder");
    a.use_token("ci", "builder-token-x7k2p", clock.now());
    a.add_token_secret("ci", "old-token", "old");
    a.set_label(
        "ci",
        "old-token",
        "kubernetes.io/legacy-token-last-used",
        "2025-06-01",
    );
    a.add_token_secret("kube-system", "never-token", "never");
    a.add_owner(
        "ReplicaSet",
        "ci",
        "runner-5d9f",
        Some(("Deployment", "runner")),
    );
    a.add_pod(
        "ci",
        "runner-5d9f-abcde",
        Some(("ReplicaSet", "runner-5d9f")),
        "builder-token-x7k2p",
    );
    a.add_pod("ci", "unrelated", None, "some-tls-secret");
    let today = Date::of(clock.now()).to_string();

    let config = config_for(
        &sim,
        &dir.join("state.json"),
        "30s",
        "20s",
        &format!("{WINDOWS}{ATTRIBUTION}"),
    );
    let d = Daemon::start(config, clock.clone()).await;
    let status = d
        .wait_status("attributed", |s| {
            s.attribution
                .as_ref()
                .and_then(|a| a.cutover("legacy-tokens"))
                .is_some_and(|c| !c.who.is_empty())
                && s.cutovers
                    .iter()
                    .any(|c| c.name == "legacy-tokens" && c.state == State::InUse)
        })
        .await;
    let attribution = status.attribution.as_ref().unwrap();
    assert!(attribution.unavailable.is_empty(), "{attribution:?}");
    assert_eq!(attribution.tracking_since, Date::parse("2025-01-10"));
    let legacy = attribution.cutover("legacy-tokens").unwrap();
    let who: Vec<&str> = legacy.who.iter().map(|w| w.summary.as_str()).collect();
    assert_eq!(
        who,
        [format!(
            "Deployment ci/runner mounts Secret ci/builder-token-x7k2p, last used {today}"
        )],
    );
    assert_eq!(
        legacy.who[0].service_account.as_ref().unwrap().to_string(),
        "ci/builder"
    );
    assert!(legacy.safe_to_delete.is_empty(), "in use: nothing offered");

    // Metadata only: every Secret request carried the metadata Accept and
    // the type selector, paged; no request could have returned Secret data.
    let requests = a.requests();
    let secret_lists: Vec<_> = requests
        .iter()
        .filter(|r| r.path == "/api/v1/secrets")
        .collect();
    assert!(
        secret_lists.len() >= 3,
        "paged one Secret at a time: {requests:?}"
    );
    for r in &secret_lists {
        assert_eq!(r.accept.as_deref(), Some(METADATA_ACCEPT), "{r:?}");
        assert!(
            r.query
                .contains("fieldSelector=type%3Dkubernetes.io%2Fservice-account-token"),
            "{r:?}"
        );
        assert!(r.query.contains("limit=1"), "{r:?}");
    }
    assert!(secret_lists.iter().any(|r| r.query.contains("continue=")));
    let risky: Vec<_> = requests
        .iter()
        .filter(|r| r.could_read_secret_data())
        .collect();
    assert!(
        risky.is_empty(),
        "requests that could read Secret data: {risky:?}"
    );

    let (page, _) = d
        .metrics(&["cutover_token_secrets", "cutover_attributed_subjects"])
        .await;
    for (class, n) in [
        ("used_in_window", 1.0),
        ("used_before_window", 1.0),
        ("never_used", 1.0),
        ("invalidated", 0.0),
        ("unknown", 0.0),
    ] {
        assert_eq!(
            sample(&page, "cutover_token_secrets", &[("class", class)]),
            Some(n),
            "{class}"
        );
    }
    assert_eq!(
        sample(
            &page,
            "cutover_attributed_subjects",
            &[("cutover", "legacy-tokens")]
        ),
        Some(1.0)
    );
    let html = d.get("/").await.text().await.unwrap();
    assert!(html.contains("<h2>Who</h2>"), "{html}");
    assert!(
        html.contains("Deployment ci/runner mounts Secret ci/builder-token-x7k2p"),
        "{html}"
    );
    d.stop().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_cutover_lists_the_secrets_safe_to_delete() {
    let dir = test_dir("attribution-ready");
    let (sim, clock, _) = start_world(QUIET_WORLD, &dir).await;
    let a = sim.attribution();
    a.set_tracking_since(Some("2025-01-10"));
    a.add_token_secret("ci", "old-token", "old");
    a.set_label(
        "ci",
        "old-token",
        "kubernetes.io/legacy-token-last-used",
        "2025-06-01",
    );
    a.add_token_secret("kube-system", "never-token", "never");
    a.add_token_secret("ci", "gone-token", "gone");
    a.invalidate("ci", "gone-token", "2025-12-01");

    let config = config_for(
        &sim,
        &dir.join("state.json"),
        "30s",
        "20s",
        &format!("{WINDOWS}{ATTRIBUTION}"),
    );
    let d = Daemon::start(config, clock.clone()).await;
    let status = d.wait_state("legacy-tokens", State::Ready).await;
    let status = if status.attribution.is_some() {
        status
    } else {
        d.wait_status("attributed", |s| s.attribution.is_some())
            .await
    };
    let legacy = status
        .attribution
        .as_ref()
        .unwrap()
        .cutover("legacy-tokens")
        .unwrap();
    assert!(legacy.who.is_empty(), "{legacy:?}");
    let safe: Vec<(String, &str)> = legacy
        .safe_to_delete
        .iter()
        .map(|s| (s.secret.to_string(), s.class.label()))
        .collect();
    assert_eq!(
        safe,
        [
            ("ci/gone-token".to_owned(), "invalidated"),
            ("ci/old-token".to_owned(), "used_before_window"),
            ("kube-system/never-token".to_owned(), "never_used"),
        ]
    );
    let html = d.get("/").await.text().await.unwrap();
    assert!(
        html.contains("Secret kube-system/never-token (never used since tracking began)"),
        "{html}"
    );
    d.stop().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_403_makes_attribution_unavailable_and_leaves_the_verdicts_untouched() {
    let dir = test_dir("attribution-403");
    let (sim, clock, _) = start_world(BUSY_WORLD, &dir).await;
    sim.attribution()
        .add_token_secret("ci", "builder-token-x7k2p", "builder");
    sim.attribution().set_forbidden(true);
    let with = config_for(
        &sim,
        &dir.join("a.json"),
        "30s",
        "20s",
        &format!("{WINDOWS}{ATTRIBUTION}"),
    );
    let without = config_for(&sim, &dir.join("b.json"), "30s", "20s", WINDOWS);
    let (a, b) = (
        Daemon::start(with, clock.clone()).await,
        Daemon::start(without, clock.clone()).await,
    );
    let s = a
        .wait_status("unavailable after an evaluation", |s| {
            s.evaluated_at.is_some()
                && s.attribution
                    .as_ref()
                    .is_some_and(|a| !a.unavailable.is_empty())
        })
        .await;
    let reasons = &s.attribution.as_ref().unwrap().unavailable;
    assert!(
        reasons.iter().any(|r| r
            .starts_with("attribution unavailable: token_secrets (http_403): ")
            && r.contains("cannot list resource \"secrets\"")),
        "{reasons:?}"
    );
    let legacy = s
        .attribution
        .as_ref()
        .unwrap()
        .cutover("legacy-tokens")
        .unwrap();
    assert!(
        legacy.who.is_empty() && legacy.note.as_deref() == Some("token Secrets were not listed")
    );
    let (page, _) = a.metrics(&["cutover_attribution_errors_total"]).await;
    assert!(
        sample(
            &page,
            "cutover_attribution_errors_total",
            &[("source", "token_secrets"), ("reason", "http_403")]
        )
        .is_some_and(|n| n >= 1.0)
    );
    // The same verdicts as a daemon without attribution, once both see the client.
    let verdicts = |s: &cutover_auditor::status::Status| -> Vec<(String, State)> {
        s.cutovers
            .iter()
            .map(|c| (c.name.to_string(), c.state))
            .collect()
    };
    let sa = a.wait_state("legacy-tokens", State::InUse).await;
    let sb = b.wait_state("legacy-tokens", State::InUse).await;
    assert_eq!(verdicts(&sa), verdicts(&sb));
    assert!(b.status().await.attribution.is_none(), "off by default");
    a.stop().await;
    b.stop().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_record_catches_a_client_that_asks_for_secret_data() {
    let dir = test_dir("attribution-record");
    let (sim, _clock, _) = start_world(QUIET_WORLD, &dir).await;
    sim.attribution()
        .add_token_secret("ci", "builder-token-x7k2p", "builder");
    let ca = std::fs::read(sim.ca_path()).unwrap();
    let token = std::fs::read_to_string(sim.token_path()).unwrap();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    let url = format!("https://{}/api/v1/secrets", sim.service_address());
    // A careless client: plain JSON gets the Secret data, and is recorded as such.
    let body = client
        .get(&url)
        .bearer_auth(token.trim())
        .header("Accept", "application/json")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("\"data\""), "{body}");
    let metadata = client
        .get(&url)
        .bearer_auth(token.trim())
        .header("Accept", METADATA_ACCEPT)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !metadata.contains("\"data\"") && metadata.contains("PartialObjectMetadataList"),
        "{metadata}"
    );
    let flagged: Vec<bool> = sim
        .attribution()
        .requests()
        .iter()
        .map(|r| r.could_read_secret_data())
        .collect();
    assert_eq!(flagged, [true, false]);
    sim.shutdown().await;
}

#[test]
fn attribution_config_is_validated_and_strict() {
    let kube = r#"
[targets.kubernetes]
api_server = "https://10.96.0.1:443"
"#;
    let parse = |extra: &str| Config::parse(&format!("{kube}{extra}"), |_| None);
    let off = parse("").unwrap();
    assert_eq!(off.attribution, None, "off by default");
    let on = parse("[attribution]\ntoken_secrets = true\n").unwrap();
    let a = on.attribution.unwrap();
    assert_eq!(a.api_server.as_str(), "https://10.96.0.1/");
    assert!(!a.workloads);
    assert_eq!(a.interval, Duration::from_secs(600));
    for (extra, want) in [
        (
            "[attribution]\ntoken_secret = true\n",
            "unknown field `token_secret`",
        ),
        (
            "[attribution]\nworkloads = true\n",
            "attribution.workloads: needs attribution.token_secrets = true",
        ),
        (
            "[attribution]\ntoken_secrets = true\npage_size = 0\n",
            "attribution.page_size: 0 is outside 1..=5000",
        ),
        (
            "[attribution]\ntoken_secrets = true\ninterval = \"soon\"\n",
            "attribution.interval: \"soon\" is not a duration",
        ),
        (
            "[attribution]\ntoken_secrets = true\nmax_secrets = 0\n",
            "attribution.max_secrets: 0 is outside 1..=1000000",
        ),
        (
            "[attribution]\ntoken_secrets = true\napi_server = \"http://x\"\n",
            "attribution.api_server",
        ),
    ] {
        let err = parse(extra).unwrap_err().to_string();
        assert!(err.contains(want), "{extra}: {err}");
    }
    let static_targets = r#"
[[targets.static]]
url = "https://10.0.0.1:6443"
[attribution]
token_secrets = true
"#;
    let err = Config::parse(static_targets, |_| None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("attribution.api_server: required with static targets"),
        "{err}"
    );
}

/// Renders an overlay of `resources` and `components` (paths relative to the
/// repository) with `kubectl kustomize`; the objects as JSON.
fn render(name: &str, components: &[&str]) -> Vec<serde_json::Value> {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // Kustomize refuses absolute paths: the overlay lives two levels down.
    let dir = repo.join("target").join(format!(
        "attribution-kustomize-{name}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let comps: String = components
        .iter()
        .map(|c| format!("  - ../../{c}\n"))
        .collect();
    std::fs::write(
        dir.join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../../deploy/base\ncomponents:\n{}",
            if comps.is_empty() { "  []\n".to_owned() } else { comps }
        ),
    )
    .unwrap();
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .expect("kubectl on PATH (see tests/it/deploy.rs)");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_yaml_ng::Deserializer::from_slice(&out.stdout)
        .map(|doc| serde::Deserialize::deserialize(doc).unwrap())
        .collect()
}

/// Every (apiGroup, resource, verb) granted on resources by the rendered RBAC,
/// with the namespace of a Role ("" for a ClusterRole).
fn grants(objects: &[serde_json::Value]) -> Vec<(String, String, String, String)> {
    let mut out = Vec::new();
    for o in objects {
        let kind = o["kind"].as_str().unwrap_or("");
        if kind != "ClusterRole" && kind != "Role" {
            continue;
        }
        let ns = o["metadata"]["namespace"].as_str().unwrap_or("").to_owned();
        for rule in o["rules"].as_array().into_iter().flatten() {
            for g in rule["apiGroups"].as_array().into_iter().flatten() {
                for r in rule["resources"].as_array().into_iter().flatten() {
                    for v in rule["verbs"].as_array().into_iter().flatten() {
                        out.push((
                            ns.clone(),
                            g.as_str().unwrap().to_owned(),
                            r.as_str().unwrap().to_owned(),
                            v.as_str().unwrap().to_owned(),
                        ));
                    }
                }
            }
        }
    }
    out.sort();
    out
}

#[test]
fn the_attribution_component_adds_exactly_its_permissions_and_the_default_install_has_none() {
    let base = grants(&render("base", &[]));
    assert!(
        !base
            .iter()
            .any(|(_, _, r, _)| r == "secrets" || r == "pods" || r == "configmaps"),
        "the default install reads no Secrets, Pods or ConfigMaps: {base:?}"
    );
    let with = render("with", &["deploy/components/attribution"]);
    let added: Vec<_> = grants(&with)
        .into_iter()
        .filter(|g| !base.contains(g))
        .collect();
    let s = |a: &str, b: &str, c: &str, d: &str| {
        (a.to_owned(), b.to_owned(), c.to_owned(), d.to_owned())
    };
    assert_eq!(
        added,
        [
            s("", "", "pods", "list"),
            s("", "", "secrets", "list"),
            s("", "apps", "replicasets", "list"),
            s("", "batch", "jobs", "list"),
            s("kube-system", "", "configmaps", "get"),
        ]
    );
    let tracking = with
        .iter()
        .find(|o| o["kind"] == "Role" && o["metadata"]["namespace"] == "kube-system")
        .unwrap();
    assert_eq!(
        tracking["rules"][0]["resourceNames"],
        serde_json::json!(["kube-apiserver-legacy-service-account-token-tracking"])
    );
    for binding in with.iter().filter(|o| {
        o["kind"].as_str().is_some_and(|k| k.ends_with("Binding"))
            && o["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.contains("attribution") || n.contains("tracking"))
    }) {
        assert_eq!(binding["subjects"][0]["name"], "cutover-auditor");
        assert_eq!(binding["subjects"][0]["namespace"], "cutover-auditor");
    }
}

fn audit_line(subject: &str, stage: &str) -> String {
    format!(
        r#"{{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"x","stage":"{stage}","verb":"get","user":{{"username":"{subject}"}},"sourceIPs":["10.0.0.9"],"userAgent":"job/2","requestReceivedTimestamp":"2026-12-03T10:00:00Z","annotations":{{"authentication.k8s.io/legacy-token":"{subject}","authentication.k8s.io/legacy-token-manual-secret":"t"}}}}"#
    ) + "\n"
}

fn append(path: &std::path::Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn legacy_count(f: &cutover_auditor::attribution::audit_file::AuditFollower, subject: &str) -> u64 {
    f.aggregate
        .legacy_subjects
        .top(100)
        .iter()
        .find(|(k, _)| *k == subject)
        .map_or(0, |(_, e)| e.count)
}

#[test]
fn the_audit_log_survives_rotation_and_restart_without_loss_or_double_counting() {
    use cutover_auditor::attribution::audit::Skip;
    use cutover_auditor::attribution::audit_file::AuditFollower;
    let dir = test_dir("attribution-audit-file");
    let log = dir.join("audit.log");
    let pos = dir.join("audit-position.json");
    let a = "system:serviceaccount:ci:builder";
    let follower = || AuditFollower::new(log.clone(), pos.clone(), 100);

    let mut f = follower();
    assert_eq!(f.poll().unwrap(), 0, "no file yet: nothing, no error");
    let half = audit_line(a, "ResponseComplete");
    let (first, second) = half.split_at(40);
    append(
        &log,
        &format!(
            "{}{}{{broken\n{}{first}",
            audit_line(a, "ResponseComplete").repeat(3),
            audit_line(a, "RequestReceived"),
            r#"{"kind":"Secret","apiVersion":"v1","stage":"ResponseComplete","annotations":{"authentication.k8s.io/legacy-token":"forged"}}"#.to_owned() + "\n",
        ),
    );
    f.poll().unwrap();
    assert_eq!(
        legacy_count(&f, a),
        3,
        "one count per request, the half line waits"
    );
    assert_eq!(f.aggregate.skipped.get(&Skip::Malformed), Some(&1));
    assert_eq!(f.aggregate.skipped.get(&Skip::NotAnEvent), Some(&1));

    // The half line completes, two more land, then the file is rotated by
    // rename and a new one starts: the old file is read to its end first.
    append(&log, second);
    append(&log, &audit_line(a, "ResponseComplete").repeat(2));
    std::fs::rename(&log, dir.join("audit-2026-12-03T10-00-00.000.log")).unwrap();
    append(&log, &audit_line(a, "ResponseComplete"));
    f.poll().unwrap();
    assert_eq!(legacy_count(&f, a), 3 + 1 + 2 + 1);

    // A restart resumes at the saved position: nothing counted twice.
    append(&log, &audit_line(a, "ResponseComplete").repeat(2));
    drop(f);
    let mut f = follower();
    assert_eq!(legacy_count(&f, a), 7, "the aggregate is restored");
    f.poll().unwrap();
    assert_eq!(legacy_count(&f, a), 9);

    // Rotated while the daemon was down: the old file is found by inode and
    // its tail read, then the new file.
    append(&log, &audit_line(a, "ResponseComplete"));
    drop(f);
    std::fs::rename(&log, dir.join("audit-2026-12-03T11-00-00.000.log")).unwrap();
    append(&log, &audit_line(a, "ResponseComplete").repeat(3));
    let mut f = follower();
    f.poll().unwrap();
    assert_eq!(legacy_count(&f, a), 9 + 1 + 3);
    f.poll().unwrap();
    assert_eq!(
        legacy_count(&f, a),
        13,
        "a poll with nothing new counts nothing"
    );

    // A line longer than any event is skipped to its end and counted once.
    append(&log, &format!("{}\n", "x".repeat(600 * 1024)));
    append(&log, &audit_line(a, "ResponseComplete"));
    f.poll().unwrap();
    assert_eq!(f.aggregate.skipped.get(&Skip::TooLarge), Some(&1));
    assert_eq!(legacy_count(&f, a), 14);
}

/// Peak resident memory of this process (nextest runs each test in its own).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn memory_stays_bounded_with_100000_distinct_audit_subjects() {
    use cutover_auditor::attribution::audit::AuditAggregate;
    const CAPACITY: usize = 1000;
    let before = peak_rss_kib();
    let mut agg = AuditAggregate::new(CAPACITY);
    let heavy = "system:serviceaccount:ci:builder";
    for i in 0..100_000u32 {
        // Every subject, user agent and source IP distinct (an attacker's
        // stream), and one real client among them.
        let line = audit_line(
            &format!("system:serviceaccount:ns{i}:sa{i}"),
            "ResponseComplete",
        )
        .replace("job/2", &format!("agent/{i}"))
        .replace(
            "10.0.0.9",
            &format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
        );
        agg.add_line(line.trim_end().as_bytes());
        if i % 4 == 0 {
            agg.add_line(audit_line(heavy, "ResponseComplete").trim_end().as_bytes());
        }
    }
    let after = peak_rss_kib();
    for (name, top) in [
        ("subjects", &agg.legacy_subjects),
        ("secrets", &agg.secrets),
        ("user agents", &agg.user_agents),
        ("source IPs", &agg.source_ips),
    ] {
        assert!(top.len() <= CAPACITY, "{name}: {} keys", top.len());
    }
    assert_eq!(agg.legacy_subjects.total, 125_000);
    let (top, entry) = agg.legacy_subjects.top(1)[0];
    assert_eq!(top, heavy, "the real client stays on top");
    assert!(entry.count >= 25_000);
    assert!(agg.legacy_subjects.others() >= 100_000 - CAPACITY as u64);
    eprintln!(
        "peak RSS {before} KiB before, {after} KiB after 125000 events with 100000 distinct subjects (capacity {CAPACITY})"
    );
    assert!(
        after - before < 64 * 1024,
        "peak RSS grew by {} KiB",
        after - before
    );
}

/// `2026-12-03T10:00:00.000Z` for a timestamp.
fn rfc3339(t: cutover_auditor::time::Timestamp) -> String {
    let day = Date::of(t);
    let ms = t.as_millis() - day.start().as_millis();
    let (h, m, s) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60);
    format!("{day}T{h:02}:{m:02}:{s:02}.{:03}Z", ms % 1000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_subjects_are_named_under_their_cutovers() {
    let dir = test_dir("attribution-audit-daemon");
    let (sim, clock, _) = start_world(BUSY_WORLD, &dir).await;
    let log = dir.join("audit.log");
    let at = rfc3339(clock.now());
    let legacy = audit_line("system:serviceaccount:ci:builder", "ResponseComplete")
        .replace("2026-12-03T10:00:00Z", &at);
    let old = audit_line("system:serviceaccount:ci:gone", "ResponseComplete");
    let stale = legacy
        .replace(
            r#""authentication.k8s.io/legacy-token":"system:serviceaccount:ci:builder""#,
            r#""authentication.k8s.io/stale-token":"subject: system:serviceaccount:web:api, seconds after warning threshold: 120""#,
        );
    append(&log, &format!("{}{old}{stale}not json\n", legacy.repeat(2)));
    let extra = format!(
        "{WINDOWS}[attribution]\naudit_log = \"{}\"\ninterval = \"1m\"\n",
        log.display()
    );
    let config = config_for(&sim, &dir.join("state.json"), "30s", "20s", &extra);
    let d = Daemon::start(config, clock.clone()).await;
    let s = d
        .wait_status("audit attributed", |s| {
            s.evaluated_at.is_some()
                && s.attribution
                    .as_ref()
                    .and_then(|a| a.cutover("legacy-tokens"))
                    .is_some_and(|c| !c.audit.is_empty())
        })
        .await;
    let a = s.attribution.as_ref().unwrap();
    let legacy = a.cutover("legacy-tokens").unwrap();
    let names: Vec<(&str, u64)> = legacy
        .audit
        .iter()
        .map(|s| (s.subject.as_str(), s.count))
        .collect();
    // The 2026-12-03 use of ci/gone is outside the 20-minute window.
    assert_eq!(names, [("system:serviceaccount:ci:builder", 2)]);
    assert_eq!(legacy.audit_others, 1);
    let stale = a.cutover("token-expiry-extension").unwrap();
    assert_eq!(stale.audit[0].subject, "system:serviceaccount:web:api");
    assert_eq!(stale.note, None);
    assert!(a.unavailable.is_empty(), "{:?}", a.unavailable);
    assert!(
        dir.join("audit-position.json").exists(),
        "the position is kept beside the state"
    );
    let html = d.get("/").await.text().await.unwrap();
    assert!(
        html.contains("system:serviceaccount:ci:builder &middot; 2 uses"),
        "{html}"
    );
    d.stop().await;
    sim.shutdown().await;
}
