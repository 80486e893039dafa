//! The admin HTTP server: `/metrics`, `/healthz`, `/readyz`,
//! `/api/v1/status` and the status page at `/`.
//!
//! Plain HTTP/1.1: it is scraped from inside the cluster, and it serves only
//! what `/metrics` already tells anyone who can reach it. It is bounded: no
//! request body is ever read, headers must arrive within
//! [`HEADER_READ_TIMEOUT`] (which also closes idle keep-alive connections),
//! at most [`MAX_CONNECTIONS`] are served at once, and a shutdown waits at
//! most [`DRAIN_TIMEOUT`] for in-flight requests.
//!
//! The port is reachable by anyone who can reach the pod, and the kubelet's
//! probes must get through whatever else connects. So when every slot is
//! taken, a new client is not left in the backlog: the connection that has
//! waited longest for a request's headers (a slow or idle client, never one
//! being answered) is closed to make room, once it has waited at least
//! [`EVICTION_MIN_IDLE`]. Slow clients that reconnect then only take turns
//! with each other while a probe, which sends its request at once, is served
//! within milliseconds. Each overload is logged once, when it starts, and
//! every eviction counts in `cutover_admin_connections_evicted_total`.

// Shell (I/O allowed, see clippy.toml): the admin listener and its drain timers.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io::{self, Write as _};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{
    ACCEPT_ENCODING, ALLOW, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderValue,
    VARY,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;

use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::status::Status;
use crate::status_page;

/// What the admin server shows; the daemon keeps the other ends.
#[derive(Clone)]
pub struct Admin {
    /// The registry rendered on `/metrics`.
    pub metrics: Arc<Metrics>,
    /// The latest status, published by the daemon after each evaluation.
    pub status: watch::Receiver<Status>,
    /// `/readyz` answers 200 while this is true: set after the first
    /// evaluation, cleared when draining.
    pub ready: Arc<AtomicBool>,
    /// The daemon's clock, so "3h ago" on the status page agrees with the
    /// timestamps in the status (`demo` runs on an accelerated clock).
    pub clock: Clock,
}

/// Why the admin server stopped before its shutdown signal.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The listening socket itself failed (not one connection).
    #[error("admin server: accepting connections failed: {0}")]
    Accept(#[source] io::Error),
}

/// The content type of the Prometheus text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Time a client has to send a request's headers; also how long an idle
/// keep-alive connection stays open. A probe or a scrape sends its request
/// at once; a few seconds is plenty and bounds what a slow client holds.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(3);

/// Connections served at once; beyond that a new client takes the place of
/// the one that has waited longest for a request's headers.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a connection must have waited for a request's headers before a
/// new client may take its place: spares a client that has just connected,
/// and bounds the churn when many slow clients reconnect at once.
pub const EVICTION_MIN_IDLE: Duration = Duration::from_millis(100);

/// How long a shutdown waits for in-flight requests before dropping them.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The server's bounds; [`Limits::default`] is what [`serve`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Time a client has to send a request's headers; also how long an idle
    /// keep-alive connection stays open.
    pub header_read_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
    /// How long a shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
    /// How long a connection must have waited for a request's headers
    /// before a new client may take its place when all slots are taken.
    pub eviction_min_idle: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            drain_timeout: DRAIN_TIMEOUT,
            eviction_min_idle: EVICTION_MIN_IDLE,
        }
    }
}

/// Serves until `shutdown` resolves; in-flight requests finish (up to
/// [`DRAIN_TIMEOUT`]). Plain HTTP (it is scraped inside the cluster).
pub async fn serve(
    listener: TcpListener,
    admin: Admin,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    serve_with(listener, admin, shutdown, Limits::default()).await
}

