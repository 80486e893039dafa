//! Wiring and shutdown: the tasks of the daemon on one clock, owned by
//! `JoinSet`s, the state file read at start and written on the way out.

// Shell (I/O allowed, see clippy.toml): sockets, the clock, timers and the state file.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use super::core::Core;
use super::supervise::supervise_scrapers;
use super::targets::{Listed, Resolver, discover};
use crate::alerting::Pusher;
use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::server::{self, Admin};
use crate::state::{self, Loaded, Snapshot};
use crate::status::Status;
use crate::time::Timestamp;
use crate::verdict::{Assessment, Transition};

/// How the daemon is started.
pub struct Options {
    /// The validated configuration.
    pub config: Config,
    /// Where time comes from (real, or accelerated for `demo`).
    pub clock: Clock,
    /// A listener already bound for the admin server (tests bind port 0);
    /// `None` binds `config.listen`.
    pub listener: Option<TcpListener>,
    /// Receives events as they happen (`demo` prints them).
    pub events: Option<mpsc::UnboundedSender<Event>>,
}

/// Something the daemon did that a caller may want to show.
#[derive(Clone, Debug)]
pub enum Event {
    /// The admin server listens here.
    Listening(SocketAddr),
    /// What the state file held at start.
    Resumed(ResumeOutcome),
    /// A cutover's verdict changed.
    Transition {
        /// When.
        at: Timestamp,
        /// The change.
        transition: Transition,
        /// The numbers behind it.
        assessment: Assessment,
    },
}

