//! Adversarial scenarios against the simulated apiservers: an
//! instance that answers 500 from the moment it is listed, a certificate for
//! another name (static targets and discovery), an instance that joins and
//! fails its first scrapes, pages without the token families while the
//! counter grows. In every one, each `ready` the daemon announced is checked
//! against the simulator's ground truth for every moment it lasted: never
//! `ready` while a use inside the window went unseen.

use crate::support::daemon as support;

use std::time::Duration;

use cutover_auditor::clock::Clock;
use cutover_auditor::config::Config;
use cutover_auditor::families::TokenKind;
use cutover_auditor::simulator::Simulation;
use cutover_auditor::status::{CutoverStatus, ScrapeErrorKind, Status};
use cutover_auditor::time::Timestamp;
use cutover_auditor::verdict::{Reason, State};
use support::{Daemon, config_for, start_world, test_dir};

const MIN: u64 = 60;

fn mins(m: u64) -> Duration {
    Duration::from_secs(m * MIN)
}

/// Ten-minute windows, so that a false `ready` would come within minutes.
const WINDOWS: &str = r#"
[cutovers.legacy-tokens]
window = "10m"
[cutovers.legacy-auto-tokens]
window = "10m"
[cutovers.token-expiry-extension]
window = "10m"
"#;
const WINDOW: Duration = Duration::from_secs(10 * MIN);

fn quiet_kinds(cutover: &str) -> &'static [TokenKind] {
    match cutover {
        "legacy-tokens" => &[TokenKind::Legacy],
        "legacy-auto-tokens" => &[TokenKind::LegacyAuto, TokenKind::InvalidLegacyAuto],
        _ => &[TokenKind::Stale],
    }
}

fn cutover<'a>(status: &'a Status, name: &str) -> &'a CutoverStatus {
    status
        .cutovers
        .iter()
        .find(|c| c.name == name)
        .expect("cutover in status")
}

/// How long a use may go unseen by design: the coverage tolerance (5m, the
/// default) covers the time since an instance's last good scrape, plus one
/// scrape round (interval 30s + timeout 20s) for the scrape that sees it.
const UNSEEN_AT_MOST: Duration = Duration::from_secs(5 * MIN + 50);

/// Every span in which a cutover was `ready` must have had no use of its
/// quiet kinds, on any instance, inside the window of any moment of it,
/// except uses younger than the tolerated unobserved time at its end (the
/// next scrape shows them, and the verdict leaves `ready`).
fn assert_never_falsely_ready(daemon: &Daemon, sim: &Simulation, end: Timestamp) {
    let transitions = daemon.transitions();
    let world = sim.world();
    for (i, (at, name, _, to, _)) in transitions.iter().enumerate() {
        if to != "ready" {
            continue;
        }
        let until = transitions[i + 1..]
            .iter()
            .find(|t| &t.1 == name)
            .map_or(end, |t| t.0);
        for &kind in quiet_kinds(name) {
            let uses = world.increments_all(kind, *at - WINDOW, until - UNSEEN_AT_MOST);
            assert_eq!(
                uses, 0,
                "{name} was ready from {at} to {until} with {uses} {kind} uses in its window: {transitions:?}"
            );
        }
    }
}

/// A config of static targets, one per simulated instance; `server_name`
/// gives each target's TLS name.
fn static_config(
    sim: &Simulation,
    dir: &std::path::Path,
    server_name: impl Fn(usize) -> String,
) -> Config {
    let mut text = format!(
        "listen = \"127.0.0.1:0\"\n[scrape]\ninterval = \"30s\"\ntimeout = \"20s\"\n\
         [state]\npath = \"{}\"\n[log]\nformat = \"text\"\nlevel = \"warn\"\n{WINDOWS}",
        dir.join("state.json").display()
    );
    for (i, addr) in sim.instance_addresses().iter().enumerate() {
        text.push_str(&format!(
            "[[targets.static]]\nurl = \"https://{addr}/metrics\"\nserver_name = \"{}\"\n\
             ca_file = \"{}\"\ntoken_file = \"{}\"\n",
            server_name(i),
            sim.ca_path().display(),
            sim.token_path().display(),
        ));
    }
    Config::parse(&text, |_| None).expect("static test config is valid")
}

