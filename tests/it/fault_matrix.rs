//! The fault matrix rows no other test proves at the daemon level
//! (`docs/reliability.md` lists every row and where it is proven): each row
//! is one static target of one daemon, served by a tiny hostile loopback
//! server (or pointing at a broken token file). Next to it, the same daemon
//! scrapes one healthy simulated apiserver, and a control daemon that
//! scrapes only that apiserver turns every cutover `ready`: the faults, and
//! nothing else, keep the matrix daemon's verdicts from `ready`.
//!
//! For each row: the daemon keeps running (the healthy target keeps being
//! scraped, the status answers, the drain succeeds), the reason is visible
//! (the target's `last_error` in the status, a `reason` label of
//! `cutover_scrape_errors_total`), the hostile target is named among the
//! blocking instances of every cutover, and no verdict is ever `ready`.
//! The same daemon pushes its alerts to an Alertmanager that rejects every
//! push (counted in `cutover_alertmanager_errors_total`); then the control
//! daemon restarts beside a cut temporary state file (what SIGKILL during a
//! write leaves). Two more tests: discovery failing from the start, and all
//! instances down longer than the window.

use crate::support::daemon as support;

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cutover_auditor::config::Config;
use cutover_auditor::simulator::tls::{ClusterCa, install_ring_provider};
use cutover_auditor::status::{ScrapeErrorKind, Status};
use cutover_auditor::verdict::{Reason, State};
use support::{Daemon, sample, start_world, test_dir};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// One healthy 1.30 apiserver, no clients: quiet, so every cutover can be
/// `ready` once its window is observed. 10 simulated seconds per real one.
const QUIET_WORLD: &str = r#"
name = "fault-matrix"
speed = 10.0
scraper_counts_as = "valid"
page_kib = 4

[[instances]]
version = "1.30.4"
count = 1
"#;

/// Two-minute windows (12 s real); a scrape timeout of 10 s (1 s real).
const SETTINGS: &str = r#"
[cutovers.legacy-tokens]
window = "2m"
coverage_tolerance = "1m"
[cutovers.legacy-auto-tokens]
window = "2m"
coverage_tolerance = "1m"
[cutovers.token-expiry-extension]
window = "2m"
coverage_tolerance = "1m"
"#;

const CUTOVERS: [&str; 3] = [
    "legacy-tokens",
    "legacy-auto-tokens",
    "token-expiry-extension",
];

/// A token the hostile servers never check.
const TOKEN: &str = "fault-matrix-token-0123456789abcdef";

/// A valid page of the watched families (1.30), without labels.
const PAGE: &str = "\
# HELP serviceaccount_legacy_tokens_total [ALPHA] Cumulative legacy service account tokens used\n\
# TYPE serviceaccount_legacy_tokens_total counter\n\
serviceaccount_legacy_tokens_total 0\n\
# HELP serviceaccount_stale_tokens_total [ALPHA] Cumulative stale projected service account tokens used\n\
# TYPE serviceaccount_stale_tokens_total counter\n\
serviceaccount_stale_tokens_total 0\n\
# HELP serviceaccount_valid_tokens_total [ALPHA] Cumulative valid projected service account tokens used\n\
# TYPE serviceaccount_valid_tokens_total counter\n\
serviceaccount_valid_tokens_total 3\n";

/// What a hostile server does once it has read a request's headers.
#[derive(Clone)]
enum Behaviour {
    /// Never answers (nor closes).
    Hang,
    /// Writes these bytes (a whole HTTP response, or a cut one) and closes.
    Answer(Vec<u8>),
    /// Writes these bytes one at a time, 20 ms apart.
    Drip(Vec<u8>),
}

/// How a row's target is reached.
enum Serve {
    /// No server: the port is closed.
    Closed,
    /// HTTPS with the matrix CA.
    Tls(Behaviour),
    /// Plain HTTP behind an `https://` URL: answers 400 to the handshake.
    Plain,
}

/// The token file a row's target uses.
enum TokenFile {
    Good,
    Empty,
    Missing,
    /// A directory where the file belongs: reading it fails (EISDIR). The
    /// tests run as root, so a mode-000 file would still be readable.
    Directory,
}

struct Row {
    fault: &'static str,
    serve: Serve,
    /// The target trusts another CA than the one that signed the server.
    foreign_ca: bool,
    token: TokenFile,
    expect: ScrapeErrorKind,
}