/// How the state file was found at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResumeOutcome {
    /// Persistence is disabled.
    Disabled,
    /// No file: a first start.
    Fresh,
    /// The ledger resumed from the file.
    Resumed,
    /// The file was unusable and moved aside; the daemon starts blind.
    MovedAside(PathBuf),
}

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The admin address could not be bound.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Registering the metrics failed (a bug).
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// The Alertmanager push could not be set up.
    #[error("cannot set up the Alertmanager push")]
    Alerting(#[from] crate::alerting::AlertingError),
    /// Discovery could not be set up.
    #[error("cannot set up discovery")]
    Discovery(#[from] crate::discovery::DiscoveryError),
}

/// How long the shutdown may take before the daemon gives up on it.
const DRAIN_GRACE: Duration = Duration::from_secs(10);
/// Concurrent scrapes at most: pages are large, and the apiservers are shared.
const MAX_CONCURRENT_SCRAPES: usize = 8;

/// Runs the daemon until `shutdown` completes, then drains: readiness turns
/// false, scraping stops, verdicts are evaluated and the state written once
/// more, and the admin server stops.
pub async fn run(options: Options, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
    run_with_resolver(options, Resolver::System, shutdown).await
}

/// [`run`], resolving the names of static targets with `resolver`.
///
/// Every task the daemon starts is owned by a [`JoinSet`] of this function
/// (scrape tasks by the supervisor's), so none outlives it: an error
/// returns before anything is spawned, the drain stops every task and waits
/// for it before the final evaluation and state write, and dropping the
/// future aborts them all.
pub async fn run_with_resolver(
    options: Options,
    resolver: Resolver,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let Options {
        config,
        clock,
        listener,
        events,
    } = options;
    let config = Arc::new(config);
    let metrics = Arc::new(Metrics::new(env!("CARGO_PKG_VERSION"))?);
    metrics.declare_cutovers(&config.cutovers);
    let emit = move |event: Event| {
        if let Some(tx) = &events {
            // A caller that stopped listening does not stop the daemon.
            let _ = tx.send(event);
        }
    };

    let listener = match listener {
        Some(l) => l,
        None => TcpListener::bind(config.listen)
            .await
            .map_err(|source| DaemonError::Listen {
                addr: config.listen,
                source,
            })?,
    };

    let (snapshot, resume) = load_state(&config, clock.now());
    let core = Core::start(&config, snapshot);
    let shared = Arc::new(Shared {
        core: Mutex::new(core),
        metrics: Arc::clone(&metrics),
        config: Arc::clone(&config),
        clock: clock.clone(),
        scrape_slots: Semaphore::new(MAX_CONCURRENT_SCRAPES),
    });
    // Everything that can fail is built before the first task starts: an
    // error returns with nothing left running (the listener closes with it).
    let pusher = match &config.alertmanager {
        Some(am) => Some(Pusher::new(am, clock.clone(), Arc::clone(&metrics))?),
        None => None,
    };
    let (targets_tx, targets_rx) = watch::channel::<Option<Vec<Listed>>>(None);
    let discovery = discover(Arc::clone(&shared), targets_tx, resolver)?;

    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "serving /metrics, /healthz, /readyz, /api/v1/status and the status page");
        emit(Event::Listening(addr));
    }
    emit(Event::Resumed(resume));
    let (status_tx, status_rx) = watch::channel(Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Status::default()
    });
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_server_tx, mut stop_server_rx) = watch::channel(false);
    let admin = Admin {
        metrics: Arc::clone(&metrics),
        status: status_rx,
        ready: Arc::clone(&ready),
        clock: clock.clone(),
    };
    let mut server = JoinSet::new();
    server.spawn(async move {
        let stop = async move {
            let _ = stop_server_rx.wait_for(|stop| *stop).await;
        };
        if let Err(e) = server::serve(listener, admin, stop).await {
            error!(error = %format!("{e:#}"), "admin server failed");
        }
    });

    let mut background = JoinSet::new();
    if let Some(pusher) = pusher {
        // Its own task: a slow or absent Alertmanager never delays scraping.
        background.spawn(pusher.run(status_tx.subscribe()));
    }
    background.spawn(discovery);
    // Tasks that must finish what they are doing rather than be aborted
    // (a scrape task left behind, a state write cut short) stop on this.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut scraping = JoinSet::new();
    scraping.spawn(supervise_scrapers(
        Arc::clone(&shared),
        targets_rx,
        stop_rx.clone(),
    ));
    let evaluator = {
        let shared = Arc::clone(&shared);
        let ready = Arc::clone(&ready);
        let emit = emit.clone();
        let status_tx = status_tx.clone();
        async move {
            // The first evaluation waits for the first scrapes (which start at
            // once) to finish or time out, so readiness means something.
            shared
                .clock
                .sleep(shared.config.scrape.timeout + Duration::from_millis(500))
                .await;
            loop {
                let status = shared.evaluate(&emit);
                let _ = status_tx.send(status);
                ready.store(true, Ordering::SeqCst);
                shared.clock.sleep(shared.config.scrape.interval).await;
            }
        }
    };
    background.spawn(evaluator);
    let mut persisting = JoinSet::new();
    if let Some(path) = config.state.path.clone() {
        let shared = Arc::clone(&shared);
        let mut stop = stop_rx.clone();
        persisting.spawn(async move {
            loop {
                tokio::select! {
                    // A write in progress completes: an older snapshot must
                    // not land after the final one.
                    () = shared.clock.sleep(shared.config.state.write_interval) => shared.persist(&path).await,
                    () = stopped(&mut stop) => break,
                }
            }
        });
    }

    shutdown.await;
    info!("shutting down: readiness off, scraping stopped, writing state");
    ready.store(false, Ordering::SeqCst);
    let drain = async {
        // The supervisor stops its scrape tasks and waits for them to end;
        // only then is the last evaluation made and the state written.
        let _ = stop_tx.send(true);
        while scraping.join_next().await.is_some() {}
        while persisting.join_next().await.is_some() {}
        background.shutdown().await;
        // Again: the evaluator may have set it between the first store and
        // its abort; now that it has stopped, false stays false.
        ready.store(false, Ordering::SeqCst);
        let status = shared.evaluate(&emit);
        let _ = status_tx.send(status);
        if let Some(path) = &config.state.path {
            shared.persist(path).await;
        }
    };
    if tokio::time::timeout(DRAIN_GRACE, drain).await.is_err() {
        warn!(grace = ?DRAIN_GRACE, "shutdown grace period exceeded; exiting without the final state write");
        scraping.shutdown().await;
        persisting.shutdown().await;
        background.shutdown().await;
    }
    let _ = stop_server_tx.send(true);
    while server.join_next().await.is_some() {}
    Ok(())
}

