//! Scrape supervision: one scrape task per target, started and stopped as
//! the target list changes, each recording its results in the core.

// Shell (I/O allowed, see clippy.toml): scrape tasks: the network, the clock and timers.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};
use tracing::error;

use super::targets::Listed;
use super::{Shared, stopped};
use crate::exposition::Watch;
use crate::scrape::{ScrapeError, Scraper};
use crate::status::ScrapeErrorKind;

/// Starts and stops one scrape task per target as the target list changes,
/// until `stop` turns true (or the list's sender is gone); then stops its
/// scrape tasks and returns only once every one of them has ended.
pub(super) async fn supervise_scrapers(
    shared: Arc<Shared>,
    mut targets_rx: watch::Receiver<Option<Vec<Listed>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut running: BTreeMap<String, (Option<SocketAddr>, AbortHandle)> = BTreeMap::new();
    let watch = Watch::default_families().with_series_limits(
        shared.config.scrape.max_series_per_family,
        shared.config.scrape.max_series_per_page,
    );
    loop {
        let targets = targets_rx.borrow_and_update().clone();
        if let Some(targets) = targets {
            let now = shared.clock.now();
            let wanted: BTreeSet<&str> = targets.iter().map(|t| t.instance.as_str()).collect();
            running.retain(|instance, (_, task)| {
                let keep = wanted.contains(instance.as_str());
                if !keep {
                    task.abort();
                }
                keep
            });
            let names: Vec<String> = targets.iter().map(|t| t.instance.clone()).collect();
            shared.lock().set_targets(&names, now, &shared.metrics);
            for target in targets {
                let addr = target.addr();
                if running
                    .get(&target.instance)
                    .is_some_and(|(running, _)| *running == addr)
                {
                    continue;
                }
                let instance = target.instance.clone();
                let task = tasks.spawn(scrape_loop(Arc::clone(&shared), target, watch.clone()));
                if let Some((_, old)) = running.insert(instance, (addr, task)) {
                    old.abort();
                }
            }
        }
        // Reap the tasks that ended (aborted ones).
        while tasks.try_join_next().is_some() {}
        tokio::select! {
            changed = targets_rx.changed() => if changed.is_err() { break },
            () = stopped(&mut stop) => break,
        }
    }
    tasks.shutdown().await;
}

/// Scrapes one target every interval, at a phase derived from its name so
/// that targets spread over the interval instead of scraping at once. A
/// target that cannot be scraped (its name does not resolve, its scraper
/// cannot be built) records that failure at the same pace: it stays a
/// target, down.
async fn scrape_loop(shared: Arc<Shared>, target: Listed, watch: Watch) {
    let config = &shared.config;
    let instance = target.instance.clone();
    let scraper = match target.endpoint {
        Ok(target) => Scraper::new(
            target,
            shared.clock.to_real(config.scrape.timeout),
            config.scrape.max_body_bytes,
        )
        .inspect_err(|e| {
            error!(%instance, error = %format!("{e:#}"), "cannot build a scraper for this target");
        }),
        Err(detail) => Err(ScrapeError::new(ScrapeErrorKind::Dns, detail)),
    };
    let interval = config.scrape.interval;
    let mut hasher = DefaultHasher::new();
    instance.hash(&mut hasher);
    let phase = Duration::from_millis(hasher.finish() % interval.as_millis().max(1) as u64);
    let mut first = true;
    loop {
        if !shared.leader.is_leader() {
            // A follower does not scrape (leader election, docs/ha.md).
            shared.leader.wait_leader().await;
            continue;
        }
        let started = shared.clock.now();
        let begun = Instant::now();
        let result = match &scraper {
            Ok(scraper) => {
                let _slot = shared.scrape_slots.acquire().await;
                scraper.scrape(&watch).await
            }
            Err(e) => Err(ScrapeError::new(e.kind, e.detail.clone())),
        };
        let took = begun.elapsed();
        let ended = shared.clock.now();
        shared
            .lock()
            .record_scrape(&instance, started, ended, took, result, &shared.metrics);
        // The first scrape happens at once; later ones keep their phase.
        let wait = if first {
            phase
        } else {
            interval.saturating_sub(ended.since(started))
        };
        first = false;
        shared.clock.sleep(wait.max(Duration::from_millis(1))).await;
    }
}
