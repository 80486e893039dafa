//! The counter ledger: exact increases per apiserver instance and series,
//! with resets and coverage holes, in memory bounded by changes, not scrapes.
//!
//! Every function takes the time as an argument; nothing here reads a clock.
//!
//! Model, per instance:
//! - Each successful scrape is an [`Observation`]: the counter values present
//!   on the page and the process start time.
//! - Two consecutive observations of the same process with no counter going
//!   down give exact increments over `(previous, current]`. A failed scrape in
//!   between changes nothing: counters keep counting.
//! - A new process start time, or any counter going down (`DELETE /metrics`,
//!   an address now served by another process), is a *reset*: the new values
//!   count as increments since the reset, and the part of the interval where
//!   increments may have been lost is a *hole*.
//! - Increments are stored only when non-zero, with their interval; old ones
//!   are merged when a series holds many, so memory follows the number of
//!   changes and stays bounded for busy counters.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::exposition::Page;
use crate::time::Timestamp;
use crate::window::{self, Interval};

/// A series: its family name, then its label set as it appeared on the page
/// (`family` alone when unlabelled, as all upstream token counters are).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SeriesKey(String);

impl SeriesKey {
    /// The key of an unlabelled series.
    pub fn family(family: &str) -> SeriesKey {
        SeriesKey(family.to_owned())
    }

    /// The key of a labelled series; labels are sorted so that the key does
    /// not depend on their order on the page.
    pub fn with_labels(family: &str, labels: &[(String, String)]) -> SeriesKey {
        if labels.is_empty() {
            return SeriesKey::family(family);
        }
        let mut sorted: Vec<&(String, String)> = labels.iter().collect();
        sorted.sort();
        let body: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        SeriesKey(format!("{family}{{{}}}", body.join(",")))
    }

    /// The family this series belongs to.
    pub fn family_name(&self) -> &str {
        self.0.split_once('{').map_or(&self.0, |(family, _)| family)
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What one successful scrape of one instance showed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observation {
    /// The process start time, from `process_start_time_seconds` or the
    /// `Process-Start-Time-Unix` header; `None` when the page had neither.
    pub start_time: Option<Timestamp>,
    /// Counter values by series. A family missing here is *absent* (unknown).
    pub values: BTreeMap<SeriesKey, u64>,
}

impl Observation {
    /// The observation of a scraped page: the series of the `counters`
    /// families present on it, and the process start time from the page's
    /// gauge, else from the `Process-Start-Time-Unix` header.
    pub fn from_page(
        page: &Page,
        counters: &[&str],
        header_start_time: Option<Timestamp>,
    ) -> Result<Observation, ObservationError> {
        let mut values = BTreeMap::new();
        for &family in counters {
            for sample in page.series(family) {
                let v = sample.value;
                // Counters are whole numbers; f64 holds them exactly up to 2^53.
                if !(v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < 9.0e15) {
                    return Err(ObservationError::NotACounter {
                        family: family.to_owned(),
                        value: v,
                    });
                }
                values.insert(SeriesKey::with_labels(family, &sample.labels), v as u64);
            }
        }
        let start_time = page
            .process_start_time()
            .and_then(Timestamp::from_secs_f64)
            .or(header_start_time);
        Ok(Observation { start_time, values })
    }
}

/// Why a page could not become an observation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ObservationError {
    /// A counter's value is not a non-negative whole number.
    #[error(
        "{family} has value {value}, which is not a counter value (a non-negative whole number)"
    )]
    NotACounter {
        /// The family.
        family: String,
        /// The value found.
        value: f64,
    },
}

/// Increments of one series over one interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Increment {
    /// When the increments happened: somewhere in `(from, to]`.
    pub during: Interval,
    /// How many.
    pub amount: u64,
}

/// Why an observation was a reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetCause {
    /// The process start time changed: the apiserver restarted.
    Restart,
    /// A counter went down with the same start time (`DELETE /metrics`, or
    /// another process answering at the same address).
    CounterDecrease,
}

/// Why the ledger recorded a hole (kept beside the merged holes, for the
/// timeline; state files written before it have none).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoleCause {
    /// The apiserver restarted: uses before its start were lost.
    Restart,
    /// A counter went down with the same start time (`DELETE /metrics`).
    CounterDecrease,
    /// The address answered as a process seen before (mixed instances).
    MixedInstances,
    /// A whole family appeared with uses since an unknown time.
    FamilyAppeared,
    /// Listed as a target before its process started, unobserved until then.
    ListedBeforeStart,
}

/// How many hole causes an instance remembers (newest last).
const REMEMBERED_HOLE_CAUSES: usize = 64;

/// What the ledger made of one observation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObserveOutcome {
    /// Set when the observation revealed a reset.
    pub reset: Option<ResetCause>,
    /// The interval whose increments may have been lost, if any.
    pub hole: Option<Interval>,
    /// Increments recorded by this observation, per series (non-zero only).
    pub increments: Vec<(SeriesKey, u64)>,
    /// Series that the last sample of the same process had and this page
    /// lacks: the page is incomplete and was not recorded. The time since the
    /// last complete sample stays unobserved until a complete page proves
    /// continuity (and its increase is then counted).
    pub incomplete: Vec<SeriesKey>,
    /// Set when the sample's time was not after the instance's last sample
    /// (the wall clock stepped back): by how much. The sample was recorded
    /// just after the last one, so evidence keeps flowing in sample order.
    pub clock_skew: Option<Duration>,
    /// Set when the process identity flapped back to a start time already
    /// seen: the address mixes instances (a Service address).
    pub mixed: bool,
}

