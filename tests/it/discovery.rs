//! Discovery against the simulated `kubernetes` Service over real HTTPS on
//! loopback: the listed addresses are exactly the simulator's present
//! instances as they come and go, and failures name what failed.

use crate::support::tempdir;
use tempdir::TempDir;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cutover_auditor::clock::Clock;
use cutover_auditor::credentials::TokenFile;
use cutover_auditor::discovery::{Discovery, DiscoveryError};
use cutover_auditor::simulator::scenario::Scenario;
use cutover_auditor::simulator::tls::ClusterCa;
use cutover_auditor::simulator::{Options, Simulation};
use cutover_auditor::time::Timestamp;

const ORIGIN: Timestamp = Timestamp::from_secs(1_780_000_000);
const TIMEOUT: Duration = Duration::from_secs(5);

const CHURN: &str = r#"
    [[instances]]
    version = "1.35.0"
    count = 2
    [[events]]
    at = "1m"
    action = "add_instance"
    version = "1.33.1"
    [[events]]
    at = "2m"
    action = "remove_instance"
    instance = 0
"#;

struct Fixture {
    sim: Simulation,
    clock: Clock,
    dir: TempDir,
}

impl Fixture {
    async fn start(scenario: &str) -> Fixture {
        let scenario = Scenario::parse(scenario).expect("valid scenario");
        let clock = Clock::manual(ORIGIN);
        let dir = TempDir::new();
        let sim = Simulation::start(&scenario, clock.clone(), Options::in_dir(dir.0.join("sim")))
            .await
            .expect("simulation starts");
        Fixture { sim, clock, dir }
    }

    fn api_server(&self) -> reqwest::Url {
        format!("https://{}", self.sim.service_address())
            .parse()
            .expect("a URL")
    }

    fn discovery(&self, token: PathBuf, ca: PathBuf) -> Discovery {
        Discovery::new(
            &self.api_server(),
            "kubernetes",
            &ca,
            Arc::new(TokenFile::new(token)),
            TIMEOUT,
        )
        .expect("discovery")
    }

    fn good(&self) -> Discovery {
        self.discovery(
            self.sim.token_path().to_path_buf(),
            self.sim.ca_path().to_path_buf(),
        )
    }

    fn file(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.0.join(name);
        std::fs::write(&path, content).expect("write");
        path
    }

    /// Advances the clock: the Service answers from the world at the
    /// clock's time, so the next request sees the change.
    async fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }
}

#[tokio::test]
async fn discovery_follows_instances_as_they_come_and_go() {
    let f = Fixture::start(CHURN).await;
    let discovery = f.good();
    let all: Vec<SocketAddr> = f.sim.instance_addresses().to_vec();
    assert_eq!(all.len(), 3);
    let check = async |want: &[SocketAddr]| {
        let got = discovery.endpoints().await.expect("endpoints");
        assert_eq!(got, want);
        assert!(!got.contains(&f.sim.service_address()), "never the VIP");
    };
    check(&all[..2]).await;
    f.advance(Duration::from_secs(60)).await;
    check(&all).await;
    f.advance(Duration::from_secs(60)).await;
    check(&all[1..]).await;
    f.sim.shutdown().await;
}

/// A failed discovery must have the bounded `label` and a message
/// containing `needle`, and never a token.
fn check_error(
    case: &str,
    result: Result<Vec<SocketAddr>, DiscoveryError>,
    label: &str,
    needle: &str,
    secrets: &[&str],
) -> DiscoveryError {
    let err = match result {
        Ok(list) => panic!("{case}: discovery succeeded with {list:?}, want {label}"),
        Err(err) => err,
    };
    let text = format!("{err} {err:?}");
    assert_eq!(err.metric_label(), label, "{case}: {text}");
    assert!(text.contains(needle), "{case}: {text}");
    for secret in secrets {
        assert!(!text.contains(secret), "{case}: a token leaked: {text}");
    }
    err
}

