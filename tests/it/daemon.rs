//! The daemon against simulated apiservers: its numbers equal the
//! simulator's ground truth across restarts, `DELETE /metrics`, instances
//! added and removed, outages and token rotation; it never says `ready` while
//! the ground truth has a use inside the window; and its state file carries
//! evidence across its own restarts.

use crate::support::daemon as support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cutover_auditor::clock::Clock;
use cutover_auditor::config::{Config, Targets};
use cutover_auditor::daemon::{self, DaemonError, Faults, Task};
use cutover_auditor::families::TokenKind;
use cutover_auditor::status::{ScrapeErrorKind, Status, TargetHealth};
use cutover_auditor::verdict::{Reason, State};
use support::{
    Daemon, config_for, requests_on, sample, start_world, test_dir, with_static_targets,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const MIN: u64 = 60;

fn mins(m: u64) -> Duration {
    Duration::from_secs(m * MIN)
}

const WINDOWS: &str = r#"
[cutovers.legacy-tokens]
window = "20m"
[cutovers.legacy-auto-tokens]
window = "20m"
[cutovers.token-expiry-extension]
window = "20m"
"#;

/// Which kinds each cutover must find quiet.
fn quiet_kinds(cutover: &str) -> &'static [TokenKind] {
    match cutover {
        "legacy-tokens" => &[TokenKind::Legacy],
        "legacy-auto-tokens" => &[TokenKind::LegacyAuto, TokenKind::InvalidLegacyAuto],
        _ => &[TokenKind::Stale],
    }
}

fn cutover<'a>(status: &'a Status, name: &str) -> &'a cutover_auditor::status::CutoverStatus {
    status
        .cutovers
        .iter()
        .find(|c| c.name == name)
        .expect("cutover in status")
}

const WORLD: &str = r#"
name = "daemon-ground-truth"
speed = 150.0
token_grace = "2m"
scraper_counts_as = "none"
page_kib = 16

[[instances]]
version = "1.29.5"
[[instances]]
version = "1.30.4"
[[instances]]
version = "1.35.0"

# Uses of the quiet kinds happen early; every event below happens while they
# are quiet, so the daemon's totals must equal the ground truth exactly.
[[clients]]
kind = "legacy_auto"
interval = "7s"
targets = "round_robin"
from = "1m"
until = "10m"

# A stale client on one instance of three.
[[clients]]
kind = "stale"
interval = "11s"
targets = 1
from = "1m"
until = "12m"

[[clients]]
kind = "valid"
interval = "5s"
targets = "all"

