//! The verdict per cutover: `blind`, `in_use`, `no_signal` or `ready`, with
//! the reason, the numbers behind it, and how long until it could be ready.
//!
//! [`assess`] is a pure function of a [`CutoverSpec`], the [`Ledger`] and
//! `now`. [`Tracker`] adds what depends on history: since when the state
//! holds and how many times a ready cutover regressed.
//!
//! The rule that matters most: `ready` only with evidence. Every instance that
//! could have served a client inside the window must have been observed for
//! all of it (up to the tolerance), every quiet counter must be present and
//! flat, and the evidence counter, when the cutover has one, must have moved.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cutover::{BuiltinCutover, Cutover};
use crate::ledger::{InstanceLedger, Ledger, unobserved_time};
use crate::time::Timestamp;
use crate::window::{self, Interval};

/// What decides one cutover.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CutoverSpec {
    /// Which cutover: its name is the `cutover` label (`legacy-tokens`, ...).
    pub name: Cutover,
    /// Families that must not increase inside the window.
    pub quiet: Vec<String>,
    /// A family that must increase inside the window for silence to mean
    /// anything; `None` when silence is evidence enough.
    pub evidence: Option<String>,
    /// How long the quiet counters must have stayed flat.
    pub window: Duration,
    /// How much unobserved time per instance the window may contain.
    pub tolerance: Duration,
    /// A total whose increase the quiet families and their siblings must
    /// account for: uses the split counters did not classify could be of
    /// the quiet kind, so silence of the quiet families proves nothing.
    #[serde(default)]
    pub attribution: Option<Attribution>,
}

/// The total counter and the counters that split it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribution {
    /// The family counting every use (`serviceaccount_legacy_tokens_total`).
    pub total: String,
    /// The families that classify those uses (auto, manual, invalid).
    pub parts: Vec<String>,
}

/// Default tolerance of unobserved time per instance inside a window: a few
/// scrape intervals, enough to absorb an apiserver restart.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(300);

impl CutoverSpec {
    /// `legacy-tokens`: Secret-based tokens must be unused (all versions).
    pub fn legacy_tokens(window: Duration, tolerance: Duration) -> CutoverSpec {
        BuiltinCutover::LegacyTokens.spec(window, tolerance)
    }

    /// `legacy-auto-tokens` (1.29+): auto-generated legacy tokens, valid or
    /// invalidated, must be unused.
    pub fn legacy_auto_tokens(window: Duration, tolerance: Duration) -> CutoverSpec {
        BuiltinCutover::LegacyAutoTokens.spec(window, tolerance)
    }

    /// `token-expiry-extension`: no stale token used, while valid extended
    /// tokens prove that stale ones would have been counted.
    pub fn token_expiry_extension(window: Duration, tolerance: Duration) -> CutoverSpec {
        BuiltinCutover::TokenExpiryExtension.spec(window, tolerance)
    }

    /// The built-in cutovers with their production windows.
    pub fn builtin() -> Vec<CutoverSpec> {
        BuiltinCutover::ALL
            .iter()
            .map(|c| c.spec(c.default_window(), DEFAULT_TOLERANCE))
            .collect()
    }
}

/// The verdict states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Not enough observation to say anything.
    Blind,
    /// A quiet counter increased inside the window.
    InUse,
    /// Quiet, but nothing proves that uses would have been counted.
    NoSignal,
    /// Fully observed window, zero increase, evidence present.
    Ready,
}

impl State {
    /// Every state, in the order of the exported `state` label.
    pub const ALL: [State; 4] = [State::Blind, State::InUse, State::NoSignal, State::Ready];

