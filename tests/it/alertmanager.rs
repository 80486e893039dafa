//! The direct push against real Alertmanagers (Debian's
//! `prometheus-alertmanager`), started on loopback ports with clustering off
//! and a null receiver.
//!
//! A missing Alertmanager fails these tests instead of skipping them:
//! `tests/run-all.sh` installs it.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cutover_auditor::alerting::Pusher;
use cutover_auditor::clock::Clock;
use cutover_auditor::config::AlertmanagerConfig;
use cutover_auditor::metrics::Metrics;
use cutover_auditor::status::{CutoverStatus, Status};
use cutover_auditor::time::Timestamp;
use cutover_auditor::verdict::{Reason, State};
use serde_json::Value;
use tokio::sync::watch;

use crate::support::alertmanager::{Alertmanager, scratch};
use crate::support::process::free_port;

/// Simulated time of the statuses; the clock runs 60 times faster than real
/// time, so the 60 s re-send interval takes one real second.
const ORIGIN: Timestamp = Timestamp::from_secs(1_700_000_000);
const SPEED: f64 = 60.0;
const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_every_replica_resolve_and_survive_a_restart() {
    let dir = scratch("replicas");
    let mut a = Alertmanager::start(&dir, "a", free_port());
    let b = Alertmanager::start(&dir, "b", free_port());
    a.wait_ready().await;
    b.wait_ready().await;

    let metrics = Arc::new(Metrics::new("test").expect("metrics"));
    let config = AlertmanagerConfig {
        urls: vec![
            a.url.parse().expect("a URL"),
            format!("{}/", b.url).parse().expect("a URL"),
        ],
        resend_interval: Duration::from_secs(60),
        timeout: Duration::from_secs(1),
    };
    let clock = Clock::accelerated(ORIGIN, SPEED);
    let pusher = Pusher::new(&config, clock, Arc::clone(&metrics)).expect("pusher");
    let (tx, rx) = watch::channel(Status::default());
    let task = Abort(tokio::spawn(pusher.run(rx)));

    // (1) An in-use legacy cutover appears in both replicas, as the rule words it.
    let mut legacy = cutover("legacy-tokens", State::InUse, ORIGIN - HOUR);
    legacy.increase = 42;
    legacy.last_use = Some(ORIGIN - Duration::from_secs(600));
    tx.send_replace(status(vec![legacy.clone()]));
    for am in [&a, &b] {
        let alert = am
            .wait_for("the in-use alert", |alerts| {
                find(alerts, "LegacyServiceAccountTokensInUse").cloned()
            })
            .await;
        assert_eq!(
            alert["labels"],
            serde_json::json!({
                "alertname": "LegacyServiceAccountTokensInUse",
                "cutover": "legacy-tokens",
                "severity": "warning",
            })
        );
        assert_eq!(
            alert["annotations"],
            serde_json::json!({
                "summary": "Legacy ServiceAccount tokens are still in use (cutover legacy-tokens).",
                "description": "Cutover legacy-tokens: the apiservers counted 42 legacy-token \
                    authentications in the last 7d 0h 0m 0s window; last use at 2023-11-14 \
                    22:03:20 +0000 UTC, in use since 2023-11-14 21:13:20 +0000 UTC. Removing or \
                    invalidating Secret-based tokens now would break these clients.",
                "runbook_url": "https://github.com/cutover-auditor/cutover-auditor/blob/main/docs/runbooks/LegacyServiceAccountTokensInUse.md",
            })
        );
        assert_eq!(alert["status"]["state"], "active");
        // endsAt is three re-send intervals (3 s real) ahead of wall-clock time.
        let ahead = millis_from_now(&alert["endsAt"]);
        assert!((1_000..=3_500).contains(&ahead), "endsAt {ahead} ms ahead");
    }
    let started = find(&a.alerts().await, "LegacyServiceAccountTokensInUse")
        .map(|x| x["startsAt"].clone())
        .expect("alert in a");

    // (2) The cutover turns ready: the in-use alert resolves, Ready appears.
    let mut ready = cutover("legacy-tokens", State::Ready, ORIGIN - HOUR);
    ready.coverage_ratio = 1.0;
    tx.send_replace(status(vec![ready.clone()]));
    let turned = Instant::now();
    for am in [&a, &b] {
        let alert = am
            .wait_for("in-use resolved and ready firing", |alerts| {
                let gone = find(alerts, "LegacyServiceAccountTokensInUse").is_none();
                find(alerts, "ServiceAccountTokenCutoverReady")
                    .filter(|_| gone)
                    .cloned()
            })
            .await;
        // Well before the in-use alert's endsAt (3 s) would expire it.
        assert!(
            turned.elapsed() < Duration::from_millis(1500),
            "resolution took {:?}: it was not pushed",
            turned.elapsed()
        );
        assert_eq!(alert["labels"]["severity"], "warning");
        assert_eq!(
            alert["annotations"]["description"],
            "Cutover legacy-tokens: no use in a fully observed 7d 0h 0m 0s window (observed \
             coverage 100% across all apiserver instances), ready since 2023-11-14 21:13:20 +0000 \
             UTC. Follow the runbook before switching."
        );
    }
    assert_eq!(metrics_errors(&metrics), 0, "no push failed so far");

    // (4) Replica a goes away: errors are counted, the pusher keeps running
    // and replica b still gets every change.
    a.kill();
    let mut stale = cutover("token-expiry-extension", State::InUse, ORIGIN - HOUR);
    stale.window_seconds = 86_400;
    stale.increase = 17;
    tx.send_replace(status(vec![ready, stale]));
    let stale_in_b = b
        .wait_for("the stale-token alert while a is down", |alerts| {
            find(alerts, "StaleServiceAccountTokensInUse").cloned()
        })
        .await;
    assert_eq!(stale_in_b["labels"]["cutover"], "token-expiry-extension");
    let deadline = Instant::now() + Duration::from_secs(5);
    while metrics_errors(&metrics) == 0 {
        assert!(
            Instant::now() < deadline,
            "cutover_alertmanager_errors_total stayed 0 with replica a down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !task.0.is_finished(),
        "the pusher must outlive a failed push"
    );

    // (3) Replica a comes back empty (fresh storage): re-sending restores
    // the firing alerts, with their original startsAt.
    a.restart(&dir);
    a.wait_ready().await;
    let restored = a
        .wait_for("the alerts after a restart", |alerts| {
            let ready = find(alerts, "ServiceAccountTokenCutoverReady")?;
            find(alerts, "StaleServiceAccountTokensInUse")?;
            Some(ready.clone())
        })
        .await;
    let ready_in_b = find(&b.alerts().await, "ServiceAccountTokenCutoverReady")
        .cloned()
        .expect("ready in b");
    assert_eq!(
        restored["startsAt"], ready_in_b["startsAt"],
        "stable startsAt"
    );
    assert_ne!(restored["startsAt"], started, "ready began after in-use");
    assert!(find(&a.alerts().await, "LegacyServiceAccountTokensInUse").is_none());
    assert!(!task.0.is_finished());
    drop((a, b));
    let _ = std::fs::remove_dir_all(&dir);
}

/// An Alertmanager that accepts connections but never answers delays
/// nothing: the healthy replica gets the alert within one re-send.
#[tokio::test]
async fn a_hanging_replica_does_not_delay_the_others() {
    let dir = scratch("hanging");
    let am = Alertmanager::start(&dir, "ok", free_port());
    // The kernel completes connections to a listening socket nobody accepts on.
    let hole = TcpListener::bind("127.0.0.1:0").expect("bind");
    let hole_url = format!("http://{}", hole.local_addr().expect("addr"));
    am.wait_ready().await;

    let metrics = Arc::new(Metrics::new("test").expect("metrics"));
    let config = AlertmanagerConfig {
        urls: vec![
            hole_url.parse().expect("a URL"),
            am.url.parse().expect("a URL"),
        ],
        resend_interval: Duration::from_secs(60),
        // Longer than `wait_for` waits: a push held back by the hanging
        // replica could not arrive in time.
        timeout: Duration::from_secs(30),
    };
    let pusher = Pusher::new(&config, Clock::real(), Arc::clone(&metrics)).expect("pusher");
    let mut blind = cutover("legacy-auto-tokens", State::Blind, ORIGIN);
    blind.reason = Reason::NoTargets;
    blind.window_seconds = 3600;
    let mut s = status(vec![blind]);
    s.evaluated_at = Some(ORIGIN + 2 * HOUR);
    let (_tx, rx) = watch::channel(s);
    let _task = Abort(tokio::spawn(pusher.run(rx)));
    let alert = am
        .wait_for("the blind alert", |alerts| {
            find(alerts, "CutoverAuditorBlind").cloned()
        })
        .await;
    assert!(
        alert["annotations"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("reason: no_targets")),
        "{alert}"
    );
    drop(am);
    let _ = std::fs::remove_dir_all(&dir);
}

fn cutover(name: &str, state: State, since: Timestamp) -> CutoverStatus {
    CutoverStatus {
        name: name.into(),
        window_seconds: 7 * 86_400,
        state,
        reason: match state {
            State::Blind => Reason::WarmingUp,
            State::InUse => Reason::QuietCounterIncreased,
            State::NoSignal => Reason::NoEvidence,
            State::Ready => Reason::QuietForWindow,
        },
        since,
        last_use: None,
        increase: 0,
        evidence_increase: None,
        unattributed: None,
        coverage_ratio: 1.0,
        ready_in_seconds: None,
        regressions: 0,
        last_regression: None,
        blocking_instances: Vec::new(),
        evidence_sources: None,
        timeline: None,
    }
}

fn status(cutovers: Vec<CutoverStatus>) -> Status {
    Status {
        version: "test".into(),
        evaluated_at: Some(ORIGIN),
        cutovers,
        ..Status::default()
    }
}

fn find<'a>(alerts: &'a [Value], name: &str) -> Option<&'a Value> {
    alerts.iter().find(|a| a["labels"]["alertname"] == name)
}