[[events]]
at = "15m"
action = "restart"
instance = 0
[[events]]
at = "18m"
action = "delete_metrics"
instance = 2
[[events]]
at = "20m"
action = "outage"
instance = 1
mode = "refuse"
for = "2m"
[[events]]
at = "24m"
action = "outage"
instance = 2
mode = "hang"
for = "2m"
[[events]]
at = "28m"
action = "outage"
instance = 0
mode = "http_500"
for = "2m"
[[events]]
at = "32m"
action = "outage"
instance = 1
mode = "slow"
for = "2m"
delay = "3s"
[[events]]
at = "36m"
action = "rotate_token"
[[events]]
at = "40m"
action = "add_instance"
version = "1.33.1"
[[events]]
at = "44m"
action = "remove_instance"
instance = 0
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_numbers_equal_ground_truth_through_resets_churn_outages_and_rotation() {
    let dir = test_dir("daemon-truth");
    let (sim, clock, origin) = start_world(WORLD, &dir).await;
    let config = config_for(&sim, &dir.join("state.json"), "30s", "20s", WINDOWS);
    let daemon = Daemon::start(config, clock.clone()).await;
    daemon.wait_evaluated().await;

    // While uses are happening, the cutovers are in use.
    clock.sleep(mins(6)).await;
    let s = daemon.status().await;
    assert_eq!(cutover(&s, "legacy-tokens").state, State::InUse, "{s:?}");
    assert_eq!(
        cutover(&s, "token-expiry-extension").state,
        State::InUse,
        "a client on one of three instances is seen: {s:?}"
    );

    let addrs: Vec<String> = sim
        .instance_addresses()
        .iter()
        .map(|a| a.to_string())
        .collect();
    let exact_kinds = [TokenKind::Legacy, TokenKind::LegacyAuto, TokenKind::Stale];

    // Before instance 0 leaves (44m): its own series, exact.
    clock.sleep((origin + mins(42)).since(clock.now())).await;
    let before_removal = clock.now();
    let (page, text) = daemon
        .metrics(&[
            "cutover_apiserver_token_uses_total",
            "cutover_apiserver_resets_total",
            "cutover_coverage_holes_total",
        ])
        .await;
    let instance_0 = [("apiserver", addrs[0].as_str())];
    for kind in exact_kinds {
        let truth = sim.increments(0, kind, origin - mins(1), before_removal) as f64;
        let got = sample(
            &page,
            "cutover_apiserver_token_uses_total",
            &[("apiserver", &addrs[0]), ("kind", kind.label())],
        );
        assert_eq!(got.unwrap_or(0.0), truth, "instance 0 {kind}\n{text}");
    }
    assert_eq!(
        sample(&page, "cutover_apiserver_resets_total", &instance_0),
        Some(1.0),
        "restart of instance 0\n{text}"
    );
    assert_eq!(
        sample(&page, "cutover_coverage_holes_total", &instance_0),
        Some(1.0),
        "the restart of instance 0\n{text}"
    );

    clock.sleep((origin + mins(61)).since(clock.now())).await;
    let end = clock.now();
    let s = daemon.status().await;
    let (page, text) = daemon
        .metrics(&[
            "cutover_apiserver_token_uses_total",
            "cutover_token_uses_total",
            "cutover_apiserver_resets_total",
            "cutover_coverage_holes_total",
            "cutover_scrape_errors_total",
            "cutover_targets",
        ])
        .await;

    // Instance 0 left: none of its series is exported any more (its uses
    // stay in the sums).
    assert!(
        !text.contains(&format!("apiserver=\"{}\"", addrs[0])),
        "series of the departed instance 0 are still exported\n{text}"
    );
    // Exact totals per current instance and kind, for the kinds that were
    // quiet at every reset (valid tokens move all the time: a reset may lose
    // some).
    for kind in exact_kinds {
        let mut sum = sim.increments(0, kind, origin - mins(1), end) as f64;
        for (i, addr) in addrs.iter().enumerate().skip(1) {
            let truth = sim.increments(i, kind, origin - mins(1), end) as f64;
            let got = sample(
                &page,
                "cutover_apiserver_token_uses_total",
                &[("apiserver", addr), ("kind", kind.label())],
            );
            assert_eq!(
                got.unwrap_or(0.0),
                truth,
                "instance {i} ({addr}) {kind}\n{text}"
            );
            sum += truth;
        }
        assert_eq!(
            sample(&page, "cutover_token_uses_total", &[("kind", kind.label())]),
            Some(sum),
            "{kind}"
        );
    }
    let stale_on = |i: usize| sim.increments(i, TokenKind::Stale, origin - mins(1), end);
    assert!(
        stale_on(1) > 0 && stale_on(0) == 0 && stale_on(2) == 0,
        "the stale client used instance 1 only"
    );

    // Resets: a DELETE /metrics (seen through the sentinel).
    let resets = |addr: &str| {
        sample(
            &page,
            "cutover_apiserver_resets_total",
            &[("apiserver", addr)],
        )
    };
    let holes = |addr: &str| {
        sample(
            &page,
            "cutover_coverage_holes_total",
            &[("apiserver", addr)],
        )
    };
    assert_eq!(
        resets(&addrs[2]),
        Some(1.0),
        "DELETE /metrics on instance 2\n{text}"
    );
    assert_eq!(resets(&addrs[1]), Some(0.0));
    // Outages are failed scrapes, not holes.
    assert_eq!(
        holes(&addrs[1]),
        Some(0.0),
        "refuse and slow outages are not holes\n{text}"
    );
    assert_eq!(
        holes(&addrs[2]),
        Some(1.0),
        "the DELETE interval; the hang outage is not a hole\n{text}"
    );
    let errors = |addr: &str, reason: &str| {
        sample(
            &page,
            "cutover_scrape_errors_total",
            &[("apiserver", addr), ("reason", reason)],
        )
        .unwrap_or(0.0)
    };
    assert!(errors(&addrs[1], "connect") > 0.0, "refuse outage\n{text}");
    assert!(errors(&addrs[2], "timeout") > 0.0, "hang outage\n{text}");
    for addr in &addrs[1..] {
        assert_eq!(
            errors(addr, "http_401"),
            0.0,
            "the rotated token is read in time\n{text}"
        );
    }
    // Instance 0 left (its scrape series went with it); instance 3 joined.
    assert_eq!(sample(&page, "cutover_targets", &[]), Some(3.0));
    let targets: Vec<&str> = s.targets.iter().map(|t| t.instance.as_str()).collect();
    assert_eq!(
        targets,
        [addrs[1].as_str(), addrs[2].as_str(), addrs[3].as_str()]
    );
    assert!(
        s.targets.iter().all(|t| t.up),
        "every target scraped after rotation and outages: {:?}",
        s.targets
    );

    // The quiet cutovers turned ready once their last use left the window,
    // and never claimed ready while the ground truth had a use in it.
    for name in ["legacy-tokens", "token-expiry-extension"] {
        assert_eq!(cutover(&s, name).state, State::Ready, "{name}: {s:?}");
    }
    let transitions = daemon.transitions();
    assert!(
        transitions
            .iter()
            .any(|(_, c, from, to, _)| c == "legacy-tokens"
                && from.as_deref() == Some("in_use")
                && to == "ready"),
        "{transitions:?}"
    );
    {
        let world = sim.world();
        for (at, name, _, to, _) in &transitions {
            if to != "ready" {
                continue;
            }
            let window = mins(20);
            for &kind in quiet_kinds(name) {
                let uses = world.increments_all(kind, *at - window, *at);
                assert_eq!(
                    uses, 0,
                    "{name} turned ready at {at} with {uses} {kind} uses in its window"
                );
            }
        }
    }
    assert!(
        transitions.iter().all(|t| !t.4),
        "no regression: {transitions:?}"
    );
    daemon.stop().await;
    sim.shutdown().await;
}