    /// The exported label value.
    pub const fn label(self) -> &'static str {
        match self {
            State::Blind => "blind",
            State::InUse => "in_use",
            State::NoSignal => "no_signal",
            State::Ready => "ready",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Why the verdict is what it is: a bounded set, exported as a label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// No apiserver instance has been scraped successfully.
    NoTargets,
    /// A needed family is absent on an instance (older version, disabled metric).
    MetricAbsent,
    /// The window has not been observed long enough yet.
    WarmingUp,
    /// Holes inside the window exceed the tolerance.
    CoverageGap,
    /// An instance has gone unscraped for longer than the tolerance.
    TargetDown,
    /// An instance listed as a target inside the window was never scraped
    /// successfully: its counters were never seen.
    TargetNeverScraped,
    /// An instance address reached more than one apiserver process inside
    /// the window (a Service address): its counters cannot be followed.
    MixedInstances,
    /// A quiet counter increased inside the window.
    QuietCounterIncreased,
    /// The evidence counter did not increase inside the window.
    NoEvidence,
    /// Uses of the total counter inside the window that its split counters
    /// did not classify: they could be of the quiet kind.
    UnattributedUses,
    /// Quiet for a fully observed window, with evidence.
    QuietForWindow,
}

impl Reason {
    /// Every reason, in the order of the exported `reason` label.
    pub const ALL: [Reason; 11] = [
        Reason::NoTargets,
        Reason::MetricAbsent,
        Reason::WarmingUp,
        Reason::CoverageGap,
        Reason::TargetDown,
        Reason::TargetNeverScraped,
        Reason::MixedInstances,
        Reason::QuietCounterIncreased,
        Reason::NoEvidence,
        Reason::UnattributedUses,
        Reason::QuietForWindow,
    ];

