//! Verdict tables on synthetic time: a small world of apiserver instances is
//! scraped into the ledger at fixed steps; each case checks the verdicts at
//! chosen times. No test sleeps: a week runs in milliseconds.

use std::collections::BTreeMap;
use std::time::Duration;

use cutover_auditor::families::TokenKind;
use cutover_auditor::ledger::{Ledger, Observation, SeriesKey};
use cutover_auditor::time::Timestamp;
use cutover_auditor::verdict::{self, CutoverSpec, Reason, State, Tracker};

const MIN: i64 = 60;
const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;

fn secs(s: i64) -> Duration {
    Duration::from_secs(s as u64)
}

/// One simulated apiserver instance: its counters and process start time.
#[derive(Clone)]
struct Instance {
    start: i64,
    counters: BTreeMap<TokenKind, u64>,
    kinds: Vec<TokenKind>,
    up: bool,
}

impl Instance {
    fn new(start: i64, kinds: &[TokenKind]) -> Instance {
        Instance {
            start,
            counters: kinds.iter().map(|&k| (k, 0)).collect(),
            kinds: kinds.to_vec(),
            up: true,
        }
    }

    fn observation(&self) -> Observation {
        Observation {
            start_time: Some(Timestamp::from_secs(self.start)),
            values: self
                .kinds
                .iter()
                .map(|k| (SeriesKey::family(k.family()), self.counters[k]))
                .collect(),
        }
    }
}

const ALL_KINDS: [TokenKind; 6] = TokenKind::ALL;
const PRE_129: [TokenKind; 3] = [TokenKind::Legacy, TokenKind::Stale, TokenKind::Valid];

/// A world scraped every `step` seconds; `script(world, t)` runs before each
/// scrape and may change counters, restart instances or take them down.
struct World {
    instances: BTreeMap<String, Instance>,
    ledger: Ledger,
    trackers: BTreeMap<String, Tracker>,
    specs: Vec<CutoverSpec>,
    transitions: Vec<(i64, String, State, bool)>,
    /// Every increment made, per kind, over all instances.
    truth: BTreeMap<TokenKind, u64>,
}

impl World {
    fn new(instances: &[(&str, &[TokenKind])], specs: Vec<CutoverSpec>) -> World {
        World {
            instances: instances
                .iter()
                .map(|(name, kinds)| (name.to_string(), Instance::new(-30 * DAY, kinds)))
                .collect(),
            ledger: Ledger::default(),
            trackers: BTreeMap::new(),
            specs,
            transitions: Vec::new(),
            truth: BTreeMap::new(),
        }
    }

    fn bump(&mut self, instance: &str, kind: TokenKind, n: u64) {
        let inst = self.instances.get_mut(instance).expect("instance in world");
        if let Some(c) = inst.counters.get_mut(&kind) {
            *c += n;
            *self.truth.entry(kind).or_default() += n;
        }
    }

    fn bump_all(&mut self, kind: TokenKind, n: u64) {
        let names: Vec<String> = self.instances.keys().cloned().collect();
        for name in names {
            self.bump(&name, kind, n);
        }
    }

    /// Runs from `from` to `to` (seconds), scraping every `step`.
    fn run(&mut self, from: i64, to: i64, step: i64, mut script: impl FnMut(&mut World, i64)) {
        let mut t = from;
        while t <= to {
            script(self, t);
            let now = Timestamp::from_secs(t);
            for (name, inst) in &self.instances {
                if inst.up {
                    self.ledger.observe(name, now, inst.observation());
                }
            }
            self.evaluate(t);
            t += step;
        }
    }

    fn evaluate(&mut self, t: i64) {
        let now = Timestamp::from_secs(t);
        for spec in &self.specs {
            let a = verdict::assess(spec, &self.ledger, now);
            let tracker = self.trackers.entry(spec.name.to_string()).or_default();
            if let Some(tr) = tracker.update(&spec.name, &a, now) {
                self.transitions
                    .push((t, tr.cutover.to_string(), tr.to, tr.regression));
            }
        }
    }

    fn assess(&self, name: &str, t: i64) -> verdict::Assessment {
        let spec = self.specs.iter().find(|s| s.name == name).expect("spec");
        verdict::assess(spec, &self.ledger, Timestamp::from_secs(t))
    }

    fn check(&self, name: &str, t: i64, state: State, reason: Reason) {
        let a = self.assess(name, t);
        assert_eq!(
            (a.state, a.reason),
            (state, reason),
            "{name} at t={t}s: {a:?}"
        );
    }
}

fn week_specs() -> Vec<CutoverSpec> {
    CutoverSpec::builtin()
}