fn response(status: &str, headers: &[(&str, String)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

fn page_response(body: &str) -> Vec<u8> {
    response(
        "200 OK",
        &[
            (
                "Content-Type",
                "text/plain; version=0.0.4; charset=utf-8".to_owned(),
            ),
            ("Content-Length", body.len().to_string()),
        ],
        body.as_bytes(),
    )
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

fn gzip_response(body: &[u8], length: usize) -> Vec<u8> {
    response(
        "200 OK",
        &[
            (
                "Content-Type",
                "text/plain; version=0.0.4; charset=utf-8".to_owned(),
            ),
            ("Content-Encoding", "gzip".to_owned()),
            ("Content-Length", length.to_string()),
        ],
        body,
    )
}

fn rows() -> Vec<Row> {
    let tls = |b: Behaviour| Serve::Tls(b);
    let row = |fault, serve, expect| Row {
        fault,
        serve,
        foreign_ca: false,
        token: TokenFile::Good,
        expect,
    };
    let good_page = || tls(Behaviour::Answer(page_response(PAGE)));
    let zipped = gzip(PAGE.as_bytes());
    let truncated = zipped[..zipped.len() / 2].to_vec();
    // 4 MiB of comment lines (over the 1 MiB limit) in a few KiB of gzip.
    let bomb = gzip(&b"# padding\n".repeat(400 * 1024));
    let labelled: String = (0..5)
        .map(|i| format!("serviceaccount_legacy_tokens_total{{n=\"{i}\"}} 1\n"))
        .collect();
    let with_line = |line: &str| format!("{PAGE}{line}\n");
    vec![
        row("apiserver refuses", Serve::Closed, ScrapeErrorKind::Connect),
        row(
            "apiserver hangs",
            tls(Behaviour::Hang),
            ScrapeErrorKind::Timeout,
        ),
        row(
            "apiserver answers slowly",
            // 2 KiB at 20 ms a byte: 40 s, far past the 1 s (real) timeout.
            tls(Behaviour::Drip(page_response(&format!(
                "{PAGE}{}",
                "# slow\n".repeat(300)
            )))),
            ScrapeErrorKind::Timeout,
        ),
        row(
            "apiserver answers 401",
            tls(Behaviour::Answer(response(
                "401 Unauthorized",
                &[("Content-Length", "12".to_owned())],
                b"Unauthorized",
            ))),
            ScrapeErrorKind::Http401,
        ),
        row(
            "apiserver redirects",
            tls(Behaviour::Answer(response(
                "302 Found",
                &[
                    ("Location", "https://example.invalid/metrics".to_owned()),
                    ("Content-Length", "0".to_owned()),
                ],
                b"",
            ))),
            ScrapeErrorKind::HttpOther,
        ),
        Row {
            foreign_ca: true,
            ..row("unknown CA", good_page(), ScrapeErrorKind::Tls)
        },
        row("plain HTTP", Serve::Plain, ScrapeErrorKind::Tls),
        row(
            "truncated gzip",
            tls(Behaviour::Answer(gzip_response(
                &truncated,
                truncated.len(),
            ))),
            ScrapeErrorKind::Decode,
        ),
        row(
            "gzip bomb",
            tls(Behaviour::Answer(gzip_response(&bomb, bomb.len()))),
            ScrapeErrorKind::BodyTooLarge,
        ),
        row(
            "body over the limit",
            tls(Behaviour::Answer(response(
                "200 OK",
                &[
                    ("Content-Type", "text/plain; version=0.0.4".to_owned()),
                    ("Content-Length", (2u64 << 20).to_string()),
                ],
                PAGE.as_bytes(),
            ))),
            ScrapeErrorKind::BodyTooLarge,
        ),
        row(
            "malformed watched line",
            tls(Behaviour::Answer(page_response(&with_line(
                "serviceaccount_stale_tokens_total{ 7",
            )))),
            ScrapeErrorKind::Malformed,
        ),
        row(
            "duplicate series",
            tls(Behaviour::Answer(page_response(&with_line(
                "serviceaccount_legacy_tokens_total 0",
            )))),
            ScrapeErrorKind::Malformed,
        ),
        row(
            "NaN value",
            tls(Behaviour::Answer(page_response(&PAGE.replace(
                "serviceaccount_legacy_tokens_total 0",
                "serviceaccount_legacy_tokens_total NaN",
            )))),
            ScrapeErrorKind::Malformed,
        ),
        row(
            "+Inf value",
            tls(Behaviour::Answer(page_response(&PAGE.replace(
                "serviceaccount_stale_tokens_total 0",
                "serviceaccount_stale_tokens_total +Inf",
            )))),
            ScrapeErrorKind::Malformed,
        ),
        row(
            "negative value",
            tls(Behaviour::Answer(page_response(&PAGE.replace(
                "serviceaccount_valid_tokens_total 3",
                "serviceaccount_valid_tokens_total -3",
            )))),
            ScrapeErrorKind::Malformed,
        ),
        row(
            "too many label sets",
            // The cap is 4 series per family (`max_series_per_family`).
            tls(Behaviour::Answer(page_response(&format!(
                "{}{labelled}",
                PAGE.replace("serviceaccount_legacy_tokens_total 0\n", "")
            )))),
            ScrapeErrorKind::TooManySeries,
        ),
        Row {
            token: TokenFile::Missing,
            ..row(
                "token file missing",
                good_page(),
                ScrapeErrorKind::TokenUnreadable,
            )
        },
        Row {
            token: TokenFile::Empty,
            ..row(
                "token file empty",
                good_page(),
                ScrapeErrorKind::TokenUnreadable,
            )
        },
        Row {
            token: TokenFile::Directory,
            ..row(
                "token file unreadable",
                good_page(),
                ScrapeErrorKind::TokenUnreadable,
            )
        },
    ]
}

/// Reads a request's headers (bounded), then behaves.
async fn serve_one<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, behaviour: Behaviour) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.len() < 65536 {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    match behaviour {
        Behaviour::Hang => std::future::pending::<()>().await,
        Behaviour::Answer(bytes) => {
            let _ = s.write_all(&bytes).await;
            let _ = s.shutdown().await;
        }
        Behaviour::Drip(bytes) => {
            for b in bytes {
                if s.write_all(&[b]).await.is_err() || s.flush().await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Starts the row's server; its address.
async fn start_server(serve: &Serve, ca: &ClusterCa) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    match serve {
        Serve::Closed => drop(listener),
        Serve::Plain => {
            tokio::spawn(async move {
                while let Ok((mut s, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        let mut buf = [0u8; 1024];
                        if matches!(s.read(&mut buf).await, Ok(n) if n > 0) {
                            let _ = s
                                .write_all(&response(
                                    "400 Bad Request",
                                    &[("Content-Length", "0".to_owned())],
                                    b"",
                                ))
                                .await;
                        }
                    });
                }
            });
        }
        Serve::Tls(behaviour) => {
            let config = ca
                .server_config(&[IpAddr::V4(Ipv4Addr::LOCALHOST)])
                .expect("server config");
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let behaviour = behaviour.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let acceptor = acceptor.clone();
                    let behaviour = behaviour.clone();
                    tokio::spawn(async move {
                        if let Ok(tls) = acceptor.accept(stream).await {
                            serve_one(tls, behaviour).await;
                        }
                    });
                }
            });
        }
    }
    addr
}

fn target_block(url: &str, ca: &Path, token: &Path) -> String {
    format!(
        "[[targets.static]]\nurl = \"{url}\"\nserver_name = \"kubernetes\"\n\
         ca_file = \"{}\"\ntoken_file = \"{}\"\n",
        ca.display(),
        token.display()
    )
}

fn config(state: &Path, extra: &str, targets: &str) -> Config {
    let text = format!(
        "listen = \"127.0.0.1:0\"\n[scrape]\ninterval = \"15s\"\ntimeout = \"10s\"\n\
         max_body_bytes = 1048576\nmax_series_per_family = 4\n\
         [state]\npath = \"{}\"\nwrite_interval = \"1m\"\n\
         [log]\nformat = \"text\"\nlevel = \"warn\"\n{SETTINGS}{extra}{targets}",
        state.display()
    );
    Config::parse(&text, |_| None).expect("fault matrix config is valid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_keeps_the_daemon_running_names_its_reason_and_never_turns_ready() {
    install_ring_provider();
    let dir = test_dir("fault-matrix");
    let (sim, clock, _) = start_world(QUIET_WORLD, &dir).await;
    let healthy_instance = sim.instance_addresses()[0].to_string();
    let healthy = target_block(
        &format!("https://{healthy_instance}/metrics"),
        sim.ca_path(),
        sim.token_path(),
    );

    let ca = Arc::new(ClusterCa::generate().expect("CA"));
    let ca_file = dir.join("matrix-ca.crt");
    ca.write(&ca_file).expect("write CA");
    let good_token = dir.join("token");
    std::fs::write(&good_token, TOKEN).expect("token");
    let empty_token = dir.join("empty-token");
    std::fs::write(&empty_token, "").expect("empty token");
    let dir_token: PathBuf = dir.join("token-dir");
    std::fs::create_dir_all(&dir_token).expect("token dir");

    let rows = rows();
    let mut targets = healthy.clone();
    let mut instances = Vec::new();
    for row in &rows {
        let addr = start_server(&row.serve, &ca).await;
        let token = match row.token {
            TokenFile::Good => good_token.clone(),
            TokenFile::Empty => empty_token.clone(),
            TokenFile::Missing => dir.join("no-such-token"),
            TokenFile::Directory => dir_token.clone(),
        };
        let trust = if row.foreign_ca {
            sim.ca_path().to_owned()
        } else {
            ca_file.clone()
        };
        targets.push_str(&target_block(
            &format!("https://{addr}/metrics"),
            &trust,
            &token,
        ));
        instances.push(addr.to_string());
    }

    // An Alertmanager that rejects every push with 500.
    let alertmanager = start_rejecting_alertmanager().await;
    let alerting = format!(
        "[alertmanager]\nurls = [\"http://{}\"]\nresend_interval = \"1m\"\ntimeout = \"5s\"\n",
        alertmanager.0
    );

    let control = Daemon::start(
        config(&dir.join("control.json"), "", &healthy),
        clock.clone(),
    )
    .await;
    let matrix = Daemon::start(
        config(&dir.join("matrix.json"), &alerting, &targets),
        clock.clone(),
    )
    .await;

    // The healthy apiserver alone makes every cutover ready...
    for name in CUTOVERS {
        control.wait_state(name, State::Ready).await;
    }
    // ...and by then, with the faults beside it, each row is named.
    let status = matrix
        .wait_status("every row failing with its reason", |s| {
            rows.iter().zip(&instances).all(|(row, instance)| {
                s.targets
                    .iter()
                    .any(|t| &t.instance == instance && t.last_error == Some(row.expect))
            })
        })
        .await;
    check_status(&status, &rows, &instances, &healthy_instance);
    // One more scrape round later, still running and scraping.
    let mut first_success = healthy_success(&status, &healthy_instance);
    let status = matrix
        .wait_status("the healthy target scraped again", |s| {
            healthy_success(s, &healthy_instance) > first_success
        })
        .await;
    check_status(&status, &rows, &instances, &healthy_instance);
    first_success = healthy_success(&status, &healthy_instance);

    let (page, text) = matrix
        .metrics(&["cutover_scrape_errors_total", "cutover_reason"])
        .await;
    for (row, instance) in rows.iter().zip(&instances) {
        let errors = sample(
            &page,
            "cutover_scrape_errors_total",
            &[("apiserver", instance), ("reason", row.expect.label())],
        );
        assert!(
            errors.is_some_and(|n| n >= 1.0),
            "{}: no cutover_scrape_errors_total{{reason=\"{}\"}} for {instance}:\n{text}",
            row.fault,
            row.expect.label()
        );
    }
    for name in CUTOVERS {
        assert_eq!(
            sample(
                &page,
                "cutover_reason",
                &[("cutover", name), ("reason", "target_never_scraped")]
            ),
            Some(1.0),
            "{name}:\n{text}"
        );
    }

    // The blind alert (blind longer than the window) reaches the rejecting
    // Alertmanager: counted as an error, and the daemon carries on.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (page, text) = matrix.metrics(&["cutover_alertmanager_errors_total"]).await;
        let errors = page.family_sum("cutover_alertmanager_errors_total");
        if errors.is_some_and(|n| n >= 1.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no Alertmanager error counted within 30 s ({} pushes rejected):\n{text}",
            alertmanager.1.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(alertmanager.1.load(Ordering::SeqCst) >= 1);
    let status = matrix
        .wait_status("the healthy target scraped after the rejected push", |s| {
            healthy_success(s, &healthy_instance) > first_success
        })
        .await;
    check_status(&status, &rows, &instances, &healthy_instance);

    let ready: Vec<_> = matrix
        .transitions()
        .into_iter()
        .filter(|t| t.3 == "ready")
        .collect();
    assert!(ready.is_empty(), "ready with faulty targets: {ready:?}");

    matrix.stop().await;
    control.stop().await;

    // SIGKILL during a state write leaves the last complete file and a cut
    // temporary file beside it (the rename never happened). The next start
    // resumes from the complete file, evidence intact: every cutover is
    // `ready` again long before a fresh window could be observed.
    let state = dir.join("control.json");
    let complete = std::fs::read(&state).expect("the control daemon wrote its state");
    let tmp = dir.join("control.json.tmp");
    std::fs::write(&tmp, &complete[..complete.len() / 2]).expect("cut temporary file");
    let restarted_at = clock.now();
    let resumed = Daemon::start(config(&state, "", &healthy), clock.clone()).await;
    resumed.wait_evaluated().await;
    assert_eq!(
        resumed.resumed(),
        Some(cutover_auditor::daemon::ResumeOutcome::Resumed)
    );
    for name in CUTOVERS {
        let s = resumed.wait_state(name, State::Ready).await;
        let at = s.evaluated_at.expect("evaluated");
        assert!(
            at < restarted_at + Duration::from_secs(60),
            "{name} ready only at {at}, restarted at {restarted_at}: evidence lost?"
        );
    }
    resumed.stop().await;
    assert!(
        !tmp.exists(),
        "the next write replaced the cut temporary file"
    );
    assert!(
        std::fs::metadata(&state).expect("state").len() > 0,
        "a complete state file"
    );
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two apiservers, both refusing connections from 3m to 9m (longer than
/// the 2m windows plus the 1m tolerance). 60 simulated seconds a second.
const ALL_DOWN_WORLD: &str = r#"
name = "fault-matrix-all-down"
speed = 60.0
scraper_counts_as = "valid"
page_kib = 4

[[instances]]
version = "1.30.4"
count = 2

[[clients]]
kind = "legacy"
interval = "20s"
targets = "all"
until = "30s"

[[events]]
at = "3m"
action = "outage"
instance = 0
mode = "refuse"
for = "6m"
[[events]]
at = "3m"
action = "outage"
instance = 1
mode = "refuse"
for = "6m"
"#;

/// All instances down longer than the window: every cutover turns `blind`
/// (`target_down`) and stays so however long the outage lasts; the legacy
/// uses seen before it are still counted; nothing turns `ready` while down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_instances_down_longer_than_the_window_stay_blind_and_keep_their_evidence() {
    let dir = test_dir("fault-matrix-all-down");
    let (sim, clock, origin) = start_world(ALL_DOWN_WORLD, &dir).await;
    let targets: String = sim
        .instance_addresses()
        .iter()
        .map(|a| {
            target_block(
                &format!("https://{a}/metrics"),
                sim.ca_path(),
                sim.token_path(),
            )
        })
        .collect();
    let daemon = Daemon::start(config(&dir.join("state.json"), "", &targets), clock.clone()).await;
    // Before the outage: the quiet cutovers turn ready (the legacy uses of
    // the first 30 s keep legacy-tokens in use until they leave the window).
    let before = daemon
        .wait_state("token-expiry-extension", State::Ready)
        .await;
    let legacy_before = legacy_total(&before);
    assert!(legacy_before > 0, "the legacy uses were seen: {before:?}");
    let outage = origin + Duration::from_secs(180);
    let late = outage + Duration::from_secs(240);
    let s = daemon
        .wait_status("evaluated 4m into the outage", |s| {
            s.evaluated_at.is_some_and(|at| at >= late)
        })
        .await;
    assert!(s.targets.iter().all(|t| !t.up), "{:?}", s.targets);
    assert!(
        s.targets
            .iter()
            .all(|t| t.last_error == Some(ScrapeErrorKind::Connect)),
        "{:?}",
        s.targets
    );
    for c in &s.cutovers {
        assert_eq!(
            (c.state, c.reason),
            (State::Blind, Reason::TargetDown),
            "{c:?}"
        );
    }
    assert!(
        legacy_total(&s) >= legacy_before,
        "evidence lost: {legacy_before} legacy uses before, {} now",
        legacy_total(&s)
    );
    // No transition to ready once the outage outlasted the tolerance.
    let tolerance_passed = outage + Duration::from_secs(60 + 30);
    let late_ready: Vec<_> = daemon
        .transitions()
        .into_iter()
        .filter(|t| t.3 == "ready" && t.0 >= tolerance_passed)
        .collect();
    assert!(late_ready.is_empty(), "ready while down: {late_ready:?}");
    daemon.stop().await;
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

fn legacy_total(s: &Status) -> u64 {
    s.kinds
        .iter()
        .find(|k| k.kind == cutover_auditor::families::TokenKind::Legacy)
        .map_or(0, |k| k.total)
}

/// A plain HTTP server answering every request with 500; its address and
/// how many requests it has answered.
async fn start_rejecting_alertmanager() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let body = b"rejected".to_vec();
                let answer = response(
                    "500 Internal Server Error",
                    &[("Content-Length", body.len().to_string())],
                    &body,
                );
                serve_one(s, Behaviour::Answer(answer)).await;
            });
        }
    });
    (addr, count)
}

