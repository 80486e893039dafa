//! The shell: [`Pusher`] posts the desired alerts to every configured
//! Alertmanager replica, one delivery task each, with retries and backoff.

// Shell (I/O allowed, see clippy.toml): HTTP to Alertmanager, the clock and timers.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::desired::{Alert, FirstSeen, desired};
use crate::clock::Clock;
use crate::config::AlertmanagerConfig;
use crate::gofmt::rfc3339;
use crate::metrics::Metrics;
use crate::status::Status;
use crate::time::Timestamp;

/// Attempts per push to one Alertmanager before the push counts as failed.
pub const PUSH_ATTEMPTS: u32 = 3;

/// Real-time wait after the first failed attempt; doubled after each further one.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// Why a [`Pusher`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AlertingError {
    /// `[alertmanager] urls` is empty.
    #[error("alertmanager.urls lists no Alertmanager")]
    NoUrls,
    /// The HTTP client could not be built.
    #[error("cannot build the Alertmanager HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

impl AlertingError {
    /// A bounded label for the error.
    pub fn kind(&self) -> &'static str {
        match self {
            AlertingError::NoUrls => "no_urls",
            AlertingError::Client(_) => "client",
        }
    }
}

/// Pushes the desired alerts to every configured Alertmanager replica.
pub struct Pusher {
    client: reqwest::Client,
    endpoints: Vec<Endpoint>,
    resend_interval: Duration,
    clock: Clock,
    metrics: Arc<Metrics>,
}