const PERSISTED_WORLD: &str = r#"
name = "daemon-persistence"
speed = 150.0
scraper_counts_as = "valid"
page_kib = 8

[[instances]]
version = "1.30.4"
count = 3

[[clients]]
kind = "legacy"
interval = "10s"
targets = "all"
from = "1m"
until = "3m"

# While the daemon is down (from about 28m to 40m below), instance 1
# restarts and instance 2 leaves for good.
[[events]]
at = "38m"
action = "restart"
instance = 1
[[events]]
at = "38m"
action = "remove_instance"
instance = 2
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_file_carries_evidence_across_daemon_restarts_and_corruption_starts_blind() {
    let dir = test_dir("daemon-state");
    let state = dir.join("state.json");
    let (sim, clock, origin) = start_world(PERSISTED_WORLD, &dir).await;
    let config = || config_for(&sim, &state, "30s", "20s", WINDOWS);

    // First life: observe until legacy-tokens is ready. Its periodic writer
    // waits a day, so only the shutdown can write what the second life reads.
    let mut first = config();
    first.state.write_interval = Duration::from_secs(24 * 3600);
    let a = Daemon::start(first, clock.clone()).await;
    assert_eq!(a.wait_evaluated().await.cutovers.len(), 3);
    clock.sleep(mins(26)).await;
    assert_eq!(
        cutover(&a.status().await, "legacy-tokens").state,
        State::Ready
    );
    let stopping = clock.now();
    a.stop().await;
    let saved: cutover_auditor::state::Snapshot =
        serde_json::from_slice(&std::fs::read(&state).expect("state written on shutdown"))
            .expect("state JSON");
    assert!(
        saved.saved_at >= stopping,
        "the state file is the shutdown's, saved at {:?}, not an earlier write (stop at {stopping:?})",
        saved.saved_at
    );

    // Second life, one minute later: continuity is proven by unchanged start
    // times, so the verdict is ready again at its first evaluation.
    clock.sleep(mins(1)).await;
    let b = Daemon::start(config(), clock.clone()).await;
    let s = b.wait_evaluated().await;
    assert_eq!(
        b.resumed(),
        Some(cutover_auditor::daemon::ResumeOutcome::Resumed)
    );
    let legacy = cutover(&s, "legacy-tokens");
    assert_eq!(
        (legacy.state, legacy.reason),
        (State::Ready, Reason::QuietForWindow),
        "{s:?}"
    );
    clock.sleep(mins(2)).await;
    b.stop().await;

    // Down until 40m while instance 1 restarts at 38m: the gap cannot be
    // proven continuous on instance 1, so the verdict is blind. Instance 2,
    // gone meanwhile, is no target any more: not `target_down`.
    assert!(
        clock.now() < origin + mins(32),
        "the daemon must be down for more than the tolerance before the restart"
    );
    clock.sleep((origin + mins(40)).since(clock.now())).await;
    let restarted = clock.now();
    let c = Daemon::start(config(), clock.clone()).await;
    // Judged once both remaining instances have been scraped since the
    // restart (an evaluation before that sees a target not yet scraped).
    let s = c
        .wait_status("evaluated after every target was scraped", |s| {
            let scraped: Vec<_> = s.targets.iter().map(|t| t.last_success).collect();
            scraped.len() == 2
                && scraped.iter().all(|t| t.is_some_and(|t| t >= restarted))
                && s.evaluated_at
                    .is_some_and(|e| scraped.iter().all(|t| *t <= Some(e)))
        })
        .await;
    let legacy = cutover(&s, "legacy-tokens");
    assert_eq!(
        (legacy.state, legacy.reason),
        (State::Blind, Reason::CoverageGap),
        "{s:?}"
    );
    assert!(legacy.ready_in_seconds.is_some_and(|r| r > 0));
    c.stop().await;

    // A corrupt state file is moved aside and the daemon starts blind.
    std::fs::write(&state, b"{\"version\": 1, \"ledger\": [").unwrap();
    let d = Daemon::start(config(), clock.clone()).await;
    let s = d.wait_evaluated().await;
    match d.resumed() {
        Some(cutover_auditor::daemon::ResumeOutcome::MovedAside(path)) => {
            assert!(
                path.to_string_lossy().contains("state.json.corrupt-"),
                "{path:?}"
            );
            assert!(path.exists());
        }
        other => panic!("expected the corrupt file moved aside, got {other:?}"),
    }
    for c in &s.cutovers {
        assert_eq!(c.state, State::Blind, "{s:?}");
    }
    d.stop().await;
    sim.shutdown().await;
}