/// Reads the state file, if persistence is enabled: the snapshot to resume
/// from, if any, and how the file was found. Every outcome is logged here.
fn load_state(config: &Config, now: Timestamp) -> (Option<Snapshot>, ResumeOutcome) {
    let Some(path) = &config.state.path else {
        return (None, ResumeOutcome::Disabled);
    };
    match state::load(path, now) {
        Ok(Loaded::Missing) => {
            info!(path = %path.display(), "no state file yet: starting blind");
            (None, ResumeOutcome::Fresh)
        }
        Ok(Loaded::Resumed(snapshot)) => {
            info!(path = %path.display(), saved_at = %snapshot.saved_at, instances = snapshot.ledger.instances().count(),
                  "resumed the ledger; continuity is checked on each instance's next scrape");
            if snapshot.saved_at > now {
                warn!(path = %path.display(), saved_at = %snapshot.saved_at, %now,
                      skew_seconds = snapshot.saved_at.since(now).as_secs_f64(),
                      "the state file was written ahead of this clock (the clock stepped back); samples are ordered after the saved ones until the clock catches up");
            }
            (Some(*snapshot), ResumeOutcome::Resumed)
        }
        Ok(Loaded::Corrupt { moved_to, reason }) => {
            warn!(path = %path.display(), moved_to = %moved_to.display(), %reason,
                  "state file unusable: moved aside, starting blind");
            (None, ResumeOutcome::MovedAside(moved_to))
        }
        Err(e) => {
            error!(error = %format!("{e:#}"), "state file unusable and not moved aside: starting blind");
            (None, ResumeOutcome::Fresh)
        }
    }
}

/// Completes once `stop` turns true (or its sender is gone).
pub(super) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// What the tasks share.
pub(super) struct Shared {
    pub(super) core: Mutex<Core>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) config: Arc<Config>,
    pub(super) clock: Clock,
    pub(super) scrape_slots: Semaphore,
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, Core> {
        // The core's methods keep it consistent at every return; a panic in
        // one of them is a bug already reported, not a reason to stop.
        self.core
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn evaluate(&self, emit: &(impl Fn(Event) + ?Sized)) -> Status {
        let now = self.clock.now();
        let (status, transitions) = self
            .lock()
            .evaluate(&self.config.cutovers, &self.metrics, now);
        for (transition, assessment) in transitions {
            log_transition(&transition, &assessment, now);
            emit(Event::Transition {
                at: now,
                transition,
                assessment,
            });
        }
        status
    }

    async fn persist(&self, path: &std::path::Path) {
        let snapshot = self.lock().snapshot(self.clock.now());
        let path = path.to_owned();
        let result = tokio::task::spawn_blocking(move || state::save(&path, &snapshot)).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                error!(error = %format!("{e:#}"), "state not saved; evidence since the last save would be lost on restart")
            }
            Err(e) => error!(error = %e, "state writer failed"),
        }
    }
}

fn log_transition(t: &Transition, a: &Assessment, now: Timestamp) {
    let ready_in = a
        .ready_in
        .map(|d| humantime::format_duration(d).to_string());
    let last_use = a.last_use.map(|t| t.to_string());
    let from = t.from.map_or("none", |s| s.label());
    if t.regression {
        warn!(cutover = %t.cutover, from, to = %t.to, reason = %t.reason, increase = a.increase,
              last_use, coverage = a.coverage, at = %now, "cutover regressed: a ready cutover saw use again");
    } else {
        let blocking = (!a.blocking.is_empty()).then(|| a.blocking.join(","));
        info!(cutover = %t.cutover, from, to = %t.to, reason = %t.reason, increase = a.increase,
              last_use, coverage = a.coverage, ready_in, blocking, at = %now, "verdict changed");
    }
}
