//! Every metric the auditor exports, registered in one place on its own
//! registry, with the names and labels of the contract (`docs/metrics.md`).
//!
//! Label values come from bounded sets only: cutover names from the config,
//! token kinds, states, reasons and scrape error kinds from enums, and
//! instance addresses of current targets (every series of an instance is
//! removed as soon as it leaves the target list, so churn does not grow the
//! page; its history stays in the ledger and the verdicts).

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use prometheus::{
    Encoder, Gauge, GaugeVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::families::TokenKind;
use crate::ledger::Ledger;
use crate::status::ScrapeErrorKind;
use crate::time::Timestamp;
use crate::verdict::{CutoverSpec, Reason, State, Verdict};
use crate::window::IncreaseWindow;

/// The values of `cutover_discovery_errors_total{reason}`: the kinds of
/// `DiscoveryError::metric_label`, and `other`.
pub const DISCOVERY_ERROR_REASONS: [&str; 10] = [
    "config",
    "token_unreadable",
    "connect",
    "tls",
    "timeout",
    "http_401",
    "http_403",
    "http_other",
    "decode",
    "other",
];

/// The tasks of the daemon: the values of `cutover_task_failures_total{task}`.
pub const TASKS: [&str; 7] = [
    "discovery",
    "scrape_supervisor",
    "evaluator",
    "state_writer",
    "leader_election",
    "alertmanager_pusher",
    "admin_server",
];

/// The auditor's metrics.
pub struct Metrics {
    registry: Registry,
    ready: IntGaugeVec,
    state: IntGaugeVec,
    reason: IntGaugeVec,
    state_since: GaugeVec,
    last_use: GaugeVec,
    ready_in: GaugeVec,
    window_seconds: GaugeVec,
    coverage: GaugeVec,
    window_increase: IntGaugeVec,
    regressions: IntCounterVec,
    token_uses: IntCounterVec,
    token_increase: IntGaugeVec,
    apiserver_token_uses: IntCounterVec,
    scrape_success: IntGaugeVec,
    scrape_duration: GaugeVec,
    scrape_errors: IntCounterVec,
    resets: IntCounterVec,
    holes: IntCounterVec,
    targets: IntGauge,
    last_evaluation: Gauge,
    alertmanager_errors: IntCounter,
    clock_steps_back: IntCounter,
    admin_evictions: IntCounter,
    task_failures: IntCounterVec,
    discovery_errors: IntCounterVec,
    discovery_last_success: Gauge,
    state_write_errors: IntCounter,
    state_last_write_success: Gauge,
    state_bytes: IntGauge,
    state_conflicts: IntCounter,
    leader: IntGauge,
    lease_transitions: IntCounter,
    token_secrets: IntGaugeVec,
    attributed_subjects: IntGaugeVec,
    attribution_errors: IntCounterVec,
    history_errors: IntCounterVec,
    history_last_success: Gauge,
    /// Why the last state write failed, while it is the last one.
    state_write_error: Mutex<Option<String>>,
    /// Why a follower's last load of the shared state failed, while it is the last one.
    state_load_error: Mutex<Option<String>>,
    /// The current targets: the only instances with per-instance series.
    current_targets: Mutex<BTreeSet<String>>,
}

/// Why the metrics could not be registered or rendered.
#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

fn opts(name: &str, help: &str) -> Opts {
    Opts::new(name, help)
}

impl Metrics {
    /// Registers every metric; `version` goes into `cutover_build_info`.
    pub fn new(version: &str) -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        macro_rules! reg {
            ($metric:expr) => {{
                let m = $metric;
                registry.register(Box::new(m.clone()))?;
                m
            }};
        }
        let cutover = &["cutover"];
        let m = Metrics {
            ready: reg!(IntGaugeVec::new(
                opts(
                    "cutover_ready",
                    "1 when the cutover's verdict is ready, else 0."
                ),
                cutover
            )?),
            state: reg!(IntGaugeVec::new(
                opts(
                    "cutover_state",
                    "1 for the cutover's current state, 0 for the others."
                ),
                &["cutover", "state"]
            )?),
            reason: reg!(IntGaugeVec::new(
                opts(
                    "cutover_reason",
                    "1 for the reason of the cutover's current verdict, 0 for the others."
                ),
                &["cutover", "reason"]
            )?),
            state_since: reg!(GaugeVec::new(
                opts(
                    "cutover_state_since_timestamp_seconds",
                    "When the cutover's current state began (Unix seconds)."
                ),
                cutover
            )?),
            last_use: reg!(GaugeVec::new(
                opts(
                    "cutover_last_use_timestamp_seconds",
                    "Last time a quiet counter of the cutover was seen increasing (Unix seconds; 0 if never seen)."
                ),
                cutover
            )?),
            ready_in: reg!(GaugeVec::new(
                opts(
                    "cutover_ready_in_seconds",
                    "Time until the cutover turns ready if nothing changes; 0 when ready, +Inf when it cannot without a change."
                ),
                cutover
            )?),
            window_seconds: reg!(GaugeVec::new(
                opts("cutover_window_seconds", "The cutover's configured window."),
                cutover
            )?),
            coverage: reg!(GaugeVec::new(
                opts(
                    "cutover_window_coverage_ratio",
                    "Observed share of the cutover's window on the least-observed apiserver instance."
                ),
                cutover
            )?),
            window_increase: reg!(IntGaugeVec::new(
                opts(
                    "cutover_window_increase",
                    "Increase of the cutover's quiet counters inside its window, all instances."
                ),
                cutover
            )?),
            regressions: reg!(IntCounterVec::new(
                opts(
                    "cutover_regressions_total",
                    "Transitions of the cutover from ready to in_use."
                ),
                cutover
            )?),
            token_uses: reg!(IntCounterVec::new(
                opts(
                    "cutover_token_uses_total",
                    "Token authentications counted by kube-apiserver, summed over instances, stitched across resets."
                ),
                &["kind"]
            )?),
            token_increase: reg!(IntGaugeVec::new(
                opts(
                    "cutover_token_uses_increase",
                    "Exact increase of token authentications over a standard window."
                ),
                &["kind", "window"]
            )?),
            apiserver_token_uses: reg!(IntCounterVec::new(
                opts(
                    "cutover_apiserver_token_uses_total",
                    "Token authentications counted by one kube-apiserver instance, stitched across its resets."
                ),
                &["apiserver", "kind"]
            )?),
            scrape_success: reg!(IntGaugeVec::new(
                opts(
                    "cutover_scrape_success",
                    "1 if the last scrape of the apiserver instance succeeded."
                ),
                &["apiserver"]
            )?),
            scrape_duration: reg!(GaugeVec::new(
                opts(
                    "cutover_scrape_duration_seconds",
                    "Duration of the last scrape of the apiserver instance."
                ),
                &["apiserver"]
            )?),
            scrape_errors: reg!(IntCounterVec::new(
                opts(
                    "cutover_scrape_errors_total",
                    "Failed scrapes of the apiserver instance, by reason."
                ),
                &["apiserver", "reason"]
            )?),
            resets: reg!(IntCounterVec::new(
                opts(
                    "cutover_apiserver_resets_total",
                    "Restarts and counter resets seen on the apiserver instance."
                ),
                &["apiserver"]
            )?),
            holes: reg!(IntCounterVec::new(
                opts(
                    "cutover_coverage_holes_total",
                    "Intervals of the apiserver instance whose increments could not be known."
                ),
                &["apiserver"]
            )?),
            targets: reg!(IntGauge::with_opts(opts(
                "cutover_targets",
                "Apiserver instances currently listed as targets."
            ))?),
            last_evaluation: reg!(Gauge::with_opts(opts(
                "cutover_last_evaluation_timestamp_seconds",
                "When verdicts were last evaluated (Unix seconds)."
            ))?),
            alertmanager_errors: reg!(IntCounter::with_opts(opts(
                "cutover_alertmanager_errors_total",
                "Failed pushes of alerts to Alertmanager."
            ))?),
            clock_steps_back: reg!(IntCounter::with_opts(opts(
                "cutover_clock_steps_back_total",
                "Scrapes whose time was not after the instance's last sample (the wall clock stepped back); they are ordered after it."
            ))?),
            admin_evictions: reg!(IntCounter::with_opts(opts(
                "cutover_admin_connections_evicted_total",
                "Admin server connections closed while waiting for request headers to make room for a new client (all connections taken)."
            ))?),
            task_failures: reg!(IntCounterVec::new(
                opts(
                    "cutover_task_failures_total",
                    "Tasks of the daemon that panicked or ended unexpectedly, by task; the state writer and the Alertmanager pusher are restarted, the others stop the daemon."
                ),
                &["task"]
            )?),
            discovery_errors: reg!(IntCounterVec::new(
                opts(
                    "cutover_discovery_errors_total",
                    "Failed discoveries of the apiserver instances, by reason; the last known instances are kept."
                ),
                &["reason"]
            )?),
            discovery_last_success: reg!(Gauge::with_opts(opts(
                "cutover_discovery_last_success_timestamp_seconds",
                "When the target list was last obtained (Unix seconds; 0 if not yet)."
            ))?),
            state_write_errors: reg!(IntCounter::with_opts(opts(
                "cutover_state_write_errors_total",
                "Failed writes of the state file (the reason is logged); /readyz answers 503 until a write succeeds."
            ))?),
            state_last_write_success: reg!(Gauge::with_opts(opts(
                "cutover_state_last_write_success_timestamp_seconds",
                "When the state file was last written successfully (Unix seconds; 0 if not yet)."
            ))?),
            state_bytes: reg!(IntGauge::with_opts(opts(
                "cutover_state_bytes",
                "Encoded size of the last state written or refused (the ConfigMap backend refuses more than 921600 bytes)."
            ))?),
            state_conflicts: reg!(IntCounter::with_opts(opts(
                "cutover_state_backend_conflicts_total",
                "State ConfigMap writes refused with 409 Conflict (another writer changed it since it was read); the state is read again, never overwritten."
            ))?),
            leader: reg!(IntGauge::with_opts(opts(
                "cutover_leader",
                "1 if this replica leads (scrapes, writes the state, pushes alerts); always 1 without leader election."
            ))?),
            lease_transitions: reg!(IntCounter::with_opts(opts(
                "cutover_lease_transitions_total",
                "Times this replica became the leader or stopped being it."
            ))?),
            token_secrets: reg!(IntGaugeVec::new(
                opts(
                    "cutover_token_secrets",
                    "Token Secrets (type kubernetes.io/service-account-token) by class against the legacy-tokens window, from their last-used and invalid-since labels (attribution.token_secrets)."
                ),
                &["class"]
            )?),
            attributed_subjects: reg!(IntGaugeVec::new(
                opts(
                    "cutover_attributed_subjects",
                    "ServiceAccounts (or Secrets without one) named as using a legacy token inside the cutover's window (attribution)."
                ),
                cutover
            )?),
            attribution_errors: reg!(IntCounterVec::new(
                opts(
                    "cutover_attribution_errors_total",
                    "Attribution listings that failed, by source and reason (attribution is then unavailable; the verdicts are untouched)."
                ),
                &["source", "reason"]
            )?),
            history_errors: reg!(IntCounterVec::new(
                opts(
                    "cutover_history_errors_total",
                    "Failed queries of the Prometheus-compatible history source, by bounded reason (history_unreachable, history_rejected, history_incomplete)."
                ),
                &["reason"]
            )?),
            history_last_success: reg!(Gauge::with_opts(opts(
                "cutover_history_last_success_timestamp_seconds",
                "When a query of the history source last succeeded (Unix seconds; 0 if not yet, or no [history])."
            ))?),
            state_write_error: Mutex::new(None),
            state_load_error: Mutex::new(None),
            current_targets: Mutex::new(BTreeSet::new()),
            registry,
        };
        let build_info = IntGaugeVec::new(
            opts(
                "cutover_build_info",
                "Always 1; labelled with the auditor's version.",
            ),
            &["version"],
        )?;
        m.registry.register(Box::new(build_info.clone()))?;
        build_info.with_label_values(&[version]).set(1);
        for kind in TokenKind::ALL {
            m.token_uses.with_label_values(&[kind.label()]);
        }
        for task in TASKS {
            m.task_failures.with_label_values(&[task]);
        }
        for reason in DISCOVERY_ERROR_REASONS {
            m.discovery_errors.with_label_values(&[reason]);
        }
        for kind in crate::history::HistoryErrorKind::ALL {
            m.history_errors.with_label_values(&[kind.label()]);
        }
        Ok(m)
    }

    /// Declares every cutover with its window, so all series exist from the
    /// start (blind until the first evaluation).
    pub fn declare_cutovers(&self, specs: &[CutoverSpec]) {
        for spec in specs {
            self.window_seconds
                .with_label_values(&[&spec.name])
                .set(spec.window.as_secs_f64());
            self.regressions.with_label_values(&[&spec.name]);
            self.set_state(spec.name.as_str(), State::Blind, Reason::NoTargets);
            self.ready_in
                .with_label_values(&[&spec.name])
                .set(f64::INFINITY);
        }
    }

    fn set_state(&self, cutover: &str, current: State, current_reason: Reason) {
        self.ready
            .with_label_values(&[cutover])
            .set(i64::from(current == State::Ready));
        for state in State::ALL {
            self.state
                .with_label_values(&[cutover, state.label()])
                .set(i64::from(state == current));
        }
        for reason in Reason::ALL {
            self.reason
                .with_label_values(&[cutover, reason.label()])
                .set(i64::from(reason == current_reason));
        }
    }

    /// Publishes one evaluation: every cutover's verdict and the ledger's
    /// totals and increases at `now`.
    pub fn observe_evaluation(
        &self,
        verdicts: &[(&CutoverSpec, &Verdict)],
        ledger: &Ledger,
        now: Timestamp,
    ) {
        for (spec, verdict) in verdicts {
            let name = spec.name.as_str();
            let a = &verdict.assessment;
            self.set_state(name, a.state, a.reason);
            self.state_since
                .with_label_values(&[name])
                .set(verdict.since.as_secs_f64());
            self.last_use
                .with_label_values(&[name])
                .set(a.last_use.map_or(0.0, Timestamp::as_secs_f64));
            self.ready_in
                .with_label_values(&[name])
                .set(a.ready_in.map_or(f64::INFINITY, |d| d.as_secs_f64()));
            self.window_seconds
                .with_label_values(&[name])
                .set(spec.window.as_secs_f64());
            self.coverage.with_label_values(&[name]).set(a.coverage);
            self.window_increase
                .with_label_values(&[name])
                .set(saturating_i64(a.increase));
            raise_to(
                &self.regressions.with_label_values(&[name]),
                verdict.regressions,
            );
        }
        for kind in TokenKind::ALL {
            let family = kind.family();
            raise_to(
                &self.token_uses.with_label_values(&[kind.label()]),
                ledger.family_total(family),
            );
            for window in IncreaseWindow::ALL {
                let increase = ledger.family_increase(family, now - window.duration());
                self.token_increase
                    .with_label_values(&[kind.label(), window.label()])
                    .set(saturating_i64(increase));
            }
        }
        // Only current targets have per-instance series: an instance that left
        // keeps its history in the ledger (and the verdicts), not on the page.
        let targets = self.lock_targets();
        for (name, inst) in ledger.instances().filter(|(n, _)| targets.contains(*n)) {
            for kind in TokenKind::ALL {
                if inst.has_family(kind.family()) || inst.family_total(kind.family()) > 0 {
                    raise_to(
                        &self
                            .apiserver_token_uses
                            .with_label_values(&[name, kind.label()]),
                        inst.family_total(kind.family()),
                    );
                }
            }
            raise_to(&self.resets.with_label_values(&[name]), inst.resets_total());
            raise_to(&self.holes.with_label_values(&[name]), inst.holes_total());
        }
        self.last_evaluation.set(now.as_secs_f64());
    }

    /// Counts a scrape timed before the instance's last sample.
    pub fn observe_clock_step_back(&self) {
        self.clock_steps_back.inc();
    }

    /// Records the end of one scrape of `instance`.
    pub fn observe_scrape(
        &self,
        instance: &str,
        duration: Duration,
        result: Result<(), ScrapeErrorKind>,
    ) {
        self.scrape_duration
            .with_label_values(&[instance])
            .set(duration.as_secs_f64());
        self.scrape_success
            .with_label_values(&[instance])
            .set(i64::from(result.is_ok()));
        if let Err(kind) = result {
            self.scrape_errors
                .with_label_values(&[instance, kind.label()])
                .inc();
        }
    }

    /// Sets the current targets; every per-instance series of an instance
    /// that left is removed at once (and only current targets get new ones).
    pub fn set_targets(&self, previous: &[String], current: &[String]) {
        let mut targets = self.lock_targets();
        let gone = previous
            .iter()
            .chain(targets.iter())
            .filter(|p| !current.contains(p))
            .cloned()
            .collect::<BTreeSet<String>>();
        for gone in &gone {
            for kind in TokenKind::ALL {
                let _ = self
                    .apiserver_token_uses
                    .remove_label_values(&[gone, kind.label()]);
            }
            let _ = self.resets.remove_label_values(&[gone]);
            let _ = self.holes.remove_label_values(&[gone]);
            let _ = self.scrape_success.remove_label_values(&[gone]);
            let _ = self.scrape_duration.remove_label_values(&[gone]);
            for kind in ScrapeErrorKind::ALL {
                let _ = self
                    .scrape_errors
                    .remove_label_values(&[gone, kind.label()]);
            }
        }
        *targets = current.iter().cloned().collect();
        self.targets
            .set(i64::try_from(current.len()).unwrap_or(i64::MAX));
    }

    /// Counts an admin server connection closed to make room.
    pub fn admin_connection_evicted(&self) {
        self.admin_evictions.inc();
    }

    /// Counts a task of the daemon that panicked or ended; `task` is one of
    /// [`TASKS`] (any other name is counted under none, keeping the label
    /// bounded).
    pub fn observe_task_failure(&self, task: &str) {
        if TASKS.contains(&task) {
            self.task_failures.with_label_values(&[task]).inc();
        }
    }

    /// Records a successful discovery (or static target refresh) at `at`.
    pub fn observe_discovery_success(&self, at: Timestamp) {
        self.discovery_last_success.set(at.as_secs_f64());
    }

    /// Records a failed discovery, by its bounded reason (one of
    /// [`DISCOVERY_ERROR_REASONS`]; anything else counts as `other`).
    pub fn observe_discovery_error(&self, reason: &str) {
        let reason = if DISCOVERY_ERROR_REASONS.contains(&reason) {
            reason
        } else {
            "other"
        };
        self.discovery_errors.with_label_values(&[reason]).inc();
    }

    /// Records a state write at `at`: successful (`error` is `None`), or
    /// failed for `error`.
    pub fn observe_state_write(&self, at: Timestamp, error: Option<String>) {
        match &error {
            None => self.state_last_write_success.set(at.as_secs_f64()),
            Some(_) => self.state_write_errors.inc(),
        }
        *self
            .state_write_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = error;
    }

    /// Records the encoded size of a state written (or refused as too large).
    pub fn observe_state_bytes(&self, bytes: usize) {
        self.state_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Counts a state write refused by a conflict.
    pub fn observe_state_conflict(&self) {
        self.state_conflicts.inc();
    }

    /// Records that this replica became the leader (`true`) or stopped
    /// being it, counting the transition.
    pub fn observe_leadership(&self, leader: bool) {
        self.leader.set(i64::from(leader));
        self.lease_transitions.inc();
    }

    /// Sets `cutover_leader` without counting a transition (at start).
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Records a follower's load of the shared state: successful (`None`),
    /// or failed for `error` (shown by `/readyz`).
    pub fn observe_state_load(&self, error: Option<String>) {
        *self
            .state_load_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = error;
    }

    /// Why the last load of the shared state failed, if it did.
    pub fn state_load_error(&self) -> Option<String> {
        self.state_load_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Why the last state write failed, if it did.
    pub fn state_write_error(&self) -> Option<String> {
        self.state_write_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Records a history query (or backfill) at `at`: successful, or failed
    /// for the bounded `error` reason.
    pub fn observe_history(&self, at: Timestamp, error: Option<crate::history::HistoryErrorKind>) {
        match error {
            None => self.history_last_success.set(at.as_secs_f64()),
            Some(kind) => self.history_errors.with_label_values(&[kind.label()]).inc(),
        }
    }

    /// Counts a failed push to Alertmanager.
    pub fn alertmanager_error(&self) {
        self.alertmanager_errors.inc();
    }

    /// The token Secrets per class (`class` label, count).
    pub fn set_token_secrets(&self, counts: &[(&str, u64)]) {
        for (class, n) in counts {
            self.token_secrets
                .with_label_values(&[class])
                .set(saturating_i64(*n));
        }
    }

    /// The subjects attributed under one cutover.
    pub fn set_attributed_subjects(&self, cutover: &str, n: u64) {
        self.attributed_subjects
            .with_label_values(&[cutover])
            .set(saturating_i64(n));
    }

    /// One failed attribution listing (bounded `source` and `reason`).
    pub fn attribution_error(&self, source: &str, reason: &str) {
        self.attribution_errors
            .with_label_values(&[source, reason])
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Result<String, MetricsError> {
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(canonical_infinities(&String::from_utf8_lossy(&out)))
    }

    fn lock_targets(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        // A panic while holding the lock leaves a plain set behind: still usable.
        self.current_targets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The `prometheus` crate prints infinite sample values as Rust does (`inf`);
/// the exposition format spells them `+Inf` and `-Inf`.
fn canonical_infinities(page: &str) -> String {
    let mut out = String::with_capacity(page.len() + 16);
    for line in page.lines() {
        if let Some(head) = line.strip_suffix(" inf") {
            out.push_str(head);
            out.push_str(" +Inf");
        } else if let Some(head) = line.strip_suffix(" -inf") {
            out.push_str(head);
            out.push_str(" -Inf");
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Raises a counter to `total` (counters only go up; a lower total is ignored).
fn raise_to(counter: &IntCounter, total: u64) {
    let current = counter.get();
    if total > current {
        counter.inc_by(total - current);
    }
}

fn saturating_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::ledger::{Observation, SeriesKey};
    use crate::verdict::{self, Tracker};

    fn obs(legacy: u64, start: i64) -> Observation {
        Observation {
            start_time: Some(Timestamp::from_secs(start)),
            values: BTreeMap::from([(SeriesKey::family(TokenKind::Legacy.family()), legacy)]),
        }
    }

    fn line<'a>(page: &'a str, prefix: &str) -> &'a str {
        page.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix} in\n{page}"))
    }

    #[test]
    fn evaluation_publishes_verdicts_and_stitched_totals() {
        let m = Metrics::new("1.2.3").unwrap();
        let specs = CutoverSpec::builtin();
        m.declare_cutovers(&specs);
        let page = m.render().unwrap();
        assert_eq!(
            line(&page, "cutover_ready_in_seconds{cutover=\"legacy-tokens\"}"),
            "cutover_ready_in_seconds{cutover=\"legacy-tokens\"} +Inf"
        );
        assert_eq!(
            line(
                &page,
                "cutover_state{cutover=\"legacy-tokens\",state=\"blind\"}"
            ),
            "cutover_state{cutover=\"legacy-tokens\",state=\"blind\"} 1"
        );
        assert_eq!(
            line(
                &page,
                "cutover_regressions_total{cutover=\"legacy-tokens\"}"
            ),
            "cutover_regressions_total{cutover=\"legacy-tokens\"} 0"
        );
        assert_eq!(
            line(&page, "cutover_build_info"),
            "cutover_build_info{version=\"1.2.3\"} 1"
        );

        m.set_targets(&[], &["10.0.0.1:6443".to_owned()]);
        let mut ledger = Ledger::default();
        ledger.observe("10.0.0.1:6443", Timestamp::from_secs(100), obs(5, 1));
        ledger.observe("10.0.0.1:6443", Timestamp::from_secs(130), obs(7, 1));
        // A restart: the stitched counter keeps counting up.
        ledger.observe("10.0.0.1:6443", Timestamp::from_secs(160), obs(1, 150));
        let now = Timestamp::from_secs(160);
        let mut tracker = Tracker::default();
        let a = verdict::assess(&specs[0], &ledger, now);
        tracker.update(&specs[0].name, &a, now);
        let v = tracker.verdict(&specs[0].name, a, now);
        m.observe_evaluation(&[(&specs[0], &v)], &ledger, now);
        let page = m.render().unwrap();
        assert_eq!(
            line(&page, "cutover_token_uses_total{kind=\"legacy\"}"),
            "cutover_token_uses_total{kind=\"legacy\"} 8"
        );
        assert_eq!(
            line(
                &page,
                "cutover_apiserver_token_uses_total{apiserver=\"10.0.0.1:6443\",kind=\"legacy\"}"
            ),
            "cutover_apiserver_token_uses_total{apiserver=\"10.0.0.1:6443\",kind=\"legacy\"} 8"
        );
        assert_eq!(
            line(
                &page,
                "cutover_token_uses_increase{kind=\"legacy\",window=\"5m\"}"
            ),
            "cutover_token_uses_increase{kind=\"legacy\",window=\"5m\"} 3"
        );
        assert_eq!(
            line(
                &page,
                "cutover_state{cutover=\"legacy-tokens\",state=\"in_use\"}"
            ),
            "cutover_state{cutover=\"legacy-tokens\",state=\"in_use\"} 1"
        );
        assert_eq!(
            line(
                &page,
                "cutover_last_use_timestamp_seconds{cutover=\"legacy-tokens\"}"
            ),
            "cutover_last_use_timestamp_seconds{cutover=\"legacy-tokens\"} 160"
        );
        assert_eq!(
            line(
                &page,
                "cutover_apiserver_resets_total{apiserver=\"10.0.0.1:6443\"}"
            ),
            "cutover_apiserver_resets_total{apiserver=\"10.0.0.1:6443\"} 1"
        );
        assert_eq!(
            line(&page, "cutover_last_evaluation_timestamp_seconds"),
            "cutover_last_evaluation_timestamp_seconds 160"
        );
    }

    #[test]
    fn scrape_series_of_departed_targets_are_removed() {
        let m = Metrics::new("0").unwrap();
        m.observe_scrape("a:1", Duration::from_millis(250), Ok(()));
        m.observe_scrape(
            "b:1",
            Duration::from_millis(100),
            Err(ScrapeErrorKind::Http401),
        );
        m.set_targets(&[], &["a:1".into(), "b:1".into()]);
        let page = m.render().unwrap();
        assert_eq!(
            line(
                &page,
                "cutover_scrape_errors_total{apiserver=\"b:1\",reason=\"http_401\"}"
            ),
            "cutover_scrape_errors_total{apiserver=\"b:1\",reason=\"http_401\"} 1"
        );
        assert_eq!(
            line(&page, "cutover_scrape_success{apiserver=\"a:1\"}"),
            "cutover_scrape_success{apiserver=\"a:1\"} 1"
        );
        assert_eq!(line(&page, "cutover_targets"), "cutover_targets 2");
        m.set_targets(&["a:1".into(), "b:1".into()], &["a:1".into()]);
        let page = m.render().unwrap();
        assert!(!page.contains("b:1"), "{page}");
        assert_eq!(line(&page, "cutover_targets"), "cutover_targets 1");
    }

    #[test]
    fn every_series_of_an_instance_goes_when_it_leaves_the_targets() {
        let m = Metrics::new("0").unwrap();
        let specs = CutoverSpec::builtin();
        let (a, b) = ("10.0.0.1:6443", "10.0.0.2:6443");
        let targets = [a.to_owned(), b.to_owned()];
        m.set_targets(&[], &targets);
        let mut ledger = Ledger::default();
        for (i, t) in [100, 130, 160].into_iter().enumerate() {
            let at = Timestamp::from_secs(t);
            ledger.observe(a, at, obs(5 + i as u64, 1));
            // b restarts at 150: a reset and a hole.
            ledger.observe(b, at, obs(3, if t < 150 { 1 } else { 150 }));
        }
        let now = Timestamp::from_secs(160);
        let evaluate = |ledger: &Ledger| {
            let a = verdict::assess(&specs[0], ledger, now);
            let mut tracker = Tracker::default();
            tracker.update(&specs[0].name, &a, now);
            let v = tracker.verdict(&specs[0].name, a, now);
            m.observe_evaluation(&[(&specs[0], &v)], ledger, now);
            m.render().unwrap()
        };
        m.observe_scrape(b, Duration::from_millis(5), Ok(()));
        let page = evaluate(&ledger);
        for prefix in [
            "cutover_apiserver_token_uses_total{apiserver=\"10.0.0.2:6443\",kind=\"legacy\"}",
            "cutover_apiserver_resets_total{apiserver=\"10.0.0.2:6443\"}",
            "cutover_coverage_holes_total{apiserver=\"10.0.0.2:6443\"}",
            "cutover_scrape_success{apiserver=\"10.0.0.2:6443\"}",
        ] {
            line(&page, prefix);
        }

        // b leaves: the ledger keeps it for the window, the page does not,
        // neither at once nor at the next evaluation.
        m.set_targets(&targets, &[a.to_owned()]);
        ledger.remove(b, now);
        assert!(ledger.instance(b).is_some(), "the ledger keeps its history");
        assert!(!m.render().unwrap().contains(b), "removed on leaving");
        let page = evaluate(&ledger);
        assert!(!page.contains(b), "{page}");
        line(
            &page,
            "cutover_apiserver_token_uses_total{apiserver=\"10.0.0.1:6443\",kind=\"legacy\"}",
        );
        // The sums keep the uses of the instance that left (a: 7; b: 3 + 3).
        assert_eq!(
            line(&page, "cutover_token_uses_total{kind=\"legacy\"}"),
            "cutover_token_uses_total{kind=\"legacy\"} 13"
        );

        // An instance of the ledger that is no target (resumed from the
        // state file, not listed) gets no series either.
        m.set_targets(&[a.to_owned()], &[]);
        let page = evaluate(&ledger);
        assert!(!page.contains("apiserver="), "{page}");
    }
}