const STATIC_WORLD: &str = r#"
name = "daemon-static"
speed = 150.0
scraper_counts_as = "none"
page_kib = 8

[[instances]]
version = "1.30.4"
count = 2
"#;

const SHORT_WINDOWS: &str = r#"
[cutovers.legacy-tokens]
window = "5m"
coverage_tolerance = "1m"
[cutovers.legacy-auto-tokens]
enabled = false
[cutovers.token-expiry-extension]
enabled = false
"#;

/// A resolver answering from `names` (`host:port` → address); IP literals
/// resolve to themselves, every other name does not resolve.
fn table_resolver(
    names: Arc<Mutex<BTreeMap<String, SocketAddr>>>,
) -> cutover_auditor::daemon::Resolver {
    cutover_auditor::daemon::Resolver::Function(Arc::new(move |host_port: &str| {
        if let Ok(addr) = host_port.parse::<SocketAddr>() {
            return Ok(addr);
        }
        names
            .lock()
            .unwrap()
            .get(host_port)
            .copied()
            .ok_or_else(|| format!("{host_port}: no such host (test resolver)"))
    }))
}

fn target<'a>(status: &'a Status, instance: &str) -> Option<&'a TargetHealth> {
    status.targets.iter().find(|t| t.instance == instance)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_target_that_never_resolves_is_listed_down_with_reason_dns() {
    let dir = test_dir("daemon-static-unresolved");
    let (sim, clock, _) = start_world(STATIC_WORLD, &dir).await;
    let good = sim.instance_addresses()[0].to_string();
    let bad = "nonexistent.invalid:6443";
    let config = with_static_targets(
        config_for(&sim, &dir.join("state.json"), "30s", "20s", SHORT_WINDOWS),
        &sim,
        &[
            format!("https://{good}/metrics"),
            format!("https://{bad}/metrics"),
        ],
    );
    let names = Arc::new(Mutex::new(BTreeMap::new()));
    let daemon = Daemon::start_with_resolver(config, clock.clone(), table_resolver(names)).await;
    daemon.wait_evaluated().await;
    // Past a few intervals and the re-resolution of static names (every
    // minute): it is still a target, failing every interval.
    clock.sleep(mins(3)).await;
    let s = daemon
        .wait_status("both targets listed", |s| s.targets.len() == 2)
        .await;
    let t = target(&s, bad).expect("the unresolved target is listed");
    assert!(!t.up, "{t:?}");
    assert_eq!(t.last_error, Some(ScrapeErrorKind::Dns), "{t:?}");
    assert!(
        t.last_error_detail
            .as_deref()
            .is_some_and(|d| d.contains(bad)),
        "the detail names the target: {t:?}"
    );
    assert!(t.consecutive_failures >= 3, "{t:?}");
    assert!(t.last_success.is_none(), "{t:?}");
    assert!(target(&s, &good).is_some_and(|t| t.up), "{s:?}");

    let (page, text) = daemon
        .metrics(&[
            "cutover_scrape_success",
            "cutover_scrape_errors_total",
            "cutover_targets",
        ])
        .await;
    assert_eq!(
        sample(&page, "cutover_scrape_success", &[("apiserver", bad)]),
        Some(0.0),
        "{text}"
    );
    assert!(
        sample(
            &page,
            "cutover_scrape_errors_total",
            &[("apiserver", bad), ("reason", "dns")]
        )
        .is_some_and(|n| n >= 3.0),
        "{text}"
    );
    assert_eq!(sample(&page, "cutover_targets", &[]), Some(2.0), "{text}");
    daemon.stop().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_target_that_stops_resolving_stays_a_target_down_and_blocks_ready() {
    let dir = test_dir("daemon-static-stops-resolving");
    let (sim, clock, _) = start_world(STATIC_WORLD, &dir).await;
    let addrs = sim.instance_addresses().to_vec();
    let port = |i: usize| addrs[i].port();
    let name = |i: usize| format!("apiserver-{i}.test:{}", port(i));
    let names = Arc::new(Mutex::new(BTreeMap::from([
        (name(0), addrs[0]),
        (name(1), addrs[1]),
    ])));
    let config = with_static_targets(
        config_for(&sim, &dir.join("state.json"), "30s", "20s", SHORT_WINDOWS),
        &sim,
        &[
            format!("https://{}/metrics", name(0)),
            format!("https://{}/metrics", name(1)),
        ],
    );
    let daemon =
        Daemon::start_with_resolver(config, clock.clone(), table_resolver(Arc::clone(&names)))
            .await;
    // The instance label is the URL's host:port, not the address.
    let s = daemon.wait_state("legacy-tokens", State::Ready).await;
    let listed: Vec<&str> = s.targets.iter().map(|t| t.instance.as_str()).collect();
    assert_eq!(listed, [name(0), name(1)], "{s:?}");

    // apiserver-0's name stops resolving: it stays a target, down, and the
    // cutover cannot stay ready on an instance nobody reads.
    names.lock().unwrap().remove(&name(0));
    let s = daemon
        .wait_status("apiserver-0 down with reason dns", |s| {
            target(s, &name(0)).is_some_and(|t| !t.up && t.last_error == Some(ScrapeErrorKind::Dns))
        })
        .await;
    assert_eq!(s.targets.len(), 2, "{s:?}");
    let s = daemon
        .wait_status("legacy-tokens blind: target down", |s| {
            let c = cutover(s, "legacy-tokens");
            c.state == State::Blind && c.reason == Reason::TargetDown
        })
        .await;
    assert!(
        target(&s, &name(0)).is_some_and(|t| !t.up),
        "still listed, down: {s:?}"
    );
    let (page, text) = daemon.metrics(&["cutover_scrape_success"]).await;
    assert_eq!(
        sample(&page, "cutover_scrape_success", &[("apiserver", &name(0))]),
        Some(0.0),
        "{text}"
    );
    assert!(
        daemon
            .transitions()
            .iter()
            .any(|(_, c, from, to, _)| c == "legacy-tokens"
                && from.as_deref() == Some("ready")
                && to == "blind"),
        "{:?}",
        daemon.transitions()
    );

    // It resolves again: scraped again, up.
    names.lock().unwrap().insert(name(0), addrs[0]);
    daemon
        .wait_status("apiserver-0 up again", |s| {
            target(s, &name(0)).is_some_and(|t| t.up)
        })
        .await;
    daemon.stop().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_scrape_happens_after_the_daemon_stopped() {
    let dir = test_dir("daemon-no-scrape-after-stop");
    let (sim, clock, _) = start_world(STATIC_WORLD, &dir).await;
    let state = dir.join("state.json");
    let urls: Vec<String> = sim
        .instance_addresses()
        .iter()
        .map(|a| format!("https://{a}/metrics"))
        .collect();
    let config = with_static_targets(
        config_for(&sim, &state, "30s", "20s", SHORT_WINDOWS),
        &sim,
        &urls,
    );
    let requests = || requests_on(&sim, 0) + requests_on(&sim, 1);
    let daemon = Daemon::start(config, clock.clone()).await;
    daemon.wait_evaluated().await;
    clock.sleep(mins(2)).await;
    assert!(requests() >= 4, "scraped every 30s: {}", requests());
    daemon.stop().await;
    let at_stop = requests();
    let written = std::fs::metadata(&state)
        .and_then(|m| m.modified())
        .expect("state written on shutdown");

    // Ten intervals later: not one more request, and the state file is the
    // one written at the end of the drain.
    clock.sleep(mins(5)).await;
    assert_eq!(
        requests(),
        at_stop,
        "scrape tasks outlived the daemon and kept scraping"
    );
    assert_eq!(
        std::fs::metadata(&state)
            .and_then(|m| m.modified())
            .unwrap(),
        written
    );
    sim.shutdown().await;
}

// One thread: a task spawned by `run` cannot run before the test looks, so
// the check below sees exactly what `run` left behind when it returned.
#[tokio::test(flavor = "current_thread")]
async fn an_error_at_start_leaves_no_admin_server_behind() {
    let dir = test_dir("daemon-start-error");
    let (sim, clock, _) = start_world(STATIC_WORLD, &dir).await;
    let mut config = config_for(&sim, &dir.join("state.json"), "30s", "20s", SHORT_WINDOWS);
    let missing_ca = dir.join("no-such-ca.pem");
    match &mut config.targets {
        Targets::Kubernetes(k) => k.ca_file = missing_ca,
        Targets::Static(_) => unreachable!("config_for discovers"),
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let options = cutover_auditor::daemon::Options {
        config,
        clock,
        listener: Some(listener),
        events: None,
    };
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        cutover_auditor::daemon::run(options, std::future::pending()),
    )
    .await
    .expect("run returns at once on a setup error");
    assert!(
        matches!(result, Err(DaemonError::Discovery(_))),
        "{result:?}"
    );
    // Nothing listens on the admin address any more (a blocking connect:
    // no task of the daemon gets to run meanwhile).
    let connected = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5));
    assert!(
        connected.is_err(),
        "the admin server outlived run's error: {addr} still accepts connections"
    );
    sim.shutdown().await;
}

