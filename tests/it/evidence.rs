//! No `ready` without evidence, on synthetic time: the ledger and the
//! verdict against the situations that used to give a false `ready`:
//! instances listed and never scraped, instances that come back,
//! evidence straddling the window start, pages without the token families,
//! a clock stepping back, and an address that mixes apiserver processes.

use std::collections::BTreeMap;
use std::time::Duration;

use cutover_auditor::families::TokenKind;
use cutover_auditor::ledger::{Ledger, Observation, SeriesKey};
use cutover_auditor::time::Timestamp;
use cutover_auditor::verdict::{self, Assessment, CutoverSpec, Reason, State};

const MIN: i64 = 60;
const HOUR: i64 = 3_600;
const DAY: i64 = 86_400;

fn t(s: i64) -> Timestamp {
    Timestamp::from_secs(s)
}

fn legacy_spec() -> CutoverSpec {
    CutoverSpec::legacy_tokens(Duration::from_secs(HOUR as u64), Duration::from_secs(300))
}

fn expiry_spec() -> CutoverSpec {
    CutoverSpec::token_expiry_extension(Duration::from_secs(HOUR as u64), Duration::from_secs(300))
}

/// A page of a process started at `start` with these counters.
fn page(start: i64, legacy: u64, stale: u64, valid: u64) -> Observation {
    Observation {
        start_time: Some(t(start)),
        values: BTreeMap::from([
            (SeriesKey::family(TokenKind::Legacy.family()), legacy),
            (SeriesKey::family(TokenKind::Stale.family()), stale),
            (SeriesKey::family(TokenKind::Valid.family()), valid),
        ]),
    }
}

/// A 200 page of the same process without the token families.
fn page_without_families(start: i64) -> Observation {
    Observation {
        start_time: Some(t(start)),
        values: BTreeMap::new(),
    }
}

/// Scrapes `instance` every 30 s over `[from, to]` with constant counters,
/// except `valid`, which grows by one per scrape.
fn scrape_quietly(ledger: &mut Ledger, instance: &str, from: i64, to: i64, legacy: u64) {
    let mut s = from;
    while s <= to {
        ledger.observe(instance, t(s), page(-DAY, legacy, 0, s as u64));
        s += 30;
    }
}

fn assess(spec: &CutoverSpec, ledger: &Ledger, now: i64) -> Assessment {
    verdict::assess(spec, ledger, t(now))
}

#[test]
fn a_listed_instance_never_scraped_blocks_ready_and_is_named() {
    let mut ledger = Ledger::default();
    ledger.list("a:6443", t(0));
    ledger.list("b:6443", t(0));
    // a answers; b answers 500 / a wrong certificate / 403 from the start.
    scrape_quietly(&mut ledger, "a:6443", 0, 3 * HOUR, 5);
    let a = assess(&legacy_spec(), &ledger, 3 * HOUR);
    assert_eq!(
        (a.state, a.reason),
        (State::Blind, Reason::TargetNeverScraped),
        "{a:?}"
    );
    assert_eq!(a.blocking, vec!["b:6443".to_owned()]);
    assert_eq!(a.ready_in, None, "cannot turn ready without a scrape of b");
    assert_eq!(a.instances, 2);

    // Without b in the target list the same evidence is ready.
    let mut only_a = Ledger::default();
    only_a.list("a:6443", t(0));
    scrape_quietly(&mut only_a, "a:6443", 0, 3 * HOUR, 5);
    assert_eq!(
        assess(&legacy_spec(), &only_a, 3 * HOUR).state,
        State::Ready
    );
}

