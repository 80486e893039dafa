//! The scraper against the simulated apiservers over real HTTPS on
//! loopback: pages equal the ground truth for every emulated version, every
//! failure has its bounded reason, token rotation is followed, and no error
//! ever carries a token. The clock is manual: simulated time moves only when
//! a test says so, so pages and ground truth are read at the same instant.

use crate::support::tempdir;
use tempdir::TempDir;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cutover_auditor::clock::Clock;
use cutover_auditor::credentials::TokenFile;
use cutover_auditor::exposition::Watch;
use cutover_auditor::families::TokenKind;
use cutover_auditor::scrape::{ScrapeError, Scraped, Scraper, Target};
use cutover_auditor::simulator::scenario::Scenario;
use cutover_auditor::simulator::tls::ClusterCa;
use cutover_auditor::simulator::{Options, Simulation};
use cutover_auditor::status::ScrapeErrorKind;
use cutover_auditor::time::Timestamp;

const ORIGIN: Timestamp = Timestamp::from_secs(1_780_000_000);
const TIMEOUT: Duration = Duration::from_secs(5);
const LIMIT: u64 = 64 << 20;

struct Fixture {
    sim: Simulation,
    dir: TempDir,
}

async fn start(scenario: &str) -> Fixture {
    let scenario = Scenario::parse(scenario).expect("valid scenario");
    let clock = Clock::manual(ORIGIN);
    let dir = TempDir::new();
    let sim = Simulation::start(&scenario, clock.clone(), Options::in_dir(dir.0.join("sim")))
        .await
        .expect("simulation starts");
    Fixture { sim, dir }
}

impl Fixture {
    fn target(&self, i: usize) -> Target {
        let addr = self.sim.instance_addresses()[i];
        Target {
            instance: addr.to_string(),
            addr,
            server_name: "kubernetes".to_string(),
            path: "/metrics".to_string(),
            ca_file: self.sim.ca_path().to_path_buf(),
            token: Arc::new(TokenFile::new(self.sim.token_path().to_path_buf())),
        }
    }

    fn scraper(&self, target: Target, timeout: Duration, limit: u64) -> Scraper {
        Scraper::new(target, timeout, limit).expect("scraper")
    }

    async fn scrape(&self, i: usize) -> Result<Scraped, ScrapeError> {
        self.scraper(self.target(i), TIMEOUT, LIMIT)
            .scrape(&Watch::default_families())
            .await
    }

    /// A file in the test directory with `content`.
    fn file(&self, name: &str, content: &str) -> PathBuf {
        let path = self.dir.0.join(name);
        std::fs::write(&path, content).expect("write");
        path
    }

    fn read(&self, path: &Path) -> String {
        std::fs::read_to_string(path)
            .expect("read")
            .trim()
            .to_string()
    }

    /// Advances the clock; returns once the listeners follow the world.
    async fn advance(&self, d: Duration) {
        crate::support::simulation::advance(&self.sim, d).await;
    }
}

/// A scrape of instance `i` must show what the world says at this instant.
fn check_ground_truth(f: &Fixture, i: usize, scraped: &Scraped) {
    let world = f.sim.world();
    let view = world.view(i).expect("view");
    let v = view.version;
    for kind in TokenKind::ALL {
        let truth = view
            .counters
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, n)| *n as f64);
        assert_eq!(scraped.page.family_sum(kind.family()), truth, "v{v} {kind}");
    }
    assert_eq!(
        scraped.page.absent().len(),
        if v.minor >= 29 { 0 } else { 3 },
        "v{v}"
    );
    assert_eq!(
        scraped.page.process_start_time(),
        Some(view.start_time.as_secs_f64()),
        "v{v}"
    );
    assert_eq!(
        scraped.page.kubernetes_version(),
        Some(v.git_version().as_str())
    );
    let header = Timestamp::from_secs(view.start_time.as_millis().div_euclid(1000));
    assert_eq!(
        scraped.header_start_time,
        (v.minor >= 30).then_some(header),
        "v{v}"
    );
    assert!(scraped.gzip, "v{v}: gzip negotiated");
    assert!(scraped.bytes_received > 0);
}