#[test]
fn weekly_job_keeps_legacy_tokens_in_use_for_seven_days_after_each_run() {
    let mut w = World::new(&[("a", &ALL_KINDS), ("b", &ALL_KINDS)], week_specs());
    // A job runs for 5 minutes every 7 days from day 1, for three runs, then
    // stops. Scrapes every 5 minutes for 5 weeks.
    let step = 5 * MIN;
    let runs = [DAY, 8 * DAY, 15 * DAY];
    let script = |w: &mut World, t: i64| {
        if runs.iter().any(|&r| t > r && t <= r + 5 * MIN) {
            w.bump_all(TokenKind::Legacy, 3);
            w.bump_all(TokenKind::LegacyAuto, 3);
        }
    };
    w.run(0, 10 * DAY, step, script);
    // In between, the verdict says when it could be ready.
    let a = w.assess("legacy-tokens", 10 * DAY);
    assert_eq!(a.state, State::InUse);
    assert_eq!(a.last_use, Some(Timestamp::from_secs(8 * DAY + 5 * MIN)));
    assert_eq!(
        a.ready_in,
        Some(secs(8 * DAY + 5 * MIN + 7 * DAY - 10 * DAY))
    );
    assert_eq!(
        a.increase,
        2 * 3,
        "one run, seen by one scrape on 2 instances"
    );
    w.run(10 * DAY + step, 35 * DAY, step, script);
    let first_use = DAY + 5 * MIN;
    let last_use = 15 * DAY + 5 * MIN;
    let legacy: Vec<_> = w
        .transitions
        .iter()
        .filter(|(_, c, _, _)| c == "legacy-tokens")
        .map(|(t, _, s, _)| (*t, *s))
        .collect();
    assert_eq!(
        legacy,
        vec![
            (0, State::Blind),
            (first_use, State::InUse),
            (last_use + 7 * DAY, State::Ready)
        ],
        "in use from the first run until 7 days after the last"
    );
    let a = w.assess("legacy-tokens", 35 * DAY);
    assert_eq!(
        (a.state, a.increase, a.ready_in),
        (State::Ready, 0, Some(Duration::ZERO))
    );
    assert_eq!(a.coverage, 1.0);
    assert_eq!(w.trackers["legacy-tokens"].regressions(), 0);
}

#[test]
fn unobserved_window_is_blind_with_the_time_remaining() {
    let mut w = World::new(&[("a", &ALL_KINDS)], week_specs());
    w.run(1000, 1000 + DAY, MIN, |w, _| {
        w.bump_all(TokenKind::Valid, 1)
    });
    let now = 1000 + DAY;
    let a = w.assess("legacy-tokens", now);
    assert_eq!((a.state, a.reason), (State::Blind, Reason::WarmingUp));
    // Observed since t=1000: ready 7 days later, less the tolerance.
    let tolerance = verdict::DEFAULT_TOLERANCE.as_secs() as i64;
    assert_eq!(a.ready_in, Some(secs(1000 + 7 * DAY - tolerance - now)));
    assert!((a.coverage - 1.0 / 7.0).abs() < 1e-9, "{}", a.coverage);
    // The 24 h cutover is observed by now, with valid tokens as evidence.
    w.check(
        "token-expiry-extension",
        now,
        State::Ready,
        Reason::QuietForWindow,
    );
}

#[test]
fn hole_inside_the_window_keeps_it_blind_until_it_leaves() {
    let mut w = World::new(&[("a", &ALL_KINDS)], week_specs());
    w.run(0, 8 * DAY, 30, |w, _| w.bump_all(TokenKind::Valid, 1));
    w.check(
        "legacy-tokens",
        8 * DAY,
        State::Ready,
        Reason::QuietForWindow,
    );
    // A 20-minute outage of the auditor's view ends with the counters lower
    // than before (DELETE /metrics): the whole interval is a hole.
    w.instances.get_mut("a").unwrap().up = false;
    w.run(8 * DAY + 30, 8 * DAY + 20 * MIN, 30, |_, _| {});
    w.check(
        "legacy-tokens",
        8 * DAY + 4 * MIN,
        State::Ready,
        Reason::QuietForWindow,
    );
    w.check(
        "legacy-tokens",
        8 * DAY + 20 * MIN,
        State::Blind,
        Reason::TargetDown,
    );
    let inst = w.instances.get_mut("a").unwrap();
    inst.up = true;
    inst.counters.values_mut().for_each(|c| *c = 0);
    let back = 8 * DAY + 20 * MIN + 30;
    w.run(back, back + HOUR, 30, |w, _| {
        w.bump_all(TokenKind::Valid, 1)
    });
    let a = w.assess("legacy-tokens", back);
    assert_eq!((a.state, a.reason), (State::Blind, Reason::CoverageGap));
    let tolerance = verdict::DEFAULT_TOLERANCE.as_secs() as i64;
    assert_eq!(a.ready_in, Some(secs(back - tolerance + 7 * DAY - back)));
    // Once the hole has left the window (less the tolerance) it is ready again.
    w.run(back + HOUR, back + 7 * DAY, 30 * MIN, |_, _| {});
    w.check(
        "legacy-tokens",
        back + 7 * DAY,
        State::Ready,
        Reason::QuietForWindow,
    );
}