fn healthy_success(s: &Status, healthy: &str) -> cutover_auditor::time::Timestamp {
    s.targets
        .iter()
        .find(|t| t.instance == healthy)
        .and_then(|t| t.last_success)
        .expect("the healthy target has been scraped")
}

fn check_status(s: &Status, rows: &[Row], instances: &[String], healthy: &str) {
    let h = s
        .targets
        .iter()
        .find(|t| t.instance == healthy)
        .expect("healthy target listed");
    assert!(h.up, "the healthy target is up: {h:?}");
    for (row, instance) in rows.iter().zip(instances) {
        let t = s
            .targets
            .iter()
            .find(|t| &t.instance == instance)
            .unwrap_or_else(|| panic!("{}: target {instance} not listed", row.fault));
        assert!(!t.up, "{}: {t:?}", row.fault);
        assert_eq!(t.last_error, Some(row.expect), "{}: {t:?}", row.fault);
        let detail = t.last_error_detail.as_deref().unwrap_or("");
        assert!(!detail.is_empty(), "{}: no detail", row.fault);
        assert!(!detail.contains(TOKEN), "{}: the token leaked", row.fault);
    }
    for c in &s.cutovers {
        assert_ne!(c.state, State::Ready, "{}: {c:?}", c.name);
        assert_eq!(
            (c.state, c.reason),
            (State::Blind, Reason::TargetNeverScraped),
            "{}",
            c.name
        );
        for (row, instance) in rows.iter().zip(instances) {
            assert!(
                c.blocking_instances.contains(instance),
                "{}: {} ({instance}) does not block {}: {:?}",
                row.fault,
                c.name,
                instance,
                c.blocking_instances
            );
        }
    }
}