#[tokio::test]
async fn every_version_scrapes_to_the_ground_truth() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/versions.toml"),
    )
    .expect("versions.toml");
    let f = start(&text).await;
    f.advance(Duration::from_secs(900)).await;
    for i in 0..f.sim.instance_addresses().len() {
        let scraped = f.scrape(i).await.expect("scrape");
        check_ground_truth(&f, i, &scraped);
        assert!(
            scraped
                .page
                .family_sum(TokenKind::LegacyAuto.family())
                .is_none_or(|n| n > 0.0),
            "a legacy_auto client ran for 15 minutes"
        );
    }
    // Later, counters have moved and a second scrape follows them.
    f.advance(Duration::from_secs(60)).await;
    let scraped = f.scrape(5).await.expect("scrape");
    check_ground_truth(&f, 5, &scraped);
    f.sim.shutdown().await;
}

const FOUR: &str = r#"
    [[instances]]
    version = "1.35.0"
    count = 4
    [[clients]]
    kind = "legacy"
    interval = "1s"
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
    delay = "2s"
"#;

/// A failed scrape must have `kind` and a detail containing `needle`.
fn check_error(
    case: &str,
    result: Result<Scraped, ScrapeError>,
    kind: ScrapeErrorKind,
    needle: &str,
) -> ScrapeError {
    let err = match result {
        Ok(_) => panic!("{case}: scrape succeeded, want {kind}"),
        Err(err) => err,
    };
    assert_eq!(err.kind, kind, "{case}: {err}");
    assert!(err.detail.contains(needle), "{case}: {err}");
    assert_eq!(err.metric_label(), kind.label());
    err
}

/// A TLS failure must say which instance, which CA file and which server
/// name, and the config keys that set them.
fn check_tls_hint(err: &ScrapeError, instance: &str, ca: &str, server_name: &str) {
    for part in [
        instance,
        ca,
        &format!("{server_name:?}"),
        "check ca_file",
        "server_name",
    ] {
        assert!(err.detail.contains(part), "missing {part:?}: {err}");
    }
}