#[tokio::test]
async fn discovery_failures_name_what_failed() {
    let f = Fixture::start(CHURN).await;
    let token = std::fs::read_to_string(f.sim.token_path()).expect("token");
    let forbidden = std::fs::read_to_string(f.sim.forbidden_token_path()).expect("token");
    let wrong = "wrong-token-0123456789abcdef";
    let secrets = [token.trim(), forbidden.trim(), wrong];
    let ca = f.sim.ca_path().to_path_buf();

    let d = f.discovery(f.file("wrong-token", wrong), ca.clone());
    check_error("401", d.endpoints().await, "http_401", "HTTP 401", &secrets);

    let d = f.discovery(f.sim.forbidden_token_path().to_path_buf(), ca.clone());
    check_error("403", d.endpoints().await, "http_403", "HTTP 403", &secrets);

    let d = f.discovery(f.file("empty-token", ""), ca.clone());
    check_error(
        "empty token",
        d.endpoints().await,
        "token_unreadable",
        "empty",
        &secrets,
    );

    let d = f.discovery(f.dir.0.join("no-such-token"), ca.clone());
    check_error(
        "missing token",
        d.endpoints().await,
        "token_unreadable",
        "targets.kubernetes.token_file",
        &secrets,
    );

    let other = ClusterCa::generate().expect("CA");
    let d = f.discovery(
        f.sim.token_path().to_path_buf(),
        f.file("other-ca.crt", other.pem()),
    );
    let err = check_error(
        "foreign CA",
        d.endpoints().await,
        "tls",
        "certificate",
        &secrets,
    );
    let service = f.sim.service_address().to_string();
    for needle in [
        service.as_str(),
        "other-ca.crt",
        "check targets.kubernetes.ca_file",
        "targets.kubernetes.server_name (\"kubernetes\")",
    ] {
        assert!(
            err.to_string().contains(needle),
            "missing {needle:?}: {err}"
        );
    }

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let d = Discovery::new(
        &format!("https://{closed}").parse().expect("a URL"),
        "kubernetes",
        &ca,
        Arc::new(TokenFile::new(f.sim.token_path().to_path_buf())),
        TIMEOUT,
    )
    .expect("discovery");
    check_error(
        "closed port",
        d.endpoints().await,
        "connect",
        "refused",
        &secrets,
    );

    let missing = Discovery::new(
        &f.api_server(),
        "kubernetes",
        &f.dir.0.join("missing-ca.crt"),
        Arc::new(TokenFile::new(f.sim.token_path().to_path_buf())),
        TIMEOUT,
    )
    .expect_err("no CA file");
    assert_eq!(missing.metric_label(), "config");
    assert!(missing.to_string().contains("missing-ca.crt"), "{missing}");

    // The good credentials still work against the same simulator.
    assert_eq!(f.good().endpoints().await.expect("endpoints").len(), 2);
    f.sim.shutdown().await;
}

use crate::support::echo_server;

#[tokio::test]
async fn an_echoing_server_never_gets_a_piece_of_the_token_into_an_error() {
    let dir = TempDir::new();
    let server = echo_server::EchoServer::start(&dir.0).await;
    let token_path = dir.0.join("token");
    echo_server::write_token(&token_path, "initial-token");
    let discovery = Discovery::new(
        &format!("https://{}", server.addr).parse().expect("a URL"),
        "kubernetes",
        &server.ca_file,
        Arc::new(TokenFile::new(token_path.clone())),
        TIMEOUT,
    )
    .expect("discovery");
    let mut seen = std::collections::BTreeSet::new();
    for len in 1..=2000 {
        let token = echo_server::token_of(len);
        echo_server::write_token(&token_path, &token);
        // Alternately an error body and a string where the list belongs.
        for _ in 0..2 {
            let err = discovery
                .endpoints()
                .await
                .expect_err("the echo server lists nothing");
            if len < cutover_auditor::credentials::MIN_TOKEN_BYTES {
                assert_eq!(err.metric_label(), "token_unreadable", "{err}");
                continue;
            }
            seen.insert(err.metric_label());
            let text = format!("{err} {err:?}");
            assert!(text.contains("<redacted"), "len {len}: {text}");
            echo_server::assert_no_token(&text, &token, &format!("len {len}"));
        }
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["decode", "http_other"]
    );
    assert_eq!(
        server.requests.load(std::sync::atomic::Ordering::SeqCst),
        2 * (2000 - 3)
    );
}
