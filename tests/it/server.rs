//! The admin server over real HTTP on loopback: every route, content types,
//! gzip, readiness, method and path errors, the JSON status round trip, a
//! shutdown that is prompt even with a keep-alive connection open, and
//! probes that get through slow clients holding every connection.

use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cutover_auditor::clock::Clock;
use cutover_auditor::metrics::Metrics;
use cutover_auditor::server::{self, Admin, Limits, METRICS_CONTENT_TYPE, ServerError};
use cutover_auditor::status::{CutoverStatus, ScrapeErrorKind, Status, TargetHealth};
use cutover_auditor::time::Timestamp;
use cutover_auditor::verdict::{CutoverSpec, Reason, State};
use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

const NOW: Timestamp = Timestamp::from_secs(1_780_000_000);

struct Fixture {
    base: String,
    client: reqwest::Client,
    status: watch::Sender<Status>,
    ready: Arc<AtomicBool>,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), ServerError>>,
}

async fn start(status: Status) -> Fixture {
    start_with(status, Limits::default()).await
}

async fn start_with(status: Status, limits: Limits) -> Fixture {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let metrics = Arc::new(Metrics::new("9.9.9-test").unwrap());
    metrics.declare_cutovers(&CutoverSpec::builtin());
    let (tx, rx) = watch::channel(status);
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let admin = Admin {
        metrics,
        status: rx,
        ready: ready.clone(),
        clock: Clock::manual(NOW),
    };
    let shutdown = async {
        let _ = stop_rx.await;
    };
    let server = tokio::spawn(server::serve_with(listener, admin, shutdown, limits));
    Fixture {
        base: format!("http://{addr}"),
        client: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        status: tx,
        ready,
        stop: Some(stop_tx),
        server,
    }
}

impl Fixture {
    async fn request(
        &self,
        method: Method,
        path: &str,
    ) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
        let response = self
            .client
            .request(method, format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.unwrap().to_vec();
        (status, headers, body)
    }
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or_default()
}

fn sample_status() -> Status {
    Status {
        version: "9.9.9-test".into(),
        evaluated_at: Some(NOW),
        cutovers: vec![CutoverStatus {
            name: "legacy-tokens".into(),
            window_seconds: 7 * 86_400,
            state: State::InUse,
            reason: Reason::QuietCounterIncreased,
            since: NOW - Duration::from_secs(3_600),
            last_use: Some(NOW - Duration::from_secs(3 * 3_600)),
            increase: 42,
            evidence_increase: None,
            unattributed: None,
            coverage_ratio: 1.0,
            ready_in_seconds: Some(7 * 86_400 - 3 * 3_600),
            regressions: 1,
            last_regression: None,
            blocking_instances: Vec::new(),
            evidence_sources: None,
            timeline: None,
        }],
        targets: vec![
            TargetHealth {
                instance: "10.0.0.1:6443".into(),
                up: true,
                last_scrape: Some(NOW),
                last_success: Some(NOW),
                last_duration_seconds: Some(0.25),
                kubernetes_version: Some("v1.31.2".into()),
                ..TargetHealth::default()
            },
            TargetHealth {
                instance: "10.0.0.2:6443".into(),
                up: false,
                last_scrape: Some(NOW),
                last_success: Some(NOW - Duration::from_secs(600)),
                last_duration_seconds: Some(10.0),
                last_error: Some(ScrapeErrorKind::Timeout),
                last_error_detail: Some("no answer within 10s".into()),
                consecutive_failures: 20,
                kubernetes_version: Some("v1.31.2".into()),
            },
        ],
        kinds: Vec::new(),
        attribution: None,
        history: None,
    }
}

/// One route: method, path, expected status, content type and a body fragment.
async fn check(
    f: &Fixture,
    method: Method,
    path: &str,
    status: StatusCode,
    content_type: &str,
    body_contains: &str,
) {
    let (got, headers, body) = f.request(method.clone(), path).await;
    assert_eq!(got, status, "{method} {path}");
    assert_eq!(
        header(&headers, "content-type"),
        content_type,
        "{method} {path}"
    );
    let body = String::from_utf8(body).unwrap();
    assert!(body.contains(body_contains), "{method} {path}: {body}");
}

