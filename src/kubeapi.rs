//! A small Kubernetes API client for the objects the daemon owns (its state
//! ConfigMap and its Lease): JSON GET, PUT and POST with the service
//! account's bearer token, typed errors (404, 409, 403, others), bounded
//! bodies and every detail scrubbed of the token.

// Shell (I/O allowed, see clippy.toml): HTTPS to the Kubernetes API.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::credentials::{CredentialError, Secret, TokenFile};
use crate::scrape::{MAX_DETAIL_CHARS, bearer, error_chain, error_message, https_client};

/// The largest response body read: a ConfigMap is at most 1 MiB, its JSON
/// (base64 inside) a little more.
pub const MAX_RESPONSE_BYTES: usize = 3 << 20;

/// Why a request to the API failed; no variant ever holds the token.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    /// The client could not be built (CA file, URL).
    #[error("Kubernetes API client: {0}")]
    Config(String),
    /// No token could be read: no request was sent.
    #[error("Kubernetes API: no bearer token: {0}")]
    Credentials(#[source] CredentialError),
    /// The object does not exist (HTTP 404).
    #[error("{method} {path}: not found (HTTP 404)")]
    NotFound {
        /// The verb.
        method: String,
        /// The object's path.
        path: String,
    },
    /// The object changed since it was read (HTTP 409: its
    /// `resourceVersion` is not the one sent), or it already exists.
    #[error("{method} {path}: conflict (HTTP 409), another writer changed it: {message}")]
    Conflict {
        /// The verb.
        method: String,
        /// The object's path.
        path: String,
        /// The `Status` message.
        message: String,
    },
    /// The service account may not do this (HTTP 403): RBAC.
    #[error(
        "{method} {path}: forbidden (HTTP 403); check the Role bound to the auditor's service account: {message}"
    )]
    Forbidden {
        /// The verb.
        method: String,
        /// The object's path.
        path: String,
        /// The `Status` message.
        message: String,
    },
    /// Any other error status.
    #[error("{method} {path}: HTTP {code}: {message}")]
    Status {
        /// The verb.
        method: String,
        /// The object's path.
        path: String,
        /// The status code.
        code: u16,
        /// The `Status` message.
        message: String,
    },
    /// No response (connection, TLS) or none within the timeout.
    #[error("{method} {path}: no response: {detail}")]
    Transport {
        /// The verb.
        method: String,
        /// The object's path.
        path: String,
        /// The error chain, redacted.
        detail: String,
    },
    /// The answer is too large, cut short or not the JSON expected.
    #[error("{method} {path}: unusable response: {detail}")]
    Body {
        /// The verb.
        method: String,
        /// The object's path.
        path: String,
        /// What is wrong, redacted.
        detail: String,
    },
}

/// A client of one API server, authenticated with a token file.
#[derive(Debug, Clone)]
pub struct KubeClient {
    client: reqwest::Client,
    base: String,
    token: Arc<TokenFile>,
    timeout: Duration,
}

impl KubeClient {
    /// A client of `api_server` (`https://HOST:PORT`; an IP is verified as
    /// `server_name`), trusting only `ca_file`.
    pub fn new(
        api_server: &reqwest::Url,
        server_name: &str,
        ca_file: &Path,
        token: Arc<TokenFile>,
        timeout: Duration,
    ) -> Result<KubeClient, KubeError> {
        let (host, resolve, port) = crate::discovery::parse_api_server(api_server, server_name)
            .map_err(|e| KubeError::Config(e.to_string()))?;
        let client = https_client(ca_file, resolve.as_ref()).map_err(KubeError::Config)?;
        Ok(KubeClient {
            client,
            base: format!("https://{host}:{port}"),
            token,
            timeout,
        })
    }

    /// GET `path`, decoded as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, KubeError> {
        self.request(Method::GET, path, None::<&()>).await
    }

    /// PUT (replace) `body` at `path`; the object's `resourceVersion` in
    /// `body` is the precondition (409 when it is not the current one).
    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, KubeError> {
        self.request(Method::PUT, path, Some(body)).await
    }

    /// POST (create) `body` in the collection at `path` (409 when it exists).
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, KubeError> {
        self.request(Method::POST, path, Some(body)).await
    }

    async fn request<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, KubeError> {
        let m = method.as_str().to_owned();
        let body = match body {
            Some(b) => Some(serde_json::to_vec(b).map_err(|e| KubeError::Body {
                method: m.clone(),
                path: path.to_owned(),
                detail: format!("cannot encode the request: {e}"),
            })?),
            None => None,
        };
        let attempt = async {
            let token = self.token.token().map_err(KubeError::Credentials)?;
            match self.once(&method, path, body.as_deref(), &token).await {
                // A rotated token: read the file again, retry once if it changed.
                Err(err @ KubeError::Status { code: 401, .. }) => {
                    let fresh = self.token.reload().map_err(KubeError::Credentials)?;
                    if fresh == token {
                        return Err(err);
                    }
                    self.once(&method, path, body.as_deref(), &fresh).await
                }
                other => other,
            }
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(KubeError::Transport {
                method: m,
                path: path.to_owned(),
                detail: format!("no complete response within {:?}", self.timeout),
            }),
        }
    }

    async fn once<T: DeserializeOwned>(
        &self,
        method: &Method,
        path: &str,
        body: Option<&[u8]>,
        token: &Secret,
    ) -> Result<T, KubeError> {
        let m = method.as_str().to_owned();
        let p = path.to_owned();
        let auth = bearer(token).map_err(|e| KubeError::Config(e.detail))?;
        let mut request = self
            .client
            .request(method.clone(), format!("{}{path}", self.base))
            .header(AUTHORIZATION, auth)
            .header(ACCEPT, "application/json");
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, "application/json")
                .body(body.to_vec());
        }
        let mut response = request.send().await.map_err(|e| KubeError::Transport {
            method: m.clone(),
            path: p.clone(),
            detail: token.redact(&error_chain(&e)).shorten(MAX_DETAIL_CHARS),
        })?;
        let status = response.status();
        if !status.is_success() {
            let message = error_message(response, token).await;
            return Err(match status {
                StatusCode::NOT_FOUND => KubeError::NotFound { method: m, path: p },
                StatusCode::CONFLICT => KubeError::Conflict {
                    method: m,
                    path: p,
                    message,
                },
                StatusCode::FORBIDDEN => KubeError::Forbidden {
                    method: m,
                    path: p,
                    message,
                },
                other => KubeError::Status {
                    method: m,
                    path: p,
                    code: other.as_u16(),
                    message,
                },
            });
        }
        let mut bytes = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
                        return Err(KubeError::Body {
                            method: m,
                            path: p,
                            detail: format!("larger than {MAX_RESPONSE_BYTES} bytes"),
                        });
                    }
                    bytes.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(KubeError::Body {
                        method: m,
                        path: p,
                        detail: token
                            .redact(&format!("reading the body: {}", error_chain(&e)))
                            .shorten(MAX_DETAIL_CHARS),
                    });
                }
            }
        }
        serde_json::from_slice(&bytes).map_err(|e| KubeError::Body {
            method: m,
            path: p,
            detail: token
                .redact(&format!("not the JSON expected: {e}"))
                .shorten(MAX_DETAIL_CHARS),
        })
    }
}
