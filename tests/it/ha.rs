//! The ConfigMap state backend and leader election, against the
//! simulator's ConfigMap and Lease APIs (`src/simulator/objects.rs`).
//!
//! Backend: a round trip; a stale resourceVersion is refused (409), counted
//! by the simulator, never retried blindly, and the object keeps the other
//! writer's state; a state over the size limit is refused before any
//! request; a forbidden token, a missing ConfigMap and corrupt content are
//! errors that say so. HA: two daemons share the ConfigMap and the Lease;
//! only the leader scrapes; the leader is killed (in this process, its task
//! aborted; as `serve` processes, SIGKILL: no drain, no final write, the
//! Lease not released); the follower takes over
//! within the lease duration, with every use the ground truth counted, no
//! `ready` verdict on either daemon at any time, and a late write of the
//! old leader refused by the fence.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cutover_auditor::clock::Clock;
use cutover_auditor::config::Config;
use cutover_auditor::credentials::TokenFile;
use cutover_auditor::daemon::{self, DaemonError, Resolver};
use cutover_auditor::families::TokenKind;
use cutover_auditor::kubeapi::KubeClient;
use cutover_auditor::ledger::{Ledger, Observation, SeriesKey};
use cutover_auditor::simulator::Simulation;
use cutover_auditor::simulator::objects::{Kind, LEASE, NAMESPACE, STATE_CONFIGMAP};
use cutover_auditor::state::{FORMAT_VERSION, Loaded, Snapshot};
use cutover_auditor::state_store::{
    CONFIGMAP_KEY, ConfigMapStore, MAX_OBJECT_BYTES, StoreError, decode_from_configmap,
};
use cutover_auditor::status::Status;
use cutover_auditor::time::Timestamp;
use cutover_auditor::verdict::{State, Tracker};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::support::daemon::{start_world, test_dir};
use crate::support::process::{Serve, bin};

const WORLD: &str = r#"
name = "ha"
speed = 60.0
token_grace = "2m"
scraper_counts_as = "none"
page_kib = 8

[[instances]]
version = "1.29.5"
[[instances]]
version = "1.35.0"

[[clients]]
kind = "legacy"
interval = "7s"
targets = "round_robin"
from = "30s"
until = "12m"

[[clients]]
kind = "valid"
interval = "5s"
targets = "all"
"#;

fn client(sim: &Simulation, token: &Path) -> KubeClient {
    KubeClient::new(
        &format!("https://{}", sim.service_address())
            .parse()
            .unwrap(),
        "kubernetes",
        sim.ca_path(),
        Arc::new(TokenFile::new(token.to_owned())),
        Duration::from_secs(10),
    )
    .expect("client")
}

fn store(sim: &Simulation) -> ConfigMapStore {
    ConfigMapStore::new(client(sim, sim.token_path()), NAMESPACE, STATE_CONFIGMAP)
}

/// A small snapshot whose ledger holds `uses` legacy uses on one instance.
fn snapshot(uses: u64, saved_at: i64) -> Snapshot {
    let mut ledger = Ledger::default();
    for (t, v) in [(10, 1), (40, 1 + uses)] {
        ledger.observe(
            "10.0.0.1:6443",
            Timestamp::from_secs(t),
            Observation {
                start_time: Some(Timestamp::from_secs(1)),
                values: BTreeMap::from([(
                    SeriesKey::family("serviceaccount_legacy_tokens_total"),
                    v,
                )]),
            },
        );
    }
    Snapshot {
        version: FORMAT_VERSION,
        saved_at: Timestamp::from_secs(saved_at),
        ledger,
        trackers: BTreeMap::from([("legacy-tokens".into(), Tracker::default())]),
    }
}

