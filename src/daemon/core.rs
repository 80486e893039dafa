//! The decision core of the daemon: the current targets, the ledger, the
//! verdict trackers and the health of each target, behind one lock.
//!
//! Every method takes `now` (and the scrape times) as arguments: the tasks
//! of the shell read the clock and the network, this module only decides.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use tracing::{info, warn};

use crate::config::Config;
use crate::cutover::Cutover;
use crate::families::{self, TokenKind};
use crate::ledger::{Ledger, Observation};
use crate::metrics::Metrics;
use crate::scrape::{ScrapeError, Scraped};
use crate::state::{self, Snapshot};
use crate::status::{CutoverStatus, KindUses, ScrapeErrorKind, Status, TargetHealth};
use crate::time::Timestamp;
use crate::timeline;
use crate::verdict::{self, Assessment, CutoverSpec, Tracker, Transition};
use crate::window::IncreaseWindow;

/// Repeated failures of one target are logged at most this often (simulated time).
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(300);

/// The state the core decides on, behind one lock.
pub(crate) struct Core {
    ledger: Ledger,
    trackers: BTreeMap<Cutover, Tracker>,
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
    pub(crate) fn start(config: &Config, snapshot: Option<Snapshot>) -> Core {
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

    /// Resumes the ledger and the trackers from `snapshot` (nothing: from
    /// empty ones) read again from the shared state, keeping the targets
    /// and their health (leader election: on becoming leader, and on a
    /// follower).
    pub(super) fn resume(&mut self, config: &Config, snapshot: Option<Snapshot>) {
        let fresh = Core::start(config, snapshot);
        self.ledger = fresh.ledger;
        self.trackers = fresh.trackers;
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

    pub(crate) fn evaluate(
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
                .map(|(s, v)| {
                    let ready_in = v.assessment.ready_in;
                    CutoverStatus::new(s, v).with_timeline(timeline::build(
                        s,
                        &self.ledger,
                        now,
                        ready_in,
                    ))
                })
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
                    increases: IncreaseWindow::ALL
                        .iter()
                        .map(|w| {
                            (
                                w.label().to_owned(),
                                self.ledger.family_increase(k.family(), now - w.duration()),
                            )
                        })
                        .collect(),
                })
                .collect(),
            attribution: None,
            history: None,
        };
        (status, transitions)
    }

    /// The ledger, for history to backfill or feed (`history_feed.rs`).
    pub(super) fn ledger_mut(&mut self) -> &mut Ledger {
        &mut self.ledger
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
pub(super) fn retention_for(config: &Config) -> crate::ledger::Retention {
    let longest = config
        .cutovers
        .iter()
        .map(|c| c.window)
        .chain(IncreaseWindow::ALL.iter().map(|w| w.duration()))
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
    use crate::exposition::{Extractor, Watch};
    use crate::verdict::{Reason, State};

    const A: &str = "10.0.0.1:6443";
    const B: &str = "10.0.0.2:6443";
    const LEGACY: &str = "serviceaccount_legacy_tokens_total";

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

    /// Seconds after a fixed origin.
    fn t(secs: i64) -> Timestamp {
        Timestamp::from_secs(1_800_000_000 + secs)
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    /// A page of one process with `legacy` uses, and, when `stale` is set,
    /// the stale-token counter too.
    fn page(legacy: u64, stale: bool) -> Result<Scraped, ScrapeError> {
        let mut text = format!(
            "{LEGACY} {legacy}\nserviceaccount_valid_tokens_total 7\n\
             process_start_time_seconds 1.7e+09\n\
             kubernetes_build_info{{git_version=\"v1.30.2\"}} 1\n"
        );
        if stale {
            text.push_str("serviceaccount_stale_tokens_total 0\n");
        }
        let mut x = Extractor::new(Watch::default_families());
        x.feed(text.as_bytes()).expect("valid page");
        Ok(Scraped {
            page: x.finish().expect("valid page"),
            header_start_time: None,
            gzip: false,
            bytes_received: text.len() as u64,
        })
    }

    /// A core with the targets `list` listed at `t(0)`, and its metrics.
    fn core_with(list: &[&str]) -> (Core, Metrics) {
        let metrics = Metrics::new("test").expect("metrics register");
        let mut core = Core::start(&config("1h"), None);
        core.set_targets(&names(list), t(0), &metrics);
        (core, metrics)
    }

    fn scrape(core: &mut Core, m: &Metrics, at: Timestamp, r: Result<Scraped, ScrapeError>) {
        core.record_scrape(A, at, at, Duration::from_millis(40), r, m);
    }

    fn evaluate(core: &mut Core, m: &Metrics, now: Timestamp) -> (Status, Vec<Transition>) {
        // One cutover keeps the expectations short.
        let mut specs = config("1h").cutovers;
        specs.retain(|s| s.name == "legacy-tokens");
        let (status, transitions) = core.evaluate(&specs, m, now);
        (status, transitions.into_iter().map(|(t, _)| t).collect())
    }

    fn refused() -> Result<Scraped, ScrapeError> {
        Err(ScrapeError::new(
            ScrapeErrorKind::Connect,
            "connection refused",
        ))
    }

    #[test]
    fn a_listed_target_never_scraped_is_named_and_keeps_the_cutover_blind() {
        let (mut core, m) = core_with(&[A]);
        assert_eq!(core.ledger.listed_unscraped().count(), 1);
        let (status, _) = evaluate(&mut core, &m, t(600));
        let c = &status.cutovers[0];
        assert_eq!(
            (c.state, c.reason),
            (State::Blind, Reason::TargetNeverScraped)
        );
        assert_eq!(c.blocking_instances, [A]);
        assert_eq!(status.targets.len(), 1);
        assert!(!status.targets[0].up && status.targets[0].last_scrape.is_none());
    }

    #[test]
    fn the_status_carries_each_cutovers_timeline_with_a_lane_per_target() {
        let (mut core, m) = core_with(&[A, B]);
        scrape(&mut core, &m, t(10), page(3, true));
        scrape(&mut core, &m, t(70), page(5, true));
        let (status, _) = evaluate(&mut core, &m, t(600));
        let timeline = status.cutovers[0].timeline.as_ref().expect("a timeline");
        assert_eq!((timeline.now, timeline.window_start), (t(600), t(-3_000)));
        let lanes: Vec<&str> = timeline.lanes.iter().map(|l| l.instance.as_str()).collect();
        assert_eq!(lanes, [A, B]);
        // A's 2 uses, seen at 70 s; B listed and never scraped.
        assert_eq!(timeline.lanes[0].uses[0].total, 2);
        assert_eq!(
            timeline.lanes[0].uses[0].buckets,
            vec![(timeline.bucket_of(t(70)), 2)]
        );
        assert_eq!(
            timeline.lanes[1].holes[0].causes,
            [crate::timeline::Gap::NeverScraped]
        );
        let json = serde_json::to_value(&status).expect("serializable");
        assert!(json["cutovers"][0]["timeline"]["lanes"].is_array());
    }

    #[test]
    fn a_first_good_scrape_marks_the_target_up_and_starts_its_ledger() {
        let (mut core, m) = core_with(&[A]);
        scrape(&mut core, &m, t(10), page(3, true));
        let h = &core.health[A];
        assert!(h.up);
        assert_eq!(h.last_success, Some(t(10)));
        assert_eq!(h.kubernetes_version.as_deref(), Some("v1.30.2"));
        assert_eq!(core.ledger.listed_unscraped().count(), 0);
        assert_eq!(core.ledger.family_total(LEGACY), 3);
    }

    #[test]
    fn failed_scrapes_mark_the_target_down_and_count_until_a_success() {
        let (mut core, m) = core_with(&[A]);
        scrape(&mut core, &m, t(10), refused());
        scrape(&mut core, &m, t(70), refused());
        let h = &core.health[A];
        assert!(!h.up);
        assert_eq!(h.last_error, Some(ScrapeErrorKind::Connect));
        assert_eq!(h.last_error_detail.as_deref(), Some("connection refused"));
        assert_eq!((h.consecutive_failures, h.last_scrape), (2, Some(t(70))));
        scrape(&mut core, &m, t(130), page(3, true));
        let h = &core.health[A];
        assert!(h.up && h.last_error.is_none());
        assert_eq!(h.consecutive_failures, 0);
    }

    #[test]
    fn an_incomplete_page_is_a_failure_and_is_not_recorded() {
        let (mut core, m) = core_with(&[A]);
        scrape(&mut core, &m, t(10), page(3, true));
        // The same process, without a series its last page had.
        scrape(&mut core, &m, t(70), page(9, false));
        let h = &core.health[A];
        assert!(!h.up);
        assert_eq!(h.last_error, Some(ScrapeErrorKind::IncompletePage));
        assert_eq!(h.consecutive_failures, 1);
        assert_eq!(core.ledger.family_total(LEGACY), 3, "not recorded");
        assert_eq!(core.ledger.instance(A).unwrap().last_seen(), t(10));
    }

    #[test]
    fn a_clock_step_back_is_counted_once() {
        let (mut core, m) = core_with(&[A]);
        let steps = |m: &Metrics| {
            let text = m.render().expect("metrics render");
            text.lines()
                .find_map(|l| l.strip_prefix("cutover_clock_steps_back_total "))
                .map(str::to_owned)
        };
        scrape(&mut core, &m, t(60), page(3, true));
        assert_eq!(steps(&m).as_deref(), Some("0"));
        scrape(&mut core, &m, t(30), page(3, true));
        assert!(core.clock_skewed);
        assert!(
            core.health[A].up,
            "the sample is recorded after the last one"
        );
        scrape(&mut core, &m, t(120), page(4, true));
        assert!(
            !core.clock_skewed,
            "the episode ends once the clock caught up"
        );
        assert_eq!(steps(&m).as_deref(), Some("1"));
        assert_eq!(core.ledger.family_total(LEGACY), 4);
    }

    #[test]
    fn a_departing_target_leaves_health_and_its_ledger_is_closed() {
        let (mut core, m) = core_with(&[A, B]);
        scrape(&mut core, &m, t(10), page(3, true));
        core.set_targets(&names(&[B]), t(120), &m);
        assert!(!core.health.contains_key(A));
        assert_eq!(core.ledger.instance(A).unwrap().gone_at(), Some(t(120)));
        // A scrape that was under way when it left records nothing.
        scrape(&mut core, &m, t(125), refused());
        assert!(!core.health.contains_key(A));
        let (status, _) = evaluate(&mut core, &m, t(130));
        let listed: Vec<&str> = status.targets.iter().map(|h| h.instance.as_str()).collect();
        assert_eq!(listed, [B]);
    }

    #[test]
    fn a_departed_target_listed_again_is_a_target_again() {
        let (mut core, m) = core_with(&[A]);
        scrape(&mut core, &m, t(10), refused());
        core.set_targets(&[], t(120), &m);
        core.set_targets(&names(&[A]), t(180), &m);
        let h = &core.health[A];
        assert_eq!(
            (h.up, h.consecutive_failures, h.last_error),
            (false, 0, None)
        );
        // Never scraped successfully: listed again, not gone.
        let listed: Vec<_> = core.ledger.listed_unscraped().collect();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].1.gone_at, None);
    }

    #[test]
    fn a_scraped_target_listed_again_reopens_its_ledger() {
        let (mut core, m) = core_with(&[A]);
        scrape(&mut core, &m, t(10), page(3, true));
        core.set_targets(&[], t(120), &m);
        core.set_targets(&names(&[A]), t(180), &m);
        assert!(core.health.contains_key(A));
        assert_eq!(core.ledger.instance(A).unwrap().gone_at(), None);
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

    #[test]
    fn a_resumed_core_keeps_its_verdicts_and_closes_instances_that_left_meanwhile() {
        let (mut core, m) = core_with(&[A]);
        scrape(&mut core, &m, t(10), page(3, true));
        let (_, first) = evaluate(&mut core, &m, t(60));
        assert_eq!(first.len(), 1);
        let snapshot = core.snapshot(t(60));
        assert_eq!(snapshot.saved_at, t(60));
        let mut resumed = Core::start(&config("1h"), Some(snapshot));
        // A left while the daemon was down; B is new.
        resumed.set_targets(&names(&[B]), t(300), &m);
        assert_eq!(resumed.ledger.instance(A).unwrap().gone_at(), Some(t(300)));
        assert_eq!(resumed.ledger.family_total(LEGACY), 3);
        let (status, again) = evaluate(&mut resumed, &m, t(310));
        let c = &status.cutovers[0];
        assert_eq!(c.since, t(60), "the tracker resumed");
        assert!(again.iter().all(|tr| tr.from.is_some()), "{again:?}");
    }

    #[test]
    fn evaluation_emits_each_transition_once_and_reports_the_status() {
        let (mut core, m) = core_with(&[A]);
        let (_, first) = evaluate(&mut core, &m, t(60));
        assert_eq!(first.len(), 1);
        assert_eq!((first[0].from, first[0].to), (None, State::Blind));
        assert_eq!(first[0].cutover, "legacy-tokens");
        let (_, second) = evaluate(&mut core, &m, t(120));
        assert!(second.is_empty(), "{second:?}");
        scrape(&mut core, &m, t(130), page(3, true));
        scrape(&mut core, &m, t(190), page(5, true));
        let (status, third) = evaluate(&mut core, &m, t(200));
        assert_eq!(status.evaluated_at, Some(t(200)));
        assert_eq!(status.cutovers.len(), 1);
        let c = &status.cutovers[0];
        assert_eq!((c.state, c.increase), (State::InUse, 2));
        assert_eq!(third.len(), 1);
        assert_eq!(
            (third[0].from, third[0].to),
            (Some(State::Blind), State::InUse)
        );
        let legacy = status
            .kinds
            .iter()
            .find(|k| k.kind == TokenKind::Legacy)
            .unwrap();
        assert_eq!(legacy.total, 5);
        assert_eq!(status.kinds.len(), TokenKind::ALL.len());
        assert!(status.targets[0].up);
    }
}
