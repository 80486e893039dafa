//! The daemon: discovery, one scrape task per apiserver, evaluation,
//! persistence and the admin server, wired on one [`Clock`] with one
//! shutdown path.
//!
//! The decisions are made by the pure core under one lock ([`Core`]); the
//! tasks here only move data between the network, the core and the disk.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};
use tracing::{error, info, warn};

use crate::alerting::Pusher;
use crate::clock::Clock;
use crate::config::{Config, Targets};
use crate::credentials::TokenFile;
use crate::discovery::Discovery;
use crate::exposition::Watch;
use crate::families::{self, TokenKind};
use crate::ledger::{Ledger, Observation};
use crate::metrics::Metrics;
use crate::scrape::{ScrapeError, Scraped, Scraper, Target};
use crate::server::{self, Admin};
use crate::state::{self, Loaded, Snapshot};
use crate::status::{CutoverStatus, KindUses, ScrapeErrorKind, Status, TargetHealth};
use crate::time::Timestamp;
use crate::verdict::{self, Assessment, CutoverSpec, Tracker, Transition};

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

/// Families the ledger keeps: the token counters and the reset sentinel.
fn ledger_families() -> Vec<&'static str> {
    let mut families: Vec<&'static str> = TokenKind::ALL.iter().map(|k| k.family()).collect();
    families.push(families::RESET_SENTINEL);
    families
}

/// How long the shutdown may take before the daemon gives up on it.
const DRAIN_GRACE: Duration = Duration::from_secs(10);
/// Concurrent scrapes at most: pages are large, and the apiservers are shared.
const MAX_CONCURRENT_SCRAPES: usize = 8;
/// Repeated failures of one target are logged at most this often (simulated time).
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(300);

/// Resolves `host:port` to an address, or says why there is none.
pub type ResolveFn = dyn Fn(&str) -> Result<SocketAddr, String> + Send + Sync;

/// How the host names of static targets are resolved.
#[derive(Clone, Default)]
pub enum Resolver {
    /// The system resolver.
    #[default]
    System,
    /// A function from `host:port` to an address, or why there is none
    /// (tests: names that resolve, then stop, without a DNS server).
    Function(Arc<ResolveFn>),
}

impl Resolver {
    async fn resolve(&self, host_port: &str) -> Result<SocketAddr, String> {
        match self {
            Resolver::System => tokio::net::lookup_host(host_port)
                .await
                .map_err(|e| format!("cannot resolve {host_port}: {e}"))?
                .next()
                .ok_or_else(|| format!("{host_port} has no address")),
            Resolver::Function(f) => f(host_port),
        }
    }
}

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

    let (core, resume) = Core::start(&config, clock.now());
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

