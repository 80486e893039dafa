//! One scrape of one apiserver instance: HTTPS by address with the cluster
//! CA, a bearer token from a [`TokenFile`], gzip negotiated, and the body
//! streamed into the extractor so memory does not grow with the page.
//!
//! Every failure becomes a [`ScrapeError`] with a bounded
//! [`ScrapeErrorKind`] for metrics and a detail for people; neither ever
//! holds the token.

// Shell (I/O allowed, see clippy.toml): HTTPS to the apiservers.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::error::Error as StdError;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{
    ACCEPT, ACCEPT_ENCODING, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderValue,
};

use crate::credentials::{
    CredentialError, REDACTED, REDACTED_FRAGMENT_BYTES, Secret, TokenFile, read_ca_bundle,
};
use crate::exposition::{ExpositionError, Page, PageDecoder, Watch};
use crate::status::ScrapeErrorKind;
use crate::time::Timestamp;

/// What the scraper asks for: the classic text format only. Protobuf would
/// be smaller but the extractor reads text; OpenMetrics is never served by
/// kube-apiserver (it falls back to text anyway).
pub const ACCEPT_TEXT: &str = "text/plain;version=0.0.4";

/// The response header kube-apiserver 1.30+ sends with its process start time.
pub const START_TIME_HEADER: &str = "Process-Start-Time-Unix";

/// One apiserver instance to scrape.
#[derive(Clone, Debug)]
pub struct Target {
    /// The instance label, `IP:port`.
    pub instance: String,
    /// Where to connect; never a Service VIP, which mixes instances.
    pub addr: SocketAddr,
    /// The TLS server name to verify (`kubernetes` in cluster). An IP
    /// literal here is verified as an IP SAN and connected to directly.
    pub server_name: String,
    /// The path, normally `/metrics`.
    pub path: String,
    /// The CA bundle (PEM) that alone is trusted for this target.
    pub ca_file: PathBuf,
    /// The bearer token.
    pub token: Arc<TokenFile>,
}

/// A configured HTTPS client for one target.
#[derive(Debug)]
pub struct Scraper {
    target: Target,
    client: reqwest::Client,
    url: String,
    timeout: Duration,
    max_body_bytes: u64,
}

/// The result of one successful scrape.
#[derive(Clone, Debug)]
pub struct Scraped {
    /// The watched families.
    pub page: Page,
    /// The `Process-Start-Time-Unix` header (1.30+), if sent and valid.
    pub header_start_time: Option<Timestamp>,
    /// Whether the body came gzip-encoded.
    pub gzip: bool,
    /// Bytes received on the wire (compressed size when gzip).
    pub bytes_received: u64,
}

/// Why a scrape failed.
#[derive(Debug, thiserror::Error)]
#[error("{kind}: {detail}")]
pub struct ScrapeError {
    /// The bounded reason, exported as a label.
    pub kind: ScrapeErrorKind,
    /// What happened, for logs and the status page; never the token.
    pub detail: String,
}

impl ScrapeError {
    /// An error of `kind` with `detail`.
    pub fn new(kind: ScrapeErrorKind, detail: impl Into<String>) -> ScrapeError {
        ScrapeError {
            kind,
            detail: detail.into(),
        }
    }

    /// The bounded label (`connect`, `timeout`, ...).
    pub fn metric_label(&self) -> &'static str {
        self.kind.label()
    }
}

impl Scraper {
    /// A scraper for `target`: reads the CA file once and builds a client
    /// that trusts only it. `timeout` bounds a whole scrape (connect, TLS,
    /// headers, body; a retry after 401 included) in real time;
    /// `max_body_bytes` bounds both the wire bytes and the decoded page.
    ///
    /// Fails with `tls` when the CA file is unreadable or holds no
    /// certificate or the server name is empty, and with `http_other` when
    /// the path does not start with `/`.
    pub fn new(
        target: Target,
        timeout: Duration,
        max_body_bytes: u64,
    ) -> Result<Scraper, ScrapeError> {
        if !target.path.starts_with('/') {
            return Err(ScrapeError::new(
                ScrapeErrorKind::HttpOther,
                format!("path {:?} does not start with '/'", target.path),
            ));
        }
        let (host, resolve) = endpoint(&target.server_name, target.addr)
            .map_err(|e| ScrapeError::new(ScrapeErrorKind::Tls, e))?;
        let client = https_client(&target.ca_file, resolve.as_ref())
            .map_err(|e| ScrapeError::new(ScrapeErrorKind::Tls, e))?;
        let url = format!("https://{host}:{}{}", target.addr.port(), target.path);
        Ok(Scraper {
            target,
            client,
            url,
            timeout,
            max_body_bytes,
        })
    }

