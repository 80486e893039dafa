//! The pure half: the alerts the rules file would have firing, from one
//! [`Status`] and `now`, with the rules' labels and annotation texts.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::cutover::{BuiltinCutover, Cutover};
use crate::families::TokenKind;
use crate::gofmt::{humanize, humanize_duration, humanize_percentage, humanize_timestamp};
use crate::status::{CutoverStatus, Status, TargetHealth};
use crate::time::Timestamp;
use crate::verdict::State;
use crate::window::IncreaseWindow;

/// Where the rules' `runbook_url` annotations point; the alert name and `.md` follow.
pub const RUNBOOK_BASE: &str =
    "https://github.com/cutover-auditor/cutover-auditor/blob/main/docs/runbooks/";

/// Rules of the rules file that are not computed from the [`Status`], so
/// never pushed: the auditor's absence (only Prometheus sees it), and the
/// health of evaluation, discovery and state writes, which the status does
/// not carry (they are alerted on from the auditor's own metrics).
#[cfg(test)]
const NOT_PUSHED: &[&str] = &[
    "CutoverAuditorDown",
    "CutoverAuditorEvaluationStale",
    "CutoverAuditorDiscoveryFailing",
    "CutoverAuditorStateWriteFailing",
];

/// How long a verdict must hold before its alert fires (the rules' `for: 5m`).
pub const PENDING: Duration = Duration::from_secs(5 * 60);

/// How long an apiserver instance must go unscraped before it is reported
/// (the rule's `for: 10m`).
pub const SCRAPE_FAILING_AFTER: Duration = Duration::from_secs(10 * 60);

/// How long a regression keeps its alert firing (the rule's `[1h]` range).
pub const REGRESSION_FIRES_FOR: Duration = Duration::from_secs(3600);

/// One alert as Alertmanager API v2 takes it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Alert {
    /// Identity of the alert: `alertname`, `severity` and what it is about.
    pub labels: BTreeMap<String, String>,
    /// `summary`, `description` and `runbook_url`.
    pub annotations: BTreeMap<String, String>,
}

impl Alert {
    /// The `alertname` label.
    pub fn name(&self) -> &str {
        self.labels.get("alertname").map_or("", String::as_str)
    }
}

/// When each apiserver target was first listed in a status the pusher saw.
///
/// A target that never succeeded has no `last_success` to measure its outage
/// from; like the rule's `for: 10m`, which starts when the target's
/// `cutover_scrape_success` series appears, its outage is measured from the
/// moment it was first listed. A target added hours after the daemon started
/// therefore gets its ten minutes too, and a restart of the daemon starts
/// them again (it cannot know what happened while it was down).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FirstSeen(BTreeMap<String, Timestamp>);

impl FirstSeen {
    /// No target seen yet.
    pub fn new() -> FirstSeen {
        FirstSeen::default()
    }

    /// Records the targets of `status`, first listed at its evaluation time
    /// (or `now` before the first evaluation), and forgets targets that are
    /// no longer listed so a returning one starts afresh.
    pub fn observe(&mut self, status: &Status, now: Timestamp) {
        let at = status.evaluated_at.unwrap_or(now);
        self.0
            .retain(|instance, _| status.targets.iter().any(|t| &t.instance == instance));
        for t in &status.targets {
            self.0.entry(t.instance.clone()).or_insert(at);
        }
    }

    /// When `instance` was first listed, if it was.
    pub fn get(&self, instance: &str) -> Option<Timestamp> {
        self.0.get(instance).copied()
    }
}

/// Pure: the alerts that should be firing for `status` at `now` (simulated
/// time, the clock the status was computed on), sorted by labels. Mirrors the
/// rules file except `CutoverAuditorDown` and the other rules the status
/// does not carry (see the module documentation).
/// `seen` dates the outage of targets that never succeeded; a target missing
/// from it counts as first seen at `now`, which never fires.
pub fn desired(status: &Status, now: Timestamp, seen: &FirstSeen) -> Vec<Alert> {
    let mut out = Vec::new();
    for c in &status.cutovers {
        cutover_alerts(c, now, &mut out);
    }
    for t in &status.targets {
        if let Some(alert) = scrape_failing(t, now, seen) {
            out.push(alert);
        }
    }
    if let Some(alert) = invalidated(status) {
        out.push(alert);
    }
    out.sort();
    out
}

// The alerts, one function per rule group member. Texts follow the rules'
// annotation templates word for word where the status has the same numbers.

