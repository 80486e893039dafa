//! The daemon against simulated apiservers: its numbers equal the
//! simulator's ground truth across restarts, `DELETE /metrics`, instances
//! added and removed, outages and token rotation; it never says `ready` while
//! the ground truth has a use inside the window; and its state file carries
//! evidence across its own restarts.

#[path = "support/daemon.rs"]
mod support;

use std::time::Duration;

use cutover_auditor::families::TokenKind;
use cutover_auditor::status::Status;
use cutover_auditor::verdict::{Reason, State};
use support::{Daemon, config_for, sample, start_world, test_dir};

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

    clock.sleep(mins(55)).await;
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

    let addrs: Vec<String> = sim
        .instance_addresses()
        .iter()
        .map(|a| a.to_string())
        .collect();
    // Exact totals per instance and kind, for the kinds that were quiet at
    // every reset (valid tokens move all the time: a reset may lose some).
    for kind in [TokenKind::Legacy, TokenKind::LegacyAuto, TokenKind::Stale] {
        let mut sum = 0.0;
        for (i, addr) in addrs.iter().enumerate() {
            let truth = sim.increments(i, kind, origin - mins(1), end) as f64;
            let got = sample(
                &page,
                "cutover_apiserver_token_uses_total",
                &[("instance", addr), ("kind", kind.label())],
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

    // Resets: a restart and a DELETE /metrics (seen through the sentinel).
    let resets = |addr: &str| {
        sample(
            &page,
            "cutover_apiserver_resets_total",
            &[("instance", addr)],
        )
    };
    let holes = |addr: &str| sample(&page, "cutover_coverage_holes_total", &[("instance", addr)]);
    assert_eq!(
        resets(&addrs[0]),
        Some(1.0),
        "restart of instance 0\n{text}"
    );
    assert_eq!(
        resets(&addrs[2]),
        Some(1.0),
        "DELETE /metrics on instance 2\n{text}"
    );
    assert_eq!(resets(&addrs[1]), Some(0.0));
    // Outages are failed scrapes, not holes; a removal is one.
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
    assert_eq!(
        holes(&addrs[0]),
        Some(2.0),
        "the restart and the removal\n{text}"
    );
    let errors = |addr: &str, reason: &str| {
        sample(
            &page,
            "cutover_scrape_errors_total",
            &[("instance", addr), ("reason", reason)],
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

    // First life: observe until legacy-tokens is ready.
    let a = Daemon::start(config(), clock.clone()).await;
    assert_eq!(a.wait_evaluated().await.cutovers.len(), 3);
    clock.sleep(mins(26)).await;
    assert_eq!(
        cutover(&a.status().await, "legacy-tokens").state,
        State::Ready
    );
    a.stop().await;
    assert!(state.exists(), "state written on shutdown");

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
    let c = Daemon::start(config(), clock.clone()).await;
    let s = c.wait_evaluated().await;
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
