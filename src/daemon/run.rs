//! Wiring and shutdown: the tasks of the daemon on one clock, owned by
//! `JoinSet`s, the state file read at start and written on the way out.

// Shell (I/O allowed, see clippy.toml): sockets, the clock, timers and the state file.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::HashMap;
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
use super::history_feed::{self, HistoryFeed};
use super::leader::{self, Leadership};
use super::supervise::supervise_scrapers;
use super::targets::{Listed, Resolver, discover};
use crate::alerting::Pusher;
use crate::clock::Clock;
use crate::config::{Config, Source};
use crate::metrics::Metrics;
use crate::server::{self, Admin};
use crate::state::{self, Loaded, Snapshot};
use crate::state_store::{StateStore, StoreError};
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
    /// The state could not be read (the reason is logged; for the
    /// ConfigMap: missing, forbidden, corrupt); the daemon starts blind.
    Unusable(String),
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
    /// The state store or the Lease client could not be set up.
    #[error("cannot set up the state store or leader election")]
    Store(#[from] StoreError),
    /// The history source (`[history]`) could not be set up.
    #[error("cannot set up the history source")]
    History(#[from] crate::history::HistoryError),
    /// An essential task (discovery, the scrape supervisor, the evaluator)
    /// panicked or ended: the daemon drained and stopped, so that its
    /// supervisor (Kubernetes) restarts it.
    #[error("the {task} task {how}; the daemon drained and stopped")]
    TaskFailed {
        /// The task's name, as in `cutover_task_failures_total{task}`.
        task: &'static str,
        /// What happened: "panicked: <message>" or "ended".
        how: String,
    },
    /// The state write at shutdown failed: evidence since the last
    /// successful write is lost.
    #[error("the final state write failed; evidence since the last successful write is lost")]
    FinalStateWrite(#[source] PersistError),
}

/// Why one state write failed.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// Writing the file failed (the source names the OS error).
    #[error(transparent)]
    State(#[from] state::StateError),
    /// Writing the ConfigMap failed or was refused (conflict, size).
    #[error(transparent)]
    Store(StoreError),
    /// The blocking write task panicked or was cancelled (a bug).
    #[error("the state write task failed: {0}")]
    Join(String),
    /// The drain ran over its grace period before the final write was done
    /// (a write hanging on the disk, a scrape or a task not stopping).
    #[error("the shutdown ran over its {grace:?} grace period before the state was written")]
    GraceExceeded {
        /// The grace period.
        grace: Duration,
    },
}

/// A task of the daemon, by the name its failures are counted under in
/// `cutover_task_failures_total{task}`. Public only for fault injection in
/// tests ([`run_with_faults`]).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task {
    /// Lists the targets (essential: a failure stops the daemon).
    Discovery,
    /// Starts and stops the scrape tasks (essential).
    ScrapeSupervisor,
    /// Evaluates the verdicts and sets readiness (essential).
    Evaluator,
    /// Writes the state file every `write_interval` (restarted with backoff).
    StateWriter,
    /// Pushes alerts to Alertmanager (restarted with backoff).
    AlertmanagerPusher,
    /// Acquires, renews or follows the Lease (essential).
    LeaderElection,
    /// Serves `/metrics`, the probes and the status (restarted with backoff,
    /// on the address it was listening on).
    AdminServer,
}

impl Task {
    /// The label value (one of [`crate::metrics::TASKS`]).
    pub fn label(self) -> &'static str {
        match self {
            Task::Discovery => "discovery",
            Task::ScrapeSupervisor => "scrape_supervisor",
            Task::Evaluator => "evaluator",
            Task::StateWriter => "state_writer",
            Task::AlertmanagerPusher => "alertmanager_pusher",
            Task::LeaderElection => "leader_election",
            Task::AdminServer => "admin_server",
        }
    }
}

/// Test-only fault injection: a handle that makes the next run (or loop
/// iteration) of one task panic, once. Never reachable from configuration;
/// [`run`] and [`run_with_resolver`] pass an unarmed one.
#[doc(hidden)]
#[derive(Clone, Default)]
pub struct Faults(Arc<Mutex<Option<Task>>>);

impl Faults {
    /// Arms a panic in `task`: at its next start or loop iteration.
    pub fn panic_next(&self, task: Task) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
    }

    /// Panics if a panic is armed for `task` (and disarms it).
    fn trip(&self, task: Task) {
        let mut armed = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if *armed == Some(task) {
            *armed = None;
            drop(armed);
            panic!("injected fault: the {} task panics", task.label());
        }
    }
}