    /// The target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Scrapes once. After a 401 the token file is read again at once and,
    /// when it holds a different token (rotated since the last look), the
    /// request is retried once within the same timeout.
    pub async fn scrape(&self, watch: &Watch) -> Result<Scraped, ScrapeError> {
        match tokio::time::timeout(self.timeout, self.attempts(watch)).await {
            Ok(result) => result,
            Err(_) => Err(ScrapeError::new(
                ScrapeErrorKind::Timeout,
                format!(
                    "no complete response within {}",
                    humantime::format_duration(self.timeout)
                ),
            )),
        }
    }

    async fn attempts(&self, watch: &Watch) -> Result<Scraped, ScrapeError> {
        let token = self.target.token.token().map_err(no_token)?;
        let first = self.once(watch, &token).await;
        match first {
            Err(err) if err.kind == ScrapeErrorKind::Http401 => {
                let fresh = self.target.token.reload().map_err(|e| {
                    let mut e = no_token(e);
                    e.detail = format!("{}, after {}", e.detail, err.detail);
                    e
                })?;
                if fresh == token {
                    return Err(err);
                }
                self.once(watch, &fresh).await
            }
            other => other,
        }
    }

    async fn once(&self, watch: &Watch, token: &Secret) -> Result<Scraped, ScrapeError> {
        self.request(watch, token).await.map_err(|mut e| {
            // Every detail (a status message, an echoed header, a page line)
            // is redacted whole, then bounded.
            e.detail = token.redact(&e.detail).shorten(MAX_DETAIL_CHARS);
            e
        })
    }

    async fn request(&self, watch: &Watch, token: &Secret) -> Result<Scraped, ScrapeError> {
        let response = self
            .client
            .get(&self.url)
            .header(AUTHORIZATION, bearer(token)?)
            .header(ACCEPT, ACCEPT_TEXT)
            .header(ACCEPT_ENCODING, "gzip")
            .send()
            .await
            .map_err(|e| {
                let mut err = transport_error(&e);
                if err.kind == ScrapeErrorKind::Tls {
                    err.detail = tls_detail(
                        &self.target.instance,
                        &self.target.server_name,
                        &self.target.ca_file,
                        &err.detail,
                    );
                }
                err
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(status_error(status, response, token).await);
        }
        let limit = self.max_body_bytes;
        if let Some(len) = response.content_length()
            && len > limit
        {
            return Err(ScrapeError::new(
                ScrapeErrorKind::BodyTooLarge,
                format!("Content-Length {len} exceeds the limit of {limit} bytes"),
            ));
        }
        let headers = response.headers();
        check_media_type(header_str(headers, CONTENT_TYPE.as_str()))
            .map_err(|e| ScrapeError::new(ScrapeErrorKind::Decode, e))?;
        let gzip = content_encoding_is_gzip(header_str(headers, CONTENT_ENCODING.as_str()))
            .map_err(|e| ScrapeError::new(ScrapeErrorKind::Decode, e))?;
        let header_start_time = parse_start_time(header_str(headers, START_TIME_HEADER));

        let mut response = response;
        let mut decoder = PageDecoder::with_limit(watch.clone(), limit);
        let mut bytes_received = 0u64;
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    return Err(ScrapeError::new(
                        ScrapeErrorKind::Decode,
                        format!("reading the body: {}", error_chain(&e)),
                    ));
                }
            };
            bytes_received += chunk.len() as u64;
            // The decoder limits decoded bytes; this limits wire bytes, which
            // can exceed them (a gzip stream of empty members).
            if bytes_received > limit {
                return Err(ScrapeError::new(
                    ScrapeErrorKind::BodyTooLarge,
                    format!("body larger than the limit of {limit} bytes"),
                ));
            }
            decoder.feed(&chunk).map_err(page_error)?;
        }
        let page = decoder.finish().map_err(page_error)?;
        Ok(Scraped {
            page,
            header_start_time,
            gzip,
            bytes_received,
        })
    }
}

