//! Simulated kube-apiservers that behave, as far as the auditor can observe,
//! like real ones: TLS from a cluster CA, bearer tokens from files (with
//! rotation and grace), realistic `/metrics` pages per emulated version,
//! `DELETE /metrics`, EndpointSlice discovery, and scripted token clients
//! whose counters move per token-cache miss.
//!
//! - [`scenario`]: the scenario file format (TOML).
//! - [`world`]: the pure world (counters, caches, clients, ground truth).
//! - [`history`]: days of that world as a Prometheus would have stored them.
//! - [`page`]: the `/metrics` page renderer.
//! - [`tls`]: the CA and server certificates.
//! - `server`: listeners and the request handler.
//!
//! [`Simulation::start`] runs a scenario on a [`Clock`]; `demo` shares that
//! clock with the daemon, tests use a manual one.

// Shell items (I/O allowed, see clippy.toml) carry their own allow: a
// module-wide one here would also exempt the pure `world`, `page` and
// `scenario` below.
pub mod attribution;
pub mod history;
pub mod objects;
pub mod page;
pub mod scenario;
mod server;
pub mod tls;
pub mod world;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

#[allow(clippy::disallowed_types)]
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::families::TokenKind;
use crate::time::Timestamp;

pub use scenario::{Scenario, ScenarioError};
pub use world::World;

use server::{Auth, Shared};

/// Where a simulation puts its files and binds its ports.
#[derive(Clone, Debug)]
pub struct Options {
    /// Directory for `ca.crt`, `token` and `forbidden-token` (created if missing).
    pub dir: PathBuf,
    /// Instance `i` listens on `first_ip + i` (all in 127.0.0.0/8).
    pub first_ip: Ipv4Addr,
}

impl Options {
    /// Files in `dir`, instances from 127.0.0.10 on.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Options {
        Options {
            dir: dir.into(),
            first_ip: Ipv4Addr::new(127, 0, 0, 10),
        }
    }
}