#[tokio::test]
async fn every_route_answers_with_its_content_type() {
    let mut f = start(sample_status()).await;
    f.ready.store(true, Ordering::Release);
    let text = "text/plain; charset=utf-8";
    check(
        &f,
        Method::GET,
        "/metrics",
        StatusCode::OK,
        METRICS_CONTENT_TYPE,
        "cutover_build_info{version=\"9.9.9-test\"} 1",
    )
    .await;
    check(&f, Method::GET, "/healthz", StatusCode::OK, text, "ok").await;
    check(&f, Method::GET, "/readyz", StatusCode::OK, text, "ok").await;
    check(
        &f,
        Method::GET,
        "/api/v1/status",
        StatusCode::OK,
        "application/json",
        "\"legacy-tokens\"",
    )
    .await;
    check(
        &f,
        Method::GET,
        "/",
        StatusCode::OK,
        "text/html; charset=utf-8",
        "10.0.0.2:6443",
    )
    .await;
    check(
        &f,
        Method::GET,
        "/nope",
        StatusCode::NOT_FOUND,
        text,
        "not found: /nope",
    )
    .await;
    check(
        &f,
        Method::GET,
        "/metrics/",
        StatusCode::NOT_FOUND,
        text,
        "not found",
    )
    .await;
    check(
        &f,
        Method::POST,
        "/metrics",
        StatusCode::METHOD_NOT_ALLOWED,
        text,
        "use GET or HEAD",
    )
    .await;
    check(
        &f,
        Method::DELETE,
        "/",
        StatusCode::METHOD_NOT_ALLOWED,
        text,
        "not allowed",
    )
    .await;
    check(
        &f,
        Method::PUT,
        "/nope",
        StatusCode::NOT_FOUND,
        text,
        "not found",
    )
    .await;

    let (_, headers, _) = f.request(Method::POST, "/readyz").await;
    assert_eq!(header(&headers, "allow"), "GET, HEAD");
    let (_, headers, _) = f.request(Method::GET, "/").await;
    assert_eq!(header(&headers, "cache-control"), "no-store");

    // The page shows the status it was given, at the server's clock.
    let (_, _, page) = f.request(Method::GET, "/").await;
    let page = String::from_utf8(page).unwrap();
    assert!(page.contains("in use"), "{page}");
    assert!(page.contains("the last one 3h ago"), "{page}");
    assert!(page.contains("timeout: no answer within 10s"), "{page}");
    f.stop.take();
}

#[tokio::test]
async fn head_is_get_without_a_body() {
    let f = start(sample_status()).await;
    for path in ["/metrics", "/healthz", "/readyz", "/api/v1/status", "/"] {
        let (get_status, get_headers, get_body) = f.request(Method::GET, path).await;
        let (status, headers, body) = f.request(Method::HEAD, path).await;
        assert_eq!(status, get_status, "{path}");
        assert!(body.is_empty(), "HEAD {path} sent a body");
        assert_eq!(
            header(&headers, "content-type"),
            header(&get_headers, "content-type"),
            "{path}"
        );
        assert_eq!(
            header(&headers, "content-length"),
            get_body.len().to_string(),
            "{path}"
        );
    }
}

#[tokio::test]
async fn metrics_are_gzipped_when_the_client_asks() {
    let f = start(sample_status()).await;
    let (_, plain_headers, plain) = f.request(Method::GET, "/metrics").await;
    assert_eq!(header(&plain_headers, "content-encoding"), "");
    assert_eq!(header(&plain_headers, "vary"), "Accept-Encoding");

    // reqwest is built without its gzip feature, so the body arrives as sent.
    let response = f
        .client
        .get(format!("{}/metrics", f.base))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(response.headers(), "content-encoding"), "gzip");
    assert_eq!(
        header(response.headers(), "content-type"),
        METRICS_CONTENT_TYPE
    );
    let compressed = response.bytes().await.unwrap();
    assert!(compressed.starts_with(&[0x1f, 0x8b]), "not a gzip stream");
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_end(&mut decoded)
        .unwrap();
    assert!(compressed.len() < plain.len());
    assert_eq!(
        String::from_utf8(decoded).unwrap(),
        String::from_utf8(plain).unwrap()
    );
}