/// A daemon run with fault injection ([`daemon::run_with_faults`]): its admin
/// address, a stop signal and the task running it.
struct Faulty {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), DaemonError>>,
}

impl Faulty {
    async fn start(config: Config, clock: Clock, faults: Faults) -> Faulty {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let options = daemon::Options {
            config,
            clock,
            listener: Some(listener),
            events: None,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(daemon::run_with_faults(
            options,
            daemon::Resolver::System,
            faults,
            async {
                let _ = stopped.await;
            },
        ));
        Faulty {
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// Status code and body of `path`, or `None` when nothing answers.
    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let response = reqwest::Client::new()
            .get(format!("http://{}{path}", self.addr))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .ok()?;
        let code = response.status().as_u16();
        Some((code, response.text().await.unwrap_or_default()))
    }

    /// The value of the sample of `/metrics` whose name and labels are `series`.
    async fn metric(&self, series: &str) -> Option<f64> {
        let (_, page) = self.get("/metrics").await?;
        page.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    }

    /// Waits (bounded: 30 s real) until `check` holds for `what`.
    async fn wait_for(&self, what: &str, check: impl AsyncFn(&Faulty) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !check(self).await {
            assert!(
                std::time::Instant::now() < deadline,
                "not {what} within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn ready(&self) -> bool {
        self.get("/readyz")
            .await
            .is_some_and(|(code, _)| code == 200)
    }

    /// Stops the daemon; what `run` returned.
    async fn stop(mut self) -> Result<(), DaemonError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.returned().await
    }

    /// What `run` returned (within 20 s, without a stop signal).
    async fn returned(&mut self) -> Result<(), DaemonError> {
        tokio::time::timeout(Duration::from_secs(20), &mut self.task)
            .await
            .expect("run returns within 20 s")
            .expect("run did not panic")
    }
}

/// An error and its sources, joined as `anyhow`'s `{:#}` prints them.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_writer_that_panics_is_counted_and_restarted() {
    let dir = test_dir("daemon-writer-panic");
    let (sim, clock, _) = start_world(STATIC_WORLD, &dir).await;
    let state = dir.join("state.json");
    let config = config_for(&sim, &state, "30s", "20s", SHORT_WINDOWS);
    let faults = Faults::default();
    faults.panic_next(Task::StateWriter);
    let daemon = Faulty::start(config, clock, faults).await;
    let failures = r#"cutover_task_failures_total{task="state_writer"}"#;
    daemon
        .wait_for("a state writer failure counted", async |d| {
            d.metric(failures).await == Some(1.0)
        })
        .await;
    // Restarted: the state file is written while the daemon runs.
    daemon
        .wait_for("the state written by the restarted writer", async |d| {
            d.metric("cutover_state_last_write_success_timestamp_seconds")
                .await
                .is_some_and(|t| t > 0.0)
        })
        .await;
    assert!(state.exists());
    daemon.wait_for("ready", async |d| d.ready().await).await;
    for other in ["discovery", "scrape_supervisor", "evaluator"] {
        let series = format!("cutover_task_failures_total{{task=\"{other}\"}}");
        assert_eq!(daemon.metric(&series).await, Some(0.0), "{series}");
    }
    assert_eq!(
        daemon.metric(failures).await,
        Some(1.0),
        "one panic, one count"
    );
    daemon.stop().await.expect("a clean stop");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_essential_task_that_panics_drains_and_stops_the_daemon_naming_it() {
    let dir = test_dir("daemon-essential-panic");
    let (sim, clock, _) = start_world(STATIC_WORLD, &dir).await;
    for task in [Task::Discovery, Task::ScrapeSupervisor, Task::Evaluator] {
        let state = dir.join(format!("{}.json", task.label()));
        let mut config = config_for(&sim, &state, "30s", "20s", SHORT_WINDOWS);
        // No periodic write during the test: the file is the drain's.
        config.state.write_interval = Duration::from_secs(24 * 3600);
        let faults = Faults::default();
        if task != Task::Evaluator {
            // Armed before the start: the task panics as it starts (a loop
            // pass of the supervisor waits for a new target list, which may
            // not come within the test).
            faults.panic_next(task);
        }
        let mut daemon = Faulty::start(config, clock.clone(), faults.clone()).await;
        if task == Task::Evaluator {
            // Fails after the first evaluation, while the daemon is ready.
            daemon.wait_for("ready", async |d| d.ready().await).await;
            faults.panic_next(task);
        }
        let result = daemon.returned().await;
        match &result {
            Err(DaemonError::TaskFailed { task: name, how }) => {
                assert_eq!(*name, task.label());
                assert!(how.contains("panicked: injected fault"), "{how}");
            }
            other => panic!("{task:?}: run returned {other:?}"),
        }
        assert!(
            state.exists(),
            "{task:?}: the drain wrote the state before stopping"
        );
        assert!(
            daemon.get("/readyz").await.is_none(),
            "{task:?}: the admin server stopped with the daemon"
        );
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_state_write_is_counted_turns_readiness_off_and_fails_the_final_write() {
    let dir = test_dir("daemon-write-fails");
    let (sim, clock, _) = start_world(STATIC_WORLD, &dir).await;
    // Tests run as root, where a read-only mode does not stop writes: the
    // state file's directory is removed instead (ENOENT).
    let state_dir = dir.join("state");
    std::fs::create_dir_all(&state_dir).unwrap();
    let state = state_dir.join("state.json");
    let config = config_for(&sim, &state, "30s", "20s", SHORT_WINDOWS);
    let daemon = Faulty::start(config, clock, Faults::default()).await;
    daemon.wait_for("ready", async |d| d.ready().await).await;
    daemon
        .wait_for("a first write", async |d| {
            d.metric("cutover_state_last_write_success_timestamp_seconds")
                .await
                .is_some_and(|t| t > 0.0)
        })
        .await;
    assert_eq!(
        daemon.metric("cutover_state_write_errors_total").await,
        Some(0.0)
    );

    std::fs::remove_dir_all(&state_dir).unwrap();
    daemon
        .wait_for("a failed write counted", async |d| {
            d.metric("cutover_state_write_errors_total")
                .await
                .is_some_and(|n| n >= 1.0)
        })
        .await;
    daemon
        .wait_for("not ready while writes fail", async |d| {
            d.get("/readyz").await.is_some_and(|(code, _)| code == 503)
        })
        .await;
    let (_, why) = daemon.get("/readyz").await.unwrap();
    assert!(
        why.starts_with("not ready: the last state write failed: cannot write state file")
            && why.contains("No such file or directory (os error 2)"),
        "{why}"
    );
    let last_success = daemon
        .metric("cutover_state_last_write_success_timestamp_seconds")
        .await
        .unwrap();

    // The directory is back: the next write succeeds, readiness returns.
    std::fs::create_dir_all(&state_dir).unwrap();
    daemon
        .wait_for("ready again", async |d| d.ready().await)
        .await;
    assert!(state.exists());
    let now_success = daemon
        .metric("cutover_state_last_write_success_timestamp_seconds")
        .await
        .unwrap();
    assert!(now_success > last_success, "{now_success} > {last_success}");

    // Gone again at shutdown: the final write fails, and `run` says why.
    std::fs::remove_dir_all(&state_dir).unwrap();
    let result = daemon.stop().await;
    let Err(err @ DaemonError::FinalStateWrite(_)) = &result else {
        panic!("run returned {result:?}");
    };
    let text = error_chain(err);
    assert!(
        text.contains("final state write failed")
            && text.contains(&state.display().to_string())
            && text.contains("No such file or directory (os error 2)"),
        "{text}"
    );
    sim.shutdown().await;
}

/// A drain that runs over its grace period (here the state write hangs: its
/// temporary file is a FIFO nobody reads) exits non-zero, as a failed final
/// write does (exit 74), instead of 0 without the write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_over_its_grace_period_fails_as_a_lost_final_write() {
    let dir = test_dir("daemon-drain-grace");
    let (sim, clock, _) = start_world(STATIC_WORLD, &dir).await;
    let state = dir.join("state.json");
    let fifo = dir.join("state.json.tmp");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success(), "mkfifo {}", fifo.display());
    let mut config = config_for(&sim, &state, "30s", "20s", SHORT_WINDOWS);
    config.state.write_interval = Duration::from_secs(24 * 3600);
    let daemon = Faulty::start(config, clock, Faults::default()).await;
    daemon.wait_for("ready", async |d| d.ready().await).await;
    let begun = std::time::Instant::now();
    let result = daemon.stop().await;
    let Err(err @ DaemonError::FinalStateWrite(daemon::PersistError::GraceExceeded { .. })) =
        &result
    else {
        panic!("run returned {result:?}");
    };
    assert!(
        begun.elapsed() >= Duration::from_secs(9),
        "{:?}",
        begun.elapsed()
    );
    let text = error_chain(err);
    assert!(
        text.contains("final state write failed") && text.contains("grace period"),
        "{text}"
    );
    // Unblock the write left hanging, so that nothing outlives the test.
    let reader = std::thread::spawn(move || std::fs::read(&fifo).map(|b| b.len()));
    let _ = reader.join();
    sim.shutdown().await;
}

/// Discovery answered 403 (a token without RBAC for EndpointSlices): each
/// failure is counted by reason in `cutover_discovery_errors_total{reason}`,
/// `cutover_discovery_last_success_timestamp_seconds` stays 0; once the
/// token works, the timestamp is set and the count stops growing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_failures_are_counted_by_reason_and_success_is_timestamped() {
    let dir = test_dir("daemon-discovery-metrics");
    let (sim, clock, _) = start_world(STATIC_WORLD, &dir).await;
    let token = dir.join("discovery-token");
    // The simulator's token that authenticates but has no RBAC grant.
    let sim_dir = sim.token_path().parent().unwrap().to_owned();
    std::fs::copy(sim_dir.join("forbidden-token"), &token).unwrap();
    let mut config = config_for(&sim, &dir.join("state.json"), "30s", "20s", SHORT_WINDOWS);
    match &mut config.targets {
        Targets::Kubernetes(k) => k.token_file = token.clone(),
        Targets::Static(_) => panic!("config_for discovers"),
    }
    let daemon = Faulty::start(config, clock, Faults::default()).await;
    let forbidden = r#"cutover_discovery_errors_total{reason="http_403"}"#;
    let success = "cutover_discovery_last_success_timestamp_seconds";
    daemon
        .wait_for("two 403s counted", async |d| {
            d.metric(forbidden).await.is_some_and(|n| n >= 2.0)
        })
        .await;
    assert_eq!(daemon.metric(success).await, Some(0.0));
    for other in ["connect", "http_401", "http_other", "timeout", "decode"] {
        let series = format!("cutover_discovery_errors_total{{reason=\"{other}\"}}");
        assert_eq!(daemon.metric(&series).await, Some(0.0), "{series}");
    }

    // The token works again (rotated in as the kubelet does).
    let good = std::fs::read_to_string(sim.token_path()).unwrap();
    let tmp = dir.join("discovery-token.tmp");
    std::fs::write(&tmp, good).unwrap();
    std::fs::rename(&tmp, &token).unwrap();
    daemon
        .wait_for("a successful discovery timestamped", async |d| {
            d.metric(success).await.is_some_and(|t| t > 1.0e9)
        })
        .await;
    let failures = daemon.metric(forbidden).await.unwrap();
    daemon
        .wait_for("targets discovered", async |d| {
            d.get("/api/v1/status")
                .await
                .is_some_and(|(_, body)| body.contains("\"targets\":[{"))
        })
        .await;
    assert_eq!(
        daemon.metric(forbidden).await,
        Some(failures),
        "no new failure"
    );
    daemon.stop().await.expect("a clean stop");
    sim.shutdown().await;
}

/// An admin server that fails after the start is not only logged: it is
/// counted in `cutover_task_failures_total{task="admin_server"}` and started
/// again on its address, so `/healthz`, `/readyz` and `/metrics` come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_server_that_fails_is_counted_and_restarted_on_its_address() {
    let dir = test_dir("daemon-admin-panic");
    let (sim, clock, _) = start_world(STATIC_WORLD, &dir).await;
    let config = config_for(&sim, &dir.join("state.json"), "30s", "20s", SHORT_WINDOWS);
    let faults = Faults::default();
    faults.panic_next(Task::AdminServer);
    let daemon = Faulty::start(config, clock, faults).await;
    let failures = r#"cutover_task_failures_total{task="admin_server"}"#;
    daemon
        .wait_for(
            "the restarted admin server counting its failure",
            async |d| d.metric(failures).await == Some(1.0),
        )
        .await;
    assert_eq!(
        daemon.get("/healthz").await.map(|(code, _)| code),
        Some(200)
    );
    daemon.wait_for("ready", async |d| d.ready().await).await;
    for other in [
        "discovery",
        "scrape_supervisor",
        "evaluator",
        "state_writer",
    ] {
        let series = format!("cutover_task_failures_total{{task=\"{other}\"}}");
        assert_eq!(daemon.metric(&series).await, Some(0.0), "{series}");
    }
    daemon.stop().await.expect("a clean stop");
    sim.shutdown().await;
}