/// Checks a response's `Content-Type`: the classic text format (version
/// 0.0.4 or none) or OpenMetrics text, parameters in any order and case,
/// `escaping=...` and `charset=...` allowed. A missing header is taken as
/// text, as Prometheus does. Anything else (protobuf, an HTML error page
/// from a proxy) is an error naming the type.
pub fn check_media_type(content_type: Option<&str>) -> Result<(), String> {
    let Some(value) = content_type else {
        return Ok(());
    };
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let mut version = None;
    for param in parts {
        let Some((key, val)) = param.split_once('=') else {
            if param.trim().is_empty() {
                continue;
            }
            return Err(format!(
                "malformed Content-Type parameter {:?} in {value:?}",
                param.trim()
            ));
        };
        if key.trim().eq_ignore_ascii_case("version") {
            version = Some(val.trim().trim_matches('"').to_string());
        }
    }
    match essence.as_str() {
        "text/plain" => match version.as_deref() {
            None | Some("0.0.4") => Ok(()),
            Some(v) => Err(format!(
                "unsupported text exposition version {v:?} (Content-Type {value:?})"
            )),
        },
        "application/openmetrics-text" => Ok(()),
        "application/vnd.google.protobuf" => Err(format!(
            "protobuf exposition was sent although text was asked for (Content-Type {value:?})"
        )),
        _ => Err(format!(
            "not a metrics page: Content-Type {value:?} (a proxy or a wrong path?)"
        )),
    }
}

/// The bounded kind of a transport failure, from its error chain: any
/// rustls error (handshake, certificate, protocol) is `tls`; everything else
/// before a response arrived (refused, reset, unreachable, DNS) is `connect`.
pub fn transport_error_kind(err: &(dyn StdError + 'static)) -> ScrapeErrorKind {
    let mut next = Some(err);
    while let Some(e) = next {
        if is_tls(e) {
            return ScrapeErrorKind::Tls;
        }
        next = e.source();
    }
    ScrapeErrorKind::Connect
}

/// An error and its sources as one line, repeated messages dropped
/// (`io::Error` repeats the message of the error it wraps).
pub fn error_chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// The host to put in the URL and, unless it is an IP literal, the address
/// to resolve it to: TLS verifies the name while the connection goes to
/// `addr`.
pub(crate) fn endpoint(
    server_name: &str,
    addr: SocketAddr,
) -> Result<(String, Option<(String, SocketAddr)>), String> {
    if server_name.is_empty() {
        return Err("empty TLS server name".to_string());
    }
    match server_name.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => Ok((format!("[{ip}]"), None)),
        Ok(IpAddr::V4(ip)) => Ok((ip.to_string(), None)),
        Err(_) => Ok((
            server_name.to_string(),
            Some((server_name.to_string(), addr)),
        )),
    }
}

/// An HTTPS client that trusts only the certificates in `ca_file`, never
/// follows redirects (a redirect must not carry the token elsewhere) and
/// ignores proxy variables (scrapes go to the instance, not via a proxy).
pub(crate) fn https_client(
    ca_file: &Path,
    resolve: Option<&(String, SocketAddr)>,
) -> Result<reqwest::Client, String> {
    let certs = read_ca_bundle(ca_file).map_err(|e| e.to_string())?;
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .https_only(true)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("cutover-auditor/", env!("CARGO_PKG_VERSION")));
    for cert in certs {
        let cert = reqwest::Certificate::from_der(&cert).map_err(|e| {
            format!(
                "CA file {}: certificate not accepted: {}",
                ca_file.display(),
                error_chain(&e)
            )
        })?;
        builder = builder.add_root_certificate(cert);
    }
    if let Some((name, addr)) = resolve {
        builder = builder.resolve(name, *addr);
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTPS client: {}", error_chain(&e)))
}

