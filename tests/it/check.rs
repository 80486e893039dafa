//! `cutover-auditor check` as a pipeline runs it: state files built by
//! driving the ledger on synthetic time and saved with `state::save`, then
//! judged by the built binary; exit codes, text and JSON output, and state
//! files left untouched.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cutover_auditor::families::TokenKind;
use cutover_auditor::ledger::{Ledger, Observation, SeriesKey};
use cutover_auditor::state::{self, FORMAT_VERSION, Snapshot};
use cutover_auditor::status::{CutoverStatus, KindUses, Status, TargetHealth};
use cutover_auditor::time::Timestamp;
use cutover_auditor::verdict::{Reason, State};

use crate::support::process::bin;

const A: &str = "10.0.0.1:6443";
const B: &str = "10.0.0.2:6443";
/// The synthetic origin: 2027-01-15T08:00:00Z.
const T0: i64 = 1_800_000_000;
const MIN: i64 = 60;
const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;

fn test_dir(name: &str) -> PathBuf {
    crate::support::daemon::test_dir(&format!("check-{name}"))
}

/// The counters of one page; `valid` grows with time (evidence that the
/// metrics count), the rest as given.
#[derive(Clone, Copy, Default)]
struct Counters {
    legacy: u64,
    manual: u64,
    stale: u64,
}

/// Scrapes `instance` every 30 s over `[from, to]` (seconds), its process
/// started a day before `from`, with the families in `kinds` only.
fn scrape(
    ledger: &mut Ledger,
    instance: &str,
    (from, to): (i64, i64),
    kinds: &[TokenKind],
    counters: impl Fn(i64) -> Counters,
) {
    let mut s = from;
    while s <= to {
        let c = counters(s);
        let values = kinds
            .iter()
            .map(|k| {
                let v = match k {
                    TokenKind::Legacy => c.legacy,
                    TokenKind::LegacyManual => c.manual,
                    TokenKind::Stale => c.stale,
                    TokenKind::Valid => (s - from) as u64,
                    _ => 0,
                };
                (SeriesKey::family(k.family()), v)
            })
            .collect::<BTreeMap<_, _>>();
        ledger.observe(
            instance,
            Timestamp::from_secs(s),
            Observation {
                start_time: Some(Timestamp::from_secs(from - DAY)),
                values,
            },
        );
        s += 30;
    }
}

/// Two instances observed quietly over `[from, to]`; with `uses`, two
/// manual legacy-token uses on A 30 minutes before `to`.
fn two_instances(from: i64, to: i64, uses: bool) -> Ledger {
    let mut ledger = Ledger::default();
    for instance in [A, B] {
        let used = uses && instance == A;
        scrape(&mut ledger, instance, (from, to), &TokenKind::ALL, |s| {
            let n = if used && s >= to - 30 * MIN { 2 } else { 0 };
            Counters {
                legacy: n,
                manual: n,
                stale: 0,
            }
        });
    }
    ledger
}

/// Saves the ledger as the daemon would at `saved_at` (seconds).
fn save(dir: &Path, ledger: Ledger, saved_at: i64) -> PathBuf {
    let path = dir.join("state.json");
    let snapshot = Snapshot {
        version: FORMAT_VERSION,
        saved_at: Timestamp::from_secs(saved_at),
        ledger,
        trackers: BTreeMap::new(),
    };
    state::save(&path, &snapshot).expect("state saved");
    path
}

/// A daemon configuration with one-hour windows whose `state.path` is `state`.
fn config(dir: &Path, state: &Path) -> PathBuf {
    let path = dir.join("cutover-auditor.toml");
    let text = format!(
        "[targets.kubernetes]\napi_server = \"https://127.0.0.1:6443\"\n\
         [cutovers.legacy-tokens]\nwindow = \"1h\"\n\
         [cutovers.legacy-auto-tokens]\nwindow = \"1h\"\n\
         [cutovers.token-expiry-extension]\nwindow = \"1h\"\n\
         [state]\npath = \"{}\"\n",
        state.display()
    );
    std::fs::write(&path, text).expect("config written");
    path
}

