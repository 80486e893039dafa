//! Property tests of the ledger against a model apiserver: random uses,
//! restarts, `DELETE /metrics` resets, failed scrapes and sampling times.
//!
//! A restart changes the process start time and is always detected. A
//! `DELETE /metrics` reset is visible only as some counter going down; the
//! reset sentinel (`authentication_token_cache_request_total`) is large on a
//! live apiserver and grows with every request, the auditor's own scrapes
//! included, which makes that near-certain in practice. Two generators:
//! `any_steps` allows any resets and checks the ledger against what is
//! visible; `realistic_steps` has one `DELETE` per run, before any restart
//! (while the sentinel is large), and checks against every reset.

use std::collections::BTreeMap;
use std::time::Duration;

use cutover_auditor::families::RESET_SENTINEL;
use cutover_auditor::ledger::{Ledger, Observation, Retention, SeriesKey};
use cutover_auditor::time::Timestamp;
use proptest::prelude::*;

const SERIES: [&str; 2] = [
    "serviceaccount_legacy_tokens_total",
    "serviceaccount_stale_tokens_total",
];

#[derive(Clone, Copy, Debug)]
enum Event {
    None,
    Restart,
    Delete,
}

#[derive(Clone, Debug)]
struct Step {
    /// Seconds since the previous step.
    dt: i64,
    /// Uses before the event inside this step, per series.
    before: [u64; 2],
    /// Uses after the event, per series.
    after: [u64; 2],
    event: Event,
    scrape_ok: bool,
}

fn step() -> impl Strategy<Value = Step> {
    (
        // Scrape intervals of at least 3 s, so restarts one step apart have
        // start times more than the ledger's 1 s same-process slack apart.
        3i64..600,
        [0u64..4, 0u64..4],
        [0u64..4, 0u64..4],
        prop_oneof![8 => Just(Event::None), 1 => Just(Event::Restart), 1 => Just(Event::Delete)],
        prop::bool::weighted(0.8),
    )
        .prop_map(|(dt, before, after, event, scrape_ok)| Step {
            dt,
            before,
            after,
            event,
            scrape_ok,
        })
}

/// Any sequence of uses, restarts, deletes and failed scrapes.
fn any_steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(step(), 1..150)
}

/// At most one `DELETE` per run, and none after a restart: the sentinel is
/// still large when it comes (see the module comment).
fn realistic_steps() -> impl Strategy<Value = Vec<Step>> {
    any_steps().prop_map(|mut steps| {
        let mut reset_seen = false;
        for s in &mut steps {
            match s.event {
                Event::Delete if reset_seen => s.event = Event::None,
                Event::Delete | Event::Restart => reset_seen = true,
                Event::None => {}
            }
        }
        steps
    })
}

/// The model apiserver.
struct Model {
    start: i64,
    counters: [u64; 2],
    sentinel: u64,
}

/// What the run recorded: per successful scrape, its time, whether a reset
/// fell since the previous successful scrape, the true uses since then, and
/// what the ledger said.
struct Scrape {
    at: i64,
    reset_since_previous: bool,
    /// A restart, or some counter lower than at the previous scrape.
    reset_visible: bool,
    true_uses: [u64; 2],
    /// True uses after the latest reset in the interval (all of them if none).
    uses_since_reset: [u64; 2],
    ledger_uses: [u64; 2],
    hole: bool,
}

/// True uses per step: the step's end time and the uses per series.
type Uses = Vec<(i64, [u64; 2])>;