/// Why a simulation could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The scenario is invalid.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// TLS material could not be made.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// A file could not be written.
    #[error("cannot write {path}")]
    File {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A port could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// A running simulation: its addresses and files, the world's ground truth,
/// and shutdown.
pub struct Simulation {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    service: SocketAddr,
    ca_path: PathBuf,
    token_path: PathBuf,
    forbidden_token_path: PathBuf,
}

#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
impl Simulation {
    /// Starts `scenario` on `clock`: generates the CA, writes the CA and
    /// token files into `options.dir`, binds every instance (including those
    /// added later, whose ports stay closed until they join) and the
    /// `kubernetes` Service address. The scenario starts at `scenario.start`
    /// if set, else at `clock.now()`; the clock should be at that time.
    pub async fn start(
        scenario: &Scenario,
        clock: Clock,
        options: Options,
    ) -> Result<Simulation, SimError> {
        let dir = &options.dir;
        std::fs::create_dir_all(dir).map_err(|source| file_error(dir, source))?;
        let ca = tls::ClusterCa::generate()?;
        let ca_path = dir.join("ca.crt");
        ca.write(&ca_path)
            .map_err(|source| file_error(&ca_path, source))?;
        let token_path = dir.join("token");
        server::write_token(&token_path, &server::random_token())
            .map_err(|source| file_error(&token_path, source))?;
        let forbidden_token_path = dir.join("forbidden-token");
        let forbidden = server::random_token();
        server::write_token(&forbidden_token_path, &forbidden)
            .map_err(|source| file_error(&forbidden_token_path, source))?;

        let origin = scenario.start.unwrap_or_else(|| clock.now());
        let world = World::new(scenario, origin);
        let count = world.instance_count();
        // Instances share one port on consecutive loopback addresses, so one
        // EndpointSlice lists them all, as for a real control plane.
        let mut listeners = Vec::with_capacity(count);
        let mut addrs = Vec::with_capacity(count);
        let mut port = 0;
        for i in 0..count {
            let ip = Ipv4Addr::from(u32::from(options.first_ip).wrapping_add(i as u32));
            let wanted = SocketAddr::new(IpAddr::V4(ip), port);
            let listener = match TcpListener::bind(wanted).await {
                Ok(l) => l,
                Err(_) if port != 0 => bind(SocketAddr::new(IpAddr::V4(ip), 0)).await?,
                Err(source) => {
                    return Err(SimError::Bind {
                        addr: wanted.to_string(),
                        source,
                    });
                }
            };
            let addr = listener.local_addr().map_err(|source| SimError::Bind {
                addr: wanted.to_string(),
                source,
            })?;
            if i == 0 {
                port = addr.port();
            }
            addrs.push(addr);
            listeners.push(listener);
        }
        let mut tls_configs = Vec::with_capacity(count);
        for (i, addr) in addrs.iter().enumerate() {
            tls_configs.push(ca.instance_config(scenario.cert_name(i), addr.ip())?);
        }
        let service_listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let service = service_listener
            .local_addr()
            .map_err(|source| SimError::Bind {
                addr: "127.0.0.1:0".to_string(),
                source,
            })?;
        let service_tls = ca.server_config(&[service.ip()])?;
        let bulk = (0..count)
            .map(|i| Arc::new(page::Bulk::generate(scenario.page_kib, i as u64 + 1)))
            .collect();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            world: Mutex::new(world),
            clock,
            auth: Mutex::new(Auth {
                token_path: token_path.clone(),
                current: None,
                previous: Vec::new(),
                grace: scenario.token_grace,
                forbidden,
                rotations_seen: 0,
            }),
            bulk,
            addrs: addrs.clone(),
            tls: tls_configs,
            vip_cursor: AtomicUsize::new(0),
            shutdown: shutdown_rx,
            objects: objects::Objects::seeded(),
            attribution: Default::default(),
        });
        drop(shared.world_now());
        let mut tasks = Vec::new();
        for (i, listener) in listeners.into_iter().enumerate() {
            let present = shared
                .world_now()
                .view(i)
                .is_some_and(|v| v.presence == world::Presence::Up);
            let listener = present.then_some(listener);
            tasks.push(tokio::spawn(server::serve_instance(
                shared.clone(),
                i,
                addrs[i],
                listener,
            )));
        }
        tasks.push(tokio::spawn(server::serve_service(
            shared.clone(),
            service_listener,
            service_tls,
        )));
        Ok(Simulation {
            shared,
            shutdown,
            tasks,
            service,
            ca_path,
            token_path,
            forbidden_token_path,
        })
    }

    /// The address of every instance that ever exists, by instance index.
    pub fn instance_addresses(&self) -> &[SocketAddr] {
        &self.shared.addrs
    }

    /// The `kubernetes` Service address (like `KUBERNETES_SERVICE_HOST:PORT`):
    /// serves discovery and `/version`; each connection lands on the next
    /// present instance, so scraping `/metrics` through it mixes instances.
    pub fn service_address(&self) -> SocketAddr {
        self.service
    }

    /// The CA certificate (PEM) that verifies every instance.
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// The token file the auditor reads; rotation events rewrite it.
    pub fn token_path(&self) -> &Path {
        &self.token_path
    }

    /// A token that authenticates but has no `/metrics` permission (403).
    pub fn forbidden_token_path(&self) -> &Path {
        &self.forbidden_token_path
    }

    /// The simulated apiserver's ConfigMaps and Leases (namespace
    /// [`objects::NAMESPACE`]).
    pub fn objects(&self) -> &objects::Objects {
        &self.shared.objects
    }

    /// The clock the simulation runs on.
    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    /// The world, advanced to the clock's now. Hold the guard briefly: the
    /// servers wait for it.
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.shared.world_now()
    }

    /// Ground truth: increments of `kind` on instance `i` in `(t0, t1]`.
    pub fn increments(&self, i: usize, kind: TokenKind, t0: Timestamp, t1: Timestamp) -> u64 {
        self.world().increments(i, kind, t0, t1)
    }

    /// Stops every listener and connection and waits for them (bounded).
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
    }
}

/// What `cutover-auditor simulate` was asked for, besides the scenario file.
#[derive(Clone, Debug, Default)]
pub struct SimulateOptions {
    /// Where the CA, token, state and `cutover-auditor.toml` go; `None`: a
    /// fresh directory under the system temp dir, removed on exit.
    pub dir: Option<PathBuf>,
    /// Overrides the scenario's `speed` (1: real time).
    pub speed: Option<f64>,
}