#[tokio::test]
async fn every_failure_has_its_reason_and_no_token() {
    let f = start(FOUR).await;
    let watch = Watch::default_families();
    let token = f.read(f.sim.token_path());
    let forbidden = f.read(f.sim.forbidden_token_path());
    let wrong = "wrong-token-0123456789abcdef";
    let mut errors = Vec::new();
    let scrape = async |target: Target, timeout: Duration, limit: u64| {
        f.scraper(target, timeout, limit).scrape(&watch).await
    };

    let other_ca = ClusterCa::generate().expect("CA");
    let mut t = f.target(0);
    t.ca_file = f.file("other-ca.crt", other_ca.pem());
    let r = scrape(t, TIMEOUT, LIMIT).await;
    let err = check_error("foreign CA", r, ScrapeErrorKind::Tls, "certificate");
    check_tls_hint(&err, &f.target(0).instance, "other-ca.crt", "kubernetes");
    errors.push(err);

    let mut t = f.target(0);
    t.server_name = "apiserver.example".to_string();
    let r = scrape(t, TIMEOUT, LIMIT).await;
    let err = check_error("wrong name", r, ScrapeErrorKind::Tls, "certificate");
    check_tls_hint(
        &err,
        &f.target(0).instance,
        &f.sim.ca_path().display().to_string(),
        "apiserver.example",
    );
    errors.push(err);

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let mut t = f.target(0);
    t.addr = closed;
    let r = scrape(t, TIMEOUT, LIMIT).await;
    errors.push(check_error(
        "closed port",
        r,
        ScrapeErrorKind::Connect,
        "refused",
    ));

    let mut t = f.target(0);
    t.token = Arc::new(TokenFile::new(f.file("wrong-token", wrong)));
    let r = scrape(t, TIMEOUT, LIMIT).await;
    errors.push(check_error(
        "wrong token",
        r,
        ScrapeErrorKind::Http401,
        "401",
    ));

    // No token, no request: not a 401.
    let mut t = f.target(0);
    t.token = Arc::new(TokenFile::new(f.file("empty-token", "\n")));
    let r = scrape(t, TIMEOUT, LIMIT).await;
    errors.push(check_error(
        "empty token",
        r,
        ScrapeErrorKind::TokenUnreadable,
        "empty",
    ));

    let mut t = f.target(0);
    t.token = Arc::new(TokenFile::new(f.dir.0.join("no-such-token")));
    let r = scrape(t, TIMEOUT, LIMIT).await;
    let err = check_error(
        "missing token",
        r,
        ScrapeErrorKind::TokenUnreadable,
        "cannot read token file",
    );
    assert!(err.detail.contains("no-such-token"), "{err}");
    assert!(err.detail.contains("token_file"), "{err}");
    errors.push(err);

    let mut t = f.target(0);
    t.token = Arc::new(TokenFile::new(f.sim.forbidden_token_path().to_path_buf()));
    let r = scrape(t, TIMEOUT, LIMIT).await;
    errors.push(check_error("forbidden", r, ScrapeErrorKind::Http403, "403"));

    let r = scrape(f.target(0), TIMEOUT, 1000).await;
    errors.push(check_error(
        "Content-Length over the limit",
        r,
        ScrapeErrorKind::BodyTooLarge,
        "Content-Length",
    ));

    f.advance(Duration::from_secs(60)).await;

    let hang_timeout = Duration::from_millis(400);
    let started = Instant::now();
    let r = scrape(f.target(1), hang_timeout, LIMIT).await;
    let took = started.elapsed();
    errors.push(check_error("hang", r, ScrapeErrorKind::Timeout, "400ms"));
    assert!(
        took >= hang_timeout && took < hang_timeout + Duration::from_millis(750),
        "hang ended after {took:?}"
    );

    let r = scrape(f.target(2), TIMEOUT, LIMIT).await;
    errors.push(check_error("500", r, ScrapeErrorKind::HttpOther, "500"));

    // The slow body has no Content-Length: the limit holds while streaming.
    let started = Instant::now();
    let r = scrape(f.target(3), TIMEOUT, 1000).await;
    errors.push(check_error(
        "streamed body over the limit",
        r,
        ScrapeErrorKind::BodyTooLarge,
        "1000",
    ));
    let stopped_after = started.elapsed();

    // A slow body within the timeout is fine; past it, it is a timeout.
    let r = scrape(f.target(3), Duration::from_millis(500), LIMIT).await;
    errors.push(check_error("slow", r, ScrapeErrorKind::Timeout, "500ms"));
    let started = Instant::now();
    let slow = scrape(f.target(3), TIMEOUT, LIMIT)
        .await
        .expect("slow scrape");
    let whole_body = started.elapsed();
    check_ground_truth(&f, 3, &slow);
    // The limited scrape stopped early: well before the whole slow body
    // (spread over 2 s) could have come, measured against that very body.
    assert!(
        stopped_after < whole_body / 2,
        "stopped after {stopped_after:?}, the whole body takes {whole_body:?}"
    );

    for err in &errors {
        let text = format!("{err} {err:?}");
        for secret in [token.as_str(), forbidden.as_str(), wrong] {
            assert!(!text.contains(secret), "a token leaked: {text}");
        }
    }
    assert_eq!(errors.len(), 12);
    f.sim.shutdown().await;
}

