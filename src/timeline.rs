//! The timeline of a cutover's window: per apiserver instance (a lane), the
//! observed intervals, the holes with their cause, and the uses of the quiet
//! and evidence counters in buckets, with their exact totals beside.
//!
//! [`build`] is a pure function of the [`CutoverSpec`], the [`Ledger`], `now`
//! and the projected time until ready. It counts uses as the verdict does: a
//! quiet counter's increment straddling the window start counts, an evidence
//! counter's does not. The status page draws it and `/api/v1/status` carries it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ledger::{HoleCause, InstanceLedger, Ledger, Listed};
use crate::time::{Timestamp, duration_millis};
use crate::verdict::CutoverSpec;
use crate::window::Interval;

/// The most buckets a lane has, whatever the window.
pub const MAX_BUCKETS: usize = 200;

/// The fewest buckets a lane has (unless the window is shorter than that in
/// milliseconds).
pub const MIN_BUCKETS: usize = 24;

/// Bucket slots (lanes × buckets) a timeline aims for: many lanes get
/// coarser buckets, so the page stays small for 64 instances.
const SLOTS: usize = 2_400;

/// Bucket widths people read easily, shortest first.
const NICE_MILLIS: [i64; 20] = [
    1_000,
    2_000,
    5_000,
    10_000,
    15_000,
    30_000,
    60_000,
    120_000,
    300_000,
    600_000,
    900_000,
    1_800_000,
    3_600_000,
    7_200_000,
    10_800_000,
    21_600_000,
    43_200_000,
    86_400_000,
    172_800_000,
    604_800_000,
];

/// One cutover's window as a timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    /// Start of the window (exclusive): `now` minus the window.
    pub window_start: Timestamp,
    /// When it was built (the evaluation time): the end of the window.
    pub now: Timestamp,
    /// When the cutover would turn ready if nothing changes (`now` when it
    /// is ready); `None` when it cannot without a change.
    pub ready_at: Option<Timestamp>,
    /// Width of each bucket, in milliseconds. Bucket `i` holds the uses seen
    /// in `(window_start + i × width, window_start + (i + 1) × width]`.
    pub bucket_millis: i64,
    /// How many buckets cover the window (at most [`MAX_BUCKETS`]).
    pub buckets: usize,
    /// One lane per instance that could have served a client inside the
    /// window, by name.
    pub lanes: Vec<Lane>,
}

/// One apiserver instance inside the window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lane {
    /// The instance address.
    pub instance: String,
    /// The observed parts of the window, in order.
    pub covered: Vec<Interval>,
    /// The unobserved parts of the window (and the time since the instance
    /// left, cause `departed`), in order of their start.
    pub holes: Vec<Hole>,
    /// Uses per watched family: the quiet families, then the evidence one.
    pub uses: Vec<Uses>,
}

/// An unobserved part of a lane.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hole {
    /// When: `(from, to]`, inside the window.
    pub during: Interval,
    /// Why (at least one; holes the ledger merged can have several).
    pub causes: Vec<Gap>,
}

/// Why part of a lane is unobserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gap {
    /// Before its first sample: the instance ran, nobody observed it yet.
    NotYetObserved,
    /// Listed as a target and not scraped successfully (never, or before its
    /// process started).
    NeverScraped,
    /// The apiserver restarted: uses just before the restart were lost.
    Restart,
    /// A counter went down without a restart (`DELETE /metrics`).
    CounterReset,
    /// The address answered as more than one process.
    MixedInstances,
    /// A whole family appeared with uses since an unknown time.
    FamilyAppeared,
    /// No good sample since its last one: scrape failures or incomplete pages
    /// (or simply the time since the last scrape).
    NoSample,
    /// It left the targets: no longer required.
    Departed,
    /// A hole recorded before causes were kept.
    Unknown,
}

