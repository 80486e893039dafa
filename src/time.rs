//! Points in time as plain numbers, so the core can take `now` as an argument.
//!
//! The core never reads a clock. Every function that needs the current time
//! takes a [`Timestamp`]; tests build them from integers and run a week of
//! observation in microseconds.

use std::fmt;
use std::ops::{Add, Sub};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch (UTC).
///
/// Millisecond integers keep window arithmetic exact; `f64` seconds would not.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The epoch itself.
    pub const EPOCH: Timestamp = Timestamp(0);

    /// A timestamp from whole seconds since the epoch.
    pub const fn from_secs(secs: i64) -> Timestamp {
        Timestamp(secs * 1000)
    }

    /// A timestamp from milliseconds since the epoch.
    pub const fn from_millis(millis: i64) -> Timestamp {
        Timestamp(millis)
    }

    /// A timestamp from fractional seconds, as Prometheus pages carry them
    /// (`process_start_time_seconds 1.78246873027e+09`); `None` if not finite.
    pub fn from_secs_f64(secs: f64) -> Option<Timestamp> {
        let millis = (secs * 1000.0).round();
        (millis.is_finite() && millis.abs() < 9.0e15).then_some(Timestamp(millis as i64))
    }

    /// A timestamp from a [`SystemTime`]; times before the epoch clamp to it.
    pub fn from_system_time(t: SystemTime) -> Timestamp {
        let millis = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        Timestamp(i64::try_from(millis).unwrap_or(i64::MAX))
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// Seconds since the epoch, as exported in `*_timestamp_seconds` gauges.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0).max(0) as u64)
    }
}

/// The later point `d` after a timestamp (saturating).
impl Add<Duration> for Timestamp {
    type Output = Timestamp;
    fn add(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(duration_millis(d)))
    }
}

/// The earlier point `d` before a timestamp (saturating).
impl Sub<Duration> for Timestamp {
    type Output = Timestamp;
    fn sub(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(duration_millis(d)))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:03}",
            self.0.div_euclid(1000),
            self.0.rem_euclid(1000)
        )
    }
}

/// Whole milliseconds of a duration, saturating at `i64::MAX`.
pub fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_is_exact_and_saturating() {
        let t = Timestamp::from_secs(100);
        assert_eq!(t + Duration::from_millis(1500), Timestamp(101_500));
        assert_eq!(
            (t - Duration::from_secs(7 * 86_400)).0,
            100_000 - 604_800_000
        );
        assert_eq!(t.since(Timestamp::from_secs(160)), Duration::ZERO);
        assert_eq!(
            Timestamp(i64::MAX) + Duration::from_secs(1),
            Timestamp(i64::MAX)
        );
        assert_eq!(
            Timestamp::from_secs_f64(1.78246873027e9),
            Some(Timestamp(1_782_468_730_270))
        );
        assert_eq!(Timestamp::from_secs_f64(f64::NAN), None);
        assert_eq!(Timestamp(-1500).to_string(), "-2.500");
    }
}