/// The name of the daemon configuration `simulate` writes into its directory.
pub const SERVE_CONFIG: &str = "cutover-auditor.toml";

/// Runs the scenario in `path` on an accelerated clock (its own speed, or
/// `options.speed`) until `shutdown` completes or the scenario's `duration`
/// has passed, printing where the apiservers listen, where the CA and token
/// files are, and the `serve` command that audits them with the
/// configuration written to `DIR/cutover-auditor.toml`. A temp directory
/// (no `options.dir`) is removed when the run ends, also on a signal.
/// This is `cutover-auditor simulate --scenario FILE`.
pub async fn simulate_from_file(
    path: &Path,
    dir: Option<PathBuf>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SimError> {
    let options = SimulateOptions { dir, speed: None };
    simulate_with(path, options, shutdown).await
}

/// [`simulate_from_file`] with every option of `simulate`.
#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
pub async fn simulate_with(
    path: &Path,
    options: SimulateOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SimError> {
    let mut scenario = Scenario::load(path)?;
    if let Some(speed) = options.speed {
        scenario.speed = speed;
    }
    let (dir, temporary) = match options.dir {
        Some(dir) => (dir, false),
        None => (
            std::env::temp_dir().join(format!("cutover-auditor-simulate-{}", std::process::id())),
            true,
        ),
    };
    let result = simulate(&scenario, &dir, shutdown).await;
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
async fn simulate(
    scenario: &Scenario,
    dir: &Path,
    shutdown: impl Future<Output = ()>,
) -> Result<(), SimError> {
    // The real time at which the clock starts: `serve --clock-start` needs it
    // to run on the same simulated time.
    let real_start = Clock::real().now();
    let origin = scenario.start.unwrap_or(real_start);
    let clock = Clock::accelerated(origin, scenario.speed);
    let sim = Simulation::start(scenario, clock.clone(), Options::in_dir(dir)).await?;
    let config_path = dir.join(SERVE_CONFIG);
    let run = ServeClock {
        speed: clock.speed(),
        origin,
        real_start,
    };
    let written = std::fs::write(&config_path, serve_config(scenario, &sim, dir, &run))
        .map_err(|source| file_error(&config_path, source));
    if let Err(err) = written {
        sim.shutdown().await;
        return Err(err);
    }
    println!("{}", describe(scenario, &sim));
    println!(
        "  daemon configuration: {}\n\naudit them with:\n  {}",
        config_path.display(),
        run.serve_command(&config_path)
    );
    match scenario.duration {
        Some(d) => {
            tokio::select! {
                _ = shutdown => {}
                _ = clock.sleep(d) => {}
            }
        }
        None => shutdown.await,
    }
    sim.shutdown().await;
    Ok(())
}

/// The clock of a running simulation, as `serve` must follow it.
#[derive(Clone, Copy, Debug)]
pub struct ServeClock {
    /// Simulated seconds per real second.
    pub speed: f64,
    /// The simulated time at `real_start`.
    pub origin: Timestamp,
    /// The real time at which the simulation's clock started.
    pub real_start: Timestamp,
}

impl ServeClock {
    /// The `serve` command line for `config`: plain when the simulation runs
    /// on real time, else with `--speed` and `--clock-start SIM@REAL` (just
    /// `REAL` when the simulation starts at real time).
    pub fn serve_command(&self, config: &Path) -> String {
        let mut command = format!("cutover-auditor serve --config {}", config.display());
        if self.speed != 1.0 {
            command.push_str(&format!(" --speed {}", self.speed));
        }
        if self.origin != self.real_start {
            command.push_str(&format!(
                " --clock-start {}@{}",
                self.origin, self.real_start
            ));
        } else if self.speed != 1.0 {
            command.push_str(&format!(" --clock-start {}", self.real_start));
        }
        command
    }
}

/// The scrape interval (simulated) for a simulation at `speed`: half a real
/// second of simulated time, between 1 s and 30 s (the production default).
pub fn serve_interval(speed: f64) -> Duration {
    Duration::from_secs_f64((speed * 0.5).clamp(1.0, 30.0))
}

/// A daemon configuration for `sim`: every instance as a static target
/// (with the CA and token files), the state in `dir`, and durations in
/// simulated time that suit the scenario's speed: scrape every
/// [`serve_interval`], timeout half of it, coverage tolerance 10
/// intervals (above interval + timeout) and windows of 60 intervals (30 min
/// at 60x, as in `demo`).
pub fn serve_config(scenario: &Scenario, sim: &Simulation, dir: &Path, run: &ServeClock) -> String {
    let interval = serve_interval(scenario.speed);
    let timeout = interval / 2;
    let tolerance = interval * 10;
    let window = interval * 60;
    let show = |d: Duration| humantime::format_duration(d).to_string();
    let quote = |p: &Path| toml_string(&p.display().to_string());
    let mut out = format!(
        "# Written by `cutover-auditor simulate` for scenario {name} at {speed}x:\n\
         # the simulated apiservers, their CA and token. simulate makes a new CA,\n\
         # token and port on every run and rewrites this file. Run the daemon on\n\
         # the simulation's clock (durations below are simulated time) with\n\
         #   {command}\n\
         listen = \"127.0.0.1:9877\"\n\n\
         [scrape]\ninterval = \"{interval}\"\ntimeout = \"{timeout}\"\n",
        name = toml_string(&scenario.name),
        speed = scenario.speed,
        command = run.serve_command(&dir.join(SERVE_CONFIG)),
        interval = show(interval),
        timeout = show(timeout),
    );
    out.push_str(
        "\n# Every instance of the scenario, also those that join later (refused\n\
         # until then) or leave (down from then on): a listed instance that cannot\n\
         # be scraped keeps the verdicts blind. To follow joins and leaves instead,\n\
         # replace these tables with discovery through the simulated Service:\n",
    );
    out.push_str(&format!(
        "# [targets.kubernetes]\n# api_server = \"https://{}\"\n# token_file = {}\n# ca_file = {}\n",
        sim.service_address(),
        quote(sim.token_path()),
        quote(sim.ca_path()),
    ));
    for addr in sim.instance_addresses() {
        out.push_str(&format!(
            "\n[[targets.static]]\nurl = \"https://{addr}\"\nserver_name = \"kubernetes\"\nca_file = {}\ntoken_file = {}\n",
            quote(sim.ca_path()),
            quote(sim.token_path()),
        ));
    }
    for cutover in [
        "legacy-tokens",
        "legacy-auto-tokens",
        "token-expiry-extension",
    ] {
        out.push_str(&format!(
            "\n[cutovers.{cutover}]\nwindow = \"{}\"\ncoverage_tolerance = \"{}\"\n",
            show(window),
            show(tolerance),
        ));
    }
    out.push_str(&format!(
        "\n[state]\npath = {}\n\n[log]\nformat = \"text\"\nlevel = \"info\"\n",
        quote(&dir.join("state.json")),
    ));
    out
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A human summary of a running simulation: addresses and files (never tokens).
pub fn describe(scenario: &Scenario, sim: &Simulation) -> String {
    let mut out = format!(
        "simulated apiservers: scenario {:?}, speed {}x, server name \"kubernetes\"\n  kubernetes service: https://{}\n",
        scenario.name,
        scenario.speed,
        sim.service_address()
    );
    let world = sim.world();
    for (i, addr) in sim.instance_addresses().iter().enumerate() {
        if let Some(v) = world.view(i) {
            let note = match v.presence {
                world::Presence::Pending => " (joins later)",
                _ => "",
            };
            out.push_str(&format!(
                "  instance {i}: https://{addr} v{}{note}\n",
                v.version
            ));
        }
    }
    out.push_str(&format!(
        "  CA file: {}\n  token file: {}\n  forbidden token file: {}",
        sim.ca_path().display(),
        sim.token_path().display(),
        sim.forbidden_token_path().display()
    ));
    out
}

#[allow(clippy::disallowed_methods, clippy::disallowed_types)]
async fn bind(addr: SocketAddr) -> Result<TcpListener, SimError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| SimError::Bind {
            addr: addr.to_string(),
            source,
        })
}

fn file_error(path: &Path, source: std::io::Error) -> SimError {
    SimError::File {
        path: path.display().to_string(),
        source,
    }
}