/// Bounds on what the ledger keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Increments and holes older than this are dropped: the longest window.
    pub horizon: Duration,
    /// Increments newer than this are never merged, so short windows stay exact.
    pub exact_recent: Duration,
    /// Per series, more increments than this trigger merging of older ones:
    /// first into aligned buckets coarser with age ([`MERGE_TIERS`]), then,
    /// if that is not enough, coarser still, down to 3/4 of this.
    pub max_increments: usize,
}

impl Default for Retention {
    fn default() -> Retention {
        Retention {
            horizon: Duration::from_secs(8 * 86_400),
            // The default coverage tolerance: older increments of a busy
            // series may be merged.
            exact_recent: Duration::from_secs(300),
            max_increments: 160,
        }
    }
}

/// How coarse merged increments of a busy series become with age: an
/// increment older than `exact_recent` and ending less than the first value
/// ago is merged into an aligned bucket of the second. Buckets are aligned on
/// multiples of their width since the epoch, so every series of every
/// instance is cut at the same times, and each width divides the next. A busy
/// series over 7 days keeps about 12 + 23 + 28 merged records besides its
/// exact recent ones.
pub const MERGE_TIERS: [(Duration, Duration); 3] = [
    (Duration::from_secs(3_600), Duration::from_secs(300)),
    (Duration::from_secs(86_400), Duration::from_secs(3_600)),
    (Duration::MAX, Duration::from_secs(6 * 3_600)),
];

/// All instances' ledgers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    /// When this ledger first observed any instance. Instances whose process
    /// started after it are covered from their start: they did not exist before.
    observing_since: Option<Timestamp>,
    instances: BTreeMap<String, InstanceLedger>,
    /// Instances listed as targets that no scrape has succeeded on yet: their
    /// time since the listing is unobserved.
    #[serde(default)]
    listed: BTreeMap<String, Listed>,
    /// Stitched totals of instances already pruned, so that summed totals
    /// never go down.
    retired_totals: BTreeMap<SeriesKey, u64>,
    retention: Retention,
}

/// An instance listed as a target and never scraped successfully.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listed {
    /// When it was (last) listed.
    pub since: Timestamp,
    /// When it left the target set, if it did.
    pub gone_at: Option<Timestamp>,
}

impl Listed {
    /// Its unobserved part of `(start, now]`: all of its listed time.
    pub fn unobserved(&self, start: Timestamp, now: Timestamp) -> Vec<Interval> {
        let i = Interval::new(self.since, self.gone_at.unwrap_or(now).min(now)).clip(start, now);
        if i.is_empty() { Vec::new() } else { vec![i] }
    }
}

/// How many distinct process start times an instance remembers, to tell a
/// restart from an address that mixes instances.
const REMEMBERED_STARTS: usize = 8;

/// One apiserver instance's ledger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceLedger {
    /// Known not to have existed before this time (its process started while
    /// the ledger was observing); `None` when it may have existed unobserved.
    exists_from: Option<Timestamp>,
    /// Start of the observed span.
    covered_from: Timestamp,
    last: LastSample,
    /// When the instance left the target set, if it did.
    gone_at: Option<Timestamp>,
    #[serde(with = "compact_increments")]
    increments: BTreeMap<SeriesKey, VecDeque<Increment>>,
    /// Series that went over `max_increments` and are merged into tiers at
    /// every compaction since, so that they stay near their floor instead of
    /// growing back to the threshold (until they have no increment left).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    busy: BTreeSet<SeriesKey>,
    holes: VecDeque<Interval>,
    totals: BTreeMap<SeriesKey, u64>,
    resets_total: u64,
    holes_total: u64,
    /// When every counter of the current process was known to be zero
    /// (its start, or a reset) inside the observed span; `None` when its
    /// counters were first seen as a baseline.
    #[serde(default)]
    zero_at: Option<Timestamp>,
    /// Process start times seen at this address, newest last (bounded).
    #[serde(default)]
    starts_seen: VecDeque<Timestamp>,
    /// When samples showed the address mixing instances (bounded, newest last).
    #[serde(default)]
    mixed_at: VecDeque<Timestamp>,
    /// Why each hole was recorded, unmerged (bounded, newest last).
    #[serde(default)]
    hole_causes: VecDeque<(Interval, HoleCause)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct LastSample {
    at: Timestamp,
    start_time: Option<Timestamp>,
    values: BTreeMap<SeriesKey, u64>,
}

/// Start times closer than this are the same process: the two sources (page
/// gauge in float seconds, header in whole seconds) round differently.
const SAME_PROCESS_SLACK_MS: i64 = 1_000;

fn same_process(a: Timestamp, b: Timestamp) -> bool {
    (a.0 - b.0).abs() <= SAME_PROCESS_SLACK_MS
}

impl Ledger {
    /// An empty ledger with the given retention.
    pub fn new(retention: Retention) -> Ledger {
        Ledger {
            retention,
            ..Ledger::default()
        }
    }

    /// When this ledger first observed (or listed) any instance.
    pub fn observing_since(&self) -> Option<Timestamp> {
        self.observing_since
    }

    /// The retention it was built with.
    pub fn retention(&self) -> Retention {
        self.retention
    }

    /// Replaces the retention: it always follows the current configuration,
    /// never the one a state file was written with.
    pub fn set_retention(&mut self, retention: Retention) {
        self.retention = retention;
    }

    /// Records that `instance` is a target as of `at`. An instance never
    /// scraped successfully is unobserved from then until a good scrape; an
    /// instance that had left and is listed again is required again, and its
    /// next sample decides whether its counters were continuous.
    pub fn list(&mut self, instance: &str, at: Timestamp) {
        self.observing_since.get_or_insert(at);
        if let Some(ledger) = self.instances.get_mut(instance) {
            ledger.gone_at = None;
            return;
        }
        let listed = self.listed.entry(instance.to_owned()).or_insert(Listed {
            since: at,
            gone_at: None,
        });
        listed.gone_at = None;
    }

