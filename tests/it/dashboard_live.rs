//! The dashboard against a live Prometheus (Debian's `prometheus`, on a
//! loopback port) scraping a running daemon on the simulator: every panel
//! query, with its variables substituted, returns data.

use std::time::{Duration, Instant};

use crate::support::daemon::{Daemon, config_for, start_world, test_dir};
use crate::support::dashboard_queries::{Substitutions, load_dashboard, panel_queries};
use crate::support::prometheus::Prometheus;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_query_returns_data_from_a_live_prometheus() {
    let dir = test_dir("dashboard-live");
    let (sim, clock, _) = start_world(WORLD, &dir).await;
    let config = config_for(&sim, &dir.join("state.json"), "30s", "10s", "");
    let daemon = Daemon::start(config, clock.clone()).await;
    daemon.wait_evaluated().await;
    let prom = Prometheus::start(&dir, &daemon.addr.to_string()).await;
    let client = reqwest::Client::new();

    // Wait until Prometheus has scraped the daemon for long enough that
    // every rate over the substituted interval has two samples.
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let up = prom
            .query(
                &client,
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
            prom.query(&client, "/api/v1/query", &[("query", q.expr.clone())])
                .await
        } else {
            let params = [
                ("query", q.expr.clone()),
                ("start", (now - 30).to_string()),
                ("end", now.to_string()),
                ("step", "1".to_owned()),
            ];
            prom.query(&client, "/api/v1/query_range", &params).await
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
