//! From history series to the ledger's observations, exactly as scrapes
//! would feed them. Pure: the series, the chunk's end and the ledger are
//! arguments.
//!
//! Per instance (the value of the instance label), one time chunk at a time:
//! - Every sample time of its `up` series is a scrape attempt by the history
//!   source; `up == 1` is a successful scrape, whose page held the samples of
//!   the watched families with that same time (Prometheus stamps every
//!   sample of one scrape with the scrape's time). Without an `up` series,
//!   every sample time is a successful scrape.
//! - Each successful scrape becomes one [`Observation`] (the counters
//!   present, the process start time), fed to [`Ledger::observe`] in time
//!   order across instances: the ledger finds restarts, counter decreases and
//!   incomplete pages as it does for scrapes. A value that is not a counter
//!   (NaN, ±Inf, a stale marker, a fraction) makes the scrape unusable, as a
//!   malformed page does: nothing is recorded for it.
//! - A gap between two recorded scrapes longer than `max_gap_factor` times
//!   the instance's own sample spacing (the median in the chunk) is a
//!   coverage hole, even when the counters prove continuity.
//! - An instance whose `up` series stops more than that bound before the
//!   chunk's end left the source's targets then ([`Ledger::remove`]); one
//!   without `up` simply stays unobserved from its last sample.
//! - Target labels (those of its `up` or `process_start_time_seconds`
//!   series: `job`, `instance`, `namespace`, ...) are dropped from the
//!   counters' label sets, so series keys are the ones a scrape gives.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::Duration;

use super::parse::Series;
use crate::families::PROCESS_START_TIME;
use crate::ledger::{Ledger, Observation, SeriesKey};
use crate::time::Timestamp;
use crate::window::Interval;

/// The series the history source writes for every scrape attempt.
pub const UP: &str = "up";

/// Feeds chunks of history to a ledger, remembering per instance where the
/// last chunk ended (samples at or before it are skipped, so overlapping
/// chunks never count twice) and its sample spacing.
#[derive(Clone, Debug)]
pub struct Feeder {
    instance_label: String,
    max_gap_factor: u32,
    instances: BTreeMap<String, InstanceState>,
}

#[derive(Clone, Debug, Default)]
struct InstanceState {
    /// The last scrape attempt consumed.
    last_attempt: Option<Timestamp>,
    /// The last scrape recorded by the ledger.
    last_recorded: Option<Timestamp>,
    /// Median spacing of its scrape attempts in the latest chunk with two.
    spacing: Option<Duration>,
    /// Whether the source writes `up` for it.
    has_up: bool,
    /// Whether it was marked as having left.
    left: bool,
}

/// What one chunk gave.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChunkOutcome {
    /// Samples read (all series).
    pub samples: u64,
    /// Scrapes recorded by the ledger.
    pub observations: u64,
    /// Scrapes not recorded: a value that is not a counter, or a page the
    /// ledger found incomplete.
    pub unusable: u64,
    /// Resets the ledger found (restarts, counter decreases).
    pub resets: u64,
    /// Holes: resets, and gaps longer than the bound.
    pub holes: u64,
    /// Series without the instance label (ignored).
    pub without_instance: u64,
    /// Instances seen in the chunk.
    pub instances: BTreeSet<String>,
    /// The first and last scrape time seen.
    pub first_sample: Option<Timestamp>,
    /// See `first_sample`.
    pub last_sample: Option<Timestamp>,
}

impl ChunkOutcome {
    /// Adds another chunk's figures.
    pub fn add(&mut self, other: ChunkOutcome) {
        self.samples += other.samples;
        self.observations += other.observations;
        self.unusable += other.unusable;
        self.resets += other.resets;
        self.holes += other.holes;
        self.without_instance += other.without_instance;
        self.instances.extend(other.instances);
        self.first_sample = match (self.first_sample, other.first_sample) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.last_sample = self.last_sample.max(other.last_sample);
    }
}

/// A counter series as the source has it: family, all labels, samples.
type RawCounter = (String, BTreeMap<String, String>, Vec<(Timestamp, f64)>);

/// One instance's series in a chunk.
#[derive(Default)]
struct InstanceChunk {
    up: Vec<(Timestamp, f64)>,
    has_up: bool,
    start_times: Vec<(Timestamp, f64)>,
    counters: Vec<RawCounter>,
    target_labels: BTreeSet<String>,
}