impl Gap {
    /// The JSON spelling, also used on the page.
    pub const fn label(self) -> &'static str {
        match self {
            Gap::NotYetObserved => "not_yet_observed",
            Gap::NeverScraped => "never_scraped",
            Gap::Restart => "restart",
            Gap::CounterReset => "counter_reset",
            Gap::MixedInstances => "mixed_instances",
            Gap::FamilyAppeared => "family_appeared",
            Gap::NoSample => "no_sample",
            Gap::Departed => "departed",
            Gap::Unknown => "unknown",
        }
    }

    /// What it means, in a few words.
    pub const fn words(self) -> &'static str {
        match self {
            Gap::NotYetObserved => "not yet observed (before its first sample)",
            Gap::NeverScraped => "listed but not scraped successfully",
            Gap::Restart => "apiserver restart: uses before it may be lost",
            Gap::CounterReset => "counters reset (DELETE /metrics)",
            Gap::MixedInstances => "address mixing apiserver processes",
            Gap::FamilyAppeared => "a counter family appeared with uses of unknown age",
            Gap::NoSample => "no good sample (scrape failures or incomplete pages)",
            Gap::Departed => "left the targets (no longer required)",
            Gap::Unknown => "unobserved (cause not recorded)",
        }
    }

    fn of(cause: HoleCause) -> Gap {
        match cause {
            HoleCause::Restart => Gap::Restart,
            HoleCause::CounterDecrease => Gap::CounterReset,
            HoleCause::MixedInstances => Gap::MixedInstances,
            HoleCause::FamilyAppeared => Gap::FamilyAppeared,
            HoleCause::ListedBeforeStart => Gap::NeverScraped,
        }
    }
}

/// What a family's uses mean for the cutover.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Must not increase: a use blocks the cutover.
    Quiet,
    /// Must increase: proves uses would be counted.
    Evidence,
}

/// One family's uses on one lane.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uses {
    /// The family.
    pub family: String,
    /// Quiet or evidence.
    pub role: Role,
    /// Exact count inside the window, counted as the verdict counts it.
    pub total: u64,
    /// `[bucket, count]` for the buckets with uses, in order. A use is put
    /// in the bucket of the end of its increment (when it was seen).
    pub buckets: Vec<(usize, u64)>,
}

impl Timeline {
    /// Start of bucket `i`.
    pub fn bucket_start(&self, i: usize) -> Timestamp {
        Timestamp(
            self.window_start
                .0
                .saturating_add(self.bucket_millis.saturating_mul(i as i64)),
        )
    }

    /// The bucket holding a use seen at `t`.
    pub fn bucket_of(&self, t: Timestamp) -> usize {
        bucket_index(self.window_start, self.bucket_millis, self.buckets, t)
    }
}

impl Uses {
    /// The count in bucket `i`.
    pub fn in_bucket(&self, i: usize) -> u64 {
        self.buckets
            .iter()
            .find(|(b, _)| *b == i)
            .map_or(0, |(_, n)| *n)
    }
}

/// The bucket width for a window drawn as `lanes` lanes: a readable width
/// giving at most [`MAX_BUCKETS`] buckets, fewer (down to [`MIN_BUCKETS`])
/// when there are many lanes.
pub fn bucket_width(window: Duration, lanes: usize) -> i64 {
    let window = duration_millis(window).max(1);
    let target = (SLOTS / lanes.max(1)).clamp(MIN_BUCKETS, MAX_BUCKETS) as i64;
    let exact = (window + target - 1) / target;
    NICE_MILLIS
        .iter()
        .copied()
        .find(|&w| w >= exact)
        .filter(|_| exact >= 1_000 || window >= 1_000 * target)
        .unwrap_or(exact)
        .max(1)
}

fn bucket_index(start: Timestamp, width: i64, buckets: usize, t: Timestamp) -> usize {
    let offset = (t.0 - start.0 - 1).max(0) / width.max(1);
    (offset as usize).min(buckets.saturating_sub(1))
}