/// The snapshot the simulator's ConfigMap holds now.
fn stored(sim: &Simulation) -> Option<Snapshot> {
    let cm = sim.objects().get(Kind::ConfigMap, STATE_CONFIGMAP)?;
    let value = cm["binaryData"][CONFIGMAP_KEY].as_str()?;
    Some(decode_from_configmap(value).expect("the stored state decodes"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_writes_are_fenced_and_a_conflict_is_never_overwritten_blindly() {
    let dir = test_dir("ha-fence");
    let (sim, _clock, _) = start_world(WORLD, &dir).await;
    let (a, b) = (store(&sim), store(&sim));

    // The shipped ConfigMap is empty: a first start.
    assert!(matches!(a.load().await.unwrap(), Loaded::Missing));
    a.save(&snapshot(3, 100)).await.expect("first write");
    match b.load().await.unwrap() {
        Loaded::Resumed(s) => assert_eq!(*s, snapshot(3, 100)),
        other => panic!("{other:?}"),
    }
    // b writes (a new leader's first write): a's fence is stale now.
    b.save(&snapshot(5, 200)).await.expect("b writes");
    let err = a.save(&snapshot(4, 300)).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    assert!(
        err.to_string().contains("another writer changed it"),
        "{err}"
    );
    assert_eq!(sim.objects().conflicts(), 1);
    assert_eq!(stored(&sim), Some(snapshot(5, 200)), "b's state kept");
    // No blind retry: without reading again, nothing is sent.
    let writes = sim.objects().writes(Kind::ConfigMap, STATE_CONFIGMAP);
    let err = a.save(&snapshot(4, 300)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotRead { .. }), "{err}");
    assert_eq!(
        sim.objects().writes(Kind::ConfigMap, STATE_CONFIGMAP),
        writes
    );
    assert_eq!(sim.objects().conflicts(), 1, "not even attempted");
    // Read again, then write: allowed, on top of what was read.
    match a.load().await.unwrap() {
        Loaded::Resumed(s) => assert_eq!(*s, snapshot(5, 200)),
        other => panic!("{other:?}"),
    }
    a.save(&snapshot(6, 400))
        .await
        .expect("write after reading");
    assert_eq!(stored(&sim), Some(snapshot(6, 400)));
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_errors_say_what_is_wrong_and_nothing_is_written() {
    let dir = test_dir("ha-errors");
    let (sim, _clock, _) = start_world(WORLD, &dir).await;
    let a = store(&sim);
    assert!(matches!(a.load().await.unwrap(), Loaded::Missing));

    // Over the size limit: refused before any request, the object unchanged.
    let mut huge = snapshot(1, 1);
    // A cutover name of incompressible text: the encoded state passes 900 KiB.
    let mut x: u64 = 1;
    let noise: String = (0..1_300_000)
        .map(|_| {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            char::from(b'a' + ((x >> 33) % 26) as u8)
        })
        .collect();
    huge.trackers
        .insert(noise.as_str().into(), Tracker::default());
    let writes = sim.objects().writes(Kind::ConfigMap, STATE_CONFIGMAP);
    match a.save(&huge).await {
        Err(StoreError::TooLarge { bytes, limit, .. }) => {
            assert_eq!(limit, MAX_OBJECT_BYTES);
            assert!(bytes > limit, "{bytes}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        sim.objects().writes(Kind::ConfigMap, STATE_CONFIGMAP),
        writes
    );
    assert_eq!(stored(&sim), None);

    // Forbidden (RBAC): HTTP 403 named, with what to check.
    let forbidden = ConfigMapStore::new(
        client(&sim, sim.forbidden_token_path()),
        NAMESPACE,
        STATE_CONFIGMAP,
    );
    let err = forbidden.load().await.unwrap_err().to_string();
    assert!(
        err.contains("forbidden (HTTP 403)") && err.contains("Role"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{NAMESPACE}/{STATE_CONFIGMAP}")),
        "{err}"
    );
    let err = forbidden.save(&snapshot(1, 1)).await.unwrap_err();
    assert!(matches!(err, StoreError::NotRead { .. }), "{err}");

    // Corrupt content: an error naming the key and the problem; the object's
    // version is known from that read, so the next write replaces it.
    let cm = sim.objects().get(Kind::ConfigMap, STATE_CONFIGMAP).unwrap();
    for (value, why) in [
        ("%%%", "not base64"),
        ("aGVsbG8=", "not gzip"),
        // gzip of `{"version": 99}`.
        (
            "H4sIAAAAAAACA6tWKkstKs7Mz1OyUrC0rAUAeOluGg8AAAA=",
            "format version 99",
        ),
    ] {
        let mut bad = sim.objects().get(Kind::ConfigMap, STATE_CONFIGMAP).unwrap();
        bad["binaryData"] = json!({ CONFIGMAP_KEY: value });
        let (code, _) = sim.objects().replace(Kind::ConfigMap, STATE_CONFIGMAP, bad);
        assert_eq!(code.as_u16(), 200);
        let err = a.load().await.unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains(why) && text.contains(CONFIGMAP_KEY), "{text}");
    }
    a.save(&snapshot(2, 2))
        .await
        .expect("corrupt content replaced after it was read");
    assert_eq!(stored(&sim), Some(snapshot(2, 2)));
    drop(cm);

    // A missing ConfigMap: 404 named, nothing created.
    sim.objects().delete(Kind::ConfigMap, STATE_CONFIGMAP);
    let err = a.load().await.unwrap_err().to_string();
    assert!(err.contains("not found (HTTP 404)"), "{err}");
    assert!(
        sim.objects()
            .get(Kind::ConfigMap, STATE_CONFIGMAP)
            .is_none()
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_reads_the_token_file_again_and_retries_once() {
    let dir = test_dir("ha-401");
    let (sim, _clock, _) = start_world(WORLD, &dir).await;
    let right = std::fs::read_to_string(sim.token_path()).unwrap();
    let wrong: String = right
        .trim()
        .chars()
        .map(|c| if c == 'x' { 'y' } else { 'x' })
        .collect();
    let copy = dir.join("api-token");
    std::fs::write(&copy, &wrong).unwrap();
    // Cached for an hour unless the file's size, mtime or inode change.
    let token = Arc::new(TokenFile::with_period(
        copy.clone(),
        Duration::from_secs(3_600),
    ));
    let client = KubeClient::new(
        &format!("https://{}", sim.service_address())
            .parse()
            .unwrap(),
        "kubernetes",
        sim.ca_path(),
        Arc::clone(&token),
        Duration::from_secs(10),
    )
    .unwrap();
    let store = ConfigMapStore::new(client, NAMESPACE, STATE_CONFIGMAP);
    let err = store.load().await.unwrap_err().to_string();
    assert!(err.contains("HTTP 401"), "{err}");
    assert!(
        !err.contains(&wrong),
        "the token is never in an error: {err}"
    );
    // The right token, written in place with the same size and mtime: only
    // the 401 makes the client read the file again.
    let mtime = std::fs::metadata(&copy).unwrap().modified().unwrap();
    std::fs::write(&copy, right.trim()).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&copy)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    assert!(matches!(store.load().await.unwrap(), Loaded::Missing));
    sim.shutdown().await;
}

/// A daemon of the HA pair, in this process: killed by aborting its task
/// (no drain, no final write, no Lease release), as SIGKILL would.
struct Replica {
    addr: SocketAddr,
    run: Run,
}

/// How a replica runs: a task of this process, or a `serve` child process
/// (killed with SIGKILL).
enum Run {
    Task {
        task: JoinHandle<Result<(), DaemonError>>,
        stop: Option<oneshot::Sender<()>>,
    },
    Process(Box<Serve>),
}

impl Replica {
    async fn start(config: Config, clock: Clock) -> Replica {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let options = daemon::Options {
            config,
            clock,
            listener: Some(listener),
            events: None,
        };
        let task = tokio::spawn(daemon::run_with_resolver(
            options,
            Resolver::System,
            async {
                let _ = stopped.await;
            },
        ));
        Replica {
            addr,
            run: Run::Task {
                task,
                stop: Some(stop),
            },
        }
    }

    /// `cutover-auditor serve` on `config_text` (log level `info`, so its
    /// address is read from its log), on the world's clock: `--speed` and
    /// `--clock-start` as `simulate` prints them.
    async fn spawn(config_text: String, dir: &Path, name: &str, origin: Timestamp) -> Replica {
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(
            &path,
            config_text.replace("level = \"warn\"", "level = \"info\""),
        )
        .expect("config file");
        let mut command = bin();
        command.args(["serve", "--config"]).arg(&path).args([
            "--speed",
            "60",
            "--clock-start",
            &origin.to_string(),
        ]);
        let serve = tokio::task::spawn_blocking(move || Serve::spawn(command))
            .await
            .expect("serve started");
        Replica {
            addr: serve.addr,
            run: Run::Process(Box::new(serve)),
        }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let r = reqwest::Client::new()
            .get(format!("http://{}{path}", self.addr))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .expect("admin server answers");
        (r.status().as_u16(), r.text().await.expect("body"))
    }

    async fn status(&self) -> Status {
        serde_json::from_str(&self.get("/api/v1/status").await.1).expect("status JSON")
    }

    /// The value of the unlabelled metric `name`, or of the series with
    /// exactly `labels` (`{a="b",c="d"}`).
    async fn metric(&self, series: &str) -> Option<f64> {
        let text = self.get("/metrics").await.1;
        text.lines().find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
    }

    async fn wait_metric(&self, series: &str, value: f64, what: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.metric(series).await != Some(value) {
            assert!(
                std::time::Instant::now() < deadline,
                "{what}: not within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Abort the task, or SIGKILL the process.
    fn kill(self) {
        match self.run {
            Run::Task { task, .. } => task.abort(),
            Run::Process(mut serve) => {
                serve.child.0.kill().expect("SIGKILL");
                let _ = serve.child.0.wait();
            }
        }
    }

    async fn stop(self) {
        match self.run {
            Run::Task { task, mut stop } => {
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
                let done = tokio::time::timeout(Duration::from_secs(20), task)
                    .await
                    .expect("drains within 20 s")
                    .expect("no panic");
                done.expect("ran without error");
            }
            Run::Process(mut serve) => {
                let pid = serve.child.0.id().to_string();
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid])
                    .status();
                let status =
                    tokio::task::spawn_blocking(move || serve.exit_within(Duration::from_secs(20)))
                        .await
                        .expect("waited");
                assert!(status.success(), "serve exited {status}");
            }
        }
    }
}

/// The Lease's duration and retry period, in simulated seconds: at the
/// world's speed (60), one real second and 67 ms, so a loaded machine does
/// not make the leader miss its renew deadline (40 s: 0.67 s real).
const LEASE_SECS: u64 = 60;
const RETRY_SECS: u64 = 4;
/// Simulated time one round of Lease requests may take on a loaded machine.
const REQUEST_SLACK: Duration = Duration::from_secs(10);

fn ha_config(sim: &Simulation, identity: &str) -> Config {
    Config::parse(&ha_config_text(sim, identity), |_| None).expect("HA config is valid")
}

fn ha_config_text(sim: &Simulation, identity: &str) -> String {
    format!(
        r#"
listen = "127.0.0.1:0"
[scrape]
interval = "30s"
timeout = "10s"
[targets.kubernetes]
api_server = "https://{service}"
token_file = "{token}"
ca_file = "{ca}"
refresh_interval = "1m"
[state]
backend = "configmap"
configmap = "{STATE_CONFIGMAP}"
namespace = "{NAMESPACE}"
write_interval = "30s"
[leader_election]
lease_name = "{LEASE}"
namespace = "{NAMESPACE}"
lease_duration = "{LEASE_SECS}s"
renew_deadline = "40s"
retry_period = "{RETRY_SECS}s"
identity = "{identity}"
[log]
format = "text"
level = "warn"
[cutovers.legacy-tokens]
window = "20m"
"#,
        service = sim.service_address(),
        token = sim.token_path().display(),
        ca = sim.ca_path().display(),
    )
}

fn legacy_state(s: &Status) -> State {
    s.cutovers
        .iter()
        .find(|c| c.name == "legacy-tokens")
        .expect("legacy-tokens in status")
        .state
}

fn scraped(s: &Status) -> bool {
    s.targets.iter().any(|t| t.last_scrape.is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follower_takes_over_a_killed_leader_with_all_the_evidence() {
    handover(false).await;
}

/// The same with two `serve` processes, the leader killed with SIGKILL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follower_process_takes_over_a_sigkilled_leader_process() {
    handover(true).await;
}

async fn handover(processes: bool) {
    let dir = test_dir(if processes {
        "ha-handover-processes"
    } else {
        "ha-handover"
    });
    let (sim, clock, origin) = start_world(WORLD, &dir).await;
    let mins = |m: u64| Duration::from_secs(m * 60);
    let start = |identity: &'static str| {
        let (sim, clock, dir) = (&sim, clock.clone(), dir.clone());
        async move {
            let config = ha_config(sim, identity);
            if processes {
                Replica::spawn(ha_config_text(sim, identity), &dir, identity, origin).await
            } else {
                Replica::start(config, clock).await
            }
        }
    };

    let a = start("replica-a").await;
    a.wait_metric("cutover_leader", 1.0, "replica-a leads")
        .await;
    let b = start("replica-b").await;
    // The follower loads the shared state and is ready to take over.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while b.get("/readyz").await.0 != 200 {
        assert!(std::time::Instant::now() < deadline, "follower not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(b.metric("cutover_leader").await, Some(0.0));

    // Until the kill at 8m: only the leader scrapes; never ready (legacy uses).
    while clock.now() < origin + mins(8) {
        let (sa, sb) = (a.status().await, b.status().await);
        assert_ne!(legacy_state(&sa), State::Ready, "{sa:?}");
        assert_ne!(legacy_state(&sb), State::Ready, "{sb:?}");
        assert!(!scraped(&sb), "the follower scraped: {sb:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(scraped(&a.status().await), "the leader scrapes");
    assert_eq!(
        a.metric("cutover_lease_transitions_total").await,
        Some(1.0),
        "one leader all along"
    );
    assert_eq!(
        b.metric("cutover_state_last_write_success_timestamp_seconds")
            .await,
        Some(0.0),
        "the follower never writes"
    );
    assert_eq!(sim.objects().conflicts(), 0, "one writer: no conflict");
    assert!(
        sim.objects().writes(Kind::ConfigMap, STATE_CONFIGMAP) >= 3,
        "the leader writes the state"
    );
    // What the old leader would write late: its fence is the current version.
    let late = store(&sim);
    let Loaded::Resumed(old) = late.load().await.expect("read as the old leader") else {
        panic!("no state written by the leader");
    };

    a.kill();
    // The old leader's last renewal, then the new leader's acquisition, as
    // the Lease records them (simulated time).
    let time = |v: &serde_json::Value| {
        let text = v.as_str().expect("a MicroTime");
        Timestamp::from_system_time(humantime::parse_rfc3339(text).expect("RFC 3339"))
    };
    let mut last_renewal = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let acquired = loop {
        let lease = sim.objects().get(Kind::Lease, LEASE).unwrap();
        match lease["spec"]["holderIdentity"].as_str() {
            Some("replica-a") => last_renewal = Some(time(&lease["spec"]["renewTime"])),
            Some("replica-b") => break time(&lease["spec"]["acquireTime"]),
            other => panic!("lease held by {other:?}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no takeover within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let waited = acquired.since(last_renewal.expect("replica-a held the Lease"));
    // Not before the Lease expired (its duration after the last renewal),
    // and at the next try after it, plus the time of the requests.
    let lease = Duration::from_secs(LEASE_SECS);
    assert!(
        waited >= lease && waited <= lease + Duration::from_secs(RETRY_SECS) + REQUEST_SLACK,
        "taken over {waited:?} after the last renewal"
    );
    b.wait_metric("cutover_leader", 1.0, "replica-b leads")
        .await;
    assert_eq!(b.metric("cutover_lease_transitions_total").await, Some(1.0));

    // The new leader wrote at once: the old leader's late write is refused.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while stored(&sim).is_some_and(|s| s.saved_at <= old.saved_at) {
        assert!(
            std::time::Instant::now() < deadline,
            "no write by the new leader"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let err = late.save(&old).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err}");
    assert!(
        stored(&sim).unwrap().saved_at > old.saved_at,
        "not overwritten"
    );

    // The new leader scrapes; until the end, never ready on it.
    while clock.now() < origin + mins(16) {
        let s = b.status().await;
        assert_ne!(legacy_state(&s), State::Ready, "{s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = b.status().await;
    assert!(scraped(&s), "the new leader scrapes: {s:?}");
    assert_eq!(legacy_state(&s), State::InUse, "{s:?}");
    // No evidence lost: every legacy use (all before 12m, long before the
    // new leader's last scrape) is counted, per instance and in total.
    let text = b.get("/metrics").await.1;
    let mut total = 0;
    for (i, addr) in sim.instance_addresses().iter().enumerate() {
        let truth = sim.increments(i, TokenKind::Legacy, origin - mins(1), clock.now());
        assert!(truth > 0, "instance {i} saw legacy uses");
        total += truth;
        let series =
            format!("cutover_apiserver_token_uses_total{{apiserver=\"{addr}\",kind=\"legacy\"}}");
        assert_eq!(
            b.metric(&series).await,
            Some(truth as f64),
            "instance {i}\n{text}"
        );
    }
    assert_eq!(
        b.metric("cutover_token_uses_total{kind=\"legacy\"}").await,
        Some(total as f64),
        "{text}"
    );
    b.stop().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_cannot_reach_the_lease_or_the_state_never_leads_nor_turns_ready() {
    let dir = test_dir("ha-forbidden");
    let (sim, clock, _) = start_world(WORLD, &dir).await;
    let mut config = ha_config(&sim, "replica-f");
    // Authenticated, but without access to the objects (403).
    if let Some(api) = config.kube_api.as_mut() {
        api.token_file = sim.forbidden_token_path().to_owned();
    }
    let f = Replica::start(config, clock.clone()).await;
    // Evaluated (its status has a time), yet not ready, and it says why.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while f.status().await.evaluated_at.is_none() {
        assert!(std::time::Instant::now() < deadline, "no evaluation");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let start = clock.now();
    while clock.now().since(start) < Duration::from_secs(3 * LEASE_SECS) {
        let (code, body) = f.get("/readyz").await;
        assert_eq!(code, 503, "{body}");
        assert!(body.contains("shared state cannot be loaded"), "{body}");
        assert_eq!(f.metric("cutover_leader").await, Some(0.0));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!scraped(&f.status().await), "never scrapes");
    assert_eq!(sim.objects().writes(Kind::Lease, LEASE), 1, "only the seed");
    f.stop().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_whose_configmap_was_changed_by_another_writer_reads_it_again() {
    let dir = test_dir("ha-conflict");
    let (sim, clock, _) = start_world(WORLD, &dir).await;
    let mut config = ha_config(&sim, "single");
    config.leader_election = None;
    let d = Replica::start(config, clock.clone()).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while stored(&sim).is_none() {
        assert!(std::time::Instant::now() < deadline, "no state written");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Another writer replaces the state, with a marker the daemon cannot make.
    let mut theirs = stored(&sim).unwrap();
    theirs
        .trackers
        .insert("written-by-another".into(), Tracker::default());
    let mut cm = sim.objects().get(Kind::ConfigMap, STATE_CONFIGMAP).unwrap();
    cm["binaryData"][CONFIGMAP_KEY] =
        json!(cutover_auditor::state_store::encode_for_configmap(&theirs).unwrap());
    let (code, _) = sim.objects().replace(Kind::ConfigMap, STATE_CONFIGMAP, cm);
    assert_eq!(code.as_u16(), 200);
    // The daemon's next write conflicts; it is counted, the state read
    // again, and the write after that carries the other writer's marker.
    d.wait_metric(
        "cutover_state_backend_conflicts_total",
        1.0,
        "the conflict counted",
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !stored(&sim).is_some_and(|s| {
        s.saved_at > theirs.saved_at && s.trackers.contains_key(&"written-by-another".into())
    }) {
        assert!(
            std::time::Instant::now() < deadline,
            "no write on top of the other writer's state"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sim.objects().conflicts(), 1);
    assert_eq!(
        d.metric("cutover_state_backend_conflicts_total").await,
        Some(1.0)
    );
    d.stop().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_the_lease_stops_scraping_and_writing_at_once() {
    let dir = test_dir("ha-lost");
    let (sim, clock, _) = start_world(WORLD, &dir).await;
    let d = Replica::start(ha_config(&sim, "replica-a"), clock.clone()).await;
    d.wait_metric("cutover_leader", 1.0, "leads").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while stored(&sim).is_none() || !scraped(&d.status().await) {
        assert!(
            std::time::Instant::now() < deadline,
            "no state written, no scrape"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Another replica holds the Lease now, freshly renewed.
    let intruded_at = loop {
        let mut lease = sim.objects().get(Kind::Lease, LEASE).unwrap();
        let now = clock.now();
        lease["spec"]["holderIdentity"] = json!("intruder");
        lease["spec"]["renewTime"] = json!(daemon::micro_time(now));
        lease["spec"]["leaseDurationSeconds"] = json!(LEASE_SECS);
        if sim.objects().replace(Kind::Lease, LEASE, lease).0.as_u16() == 200 {
            break now;
        }
    };
    d.wait_metric("cutover_leader", 0.0, "stops leading").await;
    let lost_at = clock.now();
    assert!(
        lost_at.since(intruded_at) <= Duration::from_secs(RETRY_SECS) + REQUEST_SLACK,
        "noticed {:?} after",
        lost_at.since(intruded_at)
    );
    let last_scrape = |s: &Status| s.targets.iter().filter_map(|t| t.last_scrape).max();
    // 50 s of the intruder's 60: more than one write interval and one scrape
    // interval.
    while clock.now() < intruded_at + Duration::from_secs(50) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A write or a scrape under way may end later; none starts after the
    // loss (a state is taken, then leadership checked, then written; a
    // scrape is timed at its start). One second for the check-to-start gap.
    let margin = Duration::from_secs(1);
    let saved = stored(&sim).unwrap().saved_at;
    assert!(
        saved <= lost_at + margin,
        "a state taken at {saved} was written after the Lease was lost at {lost_at}"
    );
    let scraped_at = last_scrape(&d.status().await).unwrap();
    assert!(
        scraped_at <= lost_at + margin,
        "a scrape at {scraped_at} after the Lease was lost at {lost_at}"
    );
    let writes = sim.objects().writes(Kind::ConfigMap, STATE_CONFIGMAP);
    // The intruder does not renew: the Lease is taken back, the state read
    // again and written.
    d.wait_metric("cutover_leader", 1.0, "leads again").await;
    assert_eq!(d.metric("cutover_lease_transitions_total").await, Some(3.0));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while sim.objects().writes(Kind::ConfigMap, STATE_CONFIGMAP) == writes {
        assert!(
            std::time::Instant::now() < deadline,
            "no write as leader again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.stop().await;
    sim.shutdown().await;
}

/// `[state]` and `[leader_election]` are validated once, each problem named.
#[test]
fn backend_and_leader_election_config_is_validated() {
    let base = r#"
[targets.kubernetes]
api_server = "https://10.0.0.1:6443"
"#;
    let parse = |extra: &str, env: &[(&str, &str)]| {
        let env: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::parse(&format!("{base}{extra}"), |k| env.get(k).cloned()).map_err(|e| e.to_string())
    };
    let ok = parse(
        "[state]\nbackend = \"configmap\"\nconfigmap = \"cutover-auditor-state\"\n[leader_election]\n",
        &[("POD_NAME", "auditor-0")],
    )
    .expect("valid");
    assert_eq!(ok.state.path, None, "no file with the ConfigMap backend");
    let le = ok.leader_election.expect("enabled by its section");
    assert_eq!(le.identity, "auditor-0");
    assert_eq!(
        (le.lease_duration, le.renew_deadline, le.retry_period),
        (
            Duration::from_secs(15),
            Duration::from_secs(10),
            Duration::from_secs(2)
        )
    );
    assert!(ok.kube_api.is_some());
    // Disabled: no election.
    let off = parse(
        "[state]\nbackend = \"configmap\"\nconfigmap = \"s\"\n[leader_election]\nenabled = false\n",
        &[],
    )
    .unwrap();
    assert_eq!(off.leader_election, None);

    for (extra, env, want) in [
        (
            "[state]\nbackend = \"etcd\"\n",
            &[][..],
            "state.backend: \"etcd\" is not a state backend",
        ),
        (
            "[state]\nbackend = \"configmap\"\n",
            &[],
            "state.configmap: \"\" is not a ConfigMap name",
        ),
        (
            "[state]\nbackend = \"configmap\"\nconfigmap = \"Bad_Name\"\n",
            &[],
            "state.configmap: \"Bad_Name\"",
        ),
        (
            "[state]\nconfigmap = \"s\"\n",
            &[],
            "state.configmap: is set but state.backend is \"file\"",
        ),
        (
            "[state]\nbackend = \"configmap\"\nconfigmap = \"s\"\npath = \"/x\"\n",
            &[],
            "state.path: is set but state.backend is \"configmap\"",
        ),
        ("[state]\ncolor = \"blue\"\n", &[], "unknown field `color`"),
        (
            "[leader_election]\nidentity = \"a\"\n",
            &[],
            "leader_election: needs the shared state",
        ),
        (
            "[state]\nbackend = \"configmap\"\nconfigmap = \"s\"\n[leader_election]\n",
            &[],
            "leader_election.identity: not set and neither POD_NAME nor HOSTNAME",
        ),
        (
            "[state]\nbackend = \"configmap\"\nconfigmap = \"s\"\n[leader_election]\nidentity = \"a\"\nrenew_deadline = \"20s\"\n",
            &[],
            "leader_election.renew_deadline: must be shorter than leader_election.lease_duration",
        ),
        (
            "[state]\nbackend = \"configmap\"\nconfigmap = \"s\"\n[leader_election]\nidentity = \"a\"\nretry_period = \"10s\"\n",
            &[],
            "leader_election.retry_period: must be shorter than leader_election.renew_deadline",
        ),
        (
            "[state]\nbackend = \"configmap\"\nconfigmap = \"s\"\n[leader_election]\nidentity = \"a\"\nleader = true\n",
            &[],
            "unknown field `leader`",
        ),
    ] {
        let err = parse(extra, env).expect_err(extra);
        assert!(err.contains(want), "{extra}: {err}");
    }
    // HOSTNAME when POD_NAME is absent.
    let host = parse(
        "[state]\nbackend = \"configmap\"\nconfigmap = \"s\"\n[leader_election]\n",
        &[("HOSTNAME", "node-host")],
    )
    .unwrap();
    assert_eq!(host.leader_election.unwrap().identity, "node-host");
    // Static targets outside a cluster: no API for the ConfigMap.
    let err = Config::parse(
        "[targets]\nstatic = [{ url = \"https://10.0.0.9:6443\" }]\n[state]\nbackend = \"configmap\"\nconfigmap = \"s\"\n",
        |_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("need the Kubernetes API"), "{err}");
}

/// The objects `kubectl kustomize` renders for the base with the
/// state-configmap component (offline, no cluster).
fn render_with_component() -> Vec<serde_json::Value> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = repo
        .join("target")
        .join(format!("ha-render-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("render dir");
    // Kustomize takes only relative paths to other kustomizations.
    std::fs::write(
        dir.join("kustomization.yaml"),
        "resources:\n  - ../../deploy/base\ncomponents:\n  - ../../deploy/components/state-configmap\n",
    )
    .expect("kustomization");
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .output()
        .expect("kubectl (Kustomize v5) is required by this test");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "kubectl kustomize: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut child = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with PyYAML is required by this test");
    {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(&out.stdout).unwrap();
    }
    let json = child.wait_with_output().expect("python3 ran");
    serde_json::from_slice(&json.stdout).expect("rendered objects as JSON")
}

#[test]
fn the_state_configmap_component_grants_get_and_update_on_its_two_objects_only() {
    let objects = render_with_component();
    let find = |kind: &str, name: &str| {
        objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
            .clone()
    };
    let role = find("Role", "cutover-auditor-state");
    assert_eq!(role["metadata"]["namespace"], NAMESPACE);
    assert_eq!(
        role["rules"],
        json!([
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [STATE_CONFIGMAP], "verbs": ["get", "update"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": [LEASE], "verbs": ["get", "update"]},
        ])
    );
    let binding = find("RoleBinding", "cutover-auditor-state");
    assert_eq!(binding["roleRef"]["name"], "cutover-auditor-state");
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "cutover-auditor", "namespace": NAMESPACE}])
    );
    // Both objects ship (the auditor creates nothing), empty.
    let cm = find("ConfigMap", STATE_CONFIGMAP);
    assert_eq!(cm["metadata"]["namespace"], NAMESPACE);
    assert!(cm.get("data").is_none() && cm.get("binaryData").is_none());
    assert_eq!(find("Lease", LEASE)["metadata"]["namespace"], NAMESPACE);

    let deployment = find("Deployment", "cutover-auditor");
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(deployment["spec"]["strategy"]["type"], "RollingUpdate");
    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    assert_eq!(
        env,
        &json!([{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}])
    );

    // The config in the generated ConfigMap names those objects, and is the
    // base's but for [state] and [leader_election].
    let config_map = objects
        .iter()
        .find(|o| {
            o["kind"] == "ConfigMap"
                && o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with("cutover-auditor-config"))
        })
        .expect("the generated config");
    let text = config_map["data"]["config.toml"]
        .as_str()
        .expect("config.toml");
    let env = |k: &str| match k {
        "POD_NAME" => Some("cutover-auditor-7d9f-abcde".to_owned()),
        "KUBERNETES_SERVICE_HOST" => Some("10.96.0.1".to_owned()),
        "KUBERNETES_SERVICE_PORT" => Some("443".to_owned()),
        _ => None,
    };
    let config = Config::parse(text, env).expect("the component's config is valid");
    assert_eq!(
        config.state.backend,
        cutover_auditor::config::StateBackend::ConfigMap {
            name: STATE_CONFIGMAP.into(),
            namespace: None
        }
    );
    let le = config.leader_election.expect("leader election on");
    assert_eq!(
        (le.lease_name.as_str(), le.identity.as_str()),
        (LEASE, "cutover-auditor-7d9f-abcde")
    );
    let table = |t: &str| {
        let mut v: toml::Table = toml::from_str(t).expect("TOML");
        v.remove("state");
        v.remove("leader_election");
        v
    };
    let base = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/base/config.toml"),
    )
    .expect("base config");
    assert_eq!(
        table(text),
        table(&base),
        "the component's config.toml drifted from deploy/base/config.toml"
    );
}
