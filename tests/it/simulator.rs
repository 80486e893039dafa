//! The simulated apiservers over real HTTPS on loopback: certificate
//! verification, tokens, content negotiation, DELETE, discovery, outages,
//! and pages whose counters equal the ground truth. The clock is manual, so
//! simulated time only moves when a test says so.

use crate::support::tempdir;
use tempdir::TempDir;

use std::io::Read as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use cutover_auditor::clock::Clock;
use cutover_auditor::endpointslice::{EndpointSliceList, KUBERNETES_SLICES_PATH};
use cutover_auditor::simulator::scenario::Scenario;
use cutover_auditor::simulator::tls::ClusterCa;
use cutover_auditor::simulator::{Options, Simulation};
use cutover_auditor::time::Timestamp;
use reqwest::StatusCode;

const ORIGIN: Timestamp = Timestamp::from_secs(1_780_000_000);

struct Fixture {
    sim: Simulation,
    clock: Clock,
    _dir: TempDir,
}

async fn start(scenario: &str) -> Fixture {
    let scenario = Scenario::parse(scenario).expect("valid scenario");
    let clock = Clock::manual(ORIGIN);
    let dir = TempDir::new();
    let sim = Simulation::start(&scenario, clock.clone(), Options::in_dir(&dir.0))
        .await
        .expect("simulation starts");
    Fixture {
        sim,
        clock,
        _dir: dir,
    }
}

/// A client that trusts `ca_pem` and reaches `kubernetes` at `addr`.
fn client(ca_pem: &str, addr: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("PEM"))
        .resolve("kubernetes", addr)
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

impl Fixture {
    fn token(&self) -> String {
        std::fs::read_to_string(self.sim.token_path()).expect("token file")
    }

    fn ca(&self) -> String {
        std::fs::read_to_string(self.sim.ca_path()).expect("CA file")
    }

    fn client(&self, instance: usize) -> reqwest::Client {
        client(&self.ca(), self.sim.instance_addresses()[instance])
    }

    fn url(&self, instance: usize, path: &str) -> String {
        format!(
            "https://kubernetes:{}{path}",
            self.sim.instance_addresses()[instance].port()
        )
    }

