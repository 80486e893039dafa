//! The exported metrics are a contract (`docs/metrics.md`): dashboards, alert rules and runbooks use these names.
//!
//! A `Metrics` registry is fed a synthetic week and a day of two apiserver
//! instances (a restart, legacy uses, each scrape error kind), through the real
//! ledger, verdicts and tracker; its page must then pass `promtool check
//! metrics`, carry exactly the golden names and label names (the same set
//! `docs/metrics.md` documents, with the same types), use only bounded label
//! values, type `_total` as counters and everything else as gauges, and spell
//! infinities canonically.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use cutover_auditor::families::TokenKind;
use cutover_auditor::ledger::{Ledger, Observation, SeriesKey};
use cutover_auditor::metrics::Metrics;
use cutover_auditor::status::ScrapeErrorKind;
use cutover_auditor::time::Timestamp;
use cutover_auditor::verdict::{self, CutoverSpec, Tracker};

/// Every exported metric with its label names, in the contract's spelling.
const GOLDEN: &[(&str, &[&str])] = &[
    ("cutover_admin_connections_evicted_total", &[]),
    ("cutover_alertmanager_errors_total", &[]),
    ("cutover_apiserver_resets_total", &["apiserver"]),
    ("cutover_apiserver_token_uses_total", &["apiserver", "kind"]),
    ("cutover_build_info", &["version"]),
    ("cutover_token_secrets", &["class"]),
    ("cutover_attributed_subjects", &["cutover"]),
    ("cutover_attribution_errors_total", &["reason", "source"]),
    ("cutover_clock_steps_back_total", &[]),
    ("cutover_coverage_holes_total", &["apiserver"]),
    ("cutover_history_errors_total", &["reason"]),
    ("cutover_history_last_success_timestamp_seconds", &[]),
    ("cutover_last_evaluation_timestamp_seconds", &[]),
    ("cutover_last_use_timestamp_seconds", &["cutover"]),
    ("cutover_leader", &[]),
    ("cutover_lease_transitions_total", &[]),
    ("cutover_ready", &["cutover"]),
    ("cutover_ready_in_seconds", &["cutover"]),
    ("cutover_reason", &["cutover", "reason"]),
    ("cutover_regressions_total", &["cutover"]),
    ("cutover_scrape_duration_seconds", &["apiserver"]),
    ("cutover_scrape_errors_total", &["apiserver", "reason"]),
    ("cutover_scrape_success", &["apiserver"]),
    ("cutover_state", &["cutover", "state"]),
    ("cutover_state_backend_conflicts_total", &[]),
    ("cutover_state_bytes", &[]),
    ("cutover_state_last_write_success_timestamp_seconds", &[]),
    ("cutover_state_since_timestamp_seconds", &["cutover"]),
    ("cutover_state_write_errors_total", &[]),
    ("cutover_discovery_errors_total", &["reason"]),
    ("cutover_discovery_last_success_timestamp_seconds", &[]),
    ("cutover_targets", &[]),
    ("cutover_task_failures_total", &["task"]),
    ("cutover_token_uses_increase", &["kind", "window"]),
    ("cutover_token_uses_total", &["kind"]),
    ("cutover_window_coverage_ratio", &["cutover"]),
    ("cutover_window_increase", &["cutover"]),
    ("cutover_window_seconds", &["cutover"]),
];

const A: &str = "10.0.0.1:6443";
const B: &str = "10.0.0.2:6443";
const VERSION: &str = "1.2.3-contract";
const ORIGIN: Timestamp = Timestamp::from_secs(1_780_000_000);
const MINUTE: Duration = Duration::from_secs(60);