fn run(steps: &[Step], retention: Retention) -> (Ledger, Vec<Scrape>, Uses) {
    let mut model = Model {
        start: -1_000_000,
        counters: [7, 0],
        sentinel: 1_000_000_000,
    };
    let mut ledger = Ledger::new(retention);
    let mut scrapes = Vec::new();
    let mut uses: Uses = Vec::new();
    let mut t = 0i64;
    let mut pending_reset = false;
    let mut pending_restart = false;
    let mut previous: Option<([u64; 2], u64)> = None;
    let mut pending_uses = [0u64; 2];
    let mut since_reset = [0u64; 2];
    let mut first = true;
    for s in steps {
        let prev = t;
        t += s.dt;
        let event_at = prev + s.dt / 2;
        for i in 0..2 {
            model.counters[i] += s.before[i];
        }
        model.sentinel += 5;
        match s.event {
            Event::None => {}
            Event::Restart | Event::Delete => {
                if let Event::Restart = s.event {
                    // The new process starts strictly inside the step.
                    model.start = event_at.max(prev + 1).min(t);
                    pending_restart = true;
                }
                model.counters = [0, 0];
                model.sentinel = 0;
                pending_reset = true;
                since_reset = [0, 0];
            }
        }
        for i in 0..2 {
            model.counters[i] += s.after[i];
            pending_uses[i] += s.before[i] + s.after[i];
            since_reset[i] += s.after[i];
            if matches!(s.event, Event::None) {
                since_reset[i] += s.before[i];
            }
        }
        uses.push((t, [s.before[0] + s.after[0], s.before[1] + s.after[1]]));
        // The scrape itself is a request, counted whether or not it succeeds.
        model.sentinel += 1;
        if !s.scrape_ok {
            continue;
        }
        let mut values: BTreeMap<SeriesKey, u64> = SERIES
            .iter()
            .zip(model.counters)
            .map(|(f, v)| (SeriesKey::family(f), v))
            .collect();
        values.insert(SeriesKey::family(RESET_SENTINEL), model.sentinel);
        let obs = Observation {
            start_time: Some(Timestamp::from_secs(model.start)),
            values,
        };
        let outcome = ledger.observe("a", Timestamp::from_secs(t), obs);
        let mut ledger_uses = [0u64; 2];
        for (key, amount) in &outcome.increments {
            if let Some(i) = SERIES.iter().position(|f| key.as_str() == *f) {
                ledger_uses[i] += amount;
            }
        }
        let decreased = previous.is_some_and(|(counters, sentinel): ([u64; 2], u64)| {
            model.sentinel < sentinel || (0..2).any(|i| model.counters[i] < counters[i])
        });
        previous = Some((model.counters, model.sentinel));
        if !first {
            scrapes.push(Scrape {
                at: t,
                reset_since_previous: pending_reset,
                reset_visible: pending_restart || decreased,
                true_uses: pending_uses,
                uses_since_reset: since_reset,
                ledger_uses,
                hole: outcome.hole.is_some(),
            });
        }
        first = false;
        pending_reset = false;
        pending_restart = false;
        pending_uses = [0, 0];
        since_reset = [0, 0];
    }
    (ledger, scrapes, uses)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn increase_is_exact_without_a_hole_and_a_reset_always_leaves_one(steps in realistic_steps()) {
        let (_, scrapes, _) = run(&steps, Retention::default());
        for s in &scrapes {
            // A hole is reported exactly when a reset fell between two samples.
            prop_assert_eq!(s.hole, s.reset_since_previous, "at t={}", s.at);
            if !s.hole {
                prop_assert_eq!(s.ledger_uses, s.true_uses, "exact at t={}", s.at);
            } else {
                // Across a reset the ledger counts exactly the uses since the
                // reset: a lower bound of the interval's uses, never more.
                prop_assert_eq!(s.ledger_uses, s.uses_since_reset, "at t={}", s.at);
            }
        }
    }

    #[test]
    fn any_visible_reset_leaves_a_hole_and_counts_are_never_overstated(steps in any_steps()) {
        let (_, scrapes, _) = run(&steps, Retention::default());
        for s in &scrapes {
            prop_assert_eq!(s.hole, s.reset_visible, "at t={}", s.at);
            if !s.reset_since_previous {
                prop_assert_eq!(s.ledger_uses, s.true_uses, "exact at t={}", s.at);
            }
            for i in 0..2 {
                prop_assert!(s.ledger_uses[i] <= s.true_uses[i], "at t={}", s.at);
            }
        }
    }

    #[test]
    fn window_increase_matches_the_truth_since_any_sample_after_the_last_hole(steps in realistic_steps()) {
        let (ledger, scrapes, uses) = run(&steps, Retention::default());
        let a = ledger.instance("a");
        let last_hole = scrapes.iter().filter(|s| s.hole).map(|s| s.at).max();
        for s in scrapes.iter().filter(|s| last_hole.is_none_or(|h| s.at >= h)) {
            let a = a.expect("observed");
            for (i, family) in SERIES.iter().enumerate() {
                let truth: u64 = uses.iter().filter(|(t, _)| *t > s.at).map(|(_, u)| u[i]).sum();
                // Uses after the last successful scrape are not visible yet.
                let last = a.last_seen().as_millis() / 1000;
                let invisible: u64 = uses.iter().filter(|(t, _)| *t > last).map(|(_, u)| u[i]).sum();
                prop_assert_eq!(a.increase(family, Timestamp::from_secs(s.at)), truth - invisible);
            }
        }
    }

    #[test]
    fn merging_never_loses_a_use_nor_hides_the_last_one(steps in any_steps()) {
        let tight = Retention {
            horizon: Duration::from_secs(365 * 86_400),
            exact_recent: Duration::ZERO,
            max_increments: 4,
        };
        let (merged, _, _) = run(&steps, tight);
        let (exact, _, _) = run(&steps, Retention::default());
        if let (Some(m), Some(e)) = (merged.instance("a"), exact.instance("a")) {
            // Three series (two token counters and the sentinel), at most 4 each.
            prop_assert!(m.increment_records() <= 3 * 4);
            for family in SERIES {
                prop_assert_eq!(m.family_total(family), e.family_total(family));
                prop_assert_eq!(m.last_increase(family), e.last_increase(family));
                prop_assert_eq!(m.increase(family, Timestamp(i64::MIN)), e.increase(family, Timestamp(i64::MIN)));
                // A merged window may only count more (a neighbour whole), never less.
                for since in [0i64, 600, 3_600, 20_000, 40_000] {
                    let since = Timestamp::from_secs(since);
                    prop_assert!(m.increase(family, since) >= e.increase(family, since));
                }
            }
        }
    }
}

