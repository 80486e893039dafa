//! Prometheus-compatible history in the daemon: the backfill before the
//! first scrape (`source = "scrape"`), or the only source of samples
//! (`source = "prometheus"`: a backfill, then a poll every scrape interval;
//! the apiservers are never contacted).
//!
//! A backfill fills a fresh ledger over the longest window (plus the
//! retention margin) and replaces the daemon's ledger only when it
//! succeeded and covers more than it; a failed one changes nothing and is
//! reported (log, `cutover_history_errors_total{reason}`, the JSON status,
//! the status page): its span stays unobserved, never read as "no uses".

// Shell (I/O allowed, see clippy.toml): HTTP queries, the clock and timers.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use super::core::retention_for;
use super::run::{Shared, stopped};
use crate::config::{Config, Source};
use crate::history::{
    BackfillReport, Feeder, HistoryClient, HistoryError, backfill_with, fetch_chunk,
};
use crate::ledger::Ledger;
use crate::status::{EvidenceSources, HistoryStatus, Status};
use crate::time::Timestamp;
use crate::window::Interval;

/// The history source of a running daemon and what it has read so far.
pub(crate) struct HistoryFeed {
    client: HistoryClient,
    source: Source,
    status: Mutex<HistoryStatus>,
}

impl HistoryFeed {
    /// The feed of `config`, if `[history]` is configured.
    pub(crate) fn new(config: &Config) -> Result<Option<HistoryFeed>, HistoryError> {
        let Some(history) = &config.history else {
            return Ok(None);
        };
        Ok(Some(HistoryFeed {
            client: HistoryClient::new(history)?,
            source: config.source,
            status: Mutex::new(HistoryStatus {
                only_source: config.source == Source::Prometheus,
                ..HistoryStatus::default()
            }),
        }))
    }