    /// The exported label value.
    pub const fn label(self) -> &'static str {
        match self {
            Reason::NoTargets => "no_targets",
            Reason::MetricAbsent => "metric_absent",
            Reason::WarmingUp => "warming_up",
            Reason::CoverageGap => "coverage_gap",
            Reason::TargetDown => "target_down",
            Reason::TargetNeverScraped => "target_never_scraped",
            Reason::MixedInstances => "mixed_instances",
            Reason::QuietCounterIncreased => "quiet_counter_increased",
            Reason::NoEvidence => "no_evidence",
            Reason::UnattributedUses => "unattributed_uses",
            Reason::QuietForWindow => "quiet_for_window",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The stateless part of a verdict, computed from the ledger at `now`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    /// The state.
    pub state: State,
    /// Why.
    pub reason: Reason,
    /// End of the latest interval in which a quiet counter increased, if any
    /// is still in the ledger.
    pub last_use: Option<Timestamp>,
    /// Increase of the quiet counters inside the window, all instances.
    pub increase: u64,
    /// Increase of the evidence counter inside the window, if there is one.
    pub evidence_increase: Option<u64>,
    /// Uses of the attribution total inside the window that its parts did
    /// not classify, if the cutover has an attribution.
    #[serde(default)]
    pub unattributed: Option<u64>,
    /// Observed share of the window on the least-observed instance (0..=1).
    pub coverage: f64,
    /// Time until `ready` if nothing changes; `None` when it cannot turn
    /// ready without a change (no signal, target down, metric absent).
    pub ready_in: Option<Duration>,
    /// Instances that counted for this verdict.
    pub instances: usize,
    /// The instances behind a `blind` reason (never scraped, down, mixing,
    /// a family absent, unobserved beyond the tolerance), by name.
    #[serde(default)]
    pub blocking: Vec<String>,
}

/// One instance as the verdict sees it: observed, or listed and never scraped.
struct Seen<'a> {
    name: &'a str,
    /// Its ledger; `None` when it was never scraped successfully.
    ledger: Option<&'a InstanceLedger>,
    /// Still a target (not departed).
    current: bool,
    unobserved: Vec<Interval>,
    missing: Duration,
}

/// Assesses one cutover from the ledger at `now`.
pub fn assess(spec: &CutoverSpec, ledger: &Ledger, now: Timestamp) -> Assessment {
    let start = now - spec.window;
    // Instances that could have served a client inside the window: current
    // ones, ones that left inside it, and ones listed but never scraped.
    let observed = ledger
        .instances()
        .filter(|(_, l)| l.gone_at().is_none_or(|gone| gone > start))
        .map(|(name, l)| Seen {
            name,
            ledger: Some(l),
            current: l.gone_at().is_none(),
            unobserved: l.unobserved(start, now),
            missing: unobserved_time(l, start, now),
        });
    let never_scraped = ledger
        .listed_unscraped()
        .filter(|(_, l)| l.gone_at.is_none_or(|gone| gone > start))
        .map(|(name, l)| {
            let unobserved = l.unobserved(start, now);
            Seen {
                name,
                ledger: None,
                current: l.gone_at.is_none(),
                missing: window::measure_within(&unobserved, start, now),
                unobserved,
            }
        });
    let relevant: Vec<Seen<'_>> = observed.chain(never_scraped).collect();

    let increase: u64 = spec
        .quiet
        .iter()
        .map(|family| ledger.family_increase(family, start))
        .sum();
    let last_use = spec
        .quiet
        .iter()
        .flat_map(|family| {
            ledger
                .instances()
                .filter_map(|(_, l)| l.last_increase(family))
        })
        .max();
    // Evidence counts only uses known to lie inside the window.
    let evidence_increase = spec
        .evidence
        .as_deref()
        .map(|family| ledger.family_increase_inside(family, start));
    let unattributed = spec.attribution.as_ref().map(|a| {
        let parts: u64 = a
            .parts
            .iter()
            .map(|f| ledger.family_increase(f, start))
            .sum();
        ledger
            .family_increase(&a.total, start)
            .saturating_sub(parts)
    });

    // Coverage: each relevant instance's observed share of the window.
    let mut coverage: f64 = if relevant.is_empty() { 0.0 } else { 1.0 };
    for seen in &relevant {
        let share = 1.0 - seen.missing.as_secs_f64() / spec.window.as_secs_f64().max(1e-9);
        coverage = coverage.min(share.clamp(0.0, 1.0));
    }
    let covered_at = relevant
        .iter()
        .map(|seen| {
            window::earliest_tolerable_end(&seen.unobserved, spec.window, spec.tolerance, now)
        })
        .max()
        .unwrap_or(now);
    let quiet_at = last_use.map_or(now, |t| t + spec.window).max(now);
    let ready_at = covered_at.max(quiet_at);

    let names = |pred: &dyn Fn(&Seen<'_>) -> bool| -> Vec<String> {
        relevant
            .iter()
            .filter(|s| pred(s))
            .map(|s| s.name.to_owned())
            .collect()
    };
    let absent = names(&|s| {
        s.current
            && s.ledger.is_some_and(|l| {
                spec.quiet
                    .iter()
                    .chain(spec.evidence.iter())
                    .any(|family| !l.has_family(family))
            })
    });
    let mixed = names(&|s| s.ledger.is_some_and(|l| l.mixed_after(start).is_some()));
    let unscraped = names(&|s| s.ledger.is_none() && (s.current || s.missing > spec.tolerance));
    // A current target never scraped cannot turn ready until it is.
    let unscraped_now = relevant.iter().any(|s| s.ledger.is_none() && s.current);
    let down = names(&|s| {
        s.current
            && s.ledger
                .is_some_and(|l| l.unscraped_for(now) > spec.tolerance)
    });
    let over = names(&|s| s.missing > spec.tolerance);
    // Unobserved mostly because observation began inside the window.
    let warming_up = relevant.iter().any(|s| {
        s.missing > spec.tolerance
            && s.ledger
                .is_some_and(|l| l.may_predate_coverage() && l.covered_from() > start)
    });

    let mut blocking = Vec::new();
    // With no current target, nothing observes the apiservers serving now:
    // every instance having left proves nothing about the present.
    let (state, reason, ready_in) = if !relevant.iter().any(|s| s.current) {
        (State::Blind, Reason::NoTargets, None)
    } else if increase > 0 {
        let ready_in = (down.is_empty() && absent.is_empty() && mixed.is_empty() && !unscraped_now)
            .then(|| ready_at.since(now));
        (State::InUse, Reason::QuietCounterIncreased, ready_in)
    } else if !absent.is_empty() {
        blocking = absent;
        (State::Blind, Reason::MetricAbsent, None)
    } else if !mixed.is_empty() {
        blocking = mixed;
        (
            State::Blind,
            Reason::MixedInstances,
            Some(ready_at.since(now)),
        )
    } else if !unscraped.is_empty() {
        // Listed and never scraped: its counters were never seen, so nothing
        // about it is proven, even within the tolerance.
        blocking = unscraped;
        let ready_in = (!unscraped_now).then(|| ready_at.since(now));
        (State::Blind, Reason::TargetNeverScraped, ready_in)
    } else if !down.is_empty() {
        blocking = down;
        (State::Blind, Reason::TargetDown, None)
    } else if !over.is_empty() {
        blocking = over;
        let reason = if warming_up {
            Reason::WarmingUp
        } else {
            Reason::CoverageGap
        };
        (State::Blind, reason, Some(ready_at.since(now)))
    } else if evidence_increase == Some(0) {
        (State::NoSignal, Reason::NoEvidence, None)
    } else if unattributed.is_some_and(|n| n > 0) {
        (State::NoSignal, Reason::UnattributedUses, None)
    } else {
        (State::Ready, Reason::QuietForWindow, Some(Duration::ZERO))
    };
    Assessment {
        state,
        reason,
        last_use,
        increase,
        evidence_increase,
        unattributed,
        coverage,
        ready_in,
        instances: relevant.len(),
        blocking,
    }
}

/// A verdict: the assessment plus its history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The cutover.
    pub cutover: Cutover,
    /// The current assessment.
    pub assessment: Assessment,
    /// When the current state began.
    pub since: Timestamp,
    /// `ready` → `in_use` transitions so far.
    pub regressions: u64,
    /// When the latest regression happened.
    pub last_regression: Option<Timestamp>,
}