/// [`serve`] with other bounds (tests use short timeouts).
pub async fn serve_with(
    listener: TcpListener,
    admin: Admin,
    shutdown: impl Future<Output = ()>,
    limits: Limits,
) -> Result<(), ServerError> {
    let admin = Arc::new(admin);
    let max_connections = limits.max_connections.max(1);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut open = Open::new(max_connections);
    tokio::pin!(shutdown);
    let outcome = loop {
        // Below the limit, accept; at it, accept only when a waiting
        // connection can make room, else look again when one can.
        let (can_accept, look_again) = match open.room(limits.eviction_min_idle) {
            Room::Free | Room::Evictable => (true, None),
            Room::At(when) => (false, Some(when)),
        };
        tokio::select! {
            biased;
            () = &mut shutdown => break Ok(()),
            Some(joined) = connections.join_next_with_id(), if !connections.is_empty() => {
                open.closed(match joined {
                    Ok((id, ())) => id,
                    Err(e) => e.id(),
                });
            }
            () = sleep_until(look_again), if look_again.is_some() => {}
            accepted = listener.accept(), if can_accept => match accepted {
                Ok((stream, _)) => {
                    if open.is_full() {
                        if open.evict_oldest_waiting() {
                            admin.metrics.admin_connection_evicted();
                        } else {
                            // The candidate started a request meanwhile and
                            // every slot is busy answering: refuse this one.
                            drop(stream);
                            continue;
                        }
                    }
                    let phase = Phase::waiting(open.epoch);
                    let handle = connections.spawn(serve_connection(
                        stream,
                        admin.clone(),
                        stop_rx.clone(),
                        limits.header_read_timeout,
                        phase.clone(),
                    ));
                    open.opened(handle, phase);
                }
                Err(e) => match accept_error(&e) {
                    AcceptError::Transient => {}
                    AcceptError::Exhausted => {
                        // Out of file descriptors or buffers: retrying at once
                        // would spin; existing connections may free some.
                        tracing::warn!(error = %e, "admin server: cannot accept a connection; retrying");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    AcceptError::Fatal => break Err(ServerError::Accept(e)),
                },
            },
        }
    };
    drop(listener);
    // Every connection finishes its current request, then closes.
    let _ = stop_tx.send(true);
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.drain_timeout, drain)
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            "admin server: connections still open after the drain timeout; closing them"
        );
        connections.abort_all();
    }
    outcome
}

async fn sleep_until(when: Option<Instant>) {
    match when {
        Some(when) => tokio::time::sleep_until(when).await,
        None => std::future::pending().await,
    }
}

/// Whether a new connection can be taken.
enum Room {
    /// Below the limit.
    Free,
    /// At the limit, and a connection has waited long enough to be closed.
    Evictable,
    /// At the limit; look again at this instant (when the oldest waiting
    /// connection will have waited long enough, or to see whether a busy one
    /// went back to waiting).
    At(Instant),
}

/// The open connections, with what each is doing, and the current overload
/// episode.
struct Open {
    epoch: Instant,
    max: usize,
    conns: HashMap<tokio::task::Id, (AbortHandle, Arc<Phase>)>,
    /// Connections evicted in the current overload episode, if one is on.
    episode: Option<u64>,
}

impl Open {
    fn new(max: usize) -> Open {
        Open {
            epoch: Instant::now(),
            max,
            conns: HashMap::new(),
            episode: None,
        }
    }

    fn is_full(&self) -> bool {
        self.conns.len() >= self.max
    }

    fn room(&self, min_idle: Duration) -> Room {
        if !self.is_full() {
            return Room::Free;
        }
        let now = Instant::now();
        match self.oldest_waiting() {
            Some((_, since)) if now >= since + min_idle => Room::Evictable,
            Some((_, since)) => Room::At(since + min_idle),
            None => Room::At(now + min_idle),
        }
    }

    /// The connection that has waited longest for a request's headers, and
    /// since when.
    fn oldest_waiting(&self) -> Option<(tokio::task::Id, Instant)> {
        self.conns
            .iter()
            .filter_map(|(id, (_, phase))| phase.waiting_since().map(|t| (*id, t)))
            .min_by_key(|(_, since)| *since)
    }

    fn opened(&mut self, handle: AbortHandle, phase: Arc<Phase>) {
        self.conns.insert(handle.id(), (handle, phase));
    }