/// The bounded values of one label on one metric (`None`: any metric).
fn allowed(metric: &str, label: &str, value: &str) -> bool {
    let one_of = |set: &[&str]| set.contains(&value);
    match (metric, label) {
        (_, "cutover") => one_of(&[
            "legacy-tokens",
            "legacy-auto-tokens",
            "token-expiry-extension",
        ]),
        (_, "state") => one_of(&["blind", "in_use", "no_signal", "ready"]),
        ("cutover_reason", "reason") => one_of(&[
            "no_targets",
            "metric_absent",
            "warming_up",
            "coverage_gap",
            "target_down",
            "target_never_scraped",
            "mixed_instances",
            "quiet_counter_increased",
            "no_evidence",
            "unattributed_uses",
            "quiet_for_window",
        ]),
        ("cutover_discovery_errors_total", "reason") => {
            one_of(&cutover_auditor::metrics::DISCOVERY_ERROR_REASONS)
        }
        ("cutover_scrape_errors_total", "reason") => one_of(&[
            "connect",
            "timeout",
            "tls",
            "token_unreadable",
            "http_401",
            "http_403",
            "http_other",
            "body_too_large",
            "decode",
            "malformed",
            "incomplete_page",
            "dns",
            "too_many_series",
        ]),
        ("cutover_token_secrets", "class") => one_of(&[
            "used_in_window",
            "used_before_window",
            "never_used",
            "invalidated",
            "unknown",
        ]),
        ("cutover_attribution_errors_total", "source") => one_of(&[
            "token_secrets",
            "tracking_configmap",
            "workloads",
            "audit_log",
        ]),
        ("cutover_attribution_errors_total", "reason") => one_of(&[
            "config",
            "token_unreadable",
            "connect",
            "tls",
            "timeout",
            "http_401",
            "http_403",
            "http_404",
            "http_other",
            "decode",
            "too_many_pages",
            "too_many_secrets",
            "read",
        ]),
        ("cutover_history_errors_total", "reason") => one_of(&[
            "history_unreachable",
            "history_rejected",
            "history_incomplete",
        ]),
        (_, "kind") => one_of(&[
            "legacy",
            "stale",
            "valid",
            "legacy_auto",
            "legacy_manual",
            "invalid_legacy_auto",
        ]),
        (_, "window") => one_of(&["5m", "1h", "24h", "7d"]),
        (_, "apiserver") => one_of(&[A, B]),
        ("cutover_build_info", "version") => value == VERSION,
        ("cutover_task_failures_total", "task") => one_of(&[
            "discovery",
            "scrape_supervisor",
            "evaluator",
            "state_writer",
            "leader_election",
            "alertmanager_pusher",
            "admin_server",
        ]),
        _ => false,
    }
}

/// One scrape's counters: `legacy` and `valid` as given, the other token
/// families at `others`; the legacy uses are manual ones (so the split
/// counters account for all of them).
fn observation(legacy: u64, valid: u64, others: u64, start: Timestamp) -> Observation {
    let values = TokenKind::ALL
        .iter()
        .map(|kind| {
            let value = match kind {
                TokenKind::Legacy => legacy,
                TokenKind::LegacyManual => others + legacy,
                TokenKind::Valid => valid,
                _ => others,
            };
            (SeriesKey::family(kind.family()), value)
        })
        .collect();
    Observation {
        start_time: Some(start),
        values,
    }
}