impl Feeder {
    /// A feeder keyed by `instance_label`, with the gap bound
    /// `max_gap_factor` × an instance's own sample spacing.
    pub fn new(instance_label: &str, max_gap_factor: u32) -> Feeder {
        Feeder {
            instance_label: instance_label.to_owned(),
            max_gap_factor: max_gap_factor.max(2),
            instances: BTreeMap::new(),
        }
    }

    /// Continues after what `ledger` already holds: per instance, samples
    /// at or before its last recorded scrape are skipped (after a resume
    /// from the state file, or a backfill into that ledger by another feeder).
    pub fn resume_after(&mut self, ledger: &Ledger) {
        for (name, l) in ledger.instances() {
            let state = self.instances.entry(name.to_owned()).or_default();
            let last = l.last_seen();
            state.last_attempt = state.last_attempt.max(Some(last));
            state.last_recorded = state.last_recorded.max(Some(last));
        }
    }

    /// The newest scrape time consumed over all instances.
    pub fn last_attempt(&self) -> Option<Timestamp> {
        self.instances.values().filter_map(|s| s.last_attempt).max()
    }

    /// Feeds one chunk: `families` pairs each queried family (`up`,
    /// `process_start_time_seconds`, the counters) with its series. Samples
    /// at or before an instance's last consumed scrape are skipped. Ends
    /// with [`Feeder::close`] at `end`, the chunk's end.
    pub fn feed_chunk(
        &mut self,
        ledger: &mut Ledger,
        families: &[(&str, Vec<Series>)],
        end: Timestamp,
    ) -> ChunkOutcome {
        let mut out = ChunkOutcome::default();
        let mut chunks: BTreeMap<String, InstanceChunk> = BTreeMap::new();
        for (family, list) in families {
            for series in list {
                out.samples += series.samples.len() as u64;
                let Some(instance) = series.labels.get(&self.instance_label) else {
                    out.without_instance += 1;
                    continue;
                };
                let chunk = chunks.entry(instance.clone()).or_default();
                let samples = series.samples.clone();
                match *family {
                    UP => {
                        chunk.has_up = true;
                        chunk.target_labels.extend(series.labels.keys().cloned());
                        chunk.up = merge(std::mem::take(&mut chunk.up), samples);
                    }
                    PROCESS_START_TIME => {
                        chunk.target_labels.extend(series.labels.keys().cloned());
                        chunk.start_times = merge(std::mem::take(&mut chunk.start_times), samples);
                    }
                    _ => {
                        chunk
                            .counters
                            .push(((*family).to_owned(), series.labels.clone(), samples))
                    }
                }
            }
        }
        // Per instance: the series keys its counters have on a page, and the
        // times of its successful scrapes after the last one consumed.
        let mut plans: Vec<Plan> = Vec::new();
        for (instance, mut chunk) in chunks {
            let state = self.instances.entry(instance.clone()).or_default();
            state.has_up |= chunk.has_up;
            if chunk.target_labels.is_empty() {
                chunk.target_labels = common_labels(&chunk.counters);
            }
            chunk.target_labels.insert(self.instance_label.clone());
            chunk.target_labels.insert("__name__".to_owned());
            let after = state.last_attempt;
            let fresh = |t: &Timestamp| after.is_none_or(|a| *t > a);
            let (attempts, successes): (Vec<Timestamp>, Vec<Timestamp>) = if chunk.has_up {
                let attempts: Vec<Timestamp> = chunk.up.iter().map(|s| s.0).filter(fresh).collect();
                let ok = chunk
                    .up
                    .iter()
                    .filter(|s| fresh(&s.0) && s.1 == 1.0)
                    .map(|s| s.0)
                    .collect();
                (attempts, ok)
            } else {
                let all: BTreeSet<Timestamp> = chunk
                    .counters
                    .iter()
                    .flat_map(|c| c.2.iter().map(|s| s.0))
                    .chain(chunk.start_times.iter().map(|s| s.0))
                    .filter(fresh)
                    .collect();
                let all: Vec<Timestamp> = all.into_iter().collect();
                (all.clone(), all)
            };
            if attempts.is_empty() {
                continue;
            }
            out.instances.insert(instance.clone());
            if let Some(spacing) = median_spacing(after, &attempts) {
                state.spacing = Some(spacing);
            }
            if let Some(&last) = attempts.last() {
                state.last_attempt = Some(last);
            }
            if chunk.has_up && successes.is_empty() && state.last_recorded.is_none() {
                // Listed by the source, never scraped successfully yet.
                ledger.list(&instance, attempts[0]);
            }
            out.first_sample = match out.first_sample {
                Some(f) => Some(f.min(attempts[0])),
                None => Some(attempts[0]),
            };
            out.last_sample = out.last_sample.max(attempts.last().copied());
            let counters = chunk
                .counters
                .into_iter()
                .map(|(family, labels, samples)| {
                    let page_labels: Vec<(String, String)> = labels
                        .into_iter()
                        .filter(|(k, _)| !chunk.target_labels.contains(k))
                        .collect();
                    (SeriesKey::with_labels(&family, &page_labels), samples)
                })
                .collect();
            plans.push(Plan {
                instance,
                successes,
                next: 0,
                start_times: chunk.start_times,
                counters,
            });
        }
        // Every instance's scrapes in time order, as the scrape tasks would
        // have delivered them.
        let mut heap: BinaryHeap<Reverse<(Timestamp, usize)>> = plans
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.successes.first().map(|&t| Reverse((t, i))))
            .collect();
        while let Some(Reverse((at, i))) = heap.pop() {
            let plan = &mut plans[i];
            plan.next += 1;
            if let Some(&t) = plan.successes.get(plan.next) {
                heap.push(Reverse((t, i)));
            }
            let Some(obs) = plan.observation(at) else {
                out.unusable += 1;
                continue;
            };
            let state = self.instances.entry(plan.instance.clone()).or_default();
            let outcome = ledger.observe(&plan.instance, at, obs);
            if !outcome.incomplete.is_empty() {
                out.unusable += 1;
                continue;
            }
            state.left = false;
            out.observations += 1;
            if outcome.reset.is_some() {
                out.resets += 1;
            }
            if outcome.hole.is_some() {
                out.holes += 1;
            }
            if let (Some(prev), Some(spacing)) = (state.last_recorded, state.spacing) {
                let bound = spacing * self.max_gap_factor;
                if at.since(prev) > bound && outcome.hole.is_none() {
                    ledger.add_hole(&plan.instance, Interval::new(prev, at));
                    out.holes += 1;
                }
            }
            state.last_recorded = Some(at);
        }
        self.close(ledger, end);
        out
    }

    /// Marks instances whose `up` series stopped more than the gap bound
    /// before `end` as having left at their last scrape attempt.
    pub fn close(&mut self, ledger: &mut Ledger, end: Timestamp) {
        for (instance, state) in &mut self.instances {
            let (Some(last), Some(spacing)) = (state.last_attempt, state.spacing) else {
                continue;
            };
            if state.has_up && !state.left && end.since(last) > spacing * self.max_gap_factor {
                ledger.remove(instance, last);
                state.left = true;
            }
        }
    }
}