#[tokio::test]
async fn readiness_says_why_it_is_not_ready() {
    let f = start(Status::default()).await;
    let (status, _, body) = f.request(Method::GET, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        String::from_utf8(body).unwrap(),
        "not ready: first evaluation pending\n"
    );
    // Alive all along.
    assert_eq!(f.request(Method::GET, "/healthz").await.0, StatusCode::OK);

    f.status.send_replace(sample_status());
    f.ready.store(true, Ordering::Release);
    let (status, _, body) = f.request(Method::GET, "/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(String::from_utf8(body).unwrap(), "ok\n");

    f.ready.store(false, Ordering::Release);
    let (status, _, body) = f.request(Method::GET, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(String::from_utf8(body).unwrap(), "not ready: draining\n");
}

#[tokio::test]
async fn status_json_round_trips_and_follows_updates() {
    let f = start(Status::default()).await;
    let (_, _, body) = f.request(Method::GET, "/api/v1/status").await;
    let first: Status = serde_json::from_slice(&body).unwrap();
    assert_eq!(first, Status::default());

    let status = sample_status();
    f.status.send_replace(status.clone());
    let (_, _, body) = f.request(Method::GET, "/api/v1/status").await;
    let back: Status = serde_json::from_slice(&body).unwrap();
    assert_eq!(back, status);
    // The field names tools rely on.
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["cutovers"][0]["state"], "in_use");
    assert_eq!(json["cutovers"][0]["reason"], "quiet_counter_increased");
    assert_eq!(json["targets"][1]["last_error"], "timeout");
    assert_eq!(json["evaluated_at"], NOW.as_millis());
}

#[tokio::test]
async fn a_request_body_is_not_read() {
    let f = start(sample_status()).await;
    // A request that announces a 1 MiB body and never sends a byte of it: a
    // server that read the body would wait for it and never answer.
    let mut stream = TcpStream::connect(f.base.trim_start_matches("http://"))
        .await
        .unwrap();
    stream
        .write_all(b"POST /api/v1/status HTTP/1.1\r\nHost: a\r\nContent-Length: 1048576\r\n\r\n")
        .await
        .unwrap();
    // The 405 comes, then the server closes the connection rather than
    // reading the body to reuse it (the read ends: EOF). The bound only keeps
    // a failing server from hanging the test.
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the server answered and closed without the body")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 405 "),
        "the method is refused: {answer}"
    );
    assert!(answer.contains("allow: GET, HEAD\r\n"), "{answer}");
    assert_eq!(f.request(Method::GET, "/healthz").await.0, StatusCode::OK);
}

#[tokio::test]
async fn shutdown_stops_promptly_with_a_keep_alive_connection_open() {
    let mut f = start(sample_status()).await;
    // The client keeps this connection open in its pool.
    assert_eq!(f.request(Method::GET, "/metrics").await.0, StatusCode::OK);
    let started = Instant::now();
    f.stop.take().map(|stop| stop.send(()));
    let result = tokio::time::timeout(Duration::from_secs(3), &mut f.server)
        .await
        .expect("the server stopped within 3 s")
        .unwrap();
    assert!(result.is_ok(), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // Nothing listens any more.
    let fresh = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(
        fresh
            .get(format!("{}/healthz", f.base))
            .send()
            .await
            .is_err()
    );
}

fn short_limits(max_connections: usize) -> Limits {
    Limits {
        header_read_timeout: Duration::from_millis(300),
        max_connections,
        ..Limits::default()
    }
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let f = start_with(sample_status(), short_limits(8)).await;
    let mut slow = TcpStream::connect(f.base.trim_start_matches("http://"))
        .await
        .unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut answer))
        .await
        .expect("the server closed the connection")
        .ok();
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    assert!(!String::from_utf8_lossy(&answer).contains("200 OK"));
}

#[tokio::test]
async fn a_new_client_takes_the_place_of_an_idle_one() {
    let limits = Limits {
        eviction_min_idle: Duration::from_millis(200),
        header_read_timeout: Duration::from_secs(30),
        ..short_limits(1)
    };
    let f = start_with(sample_status(), limits).await;
    // An idle connection takes the only slot...
    let mut idle = TcpStream::connect(addr(&f)).await.unwrap();
    let started = Instant::now();
    // ...and is closed for this request once it has waited 200 ms, not
    // after the 30 s header timeout.
    assert_eq!(probe(&f).await, Ok(()));
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(150),
        "served at once: {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the idle connection was not closed");
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
}

fn addr(f: &Fixture) -> &str {
    f.base.trim_start_matches("http://")
}

/// One `GET /healthz` on a fresh connection, as the kubelet probes: `Ok`
/// when `200 OK` arrives within 1 s.
async fn probe(f: &Fixture) -> Result<(), String> {
    let exchange = async {
        let mut s = TcpStream::connect(addr(f))
            .await
            .map_err(|e| e.to_string())?;
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut answer = Vec::new();
        s.read_to_end(&mut answer)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(answer)
    };
    match tokio::time::timeout(Duration::from_secs(1), exchange).await {
        Err(_) => Err("no answer within 1 s".into()),
        Ok(Err(e)) => Err(e),
        Ok(Ok(answer)) if answer.starts_with(b"HTTP/1.1 200 OK") => Ok(()),
        Ok(Ok(answer)) => Err(String::from_utf8_lossy(&answer).into_owned()),
    }
}

