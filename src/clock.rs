//! One clock for the simulator and the daemon: real, accelerated, or manual.
//!
//! `demo --speed N` runs the simulated apiservers and the daemon in one
//! process; both must agree on what "now" is and how long "30 s" lasts, so
//! both take time from a [`Clock`] instead of the system clock. The pure core
//! still never reads a clock: the edge reads one and passes `now` in.

// Shell (I/O allowed, see clippy.toml): the one reader of the system clock.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

use crate::time::Timestamp;

/// A source of simulated time, cheap to clone and share between tasks.
#[derive(Clone, Debug)]
pub struct Clock {
    inner: Inner,
}

impl Clock {
    /// The system clock: simulated time is real time.
    pub fn real() -> Clock {
        Clock { inner: Inner::Real }
    }

    /// A clock that starts at `origin` now and runs `speed` simulated seconds
    /// per real second. A non-finite or non-positive speed is taken as 1.
    pub fn accelerated(origin: Timestamp, speed: f64) -> Clock {
        let speed = if speed.is_finite() && speed > 0.0 {
            speed
        } else {
            1.0
        };
        Clock {
            inner: Inner::Accelerated {
                origin,
                started: Instant::now(),
                speed,
            },
        }
    }

    /// A clock that only moves when [`Clock::advance`] or [`Clock::set`] is
    /// called, so tests of timed behaviour never sleep. Its speed is 1.
    pub fn manual(origin: Timestamp) -> Clock {
        let (tx, _) = watch::channel(origin);
        Clock {
            inner: Inner::Manual(Arc::new(tx)),
        }
    }

    /// The current simulated time.
    pub fn now(&self) -> Timestamp {
        match &self.inner {
            Inner::Real => Timestamp::from_system_time(SystemTime::now()),
            Inner::Accelerated {
                origin,
                started,
                speed,
            } => {
                let real = started.elapsed().as_secs_f64();
                *origin + Duration::from_secs_f64(real * speed)
            }
            Inner::Manual(tx) => *tx.borrow(),
        }
    }

    /// Simulated seconds per real second (1 for real and manual clocks).
    pub fn speed(&self) -> f64 {
        match &self.inner {
            Inner::Accelerated { speed, .. } => *speed,
            Inner::Real | Inner::Manual(_) => 1.0,
        }
    }

    /// The real time that `simulated` takes on this clock.
    pub fn to_real(&self, simulated: Duration) -> Duration {
        Duration::from_secs_f64(simulated.as_secs_f64() / self.speed())
    }

    /// Waits until `simulated` time has passed on this clock. On a manual
    /// clock this returns once the clock has been advanced far enough.
    pub async fn sleep(&self, simulated: Duration) {
        match &self.inner {
            Inner::Real | Inner::Accelerated { .. } => {
                tokio::time::sleep(self.to_real(simulated)).await;
            }
            Inner::Manual(tx) => {
                let until = self.now() + simulated;
                let mut rx = tx.subscribe();
                // The sender lives in `self`, so the channel cannot close while we wait.
                let _ = rx.wait_for(|now| *now >= until).await;
            }
        }
    }

    /// Moves a manual clock forward by `d`; no effect on other clocks.
    pub fn advance(&self, d: Duration) {
        if let Inner::Manual(tx) = &self.inner {
            tx.send_modify(|now| *now = *now + d);
        }
    }

    /// Sets a manual clock to `t` (never backwards); no effect on other clocks.
    pub fn set(&self, t: Timestamp) {
        if let Inner::Manual(tx) = &self.inner {
            tx.send_modify(|now| *now = (*now).max(t));
        }
    }

    /// True for a manual clock, which only moves when told to.
    pub fn is_manual(&self) -> bool {
        matches!(self.inner, Inner::Manual(_))
    }
}

#[derive(Clone, Debug)]
enum Inner {
    Real,
    Accelerated {
        origin: Timestamp,
        started: Instant,
        speed: f64,
    },
    Manual(Arc<watch::Sender<Timestamp>>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = Clock::manual(Timestamp::from_secs(1000));
        assert_eq!(clock.now(), Timestamp::from_secs(1000));
        clock.advance(Duration::from_secs(5));
        assert_eq!(clock.now(), Timestamp::from_secs(1005));
        clock.set(Timestamp::from_secs(1001));
        assert_eq!(clock.now(), Timestamp::from_secs(1005), "never backwards");
        assert_eq!(
            clock.to_real(Duration::from_secs(60)),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn accelerated_clock_scales_durations() {
        let clock = Clock::accelerated(Timestamp::from_secs(0), 60.0);
        assert_eq!(clock.speed(), 60.0);
        assert_eq!(
            clock.to_real(Duration::from_secs(60)),
            Duration::from_secs(1)
        );
        assert!(clock.now() >= Timestamp::from_secs(0));
        assert_eq!(Clock::accelerated(Timestamp::EPOCH, -3.0).speed(), 1.0);
    }

    #[tokio::test]
    async fn manual_sleep_wakes_on_advance() {
        let clock = Clock::manual(Timestamp::from_secs(0));
        let sleeper = clock.clone();
        let task = tokio::spawn(async move { sleeper.sleep(Duration::from_secs(10)).await });
        tokio::task::yield_now().await;
        clock.advance(Duration::from_secs(4));
        tokio::task::yield_now().await;
        assert!(!task.is_finished());
        clock.advance(Duration::from_secs(6));
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("sleep must end once the clock passed its deadline")
            .expect("task");
    }
}