#[test]
fn flat_valid_counter_gives_no_signal() {
    let mut w = World::new(&[("a", &ALL_KINDS), ("b", &ALL_KINDS)], week_specs());
    w.run(0, 2 * DAY, MIN, |_, _| {});
    let a = w.assess("token-expiry-extension", 2 * DAY);
    assert_eq!((a.state, a.reason), (State::NoSignal, Reason::NoEvidence));
    assert_eq!((a.evidence_increase, a.ready_in), (Some(0), None));
    // One valid use on one instance is evidence for the whole window.
    w.bump("b", TokenKind::Valid, 1);
    w.run(2 * DAY + MIN, 2 * DAY + MIN, MIN, |_, _| {});
    w.check(
        "token-expiry-extension",
        2 * DAY + MIN,
        State::Ready,
        Reason::QuietForWindow,
    );
}

#[test]
fn ready_then_one_use_is_in_use_and_one_regression() {
    let mut w = World::new(
        &[("a", &ALL_KINDS), ("b", &ALL_KINDS), ("c", &ALL_KINDS)],
        week_specs(),
    );
    w.run(0, 25 * HOUR, MIN, |w, _| w.bump_all(TokenKind::Valid, 1));
    w.check(
        "token-expiry-extension",
        25 * HOUR,
        State::Ready,
        Reason::QuietForWindow,
    );
    // A stale client on only one of three instances.
    w.run(25 * HOUR + MIN, 26 * HOUR, MIN, |w, t| {
        w.bump_all(TokenKind::Valid, 1);
        if t == 25 * HOUR + 2 * MIN {
            w.bump("c", TokenKind::Stale, 1);
        }
    });
    let a = w.assess("token-expiry-extension", 26 * HOUR);
    assert_eq!((a.state, a.increase), (State::InUse, 1));
    assert_eq!(w.trackers["token-expiry-extension"].regressions(), 1);
    let regressions: Vec<_> = w.transitions.iter().filter(|(_, _, _, r)| *r).collect();
    assert_eq!(regressions.len(), 1, "{:?}", w.transitions);
}

#[test]
fn legacy_auto_tokens_are_blind_on_apiservers_before_1_29() {
    let mut w = World::new(&[("old", &PRE_129), ("new", &ALL_KINDS)], week_specs());
    w.run(0, 8 * DAY, 30 * MIN, |w, _| w.bump_all(TokenKind::Valid, 1));
    w.check(
        "legacy-auto-tokens",
        8 * DAY,
        State::Blind,
        Reason::MetricAbsent,
    );
    w.check(
        "legacy-tokens",
        8 * DAY,
        State::Ready,
        Reason::QuietForWindow,
    );
    assert_eq!(w.assess("legacy-auto-tokens", 8 * DAY).ready_in, None);
}

#[test]
fn apiserver_restart_is_absorbed_without_a_false_verdict() {
    let mut w = World::new(&[("a", &ALL_KINDS), ("b", &ALL_KINDS)], week_specs());
    w.run(0, 8 * DAY, 30, |w, _| w.bump_all(TokenKind::Valid, 1));
    w.check(
        "legacy-tokens",
        8 * DAY,
        State::Ready,
        Reason::QuietForWindow,
    );
    // b restarts 10 s after a scrape; its new process then serves a legacy client.
    let restart = 8 * DAY + 10;
    w.run(8 * DAY + 30, 8 * DAY + HOUR, 30, |w, t| {
        if t == 8 * DAY + 30 {
            let b = w.instances.get_mut("b").unwrap();
            b.start = restart;
            b.counters.values_mut().for_each(|c| *c = 0);
        }
        w.bump_all(TokenKind::Valid, 1);
    });
    // A quiet restart: still ready (the 10 s hole is within tolerance).
    w.check(
        "legacy-tokens",
        8 * DAY + HOUR,
        State::Ready,
        Reason::QuietForWindow,
    );
    assert_eq!(w.ledger.instance("b").unwrap().resets_total(), 1);
    // The stitched total counts every use, across the restart.
    assert_eq!(
        w.ledger.family_total(TokenKind::Valid.family()),
        w.truth[&TokenKind::Valid]
    );
    // A use right after a restart counts as use, not as a reset artefact.
    w.run(8 * DAY + HOUR + 30, 8 * DAY + HOUR + 30, 30, |w, _| {
        let b = w.instances.get_mut("b").unwrap();
        b.start = 8 * DAY + HOUR + 20;
        b.counters.values_mut().for_each(|c| *c = 0);
        w.bump("b", TokenKind::Legacy, 2);
    });
    let a = w.assess("legacy-tokens", 8 * DAY + HOUR + 30);
    assert_eq!((a.state, a.increase), (State::InUse, 2));
}