fn cutover_alerts(c: &CutoverStatus, now: Timestamp, out: &mut Vec<Alert>) {
    let name = c.name.as_str();
    let window = humanize_duration(c.window());
    let held = now.since(c.since);
    match c.state {
        State::InUse if held >= PENDING => {
            let last_use = or_unknown(c.last_use.map(humanize_timestamp));
            let since = humanize_timestamp(c.since);
            let uses = humanize(c.increase as f64);
            match &c.name {
                Cutover::Builtin(BuiltinCutover::LegacyTokens | BuiltinCutover::LegacyAutoTokens) => out.push(alert(
                    "LegacyServiceAccountTokensInUse",
                    "warning",
                    &[("cutover", name)],
                    format!("Legacy ServiceAccount tokens are still in use (cutover {name})."),
                    format!(
                        "Cutover {name}: the apiservers counted {uses} legacy-token authentications \
                         in the last {window} window; last use at {last_use}, in use since {since}. \
                         Removing or invalidating Secret-based tokens now would break these clients."
                    ),
                )),
                Cutover::Builtin(BuiltinCutover::TokenExpiryExtension) => out.push(alert(
                    "StaleServiceAccountTokensInUse",
                    "warning",
                    &[("cutover", name)],
                    format!(
                        "Clients use stale projected ServiceAccount tokens (cutover {name})."
                    ),
                    format!(
                        "Cutover {name}: the apiservers counted {uses} authentications with stale \
                         projected tokens (used more than an hour after issue, past warnafter) in \
                         the last {window} window; last use at {last_use}, in use since {since}. \
                         These clients do not re-read their token; they will get 401 about an hour \
                         after --service-account-extend-token-expiration=false."
                    ),
                )),
                // The rules file has in-use rules for the built-ins only; a
                // custom cutover's state alerts (ready, blind, regressed)
                // below apply to it like to any other.
                Cutover::Custom(_) => {}
            }
        }
        State::Ready if held >= PENDING => out.push(alert(
            "ServiceAccountTokenCutoverReady",
            "warning",
            &[("cutover", name)],
            format!("Cutover {name} is ready to be switched."),
            format!(
                "Cutover {name}: no use in a fully observed {window} window (observed coverage {} \
                 across all apiserver instances), ready since {}. Follow the runbook before \
                 switching.",
                humanize_percentage(c.coverage_ratio),
                humanize_timestamp(c.since),
            ),
        )),
        State::Blind if held > c.window() => out.push(alert(
            "CutoverAuditorBlind",
            "warning",
            &[("cutover", name)],
            format!("Cutover {name} has been blind for longer than its window."),
            format!(
                "Cutover {name} has been blind for {} (since {}), longer than its {window} window; \
                 reason: {}. The auditor can neither confirm use nor declare the cutover ready.",
                humanize_duration(held),
                humanize_timestamp(c.since),
                c.reason.label(),
            ),
        )),
        _ => {}
    }
    if let Some(at) = c.last_regression
        && c.regressions > 0
        && now.since(at) < REGRESSION_FIRES_FOR
    {
        out.push(alert(
            "ServiceAccountTokenCutoverRegressed",
            "critical",
            &[("cutover", name)],
            format!("Cutover {name} was ready and saw use again."),
            format!(
                "Cutover {name} went from ready to in_use at {} ({} time(s) since observation \
                 began); current state {}, last use at {}. If the switch was already made, these \
                 clients are failing now.",
                humanize_timestamp(at),
                c.regressions,
                c.state.label(),
                or_unknown(c.last_use.map(humanize_timestamp)),
            ),
        ));
    }
}

fn scrape_failing(t: &TargetHealth, now: Timestamp, seen: &FirstSeen) -> Option<Alert> {
    if t.up {
        return None;
    }
    let failing_since = t
        .last_success
        .or_else(|| seen.get(&t.instance))
        .unwrap_or(now);
    if now.since(failing_since) <= SCRAPE_FAILING_AFTER {
        return None;
    }
    let instance = t.instance.as_str();
    Some(alert(
        "CutoverAuditorScrapeFailing",
        "warning",
        &[("apiserver", instance)],
        format!("The auditor cannot scrape apiserver instance {instance}."),
        format!(
            "Apiserver instance {instance} has not been scraped successfully for more than 10m \
             (last error: {}). Its token counters are unknown, so no cutover can turn ready until \
             scraping recovers.",
            or_unknown(t.last_error.map(|e| e.label().to_owned())),
        ),
    ))
}

