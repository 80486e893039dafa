//! A daemon under test against simulated apiservers, both on one
//! accelerated clock.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cutover_auditor::clock::Clock;
use cutover_auditor::config::{Config, StaticTarget, Targets};
use cutover_auditor::daemon::{self, DaemonError, Event, Resolver};
use cutover_auditor::exposition::{Page, PageDecoder, Watch};
use cutover_auditor::simulator::scenario::Scenario;
use cutover_auditor::simulator::{Options, Simulation};
use cutover_auditor::status::Status;
use cutover_auditor::time::Timestamp;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// A fresh directory for one test's files.
pub fn test_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cutover-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create test dir");
    dir
}

/// Starts the simulated world of `scenario` on an accelerated clock.
pub async fn start_world(scenario: &str, dir: &Path) -> (Simulation, Clock, Timestamp) {
    let scenario = Scenario::parse(scenario).expect("scenario parses");
    let origin = Clock::real().now();
    let clock = Clock::accelerated(origin, scenario.speed);
    let sim = Simulation::start(&scenario, clock.clone(), Options::in_dir(dir.join("sim")))
        .await
        .expect("simulation starts");
    (sim, clock, origin)
}

/// The config of a daemon discovering the simulated apiservers; `extra`
/// is appended (cutover sections).
pub fn config_for(
    sim: &Simulation,
    state: &Path,
    interval: &str,
    timeout: &str,
    extra: &str,
) -> Config {
    let text = format!(
        r#"
listen = "127.0.0.1:0"
[scrape]
interval = "{interval}"
timeout = "{timeout}"
[targets.kubernetes]
api_server = "https://{service}"
token_file = "{token}"
ca_file = "{ca}"
refresh_interval = "1m"
[state]
path = "{state}"
write_interval = "1m"
[log]
format = "text"
level = "warn"
{extra}
"#,
        service = sim.service_address(),
        token = sim.token_path().display(),
        ca = sim.ca_path().display(),
        state = state.display(),
    );
    Config::parse(&text, |_| None).expect("test config is valid")
}

/// `config` with static targets at `urls` instead of discovery (the
/// simulator's CA, token and server name).
pub fn with_static_targets(mut config: Config, sim: &Simulation, urls: &[String]) -> Config {
    config.targets = Targets::Static(
        urls.iter()
            .map(|url| StaticTarget {
                url: url.parse().expect("a static target URL"),
                server_name: "kubernetes".to_owned(),
                ca_file: sim.ca_path().to_owned(),
                token_file: sim.token_path().to_owned(),
            })
            .collect(),
    );
    config
}

/// Requests with a bearer token that simulated instance `i` has received
/// (every one goes through its token cache: a hit or a miss).
pub fn requests_on(sim: &Simulation, i: usize) -> u64 {
    sim.world()
        .view(i)
        .map_or(0, |v| v.cache_hits + v.cache_misses)
}

/// A running daemon and everything it emitted.
pub struct Daemon {
    pub addr: SocketAddr,
    pub events: Arc<Mutex<Vec<Event>>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), DaemonError>>,
    collector: JoinHandle<()>,
}

impl Daemon {
    pub async fn start(config: Config, clock: Clock) -> Daemon {
        Daemon::start_with_resolver(config, clock, Resolver::System).await
    }

    /// [`Daemon::start`], resolving static target names with `resolver`.
    pub async fn start_with_resolver(config: Config, clock: Clock, resolver: Resolver) -> Daemon {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&events);
        let collector = tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                sink.lock().unwrap().push(e);
            }
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let options = daemon::Options {
            config,
            clock,
            listener: Some(listener),
            events: Some(tx),
        };
        let task = tokio::spawn(daemon::run_with_resolver(options, resolver, async {
            let _ = stopped.await;
        }));
        Daemon {
            addr,
            events,
            stop: Some(stop),
            task,
            collector,
        }
    }

    /// Stops the daemon and waits for its drain (bounded).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(Duration::from_secs(20), &mut self.task)
            .await
            .expect("daemon drains within 20 s")
            .expect("daemon task did not panic");
        result.expect("daemon ran without error");
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.collector).await;
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        reqwest::Client::new()
            .get(format!("http://{}{path}", self.addr))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("admin server answers")
    }

    pub async fn status(&self) -> Status {
        let body = self
            .get("/api/v1/status")
            .await
            .bytes()
            .await
            .expect("status body");
        serde_json::from_slice(&body).expect("status JSON")
    }

    /// The daemon's own `/metrics`, read with the project's extractor.
    pub async fn metrics(&self, families: &[&str]) -> (Page, String) {
        let text = self
            .get("/metrics")
            .await
            .text()
            .await
            .expect("metrics text");
        let mut decoder = PageDecoder::new(Watch::new(families.iter().copied()));
        decoder.feed(text.as_bytes()).expect("own metrics parse");
        (decoder.finish().expect("own metrics parse"), text)
    }

    /// Waits (bounded, real time) until the first evaluation has happened.
    pub async fn wait_evaluated(&self) -> Status {
        for _ in 0..200 {
            let s = self.status().await;
            if s.evaluated_at.is_some() {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no evaluation within 10 s");
    }

    /// Waits (bounded: 30 s real) until the status satisfies `check`; returns it.
    pub async fn wait_status(&self, what: &str, check: impl Fn(&Status) -> bool) -> Status {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.status().await;
            if check(&s) {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "not {what} within 30 s: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits (bounded: 30 s real) until `cutover` is in `state`; returns that status.
    pub async fn wait_state(
        &self,
        cutover: &str,
        state: cutover_auditor::verdict::State,
    ) -> Status {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let s = self.status().await;
            if s.cutovers
                .iter()
                .any(|c| c.name == cutover && c.state == state)
            {
                return s;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{cutover} not {state} within 30 s: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every verdict transition so far: (time, cutover, from, to, regression).
    pub fn transitions(&self) -> Vec<(Timestamp, String, Option<String>, String, bool)> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::Transition { at, transition, .. } => Some((
                    *at,
                    transition.cutover.to_string(),
                    transition.from.map(|s| s.label().to_owned()),
                    transition.to.label().to_owned(),
                    transition.regression,
                )),
                _ => None,
            })
            .collect()
    }

    pub fn resumed(&self) -> Option<daemon::ResumeOutcome> {
        self.events.lock().unwrap().iter().find_map(|e| match e {
            Event::Resumed(r) => Some(r.clone()),
            _ => None,
        })
    }
}

/// The value of one sample of `name` with exactly these labels.
pub fn sample(page: &Page, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<&str, &str> = labels.iter().copied().collect();
    page.series(name)
        .find(|s| {
            let have: BTreeMap<&str, &str> = s
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            have == wanted
        })
        .map(|s| s.value)
}