/// `Authorization: Bearer ...`, marked sensitive so hyper never logs it.
pub(crate) fn bearer(token: &Secret) -> Result<HeaderValue, ScrapeError> {
    let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
        ScrapeError::new(
            ScrapeErrorKind::TokenUnreadable,
            "the token cannot be sent as an HTTP header",
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

/// A transport error (no response) as a scrape error.
pub(crate) fn transport_error(err: &reqwest::Error) -> ScrapeError {
    let kind = if err.is_timeout() {
        ScrapeErrorKind::Timeout
    } else {
        transport_error_kind(err)
    };
    ScrapeError::new(kind, error_chain(err))
}

/// A TLS failure's detail that says where and what to check: the
/// instance address, the server name verified and the CA file trusted,
/// with the config keys (`ca_file`, `server_name`) that set them.
pub(crate) fn tls_detail(instance: &str, server_name: &str, ca_file: &Path, chain: &str) -> String {
    format!(
        "TLS with {instance} failed: {chain}; check ca_file ({}) and server_name ({server_name:?}) for this target",
        ca_file.display()
    )
}

/// The longest detail kept from a failed scrape, in characters.
pub const MAX_DETAIL_CHARS: usize = 1000;

/// The longest message kept from an error response's body, in characters.
pub const MAX_MESSAGE_CHARS: usize = 300;

/// The Kubernetes `Status` message of an error response (or the start of its
/// text), read from at most a few KiB of body, on one line, the token
/// redacted before the message is shortened.
pub(crate) async fn error_message(mut response: reqwest::Response, token: &Secret) -> String {
    const MAX: usize = 4096;
    let mut body = Vec::new();
    let mut cut = false;
    while body.len() < MAX {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX - body.len();
                cut = chunk.len() > room;
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            _ => break,
        }
    }
    message_of(&body, cut || body.len() >= MAX, token)
}

/// The message of an error body (`cut` when the read stopped before its
/// end): the token is redacted from the whole text first; then, if the read
/// cut the body, the unredacted bytes just before the cut are dropped (a
/// token the cut went through leaves a piece too short to be recognised
/// there); then the message is shortened.
fn message_of(body: &[u8], cut: bool, token: &Secret) -> String {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let one_line: String = message
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut redacted = token.redact(one_line.trim()).into_string();
    if cut && !redacted.ends_with(REDACTED) {
        let piece = token
            .expose()
            .len()
            .min(REDACTED_FRAGMENT_BYTES)
            .saturating_sub(1);
        let raw_tail =
            redacted.len() - redacted.rfind(REDACTED).map_or(0, |at| at + REDACTED.len());
        let mut keep = redacted.len() - piece.min(raw_tail);
        while !redacted.is_char_boundary(keep) {
            keep -= 1;
        }
        redacted.truncate(keep);
        redacted.push('…');
    }
    if let Some((at, _)) = redacted.char_indices().nth(MAX_MESSAGE_CHARS) {
        redacted.truncate(at);
        redacted.push('…');
    }
    redacted.trim().to_string()
}

async fn status_error(
    status: StatusCode,
    response: reqwest::Response,
    token: &Secret,
) -> ScrapeError {
    let kind = match status {
        StatusCode::UNAUTHORIZED => ScrapeErrorKind::Http401,
        StatusCode::FORBIDDEN => ScrapeErrorKind::Http403,
        _ => ScrapeErrorKind::HttpOther,
    };
    let message = error_message(response, token).await;
    let detail = if message.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {message}")
    };
    ScrapeError::new(kind, detail)
}

/// No token could be had: no request was sent, so this is not a 401.
fn no_token(err: CredentialError) -> ScrapeError {
    ScrapeError::new(
        ScrapeErrorKind::TokenUnreadable,
        format!("no bearer token (check token_file): {err}"),
    )
}