/// `2027-01-15T10:00:00Z` for `secs`.
fn rfc3339(secs: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_secs(secs as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

fn check(args: &[&str]) -> Output {
    bin().arg("check").args(args).output().expect("binary runs")
}

fn code(out: &Output) -> i32 {
    out.status.code().expect("exited")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// The names in `dir`, to show nothing was added, moved or removed.
fn listing(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn a_quiet_fully_observed_state_is_ready_and_exits_0() {
    let dir = test_dir("ready");
    let state = save(&dir, two_instances(T0, T0 + 2 * HOUR, false), T0 + 2 * HOUR);
    let cfg = config(&dir, &state);
    let before = std::fs::read(&state).unwrap();
    let files = listing(&dir);

    // The state file comes from the config's state.path.
    let out = check(&["--config", s(&cfg), "--at", &rfc3339(T0 + 2 * HOUR + 60)]);
    let text = stdout(&out);
    assert_eq!(code(&out), 0, "{text}{}", stderr(&out));
    for name in [
        "legacy-tokens",
        "legacy-auto-tokens",
        "token-expiry-extension",
    ] {
        assert!(
            text.contains(&format!(
                "{name} state=ready reason=quiet_for_window window=1h coverage="
            )),
            "{text}"
        );
    }
    assert!(
        text.contains("READY: legacy-tokens,legacy-auto-tokens,token-expiry-extension ready"),
        "{text}"
    );
    assert!(text.contains(s(&state)), "names its source: {text}");
    assert_eq!(std::fs::read(&state).unwrap(), before, "read only");
    assert_eq!(listing(&dir), files);
}

#[test]
fn a_use_exits_1_naming_the_cutover_the_reason_and_when_it_could_be_ready() {
    let dir = test_dir("in-use");
    let end = T0 + 2 * HOUR;
    let state = save(&dir, two_instances(T0, end, true), end);
    let cfg = config(&dir, &state);
    let out = check(&["--config", s(&cfg), "--at", &rfc3339(end)]);
    let text = stdout(&out);
    assert_eq!(code(&out), 1, "{text}{}", stderr(&out));
    assert!(
        text.contains(
            "legacy-tokens state=in_use reason=quiet_counter_increased window=1h coverage=100.0% uses=2 ready_in=30m last_use=2027-01-15T09:30:00Z"
        ),
        "{text}"
    );
    // Manual tokens account for the uses: the auto-token cutover is ready.
    assert!(text.contains("legacy-auto-tokens state=ready"), "{text}");
    assert!(
        text.contains("NOT READY: legacy-tokens not ready"),
        "{text}"
    );

    // --cutover limits the verdict to the ones named.
    let out = check(&[
        "--config",
        s(&cfg),
        "--at",
        &rfc3339(end),
        "--cutover",
        "legacy-auto-tokens",
        "--cutover",
        "token-expiry-extension",
    ]);
    let text = stdout(&out);
    assert_eq!(code(&out), 0, "{text}{}", stderr(&out));
    assert!(!text.contains("legacy-tokens"), "{text}");
    let out = check(&[
        "--config",
        s(&cfg),
        "--at",
        &rfc3339(end),
        "--cutover",
        "legacy-tokens",
    ]);
    assert_eq!(code(&out), 1, "{}", stdout(&out));
    assert_eq!(stdout(&out).lines().count(), 2, "{}", stdout(&out));
}

#[test]
fn an_old_state_is_blind_for_the_time_nobody_observed() {
    let dir = test_dir("stale");
    let end = T0 + 2 * HOUR;
    let state = save(&dir, two_instances(T0, end, false), end);
    let cfg = config(&dir, &state);
    // Within the tolerance (5 minutes) of the last write it holds...
    let out = check(&["--config", s(&cfg), "--at", &rfc3339(end + 4 * MIN)]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
    // ...beyond it every instance is unobserved since: blind, never ready.
    for later in [end + 10 * MIN, end + DAY, end + 30 * DAY] {
        let out = check(&["--config", s(&cfg), "--at", &rfc3339(later)]);
        let text = stdout(&out);
        assert_eq!(code(&out), 1, "{text}");
        assert_eq!(
            text.matches("state=blind reason=target_down").count(),
            3,
            "{text}"
        );
        assert_eq!(
            text.matches(&format!("blocking={A},{B}")).count(),
            3,
            "{text}"
        );
    }

    // Every instance had left when the state was written: the ones that
    // joined since are unknown, so nothing is ready, even at once.
    let mut ledger = two_instances(T0, end, false);
    ledger.remove(A, Timestamp::from_secs(end));
    ledger.remove(B, Timestamp::from_secs(end));
    save(&dir, ledger, end);
    for later in [end, end + 10 * MIN, end + 50 * MIN] {
        let out = check(&["--config", s(&cfg), "--at", &rfc3339(later)]);
        let text = stdout(&out);
        assert_eq!(code(&out), 1, "{text}");
        assert_eq!(
            text.matches("state=blind reason=no_targets").count(),
            3,
            "{text}"
        );
    }

    // With the real clock: a state written a day ago is not ready today.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (from, to) = (now - DAY - 2 * HOUR, now - DAY);
    let state = save(&dir, two_instances(from, to, false), to);
    let out = check(&["--config", s(&cfg)]);
    let text = stdout(&out);
    assert_eq!(code(&out), 1, "{text}{}", stderr(&out));
    assert!(text.contains("NOT READY"), "{text}");
    assert!(text.contains("state=blind reason=target_down"), "{text}");
    // The same file, judged when it was written, was ready: only the
    // unobserved day makes the difference.
    let out = check(&[
        "--state",
        s(&state),
        "--config",
        s(&cfg),
        "--at",
        &rfc3339(to),
    ]);
    assert_eq!(code(&out), 0, "{}", stdout(&out));
}

#[test]
fn evidence_after_the_time_judged_is_refused() {
    let dir = test_dir("future");
    let end = T0 + 2 * HOUR;
    let state = save(&dir, two_instances(T0, end, false), end);
    let cfg = config(&dir, &state);
    // --at before the evidence ends: a usage error.
    let out = check(&["--config", s(&cfg), "--at", &rfc3339(T0 + HOUR)]);
    assert_eq!(code(&out), 64, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("holds evidence up to 2027-01-15T10:00:00Z"),
        "{}",
        stderr(&out)
    );
    // Now (2026 on this machine's clock, or any time before 2027-01-15):
    // written in the future, a clock is wrong.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    if now < end {
        let out = check(&["--config", s(&cfg)]);
        assert_eq!(code(&out), 66, "{}", stderr(&out));
        assert!(stderr(&out).contains(s(&state)), "{}", stderr(&out));
    }
}

#[test]
fn empty_state_and_missing_families_never_exit_0() {
    let dir = test_dir("empty");
    let empty = save(&dir, Ledger::default(), T0);
    let cfg = config(&dir, &empty);
    let out = check(&["--config", s(&cfg), "--at", &rfc3339(T0 + HOUR)]);
    let text = stdout(&out);
    assert_eq!(code(&out), 1, "{text}");
    assert_eq!(
        text.matches("state=blind reason=no_targets").count(),
        3,
        "{text}"
    );

    // Pages without the stale and valid families (an older apiserver).
    let mut ledger = Ledger::default();
    for instance in [A, B] {
        scrape(
            &mut ledger,
            instance,
            (T0, T0 + 2 * HOUR),
            &[TokenKind::Legacy],
            |_| Counters::default(),
        );
    }
    let state = save(&dir, ledger, T0 + 2 * HOUR);
    let out = check(&[
        "--state",
        s(&state),
        "--config",
        s(&cfg),
        "--at",
        &rfc3339(T0 + 2 * HOUR),
        "--cutover",
        "token-expiry-extension",
    ]);
    let text = stdout(&out);
    assert_eq!(code(&out), 1, "{text}");
    assert!(
        text.contains("token-expiry-extension state=blind reason=metric_absent"),
        "{text}"
    );
}

#[test]
fn unknown_cutovers_and_bad_flags_are_usage_errors() {
    let dir = test_dir("usage");
    let end = T0 + 2 * HOUR;
    let state = save(&dir, two_instances(T0, end, false), end);
    let cfg = config(&dir, &state);
    let at = rfc3339(end);
    let out = check(&[
        "--config",
        s(&cfg),
        "--at",
        &at,
        "--cutover",
        "legacy-tokns",
    ]);
    assert_eq!(code(&out), 64);
    let err = stderr(&out);
    assert!(
        err.contains("unknown cutover \"legacy-tokns\"")
            && err.contains("legacy-tokens, legacy-auto-tokens, token-expiry-extension"),
        "{err}"
    );
    for args in [
        &["--format", "yaml"][..],
        &["--at", "yesterday"],
        &["--at", "2027-01-15 10:00"],
        &["--bogus"],
        &["--cutover"],
    ] {
        let out = check(&[&["--config", s(&cfg)][..], args].concat());
        assert_eq!(code(&out), 64, "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("Usage:"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    // A configuration without a state path and no --state.
    let nopath = dir.join("nopath.toml");
    std::fs::write(
        &nopath,
        "[targets.kubernetes]\napi_server = \"https://127.0.0.1:6443\"\n[state]\npath = \"\"\n",
    )
    .unwrap();
    let out = check(&["--config", s(&nopath)]);
    assert_eq!(code(&out), 64);
    assert!(
        stderr(&out).contains("pass --state FILE"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_missing_unreadable_or_corrupt_state_exits_66_naming_it_and_leaves_it() {
    let dir = test_dir("corrupt");
    let at = rfc3339(T0 + HOUR);
    let missing = dir.join("missing.json");
    let out = check(&["--state", s(&missing), "--at", &at]);
    assert_eq!(code(&out), 66, "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("state file {}: missing", missing.display())),
        "{}",
        stderr(&out)
    );
    assert!(!missing.exists());

    for (content, reason) in [
        (&b"{\"version\": 1, \"ledger\": 7"[..], "not a state file"),
        (b"\x00\x01garbage", "not a state file"),
        (
            b"{\"version\": 99, \"saved_at\": 0}",
            "format version 99 is not supported",
        ),
        (b"{\"version\": 1, \"saved_at\": 5}", "malformed state"),
    ] {
        let path = dir.join("state.json");
        std::fs::write(&path, content).unwrap();
        let files = listing(&dir);
        let out = check(&["--state", s(&path), "--at", &at]);
        let err = stderr(&out);
        assert_eq!(code(&out), 66, "{err}");
        assert!(err.contains(s(&path)) && err.contains(reason), "{err}");
        assert!(err.contains("left in place"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), content, "never rewritten");
        assert_eq!(listing(&dir), files, "never moved aside");
        assert_eq!(stdout(&out), "", "no verdict on a corrupt file");
    }

    // A directory in its place.
    let out = check(&["--state", s(&dir), "--at", &at]);
    assert_eq!(code(&out), 66, "{}", stderr(&out));
    assert!(stderr(&out).contains("is a directory"), "{}", stderr(&out));
}

/// The keys of a JSON object.
fn keys(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_object().expect("an object").keys().cloned().collect()
}

#[test]
fn json_is_the_api_status_shape() {
    let dir = test_dir("json");
    let end = T0 + 2 * HOUR;
    let state = save(&dir, two_instances(T0, end, true), end);
    let cfg = config(&dir, &state);
    let out = check(&[
        "--config",
        s(&cfg),
        "--at",
        &rfc3339(end),
        "--format",
        "json",
    ]);
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    let status: Status = serde_json::from_slice(&out.stdout).expect("the /api/v1/status type");
    assert_eq!(status.evaluated_at, Some(Timestamp::from_secs(end)));
    let legacy = &status.cutovers[0];
    assert_eq!(
        (
            legacy.name.as_str(),
            legacy.state,
            legacy.reason,
            legacy.increase
        ),
        (
            "legacy-tokens",
            State::InUse,
            Reason::QuietCounterIncreased,
            2
        )
    );
    assert_eq!(
        status
            .kinds
            .iter()
            .find(|k| k.kind == TokenKind::Legacy)
            .map(|k| k.total),
        Some(2)
    );

    // The same keys, at every level, as the daemon's status serialises.
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let reference = serde_json::to_value(Status {
        version: "x".into(),
        evaluated_at: None,
        cutovers: vec![CutoverStatus {
            name: "legacy-tokens".into(),
            window_seconds: 1,
            state: State::Ready,
            reason: Reason::QuietForWindow,
            since: Timestamp::EPOCH,
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
        }],
        targets: vec![TargetHealth::default()],
        kinds: vec![KindUses {
            kind: TokenKind::Legacy,
            total: 0,
            increases: Vec::new(),
        }],
        attribution: None,
        history: None,
    })
    .unwrap();
    assert_eq!(keys(&json), keys(&reference));
    // The timeline is optional in the type (absent in old statuses); check,
    // like the daemon, always draws it.
    let mut cutover_keys = keys(&json["cutovers"][0]);
    assert!(
        json["cutovers"][0]["timeline"]["lanes"].is_array(),
        "{json}"
    );
    cutover_keys.retain(|k| k != "timeline");
    assert_eq!(cutover_keys, keys(&reference["cutovers"][0]));
    assert_eq!(keys(&json["kinds"][0]), keys(&reference["kinds"][0]));
    // Target health is the scraper's; check does not scrape.
    assert_eq!(json["targets"], serde_json::json!([]));
}

const LIVE_WORLD: &str = r#"
name = "check-live"
speed = 150.0
scraper_counts_as = "valid"
page_kib = 8

[[instances]]
version = "1.30.4"
count = 2

[[clients]]
kind = "legacy"
interval = "10s"
targets = "all"
from = "1m"
until = "3m"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_a_daemon_wrote_gets_the_daemons_verdicts() {
    use crate::support::daemon::{Daemon, config_for, start_world};
    let dir = test_dir("live");
    let state = dir.join("state.json");
    let windows = "[cutovers.legacy-tokens]\nwindow = \"20m\"\n\
                   [cutovers.legacy-auto-tokens]\nwindow = \"20m\"\n\
                   [cutovers.token-expiry-extension]\nwindow = \"20m\"\n";
    let (sim, clock, _) = start_world(LIVE_WORLD, &dir).await;
    let daemon = Daemon::start(
        config_for(&sim, &state, "30s", "20s", windows),
        clock.clone(),
    )
    .await;
    daemon.wait_evaluated().await;
    // Uses from 1m to 3m, then quiet: in use, with the uses in the window.
    clock.sleep(Duration::from_secs(8 * 60)).await;
    let served = daemon
        .wait_status("legacy uses counted", |s| {
            s.cutovers.iter().any(|c| c.increase > 0)
        })
        .await;
    daemon.stop().await;
    sim.shutdown().await;
    let saved: Snapshot =
        serde_json::from_slice(&std::fs::read(&state).expect("state written")).unwrap();

    // Judged at the final write, by the binary, from the file alone.
    let cfg = dir.join("check.toml");
    std::fs::write(
        &cfg,
        format!("[targets.kubernetes]\napi_server = \"https://127.0.0.1:6443\"\n[scrape]\ninterval = \"30s\"\ntimeout = \"20s\"\n{windows}"),
    )
    .unwrap();
    let at = UNIX_EPOCH + Duration::from_millis(saved.saved_at.as_millis() as u64);
    let at = humantime::format_rfc3339_millis(at).to_string();
    let out = check(&[
        "--config",
        s(&cfg),
        "--state",
        s(&state),
        "--at",
        &at,
        "--format",
        "json",
    ]);
    assert!(matches!(code(&out), 0 | 1), "{}", stderr(&out));
    let judged: Status = serde_json::from_slice(&out.stdout).expect("status JSON");
    assert_eq!(judged.evaluated_at, Some(saved.saved_at));
    let essentials = |s: &Status| -> Vec<_> {
        s.cutovers
            .iter()
            .map(|c| {
                (
                    c.name.to_string(),
                    c.state,
                    c.reason,
                    c.increase,
                    c.last_use,
                    c.since,
                )
            })
            .collect()
    };
    assert_eq!(
        essentials(&judged),
        essentials(&served),
        "{judged:#?}\n{served:#?}"
    );
    assert!(
        served.cutovers.iter().any(|c| c.state == State::InUse),
        "{served:#?}"
    );
    // Every kind but the scraper's own (valid) uses stopped before the status was read.
    let totals = |s: &Status| -> Vec<_> {
        s.kinds
            .iter()
            .filter(|k| k.kind != TokenKind::Valid)
            .map(|k| (k.kind, k.total))
            .collect()
    };
    assert_eq!(totals(&judged), totals(&served));
}