fn metrics_errors(metrics: &Metrics) -> u64 {
    let page = metrics.render().expect("render");
    page.lines()
        .find_map(|l| l.strip_prefix("cutover_alertmanager_errors_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("cutover_alertmanager_errors_total on the page")
}

/// Milliseconds from now (wall clock) to an RFC 3339 time in UTC as
/// Alertmanager prints it (`2026-11-30T03:05:18.910Z`).
fn millis_from_now(value: &Value) -> i64 {
    let text = value.as_str().expect("timestamp string");
    let field = |range: std::ops::Range<usize>| -> i64 {
        text.get(range)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an RFC 3339 UTC time: {text:?}"))
    };
    let (y, m, d) = (field(0..4), field(5..7), field(8..10));
    let (hh, mm, ss, ms) = (field(11..13), field(14..16), field(17..19), field(20..23));
    // Howard Hinnant's days-from-civil.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let then = ((days * 86_400 + hh * 3600 + mm * 60 + ss) * 1000) + ms;
    then - Timestamp::from_system_time(std::time::SystemTime::now()).as_millis()
}

/// Aborts the pusher when the test ends, passed or not.
struct Abort(tokio::task::JoinHandle<()>);

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

const PUSH_WORLD: &str = r#"
name = "alertmanager-push"
speed = 60.0
page_kib = 8

[[instances]]
version = "1.30.4"
count = 2

[[clients]]
kind = "legacy_auto"
interval = "10s"
targets = "round_robin"
from = "1m"
until = "4m"
"#;

/// The daemon on the simulator pushing to a real Alertmanager: the alert
/// appears, survives an Alertmanager restart through re-sending, and clears
/// when the cutover turns ready; Alertmanager being down changes nothing in
/// scraping or verdicts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_pushes_its_alerts_and_an_absent_alertmanager_changes_nothing() {
    use crate::support::daemon::{Daemon, config_for, start_world, test_dir};
    let dir = scratch("daemon");
    let mut am = Alertmanager::start(&dir, "am", free_port());
    am.wait_ready().await;
    let work = test_dir("am-push-world");
    let (sim, clock, _) = start_world(PUSH_WORLD, &work).await;
    let extra = format!(
        "[alertmanager]\nurls = [\"{}\"]\nresend_interval = \"1m\"\ntimeout = \"5s\"\n\
         [cutovers.legacy-tokens]\nwindow = \"10m\"\n[cutovers.legacy-auto-tokens]\nwindow = \"10m\"\n",
        am.url
    );
    let config = config_for(&sim, &work.join("state.json"), "30s", "20s", &extra);
    let daemon = Daemon::start(config, clock.clone()).await;
    daemon.wait_evaluated().await;
    let in_use = |alerts: &[Value]| {
        alerts
            .iter()
            .find(|a| {
                a["labels"]["alertname"] == "LegacyServiceAccountTokensInUse"
                    && a["labels"]["cutover"] == "legacy-tokens"
            })
            .cloned()
    };

    // In use from about 1m; pending for 5m like the rule's `for`.
    clock.sleep(Duration::from_secs(6 * 60 + 30)).await;
    let alert = am.wait_for("the legacy-tokens in-use alert", in_use).await;
    assert_eq!(alert["labels"]["severity"], "warning");
    let description = alert["annotations"]["description"]
        .as_str()
        .unwrap_or_default();
    assert!(description.contains("legacy-tokens"), "{description}");

    // Alertmanager down for two simulated minutes: scraping and verdicts go on.
    am.kill();
    clock.sleep(Duration::from_secs(120)).await;
    let status = daemon.status().await;
    assert!(status.targets.iter().all(|t| t.up), "{:?}", status.targets);
    let legacy = status
        .cutovers
        .iter()
        .find(|c| c.name == "legacy-tokens")
        .expect("legacy-tokens");
    assert_eq!(legacy.state, State::InUse);
    let (page, _) = daemon.metrics(&["cutover_alertmanager_errors_total"]).await;
    assert!(
        page.family_sum("cutover_alertmanager_errors_total")
            .unwrap_or(0.0)
            > 0.0
    );

    // Back with empty storage: the re-send brings the alert back.
    am.restart(&dir);
    am.wait_ready().await;
    am.wait_for("the alert re-sent after the restart", in_use)
        .await;

    // The last use (about 4m) leaves the 10m window: ready, and the in-use
    // alert is resolved.
    daemon.wait_state("legacy-tokens", State::Ready).await;
    am.wait_for("the in-use alert resolved", |alerts| {
        in_use(alerts).is_none().then_some(())
    })
    .await;
    daemon.stop().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pusher_that_panics_is_counted_restarted_and_pushes_again() {
    use crate::support::daemon::{config_for, start_world, test_dir};
    use cutover_auditor::daemon::{self, Faults, Options, Resolver, Task};
    let dir = scratch("pusher-panic");
    let am = Alertmanager::start(&dir, "am", free_port());
    am.wait_ready().await;
    let work = test_dir("am-pusher-panic");
    let (sim, clock, _) = start_world(PUSH_WORLD, &work).await;
    let extra = format!(
        "[alertmanager]\nurls = [\"{}\"]\nresend_interval = \"1m\"\ntimeout = \"5s\"\n\
         [cutovers.legacy-tokens]\nwindow = \"10m\"\n[cutovers.legacy-auto-tokens]\nwindow = \"10m\"\n",
        am.url
    );
    let config = config_for(&sim, &work.join("state.json"), "30s", "20s", &extra);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = listener.local_addr().unwrap();
    let faults = Faults::default();
    faults.panic_next(Task::AlertmanagerPusher);
    let options = Options {
        config,
        clock: clock.clone(),
        listener: Some(listener),
        events: None,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(daemon::run_with_faults(
        options,
        Resolver::System,
        faults,
        async {
            let _ = stopped.await;
        },
    ));

    // The first pusher panicked at once; the restarted one pushes the
    // in-use alert (in use from about 1m, pending for 5m).
    clock.sleep(Duration::from_secs(6 * 60 + 30)).await;
    am.wait_for("the in-use alert from the restarted pusher", |alerts| {
        find(alerts, "LegacyServiceAccountTokensInUse").cloned()
    })
    .await;
    let page = reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = "cutover_task_failures_total{task=\"alertmanager_pusher\"} 1";
    assert!(page.lines().any(|l| l == line), "{line} missing in\n{page}");

    let _ = stop.send(());
    let result = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .expect("drains within 20 s")
        .expect("run did not panic");
    assert!(result.is_ok(), "{result:?}");
    sim.shutdown().await;
}