/// The inputs of readiness: `/readyz` answers 200 only after the first
/// evaluation, while the last state write (if any) succeeded, and until the
/// drain starts (for good).
struct Readiness {
    flag: Arc<AtomicBool>,
    inputs: Mutex<ReadyInputs>,
}

#[derive(Default)]
struct ReadyInputs {
    evaluated: bool,
    state_write_failed: bool,
    stopping: bool,
    /// A follower whose last load of the shared state failed (or that has
    /// not loaded it yet).
    state_unsynced: bool,
}

impl Readiness {
    fn new(flag: Arc<AtomicBool>) -> Readiness {
        flag.store(false, Ordering::SeqCst);
        Readiness {
            flag,
            inputs: Mutex::new(ReadyInputs::default()),
        }
    }

    fn update(&self, change: impl FnOnce(&mut ReadyInputs)) {
        let mut inputs = self.inputs.lock().unwrap_or_else(|p| p.into_inner());
        change(&mut inputs);
        let ready = inputs.evaluated
            && !inputs.state_write_failed
            && !inputs.stopping
            && !inputs.state_unsynced;
        self.flag.store(ready, Ordering::SeqCst);
    }
}

/// `err` and every source under it, joined by ": " (thiserror's `Display`
/// shows only the outermost message; the OS error is in the sources).
pub(super) fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// The message of a panic payload.
fn panic_message(err: tokio::task::JoinError) -> String {
    if err.is_cancelled() {
        return "was cancelled".to_owned();
    }
    let payload = err.into_panic();
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text payload".to_owned());
    format!("panicked: {message}")
}

/// The first wait before restarting a task that failed; doubled on each
/// consecutive failure up to [`RESTART_BACKOFF_MAX`], reset once a run lasted
/// that long.
const RESTART_BACKOFF: Duration = Duration::from_secs(1);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Runs the task `make` builds until `stop` turns true; when it panics or
/// ends before that, logs it with the task's name and the panic message,
/// counts it in `cutover_task_failures_total{task}`, and starts a new one
/// after a backoff (on the daemon's clock).
async fn restarting<F, Fut>(
    task: Task,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    mut make: F,
) where
    F: FnMut() -> Option<Fut>,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut backoff = RESTART_BACKOFF;
    loop {
        let started = shared.clock.now();
        let how = match make() {
            Some(run) => {
                let mut one = JoinSet::new();
                one.spawn(run);
                match one.join_next().await {
                    Some(Ok(())) | None if *stop.borrow() => return,
                    Some(Ok(())) | None => "ended".to_owned(),
                    Some(Err(e)) => panic_message(e),
                }
            }
            None => "could not be built".to_owned(),
        };
        if shared.clock.now().since(started) >= RESTART_BACKOFF_MAX {
            backoff = RESTART_BACKOFF;
        }
        shared.metrics.observe_task_failure(task.label());
        error!(task = task.label(), how, restart_in = ?backoff, "a task of the daemon failed; restarting it");
        tokio::select! {
            () = shared.clock.sleep(backoff) => {}
            () = stopped(&mut stop) => return,
        }
        backoff = (backoff * 2).min(RESTART_BACKOFF_MAX);
    }
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
pub async fn run_with_resolver(
    options: Options,
    resolver: Resolver,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    run_with_faults(options, resolver, Faults::default(), shutdown).await
}