#[test]
fn a_joining_instance_whose_first_scrapes_fail_is_never_ready_while_used() {
    let mut ledger = Ledger::default();
    ledger.list("a:6443", t(0));
    scrape_quietly(&mut ledger, "a:6443", 0, 2 * HOUR, 5);
    assert_eq!(
        assess(&legacy_spec(), &ledger, 2 * HOUR).state,
        State::Ready
    );
    // b joins at 2h (an old process, started a day ago) and its scrapes
    // fail for 20 minutes while a client uses it.
    ledger.list("b:6443", t(2 * HOUR));
    for now in (2 * HOUR..2 * HOUR + 20 * MIN).step_by(30) {
        scrape_quietly(&mut ledger, "a:6443", now, now, 5);
        let a = assess(&legacy_spec(), &ledger, now);
        assert_ne!(a.state, State::Ready, "at {now}: {a:?}");
        assert_eq!(a.reason, Reason::TargetNeverScraped, "at {now}: {a:?}");
    }
    // The first good scrape of b: a baseline of an old process. Its time
    // before the scrape is unobserved, so it is not ready yet.
    let first = 2 * HOUR + 20 * MIN;
    ledger.observe("b:6443", t(first), page(-DAY, 40, 0, 0));
    scrape_quietly(&mut ledger, "a:6443", first, first, 5);
    let a = assess(&legacy_spec(), &ledger, first);
    assert_eq!(a.state, State::Blind, "{a:?}");
    assert_eq!(a.blocking, vec!["b:6443".to_owned()]);
}

#[test]
fn a_process_started_after_the_listing_is_covered_from_its_start_only() {
    let mut ledger = Ledger::default();
    ledger.list("a:6443", t(0));
    ledger.list("b:6443", t(0));
    scrape_quietly(&mut ledger, "a:6443", 0, 4 * HOUR, 0);
    // b's process started at 30m; before it, b was listed and unobserved.
    let mut s = 30 * MIN + 10;
    while s <= 4 * HOUR {
        ledger.observe("b:6443", t(s), page(30 * MIN, 0, 0, 0));
        s += 30;
    }
    let b = ledger.instance("b:6443").expect("b observed");
    assert_eq!(
        b.unobserved(t(0), t(HOUR)),
        vec![cutover_auditor::window::Interval::new(t(0), t(30 * MIN))]
    );
    // Once the hole has left the window, ready.
    let a = assess(&legacy_spec(), &ledger, 4 * HOUR);
    assert_eq!(a.state, State::Ready, "{a:?}");
    let early = assess(&legacy_spec(), &ledger, HOUR);
    assert_eq!(
        (early.state, early.reason),
        (State::Blind, Reason::CoverageGap),
        "{early:?}"
    );
}

#[test]
fn a_departed_instance_listed_again_is_required_again() {
    let mut ledger = Ledger::default();
    ledger.list("a:6443", t(0));
    ledger.list("b:6443", t(0));
    scrape_quietly(&mut ledger, "a:6443", 0, 3 * HOUR, 0);
    scrape_quietly(&mut ledger, "b:6443", 0, HOUR, 0);
    ledger.remove("b:6443", t(HOUR + 10));
    // Back at 2h, and every scrape of it fails from then on.
    ledger.list("b:6443", t(2 * HOUR));
    let a = assess(&legacy_spec(), &ledger, 3 * HOUR);
    assert_eq!(
        (a.state, a.reason),
        (State::Blind, Reason::TargetDown),
        "{a:?}"
    );
    assert_eq!(a.blocking, vec!["b:6443".to_owned()]);
}

#[test]
fn a_listed_instance_that_left_unscraped_blocks_until_it_leaves_the_window() {
    let mut ledger = Ledger::default();
    ledger.list("a:6443", t(0));
    scrape_quietly(&mut ledger, "a:6443", 0, 4 * HOUR, 0);
    ledger.list("b:6443", t(HOUR));
    ledger.remove("b:6443", t(HOUR + 20 * MIN));
    let inside = assess(&legacy_spec(), &ledger, HOUR + 30 * MIN);
    assert_eq!(inside.reason, Reason::TargetNeverScraped, "{inside:?}");
    assert_eq!(
        inside.ready_in,
        Some(Duration::from_secs((45 * MIN) as u64)),
        "ready at 2h15m, once all but the tolerance of its 20 unobserved minutes left the window"
    );
    let after = assess(&legacy_spec(), &ledger, 3 * HOUR);
    assert_eq!(after.state, State::Ready, "{after:?}");
}