/// The timeline of `spec`'s window at `now`; `ready_in` is the verdict's
/// projected time until ready.
pub fn build(
    spec: &CutoverSpec,
    ledger: &Ledger,
    now: Timestamp,
    ready_in: Option<Duration>,
) -> Timeline {
    let start = now - spec.window;
    // The instances the verdict considers: current ones, ones that left
    // inside the window, and ones listed but never scraped.
    let mut lanes: Vec<(&str, Source<'_>)> = ledger
        .instances()
        .filter(|(_, l)| l.gone_at().is_none_or(|gone| gone > start))
        .map(|(name, l)| (name, Source::Observed(l)))
        .chain(
            ledger
                .listed_unscraped()
                .filter(|(_, l)| l.gone_at.is_none_or(|gone| gone > start))
                .map(|(name, l)| (name, Source::Listed(l))),
        )
        .collect();
    lanes.sort_by(|a, b| a.0.cmp(b.0));
    let bucket_millis = bucket_width(spec.window, lanes.len());
    let window_millis = duration_millis(spec.window).max(1);
    let buckets = usize::try_from((window_millis + bucket_millis - 1) / bucket_millis)
        .unwrap_or(MAX_BUCKETS)
        .max(1);
    let families: Vec<(&str, Role)> = spec
        .quiet
        .iter()
        .map(|f| (f.as_str(), Role::Quiet))
        .chain(spec.evidence.iter().map(|f| (f.as_str(), Role::Evidence)))
        .collect();
    let lanes = lanes
        .into_iter()
        .map(|(name, source)| {
            let (covered, holes) = match source {
                Source::Observed(l) => observed_lane(l, start, now),
                Source::Listed(l) => listed_lane(l, start, now),
            };
            let uses = families
                .iter()
                .map(|&(family, role)| {
                    let mut counts = std::collections::BTreeMap::<usize, u64>::new();
                    if let Source::Observed(l) = source {
                        for inc in l.increments(family) {
                            let counted = match role {
                                Role::Quiet => inc.during.to > start,
                                Role::Evidence => inc.during.from >= start,
                            };
                            if counted {
                                let b = bucket_index(start, bucket_millis, buckets, inc.during.to);
                                *counts.entry(b).or_default() += inc.amount;
                            }
                        }
                    }
                    Uses {
                        family: family.to_owned(),
                        role,
                        total: counts.values().sum(),
                        buckets: counts.into_iter().collect(),
                    }
                })
                .collect();
            Lane {
                instance: name.to_owned(),
                covered,
                holes,
                uses,
            }
        })
        .collect();
    Timeline {
        window_start: start,
        now,
        ready_at: ready_in.map(|d| now + d),
        bucket_millis,
        buckets,
        lanes,
    }
}

#[derive(Clone, Copy)]
enum Source<'a> {
    Observed(&'a InstanceLedger),
    Listed(&'a Listed),
}

fn observed_lane(
    l: &InstanceLedger,
    start: Timestamp,
    now: Timestamp,
) -> (Vec<Interval>, Vec<Hole>) {
    let end = l.gone_at().unwrap_or(now).min(now);
    let required = Interval::new(l.exists_from().map_or(start, |e| e.max(start)), end);
    let mut holes = Vec::new();
    let mut push = |during: Interval, causes: Vec<Gap>| {
        let during = during.clip(required.from, required.to);
        if !during.is_empty() {
            holes.push(Hole { during, causes });
        }
    };
    if l.may_predate_coverage() {
        push(
            Interval::new(start, l.covered_from()),
            vec![Gap::NotYetObserved],
        );
    }
    let causes: Vec<(Interval, HoleCause)> = l.hole_causes().collect();
    for hole in l.holes() {
        let mut gaps: Vec<Gap> = Vec::new();
        for (during, cause) in &causes {
            let gap = Gap::of(*cause);
            if during.from < hole.to && during.to > hole.from && !gaps.contains(&gap) {
                gaps.push(gap);
            }
        }
        if gaps.is_empty() {
            gaps.push(Gap::Unknown);
        }
        push(hole, gaps);
    }
    push(Interval::new(l.last_seen(), end), vec![Gap::NoSample]);
    let covered = complement(required, &holes);
    if let Some(gone) = l.gone_at() {
        let departed = Interval::new(gone.max(start), now);
        if !departed.is_empty() {
            holes.push(Hole {
                during: departed,
                causes: vec![Gap::Departed],
            });
        }
    }
    holes.sort_by_key(|h| h.during.from);
    (covered, holes)
}

fn listed_lane(l: &Listed, start: Timestamp, now: Timestamp) -> (Vec<Interval>, Vec<Hole>) {
    let mut holes: Vec<Hole> = l
        .unobserved(start, now)
        .into_iter()
        .map(|during| Hole {
            during,
            causes: vec![Gap::NeverScraped],
        })
        .collect();
    if let Some(gone) = l.gone_at {
        let departed = Interval::new(gone.max(start), now);
        if !departed.is_empty() {
            holes.push(Hole {
                during: departed,
                causes: vec![Gap::Departed],
            });
        }
    }
    (Vec::new(), holes)
}

/// The parts of `span` no hole covers.
fn complement(span: Interval, holes: &[Hole]) -> Vec<Interval> {
    let mut cut: Vec<Interval> = holes.iter().map(|h| h.during).collect();
    cut.sort();
    let mut out = Vec::new();
    let mut from = span.from;
    for c in cut {
        if c.from > from {
            out.push(Interval::new(from, c.from.min(span.to)));
        }
        from = from.max(c.to);
    }
    if span.to > from {
        out.push(Interval::new(from, span.to));
    }
    out.retain(|i| !i.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::ledger::{Observation, Retention, SeriesKey};

    const LEGACY: &str = "serviceaccount_legacy_tokens_total";
    const STALE: &str = "serviceaccount_stale_tokens_total";
    const VALID: &str = "serviceaccount_valid_tokens_total";

    /// Seconds after a fixed origin.
    fn t(secs: i64) -> Timestamp {
        Timestamp::from_secs(1_800_000_000 + secs)
    }

    fn obs(start: i64, values: &[(&str, u64)]) -> Observation {
        Observation {
            start_time: Some(t(start)),
            values: values
                .iter()
                .map(|(f, v)| (SeriesKey::family(f), *v))
                .collect::<BTreeMap<_, _>>(),
        }
    }

    fn legacy_spec(window_secs: u64) -> CutoverSpec {
        CutoverSpec::legacy_tokens(Duration::from_secs(window_secs), Duration::from_secs(60))
    }

    #[test]
    fn bucket_widths_are_readable_and_bounded() {
        // 30 minutes, 3 lanes: 10 s buckets, 180 of them.
        assert_eq!(bucket_width(Duration::from_secs(1_800), 3), 10_000);
        // 7 days, 3 lanes: hourly, 168.
        assert_eq!(bucket_width(Duration::from_secs(7 * 86_400), 3), 3_600_000);
        // 24 hours, 1 lane: 10 minutes, 144.
        assert_eq!(bucket_width(Duration::from_secs(86_400), 1), 600_000);
        // 7 days, 64 lanes: coarser (6 h), never fewer than 24 buckets.
        let w = bucket_width(Duration::from_secs(7 * 86_400), 64);
        assert_eq!(w, 21_600_000);
        // A tiny window: exact milliseconds.
        assert_eq!(bucket_width(Duration::from_millis(100), 1), 1);
        for lanes in [0, 1, 3, 64, 1_000] {
            for secs in [1, 60, 1_800, 86_400, 7 * 86_400, 90 * 86_400] {
                let window = Duration::from_secs(secs);
                let w = bucket_width(window, lanes);
                let n = (secs as i64 * 1000 + w - 1) / w;
                assert!(n as usize <= MAX_BUCKETS, "{secs}s {lanes} lanes: {n}");
            }
        }
    }

    /// A manual-clock scenario with known uses: two instances scraped every
    /// 10 s for 30 minutes; A sees 3 uses between 300 s and 310 s and 5
    /// between 900 s and 910 s, B restarts at 1_205 s with 2 uses since.
    fn scenario() -> (Ledger, Timestamp) {
        let mut ledger = Ledger::new(Retention::default());
        ledger.list("a:6443", t(0));
        ledger.list("b:6443", t(0));
        let mut a = 0;
        for s in (0..=1_800).step_by(10) {
            if s == 310 {
                a += 3;
            }
            if s == 910 {
                a += 5;
            }
            ledger.observe("a:6443", t(s), obs(-100, &[(LEGACY, a)]));
            let b = if s < 1_210 {
                obs(-100, &[(LEGACY, 7)])
            } else {
                obs(1_205, &[(LEGACY, 2)])
            };
            ledger.observe("b:6443", t(s), b);
        }
        (ledger, t(1_800))
    }

    #[test]
    fn lanes_holes_and_marks_follow_the_ground_truth() {
        let (ledger, now) = scenario();
        let spec = legacy_spec(1_800);
        let tl = build(&spec, &ledger, now, Some(Duration::from_secs(1_200)));
        assert_eq!(tl.window_start, t(0));
        assert_eq!(tl.now, now);
        assert_eq!(tl.ready_at, Some(t(3_000)));
        assert_eq!((tl.bucket_millis, tl.buckets), (10_000, 180));
        let names: Vec<&str> = tl.lanes.iter().map(|l| l.instance.as_str()).collect();
        assert_eq!(names, ["a:6443", "b:6443"]);

        let a = &tl.lanes[0];
        // Uses seen at 310 s and 910 s: buckets (300, 310] and (900, 910].
        assert_eq!(a.uses.len(), 1);
        assert_eq!(a.uses[0].family, LEGACY);
        assert_eq!(a.uses[0].role, Role::Quiet);
        assert_eq!(a.uses[0].buckets, vec![(30, 3), (90, 5)]);
        assert_eq!(a.uses[0].total, 8);
        assert_eq!(tl.bucket_start(30), t(300));
        // Observed from its first sample at 0 s (the window start) to now.
        assert_eq!(a.covered, vec![Interval::new(t(0), now)]);
        assert!(a.holes.is_empty(), "{:?}", a.holes);

        let b = &tl.lanes[1];
        // The restart at 1_205 s: unobserved from the last sample (1_200 s)
        // until the new process started; its 2 uses are seen at 1_210 s.
        assert_eq!(
            b.holes,
            vec![Hole {
                during: Interval::new(t(1_200), t(1_205)),
                causes: vec![Gap::Restart],
            }]
        );
        assert_eq!(
            b.covered,
            vec![Interval::new(t(0), t(1_200)), Interval::new(t(1_205), now)]
        );
        assert_eq!(b.uses[0].buckets, vec![(120, 2)]);
        // Exact totals agree with the verdict's increase.
        let sum: u64 = tl.lanes.iter().map(|l| l.uses[0].total).sum();
        assert_eq!(sum, ledger.family_increase(LEGACY, tl.window_start));
    }

    #[test]
    fn never_scraped_departed_and_unscraped_time_are_holes_with_their_cause() {
        let (mut ledger, _) = scenario();
        // c is listed at 600 s and never scraped; b leaves at 1_500 s; a's
        // scrapes fail after 1_800 s.
        ledger.list("c:6443", t(600));
        ledger.remove("b:6443", t(1_500));
        let now = t(1_900);
        let tl = build(&legacy_spec(1_800), &ledger, now, None);
        assert_eq!(tl.ready_at, None);
        let lane = |name: &str| tl.lanes.iter().find(|l| l.instance == name).unwrap();
        assert_eq!(tl.lanes.len(), 3);
        let a = lane("a:6443");
        assert_eq!(
            a.holes,
            vec![Hole {
                during: Interval::new(t(1_800), now),
                causes: vec![Gap::NoSample],
            }]
        );
        assert_eq!(a.covered, vec![Interval::new(t(100), t(1_800))]);
        let b = lane("b:6443");
        let causes: Vec<(Interval, Vec<Gap>)> = b
            .holes
            .iter()
            .map(|h| (h.during, h.causes.clone()))
            .collect();
        // Its last sample was at 1_800 s, later than the removal at 1_500 s:
        // it left at its last sample, so nothing is unscraped, and it is
        // departed from then.
        assert_eq!(
            causes,
            vec![
                (Interval::new(t(1_200), t(1_205)), vec![Gap::Restart]),
                (Interval::new(t(1_800), now), vec![Gap::Departed]),
            ]
        );
        let c = lane("c:6443");
        assert!(c.covered.is_empty());
        assert_eq!(
            c.holes,
            vec![Hole {
                during: Interval::new(t(600), now),
                causes: vec![Gap::NeverScraped],
            }]
        );
        assert!(c.uses.iter().all(|u| u.total == 0 && u.buckets.is_empty()));
    }

    #[test]
    fn evidence_counts_only_inside_the_window_and_quiet_straddling_counts() {
        let mut ledger = Ledger::new(Retention::default());
        let page = |stale: u64, valid: u64| obs(-100, &[(STALE, stale), (VALID, valid)]);
        ledger.observe("a:6443", t(0), page(0, 0));
        // One interval (0, 120] straddles the window start at 60 s.
        ledger.observe("a:6443", t(120), page(1, 4));
        ledger.observe("a:6443", t(180), page(1, 6));
        let spec =
            CutoverSpec::token_expiry_extension(Duration::from_secs(120), Duration::from_secs(600));
        let tl = build(&spec, &ledger, t(180), Some(Duration::ZERO));
        assert_eq!(tl.ready_at, Some(t(180)));
        let uses = &tl.lanes[0].uses;
        let quiet = uses.iter().find(|u| u.role == Role::Quiet).unwrap();
        let evidence = uses.iter().find(|u| u.role == Role::Evidence).unwrap();
        assert_eq!(quiet.family, STALE);
        assert_eq!(quiet.total, 1, "a straddling quiet use counts");
        assert_eq!(evidence.family, VALID);
        assert_eq!(evidence.total, 2, "a straddling evidence increase does not");
        assert_eq!(evidence.buckets, vec![(tl.bucket_of(t(180)), 2)]);
        assert_eq!(tl.bucket_of(t(180)), tl.buckets - 1);
    }

    #[test]
    fn counter_resets_and_merged_holes_keep_their_causes() {
        let mut ledger = Ledger::new(Retention::default());
        ledger.observe("a:6443", t(0), obs(-100, &[(LEGACY, 5)]));
        // DELETE /metrics: same process, counter down.
        ledger.observe("a:6443", t(10), obs(-100, &[(LEGACY, 1)]));
        // A restart whose hole (10, 15] touches the previous one: merged.
        ledger.observe("a:6443", t(20), obs(15, &[(LEGACY, 0)]));
        let tl = build(&legacy_spec(600), &ledger, t(20), None);
        let holes = &tl.lanes[0].holes;
        assert_eq!(
            holes.iter().map(|h| h.causes.clone()).collect::<Vec<_>>(),
            vec![
                vec![Gap::NotYetObserved],
                vec![Gap::CounterReset, Gap::Restart]
            ]
        );
        assert_eq!(holes[1].during, Interval::new(t(0), t(15)));
    }

    #[test]
    fn a_state_file_without_hole_causes_loads_and_says_unknown() {
        let mut ledger = Ledger::new(Retention::default());
        ledger.observe("a:6443", t(0), obs(-100, &[(LEGACY, 5)]));
        ledger.observe("a:6443", t(10), obs(5, &[(LEGACY, 1)]));
        let mut json = serde_json::to_value(&ledger).unwrap();
        let instance = json["instances"]["a:6443"].as_object_mut().unwrap();
        assert!(instance.remove("hole_causes").is_some());
        let old: Ledger = serde_json::from_value(json).expect("an older state file loads");
        let tl = build(&legacy_spec(600), &old, t(10), None);
        assert_eq!(
            tl.lanes[0].holes.last().map(|h| h.causes.clone()),
            Some(vec![Gap::Unknown])
        );
        let tl = build(&legacy_spec(600), &ledger, t(10), None);
        assert_eq!(
            tl.lanes[0].holes.last().map(|h| h.causes.clone()),
            Some(vec![Gap::Restart])
        );
    }
}
