//! The admin HTTP server: `/metrics`, `/healthz`, `/readyz`,
//! `/api/v1/status` and the status page at `/`.
//!
//! Plain HTTP/1.1: it is scraped from inside the cluster, and it serves only
//! what `/metrics` already tells anyone who can reach it. It is bounded: no
//! request body is ever read, headers must arrive within
//! [`HEADER_READ_TIMEOUT`] (which also closes idle keep-alive connections),
//! at most [`MAX_CONNECTIONS`] are served at once, and a shutdown waits at
//! most [`DRAIN_TIMEOUT`] for in-flight requests.

// Shell (I/O allowed, see clippy.toml): the admin listener and its drain timers.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::convert::Infallible;
use std::future::Future;
use std::io::{self, Write as _};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    ACCEPT_ENCODING, ALLOW, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderValue,
    VARY,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

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
/// keep-alive connection stays open.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once; further clients wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 64;

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
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            drain_timeout: DRAIN_TIMEOUT,
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
    tokio::pin!(shutdown);
    let outcome = loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break Ok(()),
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept(), if connections.len() < max_connections => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(
                        stream,
                        admin.clone(),
                        stop_rx.clone(),
                        limits.header_read_timeout,
                    ));
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
) {
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let response = respond(&admin, req.method(), req.uri().path(), req.headers());
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
