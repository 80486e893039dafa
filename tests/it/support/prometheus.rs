//! A real Prometheus on loopback, scraping one target.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::process::free_port;

/// A running Prometheus, killed when dropped so no test path leaks one.
pub struct Prometheus {
    child: Child,
    pub url: String,
    pub log: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus scraping `target` every second and waits (bounded)
    /// until it is ready. Its port goes on its command line, so another
    /// process can take it between the pick and the bind: then Prometheus
    /// exits saying so, and it starts again on another port.
    pub async fn start(dir: &Path, target: &str) -> Prometheus {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: cutover-auditor\n    honor_labels: true\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .expect("prometheus.yml");
        let client = reqwest::Client::new();
        for attempt in 0..5 {
            let port = free_port();
            let log = dir.join(format!("prometheus-{attempt}.log"));
            let child = Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", dir.join(format!("tsdb-{attempt}")).display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log"))
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run prometheus ({e}); install the Debian package `prometheus` (tests/run-all.sh does)"));
            let mut prom = Prometheus {
                child,
                url: format!("http://127.0.0.1:{port}"),
                log,
            };
            if prom.wait_ready(&client).await {
                return prom;
            }
        }
        panic!("Prometheus found no free port in 5 attempts");
    }

    /// Waits (bounded: 20 s) until Prometheus is ready; false if it exited
    /// because its port was taken.
    async fn wait_ready(&mut self, client: &reqwest::Client) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = client
                .get(format!("{}/-/ready", self.url))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return true;
            }
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            if self.child.try_wait().ok().flatten().is_some() {
                assert!(
                    log.contains("address already in use"),
                    "Prometheus exited; log:\n{log}"
                );
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "Prometheus not ready in 20 s; log:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A GET on the HTTP API, as JSON.
    pub async fn query(
        &self,
        client: &reqwest::Client,
        path: &str,
        params: &[(&str, String)],
    ) -> Value {
        let body = client
            .get(format!("{}{path}", self.url))
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
}
