//! Prometheus-compatible history as a source (`[history]`): a real
//! Prometheus holding eight days of the simulated world (written instantly
//! with `promtool tsdb create-blocks-from openmetrics`), whose ground truth
//! is known: three instances, a restart, a `DELETE /metrics`, a scrape gap,
//! a legacy use six days ago on one instance only, and an instance replaced
//! mid-window. The backfill must give exactly the ground-truth increases
//! and the verdicts of the same pages scraped directly; the daemon with
//! `source = "prometheus"` must judge the same. Bad answers of a loopback
//! query endpoint (garbage, HTML, `status: error`, warnings, truncated,
//! huge, out-of-order samples) give their bounded reason and `blind`, never
//! a panic or `ready`.
//!
//! Tests: `backfill_from_prometheus_gives_the_ground_truth`,
//! `serve_with_prometheus_as_the_only_source_judges_from_history`,
//! `bad_answers_give_their_reason_and_never_evidence`,
//! `a_daemon_on_a_broken_source_stays_blind_and_says_why`,
//! `backfill_then_own_scrapes_of_the_same_apiservers_agree`,
//! `transport_sends_credentials_and_headers_and_retries`,
//! `history_config_is_validated_and_names_its_keys`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cutover_auditor::clock::Clock;
use cutover_auditor::config::{Config, Source};
use cutover_auditor::families::TokenKind;
use cutover_auditor::history::{HistoryClient, HistoryErrorKind, backfill_ledger};
use cutover_auditor::ledger::{Ledger, Retention};
use cutover_auditor::simulator::history::{History, Recording, instance_address, record};
use cutover_auditor::simulator::scenario::Scenario;
use cutover_auditor::simulator::{Options as SimOptions, Simulation};
use cutover_auditor::time::Timestamp;
use cutover_auditor::verdict::{self, State};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::daemon::{Daemon, config_for, sample};
use crate::support::process::free_port;
use crate::support::tempdir::TempDir;

const DAY: Duration = Duration::from_secs(86_400);
const MINUTE: Duration = Duration::from_secs(60);
/// One scrape a minute: eight days of four instances stay quick to import.
const STEP: Duration = Duration::from_secs(60);

/// The world behind the history: the offsets are from its start, eight
/// days before now.
const SCENARIO: &str = r#"
name = "history"
scraper_counts_as = "none"

[[instances]]
version = "1.33.1"
count = 3

# Six days before now, on instance 0 only.
[[clients]]
kind = "legacy_auto"
interval = "10s"
targets = 0
from = "2d"
until = "2d 5m"

# Extended tokens in use all along: the evidence of the expiry cutover.
[[clients]]
kind = "valid"
interval = "1m"
targets = "all"

[[events]]
at = "3d"
action = "restart"
instance = 1

[[events]]
at = "4d"
action = "delete_metrics"
instance = 0

[[events]]
at = "5d"
action = "remove_instance"
instance = 2

[[events]]
at = "5d 1m"
action = "add_instance"
version = "1.33.1"
"#;

/// Eight days of history ending now (whole minutes), with a 3-minute scrape
/// gap on instance 0 two days ago (a hole: longer than 3 × its spacing).
fn history() -> (History, Timestamp) {
    let end = minute_now();
    (history_of(&scenario(end), end, Vec::new()), end)
}

/// Now, down to the whole minute.
fn minute_now() -> Timestamp {
    let now = Timestamp::from_system_time(std::time::SystemTime::now());
    Timestamp::from_secs(now.as_millis() / 60_000 * 60)
}

/// The scenario, starting eight days before `end`.
fn scenario(end: Timestamp) -> Scenario {
    let mut scenario = Scenario::parse(SCENARIO).expect("scenario");
    scenario.start = Some(end - 8 * DAY);
    scenario
}

/// The history of `scenario` up to `end`, instances labelled `addresses`.
fn history_of(scenario: &Scenario, end: Timestamp, addresses: Vec<String>) -> History {
    let origin = end - 8 * DAY;
    let rec = Recording {
        origin,
        end,
        step: STEP,
        job: "apiserver".into(),
        gaps: vec![(0, 6 * DAY, 6 * DAY + 3 * MINUTE)],
        addresses,
    };
    record(scenario, &rec)
}