async fn run_for(clock: &Clock, d: Duration) {
    clock.sleep(d).await;
}

/// A legacy client uses instance 1 all along; instance 1 answers `/metrics`
/// with 500 from the moment it is listed.
const FIVE_HUNDRED_FROM_THE_START: &str = r#"
name = "adversarial-500"
speed = 150.0
scraper_counts_as = "valid"
page_kib = 8

[[instances]]
version = "1.30.4"
count = 3

[[clients]]
kind = "legacy"
interval = "20s"
targets = 1

[[events]]
at = "0s"
action = "outage"
instance = 1
mode = "http_500"
for = "100h"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_answering_500_from_the_start_keeps_every_cutover_from_ready() {
    let dir = test_dir("adversarial-500");
    let (sim, clock, _) = start_world(FIVE_HUNDRED_FROM_THE_START, &dir).await;
    let config = config_for(&sim, &dir.join("state.json"), "30s", "20s", WINDOWS);
    let daemon = Daemon::start(config, clock.clone()).await;
    daemon.wait_evaluated().await;
    run_for(&clock, mins(25)).await;
    let s = daemon.status().await;
    let end = clock.now();
    let broken = sim.instance_addresses()[1].to_string();
    for name in ["legacy-tokens", "token-expiry-extension"] {
        let c = cutover(&s, name);
        assert_eq!(
            (c.state, c.reason),
            (State::Blind, Reason::TargetNeverScraped),
            "{name}: {s:?}"
        );
        assert_eq!(c.blocking_instances, vec![broken.clone()], "{name}");
    }
    let target = s
        .targets
        .iter()
        .find(|t| t.instance == broken)
        .expect("the failing instance is a target");
    assert!(!target.up);
    assert_eq!(target.last_error, Some(ScrapeErrorKind::HttpOther));
    assert_never_falsely_ready(&daemon, &sim, end);
    assert!(
        !daemon.transitions().iter().any(|t| t.3 == "ready"),
        "{:?}",
        daemon.transitions()
    );
    daemon.stop().await;
    sim.shutdown().await;
}

/// Three instances, a legacy client on instance 1 only.
const CLIENT_ON_ONE: &str = r#"
name = "adversarial-tls"
speed = 150.0
scraper_counts_as = "valid"
page_kib = 8

[[instances]]
version = "1.30.4"
count = 3

[[clients]]
kind = "legacy"
interval = "20s"
targets = 1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_target_with_a_certificate_for_another_name_is_never_ready() {
    let dir = test_dir("adversarial-tls");
    let (sim, clock, _) = start_world(CLIENT_ON_ONE, &dir).await;
    let config = static_config(&sim, &dir, |i| {
        if i == 1 {
            "not-the-apiserver.example".to_owned()
        } else {
            "kubernetes".to_owned()
        }
    });
    let daemon = Daemon::start(config, clock.clone()).await;
    daemon.wait_evaluated().await;
    run_for(&clock, mins(25)).await;
    let s = daemon.status().await;
    let end = clock.now();
    let c = cutover(&s, "legacy-tokens");
    assert_eq!(
        (c.state, c.reason),
        (State::Blind, Reason::TargetNeverScraped),
        "{s:?}"
    );
    assert_eq!(c.blocking_instances.len(), 1, "{s:?}");
    let broken = s
        .targets
        .iter()
        .find(|t| t.instance == c.blocking_instances[0])
        .expect("the blocking instance is a target");
    assert_eq!(broken.last_error, Some(ScrapeErrorKind::Tls), "{broken:?}");
    assert_never_falsely_ready(&daemon, &sim, end);
    daemon.stop().await;
    sim.shutdown().await;
}