/// Eight days of scrapes every minute on two instances: B restarts on day 3
/// (its counters start again from 0), A sees legacy uses on day 7, and no
/// valid (extended) token is ever used. Returns the page and the states.
fn synthetic_page() -> (String, BTreeMap<String, &'static str>) {
    let metrics = Metrics::new(VERSION).unwrap();
    let specs = CutoverSpec::builtin();
    metrics.declare_cutovers(&specs);
    // Per-instance series exist for current targets only.
    metrics.set_targets(&[], &[A.to_owned(), B.to_owned()]);
    let mut ledger = Ledger::default();
    let mut trackers: BTreeMap<String, Tracker> = BTreeMap::new();
    let a_start = ORIGIN - Duration::from_secs(86_400);
    let b_first = ORIGIN - Duration::from_secs(3_600);
    let b_restart = ORIGIN + Duration::from_secs(3 * 86_400);
    let minutes = 8 * 24 * 60;
    let mut now = ORIGIN;
    for minute in 0..=minutes {
        now = ORIGIN + MINUTE * minute;
        let legacy_a = if minute >= 7 * 24 * 60 { 100 + 3 } else { 100 };
        ledger.observe(A, now, observation(legacy_a, 50, 7, a_start));
        let b = if now < b_restart {
            observation(20, 9, 4, b_first)
        } else {
            observation(0, 0, 0, b_restart)
        };
        ledger.observe(B, now, b);
        if minute % 60 == 0 {
            let mut verdicts = Vec::new();
            for spec in &specs {
                let assessment = verdict::assess(spec, &ledger, now);
                let tracker = trackers.entry(spec.name.to_string()).or_default();
                tracker.update(&spec.name, &assessment, now);
                verdicts.push(tracker.verdict(&spec.name, assessment, now));
            }
            let pairs: Vec<_> = specs.iter().zip(&verdicts).collect();
            metrics.observe_evaluation(&pairs, &ledger, now);
        }
    }
    let states = specs
        .iter()
        .map(|spec| {
            let a = verdict::assess(spec, &ledger, now);
            (spec.name.to_string(), a.state.label())
        })
        .collect();
    metrics.observe_scrape(A, Duration::from_millis(250), Ok(()));
    for kind in ScrapeErrorKind::ALL {
        metrics.observe_scrape(B, Duration::from_secs(10), Err(kind));
    }
    // Attribution's series exist only when it is on; here, as if it were.
    metrics.set_token_secrets(&[("used_in_window", 1), ("never_used", 2)]);
    metrics.set_attributed_subjects("legacy-tokens", 1);
    metrics.attribution_error("token_secrets", "http_403");
    (metrics.render().unwrap(), states)
}

/// A sample line: name, labels in page order, value text.
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: String,
}

fn parse_samples(page: &str) -> Vec<Sample> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let inner = rest.strip_suffix('}').expect("closing brace");
                    let labels = inner
                        .split("\",")
                        .filter(|p| !p.is_empty())
                        .map(|pair| {
                            let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                            (k.to_owned(), v.trim_end_matches('"').to_owned())
                        })
                        .collect();
                    (name, labels)
                }
                None => (series, Vec::new()),
            };
            Sample {
                name: name.to_owned(),
                labels,
                value: value.to_owned(),
            }
        })
        .collect()
}

fn types(page: &str) -> BTreeMap<String, String> {
    page.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (name, kind) = l.split_once(' ').expect("# TYPE name kind");
            (name.to_owned(), kind.to_owned())
        })
        .collect()
}

/// Metric name → (type, label names) from the tables of `docs/metrics.md`.
fn documented() -> BTreeMap<String, (String, Vec<String>)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let mut out = BTreeMap::new();
    for line in doc.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        // `| `cutover_x{a,b}` | gauge | ... |` → ["", "`cutover_x{a,b}`", "gauge", ...]
        let Some(metric) = cells
            .get(1)
            .and_then(|c| c.strip_prefix("`cutover_"))
            .and_then(|c| c.strip_suffix('`'))
        else {
            continue;
        };
        let (name, labels) = match metric.split_once('{') {
            Some((name, labels)) => (
                name,
                labels
                    .trim_end_matches('}')
                    .split(',')
                    .map(str::to_owned)
                    .collect(),
            ),
            None => (metric, Vec::new()),
        };
        let kind = cells.get(2).copied().unwrap_or_default().to_owned();
        let previous = out.insert(format!("cutover_{name}"), (kind, labels));
        assert!(previous.is_none(), "cutover_{name} documented twice");
    }
    out
}

fn golden() -> BTreeSet<(String, Vec<String>)> {
    GOLDEN
        .iter()
        .map(|(name, labels)| {
            (
                name.to_string(),
                labels.iter().map(|l| l.to_string()).collect(),
            )
        })
        .collect()
}

