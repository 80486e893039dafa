//! The dashboard against a live Prometheus (Debian's `prometheus`, on a
//! loopback port) scraping a running daemon on the simulator: every panel
//! query, with its variables substituted, returns data.

use crate::support::daemon as support;
use crate::support::dashboard_queries;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dashboard_queries::{Substitutions, load_dashboard, panel_queries};
use serde_json::Value;
use support::{Daemon, config_for, free_port, start_world, test_dir};

const WORLD: &str = r#"
name = "dashboard-live"
speed = 30.0
page_kib = 8
[[instances]]
version = "1.29.5"
[[instances]]
version = "1.35.0"
[[clients]]
kind = "legacy_auto"
interval = "5s"
targets = "round_robin"
[[clients]]
kind = "stale"
interval = "5s"
targets = "all"
[[clients]]
kind = "valid"
interval = "5s"
targets = "all"
[[events]]
at = "2m"
action = "restart"
instance = 0
"#;

/// Kills Prometheus when the test ends, passed or not.
struct Prometheus {
    child: Child,
    url: String,
    log: std::path::PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_prometheus(dir: &Path, target: &str) -> Prometheus {
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: cutover-auditor\n    honor_labels: true\n    static_configs:\n      - targets: [\"{target}\"]\n"
        ),
    )
    .expect("prometheus.yml");
    let port = free_port();
    let log = dir.join("prometheus.log");
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run prometheus ({e}); install the Debian package `prometheus` (tests/run-all.sh does)"));
    Prometheus {
        child,
        url: format!("http://127.0.0.1:{port}"),
        log,
    }
}

async fn query(
    client: &reqwest::Client,
    prom: &Prometheus,
    path: &str,
    params: &[(&str, String)],
) -> Value {
    let body = client
        .get(format!("{}{path}", prom.url))
        .query(params)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("Prometheus answers")
        .text()
        .await
        .expect("body");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("Prometheus JSON ({e}): {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_query_returns_data_from_a_live_prometheus() {
    let dir = test_dir("dashboard-live");
    let (sim, clock, _) = start_world(WORLD, &dir).await;
    let config = config_for(&sim, &dir.join("state.json"), "30s", "10s", "");
    let daemon = Daemon::start(config, clock.clone()).await;
    daemon.wait_evaluated().await;
    let prom = start_prometheus(&dir, &daemon.addr.to_string());
    let client = reqwest::Client::new();

    let deadline = Instant::now() + Duration::from_secs(20);
    while !client
        .get(format!("{}/-/ready", prom.url))
        .timeout(Duration::from_secs(1))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(
            Instant::now() < deadline,
            "Prometheus not ready in 20 s; log:\n{}",
            std::fs::read_to_string(&prom.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Wait until Prometheus has scraped the daemon for long enough that
    // every rate over the substituted interval has two samples.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let up = query(
            &client,
            &prom,
            "/api/v1/query",
            &[(
                "query",
                "count_over_time(up{job=\"cutover-auditor\"}[1m]) >= 12".into(),
            )],
        )
        .await;
        if up["data"]["result"]
            .as_array()
            .is_some_and(|r| !r.is_empty())
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus did not scrape the daemon; log:\n{}",
            std::fs::read_to_string(&prom.log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let subs = Substitutions {
        rate_interval: "10s".into(),
        interval: "1s".into(),
        range: "1m".into(),
        ..Substitutions::default()
    };
    let queries = panel_queries(&load_dashboard(), &subs).expect("panel queries substitute");
    assert!(queries.len() >= 15, "{} queries", queries.len());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let mut empty = Vec::new();
    for q in &queries {
        let answer = if q.instant {
            query(
                &client,
                &prom,
                "/api/v1/query",
                &[("query", q.expr.clone())],
            )
            .await
        } else {
            let params = [
                ("query", q.expr.clone()),
                ("start", (now - 30).to_string()),
                ("end", now.to_string()),
                ("step", "1".to_owned()),
            ];
            query(&client, &prom, "/api/v1/query_range", &params).await
        };
        assert_eq!(
            answer["status"], "success",
            "{:?} {}: {answer}",
            q.source, q.expr
        );
        if answer["data"]["result"]
            .as_array()
            .is_none_or(|r| r.is_empty())
        {
            empty.push(format!("{:?} {}: {}", q.source, q.ref_id, q.expr));
        }
    }
    assert!(
        empty.is_empty(),
        "queries without data:\n{}",
        empty.join("\n")
    );
    daemon.stop().await;
    sim.shutdown().await;
}