/// A real Prometheus serving TSDB blocks built from `history`, scraping
/// nothing; killed when dropped.
struct HistoryPrometheus {
    child: Child,
    url: String,
}

impl Drop for HistoryPrometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl HistoryPrometheus {
    async fn start(dir: &Path, history: &History) -> HistoryPrometheus {
        let om = dir.join("history.om");
        std::fs::write(&om, history.openmetrics()).expect("openmetrics file");
        let tsdb = dir.join("tsdb");
        let out = Command::new("promtool")
            .args(["tsdb", "create-blocks-from", "openmetrics"])
            .arg(&om)
            .arg(&tsdb)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run promtool ({e}); install the Debian package `prometheus`")
            });
        assert!(
            out.status.success(),
            "promtool: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, "global:\n  scrape_interval: 1m\n").expect("prometheus.yml");
        let client = reqwest::Client::new();
        for attempt in 0..5 {
            let port = free_port();
            let log = dir.join(format!("prometheus-{attempt}.log"));
            let child = Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", tsdb.display()))
                .arg("--storage.tsdb.retention.time=30d")
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log"))
                .spawn()
                .expect("start prometheus");
            let mut prom = HistoryPrometheus {
                child,
                url: format!("http://127.0.0.1:{port}"),
            };
            if prom.wait_ready(&client, &log).await {
                return prom;
            }
        }
        panic!("Prometheus found no free port in 5 attempts");
    }

    async fn wait_ready(&mut self, client: &reqwest::Client, log: &PathBuf) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = client
                .get(format!("{}/-/ready", self.url))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return true;
            }
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if self.child.try_wait().ok().flatten().is_some() {
                assert!(
                    text.contains("address already in use"),
                    "Prometheus exited; log:\n{text}"
                );
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus not ready in 60 s; log:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A config with top-level keys `top` and tables `tables`; polls and
/// evaluations every 5 s, no state file.
fn config_with(top: &str, tables: &str) -> Config {
    let text = format!(
        "listen = \"127.0.0.1:0\"\n{top}\n[scrape]\ninterval = \"5s\"\ntimeout = \"2s\"\n[state]\npath = \"\"\n[log]\nformat = \"text\"\n{tables}"
    );
    Config::parse(&text, |_| None).unwrap_or_else(|e| panic!("config: {e}\n{text}"))
}

fn config(tables: &str) -> Config {
    let targets = "[[targets.static]]\nurl = \"https://10.0.0.1:6443\"\n";
    config_with("", &format!("{targets}{tables}"))
}

fn history_config(url: &str, extra: &str) -> Config {
    config_with(
        "source = \"prometheus\"",
        &format!("[history]\nurl = \"{url}\"\ntimeout = \"5s\"\nretries = 0\n{extra}"),
    )
}

/// The same pages fed to a ledger as the auditor's own scrapes would be
/// (instances that left are removed at their last scrape, as discovery
/// would): the oracle the backfill must match.
fn scraped_directly(history: &History, end: Timestamp) -> Ledger {
    let mut ledger = Ledger::new(Retention {
        horizon: 7 * DAY + 60 * MINUTE,
        ..Retention::default()
    });
    let mut last = std::collections::BTreeMap::new();
    for (at, instance, obs) in &history.scrapes {
        ledger.observe(instance, *at, obs.clone());
        last.insert(instance.clone(), *at);
    }
    for (instance, at) in last {
        if end.since(at) > 3 * STEP {
            ledger.remove(&instance, at);
        }
    }
    ledger
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_from_prometheus_gives_the_ground_truth() {
    let dir = TempDir::new();
    let (history, end) = history();
    let prom = HistoryPrometheus::start(&dir.0, &history).await;
    let cfg = history_config(&prom.url, "");
    let h = cfg.history.as_ref().expect("[history]");
    let from = end - (7 * DAY + 60 * MINUTE);
    let mut ledger = Ledger::new(Retention {
        horizon: 7 * DAY + 60 * MINUTE,
        ..Retention::default()
    });
    let report = backfill_ledger(h, &mut ledger, from, end)
        .await
        .expect("backfill succeeds");
    assert_eq!(report.chunks, 8, "a day per query: {report:?}");
    // Four instances: three, one of them replaced by a fourth.
    assert_eq!(report.fed.instances.len(), 4, "{report:?}");
    assert_eq!(report.fed.unusable, 0);
    // The restart and the DELETE /metrics.
    assert_eq!(report.fed.resets, 2, "{report:?}");

    // The scrape gap is a hole of instance 0 (4 minutes between samples).
    let gap_start = end - 2 * DAY - STEP;
    let a = ledger.instance(&instance_address(0)).expect("instance 0");
    let holes = a.unobserved(end - 7 * DAY, end);
    assert!(
        holes
            .iter()
            .any(|i| i.from == gap_start && i.len() == 4 * MINUTE),
        "{holes:?}"
    );
    // The replaced instance left at its last sample, the new one counts
    // from its start.
    let gone = ledger.instance(&instance_address(2)).expect("instance 2");
    assert_eq!(gone.gone_at(), Some(end - 3 * DAY - STEP));
    let new = ledger.instance(&instance_address(3)).expect("instance 3");
    assert!(!new.may_predate_coverage());

    // Exact increases: the ground truth of the world, per kind, over the
    // week (the legacy uses six days ago on instance 0 only).
    let week = end - 7 * DAY;
    let legacy = history.increments(TokenKind::Legacy, week, end);
    assert!(legacy > 10, "the scenario makes legacy uses: {legacy}");
    assert_eq!(
        ledger
            .instance(&instance_address(0))
            .map(|l| l.increase(TokenKind::Legacy.family(), week)),
        Some(legacy)
    );
    for i in 1..4 {
        assert_eq!(
            ledger
                .instance(&instance_address(i))
                .map(|l| l.increase(TokenKind::Legacy.family(), week)),
            Some(0),
            "instance {i}"
        );
    }
    for kind in [TokenKind::Legacy, TokenKind::LegacyAuto, TokenKind::Stale] {
        assert_eq!(
            ledger.family_increase_inside(kind.family(), week),
            history.increments(kind, week, end),
            "{kind:?}"
        );
    }

    // Verdicts: legacy uses inside the week, no stale use in a day while
    // extended tokens are in use: and exactly what direct scrapes of the
    // same pages give.
    let oracle = scraped_directly(&history, end);
    for spec in &cfg.cutovers {
        let got = verdict::assess(spec, &ledger, end);
        let want = verdict::assess(spec, &oracle, end);
        assert_eq!(
            (got.state, got.increase, got.last_use),
            (want.state, want.increase, want.last_use),
            "{}: {got:?} vs {want:?}",
            spec.name
        );
        let expected = match spec.name.to_string().as_str() {
            "token-expiry-extension" => State::Ready,
            _ => State::InUse,
        };
        assert_eq!(got.state, expected, "{}: {got:?}", spec.name);
    }
    let legacy_verdict = verdict::assess(&cfg.cutovers[0], &ledger, end);
    assert_eq!(legacy_verdict.increase, legacy);
    assert_eq!(
        legacy_verdict.last_use.map(|t| end.since(t) > 5 * DAY),
        Some(true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_prometheus_as_the_only_source_judges_from_history() {
    let dir = TempDir::new();
    let (history, end) = history();
    let prom = HistoryPrometheus::start(&dir.0, &history).await;
    let cfg = history_config(&prom.url, "");
    assert_eq!(cfg.source, Source::Prometheus);
    let daemon = Daemon::start(cfg, Clock::real()).await;
    let status = daemon
        .wait_status("judged from history", |s| {
            s.history.as_ref().is_some_and(|h| h.last_success.is_some())
                && s.evaluated_at.is_some_and(|at| {
                    s.history
                        .as_ref()
                        .and_then(|h| h.until)
                        .is_some_and(|u| at >= u)
                })
        })
        .await;
    let week = end - 7 * DAY;
    let states: Vec<(String, State)> = status
        .cutovers
        .iter()
        .map(|c| (c.name.to_string(), c.state))
        .collect();
    assert_eq!(
        states,
        vec![
            ("legacy-tokens".to_owned(), State::InUse),
            ("legacy-auto-tokens".to_owned(), State::InUse),
            ("token-expiry-extension".to_owned(), State::Ready),
        ],
        "{status:?}"
    );
    assert_eq!(
        status.cutovers[0].increase,
        history.increments(TokenKind::Legacy, week, end)
    );
    // Every second of each window came from history, none from own scrapes.
    for c in &status.cutovers {
        let sources = c.evidence_sources.expect("evidence sources");
        assert_eq!(sources.scrape_seconds, 0, "{c:?}");
        assert!(sources.history_seconds + 120 >= c.window_seconds, "{c:?}");
    }
    let h = status.history.as_ref().expect("history status");
    assert!(h.only_source && h.last_error.is_none(), "{h:?}");
    // The apiservers are never contacted: there is no target at all.
    assert!(status.targets.is_empty());
    let page = daemon.get("/").await.text().await.expect("page");
    assert!(
        page.contains("Judged from Prometheus history since"),
        "{page}"
    );
    let (_, metrics) = daemon.metrics(&[]).await;
    let last_success = metrics
        .lines()
        .find(|l| l.starts_with("cutover_history_last_success_timestamp_seconds "))
        .expect("metric");
    assert!(!last_success.ends_with(" 0"), "{last_success}");
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_then_own_scrapes_of_the_same_apiservers_agree() {
    let dir = TempDir::new();
    let end = minute_now();
    let scenario = scenario(end);
    // The simulated apiservers run the same world from the same start: the
    // history is what a Prometheus scraped from them until `end`; the
    // daemon backfills it and then scrapes them itself.
    let sim = Simulation::start(
        &scenario,
        Clock::real(),
        SimOptions::in_dir(dir.0.join("sim")),
    )
    .await
    .expect("simulation starts");
    let addresses: Vec<String> = sim
        .instance_addresses()
        .iter()
        .map(|a| a.to_string())
        .collect();
    let history = history_of(&scenario, end, addresses.clone());
    let prom = HistoryPrometheus::start(&dir.0, &history).await;
    let extra = format!("[history]\nurl = \"{}\"\nretries = 0\n", prom.url);
    let cfg = config_for(&sim, &dir.0.join("state.json"), "5s", "2s", &extra);
    assert_eq!(cfg.source, Source::Scrape);
    let daemon = Daemon::start(cfg, Clock::real()).await;
    let status = daemon
        .wait_status("backfilled, then scraped", |s| {
            s.history.as_ref().is_some_and(|h| h.last_success.is_some())
                && s.targets.len() == 3
                && s.targets.iter().all(|t| t.up)
                && s.cutovers.iter().all(|c| c.state != State::Blind)
        })
        .await;
    let states: Vec<State> = status.cutovers.iter().map(|c| c.state).collect();
    assert_eq!(
        states,
        [State::InUse, State::InUse, State::Ready],
        "{status:?}"
    );
    let now = status.evaluated_at.expect("evaluated");
    assert_eq!(
        status.cutovers[0].increase,
        sim.increments(0, TokenKind::Legacy, now - 7 * DAY, now),
    );
    let h = status.history.as_ref().expect("history");
    assert!(!h.only_source);
    for c in &status.cutovers {
        let sources = c.evidence_sources.expect("evidence sources");
        assert!(
            sources.scrape_seconds > 0 && sources.scrape_seconds < 600,
            "{c:?}"
        );
        // Whole seconds of each part, so the sum may miss the window by one.
        let sum = sources.history_seconds + sources.scrape_seconds;
        assert!(
            sum + 2 >= c.window_seconds && sum <= c.window_seconds,
            "{c:?}"
        );
    }
    // Where history ends and own scrapes begin, they agree: no reset, no
    // hole, beyond the ones of the history itself (instance 0: DELETE
    // /metrics and the scrape gap; instance 1: the restart; the newcomer:
    // none).
    let (page, _) = daemon
        .metrics(&[
            "cutover_apiserver_resets_total",
            "cutover_coverage_holes_total",
        ])
        .await;
    for (i, resets, holes) in [(0, 1.0, 2.0), (1, 1.0, 1.0), (3, 0.0, 0.0)] {
        let labels = [("apiserver", addresses[i].as_str())];
        assert_eq!(
            (
                sample(&page, "cutover_apiserver_resets_total", &labels),
                sample(&page, "cutover_coverage_holes_total", &labels)
            ),
            (Some(resets), Some(holes)),
            "instance {i}"
        );
    }
    daemon.stop().await;
    sim.shutdown().await;
}

/// A loopback endpoint that answers every request with `status`, the
/// headers and `body` (and closes), to stand in for a broken query API.
async fn endpoint(status: u16, headers: &'static str, body: Vec<u8>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let body = body.clone();
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!("HTTP/1.1 {status} X\r\nconnection: close\r\n{headers}");
                let head = if headers.contains("content-length") {
                    format!("{head}\r\n")
                } else {
                    format!("{head}content-length: {}\r\n\r\n", body.len())
                };
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&body).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    format!("http://{addr}")
}

/// A bad answer: name, HTTP status, extra headers, body, and the reason
/// and text the error must carry.
type BadCase = (
    &'static str,
    u16,
    &'static str,
    Vec<u8>,
    HistoryErrorKind,
    &'static str,
);

const MATRIX_OUT_OF_ORDER: &str = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"__name__":"up","instance":"a:1"},"values":[[1700000060,"1"],[1700000000,"1"]]}]}}"#;