    /// Instances listed and never scraped successfully.
    pub fn listed_unscraped(&self) -> impl Iterator<Item = (&str, &Listed)> {
        self.listed.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Records a successful scrape of `instance` at `at`.
    pub fn observe(&mut self, instance: &str, at: Timestamp, obs: Observation) -> ObserveOutcome {
        let since = *self.observing_since.get_or_insert(at);
        let retention = self.retention;
        let outcome = match self.instances.get_mut(instance) {
            Some(ledger) => ledger.observe(at, obs),
            None => {
                let listed = self.listed.remove(instance).map(|l| l.since);
                let (ledger, outcome) = InstanceLedger::first(since, listed, at, obs);
                self.instances.insert(instance.to_owned(), ledger);
                outcome
            }
        };
        if let Some(ledger) = self.instances.get_mut(instance) {
            ledger.compact(at, retention);
        }
        outcome
    }

    /// Records that `instance` left the target set at `at`. The time since its
    /// last sample stays unobserved; if it comes back, the next sample decides
    /// whether its counters were continuous.
    pub fn remove(&mut self, instance: &str, at: Timestamp) {
        if let Some(listed) = self.listed.get_mut(instance) {
            listed.gone_at.get_or_insert(at.max(listed.since));
        }
        if let Some(ledger) = self.instances.get_mut(instance)
            && ledger.gone_at.is_none()
        {
            ledger.gone_at = Some(at.max(ledger.last.at));
            if ledger.gone_at > Some(ledger.last.at) {
                ledger.holes_total += 1;
            }
        }
    }

    /// Marks `hole` as unobserved for `instance` and counts it as a hole,
    /// even where its counters were continuous: history whose samples of
    /// the instance have a gap longer than their own spacing allows.
    pub fn add_hole(&mut self, instance: &str, hole: Interval) {
        if let Some(ledger) = self.instances.get_mut(instance)
            && !hole.is_empty()
        {
            ledger.add_hole(hole);
            ledger.holes_total += 1;
        }
    }

    /// Drops what is older than the retention horizon, including instances
    /// gone for longer than it (their totals are kept in the stitched sums).
    pub fn prune(&mut self, now: Timestamp) {
        let horizon = now - self.retention.horizon;
        let retention = self.retention;
        let mut retired = Vec::new();
        for (name, ledger) in &mut self.instances {
            ledger.compact(now, retention);
            if ledger.gone_at.is_some_and(|gone| gone < horizon) {
                retired.push(name.clone());
            }
        }
        for name in retired {
            if let Some(ledger) = self.instances.remove(&name) {
                for (key, total) in ledger.totals {
                    *self.retired_totals.entry(key).or_default() += total;
                }
            }
        }
        self.listed
            .retain(|_, l| l.gone_at.is_none_or(|gone| gone >= horizon));
    }

    /// Every instance, by name.
    pub fn instances(&self) -> impl Iterator<Item = (&str, &InstanceLedger)> {
        self.instances.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// One instance.
    pub fn instance(&self, name: &str) -> Option<&InstanceLedger> {
        self.instances.get(name)
    }

    /// The stitched total of a family summed over all instances, pruned ones
    /// included: it never goes down when an apiserver restarts.
    pub fn family_total(&self, family: &str) -> u64 {
        let live: u64 = self
            .instances
            .values()
            .map(|l| l.family_total(family))
            .sum();
        let retired: u64 = self
            .retired_totals
            .iter()
            .filter(|(k, _)| k.family_name() == family)
            .map(|(_, v)| v)
            .sum();
        live + retired
    }

    /// Increase of a family over `(since, now]`, summed over instances.
    pub fn family_increase(&self, family: &str, since: Timestamp) -> u64 {
        self.instances
            .values()
            .map(|l| l.increase(family, since))
            .sum()
    }

    /// Increase of a family counted only from increments wholly after
    /// `since`, summed over instances (see [`InstanceLedger::increase_inside`]).
    pub fn family_increase_inside(&self, family: &str, since: Timestamp) -> u64 {
        self.instances
            .values()
            .map(|l| l.increase_inside(family, since))
            .sum()
    }
}

impl InstanceLedger {
    fn first(
        observing_since: Timestamp,
        listed: Option<Timestamp>,
        at: Timestamp,
        obs: Observation,
    ) -> (InstanceLedger, ObserveOutcome) {
        // A process that started after the ledger began observing did not
        // exist before: its counters count everything since its start, so it
        // is covered from then. Otherwise its values are only a baseline.
        let started_while_observing = obs
            .start_time
            .filter(|&start| start >= observing_since && start <= at);
        // An instance listed before its process started was a target with
        // nobody observing it from the listing to the start: a hole.
        let (exists_from, pre_hole) = match (started_while_observing, listed) {
            (Some(start), Some(listed)) if start > listed => {
                (Some(listed), Some(Interval::new(listed, start)))
            }
            (started, _) => (started, None),
        };
        let mut ledger = InstanceLedger {
            exists_from,
            covered_from: started_while_observing.unwrap_or(at),
            last: LastSample {
                at,
                start_time: obs.start_time,
                values: BTreeMap::new(),
            },
            gone_at: None,
            increments: BTreeMap::new(),
            busy: BTreeSet::new(),
            holes: VecDeque::new(),
            // Counted from its start, its values are increments (added by
            // `record`); otherwise they are the baseline of its totals.
            totals: if started_while_observing.is_some() {
                BTreeMap::new()
            } else {
                obs.values.clone()
            },
            resets_total: 0,
            holes_total: 0,
            zero_at: started_while_observing,
            starts_seen: obs.start_time.into_iter().collect(),
            mixed_at: VecDeque::new(),
            hole_causes: VecDeque::new(),
        };
        let mut outcome = ObserveOutcome::default();
        if let Some(hole) = pre_hole {
            ledger.add_hole(hole);
            ledger.note_hole(hole, HoleCause::ListedBeforeStart);
            outcome.hole = Some(hole);
        }
        if let Some(start) = started_while_observing {
            for (key, &value) in &obs.values {
                ledger.record(key, Interval::new(start, at), value, &mut outcome);
            }
        }
        ledger.last.values = obs.values;
        (ledger, outcome)
    }

    fn observe(&mut self, at: Timestamp, obs: Observation) -> ObserveOutcome {
        let mut outcome = ObserveOutcome::default();
        let prev_at = self.last.at;
        // Samples are ordered by the ledger, not by a wall clock that may step
        // back: a sample not after the last one is taken as just after it.
        let at = if at <= prev_at {
            if at < prev_at {
                outcome.clock_skew = Some(prev_at.since(at));
            }
            prev_at + Duration::from_millis(1)
        } else {
            at
        };
        let restarted = match (self.last.start_time, obs.start_time) {
            (Some(old), Some(new)) => !same_process(old, new),
            _ => false,
        };
        if !restarted {
            // A page of the same process that lacks series it had before is
            // incomplete (an empty body, a cut page, a registry hiccup): it
            // proves nothing, so it is not recorded. The next complete page
            // counts the increase across the gap, or reveals a reset.
            outcome.incomplete = self
                .last
                .values
                .keys()
                .filter(|key| !obs.values.contains_key(*key))
                .cloned()
                .collect();
            if !outcome.incomplete.is_empty() {
                return outcome;
            }
        }
        self.gone_at = None;
        let flapped = restarted
            && obs
                .start_time
                .is_some_and(|new| self.starts_seen.iter().any(|&seen| same_process(seen, new)));
        let decreased = obs
            .values
            .iter()
            .any(|(key, &new)| self.last.values.get(key).is_some_and(|&old| new < old));
        if flapped {
            // A process seen before answers again: this address reaches more
            // than one apiserver, so its counters cannot be followed. The
            // interval is unobserved and the new values are only a baseline.
            outcome.mixed = true;
            outcome.hole = Some(Interval::new(prev_at, at));
            self.add_hole(Interval::new(prev_at, at));
            self.note_hole(Interval::new(prev_at, at), HoleCause::MixedInstances);
            self.holes_total += 1;
            self.mixed_at.push_back(at);
            while self.mixed_at.len() > REMEMBERED_STARTS {
                self.mixed_at.pop_front();
            }
            self.zero_at = None;
            for (key, &value) in &obs.values {
                self.totals.entry(key.clone()).or_insert(value);
            }
        } else if restarted || decreased {
            // The reset happened inside (prev_at, at]. With a restart the new
            // start time says when, unless it is implausible (clock skew).
            let reset_at = obs
                .start_time
                .filter(|&s| restarted && s > prev_at && s <= at)
                .unwrap_or(prev_at);
            let hole = if reset_at > prev_at {
                Interval::new(prev_at, reset_at)
            } else {
                Interval::new(prev_at, at)
            };
            self.add_hole(hole);
            self.note_hole(
                hole,
                if restarted {
                    HoleCause::Restart
                } else {
                    HoleCause::CounterDecrease
                },
            );
            self.holes_total += 1;
            self.resets_total += 1;
            outcome.reset = Some(if restarted {
                ResetCause::Restart
            } else {
                ResetCause::CounterDecrease
            });
            outcome.hole = Some(hole);
            if let Some(start) = obs.start_time.filter(|_| restarted) {
                self.starts_seen.push_back(start);
                while self.starts_seen.len() > REMEMBERED_STARTS {
                    self.starts_seen.pop_front();
                }
            }
            self.zero_at = Some(reset_at);
            // Every counter of the process was reset: its value now is what
            // it counted since the reset, a lower bound of the true increase.
            for (key, &value) in &obs.values {
                self.record(key, Interval::new(reset_at, at), value, &mut outcome);
            }
        } else {
            for (key, &value) in &obs.values {
                if let Some(&old) = self.last.values.get(key) {
                    self.record(key, Interval::new(prev_at, at), value - old, &mut outcome);
                } else if let Some(zero) = self.zero_at {
                    // A series new to a process counted from zero: all of
                    // its value is uses since then.
                    self.record(key, Interval::new(zero, at), value, &mut outcome);
                } else if self
                    .last
                    .values
                    .keys()
                    .any(|k| k.family_name() == key.family_name())
                {
                    // A new label set of a family the last page had: it was
                    // created (at zero) since that page.
                    self.record(key, Interval::new(prev_at, at), value, &mut outcome);
                } else {
                    // A whole family the process did not show before, with
                    // its uses since an unknown time: unobserved until now.
                    let hole = Interval::new(self.covered_from, at);
                    self.add_hole(hole);
                    self.note_hole(hole, HoleCause::FamilyAppeared);
                    self.holes_total += 1;
                    outcome.hole = Some(hole);
                    self.totals.entry(key.clone()).or_insert(value);
                }
            }
        }
        self.last = LastSample {
            at,
            start_time: obs.start_time.or(self.last.start_time),
            values: obs.values,
        };
        outcome
    }

    /// Adds an unobserved interval, merged with any it overlaps, so that the
    /// holes stay sorted and disjoint.
    fn add_hole(&mut self, hole: Interval) {
        if hole.is_empty() {
            return;
        }
        let mut merged = hole;
        self.holes.retain(|h| {
            let overlaps = h.from <= merged.to && merged.from <= h.to;
            if overlaps {
                merged = Interval::new(h.from.min(merged.from), h.to.max(merged.to));
            }
            !overlaps
        });
        let at = self.holes.partition_point(|h| h.from < merged.from);
        self.holes.insert(at, merged);
    }

    /// Remembers why `hole` was recorded; forgets causes of holes already
    /// pruned, and the oldest beyond a bound.
    fn note_hole(&mut self, hole: Interval, cause: HoleCause) {
        if hole.is_empty() {
            return;
        }
        let oldest = self.holes.front().map_or(hole.from, |h| h.from);
        self.hole_causes.retain(|(h, _)| h.to >= oldest);
        self.hole_causes.push_back((hole, cause));
        while self.hole_causes.len() > REMEMBERED_HOLE_CAUSES {
            self.hole_causes.pop_front();
        }
    }

    fn record(
        &mut self,
        key: &SeriesKey,
        during: Interval,
        amount: u64,
        outcome: &mut ObserveOutcome,
    ) {
        if amount == 0 {
            return;
        }
        *self.totals.entry(key.clone()).or_default() += amount;
        self.increments
            .entry(key.clone())
            .or_default()
            .push_back(Increment { during, amount });
        outcome.increments.push((key.clone(), amount));
    }

    /// Drops increments and holes older than the horizon and merges old
    /// increments of busy series, keeping recent ones exact.
    fn compact(&mut self, now: Timestamp, retention: Retention) {
        let horizon = now - retention.horizon;
        while self.holes.front().is_some_and(|h| h.to < horizon) {
            self.holes.pop_front();
        }
        let exact_after = now - retention.exact_recent;
        for (key, series) in &mut self.increments {
            while series.front().is_some_and(|i| i.during.to < horizon) {
                series.pop_front();
            }
            if series.len() > retention.max_increments {
                self.busy.insert(key.clone());
            }
            if self.busy.contains(key) {
                merge_into_tiers(series, now, exact_after);
            }
            if series.len() > retention.max_increments {
                merge_old(series, exact_after, retention.max_increments * 3 / 4);
            }
        }
        self.increments.retain(|_, series| !series.is_empty());
        let increments = &self.increments;
        self.busy.retain(|key| increments.contains_key(key));
        while self.mixed_at.front().is_some_and(|&t| t < horizon) {
            self.mixed_at.pop_front();
        }
    }

    /// The latest sample after `since` that showed this address mixing
    /// instances, if any.
    pub fn mixed_after(&self, since: Timestamp) -> Option<Timestamp> {
        self.mixed_at.back().copied().filter(|&t| t > since)
    }

    /// The time of its last successful scrape.
    pub fn last_seen(&self) -> Timestamp {
        self.last.at
    }

    /// When it left the target set, if it did.
    pub fn gone_at(&self) -> Option<Timestamp> {
        self.gone_at
    }

    /// The process start time of its last sample.
    pub fn start_time(&self) -> Option<Timestamp> {
        self.last.start_time
    }

    /// Whether its last sample had any series of `family`.
    pub fn has_family(&self, family: &str) -> bool {
        self.last.values.keys().any(|k| k.family_name() == family)
    }

    /// The stitched total of a family: its first value plus every increment
    /// since, across resets.
    pub fn family_total(&self, family: &str) -> u64 {
        self.totals
            .iter()
            .filter(|(k, _)| k.family_name() == family)
            .map(|(_, v)| v)
            .sum()
    }

    /// Increase of a family over `(since, ..]`: every increment whose interval
    /// ends after `since` (an increment straddling `since` counts whole, so a
    /// use is never missed).
    pub fn increase(&self, family: &str, since: Timestamp) -> u64 {
        self.family_increments(family)
            .filter(|i| i.during.to > since)
            .map(|i| i.amount)
            .sum()
    }

    /// Increase of a family over increments wholly inside `(since, ..]`: the
    /// measure for evidence, which must not be credited with uses that may
    /// have happened before the window (an increment straddling `since`
    /// does not count).
    pub fn increase_inside(&self, family: &str, since: Timestamp) -> u64 {
        self.family_increments(family)
            .filter(|i| i.during.from >= since)
            .map(|i| i.amount)
            .sum()
    }

    /// The end of the latest interval in which `family` increased.
    pub fn last_increase(&self, family: &str) -> Option<Timestamp> {
        self.family_increments(family).map(|i| i.during.to).max()
    }

    /// Resets seen (restarts and counter decreases).
    pub fn resets_total(&self) -> u64 {
        self.resets_total
    }

    /// Intervals whose increments could not be known.
    pub fn holes_total(&self) -> u64 {
        self.holes_total
    }

    /// The unobserved parts of `(start, now]` for this instance: before it was
    /// first covered (unless it did not exist then), its holes, and the time
    /// since its last sample up to `now` or until it left.
    pub fn unobserved(&self, start: Timestamp, now: Timestamp) -> Vec<Interval> {
        let end = self.gone_at.unwrap_or(now).min(now);
        let mut out = Vec::new();
        if self.exists_from.is_none() {
            out.push(Interval::new(start, self.covered_from));
        }
        out.extend(self.holes.iter().copied());
        out.push(Interval::new(self.last.at, end));
        out.into_iter()
            .map(|i| i.clip(start, end))
            .filter(|i| !i.is_empty())
            .collect()
    }

    /// The part of `(start, now]` in which this instance had to be observed:
    /// from when it may have existed until now, or until it left.
    pub fn required(&self, start: Timestamp, now: Timestamp) -> Interval {
        let from = self.exists_from.map_or(start, |e| e.max(start));
        Interval::new(from, self.gone_at.unwrap_or(now).min(now))
    }

    /// How long it has gone unscraped at `now` (zero once it left).
    pub fn unscraped_for(&self, now: Timestamp) -> Duration {
        match self.gone_at {
            Some(_) => Duration::ZERO,
            None => now.since(self.last.at),
        }
    }

    /// Start of its observed span: its first sample, or its process start
    /// when it started while the ledger was observing.
    pub fn covered_from(&self) -> Timestamp {
        self.covered_from
    }

    /// True when it may have existed, unobserved, before its coverage began
    /// (it was already running when first seen).
    pub fn may_predate_coverage(&self) -> bool {
        self.exists_from.is_none()
    }

    /// Its holes: sorted, disjoint, merged where they overlapped.
    pub fn holes(&self) -> impl Iterator<Item = Interval> + '_ {
        self.holes.iter().copied()
    }

    /// The causes of the holes it recorded, unmerged, oldest first (holes
    /// recorded before causes were kept have none).
    pub fn hole_causes(&self) -> impl Iterator<Item = (Interval, HoleCause)> + '_ {
        self.hole_causes.iter().copied()
    }

