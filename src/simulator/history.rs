//! Days of history as a Prometheus would have scraped them from the
//! simulated world, written instantly: an OpenMetrics file for `promtool
//! tsdb create-blocks-from openmetrics`, and Prometheus text lines with
//! millisecond timestamps for VictoriaMetrics' `/api/v1/import/prometheus`.
//! The world keeps the ground truth (every increment, with its time).
//!
//! Pure: the scenario, the times and the gaps are arguments.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use super::scenario::Scenario;
use super::world::{Presence, World};
use crate::families::{PROCESS_START_TIME, RESET_SENTINEL, TokenKind};
use crate::ledger::{Observation, SeriesKey};
use crate::time::Timestamp;

/// How the history is recorded.
#[derive(Clone, Debug)]
pub struct Recording {
    /// The scenario's start.
    pub origin: Timestamp,
    /// The last scrape is at or before this time.
    pub end: Timestamp,
    /// Time between two scrapes of one instance (30 s in kube-prometheus).
    pub step: Duration,
    /// The `job` label of every series.
    pub job: String,
    /// Spans `(instance, from, to)` (offsets from `origin`) in which the
    /// history source did not scrape the instance at all (no `up` either).
    pub gaps: Vec<(usize, Duration, Duration)>,
    /// The `instance` label of each instance, by index; instances beyond
    /// the list get [`instance_address`].
    pub addresses: Vec<String>,
}

/// One metric's series: label text (`job="…",instance="…"`) to samples.
pub type SeriesByLabels = BTreeMap<String, Vec<(Timestamp, f64)>>;

/// What the history source stored, and the world behind it.
pub struct History {
    /// The world at `end`: its log is the ground truth.
    pub world: World,
    /// Series by name, then by label text (`job="…",instance="…"`), with
    /// their samples in time order.
    pub series: BTreeMap<&'static str, SeriesByLabels>,
    /// Every scrape the source made, as the auditor's own scrape of the
    /// same page would observe it: `(time, instance address, observation)`.
    pub scrapes: Vec<(Timestamp, String, Observation)>,
}

/// The address (`instance` label) of simulated instance `i`.
pub fn instance_address(i: usize) -> String {
    format!("10.0.0.{}:6443", 10 + i)
}

/// Runs `scenario` from `rec.origin` to `rec.end`, scraping every present
/// instance every `rec.step` except inside its gaps.
pub fn record(scenario: &Scenario, rec: &Recording) -> History {
    let mut world = World::new(scenario, rec.origin);
    let mut series: BTreeMap<&'static str, SeriesByLabels> = BTreeMap::new();
    let mut scrapes = Vec::new();
    let step = rec.step.max(Duration::from_secs(1));
    let mut at = rec.origin;
    while at <= rec.end {
        world.advance(at);
        let offset = at.since(rec.origin);
        for i in 0..world.instance_count() {
            let Some(view) = world.view(i) else { continue };
            if view.presence != Presence::Up
                || rec
                    .gaps
                    .iter()
                    .any(|&(g, from, to)| g == i && offset >= from && offset < to)
            {
                continue;
            }
            let address = rec
                .addresses
                .get(i)
                .cloned()
                .unwrap_or_else(|| instance_address(i));
            let target = format!("job={:?},instance={:?}", rec.job, address);
            let mut push = |name: &'static str, labels: &str, value: f64| {
                series
                    .entry(name)
                    .or_default()
                    .entry(labels.to_owned())
                    .or_default()
                    .push((at, value));
            };
            push("up", &target, 1.0);
            push(PROCESS_START_TIME, &target, view.start_time.as_secs_f64());
            let mut values = BTreeMap::new();
            for (kind, value) in &view.counters {
                push(kind.family(), &target, *value as f64);
                values.insert(SeriesKey::family(kind.family()), *value);
            }
            for (status, value) in [("hit", view.cache_hits), ("miss", view.cache_misses)] {
                push(
                    RESET_SENTINEL,
                    &format!("{target},status={status:?}"),
                    value as f64,
                );
                values.insert(
                    SeriesKey::with_labels(
                        RESET_SENTINEL,
                        &[("status".to_owned(), status.to_owned())],
                    ),
                    value,
                );
            }
            scrapes.push((
                at,
                address,
                Observation {
                    start_time: Some(view.start_time),
                    values,
                },
            ));
        }
        at = at + step;
    }
    History {
        world,
        series,
        scrapes,
    }
}

impl History {
    /// The OpenMetrics text (`# EOF` at the end, timestamps in seconds),
    /// each metric's samples together as the format requires.
    pub fn openmetrics(&self) -> String {
        let mut out = String::new();
        for (name, by_labels) in &self.series {
            for (labels, samples) in by_labels {
                for (at, value) in samples {
                    let _ = writeln!(out, "{name}{{{labels}}} {value} {}", seconds(*at));
                }
            }
        }
        out.push_str("# EOF\n");
        out
    }

    /// Prometheus text lines with millisecond timestamps, as
    /// VictoriaMetrics' `/api/v1/import/prometheus` takes them.
    pub fn prometheus_text(&self) -> String {
        let mut out = String::new();
        for (name, by_labels) in &self.series {
            for (labels, samples) in by_labels {
                for (at, value) in samples {
                    let _ = writeln!(out, "{name}{{{labels}}} {value} {}", at.as_millis());
                }
            }
        }
        out
    }

    /// Ground truth: increments of `kind` on every instance in `(t0, t1]`.
    pub fn increments(&self, kind: TokenKind, t0: Timestamp, t1: Timestamp) -> u64 {
        self.world.increments_all(kind, t0, t1)
    }
}

/// A timestamp as OpenMetrics seconds, exact to the millisecond.
fn seconds(at: Timestamp) -> String {
    let ms = at.as_millis();
    if ms % 1000 == 0 {
        (ms / 1000).to_string()
    } else {
        format!("{}.{:03}", ms.div_euclid(1000), ms.rem_euclid(1000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_groups_each_metric_and_ends_with_eof() {
        let scenario = Scenario::parse(
            "[[instances]]\nversion = \"1.33.1\"\ncount = 2\n\n[[clients]]\nkind = \"legacy\"\ninterval = \"10s\"\ntargets = 0\n",
        )
        .expect("scenario");
        let rec = Recording {
            origin: Timestamp::from_secs(1_800_000_000),
            end: Timestamp::from_secs(1_800_000_090),
            step: Duration::from_secs(30),
            job: "apiserver".into(),
            gaps: vec![(1, Duration::from_secs(30), Duration::from_secs(60))],
            addresses: vec!["192.0.2.1:443".into()],
        };
        let h = record(&scenario, &rec);
        let text = h.openmetrics();
        assert!(text.ends_with("# EOF\n"));
        assert!(text.contains("up{job=\"apiserver\",instance=\"192.0.2.1:443\"} 1 1800000030\n"));
        // Instance 1 was not scraped inside its gap.
        assert!(!text.contains("instance=\"10.0.0.11:6443\"} 1 1800000030"));
        assert_eq!(h.scrapes.len(), 4 + 3);
        // Each metric's lines are together.
        let names: Vec<&str> = text.lines().filter_map(|l| l.split('{').next()).collect();
        let mut seen = Vec::new();
        for n in names {
            if seen.last() != Some(&n) {
                assert!(!seen.contains(&n), "{n} is split");
                seen.push(n);
            }
        }
        let legacy = h.increments(
            TokenKind::Legacy,
            rec.origin - Duration::from_secs(1),
            rec.end,
        );
        assert!(legacy > 0);
        assert!(h.prometheus_text().contains(" 1800000030000\n"));
    }
}