#[test]
fn evidence_straddling_the_window_start_does_not_count() {
    let mut ledger = Ledger::default();
    ledger.list("a:6443", t(0));
    // Valid tokens are used between 0 and 10m only (one interval: the
    // scrapes in between failed), then never again.
    ledger.observe("a:6443", t(0), page(-DAY, 0, 0, 100));
    ledger.observe("a:6443", t(10 * MIN), page(-DAY, 0, 0, 150));
    let mut s = 10 * MIN + 30;
    while s <= 2 * HOUR {
        ledger.observe("a:6443", t(s), page(-DAY, 0, 0, 150));
        s += 30;
    }
    // At 1h05m the window starts at 5m: the (0, 10m] increment straddles it.
    let a = assess(&expiry_spec(), &ledger, HOUR + 5 * MIN);
    assert_eq!(a.evidence_increase, Some(0), "{a:?}");
    assert_eq!(
        (a.state, a.reason),
        (State::NoSignal, Reason::NoEvidence),
        "{a:?}"
    );
    // While the increment lies wholly inside the window, it is evidence.
    let inside = assess(&expiry_spec(), &ledger, HOUR);
    assert_eq!(inside.evidence_increase, Some(50), "{inside:?}");
    assert_eq!(inside.state, State::Ready, "{inside:?}");
}

#[test]
fn uses_behind_pages_without_the_families_are_counted() {
    let mut ledger = Ledger::default();
    ledger.list("a:6443", t(0));
    scrape_quietly(&mut ledger, "a:6443", 0, 2 * HOUR, 100);
    // Pages without the families while the counter grows 100 -> 150.
    for s in (2 * HOUR + 30..2 * HOUR + 5 * MIN).step_by(30) {
        let out = ledger.observe("a:6443", t(s), page_without_families(-DAY));
        assert_eq!(out.incomplete.len(), 3, "{out:?}");
        assert!(out.increments.is_empty());
    }
    let end = 2 * HOUR + 5 * MIN;
    let out = ledger.observe("a:6443", t(end), page(-DAY, 150, 0, end as u64));
    assert_eq!(out.reset, None, "{out:?}");
    assert_eq!(
        out.increments,
        vec![
            (SeriesKey::family(TokenKind::Legacy.family()), 50),
            (SeriesKey::family(TokenKind::Valid.family()), 300),
        ],
        "the increase across the gap is counted"
    );
    let a = assess(&legacy_spec(), &ledger, 2 * HOUR + 5 * MIN);
    assert_eq!((a.state, a.increase), (State::InUse, 50), "{a:?}");
}

#[test]
fn pages_without_the_families_leave_the_time_unobserved() {
    let mut ledger = Ledger::default();
    ledger.list("a:6443", t(0));
    scrape_quietly(&mut ledger, "a:6443", 0, 2 * HOUR, 100);
    for s in (2 * HOUR + 30..=2 * HOUR + 20 * MIN).step_by(30) {
        ledger.observe("a:6443", t(s), page_without_families(-DAY));
    }
    let a = assess(&legacy_spec(), &ledger, 2 * HOUR + 20 * MIN);
    assert_eq!(
        (a.state, a.reason),
        (State::Blind, Reason::TargetDown),
        "{a:?}"
    );
    // The family is still known on the instance (absent is not zero).
    assert!(
        ledger
            .instance("a:6443")
            .unwrap()
            .has_family(TokenKind::Legacy.family())
    );
}

#[test]
fn a_restart_page_without_the_families_then_a_full_page_counts_from_the_start() {
    let mut ledger = Ledger::default();
    ledger.list("a:6443", t(0));
    scrape_quietly(&mut ledger, "a:6443", 0, HOUR, 100);
    // Restarted at 1h00m10s; its first page lacks the families.
    ledger.observe("a:6443", t(HOUR + 30), page_without_families(HOUR + 10));
    let out = ledger.observe("a:6443", t(HOUR + 60), page(HOUR + 10, 7, 0, 3));
    assert!(
        out.increments
            .contains(&(SeriesKey::family(TokenKind::Legacy.family()), 7)),
        "{out:?}"
    );
    let a = assess(&legacy_spec(), &ledger, HOUR + 60);
    assert_eq!((a.state, a.increase), (State::InUse, 7), "{a:?}");
}