/// Two instances, quiet; a third joins at 12m and answers 500 until 20m
/// while a legacy client uses it from 13m30s (once discovery, refreshed
/// every minute, has listed it) to 16m.
const JOINER_FAILS_FIRST: &str = r#"
name = "adversarial-joiner"
speed = 150.0
scraper_counts_as = "valid"
page_kib = 8

[[instances]]
version = "1.30.4"
count = 2

[[clients]]
kind = "legacy"
interval = "20s"
targets = 2
from = "13m30s"
until = "16m"

[[events]]
at = "12m"
action = "add_instance"
version = "1.30.4"
[[events]]
at = "12m"
action = "outage"
instance = 2
mode = "http_500"
for = "8m"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_joins_and_fails_its_first_scrapes_blocks_ready_until_seen() {
    let dir = test_dir("adversarial-joiner");
    let (sim, clock, origin) = start_world(JOINER_FAILS_FIRST, &dir).await;
    let config = config_for(&sim, &dir.join("state.json"), "30s", "20s", WINDOWS);
    let daemon = Daemon::start(config, clock.clone()).await;
    daemon.wait_evaluated().await;
    // Quiet on both instances for a window: ready.
    daemon.wait_state("legacy-tokens", State::Ready).await;
    run_for(&clock, (origin + mins(17)).since(clock.now())).await;
    // The joiner has been failing for 5 minutes with uses on it.
    let s = daemon.status().await;
    let c = cutover(&s, "legacy-tokens");
    assert_eq!(
        (c.state, c.reason),
        (State::Blind, Reason::TargetNeverScraped),
        "{s:?}"
    );
    // Its first good scrape (a process started after it was listed) shows
    // every use since its start.
    let s = daemon
        .wait_status("every instance read again", |s| {
            s.targets
                .iter()
                .all(|t| t.up && t.last_success > Some(origin + mins(18)))
                && s.evaluated_at > s.targets.iter().filter_map(|t| t.last_success).max()
        })
        .await;
    let truth = sim
        .world()
        .increments_all(TokenKind::Legacy, origin, clock.now());
    assert_eq!(cutover(&s, "legacy-tokens").state, State::InUse, "{s:?}");
    assert!(truth > 0);
    assert_eq!(cutover(&s, "legacy-tokens").increase, truth, "{s:?}");
    run_for(&clock, (origin + mins(24)).since(clock.now())).await;
    assert_never_falsely_ready(&daemon, &sim, clock.now());
    daemon.stop().await;
    sim.shutdown().await;
}

/// Instance 1 refuses the scraper with 403 from the start; instance 2 has a
/// certificate for another name; a legacy client uses every instance.
const FORBIDDEN_AND_MISNAMED: &str = r#"
name = "adversarial-discovery"
speed = 150.0
scraper_counts_as = "valid"
page_kib = 8

[[instances]]
version = "1.30.4"
[[instances]]
version = "1.30.4"
[[instances]]
version = "1.30.4"
cert_name = "not-the-apiserver.example"

[[clients]]
kind = "legacy"
interval = "20s"
targets = "round_robin"