fn page_error(err: ExpositionError) -> ScrapeError {
    let kind = match err.metric_label() {
        "malformed" => ScrapeErrorKind::Malformed,
        "body_too_large" => ScrapeErrorKind::BodyTooLarge,
        "too_many_series" => ScrapeErrorKind::TooManySeries,
        _ => ScrapeErrorKind::Decode,
    };
    ScrapeError::new(kind, err.to_string())
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn content_encoding_is_gzip(value: Option<&str>) -> Result<bool, String> {
    match value.map(|v| v.trim().to_ascii_lowercase()) {
        None => Ok(false),
        Some(v) if v.is_empty() || v == "identity" => Ok(false),
        Some(v) if v == "gzip" || v == "x-gzip" => Ok(true),
        Some(v) => Err(format!("unsupported Content-Encoding {v:?}")),
    }
}

fn parse_start_time(value: Option<&str>) -> Option<Timestamp> {
    let secs: f64 = value?.trim().parse().ok()?;
    if secs <= 0.0 {
        return None;
    }
    Timestamp::from_secs_f64(secs)
}

fn is_tls(e: &(dyn StdError + 'static)) -> bool {
    if e.is::<rustls::Error>() {
        return true;
    }
    // tokio-rustls wraps rustls errors in `io::Error`, whose `source()` skips
    // the wrapped error; look inside explicitly.
    e.downcast_ref::<io::Error>()
        .and_then(|io| io.get_ref())
        .is_some_and(|inner| is_tls(inner))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token of upper-case letters only, so that any piece of it left in
    /// a message built from lower-case text shows.
    fn upper_token(len: usize) -> String {
        (0..len)
            .map(|i| char::from(b'A' + ((i * 7 + len) % 26) as u8))
            .collect()
    }

    #[test]
    fn a_body_cut_through_a_token_leaves_no_piece_of_it() {
        for len in 4..=40 {
            let token = upper_token(len);
            let secret = Secret::new(token.clone());
            for before in [0, 1, 50, 299, 4000] {
                let whole = format!("{}{token} and more", "x".repeat(before));
                for cut_at in before + 1..before + len {
                    let body = &whole.as_bytes()[..cut_at];
                    let message = message_of(body, true, &secret);
                    assert!(
                        !message.chars().any(|c| c.is_ascii_uppercase()),
                        "len {len}, cut {} bytes into the token: {message:?}",
                        cut_at - before
                    );
                    assert!(message.chars().count() <= MAX_MESSAGE_CHARS + 1);
                }
            }
        }
        // Uncut, nothing is dropped but the token.
        let secret = Secret::new("SECRETTOKEN");
        assert_eq!(
            message_of(b"denied for SECRETTOKEN, sorry", false, &secret),
            "denied for <redacted>, sorry"
        );
        assert_eq!(
            message_of(br#"{"kind":"Status","message":"no"}"#, false, &secret),
            "no"
        );
    }

    #[test]
    fn media_types() {
        let check = |ct: Option<&str>, ok: bool| {
            assert_eq!(check_media_type(ct).is_ok(), ok, "{ct:?}");
        };
        check(None, true);
        check(Some("text/plain; version=0.0.4; charset=utf-8"), true);
        check(
            Some("text/plain; version=0.0.4; charset=utf-8; escaping=underscores"),
            true,
        );
        check(
            Some("TEXT/Plain;escaping=underscores;Version=\"0.0.4\""),
            true,
        );
        check(Some("text/plain"), true);
        check(Some("text/plain; charset=utf-8"), true);
        check(
            Some("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            true,
        );
        check(Some("text/plain; version=1.0.0"), false);
        check(
            Some(
                "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited",
            ),
            false,
        );
        check(Some("text/html; charset=utf-8"), false);
        check(Some("application/json"), false);
        check(Some("text/plain; version"), false);
        let err = check_media_type(Some("text/html")).expect_err("html");
        assert!(err.contains("text/html"), "{err}");
    }

    #[test]
    fn transport_errors_are_classified_by_their_chain() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] io::Error);
        let check = |err: &(dyn StdError + 'static), want: ScrapeErrorKind| {
            assert_eq!(transport_error_kind(err), want, "{}", error_chain(err));
        };
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        check(&refused, ScrapeErrorKind::Connect);
        let cert = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        check(&cert, ScrapeErrorKind::Tls);
        let wrapped = Outer(io::Error::new(io::ErrorKind::InvalidData, cert.clone()));
        check(&wrapped, ScrapeErrorKind::Tls);
        check(&Outer(refused), ScrapeErrorKind::Connect);
        let chain = error_chain(&wrapped);
        assert_eq!(
            chain.matches("invalid peer certificate").count(),
            1,
            "{chain}"
        );
    }

    #[test]
    fn page_errors_keep_their_line() {
        let check = |body: &[u8], limit: u64, want: ScrapeErrorKind, needle: &str| {
            let mut d = PageDecoder::with_limit(Watch::default_families(), limit);
            let err = d
                .feed(body)
                .and_then(|()| d.finish().map(|_| ()))
                .map_err(page_error)
                .expect_err("must fail");
            assert_eq!(err.kind, want, "{err}");
            assert!(err.detail.contains(needle), "{err}");
        };
        check(
            b"# TYPE serviceaccount_legacy_tokens_total counter\nserviceaccount_legacy_tokens_total abc\n",
            1 << 20,
            ScrapeErrorKind::Malformed,
            "line 2",
        );
        check(
            &[0x1f, 0x8b, 0, 1, 2, 3],
            1 << 20,
            ScrapeErrorKind::Decode,
            "gzip",
        );
        check(&[b'#'; 100], 10, ScrapeErrorKind::BodyTooLarge, "10");
    }

    #[test]
    fn small_header_parsers() {
        assert_eq!(content_encoding_is_gzip(None), Ok(false));
        assert_eq!(content_encoding_is_gzip(Some("GZIP")), Ok(true));
        assert!(content_encoding_is_gzip(Some("br")).is_err());
        assert_eq!(
            parse_start_time(Some("1782468730")),
            Some(Timestamp::from_secs(1_782_468_730))
        );
        assert_eq!(parse_start_time(Some("soon")), None);
        assert_eq!(parse_start_time(None), None);
        assert_eq!(
            endpoint("::1", "[::1]:6443".parse().expect("addr")),
            Ok(("[::1]".to_string(), None))
        );
    }
}