#[test]
fn a_delete_reset_hidden_by_regrowth_is_invisible_without_the_sentinel() {
    // The ledger's documented limit: with only a token counter, a reset
    // followed by more uses than the old value looks like plain growth.
    let mut ledger = Ledger::default();
    let obs = |v: u64| Observation {
        start_time: Some(Timestamp::from_secs(1)),
        values: BTreeMap::from([(SeriesKey::family(SERIES[0]), v)]),
    };
    ledger.observe("a", Timestamp::from_secs(10), obs(2));
    let out = ledger.observe("a", Timestamp::from_secs(40), obs(5));
    assert_eq!(out.hole, None);
    // With the sentinel on the page the same reset is caught.
    let with_sentinel = |v: u64, s: u64| Observation {
        start_time: Some(Timestamp::from_secs(1)),
        values: BTreeMap::from([
            (SeriesKey::family(SERIES[0]), v),
            (SeriesKey::family(RESET_SENTINEL), s),
        ]),
    };
    let mut ledger = Ledger::default();
    ledger.observe("a", Timestamp::from_secs(10), with_sentinel(2, 50_000));
    let out = ledger.observe("a", Timestamp::from_secs(40), with_sentinel(5, 40));
    assert!(out.hole.is_some());
    assert_eq!(
        out.increments,
        vec![
            (SeriesKey::family(RESET_SENTINEL), 40),
            (SeriesKey::family(SERIES[0]), 5)
        ]
    );
}

/// The state file must fit a Kubernetes ConfigMap (1 MiB) with room to
/// spare: 64 instances with busy valid-token and sentinel counters (an
/// increase at every scrape) over a 7-day window. The week is scraped every
/// 10 minutes, then the last two hours every 30 s, and the snapshot is
/// encoded every 5 minutes of those: its largest encoding is the bound, as
/// busy series grow to the merge threshold and are merged back.
#[test]
fn snapshot_of_64_busy_instances_over_a_week_stays_far_below_a_configmap() {
    use cutover_auditor::families::TokenKind;
    use cutover_auditor::state::{self, Snapshot};

    const DAY: i64 = 86_400;
    let origin = 1_780_000_000i64;
    let week = Duration::from_secs(7 * DAY as u64);
    let mut ledger = Ledger::new(Retention {
        horizon: week + Duration::from_secs(3_600),
        ..Retention::default()
    });
    let mut keys: Vec<SeriesKey> = TokenKind::ALL
        .iter()
        .map(|k| SeriesKey::family(k.family()))
        .collect();
    keys.push(SeriesKey::family(RESET_SENTINEL));
    let valid = keys
        .iter()
        .position(|k| k.as_str() == TokenKind::Valid.family())
        .expect("valid family");
    let sentinel = keys.len() - 1;
    let names: Vec<String> = (0..64).map(|i| format!("10.0.0.{}:6443", i + 1)).collect();
    let mut counters = vec![vec![0u64; keys.len()]; names.len()];
    let end = origin + 7 * DAY + 3_600;
    let mut t = origin;
    let mut largest = 0usize;
    let mut encodings = 0;
    while t <= end {
        let now = Timestamp::from_secs(t);
        for (i, name) in names.iter().enumerate() {
            counters[i][valid] += 20 + (t as u64 + i as u64) % 200;
            counters[i][sentinel] += 40 + (t as u64 * 7 + i as u64) % 400;
            ledger.list(name, now);
            let obs = Observation {
                start_time: Some(Timestamp::from_secs(origin - 3_600)),
                values: keys
                    .iter()
                    .cloned()
                    .zip(counters[i].iter().copied())
                    .collect(),
            };
            ledger.observe(name, now + Duration::from_millis(i as u64 * 7), obs);
        }
        ledger.prune(now + Duration::from_secs(1));
        let last_hours = t >= end - 2 * 3_600;
        if last_hours && (t - origin) % 300 == 0 {
            let snapshot = Snapshot {
                version: state::FORMAT_VERSION,
                saved_at: now,
                ledger: ledger.clone(),
                trackers: BTreeMap::new(),
            };
            let bytes = state::encode(&snapshot).expect("encodes");
            largest = largest.max(bytes.len());
            encodings += 1;
            if t + 300 > end {
                let back = state::decode(&bytes).expect("decodes");
                assert_eq!(back, snapshot, "the compact form round-trips");
            }
        }
        t += if last_hours { 30 } else { 600 };
    }
    assert!(encodings >= 24, "{encodings} encodings");
    // Nothing lost: every instance's stitched valid total is its counter.
    let family = TokenKind::Valid.family();
    let total: u64 = counters.iter().map(|c| c[valid]).sum();
    assert_eq!(ledger.family_total(family), total);
    assert!(
        largest <= 300 * 1024,
        "largest snapshot {largest} bytes for 64 busy instances over a week (bound 300 KiB)"
    );
}
