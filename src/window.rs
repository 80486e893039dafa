//! Window arithmetic over time intervals: how much of a window is unobserved,
//! and when a window sliding forward will have shed enough of it.
//!
//! Pure functions over [`Interval`]s; `now` is always an argument.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// The standard windows over which token uses are reported
/// (`cutover_token_uses_increase{window}`, the status' `increases`), each
/// spelled once here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IncreaseWindow {
    /// The last 5 minutes.
    FiveMinutes,
    /// The last hour.
    Hour,
    /// The last 24 hours.
    Day,
    /// The last 7 days.
    Week,
}

impl IncreaseWindow {
    /// Every window, shortest first.
    pub const ALL: [IncreaseWindow; 4] = [
        IncreaseWindow::FiveMinutes,
        IncreaseWindow::Hour,
        IncreaseWindow::Day,
        IncreaseWindow::Week,
    ];

    /// The `window` label.
    pub const fn label(self) -> &'static str {
        match self {
            IncreaseWindow::FiveMinutes => "5m",
            IncreaseWindow::Hour => "1h",
            IncreaseWindow::Day => "24h",
            IncreaseWindow::Week => "7d",
        }
    }

    /// Its length.
    pub const fn duration(self) -> Duration {
        match self {
            IncreaseWindow::FiveMinutes => Duration::from_secs(300),
            IncreaseWindow::Hour => Duration::from_secs(3_600),
            IncreaseWindow::Day => Duration::from_secs(86_400),
            IncreaseWindow::Week => Duration::from_secs(7 * 86_400),
        }
    }
}

/// A half-open interval of time `(from, to]`, as the increments of a counter
/// between two samples are: what happened after `from`, up to and including `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Interval {
    /// Exclusive start.
    pub from: Timestamp,
    /// Inclusive end.
    pub to: Timestamp,
}

impl Interval {
    /// The interval `(from, to]`; an inverted pair yields an empty interval at `from`.
    pub fn new(from: Timestamp, to: Timestamp) -> Interval {
        Interval {
            from,
            to: to.max(from),
        }
    }

    /// Its length.
    pub fn len(self) -> Duration {
        self.to.since(self.from)
    }

    /// True when it has no length.
    pub fn is_empty(self) -> bool {
        self.to <= self.from
    }

    /// The part of it inside `(start, end]`, possibly empty.
    pub fn clip(self, start: Timestamp, end: Timestamp) -> Interval {
        Interval::new(self.from.max(start), self.to.min(end))
    }
}

/// Total length of the parts of `intervals` inside `(start, end]`.
///
/// The intervals must not overlap each other (the ledger builds them so).
pub fn measure_within(intervals: &[Interval], start: Timestamp, end: Timestamp) -> Duration {
    intervals
        .iter()
        .map(|i| i.clip(start, end).len())
        .sum::<Duration>()
}

/// The earliest time `t >= now` at which a window of length `window` ending at
/// `t` contains at most `tolerance` of the given unobserved intervals, assuming
/// no new unobserved time after `now`.
///
/// `unobserved` must be disjoint; order does not matter. The result is `now`
/// when the window is already good enough.
pub fn earliest_tolerable_end(
    unobserved: &[Interval],
    window: Duration,
    tolerance: Duration,
    now: Timestamp,
) -> Timestamp {
    let mut sorted: Vec<Interval> = unobserved
        .iter()
        .map(|i| i.clip(Timestamp(i64::MIN), now))
        .filter(|i| !i.is_empty())
        .collect();
    sorted.sort();
    // Walk back from the newest unobserved time: the window may start no
    // earlier than the point where `tolerance` of it has been used up.
    let mut budget = tolerance;
    let mut start = Timestamp(i64::MIN);
    for interval in sorted.iter().rev() {
        let len = interval.len();
        if len > budget {
            start = interval.to - budget;
            break;
        }
        budget -= len;
    }
    if start == Timestamp(i64::MIN) {
        return now;
    }
    (start + window).max(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(from: i64, to: i64) -> Interval {
        Interval::new(Timestamp::from_secs(from), Timestamp::from_secs(to))
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn measure_clips_to_the_window() {
        let holes = [iv(0, 10), iv(20, 30), iv(50, 60)];
        let check = |start, end, expected| {
            assert_eq!(
                measure_within(
                    &holes,
                    Timestamp::from_secs(start),
                    Timestamp::from_secs(end)
                ),
                secs(expected),
                "({start}, {end}]"
            );
        };
        check(0, 100, 30);
        check(5, 25, 10);
        check(30, 50, 0);
        check(55, 100, 5);
        check(-100, -50, 0);
    }

    #[test]
    fn earliest_tolerable_end_slides_holes_out() {
        let check = |holes: &[Interval], window: u64, tol: u64, now: i64, expected: i64| {
            assert_eq!(
                earliest_tolerable_end(holes, secs(window), secs(tol), Timestamp::from_secs(now)),
                Timestamp::from_secs(expected),
                "{holes:?} window {window} tol {tol} now {now}"
            );
        };
        // Nothing unobserved: good now.
        check(&[], 100, 0, 500, 500);
        // A hole within tolerance: good now.
        check(&[iv(450, 455)], 100, 10, 500, 500);
        // A 20 s hole with 0 tolerance must leave the window entirely.
        check(&[iv(450, 470)], 100, 0, 500, 570);
        // With 5 s tolerance, 5 s of it may stay in: the window may start at 465.
        check(&[iv(450, 470)], 100, 5, 500, 565);
        // Never observed before 400: the window may start at 400.
        check(&[iv(i64::MIN / 2000, 400)], 100, 0, 450, 500);
        // Two holes, budget spent on the newer one first.
        check(&[iv(420, 430), iv(460, 466)], 100, 10, 500, 526);
        // Unobserved time in the future is ignored (clipped at now).
        check(&[iv(490, 600)], 100, 0, 500, 600);
    }
}