#[tokio::test]
async fn bad_answers_give_their_reason_and_never_evidence() {
    use HistoryErrorKind::*;
    let huge = {
        let mut b = br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":["#.to_vec();
        b.extend(std::iter::repeat_n(b'[', 200_000));
        b
    };
    let cases: Vec<BadCase> = vec![
        ("garbage", 200, "", b"\x00\xffgarbage".to_vec(), HistoryRejected, "not a Prometheus API answer"),
        ("html", 200, "content-type: text/html\r\n", b"<!DOCTYPE html><html>Grafana</html>".to_vec(), HistoryRejected, "HTML page"),
        ("status error", 422, "", br#"{"status":"error","errorType":"execution","error":"query processing would load too many samples into memory in query execution"}"#.to_vec(), HistoryRejected, "too many samples"),
        ("200 status error", 200, "", br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#.to_vec(), HistoryRejected, "parse error"),
        ("partial", 200, "", br#"{"status":"success","warnings":["partial response: store unavailable"],"data":{"resultType":"matrix","result":[]}}"#.to_vec(), HistoryIncomplete, "store unavailable"),
        ("truncated", 200, "content-length: 1000\r\n", br#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"va"#.to_vec(), HistoryIncomplete, "cut"),
        ("huge", 200, "", huge, HistoryIncomplete, "max_response_bytes"),
        ("out of order", 200, "", MATRIX_OUT_OF_ORDER.as_bytes().to_vec(), HistoryRejected, "out of order"),
        ("unavailable", 503, "", b"upstream down".to_vec(), HistoryUnreachable, "HTTP 503"),
        ("forbidden", 403, "", b"no".to_vec(), HistoryRejected, "refused the credentials"),
    ];
    let end = Timestamp::from_secs(1_800_000_000);
    for (name, status, headers, body, kind, text) in cases {
        let url = endpoint(status, headers, body).await;
        let cfg = history_config(&url, "max_response_bytes = 65536");
        let mut ledger = Ledger::default();
        let err = backfill_ledger(cfg.history.as_ref().unwrap(), &mut ledger, end - DAY, end)
            .await
            .expect_err(name);
        assert_eq!(err.kind(), kind, "{name}: {err}");
        assert!(err.to_string().contains(text), "{name}: {err}");
        assert!(ledger.instances().next().is_none(), "{name}: no evidence");
    }
    // Nobody listening: unreachable.
    let port = free_port();
    let cfg = history_config(&format!("http://127.0.0.1:{port}"), "");
    let err = backfill_ledger(
        cfg.history.as_ref().unwrap(),
        &mut Ledger::default(),
        end - DAY,
        end,
    )
    .await
    .expect_err("refused");
    assert_eq!(err.kind(), HistoryUnreachable, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_on_a_broken_source_stays_blind_and_says_why() {
    for (status, body, reason) in [
        (200, b"<html>login</html>".to_vec(), "history_rejected"),
        (
            200,
            br#"{"status":"success","warnings":["store down"],"data":{"resultType":"matrix","result":[]}}"#
                .to_vec(),
            "history_incomplete",
        ),
    ] {
        let url = endpoint(status, "", body).await;
        let daemon = Daemon::start(history_config(&url, ""), Clock::real()).await;
        let s = daemon
            .wait_status("the failure reported", |s| {
                s.evaluated_at.is_some()
                    && s.history.as_ref().is_some_and(|h| h.last_error.is_some())
            })
            .await;
        let h = s.history.as_ref().unwrap();
        assert_eq!(h.last_error.as_deref(), Some(reason), "{h:?}");
        assert!(h.last_success.is_none() && h.since.is_none(), "{h:?}");
        for c in &s.cutovers {
            assert_eq!(c.state, State::Blind, "{c:?}");
        }
        let page = daemon.get("/").await.text().await.expect("page");
        assert!(page.contains(&format!("The last history query failed ({reason})")), "{page}");
        let (_, metrics) = daemon.metrics(&[]).await;
        let line = format!("cutover_history_errors_total{{reason=\"{reason}\"}} ");
        let count: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&line))
            .and_then(|v| v.parse().ok())
            .expect("error counter");
        assert!(count >= 1.0, "{metrics}");
        let ready = daemon.get("/readyz").await.status();
        assert!(ready.is_success(), "the daemon itself runs: {ready}");
        daemon.stop().await;
    }
}

/// A loopback endpoint that records each request's head and answers with
/// the next of `answers` (HTTP status, body); the last one repeats.
async fn recording_endpoint(
    answers: Vec<(u16, &'static str)>,
) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = std::sync::Arc::clone(&seen);
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => request.extend_from_slice(&buf[..k]),
                }
            }
            log.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&request).into_owned());
            let (status, body) = answers[n.min(answers.len() - 1)];
            n += 1;
            let head = format!(
                "HTTP/1.1 {status} X\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(body.as_bytes()).await;
            let _ = socket.shutdown().await;
        }
    });
    (format!("http://{addr}/prefix"), seen)
}