[[events]]
at = "0s"
action = "outage"
instance = 1
mode = "http_403"
for = "100h"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_discovery_a_403_and_a_misnamed_certificate_are_named_and_never_ready() {
    let dir = test_dir("adversarial-discovery");
    let (sim, clock, _) = start_world(FORBIDDEN_AND_MISNAMED, &dir).await;
    let config = config_for(&sim, &dir.join("state.json"), "30s", "20s", WINDOWS);
    let daemon = Daemon::start(config, clock.clone()).await;
    daemon.wait_evaluated().await;
    run_for(&clock, mins(25)).await;
    let s = daemon.status().await;
    let end = clock.now();
    let addrs: Vec<String> = sim
        .instance_addresses()
        .iter()
        .map(|a| a.to_string())
        .collect();
    let c = cutover(&s, "legacy-tokens");
    assert_eq!(
        (c.state, c.reason),
        (State::InUse, Reason::QuietCounterIncreased),
        "uses on instance 0 are seen: {s:?}"
    );
    assert_eq!(c.ready_in_seconds, None, "cannot turn ready while unread");
    let c = cutover(&s, "token-expiry-extension");
    assert_eq!(
        (c.state, c.reason),
        (State::Blind, Reason::TargetNeverScraped),
        "{s:?}"
    );
    assert_eq!(
        c.blocking_instances,
        vec![addrs[1].clone(), addrs[2].clone()]
    );
    let error = |i: usize| {
        s.targets
            .iter()
            .find(|t| t.instance == addrs[i])
            .and_then(|t| t.last_error)
    };
    assert_eq!(error(1), Some(ScrapeErrorKind::Http403));
    assert_eq!(error(2), Some(ScrapeErrorKind::Tls));
    assert_never_falsely_ready(&daemon, &sim, end);
    daemon.stop().await;
    sim.shutdown().await;
}

/// Three quiet instances; from 11m to 18m instance 0 answers empty pages,
/// instance 1 pages without the token families, instance 2 pages cut before
/// them, while a legacy client uses every instance from 12m to 14m.
const PAGES_WITHOUT_FAMILIES: &str = r#"
name = "adversarial-pages"
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
from = "12m"
until = "14m"

[[events]]
at = "11m"
action = "outage"
instance = 0
mode = "empty_page"
for = "7m"
[[events]]
at = "11m"
action = "outage"
instance = 1
mode = "no_families"
for = "7m"
[[events]]
at = "11m"
action = "outage"
instance = 2
mode = "truncated"
for = "7m"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uses_hidden_by_pages_without_the_families_are_counted_never_ready() {
    let dir = test_dir("adversarial-pages");
    let (sim, clock, origin) = start_world(PAGES_WITHOUT_FAMILIES, &dir).await;
    let config = config_for(&sim, &dir.join("state.json"), "30s", "20s", WINDOWS);
    let daemon = Daemon::start(config, clock.clone()).await;
    daemon.wait_evaluated().await;
    daemon.wait_state("legacy-tokens", State::Ready).await;
    run_for(&clock, (origin + mins(17)).since(clock.now())).await;
    // During the fault, past the tolerance: every instance's pages are
    // failed scrapes, and the time since the last complete one unobserved.
    let s = daemon.status().await;
    assert_eq!(
        (
            cutover(&s, "legacy-tokens").state,
            cutover(&s, "legacy-tokens").reason
        ),
        (State::Blind, Reason::TargetDown),
        "{s:?}"
    );
    for t in &s.targets {
        assert!(!t.up, "{t:?}");
        assert!(
            matches!(
                t.last_error,
                Some(ScrapeErrorKind::IncompletePage | ScrapeErrorKind::Malformed)
            ),
            "{t:?}"
        );
    }
    // Complete pages again: the uses across the gap are counted exactly.
    run_for(&clock, (origin + mins(18)).since(clock.now())).await;
    let s = daemon
        .wait_status("every instance read again", |s| {
            s.targets
                .iter()
                .all(|t| t.up && t.last_success > Some(origin + mins(18)))
                && s.evaluated_at > s.targets.iter().filter_map(|t| t.last_success).max()
        })
        .await;
    let truth = sim
        .world()
        .increments_all(TokenKind::Legacy, origin, clock.now());
    assert_eq!(cutover(&s, "legacy-tokens").state, State::InUse, "{s:?}");
    assert!(truth >= 3 * 10, "{truth}");
    assert_eq!(cutover(&s, "legacy-tokens").increase, truth, "{s:?}");
    run_for(&clock, (origin + mins(24)).since(clock.now())).await;
    assert_never_falsely_ready(&daemon, &sim, clock.now());
    daemon.stop().await;
    sim.shutdown().await;
}
