//! The HTTP side of history: one client per source, and the backfill of a
//! span in bounded chunks.

// Shell (I/O allowed, see clippy.toml): HTTP requests, token files, timers.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use super::error::HistoryError;
use super::feed::{ChunkOutcome, Feeder, UP};
use super::parse::{Series, parse_query_response};
use crate::config::HistoryConfig;
use crate::credentials::{TokenFile, read_ca_bundle};
use crate::families::{PROCESS_START_TIME, RESET_SENTINEL, TokenKind};
use crate::ledger::Ledger;
use crate::time::Timestamp;

/// The first wait before retrying a request, doubled on each retry.
const RETRY_BACKOFF: Duration = Duration::from_millis(500);
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(8);

/// A client of one Prometheus-compatible query API.
pub struct HistoryClient {
    http: reqwest::Client,
    query_url: String,
    config: HistoryConfig,
    token: Option<TokenFile>,
    password: Option<TokenFile>,
}

/// What a backfill read and fed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackfillReport {
    /// The span asked for.
    pub from: Timestamp,
    /// See `from`.
    pub to: Timestamp,
    /// Chunks queried.
    pub chunks: u32,
    /// HTTP queries that succeeded.
    pub queries: u32,
    /// What the samples gave.
    pub fed: ChunkOutcome,
}

/// Reads the raw samples of every watched family (and `up`,
/// `process_start_time_seconds`) over `(from, to]` from the query API of
/// `cfg`, one chunk of `cfg.chunk` at a time, and feeds them to `ledger`
/// exactly as scrapes would be fed (see the `feed` module): the same reset
/// detection, holes where an instance's samples have a gap longer than
/// `cfg.max_gap_factor` times its own spacing, instances that left.
///
/// Give it a fresh ledger (`Ledger::new(retention)`) for a one-shot verdict
/// (`check`): then `verdict::assess(spec, &ledger, to)` judges exactly as the
/// daemon would at `to`. On an error the ledger holds the chunks read
/// before it; the error's [`HistoryError::kind`] is the bounded reason to
/// show, and a failed backfill is never evidence of "no uses".
pub async fn backfill_ledger(
    cfg: &HistoryConfig,
    ledger: &mut Ledger,
    from: Timestamp,
    to: Timestamp,
) -> Result<BackfillReport, HistoryError> {
    let client = HistoryClient::new(cfg)?;
    let mut feeder = Feeder::new(&cfg.instance_label, cfg.max_gap_factor);
    backfill_with(&client, &mut feeder, ledger, from, to).await
}

/// [`backfill_ledger`] with a client and a feeder kept between calls (the
/// daemon polls with them): samples the feeder already consumed are skipped.
pub async fn backfill_with(
    client: &HistoryClient,
    feeder: &mut Feeder,
    ledger: &mut Ledger,
    from: Timestamp,
    to: Timestamp,
) -> Result<BackfillReport, HistoryError> {
    let mut report = BackfillReport {
        from,
        to,
        ..BackfillReport::default()
    };
    let chunk_ms = i64::try_from(client.config.chunk.as_millis()).unwrap_or(i64::MAX);
    let mut start = from;
    while start < to {
        let end = Timestamp::from_millis(start.as_millis().saturating_add(chunk_ms)).min(to);
        let range =
            Duration::from_millis(u64::try_from(end.as_millis() - start.as_millis()).unwrap_or(0));
        let families = fetch_chunk(client, end, range).await?;
        report.queries += families.len() as u32;
        report.fed.add(feeder.feed_chunk(ledger, &families, end));
        report.chunks += 1;
        start = end;
    }
    Ok(report)
}

/// The raw samples over `(at - range, at]` of every family the feeder
/// reads, one query per family, paired with the family's name: the input of
/// [`Feeder::feed_chunk`].
pub async fn fetch_chunk(
    client: &HistoryClient,
    at: Timestamp,
    range: Duration,
) -> Result<Vec<(&'static str, Vec<Series>)>, HistoryError> {
    let mut families = Vec::new();
    for family in queried_families() {
        families.push((family, client.range(family, at, range).await?));
    }
    Ok(families)
}

/// `up`, the start time, the token counters and the reset sentinel.
fn queried_families() -> Vec<&'static str> {
    let mut families = vec![UP, PROCESS_START_TIME];
    families.extend(TokenKind::ALL.iter().map(|k| k.family()));
    families.push(RESET_SENTINEL);
    families
}