#[test]
fn a_clock_stepping_back_keeps_evidence_flowing() {
    let mut ledger = Ledger::default();
    ledger.list("a:6443", t(0));
    scrape_quietly(&mut ledger, "a:6443", 0, 2 * HOUR, 0);
    // The clock steps back by 30 minutes; uses keep happening.
    let back = 2 * HOUR - 30 * MIN;
    let out = ledger.observe("a:6443", t(back), page(-DAY, 3, 0, 1));
    assert_eq!(out.clock_skew, Some(Duration::from_secs((30 * MIN) as u64)));
    assert_eq!(
        out.increments,
        vec![
            (SeriesKey::family(TokenKind::Legacy.family()), 3),
            (SeriesKey::family(TokenKind::Valid.family()), 1),
        ]
    );
    let later = ledger.observe("a:6443", t(back + 30), page(-DAY, 4, 0, 2));
    assert!(
        later
            .increments
            .contains(&(SeriesKey::family(TokenKind::Legacy.family()), 1)),
        "{later:?}"
    );
    let a = assess(&legacy_spec(), &ledger, back + 30);
    assert_eq!((a.state, a.increase), (State::InUse, 4), "{a:?}");
}

#[test]
fn an_address_that_mixes_processes_is_blind() {
    let mut ledger = Ledger::default();
    ledger.list("svc:443", t(0));
    // Two apiservers behind one address, answering in turn.
    let mut s = 0;
    let mut turn = 0;
    while s <= 2 * HOUR {
        let (start, legacy) = if turn % 2 == 0 {
            (-DAY, 10)
        } else {
            (-2 * DAY, 900)
        };
        ledger.observe("svc:443", t(s), page(start, legacy, 0, 0));
        s += 30;
        turn += if s % (10 * MIN) == 0 { 1 } else { 0 };
    }
    let a = assess(&legacy_spec(), &ledger, 2 * HOUR);
    assert_eq!(
        (a.state, a.reason),
        (State::Blind, Reason::MixedInstances),
        "{a:?}"
    );
    assert_eq!(a.blocking, vec!["svc:443".to_owned()]);
    // A genuine restart (a new start time) is no mixing.
    let mut single = Ledger::default();
    single.list("a:6443", t(0));
    scrape_quietly(&mut single, "a:6443", 0, HOUR, 0);
    single.observe("a:6443", t(HOUR + 30), page(HOUR + 10, 0, 0, 0));
    assert!(
        single
            .instance("a:6443")
            .unwrap()
            .mixed_after(t(0))
            .is_none()
    );
}

#[test]
fn an_instance_whose_first_pages_lacked_the_families_is_never_ready_on_its_old_uses() {
    let mut ledger = Ledger::default();
    ledger.list("a:6443", t(0));
    ledger.list("b:6443", t(0));
    scrape_quietly(&mut ledger, "a:6443", 0, 5 * HOUR, 0);
    // b, an old process, answers pages without the families for 2 hours
    // (absent is not zero: blind), then pages with a counter of 40 uses whose
    // time is unknown: anywhere since its first page.
    for s in (0..2 * HOUR).step_by(30) {
        ledger.observe("b:6443", t(s), page_without_families(-DAY));
    }
    let a = assess(&legacy_spec(), &ledger, 2 * HOUR - 30);
    assert_eq!(
        (a.state, a.reason),
        (State::Blind, Reason::MetricAbsent),
        "{a:?}"
    );
    for s in (2 * HOUR..=5 * HOUR).step_by(30) {
        ledger.observe("b:6443", t(s), page(-DAY, 40, 0, 0));
        let a = assess(&legacy_spec(), &ledger, s);
        // Blind until all but the 5-minute tolerance of those 2 hours left
        // the 1-hour window; never ready on a value of unknown age.
        if s < 3 * HOUR - 5 * MIN {
            assert_eq!(a.state, State::Blind, "at {s}: {a:?}");
        }
    }
    assert_eq!(
        assess(&legacy_spec(), &ledger, 5 * HOUR).state,
        State::Ready
    );
}