    async fn get(&self, instance: usize, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.client(instance).get(self.url(instance, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.expect("request")
    }

    async fn page(&self, instance: usize) -> String {
        let res = self.get(instance, "/metrics", Some(&self.token())).await;
        assert_eq!(res.status(), StatusCode::OK);
        res.text().await.expect("body")
    }

    /// Advances the clock; returns once the listeners follow the world.
    async fn advance(&self, d: Duration) {
        crate::support::simulation::advance(&self.sim, d).await;
    }
}

/// The value of an unlabelled sample in a page.
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

const THREE: &str = r#"
    token_grace = "1m"
    [[instances]]
    version = "1.29.5"
    [[instances]]
    version = "1.30.0"
    [[instances]]
    version = "1.35.0"
    [[clients]]
    kind = "legacy_auto"
    interval = "5s"
    [[clients]]
    kind = "valid"
    interval = "1s"
"#;

#[tokio::test]
async fn certificate_verifies_with_the_cluster_ca_only() {
    let f = start(THREE).await;
    assert!(
        f.page(0)
            .await
            .contains("serviceaccount_legacy_tokens_total")
    );
    // By IP address too: the certificate carries the instance's IP.
    let addr = f.sim.instance_addresses()[1];
    let by_ip = client(&f.ca(), addr)
        .get(format!("https://{addr}/version"))
        .send()
        .await
        .expect("IP SAN verifies");
    assert_eq!(by_ip.status(), StatusCode::OK);
    // A different CA must not verify the server.
    let other = ClusterCa::generate().expect("CA");
    let err = client(other.pem(), addr)
        .get(f.url(1, "/version"))
        .send()
        .await
        .expect_err("a foreign CA must fail");
    let mut chain = String::new();
    let mut source: Option<&dyn std::error::Error> = Some(&err);
    while let Some(e) = source {
        chain.push_str(&format!("{e}; "));
        source = e.source();
    }
    assert!(chain.contains("invalid peer certificate"), "{chain}");
    // Plain HTTP is not offered.
    let plain = reqwest::Client::new()
        .get(format!("http://{addr}/version"))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(plain.map(|r| r.status() != StatusCode::OK).unwrap_or(true));
    f.sim.shutdown().await;
}

#[tokio::test]
async fn tokens_401_403_and_rotation_with_grace() {
    let f = start(THREE).await;
    let forbidden = std::fs::read_to_string(f.sim.forbidden_token_path()).expect("forbidden token");
    let check = async |token: Option<&str>, want: StatusCode| {
        let res = f.get(2, "/metrics", token).await;
        assert_eq!(
            res.status(),
            want,
            "token {}",
            token.map_or("none", |_| "given")
        );
    };
    let old = f.token();
    check(None, StatusCode::UNAUTHORIZED).await;
    check(Some("not-a-token"), StatusCode::UNAUTHORIZED).await;
    check(Some(&forbidden), StatusCode::FORBIDDEN).await;
    check(Some(&old), StatusCode::OK).await;
    // The file changes: both tokens work until the grace (1m) ends.
    std::fs::write(f.sim.token_path(), "rotated-by-the-test").expect("write token");
    check(Some("rotated-by-the-test"), StatusCode::OK).await;
    check(Some(&old), StatusCode::OK).await;
    f.advance(Duration::from_secs(61)).await;
    check(Some(&old), StatusCode::UNAUTHORIZED).await;
    check(Some("rotated-by-the-test"), StatusCode::OK).await;
    f.sim.shutdown().await;
}

#[tokio::test]
async fn rotation_event_writes_a_new_token() {
    let f = start(
        r#"
        token_grace = "30s"
        [[instances]]
        version = "1.35.0"
        [[events]]
        at = "1m"
        action = "rotate_token"
        "#,
    )
    .await;
    let old = f.token();
    f.advance(Duration::from_secs(60)).await;
    assert_eq!(
        f.get(0, "/metrics", Some(&old)).await.status(),
        StatusCode::OK
    );
    let new = f.token();
    assert_ne!(new, old);
    f.advance(Duration::from_secs(31)).await;
    assert_eq!(
        f.get(0, "/metrics", Some(&old)).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        f.get(0, "/metrics", Some(&new)).await.status(),
        StatusCode::OK
    );
    f.sim.shutdown().await;
}

#[tokio::test]
async fn content_negotiation_follows_the_version() {
    let f = start(THREE).await;
    let token = f.token();
    // (instance, escaping, start-time header)
    for (i, escaping, header) in [(0, false, false), (1, false, true), (2, true, true)] {
        for gzip in [false, true] {
            let mut req = f.client(i).get(f.url(i, "/metrics")).bearer_auth(&token);
            if gzip {
                req = req.header("Accept-Encoding", "gzip");
            }
            let res = req.send().await.expect("request");
            let h = |name: &str| {
                res.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            let want_type = if escaping {
                "text/plain; version=0.0.4; charset=utf-8; escaping=underscores"
            } else {
                "text/plain; version=0.0.4; charset=utf-8"
            };
            assert_eq!(
                h("content-type").as_deref(),
                Some(want_type),
                "instance {i}"
            );
            assert_eq!(
                h("content-encoding").as_deref(),
                gzip.then_some("gzip"),
                "instance {i}"
            );
            let start = f.sim.world().view(i).expect("view").start_time;
            let want_header = header.then(|| (start.as_millis() / 1000).to_string());
            assert_eq!(h("process-start-time-unix"), want_header, "instance {i}");
            let bytes = res.bytes().await.expect("body");
            let text = if gzip {
                let mut s = String::new();
                flate2::read::GzDecoder::new(&bytes[..])
                    .read_to_string(&mut s)
                    .expect("gzip");
                s
            } else {
                String::from_utf8(bytes.to_vec()).expect("utf-8")
            };
            assert_eq!(
                sample(&text, "process_start_time_seconds"),
                Some(start.as_secs_f64())
            );
            assert!(text.contains(&format!("git_version=\"v1.{}", [29, 30, 35][i])));
        }
    }
    f.sim.shutdown().await;
}

#[tokio::test]
async fn pages_show_the_ground_truth_and_delete_resets() {
    let f = start(THREE).await;
    f.advance(Duration::from_secs(600)).await;
    for i in 0..3 {
        let page = f.page(i).await;
        let world = f.sim.world();
        let view = world.view(i).expect("view");
        assert_eq!(view.counters.len(), 6);
        for (kind, value) in &view.counters {
            let truth = world.increments(i, *kind, Timestamp(ORIGIN.0 - 1), world.now());
            assert_eq!(*value, truth, "{kind}");
            assert_eq!(
                sample(&page, kind.family()),
                Some(truth as f64),
                "instance {i} {kind}"
            );
        }
        assert!(
            sample(&page, "serviceaccount_legacy_auto_token_uses_total").is_some_and(|v| v > 0.0)
        );
    }
    let before = f.page(0).await;
    let token = f.token();
    let res = f
        .client(0)
        .delete(f.url(0, "/metrics"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("delete");
    assert_eq!(res.status(), StatusCode::OK);
    let after = f.page(0).await;
    assert_eq!(
        sample(&after, "serviceaccount_valid_tokens_total"),
        Some(0.0)
    );
    assert_eq!(
        sample(&after, "process_start_time_seconds"),
        sample(&before, "process_start_time_seconds")
    );
    let hits = |p: &str| {
        sample(
            p,
            "authentication_token_cache_request_total{status=\"hit\"}",
        )
        .unwrap_or(-1.0)
    };
    assert!(hits(&after) < hits(&before));
    f.sim.shutdown().await;
}

#[tokio::test]
async fn discovery_lists_present_instances() {
    let f = start(
        r#"
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
        "#,
    )
    .await;
    let token = f.token();
    let service = f.sim.service_address();
    let list = async || -> Vec<SocketAddr> {
        let res = client(&f.ca(), service)
            .get(format!(
                "https://kubernetes:{}{KUBERNETES_SLICES_PATH}",
                service.port()
            ))
            .bearer_auth(&token)
            .send()
            .await
            .expect("discovery");
        assert_eq!(res.status(), StatusCode::OK);
        let body = res.bytes().await.expect("body");
        let list: EndpointSliceList =
            serde_json::from_slice(&body).expect("EndpointSliceList JSON");
        assert_eq!(list.kind, "EndpointSliceList");
        list.ready_addresses("https")
    };
    let all = f.sim.instance_addresses().to_vec();
    assert_eq!(list().await, all[..2].to_vec());
    f.advance(Duration::from_secs(60)).await;
    assert_eq!(list().await, all.clone());
    f.advance(Duration::from_secs(60)).await;
    assert_eq!(list().await, all[1..].to_vec());
    let body = f
        .get(2, "/version", None)
        .await
        .bytes()
        .await
        .expect("body");
    let version: serde_json::Value = serde_json::from_slice(&body).expect("version JSON");
    assert_eq!(version["gitVersion"], "v1.33.1");
    f.sim.shutdown().await;
}

#[tokio::test]
async fn every_outage_mode_is_observable() {
    let f = start(
        r#"
        [[instances]]
        version = "1.35.0"
        count = 4
        [[events]]
        at = "1m"
        action = "outage"
        instance = 0
        mode = "refuse"
        for = "5m"
        [[events]]
        at = "1m"
        action = "outage"
        instance = 1
        mode = "hang"
        for = "5m"
        [[events]]
        at = "1m"
        action = "outage"
        instance = 2
        mode = "http_500"
        for = "5m"
        [[events]]
        at = "1m"
        action = "outage"
        instance = 3
        mode = "slow"
        for = "5m"
        delay = "400ms"
        "#,
    )
    .await;
    let token = f.token();
    f.advance(Duration::from_secs(60)).await;
    let refused = f
        .client(0)
        .get(f.url(0, "/metrics"))
        .bearer_auth(&token)
        .send()
        .await;
    assert!(
        refused.as_ref().is_err_and(|e| e.is_connect()),
        "{refused:?}"
    );
    let hung = f
        .client(1)
        .get(f.url(1, "/metrics"))
        .bearer_auth(&token)
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(hung.as_ref().is_err_and(|e| e.is_timeout()), "{hung:?}");
    assert_eq!(
        f.get(2, "/metrics", Some(&token)).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let started = Instant::now();
    let slow = f.page(3).await;
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "{:?}",
        started.elapsed()
    );
    assert!(slow.contains("serviceaccount_valid_tokens_total"));
    // After the outage every instance answers again.
    f.advance(Duration::from_secs(300)).await;
    for i in 0..4 {
        assert!(
            f.page(i).await.contains("process_start_time_seconds"),
            "instance {i}"
        );
    }
    f.sim.shutdown().await;
}

#[tokio::test]
async fn extractor_reads_the_ground_truth_for_every_version() {
    use cutover_auditor::exposition::{PageDecoder, Watch};
    use cutover_auditor::families::TokenKind;
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/versions.toml"),
    )
    .expect("versions.toml");
    let f = start(&text).await;
    f.advance(Duration::from_secs(900)).await;
    let token = f.token();
    for i in 0..f.sim.instance_addresses().len() {
        // Streamed in chunks as the daemon will: gzip, then plain.
        for gzip in [true, false] {
            let mut req = f.client(i).get(f.url(i, "/metrics")).bearer_auth(&token);
            if gzip {
                req = req.header("Accept-Encoding", "gzip");
            }
            let mut res = req.send().await.expect("request");
            assert_eq!(res.status(), StatusCode::OK);
            let mut decoder = PageDecoder::new(Watch::default_families());
            while let Some(chunk) = res.chunk().await.expect("chunk") {
                decoder.feed(&chunk).expect("well-formed page");
            }
            let page = decoder.finish().expect("page");
            let world = f.sim.world();
            let view = world.view(i).expect("view");
            let version = view.version;
            for kind in TokenKind::ALL {
                let truth = view
                    .counters
                    .iter()
                    .find(|(k, _)| *k == kind)
                    .map(|(_, v)| *v as f64);
                let expected = truth.map(|_| {
                    world.increments(i, kind, Timestamp(ORIGIN.0 - 1), world.now()) as f64
                });
                assert_eq!(truth, expected, "v{version} {kind}: page vs ground truth");
                assert_eq!(
                    page.family_sum(kind.family()),
                    expected,
                    "v{version} {kind}"
                );
            }
            let absent = page.absent();
            assert_eq!(
                absent.len(),
                if version.minor >= 29 { 0 } else { 3 },
                "v{version}: {absent:?}"
            );
            assert!(
                page.family_sum(TokenKind::Valid.family())
                    .is_some_and(|v| v > 0.0)
            );
            assert_eq!(
                page.process_start_time(),
                Some(view.start_time.as_secs_f64())
            );
            assert_eq!(
                page.kubernetes_version(),
                Some(version.git_version().as_str())
            );
        }
    }
    f.sim.shutdown().await;
}

#[tokio::test]
async fn simulate_from_file_runs_for_the_scenario_duration() {
    let dir = TempDir::new();
    let path = dir.0.join("short.toml");
    std::fs::write(
        &path,
        "speed = 100.0\nduration = \"20s\"\n[[instances]]\nversion = \"1.35.0\"\n",
    )
    .expect("write scenario");
    let started = Instant::now();
    let run = cutover_auditor::simulator::simulate_from_file(
        &path,
        Some(dir.0.join("out")),
        std::future::pending(),
    );
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("ends after 20 simulated seconds")
        .expect("runs");
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert!(dir.0.join("out/ca.crt").exists());
    let missing = cutover_auditor::simulator::simulate_from_file(
        &dir.0.join("missing.toml"),
        None,
        std::future::ready(()),
    )
    .await;
    assert!(missing.is_err_and(|e| e.to_string().contains("missing.toml")));
}

/// Retries `probe` every 10 ms for up to 5 s until it returns `Some`: the
/// listeners open and close on their own poll, which has no event to await.
async fn eventually<T, F: AsyncFnMut() -> Option<T>>(what: &str, mut probe: F) -> T {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Ground truth of `valid` increments on instance `i` in `(from, to]`
/// seconds from the start (from 0: the tick at the start included).
fn valid_uses(f: &Fixture, i: usize, from: u64, to: u64) -> u64 {
    use cutover_auditor::families::TokenKind;
    let lower = match from {
        0 => Timestamp(ORIGIN.0 - 1),
        s => ORIGIN + Duration::from_secs(s),
    };
    f.sim
        .increments(i, TokenKind::Valid, lower, ORIGIN + Duration::from_secs(to))
}

#[tokio::test]
async fn page_outages_answer_200_or_403_while_counters_keep_counting() {
    use cutover_auditor::exposition::{PageDecoder, Watch};
    use cutover_auditor::families::{BUILD_INFO, PROCESS_START_TIME, RESET_SENTINEL, TokenKind};
    // Instance 4 has no outage: the control. The scraper's own token counts
    // as `none`, so only the client moves the counters.
    let f = start(
        r#"
        scraper_counts_as = "none"
        page_kib = 16
        [[instances]]
        version = "1.35.0"
        count = 5
        [[clients]]
        kind = "valid"
        interval = "1s"
        [[events]]
        at = "1m"
        action = "outage"
        instance = 0
        mode = "http_403"
        for = "5m"
        [[events]]
        at = "1m"
        action = "outage"
        instance = 1
        mode = "empty_page"
        for = "5m"
        [[events]]
        at = "1m"
        action = "outage"
        instance = 2
        mode = "no_families"
        for = "5m"
        [[events]]
        at = "1m"
        action = "outage"
        instance = 3
        mode = "truncated"
        for = "5m"
        "#,
    )
    .await;
    let token = f.token();
    let full_before = f.page(3).await;
    f.clock.advance(Duration::from_secs(150));

    let forbidden = f.get(0, "/metrics", Some(&token)).await;
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
    let body = forbidden.text().await.expect("body");
    assert!(body.contains("\"reason\":\"Forbidden\""), "{body}");
    assert!(!body.contains("serviceaccount_"), "{body}");
    // Only /metrics is refused: the instance is otherwise healthy.
    assert_eq!(
        f.get(0, "/version", Some(&token)).await.status(),
        StatusCode::OK
    );

    let empty = f.get(1, "/metrics", Some(&token)).await;
    assert_eq!(empty.status(), StatusCode::OK);
    assert!(
        empty
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().is_ok_and(|v| v.starts_with("text/plain"))),
        "{:?}",
        empty.headers()
    );
    assert_eq!(empty.bytes().await.expect("body").len(), 0);

    let extract = |page: &str| {
        let mut dec = PageDecoder::new(Watch::default_families());
        dec.feed(page.as_bytes()).expect("page reads");
        dec.finish().expect("page reads")
    };
    let token_families: Vec<&str> = TokenKind::ALL.iter().map(|k| k.family()).collect();

    let no_families = f.page(2).await;
    let page = extract(&no_families);
    let absent = page.absent();
    for family in token_families.iter().chain([&RESET_SENTINEL]) {
        assert!(absent.contains(family), "{family} on the page");
    }
    assert!(page.is_present(PROCESS_START_TIME) && page.is_present(BUILD_INFO));
    assert!(no_families.contains("apiserver_request_total"));
    assert!(no_families.ends_with('\n'));

    let truncated = f.page(3).await;
    assert!(!truncated.is_empty() && !truncated.ends_with('\n'));
    assert!(!truncated.contains("serviceaccount_"));
    // Cut in the middle of a line of the page as it would be.
    let cut_line = truncated.rsplit('\n').next().expect("a last line");
    assert!(
        full_before
            .lines()
            .any(|l| l.starts_with(cut_line) && l.len() > cut_line.len()),
        "{cut_line:?} is not the start of a longer line"
    );
    assert!(truncated.len() < full_before.len() / 2 + 1);
    for family in &token_families {
        assert!(extract(&truncated).absent().contains(family), "{family}");
    }

    // The clients kept using every instance: each counts like the control.
    // 1 request/s cached 10 s: 9 misses in (60s, 150s].
    for i in 0..5 {
        assert_eq!(valid_uses(&f, i, 60, 150), 9, "instance {i}");
    }
    // After the outage the pages are whole again and hold every use.
    f.clock.advance(Duration::from_secs(300));
    for i in 0..4 {
        let page = extract(&f.page(i).await);
        assert_eq!(
            page.family_sum(TokenKind::Valid.family()),
            Some(valid_uses(&f, i, 0, 450) as f64),
            "instance {i}"
        );
        assert!(
            page.absent().is_empty(),
            "instance {i}: {:?}",
            page.absent()
        );
    }
    f.sim.shutdown().await;
}

#[tokio::test]
async fn an_outage_from_the_start_outlasts_the_scenario() {
    let f = start(
        r#"
        duration = "10m"
        scraper_counts_as = "none"
        [[instances]]
        version = "1.35.0"
        count = 3
        [[clients]]
        kind = "valid"
        interval = "1s"
        [[events]]
        at = "0s"
        action = "outage"
        instance = 0
        mode = "refuse"
        for = "30d"
        [[events]]
        at = "0s"
        action = "outage"
        instance = 1
        mode = "http_500"
        for = "30d"
        "#,
    )
    .await;
    let token = f.token();
    let refused = async || {
        f.client(0)
            .get(f.url(0, "/metrics"))
            .bearer_auth(&token)
            .send()
            .await
    };
    // Closed from the very first moment, never accepted then reset.
    let first = refused().await;
    assert!(first.as_ref().is_err_and(|e| e.is_connect()), "{first:?}");
    assert_eq!(
        f.get(1, "/metrics", Some(&token)).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert!(
        f.page(2)
            .await
            .contains("serviceaccount_valid_tokens_total")
    );
    // Past the scenario's duration, both outages still last.
    f.clock.advance(Duration::from_secs(3600));
    let later = refused().await;
    assert!(later.as_ref().is_err_and(|e| e.is_connect()), "{later:?}");
    assert_eq!(
        f.get(1, "/metrics", Some(&token)).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    // A refusing instance gets no requests; a failing one is still used.
    assert_eq!(valid_uses(&f, 0, 0, 3600), 0);
    assert_eq!(valid_uses(&f, 1, 0, 3600), 361);
    assert_eq!(valid_uses(&f, 2, 0, 3600), 361);
    f.sim.shutdown().await;
}

#[tokio::test]
async fn a_joining_instance_can_fail_its_first_scrapes() {
    let f = start(
        r#"
        scraper_counts_as = "none"
        [[instances]]
        version = "1.35.0"
        [[clients]]
        kind = "valid"
        interval = "1s"
        [[events]]
        at = "1m"
        action = "add_instance"
        version = "1.34.2"
        [[events]]
        at = "1m"
        action = "outage"
        instance = 1
        mode = "http_500"
        for = "10m"
        "#,
    )
    .await;
    let token = f.token();
    let before = f
        .client(1)
        .get(f.url(1, "/metrics"))
        .bearer_auth(&token)
        .send()
        .await;
    assert!(before.as_ref().is_err_and(|e| e.is_connect()), "{before:?}");
    f.clock.advance(Duration::from_secs(60));
    // The port opens on the listener's poll; its very first answer is a 500.
    let first = eventually("instance 1 to listen", async || {
        let res = f
            .client(1)
            .get(f.url(1, "/metrics"))
            .bearer_auth(&token)
            .send()
            .await;
        res.ok().map(|r| r.status())
    })
    .await;
    assert_eq!(first, StatusCode::INTERNAL_SERVER_ERROR);
    f.clock.advance(Duration::from_secs(540));
    assert_eq!(
        f.get(1, "/metrics", Some(&token)).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    // Used from the moment it joined (ticks 60, 70, ..., 600 s).
    assert_eq!(valid_uses(&f, 1, 0, 600), 55);
    f.clock.advance(Duration::from_secs(60));
    let page = f.page(1).await;
    assert_eq!(
        sample(&page, "serviceaccount_valid_tokens_total"),
        Some(valid_uses(&f, 1, 0, 660) as f64)
    );
    f.sim.shutdown().await;
}

#[tokio::test]
async fn a_misnamed_certificate_fails_verification_for_its_instance_only() {
    use cutover_auditor::credentials::TokenFile;
    use cutover_auditor::exposition::Watch;
    use cutover_auditor::scrape::{Scraper, Target};
    use cutover_auditor::status::ScrapeErrorKind;
    use std::sync::Arc;
    let f = start(
        r#"
        [[instances]]
        version = "1.35.0"
        count = 2
        [[instances]]
        version = "1.35.0"
        cert_name = "wrong.example"
        "#,
    )
    .await;
    let token = f.token();
    // Discovery lists all three, as for any serving instance.
    let service = f.sim.service_address();
    let res = client(&f.ca(), service)
        .get(format!(
            "https://kubernetes:{}{KUBERNETES_SLICES_PATH}",
            service.port()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("discovery");
    let list: EndpointSliceList =
        serde_json::from_slice(&res.bytes().await.expect("body")).expect("JSON");
    let discovered = list.ready_addresses("https");
    assert_eq!(discovered, f.sim.instance_addresses().to_vec());
    // Scraped as the daemon does under discovery: by address, verified as `kubernetes`.
    let mut outcomes = Vec::new();
    for addr in discovered {
        let target = Target {
            instance: addr.to_string(),
            addr,
            server_name: "kubernetes".to_string(),
            path: "/metrics".to_string(),
            ca_file: f.sim.ca_path().to_path_buf(),
            token: Arc::new(TokenFile::new(f.sim.token_path().to_path_buf())),
        };
        let scraper = Scraper::new(target, Duration::from_secs(5), 64 << 20).expect("scraper");
        outcomes.push(
            scraper
                .scrape(&Watch::default_families())
                .await
                .map(|_| ())
                .map_err(|e| (e.kind, e.detail)),
        );
    }
    assert!(outcomes[0].is_ok() && outcomes[1].is_ok(), "{outcomes:?}");
    let (kind, detail) = outcomes[2].clone().expect_err("wrong name");
    assert_eq!(kind, ScrapeErrorKind::Tls, "{detail}");
    assert!(
        detail.contains("not valid for name \"kubernetes\""),
        "{detail}"
    );
    // By IP it fails too; for its own name it verifies, so it is the name
    // (not the CA) that is wrong.
    let addr = f.sim.instance_addresses()[2];
    let by_ip = client(&f.ca(), addr)
        .get(format!("https://{addr}/version"))
        .send()
        .await;
    assert!(by_ip.is_err(), "{by_ip:?}");
    let own = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(f.ca().as_bytes()).expect("PEM"))
        .resolve("wrong.example", addr)
        .build()
        .expect("client")
        .get(format!("https://wrong.example:{}/version", addr.port()))
        .send()
        .await
        .expect("verifies for its own name");
    assert_eq!(own.status(), StatusCode::OK);
    f.sim.shutdown().await;
}