    /// When it is known not to have existed before (its process started
    /// while the ledger was observing); `None` when it may have.
    pub fn exists_from(&self) -> Option<Timestamp> {
        self.exists_from
    }

    /// The increments of a family it keeps, per series in order.
    pub fn increments(&self, family: &str) -> impl Iterator<Item = &Increment> {
        self.family_increments(family)
    }

    /// How many increment records it keeps (memory follows this).
    pub fn increment_records(&self) -> usize {
        self.increments.values().map(VecDeque::len).sum()
    }

    fn family_increments(&self, family: &str) -> impl Iterator<Item = &Increment> {
        self.increments
            .iter()
            .filter(move |(k, _)| k.family_name() == family)
            .flat_map(|(_, v)| v.iter())
    }
}

/// Merges the increments that ended before `exact_after` into aligned
/// buckets whose width grows with their age ([`MERGE_TIERS`]): adjacent
/// increments ending in the same bucket `(k·w, (k+1)·w]` become one, spanning
/// all of them and ending at the latest, so a window never misses a use (it
/// may count a merged neighbour whole) and evidence counted from increments
/// wholly inside a window may only count less.
fn merge_into_tiers(series: &mut VecDeque<Increment>, now: Timestamp, exact_after: Timestamp) {
    let bucket = |to: Timestamp| -> Option<(i64, i64)> {
        if to >= exact_after {
            return None;
        }
        let age = now.since(to);
        let width = MERGE_TIERS
            .iter()
            .find(|(younger_than, _)| age < *younger_than)
            .map_or(MERGE_TIERS[MERGE_TIERS.len() - 1].1, |(_, w)| *w);
        let w = i64::try_from(width.as_millis()).unwrap_or(i64::MAX).max(1);
        // `(k·w, (k+1)·w]`: an increment ending on a boundary belongs to the
        // bucket that ends there, as a window starting there excludes it.
        Some((w, (to.as_millis() - 1).div_euclid(w)))
    };
    let mut merged: VecDeque<Increment> = VecDeque::with_capacity(series.len());
    let mut last_bucket = None;
    for inc in series.drain(..) {
        let b = bucket(inc.during.to);
        match merged.back_mut() {
            Some(prev) if b.is_some() && b == last_bucket => {
                prev.during = Interval::new(
                    prev.during.from.min(inc.during.from),
                    prev.during.to.max(inc.during.to),
                );
                prev.amount = prev.amount.saturating_add(inc.amount);
            }
            _ => merged.push_back(inc),
        }
        last_bucket = b;
    }
    *series = merged;
}