/// One instance's successful scrapes in a chunk, consumed in order.
struct Plan {
    instance: String,
    successes: Vec<Timestamp>,
    next: usize,
    start_times: Vec<(Timestamp, f64)>,
    counters: Vec<(SeriesKey, Vec<(Timestamp, f64)>)>,
}

impl Plan {
    /// The page of the scrape at `at`: the counters with a sample at that
    /// time, and the start time. `None` when a value is not a counter value
    /// (the scrape would have failed as malformed).
    fn observation(&self, at: Timestamp) -> Option<Observation> {
        let mut values = BTreeMap::new();
        for (key, samples) in &self.counters {
            if let Some(v) = sample_at(samples, at) {
                if !(v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < 9.0e15) {
                    return None;
                }
                values.insert(key.clone(), v as u64);
            }
        }
        let start_time = sample_at(&self.start_times, at).and_then(Timestamp::from_secs_f64);
        Some(Observation { start_time, values })
    }
}

fn sample_at(samples: &[(Timestamp, f64)], at: Timestamp) -> Option<f64> {
    samples
        .binary_search_by_key(&at, |s| s.0)
        .ok()
        .map(|i| samples[i].1)
}

/// Two sample lists of one instance and family (several series with the
/// same instance label), merged in time order; the later list wins a tie.
fn merge(a: Vec<(Timestamp, f64)>, b: Vec<(Timestamp, f64)>) -> Vec<(Timestamp, f64)> {
    if a.is_empty() {
        return b;
    }
    let mut all: BTreeMap<Timestamp, f64> = a.into_iter().collect();
    all.extend(b);
    all.into_iter().collect()
}