const EMPTY_MATRIX: &str = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;

#[tokio::test]
async fn transport_sends_credentials_and_headers_and_retries() {
    let dir = TempDir::new();
    let end = Timestamp::from_secs(1_800_000_000);
    // A bearer token from a file, re-read when it changes, and a tenant header.
    let token = dir.0.join("token");
    std::fs::write(&token, "first-token-0123456789\n").unwrap();
    let (url, seen) = recording_endpoint(vec![(200, EMPTY_MATRIX)]).await;
    let cfg = history_config(
        &url,
        &format!(
            "chunk = \"12h\"\nbearer_token_file = \"{}\"\n[history.headers]\nX-Scope-OrgID = \"tenant-1\"\n",
            token.display()
        ),
    );
    let h = cfg.history.as_ref().unwrap();
    let report = backfill_ledger(h, &mut Ledger::default(), end - DAY, end)
        .await
        .expect("an empty answer is a success: absent families");
    assert_eq!((report.chunks, report.fed.instances.len()), (2, 0));
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 2 * 9, "one query per family and chunk");
        for head in seen.iter() {
            let lower = head.to_ascii_lowercase();
            assert!(
                head.starts_with("GET /prefix/api/v1/query?query="),
                "{head}"
            );
            assert!(
                lower.contains("authorization: bearer first-token-0123456789\r\n"),
                "{head}"
            );
            assert!(lower.contains("x-scope-orgid: tenant-1\r\n"), "{head}");
        }
        // Raw samples through a range selector over the chunk, never rate().
        assert!(
            seen[0].contains(
                "query=%7B__name__%3D%22up%22%2Cjob%3D%22apiserver%22%7D%5B43200000ms%5D"
            ),
            "{}",
            seen[0]
        );
    }
    // One client: a rotated token is read again (the file changed).
    let client = HistoryClient::new(h).expect("client");
    client.range("up", end, DAY).await.expect("query");
    std::fs::write(&token, "second-token-with-another-length\n").unwrap();
    client.range("up", end, DAY).await.expect("query");
    assert!(
        seen.lock()
            .unwrap()
            .last()
            .unwrap()
            .to_ascii_lowercase()
            .contains("authorization: bearer second-token-with-another-length\r\n")
    );

    // Basic auth with the password from a file; a 503 then a success is
    // retried (with a backoff) and succeeds.
    let password = dir.0.join("password");
    std::fs::write(&password, "s3cret-password\n").unwrap();
    let (url, seen) = recording_endpoint(vec![(503, "busy"), (200, EMPTY_MATRIX)]).await;
    let cfg = config_with(
        "source = \"prometheus\"",
        &format!(
            "[history]\nurl = \"{url}\"\nretries = 1\nbasic_auth_username = \"auditor\"\nbasic_auth_password_file = \"{}\"\n",
            password.display()
        ),
    );
    backfill_ledger(
        cfg.history.as_ref().unwrap(),
        &mut Ledger::default(),
        end - DAY,
        end,
    )
    .await
    .expect("the retry succeeds");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1 + 9, "the first query was tried twice");
    // base64("auditor:s3cret-password")
    assert!(
        seen[1]
            .to_ascii_lowercase()
            .contains("authorization: basic yxvkaxrvcjpzm2nyzxqtcgfzc3dvcmq=\r\n"),
        "{}",
        seen[1]
    );
    // Without retries left, the 503 is the error, unreachable.
    let (url, _) = recording_endpoint(vec![(503, "busy")]).await;
    let cfg = history_config(&url, "");
    let err = backfill_ledger(
        cfg.history.as_ref().unwrap(),
        &mut Ledger::default(),
        end - DAY,
        end,
    )
    .await
    .expect_err("503");
    assert_eq!(err.kind(), HistoryErrorKind::HistoryUnreachable, "{err}");
    assert!(!err.to_string().contains("s3cret"), "{err}");
}