fn invalidated(status: &Status) -> Option<Alert> {
    let kind = TokenKind::InvalidLegacyAuto;
    let uses = status.kinds.iter().find(|k| k.kind == kind)?;
    let recent = uses
        .increase(IncreaseWindow::FiveMinutes)
        .filter(|n| *n > 0)?;
    Some(alert(
        "InvalidatedLegacyTokensPresented",
        "critical",
        &[
            ("kind", kind.label()),
            ("window", IncreaseWindow::FiveMinutes.label()),
        ],
        "Clients present invalidated legacy ServiceAccount tokens and are being rejected.".into(),
        format!(
            "The apiservers rejected {} requests carrying legacy tokens whose Secret is labelled \
             kubernetes.io/legacy-token-invalid-since in the last 5m ({} in the last 1h). These \
             clients are failing now.",
            humanize(recent as f64),
            or_unknown(
                uses.increase(IncreaseWindow::Hour)
                    .map(|n| humanize(n as f64))
            ),
        ),
    ))
}

fn alert(
    name: &str,
    severity: &str,
    labels: &[(&str, &str)],
    summary: String,
    description: String,
) -> Alert {
    let mut l = BTreeMap::from([
        ("alertname".to_owned(), name.to_owned()),
        ("severity".to_owned(), severity.to_owned()),
    ]);
    l.extend(
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    Alert {
        labels: l,
        annotations: BTreeMap::from([
            ("summary".to_owned(), summary),
            ("description".to_owned(), description),
            ("runbook_url".to_owned(), format!("{RUNBOOK_BASE}{name}.md")),
        ]),
    }
}

fn or_unknown(value: Option<String>) -> String {
    value.unwrap_or_else(|| "(unknown)".to_owned())
}

#[cfg(test)]
// The tests compare with the rules file on disk.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;
    use crate::status::{KindUses, ScrapeErrorKind};
    use crate::verdict::Reason;

    const H: Duration = Duration::from_secs(3600);
    const M: Duration = Duration::from_secs(60);
    const DAY: Duration = Duration::from_secs(86_400);

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_secs(secs)
    }

    fn cutover(name: &str, state: State, since: Timestamp) -> CutoverStatus {
        let reason = match state {
            State::Blind => Reason::CoverageGap,
            State::InUse => Reason::QuietCounterIncreased,
            State::NoSignal => Reason::NoEvidence,
            State::Ready => Reason::QuietForWindow,
        };
        CutoverStatus::for_test(name, 7 * DAY, state, reason, since)
    }

    fn with_cutover(c: CutoverStatus) -> Status {
        Status {
            cutovers: vec![c],
            ..Status::default()
        }
    }

    fn target(instance: &str, up: bool, last_success: Option<Timestamp>) -> TargetHealth {
        TargetHealth {
            instance: instance.into(),
            up,
            last_success,
            last_error: (!up).then_some(ScrapeErrorKind::Timeout),
            ..TargetHealth::default()
        }
    }

    fn invalid_uses(five_minutes: u64, hour: u64) -> Status {
        Status {
            kinds: vec![KindUses {
                kind: TokenKind::InvalidLegacyAuto,
                total: 100,
                increases: vec![("5m".into(), five_minutes), ("1h".into(), hour)],
            }],
            ..Status::default()
        }
    }

    /// Expected alerts as (labels without alertname, alertname, description);
    /// summaries and runbook URLs are checked against the rules file below.
    fn check(status: &Status, now: Timestamp, seen: &FirstSeen, expected: &[(&str, &str, &str)]) {
        let got = desired(status, now, seen);
        let got: Vec<(String, String, String)> = got
            .iter()
            .map(|a| {
                let labels = a
                    .labels
                    .iter()
                    .filter(|(k, _)| *k != "alertname")
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(",");
                (
                    labels,
                    a.name().to_owned(),
                    a.annotations["description"].clone(),
                )
            })
            .collect();
        let expected: Vec<(String, String, String)> = expected
            .iter()
            .map(|(l, n, d)| ((*l).to_owned(), (*n).to_owned(), (*d).to_owned()))
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn in_use_cutovers_fire_after_five_minutes() {
        // The numbers of deploy/rules/tests/LegacyServiceAccountTokensInUse.yaml,
        // so the texts can be compared with the rule's expected annotations.
        let mut legacy = cutover("legacy-tokens", State::InUse, ts(1_699_990_000));
        legacy.increase = 42;
        legacy.last_use = Some(ts(1_700_000_000));
        let now = ts(1_700_000_600);
        check(
            &with_cutover(legacy.clone()),
            now,
            &FirstSeen::new(),
            &[(
                "cutover=legacy-tokens,severity=warning",
                "LegacyServiceAccountTokensInUse",
                "Cutover legacy-tokens: the apiservers counted 42 legacy-token authentications in the \
                 last 7d 0h 0m 0s window; last use at 2023-11-14 22:13:20 +0000 UTC, in use since \
                 2023-11-14 19:26:40 +0000 UTC. Removing or invalidating Secret-based tokens now \
                 would break these clients.",
            )],
        );
        // Pending, like `for: 5m`.
        legacy.since = now - 4 * M;
        check(&with_cutover(legacy.clone()), now, &FirstSeen::new(), &[]);
        legacy.since = now - 5 * M;
        legacy.name = "legacy-auto-tokens".into();
        legacy.window_seconds = 86_400;
        legacy.increase = 12_345;
        legacy.last_use = None;
        check(
            &with_cutover(legacy),
            now,
            &FirstSeen::new(),
            &[(
                "cutover=legacy-auto-tokens,severity=warning",
                "LegacyServiceAccountTokensInUse",
                "Cutover legacy-auto-tokens: the apiservers counted 12.35k legacy-token \
                 authentications in the last 1d 0h 0m 0s window; last use at (unknown), in use \
                 since 2023-11-14 22:18:20 +0000 UTC. Removing or invalidating Secret-based tokens \
                 now would break these clients.",
            )],
        );

        let mut stale = cutover("token-expiry-extension", State::InUse, ts(1_699_990_000));
        stale.window_seconds = 86_400;
        stale.increase = 17;
        stale.last_use = Some(ts(1_700_000_000));
        check(
            &with_cutover(stale.clone()),
            now,
            &FirstSeen::new(),
            &[(
                "cutover=token-expiry-extension,severity=warning",
                "StaleServiceAccountTokensInUse",
                "Cutover token-expiry-extension: the apiservers counted 17 authentications with \
                 stale projected tokens (used more than an hour after issue, past warnafter) in the \
                 last 1d 0h 0m 0s window; last use at 2023-11-14 22:13:20 +0000 UTC, in use since \
                 2023-11-14 19:26:40 +0000 UTC. These clients do not re-read their token; they will \
                 get 401 about an hour after --service-account-extend-token-expiration=false.",
            )],
        );
        // No signal is not stale-token use.
        stale.state = State::NoSignal;
        check(&with_cutover(stale), now, &FirstSeen::new(), &[]);
    }

    #[test]
    fn ready_fires_after_five_minutes_with_window_and_coverage() {
        let mut ready = cutover("legacy-tokens", State::Ready, ts(1_700_000_000));
        ready.coverage_ratio = 0.9987;
        check(
            &with_cutover(ready.clone()),
            ts(1_700_000_300),
            &FirstSeen::new(),
            &[(
                "cutover=legacy-tokens,severity=warning",
                "ServiceAccountTokenCutoverReady",
                "Cutover legacy-tokens: no use in a fully observed 7d 0h 0m 0s window (observed \
                 coverage 99.87% across all apiserver instances), ready since 2023-11-14 22:13:20 \
                 +0000 UTC. Follow the runbook before switching.",
            )],
        );
        check(
            &with_cutover(ready),
            ts(1_700_000_299),
            &FirstSeen::new(),
            &[],
        );
    }

    #[test]
    fn blind_fires_only_when_longer_than_the_window() {
        // The numbers of deploy/rules/tests/CutoverAuditorBlind.yaml.
        let blind = cutover("legacy-tokens", State::Blind, ts(3600));
        check(
            &with_cutover(blind.clone()),
            Timestamp::EPOCH + 8 * DAY,
            &FirstSeen::new(),
            &[(
                "cutover=legacy-tokens,severity=warning",
                "CutoverAuditorBlind",
                "Cutover legacy-tokens has been blind for 7d 23h 0m 0s (since 1970-01-01 01:00:00 \
                 +0000 UTC), longer than its 7d 0h 0m 0s window; reason: coverage_gap. The auditor \
                 can neither confirm use nor declare the cutover ready.",
            )],
        );
        // Blind for exactly the window is not longer than it.
        check(
            &with_cutover(blind),
            Timestamp::EPOCH + 169 * H,
            &FirstSeen::new(),
            &[],
        );
        let no_signal = cutover("legacy-auto-tokens", State::NoSignal, ts(3600));
        check(
            &with_cutover(no_signal),
            Timestamp::EPOCH + 30 * DAY,
            &FirstSeen::new(),
            &[],
        );
    }

    #[test]
    fn regression_fires_for_an_hour() {
        let now = ts(1_700_003_600);
        let mut c = cutover("legacy-tokens", State::InUse, now - M);
        c.regressions = 2;
        c.last_regression = Some(now - M);
        c.last_use = Some(ts(1_700_000_000));
        let fired = [(
            "cutover=legacy-tokens,severity=critical",
            "ServiceAccountTokenCutoverRegressed",
            "Cutover legacy-tokens went from ready to in_use at 2023-11-14 23:12:20 +0000 UTC (2 \
             time(s) since observation began); current state in_use, last use at 2023-11-14 \
             22:13:20 +0000 UTC. If the switch was already made, these clients are failing now.",
        )];
        check(&with_cutover(c.clone()), now, &FirstSeen::new(), &fired);
        // 59 minutes on, the in-use alert fires too; at 61 minutes only it does.
        let later = now + 58 * M;
        let got = desired(&with_cutover(c.clone()), later, &FirstSeen::new());
        let names: Vec<&str> = got.iter().map(Alert::name).collect();
        assert_eq!(
            names,
            [
                "LegacyServiceAccountTokensInUse",
                "ServiceAccountTokenCutoverRegressed"
            ]
        );
        let got = desired(&with_cutover(c.clone()), now + 60 * M, &FirstSeen::new());
        let names: Vec<&str> = got.iter().map(Alert::name).collect();
        assert_eq!(names, ["LegacyServiceAccountTokensInUse"]);
        c.regressions = 0;
        c.last_regression = None;
        c.since = now;
        check(&with_cutover(c), now, &FirstSeen::new(), &[]);
    }

    #[test]
    fn scrape_failing_after_ten_minutes_without_success() {
        let now = ts(1_700_000_000);
        let failing = "apiserver=192.0.2.10:6443,severity=warning";
        let text = |error: &str| {
            format!(
                "Apiserver instance 192.0.2.10:6443 has not been scraped successfully for more \
                 than 10m (last error: {error}). Its token counters are unknown, so no cutover can \
                 turn ready until scraping recovers."
            )
        };
        let status = |t: TargetHealth| Status {
            targets: vec![t],
            evaluated_at: Some(now),
            ..Status::default()
        };
        let down = target("192.0.2.10:6443", false, Some(now - 11 * M));
        check(
            &status(down.clone()),
            now,
            &FirstSeen::new(),
            &[(failing, "CutoverAuditorScrapeFailing", &text("timeout"))],
        );
        let recent = target("192.0.2.10:6443", false, Some(now - 9 * M));
        check(&status(recent), now, &FirstSeen::new(), &[]);
        let up = target("192.0.2.10:6443", true, Some(now - 11 * M));
        check(&status(up), now, &FirstSeen::new(), &[]);

        // Never succeeded: dated from when the target was first listed.
        let mut never = target("192.0.2.10:6443", false, None);
        never.last_error = None;
        let mut seen = FirstSeen::new();
        let mut first = status(never.clone());
        first.evaluated_at = Some(now - 11 * M);
        seen.observe(&first, now - 11 * M);
        check(
            &status(never.clone()),
            now,
            &seen,
            &[(failing, "CutoverAuditorScrapeFailing", &text("(unknown)"))],
        );
        first.evaluated_at = Some(now - 5 * M);
        let mut recently = FirstSeen::new();
        recently.observe(&first, now - 5 * M);
        check(&status(never.clone()), now, &recently, &[]);
        // Not seen at all: counts as first seen now.
        check(&status(never), now, &FirstSeen::new(), &[]);
    }

    #[test]
    fn first_seen_keeps_the_first_listing_and_forgets_departed_targets() {
        let listed = |instances: &[&str], at: i64| Status {
            evaluated_at: Some(ts(at)),
            targets: instances.iter().map(|i| target(i, true, None)).collect(),
            ..Status::default()
        };
        let mut seen = FirstSeen::new();
        seen.observe(&listed(&["a:1"], 100), ts(999));
        seen.observe(&listed(&["a:1", "b:1"], 200), ts(999));
        assert_eq!(
            (seen.get("a:1"), seen.get("b:1")),
            (Some(ts(100)), Some(ts(200)))
        );
        seen.observe(&listed(&["b:1"], 300), ts(999));
        seen.observe(&listed(&["a:1", "b:1"], 400), ts(999));
        assert_eq!(
            (seen.get("a:1"), seen.get("b:1")),
            (Some(ts(400)), Some(ts(200)))
        );
        // Before the first evaluation, `now` dates the listing.
        let mut early = FirstSeen::new();
        let mut status = listed(&["c:1"], 0);
        status.evaluated_at = None;
        early.observe(&status, ts(50));
        assert_eq!(early.get("c:1"), Some(ts(50)));
    }

    #[test]
    fn invalidated_tokens_fire_on_the_five_minute_increase() {
        check(
            &invalid_uses(12, 30),
            ts(1_700_000_000),
            &FirstSeen::new(),
            &[(
                "kind=invalid_legacy_auto,severity=critical,window=5m",
                "InvalidatedLegacyTokensPresented",
                "The apiservers rejected 12 requests carrying legacy tokens whose Secret is \
                 labelled kubernetes.io/legacy-token-invalid-since in the last 5m (30 in the last \
                 1h). These clients are failing now.",
            )],
        );
        check(
            &invalid_uses(0, 30),
            ts(1_700_000_000),
            &FirstSeen::new(),
            &[],
        );
        let mut other = invalid_uses(12, 30);
        other.kinds[0].kind = TokenKind::LegacyAuto;
        check(&other, ts(1_700_000_000), &FirstSeen::new(), &[]);
        check(
            &Status::default(),
            ts(1_700_000_000),
            &FirstSeen::new(),
            &[],
        );
    }

    /// Names, severities, summaries (with the template's label filled in) and
    /// runbook URLs must be those of the rules file.
    #[test]
    fn alerts_match_the_rules_file() {
        let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/deploy/rules/cutover-auditor.rules.yaml"
            ))
            .expect("rules file"),
        )
        .expect("rules YAML");
        let mut by_name = BTreeMap::new();
        for group in rules["groups"].as_sequence().expect("groups") {
            for rule in group["rules"].as_sequence().expect("rules") {
                by_name.insert(
                    rule["alert"].as_str().expect("alert").to_owned(),
                    rule.clone(),
                );
            }
        }

        // One status that fires every pushed alert.
        let now = ts(1_700_000_000);
        let mut in_use = cutover("legacy-tokens", State::InUse, now - H);
        in_use.regressions = 1;
        in_use.last_regression = Some(now - H / 2);
        let mut stale = cutover("token-expiry-extension", State::InUse, now - H);
        stale.window_seconds = 86_400;
        let ready = cutover("legacy-auto-tokens", State::Ready, now - H);
        let mut blind = cutover("legacy-auto-tokens", State::Blind, now - 8 * DAY);
        blind.name = "other".into();
        let mut status = invalid_uses(1, 1);
        status.cutovers = vec![in_use, stale, ready, blind];
        status.targets = vec![target("192.0.2.10:6443", false, Some(now - H))];
        let got = desired(&status, now, &FirstSeen::new());

        let names: Vec<&str> = got.iter().map(Alert::name).collect();
        let mut expected: Vec<&str> = by_name
            .keys()
            .map(String::as_str)
            .filter(|n| !NOT_PUSHED.contains(n))
            .collect();
        expected.sort_unstable();
        assert_eq!(
            names, expected,
            "every rule but the NOT_PUSHED ones is pushed"
        );

        for alert in &got {
            let rule = &by_name[alert.name()];
            assert_eq!(
                alert.labels["severity"],
                rule["labels"]["severity"].as_str().expect("severity"),
                "{}",
                alert.name()
            );
            assert_eq!(
                alert.annotations["runbook_url"],
                rule["annotations"]["runbook_url"].as_str().expect("url"),
            );
            let path = format!(
                "{}/docs/runbooks/{}.md",
                env!("CARGO_MANIFEST_DIR"),
                alert.name()
            );
            assert!(std::path::Path::new(&path).is_file(), "{path}");
            let summary = rule["annotations"]["summary"]
                .as_str()
                .expect("summary")
                .replace(
                    "{{ $labels.cutover }}",
                    alert.labels.get("cutover").map_or("", String::as_str),
                )
                .replace(
                    "{{ $labels.apiserver }}",
                    alert.labels.get("apiserver").map_or("", String::as_str),
                );
            assert_eq!(alert.annotations["summary"], summary);
            assert_eq!(alert.annotations.len(), 3);
        }
    }
}