#[tokio::test]
async fn token_rotation_is_followed_past_the_grace() {
    let f = start(
        r#"
        token_grace = "30s"
        [[instances]]
        version = "1.30.0"
        [[events]]
        at = "1m"
        action = "rotate_token"
        "#,
    )
    .await;
    let scraper = f.scraper(f.target(0), TIMEOUT, LIMIT);
    let watch = Watch::default_families();
    let old = f.read(f.sim.token_path());
    let old_only = Target {
        token: Arc::new(TokenFile::new(f.file("old-token", &old))),
        ..f.target(0)
    };
    let old_scraper = f.scraper(old_only, TIMEOUT, LIMIT);
    let ok = scraper.scrape(&watch).await.expect("before rotation");
    check_ground_truth(&f, 0, &ok);
    // The simulator rotates at 1m (on its next request) and accepts the old
    // token for 30 s more.
    f.advance(Duration::from_secs(60)).await;
    scraper.scrape(&watch).await.expect("at rotation");
    assert_ne!(f.read(f.sim.token_path()), old, "the simulator rotated");
    old_scraper
        .scrape(&watch)
        .await
        .expect("old token in grace");
    f.advance(Duration::from_secs(31)).await;
    let err = old_scraper
        .scrape(&watch)
        .await
        .expect_err("old token after grace");
    assert_eq!(err.kind, ScrapeErrorKind::Http401, "{err}");
    // The scraper re-read the file, so it keeps working.
    let ok = scraper.scrape(&watch).await.expect("after grace");
    check_ground_truth(&f, 0, &ok);
    f.sim.shutdown().await;
}

#[tokio::test]
async fn a_401_rereads_the_token_file_and_retries_once() {
    let f = start("[[instances]]\nversion = \"1.35.0\"\n").await;
    let good = f.read(f.sim.token_path());
    let stale = "x".repeat(good.len());
    let path = f.file("token", &stale);
    let token = Arc::new(TokenFile::new(path.clone()));
    assert_eq!(token.token().expect("token").expose(), stale);
    // The file now holds the good token but looks unchanged (same inode,
    // length and mtime), so only the 401 can make the scraper look again.
    let mtime = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .expect("mtime");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .expect("open");
    std::io::Write::write_all(&mut &file, good.as_bytes()).expect("write");
    file.set_modified(mtime).expect("mtime");
    assert_eq!(
        token.token().expect("token").expose(),
        stale,
        "still cached"
    );
    let scraper = f.scraper(
        Target {
            token,
            ..f.target(0)
        },
        TIMEOUT,
        LIMIT,
    );
    let ok = scraper
        .scrape(&Watch::default_families())
        .await
        .expect("retried with the re-read token");
    check_ground_truth(&f, 0, &ok);
    f.sim.shutdown().await;
}