#[test]
fn no_scraped_instance_is_blind() {
    let w = World::new(&[], week_specs());
    w.check("legacy-tokens", 0, State::Blind, Reason::NoTargets);
    assert_eq!(w.assess("legacy-tokens", 0).coverage, 0.0);
}

#[test]
fn removed_instance_counts_until_its_unobserved_tail_leaves_the_window() {
    let mut w = World::new(&[("a", &ALL_KINDS), ("b", &ALL_KINDS)], week_specs());
    w.run(0, 25 * HOUR, MIN, |w, _| w.bump_all(TokenKind::Valid, 1));
    w.check(
        "token-expiry-extension",
        25 * HOUR,
        State::Ready,
        Reason::QuietForWindow,
    );
    // b is removed 50 minutes after its last scrape was missed: its unscraped
    // tail is longer than the tolerance.
    w.instances.get_mut("b").unwrap().up = false;
    w.run(25 * HOUR + MIN, 26 * HOUR, MIN, |w, _| {
        w.bump_all(TokenKind::Valid, 1)
    });
    w.ledger.remove("b", Timestamp::from_secs(26 * HOUR));
    w.instances.remove("b");
    w.check(
        "token-expiry-extension",
        26 * HOUR,
        State::Blind,
        Reason::CoverageGap,
    );
    w.run(26 * HOUR, 50 * HOUR, 30 * MIN, |w, _| {
        w.bump_all(TokenKind::Valid, 1)
    });
    w.check(
        "token-expiry-extension",
        50 * HOUR,
        State::Ready,
        Reason::QuietForWindow,
    );
}

#[test]
fn every_instance_having_left_is_blind_not_ready() {
    let mut w = World::new(&[("a", &ALL_KINDS), ("b", &ALL_KINDS)], week_specs());
    w.run(0, 8 * DAY, 30 * MIN, |w, _| w.bump_all(TokenKind::Valid, 1));
    w.check(
        "legacy-tokens",
        8 * DAY,
        State::Ready,
        Reason::QuietForWindow,
    );
    // Both leave (e.g. discovery lists none): observed up to their departure,
    // yet nothing observes whatever serves clients now.
    for name in ["a", "b"] {
        w.ledger.remove(name, Timestamp::from_secs(8 * DAY));
        w.instances.remove(name);
    }
    for t in [8 * DAY, 8 * DAY + HOUR, 10 * DAY] {
        w.check("legacy-tokens", t, State::Blind, Reason::NoTargets);
        w.check("token-expiry-extension", t, State::Blind, Reason::NoTargets);
    }
}

#[test]
fn legacy_uses_the_split_counters_did_not_classify_keep_legacy_auto_tokens_from_ready() {
    // --service-account-lookup=false: legacy uses are counted, never split
    // into auto/manual/invalid, so the auto counter's silence proves nothing.
    let mut w = World::new(&[("a", &ALL_KINDS)], week_specs());
    w.run(0, 8 * DAY, 30 * MIN, |w, t| {
        if t == 7 * DAY {
            w.bump_all(TokenKind::Legacy, 2);
        }
    });
    let a = w.assess("legacy-auto-tokens", 8 * DAY);
    assert_eq!(
        (a.state, a.reason, a.unattributed),
        (State::NoSignal, Reason::UnattributedUses, Some(2))
    );
    w.check(
        "legacy-tokens",
        8 * DAY,
        State::InUse,
        Reason::QuietCounterIncreased,
    );
    // Uses that were classified (manual ones) leave nothing unattributed.
    let mut w = World::new(&[("a", &ALL_KINDS)], week_specs());
    w.run(0, 8 * DAY, 30 * MIN, |w, t| {
        if t == 7 * DAY {
            w.bump_all(TokenKind::Legacy, 2);
            w.bump_all(TokenKind::LegacyManual, 2);
        }
    });
    let a = w.assess("legacy-auto-tokens", 8 * DAY);
    assert_eq!((a.state, a.unattributed), (State::Ready, Some(0)));
}
