//! A real Alertmanager on loopback, without gossip.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A fresh directory for one test's Alertmanagers, with their config.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "cutover-alertmanager-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    std::fs::write(
        dir.join("am.yml"),
        "route:\n  receiver: \"null\"\nreceivers:\n  - name: \"null\"\n",
    )
    .expect("am.yml");
    dir
}

/// A running Alertmanager, killed when dropped so no test path leaks one.
pub struct Alertmanager {
    child: Option<Child>,
    name: String,
    port: u16,
    pub url: String,
    log: PathBuf,
    generation: u32,
}

impl Alertmanager {
    pub fn start(dir: &Path, name: &str, port: u16) -> Alertmanager {
        let mut am = Alertmanager {
            child: None,
            name: name.into(),
            port,
            url: format!("http://127.0.0.1:{port}"),
            log: PathBuf::new(),
            generation: 0,
        };
        am.spawn(dir);
        am
    }

    /// Starts it again on the same port with empty storage: it has
    /// forgotten every alert.
    pub fn restart(&mut self, dir: &Path) {
        self.kill();
        self.generation += 1;
        self.spawn(dir);
    }

    fn spawn(&mut self, dir: &Path) {
        let storage = dir.join(format!("data-{}-{}", self.name, self.generation));
        self.log = dir.join(format!("{}-{}.log", self.name, self.generation));
        let log = std::fs::File::create(&self.log).expect("log file");
        let args = [
            format!("--config.file={}", dir.join("am.yml").display()),
            format!("--storage.path={}", storage.display()),
            format!("--web.listen-address=127.0.0.1:{}", self.port),
            // Empty: no gossip, so parallel tests do not form a cluster.
            "--cluster.listen-address=".to_owned(),
        ];
        let mut last = None;
        for program in ["prometheus-alertmanager", "alertmanager"] {
            match Command::new(program)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log.try_clone().expect("log handle"))
                .spawn()
            {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(e) => last = Some(e),
            }
        }
        panic!(
            "cannot run Alertmanager ({}); install the Debian package `prometheus-alertmanager` \
             (apt-get install prometheus-alertmanager; tests/run-all.sh does it)",
            last.map(|e| e.to_string()).unwrap_or_default()
        );
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ready = client
                .get(format!("{}/-/ready", self.url))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "Alertmanager {} not ready after 10 s; log:\n{}",
                self.name,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The alerts `GET /api/v2/alerts` lists (active ones by default).
    pub async fn alerts(&self) -> Vec<Value> {
        let body = reqwest::Client::new()
            .get(format!("{}/api/v2/alerts", self.url))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .expect("GET /api/v2/alerts")
            .text()
            .await
            .expect("body");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("alerts JSON ({e}): {body}"))
    }

    /// Polls the alerts until `pick` returns something (at most 5 s).
    pub async fn wait_for<T>(&self, what: &str, pick: impl Fn(&[Value]) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let alerts = self.alerts().await;
            if let Some(found) = pick(&alerts) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "Alertmanager {}: still waiting for {what} after 5 s; alerts: {alerts:#?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        self.kill();
    }
}