impl HistoryClient {
    /// A client for `config`: its CA file is read now; token and password
    /// files are read on each request (and re-read when they change).
    pub fn new(config: &HistoryConfig) -> Result<HistoryClient, HistoryError> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .no_proxy()
            // A redirect must not carry the credentials elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .user_agent(concat!("cutover-auditor/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &config.ca_file {
            let certs = read_ca_bundle(ca)
                .map_err(|e| HistoryError::unreachable(format!("history.ca_file: {e}")))?;
            builder = builder.tls_built_in_root_certs(false);
            for der in certs {
                let cert = reqwest::Certificate::from_der(&der).map_err(|e| {
                    HistoryError::unreachable(format!(
                        "history.ca_file {}: certificate not accepted: {e}",
                        ca.display()
                    ))
                })?;
                builder = builder.add_root_certificate(cert);
            }
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &config.headers {
            // Validated by the config; checked again rather than trusted.
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                HistoryError::unreachable(format!("history.headers.{name}: not a header name"))
            })?;
            let value = HeaderValue::from_str(value).map_err(|_| {
                HistoryError::unreachable(format!("history.headers.{name}: not a header value"))
            })?;
            headers.insert(name, value);
        }
        let http = builder
            .default_headers(headers)
            .build()
            .map_err(|e| HistoryError::unreachable(format!("cannot build the HTTP client: {e}")))?;
        Ok(HistoryClient {
            http,
            query_url: format!("{}/api/v1/query", config.url.as_str().trim_end_matches('/')),
            config: config.clone(),
            token: config.bearer_token_file.clone().map(TokenFile::new),
            password: config
                .basic_auth
                .as_ref()
                .map(|a| TokenFile::new(a.password_file.clone())),
        })
    }

    /// The raw samples of `family` over `(at - range, at]`, as a range
    /// selector at `at`: `family{selector}[range]`.
    pub async fn range(
        &self,
        family: &str,
        at: Timestamp,
        range: Duration,
    ) -> Result<Vec<Series>, HistoryError> {
        let matchers = if self.config.selector.is_empty() {
            format!("__name__={family:?}")
        } else {
            format!("__name__={family:?},{}", self.config.selector)
        };
        let query = format!("{{{matchers}}}[{}ms]", range.as_millis().max(1));
        let time = format!("{:.3}", at.as_secs_f64());
        let mut backoff = RETRY_BACKOFF;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let retry_after_401 = attempt > 1;
            match self.once(&query, &time, retry_after_401).await {
                Ok(body) => return parse_query_response(&body),
                Err((err, retryable)) if retryable && attempt <= self.config.retries => {
                    tracing::debug!(error = %err, attempt, "history query failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RETRY_BACKOFF_MAX);
                }
                Err((err, _)) => return Err(err),
            }
        }
    }

    /// One request; the error says whether a retry may help.
    async fn once(
        &self,
        query: &str,
        time: &str,
        reload: bool,
    ) -> Result<Vec<u8>, (HistoryError, bool)> {
        let mut request = self
            .http
            .get(&self.query_url)
            .query(&[("query", query), ("time", time)]);
        if let Some(file) = &self.token {
            let token = if reload { file.reload() } else { file.token() }.map_err(|e| {
                (
                    HistoryError::unreachable(format!("history.bearer_token_file: {e}")),
                    false,
                )
            })?;
            let mut value =
                HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                    (
                        HistoryError::unreachable(
                            "history.bearer_token_file: the token cannot be sent as an HTTP header",
                        ),
                        false,
                    )
                })?;
            value.set_sensitive(true);
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        if let (Some(auth), Some(file)) = (&self.config.basic_auth, &self.password) {
            let password = file.token().map_err(|e| {
                (
                    HistoryError::unreachable(format!("history.basic_auth_password_file: {e}")),
                    false,
                )
            })?;
            request = request.basic_auth(&auth.username, Some(password.expose()));
        }
        let url = self.config.url.as_str();
        let mut response = request.send().await.map_err(|e| {
            let what = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "connection failed"
            } else {
                "request failed"
            };
            (
                HistoryError::unreachable(format!("{url}: {what} ({})", error_chain(&e))),
                true,
            )
        })?;
        let status = response.status();
        let limit = self.config.max_response_bytes;
        if response.content_length().is_some_and(|n| n > limit) {
            return Err((
                HistoryError::incomplete(format!(
                    "{url}: the answer is larger than history.max_response_bytes ({limit}); use a shorter history.chunk"
                )),
                false,
            ));
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(bytes)) => {
                    if body.len() as u64 + bytes.len() as u64 > limit {
                        return Err((
                            HistoryError::incomplete(format!(
                                "{url}: the answer is larger than history.max_response_bytes ({limit}); use a shorter history.chunk"
                            )),
                            false,
                        ));
                    }
                    body.extend_from_slice(&bytes);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err((
                        HistoryError::incomplete(format!(
                            "{url}: the answer was cut after {} bytes ({})",
                            body.len(),
                            error_chain(&e)
                        )),
                        true,
                    ));
                }
            }
        }
        if status.is_success() {
            return Ok(body);
        }
        // Prometheus answers query errors with a JSON body and 400/422/503.
        let detail = match parse_query_response(&body) {
            Err(HistoryError::Rejected { detail }) if detail.starts_with("the query failed") => {
                detail
            }
            _ => "no Prometheus error in the body".to_owned(),
        };
        let retryable = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS;
        let err = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                HistoryError::rejected(format!("{url} refused the credentials (HTTP {status})"))
            }
            _ if retryable => {
                HistoryError::unreachable(format!("{url} answered HTTP {status}: {detail}"))
            }
            _ => HistoryError::rejected(format!("{url} answered HTTP {status}: {detail}")),
        };
        Err((
            err,
            retryable || status == StatusCode::UNAUTHORIZED && self.token.is_some(),
        ))
    }
}

/// An error and its sources, joined by ": ".
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}