    /// Closes the connection that has waited longest for a request's
    /// headers; false when every connection is answering a request.
    fn evict_oldest_waiting(&mut self) -> bool {
        let Some((id, _)) = self.oldest_waiting() else {
            return false;
        };
        if let Some((handle, _)) = self.conns.remove(&id) {
            handle.abort();
        }
        match &mut self.episode {
            Some(evicted) => *evicted += 1,
            None => {
                self.episode = Some(1);
                tracing::warn!(
                    max_connections = self.max,
                    "admin server: overloaded, all connections taken; closing the ones waiting longest \
                     for request headers to serve new clients (counted in \
                     cutover_admin_connections_evicted_total, logged again when the overload ends)"
                );
            }
        }
        true
    }

    fn closed(&mut self, id: tokio::task::Id) {
        self.conns.remove(&id);
        // Hysteresis: the episode ends when half the slots are free again,
        // not each time one frees up.
        if self.conns.len() <= self.max / 2
            && let Some(evicted) = self.episode.take()
        {
            tracing::info!(evicted, "admin server: overload over");
        }
    }
}

/// What a connection is doing: since when it has waited for a request's
/// headers (in nanoseconds from `epoch`, the server's start), or
/// [`Phase::BUSY`] while a request is being answered.
struct Phase {
    epoch: Instant,
    since: AtomicU64,
}

impl Phase {
    const BUSY: u64 = u64::MAX;

    fn waiting(epoch: Instant) -> Arc<Phase> {
        let phase = Phase {
            epoch,
            since: AtomicU64::new(0),
        };
        phase.wait_again();
        Arc::new(phase)
    }

    fn busy(&self) {
        self.since.store(Phase::BUSY, Ordering::Release);
    }

    fn wait_again(&self) {
        let nanos = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(Phase::BUSY - 1);
        self.since.store(nanos, Ordering::Release);
    }

    fn waiting_since(&self) -> Option<Instant> {
        match self.since.load(Ordering::Acquire) {
            Phase::BUSY => None,
            nanos => Some(self.epoch + Duration::from_nanos(nanos)),
        }
    }
}

/// A response body that marks its connection as waiting again once it has
/// been sent (or dropped unsent: `HEAD`, a client gone).
struct Answer {
    body: Full<Bytes>,
    phase: Arc<Phase>,
}

impl Drop for Answer {
    fn drop(&mut self) {
        self.phase.wait_again();
    }
}

impl Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The response to one request, without I/O: routing, content negotiation
/// and rendering, so a connection task only moves bytes.
fn respond(
    admin: &Admin,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Response<Full<Bytes>> {
    let Some(route) = Route::parse(path) else {
        return text(StatusCode::NOT_FOUND, format!("not found: {path}\n"));
    };
    if method != Method::GET && method != Method::HEAD {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {method} not allowed on {path}; use GET or HEAD\n"),
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    // HEAD gets the same response as GET; hyper sends its headers only.
    match route {
        Route::Metrics => metrics(admin, headers),
        Route::Healthz => text(StatusCode::OK, "ok\n".into()),
        Route::Readyz => readyz(admin),
        Route::Status => {
            let json = serde_json::to_vec(&*admin.status.borrow());
            match json {
                Ok(body) => with_type(StatusCode::OK, "application/json", body),
                Err(e) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("status could not be encoded: {e}\n"),
                ),
            }
        }
        Route::Page => {
            let html = status_page::render(&admin.status.borrow(), admin.clock.now());
            with_type(
                StatusCode::OK,
                "text/html; charset=utf-8",
                html.into_bytes(),
            )
        }
    }
}

#[derive(Clone, Copy)]
enum Route {
    Metrics,
    Healthz,
    Readyz,
    Status,
    Page,
}

impl Route {
    fn parse(path: &str) -> Option<Route> {
        Some(match path {
            "/metrics" => Route::Metrics,
            "/healthz" => Route::Healthz,
            "/readyz" => Route::Readyz,
            "/api/v1/status" => Route::Status,
            "/" => Route::Page,
            _ => return None,
        })
    }
}

enum AcceptError {
    Transient,
    Exhausted,
    Fatal,
}

fn accept_error(e: &io::Error) -> AcceptError {
    match e.kind() {
        // One client's connection went away before we took it.
        io::ErrorKind::ConnectionAborted
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionRefused
        | io::ErrorKind::Interrupted
        | io::ErrorKind::WouldBlock
        | io::ErrorKind::TimedOut => AcceptError::Transient,
        // The socket itself is unusable; retrying cannot help.
        io::ErrorKind::InvalidInput | io::ErrorKind::NotConnected => AcceptError::Fatal,
        _ => AcceptError::Exhausted,
    }
}

async fn serve_connection(
    stream: TcpStream,
    admin: Arc<Admin>,
    mut stop: watch::Receiver<bool>,
    header_read_timeout: Duration,
    phase: Arc<Phase>,
) {
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        phase.busy();
        let response = respond(&admin, req.method(), req.uri().path(), req.headers());
        let response = response.map(|body| Answer {
            body,
            phase: phase.clone(),
        });
        // The request body (if a client sent one) is dropped unread; hyper
        // then closes the connection instead of reusing it.
        async move { Ok::<_, Infallible>(response) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .max_buf_size(64 * 1024);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "admin server: connection ended with an error");
            }
        }
        () = stopping(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// Resolves once the server stops (or its sender is gone), without holding
/// the channel's guard, so the caller's future stays `Send`.
async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopping| *stopping).await;
}