impl Pusher {
    /// Checks the URLs (plain `http://`, see the module documentation) and
    /// builds the HTTP client; `config.timeout` bounds each attempt.
    pub fn new(
        config: &AlertmanagerConfig,
        clock: Clock,
        metrics: Arc<Metrics>,
    ) -> Result<Pusher, AlertingError> {
        if config.urls.is_empty() {
            return Err(AlertingError::NoUrls);
        }
        let endpoints = config.urls.iter().map(Endpoint::new).collect();
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent(concat!("cutover-auditor/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(AlertingError::Client)?;
        Ok(Pusher {
            client,
            endpoints,
            resend_interval: config.resend_interval,
            clock,
            metrics,
        })
    }

    /// Runs until dropped/aborted, or until the status sender is dropped: on
    /// every status change and every `resend_interval` (simulated, via the
    /// clock) it POSTs the firing alerts to `{url}/api/v2/alerts` of every
    /// configured Alertmanager, with `startsAt` when the alert began firing
    /// (kept stable) and `endsAt` three re-send intervals ahead, so an
    /// Alertmanager that stops hearing from the daemon resolves the alerts by
    /// itself. An alert that stops firing is sent with `endsAt` = now, and
    /// again with every push for three re-send intervals so a lost push does
    /// not leave it firing until it expires. Each Alertmanager gets its own
    /// task (aborted with this future) that retries a few times with backoff;
    /// a push that still fails is logged (at most once a minute per
    /// Alertmanager) and counted in `cutover_alertmanager_errors_total`, and
    /// the next status or re-send carries the current alerts anyway.
    pub async fn run(self, mut status: watch::Receiver<Status>) {
        let mut workers = JoinSet::new();
        let mut outboxes = Vec::with_capacity(self.endpoints.len());
        for endpoint in &self.endpoints {
            let (tx, rx) = watch::channel(bytes::Bytes::new());
            workers.spawn(deliver(
                self.client.clone(),
                endpoint.clone(),
                rx,
                Arc::clone(&self.metrics),
            ));
            outboxes.push(tx);
        }

        let wall = Clock::real();
        // Alertmanager keeps an alert until its endsAt: three intervals
        // survive two lost pushes.
        let lifetime = self.clock.to_real(self.resend_interval * 3);
        let mut book = Book::default();
        let mut seen = FirstSeen::new();
        let mut next_resend = self.clock.now();
        loop {
            let current = status.borrow_and_update().clone();
            let now = self.clock.now();
            seen.observe(&current, now);
            let changed = book.update(desired(&current, now, &seen), wall.now(), lifetime);
            if changed || now >= next_resend {
                let batch = book.batch(wall.now(), lifetime);
                if !batch.is_empty() {
                    match serde_json::to_vec(&batch) {
                        Ok(body) => {
                            let body = bytes::Bytes::from(body);
                            for outbox in &outboxes {
                                outbox.send_replace(body.clone());
                            }
                        }
                        // Strings and maps always serialize; kept as a log
                        // line rather than a panic all the same.
                        Err(e) => tracing::error!(error = %e, "cannot encode alerts"),
                    }
                }
                next_resend = now + self.resend_interval;
            }
            let wait = next_resend.since(self.clock.now());
            tokio::select! {
                changed = status.changed() => {
                    if changed.is_err() {
                        // The daemon is shutting down. Firing alerts are not
                        // resolved: a stopped auditor has not seen them clear,
                        // and their endsAt expires them soon enough.
                        break;
                    }
                }
                () = self.clock.sleep(wait) => {}
            }
        }
        drop(outboxes);
        while workers.join_next().await.is_some() {}
    }
}

/// One alert in the JSON body of `POST /api/v2/alerts`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
struct Postable {
    #[serde(flatten)]
    alert: Alert,
    starts_at: String,
    ends_at: String,
}

/// What the pusher has told Alertmanager: firing alerts with the wall time
/// they began, and recently resolved ones with the wall time they ended.
#[derive(Default)]
struct Book {
    firing: BTreeMap<BTreeMap<String, String>, (Alert, Timestamp)>,
    resolved: BTreeMap<BTreeMap<String, String>, (Alert, Timestamp, Timestamp)>,
}

impl Book {
    /// Takes the alerts that should fire at wall time `wall`; true when the
    /// set or any annotation changed, so a push is due now.
    fn update(&mut self, want: Vec<Alert>, wall: Timestamp, lifetime: Duration) -> bool {
        let mut changed = false;
        let mut firing = BTreeMap::new();
        for alert in want {
            let key = alert.labels.clone();
            let starts = match self.firing.remove(&key) {
                Some((old, starts)) => {
                    changed |= old.annotations != alert.annotations;
                    starts
                }
                None => {
                    changed = true;
                    self.resolved.remove(&key);
                    wall
                }
            };
            firing.insert(key, (alert, starts));
        }
        for (key, (alert, starts)) in std::mem::take(&mut self.firing) {
            changed = true;
            self.resolved.insert(key, (alert, starts, wall));
        }
        self.firing = firing;
        self.resolved
            .retain(|_, (_, _, ended)| wall.since(*ended) < lifetime);
        changed
    }

    fn batch(&self, wall: Timestamp, lifetime: Duration) -> Vec<Postable> {
        let ends = wall + lifetime;
        let firing = self.firing.values().map(|(alert, starts)| Postable {
            alert: alert.clone(),
            starts_at: rfc3339(*starts),
            ends_at: rfc3339(ends),
        });
        let resolved = self
            .resolved
            .values()
            .map(|(alert, starts, ended)| Postable {
                alert: alert.clone(),
                starts_at: rfc3339(*starts),
                ends_at: rfc3339(*ended),
            });
        firing.chain(resolved).collect()
    }
}

/// One Alertmanager replica.
#[derive(Clone, Debug)]
struct Endpoint {
    /// The base URL as configured, for logs (credentials are not allowed in it).
    base: String,
    alerts: reqwest::Url,
}

impl Endpoint {
    /// The endpoint of a base URL the configuration validated
    /// ([`crate::config::parse_url`]: http, a host, no credentials).
    fn new(base: &reqwest::Url) -> Endpoint {
        let path = format!("{}/api/v2/alerts", base.path().trim_end_matches('/'));
        let mut alerts = base.clone();
        alerts.set_path(&path);
        Endpoint {
            base: base.as_str().trim_end_matches('/').to_owned(),
            alerts,
        }
    }
}

/// Why one attempt to push failed: a bounded set, used in logs.
#[derive(Debug)]
enum PushError {
    Connect,
    Timeout,
    Status(reqwest::StatusCode),
    Other(String),
}

impl PushError {
    fn from_reqwest(e: reqwest::Error) -> PushError {
        if e.is_timeout() {
            PushError::Timeout
        } else if e.is_connect() {
            PushError::Connect
        } else {
            // Without the URL: it is in the log line already.
            PushError::Other(e.without_url().to_string())
        }
    }

    /// Client errors will not go away by retrying the same body.
    fn is_permanent(&self) -> bool {
        matches!(self, PushError::Status(s) if s.is_client_error() && s.as_u16() != 429)
    }

    fn kind(&self) -> &'static str {
        match self {
            PushError::Connect => "connect",
            PushError::Timeout => "timeout",
            PushError::Status(s) if s.is_client_error() => "http_4xx",
            PushError::Status(_) => "http_5xx",
            PushError::Other(_) => "other",
        }
    }
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PushError::Connect => f.write_str("connection failed"),
            PushError::Timeout => f.write_str("timed out"),
            PushError::Status(s) => write!(f, "HTTP {s}"),
            PushError::Other(e) => f.write_str(e),
        }
    }
}