/// [`run_with_resolver`] with `faults` armable by a test.
///
/// Every task the daemon starts is owned by a [`JoinSet`] of this function
/// (scrape tasks by the supervisor's), so none outlives it: an error
/// returns before anything is spawned, the drain stops every task and waits
/// for it before the final evaluation and state write, and dropping the
/// future aborts them all.
///
/// A task that panics or ends before the shutdown is logged with its name
/// and the panic message and counted in `cutover_task_failures_total{task}`.
/// The state writer and the Alertmanager pusher are restarted with a
/// backoff; discovery, the scrape supervisor and the evaluator are
/// essential: readiness turns false, the daemon drains as on a signal and
/// returns [`DaemonError::TaskFailed`]. A failed final state write, or a
/// drain that runs over its grace period, returns
/// [`DaemonError::FinalStateWrite`].
#[doc(hidden)]
pub async fn run_with_faults(
    options: Options,
    resolver: Resolver,
    faults: Faults,
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
    metrics.set_leader(config.leader_election.is_none());
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

    let store = StateStore::from_config(&config)?;
    let lease = match &config.leader_election {
        Some(le) => Some((
            crate::state_store::kube_client(&config).map_err(StoreError::Client)?,
            le.clone(),
            crate::state_store::namespace(le.namespace.as_deref())?,
        )),
        None => None,
    };
    let leadership = Arc::new(match lease {
        Some(_) => Leadership::elected(clock.clone()),
        None => Leadership::always(clock.clone()),
    });
    let (snapshot, resume) = load_state(&store, clock.now()).await;
    let core = Core::start(&config, snapshot);
    let history = HistoryFeed::new(&config)?;
    let ready = Arc::new(AtomicBool::new(false));
    let shared = Arc::new(Shared {
        store,
        leader: Arc::clone(&leadership),
        core: Mutex::new(core),
        metrics: Arc::clone(&metrics),
        config: Arc::clone(&config),
        clock: clock.clone(),
        scrape_slots: Semaphore::new(MAX_CONCURRENT_SCRAPES),
        readiness: Readiness::new(Arc::clone(&ready)),
        history,
    });
    // Everything that can fail is built before the first task starts: an
    // error returns with nothing left running (the listener closes with it).
    let pusher = match &config.alertmanager {
        Some(am) => Some(Pusher::new(am, clock.clone(), Arc::clone(&metrics))?),
        None => None,
    };
    let (targets_tx, targets_rx) = watch::channel::<Option<Vec<Listed>>>(None);
    // With history as the only source, nothing is discovered or scraped.
    let discovery = match config.source {
        Source::Scrape => Some(discover(Arc::clone(&shared), targets_tx, resolver)?),
        Source::Prometheus => None,
    };

    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "serving /metrics, /healthz, /readyz, /api/v1/status and the status page");
        emit(Event::Listening(addr));
    }
    emit(Event::Resumed(resume));
    let (status_tx, status_rx) = watch::channel(Status {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Status::default()
    });
    let (stop_server_tx, stop_server_rx) = watch::channel(false);
    let admin = Admin {
        metrics: Arc::clone(&metrics),
        status: status_rx,
        ready: Arc::clone(&ready),
        clock: clock.clone(),
    };
    let mut server = JoinSet::new();
    {
        // Restarted like the state writer: an admin server that fails (an
        // accept error, a panic) is logged, counted in
        // `cutover_task_failures_total{task="admin_server"}` and started
        // again on the address it listened on, so the probes come back.
        let listen_addr = listener.local_addr().unwrap_or(config.listen);
        let mut first = Some(listener);
        let (faults, stop) = (faults.clone(), stop_server_rx.clone());
        let make = move || {
            let (admin, faults, first) = (admin.clone(), faults.clone(), first.take());
            let mut stop = stop.clone();
            Some(async move {
                faults.trip(Task::AdminServer);
                let listener = match first {
                    Some(listener) => listener,
                    None => match TcpListener::bind(listen_addr).await {
                        Ok(listener) => listener,
                        Err(e) => {
                            error!(addr = %listen_addr, error = %e, "cannot listen again for the admin server");
                            return;
                        }
                    },
                };
                let stopping = async move { stopped(&mut stop).await };
                if let Err(e) = server::serve(listener, admin, stopping).await {
                    error!(error = %chain(&e), "admin server failed");
                }
            })
        };
        server.spawn(restarting(
            Task::AdminServer,
            Arc::clone(&shared),
            stop_server_rx,
            make,
        ));
    }

    // Tasks that must finish what they are doing rather than be aborted
    // (a scrape task left behind, a state write cut short) stop on this.
    let (stop_tx, stop_rx) = watch::channel(false);
    // Which task of `background` a task id is, to name it when it fails.
    let mut names = HashMap::new();
    let mut background = JoinSet::new();
    if let Some(first) = pusher {
        // Its own task: a slow or absent Alertmanager never delays scraping.
        let mut first = Some(first);
        let (config, clock, metrics) = (Arc::clone(&config), clock.clone(), Arc::clone(&metrics));
        let leader = Arc::clone(&leadership);
        let status = status_tx.subscribe();
        let faults = faults.clone();
        let make = move || {
            let pusher = match first.take() {
                Some(pusher) => pusher,
                None => {
                    let am = config.alertmanager.as_ref()?;
                    match Pusher::new(am, clock.clone(), Arc::clone(&metrics)) {
                        Ok(pusher) => pusher,
                        Err(e) => {
                            error!(error = %chain(&e), "cannot rebuild the Alertmanager pusher");
                            return None;
                        }
                    }
                }
            };
            let (status, faults) = (status.clone(), faults.clone());
            let (leader, config, clock, metrics) = (
                Arc::clone(&leader),
                Arc::clone(&config),
                clock.clone(),
                Arc::clone(&metrics),
            );
            Some(async move {
                faults.trip(Task::AlertmanagerPusher);
                // Only the leader pushes: a pusher per term of leadership.
                let mut pusher = Some(pusher);
                loop {
                    leader.wait_leader().await;
                    let term = match pusher.take() {
                        Some(p) => p,
                        None => match config
                            .alertmanager
                            .as_ref()
                            .map(|am| Pusher::new(am, clock.clone(), Arc::clone(&metrics)))
                        {
                            Some(Ok(p)) => p,
                            _ => return,
                        },
                    };
                    tokio::select! {
                        () = term.run(status.clone()) => return,
                        () = leader.wait_lost() => {}
                    }
                }
            })
        };
        let pushing = restarting(
            Task::AlertmanagerPusher,
            Arc::clone(&shared),
            stop_rx.clone(),
            make,
        );
        names.insert(background.spawn(pushing).id(), Task::AlertmanagerPusher);
    }
    let discovering_faults = faults.clone();
    if let Some((client, le, namespace)) = lease {
        // Not ready until the shared state is loaded (follower) or read
        // again (leader); the start's read does not count.
        shared
            .metrics
            .observe_state_load(Some("not loaded yet".to_owned()));
        shared.readiness.update(|r| r.state_unsynced = true);
        let electing = leader::run(Arc::clone(&shared), client, le, namespace);
        names.insert(background.spawn(electing).id(), Task::LeaderElection);
    }
    let mut scraping = JoinSet::new();
    if let Some(discovery) = discovery {
        let discovering = async move {
            discovering_faults.trip(Task::Discovery);
            discovery.await;
        };
        names.insert(background.spawn(discovering).id(), Task::Discovery);
        let supervisor = supervise_scrapers(Arc::clone(&shared), targets_rx, stop_rx.clone());
        let faults_ = faults.clone();
        let backfill = history_feed::before_scraping(Arc::clone(&shared), stop_rx.clone());
        scraping.spawn(async move {
            faults_.trip(Task::ScrapeSupervisor);
            backfill.await;
            supervisor.await;
        });
    } else {
        // The poller takes the supervisor's place (and its name in failures).
        let faults_ = faults.clone();
        let poller = history_feed::run_as_source(Arc::clone(&shared), stop_rx.clone());
        scraping.spawn(async move {
            faults_.trip(Task::ScrapeSupervisor);
            poller.await;
        });
    }
    let evaluator = {
        let shared = Arc::clone(&shared);
        let emit = emit.clone();
        let status_tx = status_tx.clone();
        let faults = faults.clone();
        async move {
            // The first evaluation waits for the first scrapes (which start at
            // once) to finish or time out, so readiness means something.
            shared
                .clock
                .sleep(shared.config.scrape.timeout + Duration::from_millis(500))
                .await;
            loop {
                faults.trip(Task::Evaluator);
                let status = shared.evaluate(&emit);
                let _ = status_tx.send(status);
                shared.readiness.update(|r| r.evaluated = true);
                shared.clock.sleep(shared.config.scrape.interval).await;
            }
        }
    };
    names.insert(background.spawn(evaluator).id(), Task::Evaluator);
    // Attribution (opt-in, `[attribution]`): adds who uses legacy tokens to
    // each published status, never the verdicts; aborted when `run` returns.
    let mut attributing = JoinSet::new();
    if let Some(a) = config.attribution.clone() {
        let (clock, metrics) = (clock.clone(), Arc::clone(&metrics));
        let task =
            crate::attribution::Attributor::new(a, &config, clock, metrics, status_tx.clone());
        attributing.spawn(task.run());
    }
    let mut persisting = JoinSet::new();
    if !matches!(shared.store, StateStore::Disabled) {
        let (writer, stop, faults) = (Arc::clone(&shared), stop_rx.clone(), faults.clone());
        let make = move || {
            let (shared, mut stop) = (Arc::clone(&writer), stop.clone());
            let faults = faults.clone();
            Some(async move {
                loop {
                    faults.trip(Task::StateWriter);
                    tokio::select! {
                        // A write in progress completes: an older snapshot must
                        // not land after the final one. A failure is logged,
                        // counted and turns readiness off (in `persist`).
                        () = shared.clock.sleep(shared.config.state.write_interval) => {
                            let _ = shared.persist().await;
                        }
                        () = stopped(&mut stop) => break,
                    }
                }
            })
        };
        persisting.spawn(restarting(
            Task::StateWriter,
            Arc::clone(&shared),
            stop_rx.clone(),
            make,
        ));
    }

    // Runs until the shutdown signal, or until an essential task fails (the
    // state writer and the pusher restart themselves: their wrappers end
    // only on the stop signal).
    let shutdown = shutdown;
    tokio::pin!(shutdown);
    let failure = tokio::select! {
        () = &mut shutdown => None,
        Some(done) = scraping.join_next() => {
            let how = how_it_ended(done);
            // The supervisor ends by itself only when discovery is gone (its
            // target channel closed): then discovery's own end, which is
            // imminent, is the cause to report.
            let cause = if how == "ended" {
                tokio::time::timeout(Duration::from_secs(1), background.join_next_with_id())
                    .await
                    .ok()
                    .flatten()
                    .and_then(|done| match done {
                        Ok((id, ())) => names.get(&id).map(|t| (*t, "ended".to_owned())),
                        Err(e) => names.get(&e.id()).copied().map(|t| (t, panic_message(e))),
                    })
            } else {
                None
            };
            Some(cause.unwrap_or((Task::ScrapeSupervisor, how)))
        }
        Some(done) = persisting.join_next() => Some((Task::StateWriter, how_it_ended(done))),
        Some(done) = background.join_next_with_id() => {
            let (id, how) = match done {
                Ok((id, ())) => (id, "ended".to_owned()),
                Err(e) => (e.id(), panic_message(e)),
            };
            // Every task of `background` is in `names` (inserted at spawn).
            Some((names.get(&id).copied().unwrap_or(Task::Evaluator), how))
        }
    };
    shared.readiness.update(|r| r.stopping = true);
    match &failure {
        None => info!("shutting down: readiness off, scraping stopped, writing state"),
        Some((task, how)) => {
            metrics.observe_task_failure(task.label());
            error!(
                task = task.label(),
                how,
                "an essential task of the daemon failed: readiness off, draining and exiting non-zero so that the daemon is restarted"
            );
        }
    }
    let drain = async {
        // The supervisor stops its scrape tasks and waits for them to end;
        // only then is the last evaluation made and the state written.
        let _ = stop_tx.send(true);
        while scraping.join_next().await.is_some() {}
        while persisting.join_next().await.is_some() {}
        background.shutdown().await;
        let status = shared.evaluate(&emit);
        let _ = status_tx.send(status);
        shared.persist().await
    };
    let final_write = match tokio::time::timeout(DRAIN_GRACE, drain).await {
        Ok(written) => written,
        Err(_) => {
            error!(grace = ?DRAIN_GRACE, "shutdown grace period exceeded; exiting non-zero without the final state write");
            scraping.shutdown().await;
            persisting.shutdown().await;
            background.shutdown().await;
            Err(PersistError::GraceExceeded { grace: DRAIN_GRACE })
        }
    };
    let _ = stop_server_tx.send(true);
    while server.join_next().await.is_some() {}
    if let Some((task, how)) = failure {
        return Err(DaemonError::TaskFailed {
            task: task.label(),
            how,
        });
    }
    final_write.map_err(DaemonError::FinalStateWrite)?;
    Ok(())
}