/// A client that sends a request's headers one byte every 100 ms, never
/// finishing them, and connects again whenever the server closes it, until
/// `until`. Returns how many times it connected.
async fn slow_client(addr: String, until: Instant) -> u32 {
    let mut connections = 0;
    while Instant::now() < until {
        let Ok(mut s) = TcpStream::connect(&addr).await else {
            continue;
        };
        connections += 1;
        if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .is_err()
        {
            continue;
        }
        let mut buf = [0u8; 256];
        loop {
            let deadline = tokio::time::Instant::from_std(until);
            tokio::select! {
                // The server closed the connection (or answered, which it must not).
                read = s.read(&mut buf) => {
                    if let Ok(n @ 1..) = read {
                        panic!("a slow client got an answer: {}", String::from_utf8_lossy(&buf[..n]));
                    }
                    break;
                }
                () = tokio::time::sleep(Duration::from_millis(100)) => {
                    if s.write_all(b"X").await.is_err() {
                        break;
                    }
                }
                () = tokio::time::sleep_until(deadline) => return connections,
            }
        }
    }
    connections
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_that_reconnect_do_not_starve_the_probes() {
    // The shipped bounds: 64 connections.
    let f = start(sample_status()).await;
    f.ready.store(true, Ordering::Release);
    let started = Instant::now();
    let until = started + Duration::from_secs(5);
    let clients: Vec<_> = (0..80)
        .map(|_| tokio::spawn(slow_client(addr(&f).to_string(), until)))
        .collect();
    // Every probe, on a fresh connection as the kubelet's, answers in time.
    let mut probes = 0;
    while Instant::now() < until {
        if let Err(e) = probe(&f).await {
            panic!("probe {probes} failed after {:?}: {e}", started.elapsed());
        }
        probes += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut connections = 0;
    for c in clients {
        connections += c.await.unwrap();
    }
    assert!(probes >= 20, "{probes} probes");
    // The slow clients were closed to make room, and came back.
    assert!(connections > 80, "{connections} connections");
    let (_, _, page) = f.request(Method::GET, "/metrics").await;
    let page = String::from_utf8(page).unwrap();
    let evicted: u64 = page
        .lines()
        .find_map(|l| l.strip_prefix("cutover_admin_connections_evicted_total "))
        .expect("the eviction counter")
        .parse()
        .unwrap();
    assert!(evicted > 0, "{page}");
    // /readyz too.
    assert_eq!(f.request(Method::GET, "/readyz").await.0, StatusCode::OK);
}

/// The log lines written while a test runs (current-thread runtime only).
#[derive(Clone, Default)]
struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self, needle: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }
}

#[tokio::test]
async fn an_overload_is_logged_once_per_episode_and_counted() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let limits = Limits {
        eviction_min_idle: Duration::from_millis(20),
        header_read_timeout: Duration::from_secs(30),
        ..short_limits(4)
    };
    let f = start_with(sample_status(), limits).await;
    let overloaded = "admin server: overloaded";
    for episode in 1..=2 {
        let mut idle = Vec::new();
        for _ in 0..4 {
            idle.push(TcpStream::connect(addr(&f)).await.unwrap());
        }
        // Three requests on keep-alive connections: each takes the place of
        // the connection that has waited longest, the idle ones in order.
        let clients: Vec<reqwest::Client> = (0..3)
            .map(|_| reqwest::Client::builder().no_proxy().build().unwrap())
            .collect();
        for (i, client) in clients.iter().enumerate() {
            let r = client.get(format!("{}/healthz", f.base)).send().await;
            assert_eq!(r.unwrap().status(), StatusCode::OK);
            let mut rest = Vec::new();
            let closed =
                tokio::time::timeout(Duration::from_secs(5), idle[i].read_to_end(&mut rest)).await;
            assert!(closed.is_ok(), "idle connection {i} was not closed");
        }
        assert_eq!(logs.lines(overloaded), episode, "episode {episode}");
        // The newest idle connection was spared.
        idle[3]
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = [0u8; 15];
        idle[3].read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"HTTP/1.1 200 OK");
        // Everyone leaves: the episode ends.
        drop(idle);
        drop(clients);
        let deadline = Instant::now() + Duration::from_secs(5);
        while logs.lines("admin server: overload over") < episode {
            assert!(Instant::now() < deadline, "the overload never ended");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    assert_eq!(logs.lines("evicted=3"), 2);
    let page = String::from_utf8(f.request(Method::GET, "/metrics").await.2).unwrap();
    assert!(
        page.contains("cutover_admin_connections_evicted_total 6\n"),
        "{page}"
    );
}