/// Merges adjacent increments that ended before `exact_after`, coarsening
/// their resolution step by step until at most `target` records remain (or
/// only recent ones are left). A merged increment spans both intervals, so it
/// still ends at the later use: windows never miss a use, they may only count
/// a merged neighbour whole.
fn merge_old(series: &mut VecDeque<Increment>, exact_after: Timestamp, target: usize) {
    let mut span = Duration::from_secs(60);
    while series.len() > target {
        let mut merged: VecDeque<Increment> = VecDeque::with_capacity(series.len());
        for inc in series.drain(..) {
            match merged.back_mut() {
                Some(prev)
                    if inc.during.to < exact_after
                        && Interval::new(prev.during.from, inc.during.to).len() <= span =>
                {
                    prev.during =
                        Interval::new(prev.during.from.min(inc.during.from), inc.during.to);
                    prev.amount += inc.amount;
                }
                _ => merged.push_back(inc),
            }
        }
        *series = merged;
        if span > Duration::from_secs(365 * 86_400) {
            break;
        }
        span *= 2;
    }
}

/// The state file's form of each series' increments: one flat array of
/// integers per series, `[from, to, amount, Δfrom, Δto, amount, …]`, where
/// the first interval is absolute (milliseconds since the epoch), each next
/// `from` is relative to the previous `to` and each `to` to its own `from`
/// (so a run of consecutive scrapes is `0,30000,n`). About a fifth of the size
/// of one JSON object per increment, which is still read: a series written as
/// `[{"during":{"from":…,"to":…},"amount":…}, …]` (format version 1) loads
/// as before.
mod compact_increments {
    use std::collections::{BTreeMap, VecDeque};
    use std::fmt;