    fn update(&self, change: impl FnOnce(&mut HistoryStatus)) {
        change(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// Adds where the evidence came from to an evaluated status: the history
    /// source's health, and per cutover how much of its window history and
    /// own scrapes covered.
    pub(crate) fn annotate(&self, status: &mut Status, now: Timestamp) {
        let history = self
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for c in &mut status.cutovers {
            let start = now - c.window();
            let from_history = match (history.since, history.until) {
                (Some(since), Some(until)) => Interval::new(since, until).clip(start, now).len(),
                _ => Duration::ZERO,
            };
            let scraped = match (self.source, history.until) {
                (Source::Prometheus, _) => Duration::ZERO,
                (Source::Scrape, Some(until)) => Interval::new(until, now).clip(start, now).len(),
                (Source::Scrape, None) => now.since(start),
            };
            c.evidence_sources = Some(EvidenceSources {
                history_seconds: from_history.as_secs(),
                scrape_seconds: scraped.as_secs(),
            });
        }
        status.history = Some(history);
    }

    fn succeeded(&self, shared: &Shared, report: &BackfillReport, now: Timestamp) {
        shared.metrics.observe_history(now, None);
        self.update(|h| {
            if h.since.is_none() {
                h.since = report.fed.first_sample;
            }
            // Evidence from history ends at its last sample, not at the
            // end of the span asked for.
            if let Some(last) = report.fed.last_sample {
                h.until = Some(h.until.map_or(last, |u| u.max(last)));
            }
            h.last_success = Some(now);
            h.last_error = None;
            h.last_error_detail = None;
        });
    }

    fn failed(&self, shared: &Shared, err: &HistoryError, now: Timestamp, what: &str) {
        shared.metrics.observe_history(now, Some(err.kind()));
        warn!(reason = %err.kind(), error = %err, "{what} from the history source failed; that span stays unobserved");
        self.update(|h| {
            h.last_error = Some(err.kind().label().to_owned());
            h.last_error_detail = Some(err.to_string());
        });
    }
}

/// The longest window the ledger must cover (at least one day).
fn longest_window(config: &Config) -> Duration {
    config
        .cutovers
        .iter()
        .map(|c| c.window)
        .max()
        .unwrap_or(Duration::from_secs(86_400))
}

/// Whether every current instance of `ledger` is covered since `start`.
fn covers(ledger: &Ledger, start: Timestamp) -> bool {
    let mut current = ledger
        .instances()
        .filter(|(_, l)| l.gone_at().is_none())
        .peekable();
    current.peek().is_some()
        && current.all(|(_, l)| !l.may_predate_coverage() || l.covered_from() <= start)
}

/// The earliest time from which `ledger` covers every current instance.
fn coverage_start(ledger: &Ledger) -> Option<Timestamp> {
    ledger
        .instances()
        .filter(|(_, l)| l.gone_at().is_none() && l.may_predate_coverage())
        .map(|(_, l)| l.covered_from())
        .max()
}

/// Backfills a fresh ledger over the retention span up to now and puts it in
/// the core when it covers more than the core's (or always, when history is
/// the only source). Returns the feeder that read it, or `None` on failure
/// or when the ledger already covers the longest window (`source = "scrape"`).
async fn backfill(shared: &Shared, feed: &HistoryFeed) -> Option<Feeder> {
    let config = &shared.config;
    let history = config.history.as_ref()?;
    let now = shared.clock.now();
    let retention = retention_for(config);
    let longest = longest_window(config);
    if feed.source == Source::Scrape && covers(shared.lock().ledger_mut(), now - longest) {
        info!("the ledger covers the longest window already; no backfill from history");
        return None;
    }
    let from = now - retention.horizon;
    let mut ledger = Ledger::new(retention);
    let mut feeder = Feeder::new(&history.instance_label, history.max_gap_factor);
    info!(from = %from, to = %now, "backfilling the ledger from the history source");
    match backfill_with(&feed.client, &mut feeder, &mut ledger, from, now).await {
        Ok(report) => {
            let done = shared.clock.now();
            feed.succeeded(shared, &report, done);
            let mut core = shared.lock();
            let current = core.ledger_mut();
            let better = match (coverage_start(&ledger), coverage_start(current)) {
                _ if feed.source == Source::Prometheus => true,
                (_, None) if current.instances().next().is_none() => true,
                (Some(new), Some(old)) => new < old,
                (None, _) => ledger.instances().next().is_some(),
                (Some(_), None) => true,
            };
            info!(
                instances = report.fed.instances.len(),
                samples = report.fed.samples,
                scrapes = report.fed.observations,
                resets = report.fed.resets,
                holes = report.fed.holes,
                unusable = report.fed.unusable,
                queries = report.queries,
                replaced = better,
                "backfilled from the history source"
            );
            if better {
                *current = ledger;
            } else {
                feeder = Feeder::new(&history.instance_label, history.max_gap_factor);
                feeder.resume_after(current);
            }
            Some(feeder)
        }
        Err(e) => {
            feed.failed(shared, &e, shared.clock.now(), "the backfill");
            None
        }
    }
}

/// `source = "scrape"`: backfills before the first scrape when `[history]`
/// is set and the ledger covers less than the longest window. Returns early
/// on `stop`.
pub(super) async fn before_scraping(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let Some(feed) = shared.history.as_ref() else {
        return;
    };
    tokio::select! {
        _ = backfill(&shared, feed) => {}
        () = stopped(&mut stop) => {}
    }
}

/// `source = "prometheus"`: backfills (again every interval until it
/// succeeds), then polls every scrape interval for the samples since the
/// last ones read, until `stop`.
pub(super) async fn run_as_source(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let Some(feed) = shared.history.as_ref() else {
        return;
    };
    let interval = shared.config.scrape.interval;
    let mut feeder: Option<Feeder> = None;
    loop {
        let step = async {
            match feeder.as_mut() {
                None => feeder = backfill(&shared, feed).await,
                Some(f) => poll(&shared, feed, f, interval).await,
            }
        };
        tokio::select! {
            () = step => {}
            () = stopped(&mut stop) => return,
        }
        tokio::select! {
            () = shared.clock.sleep(interval) => {}
            () = stopped(&mut stop) => return,
        }
    }
}

/// One poll: the samples of the last few intervals (late samples of the
/// source are still read; the feeder skips what it already consumed).
async fn poll(shared: &Shared, feed: &HistoryFeed, feeder: &mut Feeder, interval: Duration) {
    let now = shared.clock.now();
    let since = feeder
        .last_attempt()
        .map_or(now - interval * 4, |last| last.min(now) - interval * 2);
    let range = now
        .since(since)
        .clamp(interval, retention_for(&shared.config).horizon);
    match fetch_chunk(&feed.client, now, range).await {
        Ok(families) => {
            let fed = feeder.feed_chunk(shared.lock().ledger_mut(), &families, now);
            let report = BackfillReport {
                from: now - range,
                to: now,
                chunks: 1,
                queries: families.len() as u32,
                fed,
            };
            feed.succeeded(shared, &report, shared.clock.now());
        }
        Err(e) => feed.failed(shared, &e, shared.clock.now(), "a poll"),
    }
}