#[test]
fn error_kinds_serialize_as_their_metric_label() {
    use cutover_auditor::status::TargetHealth;
    for kind in ScrapeErrorKind::ALL {
        let json = serde_json::to_value(kind).expect("serializes");
        assert_eq!(json, serde_json::json!(kind.label()), "{kind:?}");
        let back: ScrapeErrorKind = serde_json::from_value(json).expect("deserializes");
        assert_eq!(back, kind);
    }
    // What /api/v1/status serves for a target whose token lacks `get`.
    let health = TargetHealth {
        instance: "10.0.0.1:6443".into(),
        last_error: Some(ScrapeErrorKind::Http403),
        ..TargetHealth::default()
    };
    let json = serde_json::to_string(&health).expect("serializes");
    assert!(json.contains(r#""last_error":"http_403""#), "{json}");
    let unknown =
        serde_json::from_str::<ScrapeErrorKind>(r#""http403""#).expect_err("old spelling");
    assert!(unknown.to_string().contains("http_403"), "{unknown}");
}

use crate::support::echo_server;

#[tokio::test]
async fn an_echoing_server_never_gets_a_piece_of_the_token_into_an_error() {
    let dir = TempDir::new();
    let server = echo_server::EchoServer::start(&dir.0).await;
    let token_path = dir.0.join("token");
    echo_server::write_token(&token_path, "initial-token");
    let scraper = |path: &str| {
        Scraper::new(
            Target {
                instance: server.addr.to_string(),
                addr: server.addr,
                server_name: "kubernetes".to_string(),
                path: path.to_string(),
                ca_file: server.ca_file.clone(),
                token: Arc::new(TokenFile::new(token_path.clone())),
            },
            TIMEOUT,
            LIMIT,
        )
        .expect("scraper")
    };
    let (body, header) = (scraper("/echo"), scraper("/header"));
    let watch = Watch::default_families();
    for len in 1..=2000 {
        let token = echo_server::token_of(len);
        echo_server::write_token(&token_path, &token);
        let before = server.requests.load(std::sync::atomic::Ordering::SeqCst);
        for (scraper, case) in [(&body, "error body"), (&header, "Content-Type")] {
            let err = match scraper.scrape(&watch).await {
                Ok(_) => panic!("len {len}, {case}: the scrape succeeded"),
                Err(err) => err,
            };
            if len < cutover_auditor::credentials::MIN_TOKEN_BYTES {
                // Refused when read: nothing was sent.
                assert_eq!(err.kind, ScrapeErrorKind::TokenUnreadable, "{err}");
                continue;
            }
            let want = if case == "Content-Type" {
                vec![ScrapeErrorKind::Decode]
            } else {
                vec![ScrapeErrorKind::HttpOther, ScrapeErrorKind::Http403]
            };
            assert!(want.contains(&err.kind), "len {len}, {case}: {err}");
            assert!(err.detail.contains("<redacted"), "len {len}, {case}: {err}");
            echo_server::assert_no_token(&err.detail, &token, &format!("len {len}, {case}"));
            echo_server::assert_no_token(&err.to_string(), &token, &format!("len {len}"));
        }
        let sent = server.requests.load(std::sync::atomic::Ordering::SeqCst) - before;
        let want = if len < 4 { 0 } else { 2 };
        assert_eq!(sent, want, "len {len}: requests sent");
    }
}

/// A malformed watched line echoing the token: the extractor's error quotes
/// the offending text whole, so the scrape path (redact the whole detail,
/// then shorten it) leaves no piece of a token that a cut in the extractor
/// would have split (it cut quoted text at 60 characters and series at 120).
#[test]
fn page_errors_quote_whole_text_so_a_token_across_any_cut_is_redacted() {
    use cutover_auditor::credentials::Secret;
    use cutover_auditor::exposition::Extractor;
    use cutover_auditor::scrape::MAX_DETAIL_CHARS;

    let family = "serviceaccount_legacy_tokens_total";
    let upper = |len: usize| -> String {
        (0..len)
            .map(|i| char::from(b'A' + ((i * 11 + len) % 26) as u8))
            .collect()
    };
    for len in [4, 5, 7, 8, 9, 16, 40, 64, 200] {
        let token = upper(len);
        let secret = Secret::new(token.clone());
        for pad in 0..130 {
            let pad = "x".repeat(pad);
            let pages = [
                // Quoted text after the value (the 60-character cut).
                format!("{family} 1 {pad}{token}\n"),
                // A label value of a series sampled twice (the 120 cut).
                format!("{family}{{a=\"{pad}{token}\"}} 1\n{family}{{a=\"{pad}{token}\"}} 2\n"),
            ];
            for page in pages {
                let mut x = Extractor::new(Watch::default_families());
                let err = match x.feed(page.as_bytes()).and_then(|()| x.finish()) {
                    Ok(_) => panic!("{page:?} was accepted"),
                    Err(err) => err,
                };
                let detail = secret.redact(&err.to_string()).shorten(MAX_DETAIL_CHARS);
                assert!(
                    !detail.chars().any(|c| c.is_ascii_uppercase()),
                    "len {len}, {page:?}: {detail:?}"
                );
                assert!(detail.contains("<redacted>"), "{detail}");
            }
        }
    }
}