#[test]
fn history_config_is_validated_and_names_its_keys() {
    let c = config("[history]\nurl = \"http://prometheus:9090\"\n");
    let h = c.history.expect("[history]");
    assert_eq!(c.source, Source::Scrape);
    assert_eq!(h.selector, r#"job="apiserver""#);
    assert_eq!(h.instance_label, "instance");
    assert_eq!(h.chunk, DAY);
    assert_eq!(h.max_gap_factor, 3);
    let c = config_with(
        "source = \"prometheus\"",
        "[history]\nurl = \"https://mimir.example/prometheus\"\nca_file = \"/etc/ca.crt\"\nselector = '{job=\"apiserver\", cluster=\"a\"}'\nchunk = \"6h\"\n[history.headers]\nX-Scope-OrgID = \"tenant-1\"\n",
    );
    let h = c.history.expect("[history]");
    assert_eq!(h.selector, r#"job="apiserver", cluster="a""#);
    assert_eq!(
        h.headers,
        vec![("X-Scope-OrgID".to_owned(), "tenant-1".to_owned())]
    );
    let bad = |extra: &str| {
        let text = format!("listen = \"127.0.0.1:0\"\n{extra}");
        Config::parse(&text, |_| None).unwrap_err().to_string()
    };
    for (extra, wanted) in [
        (
            "[history]\nurl = \"http://p:9090\"\nstep = \"1m\"\n",
            "unknown field `step`",
        ),
        (
            "source = \"thanos\"\n[history]\nurl = \"http://p:9090\"\n",
            "source: \"thanos\" is not a source",
        ),
        (
            "source = \"prometheus\"\n",
            "source: is \"prometheus\" but there is no [history]",
        ),
        ("[history]\n", "history.url: must be set"),
        (
            "[history]\nurl = \"ftp://p\"\n",
            "history.url: scheme \"ftp\"",
        ),
        (
            "[history]\nurl = \"https://p\"\n",
            "history.ca_file: must be set for an https",
        ),
        (
            "[history]\nurl = \"http://p\"\nselector = \"up{job=\\\"x\\\"}\"\n",
            "history.selector:",
        ),
        (
            "[history]\nurl = \"http://p\"\nmax_gap_factor = 1\n",
            "history.max_gap_factor: 1 is outside",
        ),
        (
            "[history]\nurl = \"http://p\"\ninstance_label = \"a-b\"\n",
            "history.instance_label:",
        ),
        (
            "[history]\nurl = \"http://p\"\nbasic_auth_username = \"u\"\n",
            "history.basic_auth_password_file: must be set",
        ),
        (
            "[history]\nurl = \"http://p\"\n[history.headers]\nAuthorization = \"Bearer x\"\n",
            "history.headers.Authorization:",
        ),
        (
            "source = \"prometheus\"\n[history]\nurl = \"http://p\"\n[[targets.static]]\nurl = \"https://10.0.0.1:6443\"\n",
            "targets: is set but source is \"prometheus\"",
        ),
    ] {
        let e = bad(extra);
        assert!(e.contains(wanted), "{extra}: {e}");
    }
}