#[test]
fn the_synthetic_world_reaches_the_intended_states() {
    // The page below is only a good contract sample if it shows a use, a
    // ready cutover and a +Inf; check the scenario does what it says.
    let (_, states) = synthetic_page();
    let expected: BTreeMap<String, &str> = [
        ("legacy-tokens", "in_use"),
        ("legacy-auto-tokens", "ready"),
        ("token-expiry-extension", "no_signal"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(states, expected);
}

#[test]
fn promtool_accepts_the_page() {
    let (page, _) = synthetic_page();
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => panic!(
            "promtool could not be started ({e}); install it with \
             `apt-get install prometheus` (Debian package), or run tests/run-all.sh"
        ),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\nstdout: {}\nstderr: {}\npage:\n{page}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

#[test]
fn names_and_label_names_match_the_golden_list_and_the_docs() {
    let (page, _) = synthetic_page();
    let exported: BTreeSet<(String, Vec<String>)> = parse_samples(&page)
        .into_iter()
        .map(|s| (s.name, s.labels.into_iter().map(|(k, _)| k).collect()))
        .collect();
    assert_eq!(
        exported,
        golden(),
        "exported metrics differ from the golden list"
    );

    let types = types(&page);
    let docs = documented();
    let from_docs: BTreeSet<(String, Vec<String>)> = docs
        .iter()
        .map(|(name, (_, labels))| (name.clone(), labels.clone()))
        .collect();
    assert_eq!(
        from_docs,
        golden(),
        "docs/metrics.md differs from the golden list"
    );
    for (name, (kind, _)) in &docs {
        assert_eq!(
            types.get(name),
            Some(kind),
            "docs/metrics.md types {name} as {kind}"
        );
    }
}

#[test]
fn label_values_are_bounded() {
    let (page, _) = synthetic_page();
    let samples = parse_samples(&page);
    for s in &samples {
        for (label, value) in &s.labels {
            assert!(
                allowed(&s.name, label, value),
                "{}: {label}=\"{value}\" is outside the contract",
                s.name
            );
        }
    }
    // Enumerations are complete: one series per state and reason per cutover,
    // one per kind and window.
    let count = |name: &str| samples.iter().filter(|s| s.name == name).count();
    assert_eq!(count("cutover_state"), 3 * 4);
    assert_eq!(count("cutover_reason"), 3 * verdict::Reason::ALL.len());
    assert_eq!(count("cutover_token_uses_total"), 6);
    assert_eq!(count("cutover_token_uses_increase"), 6 * 4);
    assert_eq!(count("cutover_apiserver_token_uses_total"), 2 * 6);
    assert_eq!(
        count("cutover_scrape_errors_total"),
        ScrapeErrorKind::ALL.len()
    );
    assert_eq!(
        count("cutover_task_failures_total"),
        cutover_auditor::metrics::TASKS.len()
    );
}

#[test]
fn counters_end_in_total_and_nothing_else_does() {
    let (page, _) = synthetic_page();
    let types = types(&page);
    assert_eq!(types.len(), GOLDEN.len());
    for (name, kind) in &types {
        let expected = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        assert_eq!(kind, expected, "{name}");
        assert!(
            page.contains(&format!("# HELP {name} ")),
            "{name} has no HELP"
        );
    }
}

#[test]
fn values_are_canonical_numbers() {
    let (page, _) = synthetic_page();
    let samples = parse_samples(&page);
    for s in &samples {
        // Rust would also parse `inf`, `infinity` and `nan`; the exposition
        // format spells them `+Inf`, `-Inf` and `NaN` only.
        let canonical = matches!(s.value.as_str(), "+Inf" | "-Inf" | "NaN")
            || (s.value.parse::<f64>().is_ok()
                && s.value
                    .chars()
                    .all(|c| c.is_ascii_digit() || "+-.e".contains(c)));
        assert!(canonical, "{} {:?}", s.name, s.value);
    }
    let ready_in = |cutover: &str| {
        samples
            .iter()
            .find(|s| {
                s.name == "cutover_ready_in_seconds"
                    && s.labels == [("cutover".to_owned(), cutover.to_owned())]
            })
            .map(|s| s.value.clone())
            .unwrap()
    };
    // no_signal cannot turn ready without a change; ready is ready now.
    assert_eq!(ready_in("token-expiry-extension"), "+Inf");
    assert_eq!(ready_in("legacy-auto-tokens"), "0");
    assert_ne!(ready_in("legacy-tokens"), "+Inf");
}
