//! GET requests to the Kubernetes API for attribution: the same hand-written
//! client as discovery (rustls, only the configured CA, bearer token re-read
//! as it rotates), with a bounded body and errors that never carry the token.

// Shell (I/O allowed, see clippy.toml): HTTPS to the Kubernetes API.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION};

use crate::config::AttributionConfig;
use crate::credentials::{CredentialError, Secret, TokenFile};
use crate::scrape::{
    MAX_DETAIL_CHARS, bearer, endpoint, error_chain, error_message, https_client, transport_error,
};

/// The largest response read: one page of `page_size` objects.
pub const MAX_RESPONSE_BYTES: usize = 32 << 20;

/// Why a request failed; names the URL path, never the token.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The API server URL, server name or CA file is unusable.
    #[error("attribution client configuration: {0}")]
    Config(String),
    /// No token could be read: no request was sent.
    #[error("no bearer token (check attribution.token_file): {0}")]
    Credentials(#[source] CredentialError),
    /// No response: connection or TLS failure.
    #[error("GET {path} failed ({kind}): {detail}")]
    Transport {
        /// `connect`, `tls` or `timeout`.
        kind: &'static str,
        /// The path asked.
        path: String,
        /// The error chain.
        detail: String,
    },
    /// No complete answer in time.
    #[error("GET {path} got no complete response within {timeout:?}")]
    Timeout {
        /// The path asked.
        path: String,
        /// The timeout.
        timeout: Duration,
    },
    /// An error status, e.g. 403 when RBAC does not allow the list.
    #[error("GET {path} answered HTTP {code}: {message}")]
    Status {
        /// The status code.
        code: u16,
        /// The path asked.
        path: String,
        /// The `Status` message.
        message: String,
    },
    /// The body is too large, cut short or not the expected JSON.
    #[error("GET {path}: unusable response: {detail}")]
    Body {
        /// The path asked.
        path: String,
        /// What is wrong.
        detail: String,
    },
}

impl ApiError {
    /// A bounded reason: `config`, `token_unreadable`, `connect`, `tls`,
    /// `timeout`, `http_401`, `http_403`, `http_404`, `http_other`, `decode`.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::Config(_) => "config",
            ApiError::Credentials(_) => "token_unreadable",
            ApiError::Transport { kind, .. } => kind,
            ApiError::Timeout { .. } => "timeout",
            ApiError::Status { code: 401, .. } => "http_401",
            ApiError::Status { code: 403, .. } => "http_403",
            ApiError::Status { code: 404, .. } => "http_404",
            ApiError::Status { .. } => "http_other",
            ApiError::Body { .. } => "decode",
        }
    }
}

/// A GET-only client of one Kubernetes API server.
#[derive(Debug)]
pub struct KubeApi {
    client: reqwest::Client,
    base: reqwest::Url,
    token: Arc<TokenFile>,
    timeout: Duration,
}

impl KubeApi {
    /// A client for `config.api_server`: an IP host is connected to and
    /// verified as `server_name`; a host name is verified as itself.
    pub fn new(config: &AttributionConfig, timeout: Duration) -> Result<KubeApi, ApiError> {
        let url = &config.api_server;
        let port = url.port().unwrap_or(443);
        let host = url
            .host_str()
            .ok_or_else(|| ApiError::Config(format!("api_server {:?}: no host", url.as_str())))?;
        let ip = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>();
        let (host, resolve) = match ip {
            Ok(ip) => endpoint(&config.server_name, SocketAddr::new(ip, port))
                .map_err(ApiError::Config)?,
            Err(_) => (host.to_owned(), None),
        };
        let client = https_client(&config.ca_file, resolve.as_ref()).map_err(ApiError::Config)?;
        let base = format!("https://{host}:{port}/")
            .parse()
            .map_err(|e| ApiError::Config(format!("api_server: {e}")))?;
        Ok(KubeApi {
            client,
            base,
            token: Arc::new(TokenFile::new(config.token_file.clone())),
            timeout,
        })
    }

    /// `GET path?query` with `Accept: accept`; the body, at most
    /// [`MAX_RESPONSE_BYTES`]. A 401 re-reads the token file and retries
    /// once if the token changed.
    pub async fn get(
        &self,
        path: &str,
        query: &[(&str, &str)],
        accept: &str,
    ) -> Result<Vec<u8>, ApiError> {
        let mut url = self
            .base
            .join(path.trim_start_matches('/'))
            .map_err(|e| ApiError::Config(format!("path {path:?}: {e}")))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let attempts = async {
            let token = self.token.token().map_err(ApiError::Credentials)?;
            match self.once(&url, path, accept, &token).await {
                Err(err @ ApiError::Status { code: 401, .. }) => {
                    let fresh = self.token.reload().map_err(ApiError::Credentials)?;
                    if fresh == token {
                        return Err(err);
                    }
                    self.once(&url, path, accept, &fresh).await
                }
                other => other,
            }
        };
        match tokio::time::timeout(self.timeout, attempts).await {
            Ok(result) => result,
            Err(_) => Err(ApiError::Timeout {
                path: path.to_owned(),
                timeout: self.timeout,
            }),
        }
    }

    async fn once(
        &self,
        url: &reqwest::Url,
        path: &str,
        accept: &str,
        token: &Secret,
    ) -> Result<Vec<u8>, ApiError> {
        let auth = bearer(token).map_err(|e| ApiError::Config(e.detail))?;
        let mut response = self
            .client
            .get(url.clone())
            .header(AUTHORIZATION, auth)
            .header(ACCEPT, accept)
            .send()
            .await
            .map_err(|e| {
                let err = transport_error(&e);
                ApiError::Transport {
                    kind: err.kind.label(),
                    path: path.to_owned(),
                    detail: token.redact(&err.detail).shorten(MAX_DETAIL_CHARS),
                }
            })?;
        if response.status() != StatusCode::OK {
            return Err(ApiError::Status {
                code: response.status().as_u16(),
                path: path.to_owned(),
                message: error_message(response, token).await,
            });
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                        return Err(ApiError::Body {
                            path: path.to_owned(),
                            detail: format!("larger than {MAX_RESPONSE_BYTES} bytes"),
                        });
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body),
                Err(e) => {
                    return Err(ApiError::Body {
                        path: path.to_owned(),
                        detail: token
                            .redact(&format!("reading the body: {}", error_chain(&e)))
                            .shorten(MAX_DETAIL_CHARS),
                    });
                }
            }
        }
    }
}