/// A change of state, for logs and alerts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The cutover.
    pub cutover: Cutover,
    /// The previous state; `None` on the first evaluation.
    pub from: Option<State>,
    /// The new state.
    pub to: State,
    /// Why.
    pub reason: Reason,
    /// Whether this transition is a regression (use after `ready`).
    pub regression: bool,
}

/// Keeps one cutover's verdict history across evaluations.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Tracker {
    current: Option<(State, Timestamp)>,
    regressions: u64,
    #[serde(default)]
    last_regression: Option<Timestamp>,
    /// Set when `ready` was reached and no use has been seen since; a use
    /// then is a regression even if a `blind` spell came in between.
    ready_since_last_use: bool,
}

impl Tracker {
    /// Records an assessment made at `now`; returns the transition, if any.
    pub fn update(
        &mut self,
        cutover: &Cutover,
        assessment: &Assessment,
        now: Timestamp,
    ) -> Option<Transition> {
        let previous = self.current.map(|(state, _)| state);
        let mut regression = false;
        match assessment.state {
            State::Ready => self.ready_since_last_use = true,
            State::InUse => {
                if self.ready_since_last_use && previous != Some(State::InUse) {
                    regression = true;
                    self.regressions += 1;
                    self.last_regression = Some(now);
                }
                self.ready_since_last_use = false;
            }
            State::Blind | State::NoSignal => {}
        }
        if previous == Some(assessment.state) {
            return None;
        }
        self.current = Some((assessment.state, now));
        Some(Transition {
            cutover: cutover.clone(),
            from: previous,
            to: assessment.state,
            reason: assessment.reason,
            regression,
        })
    }

    /// The verdict for the latest assessment.
    pub fn verdict(&self, cutover: &Cutover, assessment: Assessment, now: Timestamp) -> Verdict {
        Verdict {
            cutover: cutover.clone(),
            since: self.current.map_or(now, |(_, since)| since),
            regressions: self.regressions,
            last_regression: self.last_regression,
            assessment,
        }
    }

    /// `ready` → `in_use` transitions so far.
    pub fn regressions(&self) -> u64 {
        self.regressions
    }
}