/// Sends the latest batch to one Alertmanager whenever it changes, until the
/// pusher drops the sending side.
async fn deliver(
    client: reqwest::Client,
    endpoint: Endpoint,
    mut batches: watch::Receiver<bytes::Bytes>,
    metrics: Arc<Metrics>,
) {
    let mut log = FailureLog::default();
    while batches.changed().await.is_ok() {
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 1;
        let outcome = loop {
            // A batch that arrived during the backoff supersedes this one.
            let batch = batches.borrow_and_update().clone();
            match post(&client, &endpoint, batch).await {
                Ok(()) => break Ok(()),
                Err(e) if e.is_permanent() || attempt >= PUSH_ATTEMPTS => break Err(e),
                Err(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
            }
        };
        match outcome {
            Ok(()) => log.succeeded(&endpoint),
            Err(e) => {
                metrics.alertmanager_error();
                log.failed(&endpoint, &e);
            }
        }
    }
}

async fn post(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    body: bytes::Bytes,
) -> Result<(), PushError> {
    let response = client
        .post(endpoint.alerts.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(PushError::from_reqwest)?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(PushError::Status(status))
    }
}

/// Logs push failures at most once a minute per Alertmanager, with how many
/// were left out, and the recovery once.
#[derive(Default)]
struct FailureLog {
    last_logged: Option<Instant>,
    suppressed: u64,
    failing: bool,
}

const LOG_EVERY: Duration = Duration::from_secs(60);

impl FailureLog {
    fn failed(&mut self, endpoint: &Endpoint, error: &PushError) {
        self.failing = true;
        if self.last_logged.is_some_and(|t| t.elapsed() < LOG_EVERY) {
            self.suppressed += 1;
            return;
        }
        tracing::warn!(
            alertmanager = %endpoint.base,
            error = %error,
            kind = error.kind(),
            attempts = PUSH_ATTEMPTS,
            suppressed = self.suppressed,
            "cannot push alerts to Alertmanager; retrying at the next status change or re-send"
        );
        self.last_logged = Some(Instant::now());
        self.suppressed = 0;
    }

    fn succeeded(&mut self, endpoint: &Endpoint) {
        if self.failing {
            tracing::info!(alertmanager = %endpoint.base, "pushing alerts to Alertmanager again");
        }
        *self = FailureLog::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::families::TokenKind;
    use crate::status::KindUses;

    const M: Duration = Duration::from_secs(60);

    fn ts(secs: i64) -> Timestamp {
        Timestamp::from_secs(secs)
    }

    /// The alerts of a status where invalidated legacy tokens were presented.
    fn invalid_alerts(five_minutes: u64, hour: u64) -> Vec<Alert> {
        let status = Status {
            kinds: vec![KindUses {
                kind: TokenKind::InvalidLegacyAuto,
                total: 100,
                increases: vec![("5m".into(), five_minutes), ("1h".into(), hour)],
            }],
            ..Status::default()
        };
        desired(&status, ts(0), &FirstSeen::new())
    }

    #[test]
    fn book_keeps_starts_stable_and_resends_resolutions_for_a_while() {
        let lifetime = 3 * M;
        let a = invalid_alerts(1, 1);
        let mut book = Book::default();
        assert!(book.update(a.clone(), ts(100), lifetime), "new alert");
        assert!(
            !book.update(a.clone(), ts(130), lifetime),
            "nothing changed"
        );
        let batch = book.batch(ts(130), lifetime);
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].starts_at, "1970-01-01T00:01:40.000Z");
        assert_eq!(batch[0].ends_at, "1970-01-01T00:05:10.000Z");

        let b = invalid_alerts(2, 2);
        assert!(book.update(b, ts(160), lifetime), "annotations changed");
        assert_eq!(
            book.batch(ts(160), lifetime)[0].starts_at,
            "1970-01-01T00:01:40.000Z"
        );

        assert!(book.update(Vec::new(), ts(200), lifetime), "resolved");
        let batch = book.batch(ts(230), lifetime);
        assert_eq!(batch.len(), 1);
        assert_eq!(batch[0].ends_at, "1970-01-01T00:03:20.000Z");
        book.update(Vec::new(), ts(379), lifetime);
        assert_eq!(book.batch(ts(379), lifetime).len(), 1, "still re-sent");
        book.update(Vec::new(), ts(380), lifetime);
        assert!(book.batch(ts(380), lifetime).is_empty(), "retention over");

        // Firing again starts afresh.
        book.update(a, ts(400), lifetime);
        assert_eq!(
            book.batch(ts(400), lifetime)[0].starts_at,
            "1970-01-01T00:06:40.000Z"
        );
    }

    #[test]
    fn batch_is_the_alertmanager_v2_shape() {
        let mut book = Book::default();
        book.update(invalid_alerts(1, 1), ts(0), M);
        let json = serde_json::to_value(book.batch(ts(0), M)).expect("json");
        let alert = &json[0];
        assert_eq!(
            alert["labels"]["alertname"],
            "InvalidatedLegacyTokensPresented"
        );
        assert_eq!(alert["startsAt"], "1970-01-01T00:00:00.000Z");
        assert_eq!(alert["endsAt"], "1970-01-01T00:01:00.000Z");
        assert!(alert["annotations"]["description"].is_string());
    }

    #[test]
    fn pusher_takes_plain_http_base_urls_only() {
        let metrics = Arc::new(Metrics::new("test").expect("metrics"));
        let build = |urls: &[&str]| {
            let config = AlertmanagerConfig {
                urls: urls.iter().map(|u| u.parse().expect("a URL")).collect(),
                resend_interval: M,
                timeout: Duration::from_secs(10),
            };
            Pusher::new(&config, Clock::real(), Arc::clone(&metrics))
        };
        let pusher = build(&["http://am-0:9093", "http://am.example/prefix/"]).expect("valid");
        let urls: Vec<&str> = pusher.endpoints.iter().map(|e| e.alerts.as_str()).collect();
        assert_eq!(
            urls,
            [
                "http://am-0:9093/api/v2/alerts",
                "http://am.example/prefix/api/v2/alerts"
            ]
        );
        let kinds = |urls: &[&str]| build(urls).err().map(|e| e.kind());
        assert_eq!(kinds(&[]), Some("no_urls"));
        // What a base URL may be is checked once, by the configuration.
        for bad in [
            "https://am:9093",
            "http://u:p@am:9093",
            "am:9093",
            "http://am:9093/?x=1",
        ] {
            assert!(crate::config::parse_url(bad, &["http"]).is_err(), "{bad}");
        }
    }
}
