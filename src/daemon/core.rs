//! The decision core of the daemon: the current targets, the ledger, the
//! verdict trackers and the health of each target, behind one lock.
//!
//! Every method takes `now` (and the scrape times) as arguments: the tasks
//! of the shell read the clock and the network, this module only decides.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use tracing::{info, warn};

use crate::config::Config;
use crate::families::{self, TokenKind};
use crate::ledger::{Ledger, Observation};
use crate::metrics::Metrics;
use crate::scrape::{ScrapeError, Scraped};
use crate::state::{self, Snapshot};
use crate::status::{CutoverStatus, KindUses, ScrapeErrorKind, Status, TargetHealth};
use crate::time::Timestamp;
use crate::verdict::{self, Assessment, CutoverSpec, Tracker, Transition};

/// Repeated failures of one target are logged at most this often (simulated time).
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(300);

/// The state the core decides on, behind one lock.
pub(super) struct Core {
    ledger: Ledger,
    trackers: BTreeMap<String, Tracker>,
    health: BTreeMap<String, TargetHealth>,
    /// Current targets, in order.
    targets: Vec<String>,
    /// Per target, when a failure was last logged.
    failure_logged: HashMap<String, Timestamp>,
    /// Whether a clock step back is being reported (logged once per episode).
    clock_skewed: bool,
}

impl Core {
    /// A fresh core, or one resumed from the `snapshot` the state file held.
    /// Retention follows `config`, never the snapshot.
    pub(super) fn start(config: &Config, snapshot: Option<Snapshot>) -> Core {
        let mut core = Core {
            ledger: Ledger::new(retention_for(config)),
            trackers: BTreeMap::new(),
            health: BTreeMap::new(),
            targets: Vec::new(),
            failure_logged: HashMap::new(),
            clock_skewed: false,
        };
        if let Some(snapshot) = snapshot {
            core.ledger = snapshot.ledger;
            // Retention follows the current config, never the file's.
            core.ledger.set_retention(retention_for(config));
            core.trackers = snapshot.trackers;
        }
        core
    }

    pub(super) fn set_targets(&mut self, targets: &[String], now: Timestamp, metrics: &Metrics) {
        // Instances of the ledger that are no target any more: ones that left
        // since the last list, and, after a resume from the state file, ones
        // that left while the daemon was down.
        let gone: Vec<String> = self
            .ledger
            .instances()
            .filter(|(name, l)| l.gone_at().is_none() && !targets.iter().any(|t| t == name))
            .map(|(name, _)| name.to_owned())
            .chain(
                self.ledger
                    .listed_unscraped()
                    .filter(|(name, l)| l.gone_at.is_none() && !targets.iter().any(|t| t == name))
                    .map(|(name, _)| name.to_owned()),
            )
            .chain(
                self.targets
                    .iter()
                    .filter(|t| !targets.contains(t))
                    .cloned(),
            )
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for gone in gone {
            info!(instance = %gone, "apiserver instance left; its unscraped tail is a coverage hole");
            self.ledger.remove(&gone, now);
            self.health.remove(&gone);
            self.failure_logged.remove(&gone);
        }
        // Every target is accounted for from the moment it is listed, scraped
        // or not: until a good scrape it is unobserved.
        for target in targets {
            self.ledger.list(target, now);
        }
        for new in targets.iter().filter(|t| !self.targets.contains(t)) {
            info!(instance = %new, "apiserver instance found");
            self.health.insert(
                new.clone(),
                TargetHealth {
                    instance: new.clone(),
                    ..TargetHealth::default()
                },
            );
        }
        metrics.set_targets(&self.targets, targets);
        self.targets = targets.to_vec();
    }