/// Label names every counter series of an instance carries: its target
/// labels, when it has neither `up` nor a start time series.
fn common_labels(counters: &[RawCounter]) -> BTreeSet<String> {
    let mut iter = counters.iter();
    let Some(first) = iter.next() else {
        return BTreeSet::new();
    };
    let mut common: BTreeSet<String> = first.1.keys().cloned().collect();
    for (_, labels, _) in iter {
        common.retain(|k| labels.contains_key(k));
    }
    common
}

/// The median spacing of scrape attempts, counting from the previous
/// chunk's last one; `None` with fewer than two times.
fn median_spacing(previous: Option<Timestamp>, attempts: &[Timestamp]) -> Option<Duration> {
    let times: Vec<Timestamp> = previous
        .into_iter()
        .chain(attempts.iter().copied())
        .collect();
    let mut gaps: Vec<Duration> = times.windows(2).map(|w| w[1].since(w[0])).collect();
    if gaps.is_empty() {
        return None;
    }
    gaps.sort();
    Some(gaps[gaps.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEGACY: &str = "serviceaccount_legacy_tokens_total";

    fn t(s: i64) -> Timestamp {
        Timestamp::from_secs(1_800_000_000 + s)
    }

    fn labels(instance: &str, name: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("__name__".to_owned(), name.to_owned()),
            ("instance".to_owned(), instance.to_owned()),
            ("job".to_owned(), "apiserver".to_owned()),
            ("namespace".to_owned(), "default".to_owned()),
        ])
    }

    fn series(instance: &str, name: &str, samples: &[(i64, f64)]) -> Series {
        Series {
            labels: labels(instance, name),
            samples: samples.iter().map(|&(s, v)| (t(s), v)).collect(),
        }
    }

    /// One instance scraped every 30 s over `[from, to]` with `legacy(s)`
    /// uses and start time `start(s)`, except at `missing` times.
    fn instance(
        name: &str,
        from: i64,
        to: i64,
        legacy: impl Fn(i64) -> f64,
        start: impl Fn(i64) -> f64,
        missing: impl Fn(i64) -> bool,
    ) -> Vec<(&'static str, Series)> {
        let times: Vec<i64> = (from..=to).step_by(30).filter(|s| !missing(*s)).collect();
        let up: Vec<(i64, f64)> = times.iter().map(|&s| (s, 1.0)).collect();
        let l: Vec<(i64, f64)> = times.iter().map(|&s| (s, legacy(s))).collect();
        let st: Vec<(i64, f64)> = times.iter().map(|&s| (s, start(s))).collect();
        vec![
            (UP, series(name, UP, &up)),
            (LEGACY, series(name, LEGACY, &l)),
            (PROCESS_START_TIME, series(name, PROCESS_START_TIME, &st)),
        ]
    }

    fn chunk(parts: Vec<Vec<(&'static str, Series)>>) -> Vec<(&'static str, Vec<Series>)> {
        let mut by: BTreeMap<&'static str, Vec<Series>> = BTreeMap::new();
        for (family, s) in parts.into_iter().flatten() {
            by.entry(family).or_default().push(s);
        }
        by.into_iter().collect()
    }

    fn start_at(s: i64) -> f64 {
        t(s).as_secs_f64()
    }

    #[test]
    fn samples_feed_exact_increments_with_target_labels_dropped() {
        let mut ledger = Ledger::default();
        let mut f = Feeder::new("instance", 3);
        let out = f.feed_chunk(
            &mut ledger,
            &chunk(vec![instance(
                "a:1",
                0,
                600,
                |s| (s / 300) as f64,
                |_| start_at(-100),
                |_| false,
            )]),
            t(600),
        );
        assert_eq!(out.observations, 21);
        assert_eq!((out.resets, out.holes, out.unusable), (0, 0, 0));
        let a = ledger.instance("a:1").unwrap();
        assert_eq!(a.increase(LEGACY, t(0)), 2);
        assert_eq!(a.last_increase(LEGACY), Some(t(600)));
        // The key is the one a scrape gives: no job, instance or namespace.
        assert_eq!(ledger.family_total(LEGACY), 2);
        assert!(a.has_family(LEGACY));
        assert!(a.unobserved(t(0), t(600)).is_empty());
    }

    #[test]
    fn restarts_and_decreases_are_resets_as_in_scrapes() {
        let mut ledger = Ledger::default();
        let mut f = Feeder::new("instance", 3);
        // Restart at 300 s (new start time, counter from zero), then a
        // DELETE /metrics at 600 s (counter down, same start time).
        let legacy = |s: i64| match s {
            ..300 => 10.0,
            300..600 => 2.0,
            _ => 1.0,
        };
        let start = |s: i64| {
            if s < 300 {
                start_at(-1000)
            } else {
                start_at(290)
            }
        };
        let out = f.feed_chunk(
            &mut ledger,
            &chunk(vec![instance("a:1", 0, 900, legacy, start, |_| false)]),
            t(900),
        );
        assert_eq!(out.resets, 2);
        let a = ledger.instance("a:1").unwrap();
        assert_eq!(a.resets_total(), 2);
        // 2 counted from the restart, 1 from the decrease.
        assert_eq!(a.increase(LEGACY, t(0)), 3);
        let holes = a.unobserved(t(0), t(900));
        assert_eq!(
            holes,
            vec![Interval::new(t(270), t(290)), Interval::new(t(570), t(600))]
        );
    }

    #[test]
    fn a_gap_longer_than_the_bound_is_a_hole_and_a_shorter_one_is_not() {
        let mut ledger = Ledger::default();
        let mut f = Feeder::new("instance", 3);
        // Two missed scrapes (a 90 s gap, 3 × 30 s: within the bound), then
        // a 5-minute gap.
        let missing = |s: i64| (120..=150).contains(&s) || (400 < s && s < 700);
        let out = f.feed_chunk(
            &mut ledger,
            &chunk(vec![instance(
                "a:1",
                0,
                900,
                |_| 1.0,
                |_| start_at(-10),
                missing,
            )]),
            t(900),
        );
        assert_eq!(out.holes, 1);
        let a = ledger.instance("a:1").unwrap();
        assert_eq!(
            a.unobserved(t(0), t(900)),
            vec![Interval::new(t(390), t(720))]
        );
        assert_eq!(a.holes_total(), 1);
    }

    #[test]
    fn an_instance_whose_up_stops_leaves_and_one_without_up_stays_unobserved() {
        let mut ledger = Ledger::default();
        let mut f = Feeder::new("instance", 3);
        let mut parts = vec![instance(
            "a:1",
            0,
            300,
            |_| 1.0,
            |_| start_at(-10),
            |_| false,
        )];
        // b has no `up`: only its counter and start time.
        let b = instance("b:1", 0, 300, |_| 1.0, |_| start_at(-10), |_| false);
        parts.push(b.into_iter().filter(|(f, _)| *f != UP).collect());
        f.feed_chunk(&mut ledger, &chunk(parts), t(3600));
        let a = ledger.instance("a:1").unwrap();
        assert_eq!(a.gone_at(), Some(t(300)));
        assert_eq!(a.required(t(0), t(3600)), Interval::new(t(0), t(300)));
        let b = ledger.instance("b:1").unwrap();
        assert_eq!(b.gone_at(), None);
        assert_eq!(
            b.unobserved(t(0), t(3600)),
            vec![Interval::new(t(300), t(3600))]
        );
    }

    #[test]
    fn failed_scrapes_and_values_that_are_no_counters_record_nothing() {
        let mut ledger = Ledger::default();
        let mut f = Feeder::new("instance", 3);
        let mut parts = instance(
            "a:1",
            0,
            120,
            |s| if s == 60 { f64::NAN } else { (s / 30) as f64 },
            |_| start_at(-10),
            |_| false,
        );
        // up == 0 at 90 s: the source's scrape failed (its counter sample
        // there is ignored).
        parts[0].1.samples[3].1 = 0.0;
        let out = f.feed_chunk(&mut ledger, &chunk(vec![parts]), t(120));
        assert_eq!(out.observations, 3);
        assert_eq!(out.unusable, 1);
        let a = ledger.instance("a:1").unwrap();
        assert_eq!(
            a.increase(LEGACY, t(0)),
            4,
            "0 → 4 across the failed scrapes"
        );
        assert!(a.unobserved(t(0), t(120)).is_empty());
    }

    #[test]
    fn a_family_absent_from_history_is_absent_not_zero() {
        let mut ledger = Ledger::default();
        let mut f = Feeder::new("instance", 3);
        // Scraped (up == 1, a start time) but no token counter at all: the
        // families were dropped by relabelling, or the version lacks them.
        let up = series("a:1", UP, &[(0, 1.0), (30, 1.0), (60, 1.0)]);
        let st = series(
            "a:1",
            PROCESS_START_TIME,
            &[(0, start_at(-10)), (30, start_at(-10)), (60, start_at(-10))],
        );
        let out = f.feed_chunk(
            &mut ledger,
            &[
                (UP, vec![up]),
                (PROCESS_START_TIME, vec![st]),
                (LEGACY, vec![]),
            ],
            t(60),
        );
        assert_eq!(out.observations, 3);
        let a = ledger.instance("a:1").unwrap();
        assert!(!a.has_family(LEGACY));
        let spec = crate::verdict::CutoverSpec::legacy_tokens(
            Duration::from_secs(30),
            Duration::from_secs(5),
        );
        let v = crate::verdict::assess(&spec, &ledger, t(60));
        assert_eq!(
            (v.state, v.reason),
            (
                crate::verdict::State::Blind,
                crate::verdict::Reason::MetricAbsent
            )
        );
    }

    #[test]
    fn an_up_instance_never_scraped_successfully_is_listed() {
        let mut ledger = Ledger::default();
        let mut f = Feeder::new("instance", 3);
        let up = series("a:1", UP, &[(0, 0.0), (30, 0.0), (60, 0.0)]);
        f.feed_chunk(&mut ledger, &[(UP, vec![up])], t(60));
        assert_eq!(ledger.listed_unscraped().count(), 1);
        assert!(ledger.instance("a:1").is_none());
    }

    #[test]
    fn overlapping_chunks_never_count_a_sample_twice() {
        let mut one = Ledger::default();
        let mut f = Feeder::new("instance", 3);
        let all = instance(
            "a:1",
            0,
            1200,
            |s| (s / 100) as f64,
            |_| start_at(-10),
            |_| false,
        );
        f.feed_chunk(&mut one, &chunk(vec![all.clone()]), t(1200));
        let mut two = Ledger::default();
        let mut g = Feeder::new("instance", 3);
        // [0, 600] then [600, 1200]: the boundary sample is in both.
        let part = |lo: i64, hi: i64| {
            all.iter()
                .map(|(family, s)| {
                    let mut s = s.clone();
                    s.samples.retain(|(at, _)| *at >= t(lo) && *at <= t(hi));
                    (*family, s)
                })
                .collect::<Vec<_>>()
        };
        g.feed_chunk(&mut two, &chunk(vec![part(0, 600)]), t(600));
        g.feed_chunk(&mut two, &chunk(vec![part(600, 1200)]), t(1200));
        assert_eq!(one, two);
        assert_eq!(two.family_total(LEGACY), 12);
    }

    #[test]
    fn instances_are_fed_in_time_order_so_a_new_process_counts_from_its_start() {
        let mut ledger = Ledger::default();
        let mut f = Feeder::new("instance", 3);
        // c starts at 400 s with 3 uses already counted: all inside the span.
        let parts = vec![
            instance("c:1", 420, 600, |_| 3.0, |_| start_at(400), |_| false),
            instance("a:1", 0, 600, |_| 5.0, |_| start_at(-10), |_| false),
        ];
        f.feed_chunk(&mut ledger, &chunk(parts), t(600));
        let c = ledger.instance("c:1").unwrap();
        assert_eq!(c.increase(LEGACY, t(0)), 3);
        assert_eq!(c.required(t(0), t(600)), Interval::new(t(400), t(600)));
        assert_eq!(ledger.instance("a:1").unwrap().increase(LEGACY, t(0)), 0);
    }
}