fn metrics(admin: &Admin, headers: &HeaderMap) -> Response<Full<Bytes>> {
    let page = match admin.metrics.render() {
        Ok(page) => page,
        Err(e) => {
            tracing::error!(error = %e, "admin server: metrics could not be rendered");
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("metrics could not be rendered: {e}\n"),
            );
        }
    };
    let gzipped = accepts_gzip(headers)
        .then(|| gzip(page.as_bytes()))
        .and_then(Result::ok);
    let mut response = match gzipped {
        Some(body) => {
            let mut r = with_type(StatusCode::OK, METRICS_CONTENT_TYPE, body);
            r.headers_mut()
                .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            r
        }
        None => with_type(StatusCode::OK, METRICS_CONTENT_TYPE, page.into_bytes()),
    };
    response
        .headers_mut()
        .insert(VARY, HeaderValue::from_static("Accept-Encoding"));
    response
}

fn readyz(admin: &Admin) -> Response<Full<Bytes>> {
    if admin.ready.load(Ordering::Acquire) {
        return text(StatusCode::OK, "ok\n".into());
    }
    if let Some(error) = admin.metrics.state_write_error() {
        let why = format!("not ready: the last state write failed: {error}\n");
        return text(StatusCode::SERVICE_UNAVAILABLE, why);
    }
    if let Some(error) = admin.metrics.state_load_error() {
        let why = format!("not ready: the shared state cannot be loaded: {error}\n");
        return text(StatusCode::SERVICE_UNAVAILABLE, why);
    }
    let why = if admin.status.borrow().evaluated_at.is_none() {
        "not ready: first evaluation pending\n"
    } else {
        "not ready: draining\n"
    };
    text(StatusCode::SERVICE_UNAVAILABLE, why.into())
}

/// Whether `Accept-Encoding` allows gzip (`gzip`, `x-gzip` or `*`, with a
/// non-zero quality).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            let named = ["gzip", "x-gzip", "*"]
                .iter()
                .any(|c| coding.eq_ignore_ascii_case(c));
            let quality = parts
                .find_map(|p| p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")))
                .map_or(1.0, |q| q.trim().parse::<f64>().unwrap_or(0.0));
            named && quality > 0.0
        })
}

fn gzip(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(data.len() / 4), Compression::fast());
    encoder.write_all(data)?;
    encoder.finish()
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    with_type(status, "text/plain; charset=utf-8", body.into_bytes())
}

fn with_type(
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Every answer describes the current moment; a cached one misleads.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(accept_encoding: &[&str], expected: bool) {
        let mut headers = HeaderMap::new();
        for v in accept_encoding {
            headers.append(ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        }
        assert_eq!(accepts_gzip(&headers), expected, "{accept_encoding:?}");
    }

    #[test]
    fn gzip_negotiation() {
        check(&[], false);
        check(&["gzip"], true);
        check(&["identity"], false);
        check(&["deflate, gzip;q=0.5"], true);
        check(&["gzip;q=0"], false);
        check(&["gzip; q=0.0, identity"], false);
        check(&["GZIP"], true);
        check(&["br", "x-gzip"], true);
        check(&["*"], true);
        check(&["gzip;q=junk"], false);
    }
}