    pub(super) fn record_scrape(
        &mut self,
        instance: &str,
        started: Timestamp,
        ended: Timestamp,
        took: Duration,
        result: Result<Scraped, ScrapeError>,
        metrics: &Metrics,
    ) {
        let result = result.and_then(|scraped| {
            let obs = Observation::from_page(
                &scraped.page,
                &ledger_families(),
                scraped.header_start_time,
            )
            .map_err(|e| ScrapeError {
                kind: ScrapeErrorKind::Malformed,
                detail: e.to_string(),
            })?;
            Ok((scraped, obs))
        });
        let Some(health) = self.health.get_mut(instance) else {
            // The target left while it was being scraped.
            return;
        };
        health.last_scrape = Some(ended);
        health.last_duration_seconds = Some(took.as_secs_f64());
        let failure = match result {
            Ok((scraped, obs)) => {
                if health.consecutive_failures > 0 {
                    info!(%instance, failures = health.consecutive_failures, "scrapes succeed again");
                }
                let outcome = self.ledger.observe(instance, started, obs);
                if let Some(skew) = outcome.clock_skew {
                    if !self.clock_skewed {
                        warn!(%instance, skew_seconds = skew.as_secs_f64(), at = %started,
                              "the clock stepped back behind the last sample; samples are ordered after it until the clock catches up");
                    }
                    self.clock_skewed = true;
                    metrics.observe_clock_step_back();
                } else if outcome.incomplete.is_empty() {
                    self.clock_skewed = false;
                }
                if outcome.mixed {
                    warn!(%instance, "the process start time flapped back to one seen before: this address reaches more than one apiserver; verdicts are blind (mixed_instances)");
                }
                if let (Some(cause), Some(hole)) = (outcome.reset, outcome.hole) {
                    info!(%instance, ?cause, hole_seconds = hole.len().as_secs_f64(), "counter reset; the interval before it is a coverage hole");
                }
                if !outcome.incomplete.is_empty() {
                    let missing: Vec<&str> =
                        outcome.incomplete.iter().map(|k| k.as_str()).collect();
                    Err(ScrapeError {
                        kind: ScrapeErrorKind::IncompletePage,
                        detail: format!(
                            "the page lacks {} series the last page of the same process had ({}); \
                             not recorded: the time since the last complete page stays unobserved",
                            missing.len(),
                            missing.join(", ")
                        ),
                    })
                } else {
                    health.up = true;
                    health.last_success = Some(ended);
                    health.last_error = None;
                    health.last_error_detail = None;
                    health.consecutive_failures = 0;
                    health.kubernetes_version =
                        scraped.page.kubernetes_version().map(str::to_owned);
                    metrics.observe_scrape(instance, took, Ok(()));
                    Ok(())
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = failure {
            health.up = false;
            health.last_error = Some(e.kind);
            health.last_error_detail = Some(e.detail.clone());
            health.consecutive_failures += 1;
            let last = self.failure_logged.get(instance).copied();
            if health.consecutive_failures == 1
                || last.is_none_or(|t| ended.since(t) >= FAILURE_LOG_EVERY)
            {
                warn!(%instance, reason = %e.kind, detail = %e.detail, failures = health.consecutive_failures, "scrape failed");
                self.failure_logged.insert(instance.to_owned(), ended);
            }
            metrics.observe_scrape(instance, took, Err(e.kind));
        }
    }

    pub(super) fn evaluate(
        &mut self,
        specs: &[CutoverSpec],
        metrics: &Metrics,
        now: Timestamp,
    ) -> (Status, Vec<(Transition, Assessment)>) {
        self.ledger.prune(now);
        let mut transitions = Vec::new();
        let mut verdicts = Vec::new();
        for spec in specs {
            let assessment = verdict::assess(spec, &self.ledger, now);
            let tracker = self.trackers.entry(spec.name.clone()).or_default();
            if let Some(t) = tracker.update(&spec.name, &assessment, now) {
                transitions.push((t, assessment.clone()));
            }
            verdicts.push((spec, tracker.verdict(&spec.name, assessment, now)));
        }
        let pairs: Vec<_> = verdicts.iter().map(|(s, v)| (*s, v)).collect();
        metrics.observe_evaluation(&pairs, &self.ledger, now);
        let status = Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            evaluated_at: Some(now),
            cutovers: verdicts
                .iter()
                .map(|(s, v)| CutoverStatus::new(s, v))
                .collect(),
            targets: self
                .targets
                .iter()
                .filter_map(|t| self.health.get(t).cloned())
                .collect(),
            kinds: TokenKind::ALL
                .iter()
                .map(|k| KindUses {
                    kind: *k,
                    total: self.ledger.family_total(k.family()),
                    increases: crate::metrics::INCREASE_WINDOWS
                        .iter()
                        .map(|(w, d)| {
                            (
                                (*w).to_owned(),
                                self.ledger.family_increase(k.family(), now - *d),
                            )
                        })
                        .collect(),
                })
                .collect(),
        };
        (status, transitions)
    }

    pub(super) fn snapshot(&self, now: Timestamp) -> Snapshot {
        Snapshot {
            version: state::FORMAT_VERSION,
            saved_at: now,
            ledger: self.ledger.clone(),
            trackers: self.trackers.clone(),
        }
    }
}

/// Keeps increments as long as the longest window needs them.
fn retention_for(config: &Config) -> crate::ledger::Retention {
    let longest = config
        .cutovers
        .iter()
        .map(|c| c.window)
        .chain(crate::metrics::INCREASE_WINDOWS.iter().map(|(_, d)| *d))
        .max()
        .unwrap_or_default();
    crate::ledger::Retention {
        horizon: longest + Duration::from_secs(3_600),
        ..crate::ledger::Retention::default()
    }
}

/// Families the ledger keeps: the token counters and the reset sentinel.
fn ledger_families() -> Vec<&'static str> {
    let mut families: Vec<&'static str> = TokenKind::ALL.iter().map(|k| k.family()).collect();
    families.push(families::RESET_SENTINEL);
    families
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(window: &str) -> Config {
        let text = format!(
            r#"
[[targets.static]]
url = "https://127.0.0.1:6443"
ca_file = "/etc/cutover-auditor/ca.crt"
token_file = "/var/run/secrets/token"
[cutovers.legacy-tokens]
window = "{window}"
"#
        );
        Config::parse(&text, |_| None).expect("valid config")
    }

    #[test]
    fn retention_follows_the_config_on_resume_not_the_state_file() {
        let now = Timestamp::from_secs(1_800_000_000);
        // Written by a daemon whose longest window was 7 days.
        let mut core = Core::start(&config("7d"), None);
        let old = core.ledger.retention().horizon;
        assert_eq!(old, Duration::from_secs(7 * 86_400 + 3_600));
        core.ledger.list("127.0.0.1:6443", now);
        let snapshot = core.snapshot(now);
        // Restarted with a 14-day window: evidence for 14 days is kept.
        let core = Core::start(&config("14d"), Some(snapshot));
        assert_eq!(
            core.ledger.retention().horizon,
            Duration::from_secs(14 * 86_400 + 3_600)
        );
        assert_eq!(core.ledger.listed_unscraped().count(), 1);
    }
}