/// Reads the state, if persistence is enabled: the snapshot to resume
/// from, if any, and how it was found. Every outcome is logged here.
async fn load_state(store: &StateStore, now: Timestamp) -> (Option<Snapshot>, ResumeOutcome) {
    if matches!(store, StateStore::Disabled) {
        return (None, ResumeOutcome::Disabled);
    }
    let store_name = store.describe();
    match store.load(now).await {
        Ok(Loaded::Missing) => {
            info!(store = %store_name, "no state yet: starting blind");
            (None, ResumeOutcome::Fresh)
        }
        Ok(Loaded::Resumed(snapshot)) => {
            info!(store = %store_name, saved_at = %snapshot.saved_at, instances = snapshot.ledger.instances().count(),
                  "resumed the ledger; continuity is checked on each instance's next scrape");
            if snapshot.saved_at > now {
                warn!(store = %store_name, saved_at = %snapshot.saved_at, %now,
                      skew_seconds = snapshot.saved_at.since(now).as_secs_f64(),
                      "the state was written ahead of this clock (the clock stepped back); samples are ordered after the saved ones until the clock catches up");
            }
            (Some(*snapshot), ResumeOutcome::Resumed)
        }
        Ok(Loaded::Corrupt { moved_to, reason }) => {
            warn!(store = %store_name, moved_to = %moved_to.display(), %reason,
                  "state file unusable: moved aside, starting blind");
            (None, ResumeOutcome::MovedAside(moved_to))
        }
        Err(e @ StoreError::File(_)) => {
            error!(error = %chain(&e), "state file unusable and not moved aside: starting blind");
            (None, ResumeOutcome::Fresh)
        }
        Err(e) => {
            let reason = chain(&e);
            error!(store = %store_name, error = %reason, "state unusable: starting blind");
            (None, ResumeOutcome::Unusable(reason))
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
    /// Where the state is kept.
    pub(super) store: StateStore,
    /// Whether this replica leads (always, without leader election).
    pub(super) leader: Arc<Leadership>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) config: Arc<Config>,
    pub(super) clock: Clock,
    pub(super) scrape_slots: Semaphore,
    readiness: Readiness,
    pub(super) history: Option<HistoryFeed>,
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
        let mut status = status;
        if let Some(history) = &self.history {
            history.annotate(&mut status, now);
        }
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

    /// Writes the state, if this replica leads (checked immediately before
    /// the write; the ConfigMap write is also fenced by its
    /// resourceVersion). A failure is logged with its reason (the OS error,
    /// the API's answer), counted, and turns readiness off until a write
    /// succeeds. A conflict (another writer) is counted, and the state is
    /// read again at once instead of being overwritten.
    pub(super) async fn persist(&self) -> Result<(), PersistError> {
        if !self.leader.is_leader() {
            return Ok(());
        }
        let snapshot = self.lock().snapshot(self.clock.now());
        if !self.leader.is_leader() {
            return Ok(());
        }
        let store = self.store.describe();
        let result = self.store.save(snapshot).await;
        match result {
            Ok(bytes) => {
                if self.metrics.state_write_error().is_some() {
                    info!(store = %store, "state written again after failed writes");
                }
                self.metrics.observe_state_bytes(bytes);
                self.metrics.observe_state_write(self.clock.now(), None);
                self.readiness.update(|r| r.state_write_failed = false);
                Ok(())
            }
            Err(e) => {
                let reason = chain(&e);
                if let StoreError::TooLarge { bytes, .. } = &e {
                    self.metrics.observe_state_bytes(*bytes);
                }
                error!(store = %store, error = %reason,
                       "state not saved; evidence since the last save would be lost on restart; not ready until a write succeeds");
                self.metrics
                    .observe_state_write(self.clock.now(), Some(reason));
                self.readiness.update(|r| r.state_write_failed = true);
                if matches!(e, StoreError::Conflict { .. } | StoreError::NotRead { .. }) {
                    if matches!(e, StoreError::Conflict { .. }) {
                        self.metrics.observe_state_conflict();
                    }
                    if let Err(again) = self.reload().await {
                        error!(store = %store, error = %chain(&again), "cannot read the state again after a conflict");
                    }
                }
                Err(match e {
                    StoreError::File(e) => PersistError::State(e),
                    e => PersistError::Store(e),
                })
            }
        }
    }

    /// Reads the shared state again and resumes the core from it (the
    /// targets and their health stay): on becoming leader, after a
    /// conflict, and periodically on a follower. Corrupt content resumes
    /// from nothing (the next write replaces it).
    pub(super) async fn reload(&self) -> Result<(), StoreError> {
        let loaded = self.store.load(self.clock.now()).await;
        let snapshot = match loaded {
            Ok(Loaded::Resumed(snapshot)) => Some(*snapshot),
            Ok(Loaded::Missing | Loaded::Corrupt { .. }) => None,
            Err(e @ StoreError::Corrupt { .. }) => {
                warn!(error = %chain(&e), "the shared state is unusable: resuming blind");
                None
            }
            Err(e) => {
                self.metrics.observe_state_load(Some(chain(&e)));
                self.readiness.update(|r| r.state_unsynced = true);
                return Err(e);
            }
        };
        self.lock().resume(&self.config, snapshot);
        self.metrics.observe_state_load(None);
        self.readiness.update(|r| r.state_unsynced = false);
        Ok(())
    }
}

/// How a task of a `JoinSet` ended.
fn how_it_ended(done: Result<(), tokio::task::JoinError>) -> String {
    match done {
        Ok(()) => "ended".to_owned(),
        Err(e) => panic_message(e),
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