/// Completes once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// What the tasks share.
struct Shared {
    core: Mutex<Core>,
    metrics: Arc<Metrics>,
    config: Arc<Config>,
    clock: Clock,
    scrape_slots: Semaphore,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Core> {
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

/// The state the core decides on, behind one lock.
struct Core {
    ledger: Ledger,
    trackers: BTreeMap<String, Tracker>,
    health: BTreeMap<String, TargetHealth>,
    /// Current targets, in order.
    targets: Vec<String>,
    /// Per target, when a failure was last logged.
    failure_logged: HashMap<String, Timestamp>,
    /// Whether a clock step back is being reported (logged once per episode).
    clock_skewed: bool,
}

impl Core {
    /// A fresh core, or the one the state file holds.
    fn start(config: &Config, now: Timestamp) -> (Core, ResumeOutcome) {
        let mut core = Core {
            ledger: Ledger::new(retention_for(config)),
            trackers: BTreeMap::new(),
            health: BTreeMap::new(),
            targets: Vec::new(),
            failure_logged: HashMap::new(),
            clock_skewed: false,
        };
        let Some(path) = &config.state.path else {
            return (core, ResumeOutcome::Disabled);
        };
        match state::load(path, now) {
            Ok(Loaded::Missing) => {
                info!(path = %path.display(), "no state file yet: starting blind");
                (core, ResumeOutcome::Fresh)
            }
            Ok(Loaded::Resumed(snapshot)) => {
                info!(path = %path.display(), saved_at = %snapshot.saved_at, instances = snapshot.ledger.instances().count(),
                      "resumed the ledger; continuity is checked on each instance's next scrape");
                if snapshot.saved_at > now {
                    warn!(path = %path.display(), saved_at = %snapshot.saved_at, %now,
                          skew_seconds = snapshot.saved_at.since(now).as_secs_f64(),
                          "the state file was written ahead of this clock (the clock stepped back); samples are ordered after the saved ones until the clock catches up");
                }
                core.ledger = snapshot.ledger;
                // Retention follows the current config, never the file's.
                core.ledger.set_retention(retention_for(config));
                core.trackers = snapshot.trackers;
                (core, ResumeOutcome::Resumed)
            }
            Ok(Loaded::Corrupt { moved_to, reason }) => {
                warn!(path = %path.display(), moved_to = %moved_to.display(), %reason,
                      "state file unusable: moved aside, starting blind");
                (core, ResumeOutcome::MovedAside(moved_to))
            }
            Err(e) => {
                error!(error = %format!("{e:#}"), "state file unusable and not moved aside: starting blind");
                (core, ResumeOutcome::Fresh)
            }
        }
    }

    fn set_targets(&mut self, targets: &[String], now: Timestamp, metrics: &Metrics) {
        // Instances of the ledger that are no target any more: ones that left
        // since the last list, and, after a resume from the state file, ones
        // that left while the daemon was down.
        let gone: Vec<String> = self
            .ledger
            .instances()
            .filter(|(name, l)| l.gone_at().is_none() && !targets.iter().any(|t| t == name))
            .map(|(name, _)| name.to_owned())
            .chain(
                self.ledger
                    .listed_unscraped()
                    .filter(|(name, l)| l.gone_at.is_none() && !targets.iter().any(|t| t == name))
                    .map(|(name, _)| name.to_owned()),
            )
            .chain(
                self.targets
                    .iter()
                    .filter(|t| !targets.contains(t))
                    .cloned(),
            )
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        for gone in gone {
            info!(instance = %gone, "apiserver instance left; its unscraped tail is a coverage hole");
            self.ledger.remove(&gone, now);
            self.health.remove(&gone);
            self.failure_logged.remove(&gone);
        }
        // Every target is accounted for from the moment it is listed, scraped
        // or not: until a good scrape it is unobserved.
        for target in targets {
            self.ledger.list(target, now);
        }
        for new in targets.iter().filter(|t| !self.targets.contains(t)) {
            info!(instance = %new, "apiserver instance found");
            self.health.insert(
                new.clone(),
                TargetHealth {
                    instance: new.clone(),
                    ..TargetHealth::default()
                },
            );
        }
        metrics.set_targets(&self.targets, targets);
        self.targets = targets.to_vec();
    }

    fn record_scrape(
        &mut self,
        instance: &str,
        started: Timestamp,
        ended: Timestamp,
        took: Duration,
        result: Result<Scraped, ScrapeError>,
        metrics: &Metrics,
    ) {
        let result = result.and_then(|scraped| {
            let obs = Observation::from_page(
                &scraped.page,
                &ledger_families(),
                scraped.header_start_time,
            )
            .map_err(|e| ScrapeError {
                kind: ScrapeErrorKind::Malformed,
                detail: e.to_string(),
            })?;
            Ok((scraped, obs))
        });
        let Some(health) = self.health.get_mut(instance) else {
            // The target left while it was being scraped.
            return;
        };
        health.last_scrape = Some(ended);
        health.last_duration_seconds = Some(took.as_secs_f64());
        let failure = match result {
            Ok((scraped, obs)) => {
                if health.consecutive_failures > 0 {
                    info!(%instance, failures = health.consecutive_failures, "scrapes succeed again");
                }
                let outcome = self.ledger.observe(instance, started, obs);
                if let Some(skew) = outcome.clock_skew {
                    if !self.clock_skewed {
                        warn!(%instance, skew_seconds = skew.as_secs_f64(), at = %started,
                              "the clock stepped back behind the last sample; samples are ordered after it until the clock catches up");
                    }
                    self.clock_skewed = true;
                    metrics.observe_clock_step_back();
                } else if outcome.incomplete.is_empty() {
                    self.clock_skewed = false;
                }
                if outcome.mixed {
                    warn!(%instance, "the process start time flapped back to one seen before: this address reaches more than one apiserver; verdicts are blind (mixed_instances)");
                }
                if let (Some(cause), Some(hole)) = (outcome.reset, outcome.hole) {
                    info!(%instance, ?cause, hole_seconds = hole.len().as_secs_f64(), "counter reset; the interval before it is a coverage hole");
                }
                if !outcome.incomplete.is_empty() {
                    let missing: Vec<&str> =
                        outcome.incomplete.iter().map(|k| k.as_str()).collect();
                    Err(ScrapeError {
                        kind: ScrapeErrorKind::IncompletePage,
                        detail: format!(
                            "the page lacks {} series the last page of the same process had ({}); \
                             not recorded: the time since the last complete page stays unobserved",
                            missing.len(),
                            missing.join(", ")
                        ),
                    })
                } else {
                    health.up = true;
                    health.last_success = Some(ended);
                    health.last_error = None;
                    health.last_error_detail = None;
                    health.consecutive_failures = 0;
                    health.kubernetes_version =
                        scraped.page.kubernetes_version().map(str::to_owned);
                    metrics.observe_scrape(instance, took, Ok(()));
                    Ok(())
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = failure {
            health.up = false;
            health.last_error = Some(e.kind);
            health.last_error_detail = Some(e.detail.clone());
            health.consecutive_failures += 1;
            let last = self.failure_logged.get(instance).copied();
            if health.consecutive_failures == 1
                || last.is_none_or(|t| ended.since(t) >= FAILURE_LOG_EVERY)
            {
                warn!(%instance, reason = %e.kind, detail = %e.detail, failures = health.consecutive_failures, "scrape failed");
                self.failure_logged.insert(instance.to_owned(), ended);
            }
            metrics.observe_scrape(instance, took, Err(e.kind));
        }
    }

    fn evaluate(
        &mut self,
        specs: &[CutoverSpec],
        metrics: &Metrics,
        now: Timestamp,
    ) -> (Status, Vec<(Transition, Assessment)>) {
        self.ledger.prune(now);
        let mut transitions = Vec::new();
        let mut verdicts = Vec::new();
        for spec in specs {
            let assessment = verdict::assess(spec, &self.ledger, now);
            let tracker = self.trackers.entry(spec.name.clone()).or_default();
            if let Some(t) = tracker.update(&spec.name, &assessment, now) {
                transitions.push((t, assessment.clone()));
            }
            verdicts.push((spec, tracker.verdict(&spec.name, assessment, now)));
        }
        let pairs: Vec<_> = verdicts.iter().map(|(s, v)| (*s, v)).collect();
        metrics.observe_evaluation(&pairs, &self.ledger, now);
        let status = Status {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            evaluated_at: Some(now),
            cutovers: verdicts
                .iter()
                .map(|(s, v)| CutoverStatus::new(s, v))
                .collect(),
            targets: self
                .targets
                .iter()
                .filter_map(|t| self.health.get(t).cloned())
                .collect(),
            kinds: TokenKind::ALL
                .iter()
                .map(|k| KindUses {
                    kind: *k,
                    total: self.ledger.family_total(k.family()),
                    increases: crate::metrics::INCREASE_WINDOWS
                        .iter()
                        .map(|(w, d)| {
                            (
                                (*w).to_owned(),
                                self.ledger.family_increase(k.family(), now - *d),
                            )
                        })
                        .collect(),
                })
                .collect(),
        };
        (status, transitions)
    }

    fn snapshot(&self, now: Timestamp) -> Snapshot {
        Snapshot {
            version: state::FORMAT_VERSION,
            saved_at: now,
            ledger: self.ledger.clone(),
            trackers: self.trackers.clone(),
        }
    }
}

/// Keeps increments as long as the longest window needs them.
fn retention_for(config: &Config) -> crate::ledger::Retention {
    let longest = config
        .cutovers
        .iter()
        .map(|c| c.window)
        .chain(crate::metrics::INCREASE_WINDOWS.iter().map(|(_, d)| *d))
        .max()
        .unwrap_or_default();
    crate::ledger::Retention {
        horizon: longest + Duration::from_secs(3_600),
        ..crate::ledger::Retention::default()
    }
}

/// One listed target: where to scrape it, or why it cannot be scraped.
#[derive(Clone, Debug)]
struct Listed {
    /// The instance label.
    instance: String,
    /// The target, or why its name did not resolve.
    endpoint: Result<Target, String>,
}

impl Listed {
    /// What a scrape task is started for: the resolved address, if any.
    fn addr(&self) -> Option<SocketAddr> {
        self.endpoint.as_ref().ok().map(|t| t.addr)
    }
}

/// Builds the discovery task: it publishes the current target list.
fn discover(
    shared: Arc<Shared>,
    tx: watch::Sender<Option<Vec<Listed>>>,
    resolver: Resolver,
) -> Result<impl Future<Output = ()> + Send + 'static, DaemonError> {
    let config = Arc::clone(&shared.config);
    let real_timeout = shared.clock.to_real(config.scrape.timeout);
    let mut tokens: BTreeMap<PathBuf, Arc<TokenFile>> = BTreeMap::new();
    let mut token = |path: &PathBuf| {
        Arc::clone(
            tokens
                .entry(path.clone())
                .or_insert_with(|| Arc::new(TokenFile::new(path.clone()))),
        )
    };
    struct StaticSource {
        instance: String,
        host_port: String,
        path: String,
        server_name: String,
        ca_file: PathBuf,
        token: Arc<TokenFile>,
    }
    enum Source {
        Kubernetes {
            discovery: Discovery,
            server_name: String,
            ca_file: PathBuf,
            token: Arc<TokenFile>,
            refresh: Duration,
        },
        Static(Vec<StaticSource>),
    }
    let source = match &config.targets {
        Targets::Kubernetes(k) => Source::Kubernetes {
            discovery: Discovery::new(
                &k.api_server,
                &k.server_name,
                &k.ca_file,
                token(&k.token_file),
                real_timeout,
            )?,
            server_name: k.server_name.clone(),
            ca_file: k.ca_file.clone(),
            token: token(&k.token_file),
            refresh: k.refresh_interval,
        },
        Targets::Static(list) => Source::Static(
            list.iter()
                .map(|t| {
                    let (host_port, path) = split_static_url(&t.url);
                    StaticSource {
                        instance: host_port.clone(),
                        host_port,
                        path,
                        server_name: t.server_name.clone(),
                        ca_file: t.ca_file.clone(),
                        token: token(&t.token_file),
                    }
                })
                .collect(),
        ),
    };
    Ok(async move {
        let mut failed_before = false;
        // Static targets whose name does not resolve now (logged once per failure).
        let mut unresolved: BTreeSet<String> = BTreeSet::new();
        loop {
            let (targets, next) = match &source {
                Source::Kubernetes {
                    discovery,
                    server_name,
                    ca_file,
                    token,
                    refresh,
                } => match discovery.endpoints().await {
                    Ok(addrs) => {
                        if failed_before {
                            info!(instances = addrs.len(), "discovery works again");
                        }
                        failed_before = false;
                        let targets = addrs
                            .into_iter()
                            .map(|addr| Listed {
                                instance: addr.to_string(),
                                endpoint: Ok(Target {
                                    instance: addr.to_string(),
                                    addr,
                                    server_name: server_name.clone(),
                                    path: "/metrics".to_owned(),
                                    ca_file: ca_file.clone(),
                                    token: Arc::clone(token),
                                }),
                            })
                            .collect();
                        (Some(targets), *refresh)
                    }
                    Err(e) => {
                        // Keep the last known targets: an unreachable API is no
                        // proof that apiservers left.
                        if !failed_before {
                            warn!(error = %format!("{e:#}"), "discovery failed; keeping the last known apiserver instances");
                        }
                        failed_before = true;
                        (None, config.scrape.interval.min(*refresh))
                    }
                },
                Source::Static(list) => {
                    // A static target is listed whether its name resolves or
                    // not: one that does not is a target that is down.
                    let mut targets = Vec::new();
                    for t in list {
                        let endpoint = match resolver.resolve(&t.host_port).await {
                            Ok(addr) => {
                                if unresolved.remove(&t.instance) {
                                    info!(instance = %t.instance, %addr, "static target resolves again");
                                }
                                Ok(Target {
                                    instance: t.instance.clone(),
                                    addr,
                                    server_name: t.server_name.clone(),
                                    path: t.path.clone(),
                                    ca_file: t.ca_file.clone(),
                                    token: Arc::clone(&t.token),
                                })
                            }
                            Err(e) => {
                                if unresolved.insert(t.instance.clone()) {
                                    warn!(instance = %t.instance, error = %e, "static target does not resolve; it stays a target, down, until it does");
                                }
                                Err(e)
                            }
                        };
                        targets.push(Listed {
                            instance: t.instance.clone(),
                            endpoint,
                        });
                    }
                    (Some(targets), STATIC_REFRESH)
                }
            };
            if let Some(mut targets) = targets {
                targets.sort_by(|a, b| a.instance.cmp(&b.instance));
                targets.dedup_by(|a, b| a.instance == b.instance);
                tx.send_if_modified(|current| {
                    let same = current.as_ref().is_some_and(|c| {
                        c.len() == targets.len()
                            && c.iter()
                                .zip(&targets)
                                .all(|(a, b)| a.instance == b.instance && a.addr() == b.addr())
                    });
                    if !same {
                        *current = Some(targets);
                    }
                    !same
                });
            }
            shared.clock.sleep(next).await;
        }
    })
}

/// How often the names of static targets are resolved again.
const STATIC_REFRESH: Duration = Duration::from_secs(60);

/// `https://host:port/path` → (instance label `host:port`, path), without
/// resolving anything: the label of a static target never depends on DNS.
fn split_static_url(url: &str) -> (String, String) {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_owned()),
        None => (rest, "/metrics".to_owned()),
    };
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !authority.ends_with(']')
    {
        authority.to_owned()
    } else {
        format!("{authority}:443")
    };
    (with_port, path)
}

/// Starts and stops one scrape task per target as the target list changes,
/// until `stop` turns true (or the list's sender is gone); then stops its
/// scrape tasks and returns only once every one of them has ended.
async fn supervise_scrapers(
    shared: Arc<Shared>,
    mut targets_rx: watch::Receiver<Option<Vec<Listed>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut running: BTreeMap<String, (Option<SocketAddr>, AbortHandle)> = BTreeMap::new();
    let watch = Watch::default_families();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &std::path::Path, window: &str) -> Config {
        let text = format!(
            r#"
[[targets.static]]
url = "https://127.0.0.1:6443"
ca_file = "{dir}/ca.crt"
token_file = "{dir}/token"
[cutovers.legacy-tokens]
window = "{window}"
[state]
path = "{dir}/state.json"
"#,
            dir = dir.display()
        );
        Config::parse(&text, |_| None).expect("valid config")
    }

    #[test]
    fn retention_follows_the_config_on_resume_not_the_state_file() {
        let dir =
            std::env::temp_dir().join(format!("cutover-core-retention-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let now = Timestamp::from_secs(1_800_000_000);
        // Written by a daemon whose longest window was 7 days.
        let (mut core, _) = Core::start(&config(&dir, "7d"), now);
        let old = core.ledger.retention().horizon;
        assert_eq!(old, Duration::from_secs(7 * 86_400 + 3_600));
        core.ledger.list("127.0.0.1:6443", now);
        state::save(&dir.join("state.json"), &core.snapshot(now)).unwrap();
        // Restarted with a 14-day window: evidence for 14 days is kept.
        let (core, resume) = Core::start(&config(&dir, "14d"), now);
        assert_eq!(resume, ResumeOutcome::Resumed);
        assert_eq!(
            core.ledger.retention().horizon,
            Duration::from_secs(14 * 86_400 + 3_600)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