/// Discovery against a closed port from the start: no instance is ever
/// listed, so every cutover is blind with `no_targets`, in the status and in
/// `cutover_reason`; the daemon keeps retrying and drains cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_failing_from_the_start_keeps_every_cutover_blind_with_no_targets() {
    let dir = test_dir("fault-matrix-discovery");
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let token = dir.join("token");
    std::fs::write(&token, TOKEN).expect("token");
    let ca = ClusterCa::generate().expect("CA");
    let ca_file = dir.join("ca.crt");
    ca.write(&ca_file).expect("write CA");
    let text = format!(
        "listen = \"127.0.0.1:0\"\n[scrape]\ninterval = \"15s\"\ntimeout = \"10s\"\n\
         [targets.kubernetes]\napi_server = \"https://{closed}\"\ntoken_file = \"{}\"\n\
         ca_file = \"{}\"\nrefresh_interval = \"15s\"\n\
         [state]\npath = \"{}\"\n[log]\nformat = \"text\"\nlevel = \"warn\"\n{SETTINGS}",
        token.display(),
        ca_file.display(),
        dir.join("state.json").display()
    );
    let config = Config::parse(&text, |_| None).expect("discovery config is valid");
    let clock = cutover_auditor::clock::Clock::accelerated(
        cutover_auditor::clock::Clock::real().now(),
        10.0,
    );
    let daemon = Daemon::start(config, clock.clone()).await;
    let first = daemon.wait_evaluated().await;
    let first_at = first.evaluated_at.expect("evaluated");
    // Past the window: blind still, never ready.
    let s = daemon
        .wait_status("evaluated past the window", |s| {
            s.evaluated_at
                .is_some_and(|at| at >= first_at + Duration::from_secs(150))
        })
        .await;
    assert!(s.targets.is_empty(), "{:?}", s.targets);
    for c in &s.cutovers {
        assert_eq!(
            (c.state, c.reason),
            (State::Blind, Reason::NoTargets),
            "{c:?}"
        );
    }
    let (page, text) = daemon.metrics(&["cutover_reason"]).await;
    for name in CUTOVERS {
        assert_eq!(
            sample(
                &page,
                "cutover_reason",
                &[("cutover", name), ("reason", "no_targets")]
            ),
            Some(1.0),
            "{name}:\n{text}"
        );
    }
    assert!(daemon.transitions().iter().all(|t| t.3 != "ready"));
    daemon.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