    use serde::de::{self, Deserializer, SeqAccess, Visitor};
    use serde::ser::{SerializeMap, SerializeSeq, Serializer};
    use serde::{Deserialize, Serialize};

    use super::{Increment, SeriesKey};
    use crate::time::Timestamp;
    use crate::window::Interval;

    struct Flat<'a>(&'a VecDeque<Increment>);

    impl Serialize for Flat<'_> {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let mut seq = serializer.serialize_seq(Some(self.0.len() * 3))?;
            let mut prev_to: Option<i64> = None;
            for inc in self.0 {
                let (from, to) = (inc.during.from.as_millis(), inc.during.to.as_millis());
                match prev_to {
                    None => seq.serialize_element(&from)?,
                    Some(p) => seq.serialize_element(&from.wrapping_sub(p))?,
                }
                seq.serialize_element(&to.wrapping_sub(from))?;
                seq.serialize_element(&inc.amount)?;
                prev_to = Some(to);
            }
            seq.end()
        }
    }

    pub(super) fn serialize<S: Serializer>(
        map: &BTreeMap<SeriesKey, VecDeque<Increment>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_map(Some(map.len()))?;
        for (key, series) in map {
            out.serialize_entry(key, &Flat(series))?;
        }
        out.end()
    }

    /// One element of a series array: a number of the compact form, or an
    /// increment object of format version 1.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Element {
        Signed(i64),
        Unsigned(u64),
        Object(Increment),
    }

    struct Series(VecDeque<Increment>);

    impl<'de> Deserialize<'de> for Series {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Series, D::Error> {
            deserializer.deserialize_seq(SeriesVisitor)
        }
    }

    struct SeriesVisitor;

    impl<'de> Visitor<'de> for SeriesVisitor {
        type Value = Series;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an array of increments: integers in threes, or increment objects")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Series, A::Error> {
            let mut out = VecDeque::new();
            let mut numbers: Vec<Element> = Vec::with_capacity(3);
            let mut prev_to: Option<i64> = None;
            let mut objects = false;
            while let Some(element) = seq.next_element::<Element>()? {
                match element {
                    Element::Object(inc) if numbers.is_empty() && prev_to.is_none() => {
                        objects = true;
                        out.push_back(inc);
                    }
                    Element::Object(_) => {
                        return Err(de::Error::custom(
                            "an increment object among the integers of a compact series",
                        ));
                    }
                    number if !objects => {
                        numbers.push(number);
                        if numbers.len() == 3 {
                            let amount = match numbers.pop() {
                                Some(Element::Unsigned(a)) => a,
                                Some(Element::Signed(a)) if a >= 0 => a as u64,
                                _ => {
                                    return Err(de::Error::custom(
                                        "an increment amount that is not a non-negative integer",
                                    ));
                                }
                            };
                            let signed = |e: Option<Element>| match e {
                                Some(Element::Signed(v)) => Ok(v),
                                _ => Err(de::Error::custom(
                                    "an increment time that is not a 64-bit signed integer",
                                )),
                            };
                            let length = signed(numbers.pop())?;
                            let start = signed(numbers.pop())?;
                            let from = prev_to.map_or(start, |p| p.wrapping_add(start));
                            let to = from.wrapping_add(length);
                            out.push_back(Increment {
                                during: Interval {
                                    from: Timestamp(from),
                                    to: Timestamp(to),
                                },
                                amount,
                            });
                            prev_to = Some(to);
                        }
                    }
                    _ => {
                        return Err(de::Error::custom(
                            "an integer among the increment objects of a series",
                        ));
                    }
                }
            }
            if !numbers.is_empty() {
                return Err(de::Error::custom(
                    "a compact series whose length is not a multiple of 3",
                ));
            }
            Ok(Series(out))
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<SeriesKey, VecDeque<Increment>>, D::Error> {
        let raw = BTreeMap::<SeriesKey, Series>::deserialize(deserializer)?;
        Ok(raw.into_iter().map(|(k, Series(v))| (k, v)).collect())
    }
}

/// Unobserved time of an instance within `(start, now]`, summed.
pub fn unobserved_time(ledger: &InstanceLedger, start: Timestamp, now: Timestamp) -> Duration {
    window::measure_within(&ledger.unobserved(start, now), start, now)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEGACY: &str = "serviceaccount_legacy_tokens_total";

    fn obs(start: i64, legacy: u64) -> Observation {
        Observation {
            start_time: Some(Timestamp::from_secs(start)),
            values: BTreeMap::from([(SeriesKey::family(LEGACY), legacy)]),
        }
    }

    fn t(s: i64) -> Timestamp {
        Timestamp::from_secs(s)
    }

    #[test]
    fn consecutive_samples_give_exact_increments() {
        let mut l = Ledger::default();
        l.observe("a", t(1000), obs(10, 5));
        let out = l.observe("a", t(1030), obs(10, 8));
        assert_eq!(out.increments, vec![(SeriesKey::family(LEGACY), 3)]);
        assert_eq!(out.reset, None);
        // A gap (failed scrapes) with the same process is not a hole.
        l.observe("a", t(1300), obs(10, 9));
        let a = l.instance("a").unwrap();
        assert_eq!(a.increase(LEGACY, t(1000)), 4);
        assert_eq!(a.increase(LEGACY, t(1030)), 1);
        assert_eq!(a.family_total(LEGACY), 9);
        assert_eq!(a.last_increase(LEGACY), Some(t(1300)));
        assert!(a.holes.is_empty());
        assert_eq!(unobserved_time(a, t(1000), t(1300)), Duration::ZERO);
    }

    #[test]
    fn restart_counts_new_value_and_leaves_a_hole_until_the_start() {
        let mut l = Ledger::default();
        l.observe("a", t(1000), obs(10, 5));
        let out = l.observe("a", t(1060), obs(1040, 2));
        assert_eq!(out.reset, Some(ResetCause::Restart));
        assert_eq!(out.hole, Some(Interval::new(t(1000), t(1040))));
        assert_eq!(out.increments, vec![(SeriesKey::family(LEGACY), 2)]);
        let a = l.instance("a").unwrap();
        assert_eq!(a.family_total(LEGACY), 7, "stitched across the restart");
        assert_eq!(a.resets_total(), 1);
        assert_eq!(
            unobserved_time(a, t(1000), t(1060)),
            Duration::from_secs(40)
        );
    }

    #[test]
    fn decrease_without_restart_is_a_reset_over_the_whole_interval() {
        let mut l = Ledger::default();
        l.observe("a", t(1000), obs(10, 5));
        let out = l.observe("a", t(1030), obs(10, 1));
        assert_eq!(out.reset, Some(ResetCause::CounterDecrease));
        assert_eq!(out.hole, Some(Interval::new(t(1000), t(1030))));
        assert_eq!(l.instance("a").unwrap().increase(LEGACY, t(0)), 1);
    }

    #[test]
    fn instance_started_while_observing_is_covered_from_its_start() {
        let mut l = Ledger::default();
        l.observe("a", t(1000), obs(10, 5));
        let out = l.observe("b", t(2000), obs(1990, 3));
        assert_eq!(out.increments, vec![(SeriesKey::family(LEGACY), 3)]);
        let b = l.instance("b").unwrap();
        assert_eq!(b.required(t(0), t(2000)), Interval::new(t(1990), t(2000)));
        assert_eq!(unobserved_time(b, t(0), t(2000)), Duration::ZERO);
        // An instance that was already running is only a baseline.
        let a = l.instance("a").unwrap();
        assert_eq!(a.increase(LEGACY, t(0)), 0);
        assert_eq!(unobserved_time(a, t(0), t(1000)), Duration::from_secs(1000));
    }

    #[test]
    fn removed_instance_keeps_its_unobserved_tail_and_stops_being_required() {
        let mut l = Ledger::default();
        l.observe("a", t(1000), obs(10, 5));
        l.remove("a", t(1020));
        let a = l.instance("a").unwrap();
        assert_eq!(
            a.unobserved(t(1000), t(5000)),
            vec![Interval::new(t(1000), t(1020))]
        );
        assert_eq!(
            a.required(t(1000), t(5000)),
            Interval::new(t(1000), t(1020))
        );
        assert_eq!(a.holes_total(), 1);
        // Back with the same process: continuity proven, the tail is covered.
        l.observe("a", t(1060), obs(10, 6));
        let a = l.instance("a").unwrap();
        assert_eq!(a.unobserved(t(1000), t(1060)), Vec::<Interval>::new());
        assert_eq!(a.increase(LEGACY, t(1000)), 1);
    }

    #[test]
    fn busy_series_are_merged_but_recent_increments_stay_exact() {
        let mut l = Ledger::default();
        let step = 15;
        let scrapes = 7 * 86_400 / step;
        for i in 0..=scrapes {
            l.observe("a", t(i * step), obs(1, i as u64));
        }
        let now = t(scrapes * step);
        let a = l.instance("a").unwrap();
        assert!(
            a.increment_records() <= Retention::default().max_increments,
            "{} records for {} scrapes",
            a.increment_records(),
            scrapes
        );
        assert_eq!(a.increase(LEGACY, t(0)), scrapes as u64, "nothing lost");
        // The last hour is exact to the scrape.
        assert_eq!(a.increase(LEGACY, now - Duration::from_secs(300)), 20);
        assert_eq!(a.increase(LEGACY, now - Duration::from_secs(3600)), 240);
        assert_eq!(a.last_increase(LEGACY), Some(now));
    }

    #[test]
    fn prune_drops_old_records_and_retires_gone_instances() {
        let mut l = Ledger::default();
        l.observe("a", t(0), obs(1, 0));
        l.observe("a", t(30), obs(1, 4));
        l.remove("a", t(40));
        l.observe("b", t(40), obs(1, 1));
        l.prune(t(40 + 9 * 86_400));
        assert!(l.instance("a").is_none());
        assert_eq!(l.family_total(LEGACY), 5, "retired totals are kept");
    }

    #[test]
    fn observation_from_page_takes_counters_and_the_start_time() {
        use crate::exposition::{Extractor, Watch};
        let page = |text: &str| {
            let mut x = Extractor::new(Watch::default_families());
            x.feed(text.as_bytes()).unwrap();
            x.finish().unwrap()
        };
        let counters = [LEGACY, crate::families::RESET_SENTINEL];
        let p = page(
            "serviceaccount_legacy_tokens_total 3\nprocess_start_time_seconds 1.5e+09\n\
             authentication_token_cache_request_total{status=\"hit\"} 9\n",
        );
        let o = Observation::from_page(&p, &counters, Some(t(7))).unwrap();
        assert_eq!(
            o.start_time,
            Some(t(1_500_000_000)),
            "the page's gauge wins"
        );
        assert_eq!(o.values.len(), 2);
        assert_eq!(o.values[&SeriesKey::family(LEGACY)], 3);
        let o = Observation::from_page(
            &page("serviceaccount_legacy_tokens_total 0\n"),
            &counters,
            Some(t(7)),
        )
        .unwrap();
        assert_eq!(o.start_time, Some(t(7)), "else the header");
        for bad in ["NaN", "-1", "2.5", "+Inf"] {
            let p = page(&format!("serviceaccount_legacy_tokens_total {bad}\n"));
            let err = Observation::from_page(&p, &counters, None).unwrap_err();
            assert!(
                err.to_string()
                    .starts_with("serviceaccount_legacy_tokens_total has value"),
                "{err}"
            );
        }
    }

    #[test]
    fn series_keys_sort_labels() {
        let labels = vec![
            ("b".to_owned(), "2".to_owned()),
            ("a".to_owned(), "x\"y".to_owned()),
        ];
        let key = SeriesKey::with_labels("f", &labels);
        assert_eq!(key.as_str(), r#"f{a="x\"y",b="2"}"#);
        assert_eq!(key.family_name(), "f");
    }
}
