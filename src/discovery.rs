//! Apiserver discovery: the EndpointSlices of Service `default/kubernetes`
//! list one address per live apiserver (written by the apiservers' lease
//! reconciler), which the daemon scrapes one by one instead of the Service
//! VIP.

// Shell (I/O allowed, see clippy.toml): HTTPS to the Kubernetes API.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION};

use crate::credentials::{CredentialError, Secret, TokenFile};
use crate::endpointslice::{EndpointSliceList, KUBERNETES_SLICES_PATH};
use crate::scrape::{
    MAX_DETAIL_CHARS, bearer, endpoint, error_chain, error_message, https_client, transport_error,
};
use crate::status::ScrapeErrorKind;

/// The port name of the `kubernetes` Service's endpoints.
pub const PORT_NAME: &str = "https";

/// The largest discovery response read. The `kubernetes` slices hold a
/// handful of addresses; megabytes mean something is wrong.
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;

/// Lists the apiserver instances through the API.
#[derive(Debug)]
pub struct Discovery {
    client: reqwest::Client,
    url: String,
    /// What a TLS failure should tell to check: the name verified, the CA.
    tls_hint: String,
    token: Arc<TokenFile>,
    timeout: Duration,
}

/// Why discovery failed; the message names what failed, never the token.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The API server URL, server name or CA file is unusable.
    #[error("discovery configuration: {0}")]
    Config(String),
    /// No token could be read: no request was sent.
    #[error("discovery: no bearer token (check targets.kubernetes.token_file): {0}")]
    Credentials(#[source] CredentialError),
    /// No response: connection or TLS failure.
    #[error("discovery request to {url} failed ({kind}): {detail}")]
    Transport {
        /// `connect`, `tls` or `timeout`.
        kind: ScrapeErrorKind,
        /// The URL asked.
        url: String,
        /// The error chain.
        detail: String,
    },
    /// No complete answer within the timeout.
    #[error("discovery request to {url} got no complete response within {timeout:?}")]
    Timeout {
        /// The URL asked.
        url: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The API answered with an error status.
    #[error("discovery request to {url} answered HTTP {code}: {message}")]
    Status {
        /// The status code.
        code: u16,
        /// The URL asked.
        url: String,
        /// The `Status` message.
        message: String,
    },
    /// The answer is not an EndpointSliceList (or too large, or cut short).
    #[error("discovery response from {url} is unusable: {detail}")]
    Body {
        /// The URL asked.
        url: String,
        /// What is wrong.
        detail: String,
    },
}

impl DiscoveryError {
    /// A bounded label: `config`, `token_unreadable`, `connect`, `tls`,
    /// `timeout`, `http_401`, `http_403`, `http_other` or `decode`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            DiscoveryError::Config(_) => "config",
            DiscoveryError::Credentials(_) => ScrapeErrorKind::TokenUnreadable.label(),
            DiscoveryError::Transport { kind, .. } => kind.label(),
            DiscoveryError::Timeout { .. } => "timeout",
            DiscoveryError::Status { code: 401, .. } => "http_401",
            DiscoveryError::Status { code: 403, .. } => "http_403",
            DiscoveryError::Status { .. } => "http_other",
            DiscoveryError::Body { .. } => "decode",
        }
    }
}

impl Discovery {
    /// A discovery client for `api_server` (`https://HOST:PORT`, port 443
    /// when absent). When HOST is an IP (in cluster,
    /// `KUBERNETES_SERVICE_HOST`), the connection goes to it and the
    /// certificate is verified for `server_name`; a host name is resolved
    /// and verified as itself. Only `ca_file` is trusted.
    pub fn new(
        api_server: &reqwest::Url,
        server_name: &str,
        ca_file: &Path,
        token: Arc<TokenFile>,
        timeout: Duration,
    ) -> Result<Discovery, DiscoveryError> {
        let (host, resolve, port) = parse_api_server(api_server, server_name)?;
        let client = https_client(ca_file, resolve.as_ref()).map_err(DiscoveryError::Config)?;
        let tls_hint = match &resolve {
            // Connected by IP, verified as `server_name`.
            Some((name, addr)) => format!(
                "TLS with {addr} failed; check targets.kubernetes.ca_file ({}) and targets.kubernetes.server_name ({name:?})",
                ca_file.display()
            ),
            // A host name in api_server, or an IP server_name, is verified as itself.
            None => format!(
                "TLS with {host}:{port} failed; check targets.kubernetes.ca_file ({}) and the name verified, {host:?} (the api_server host name, or targets.kubernetes.server_name)",
                ca_file.display()
            ),
        };
        Ok(Discovery {
            client,
            tls_hint,
            url: format!("https://{host}:{port}{KUBERNETES_SLICES_PATH}"),
            token,
            timeout,
        })
    }

    /// The ready apiserver addresses (port named `https`), sorted and
    /// deduplicated. A 401 re-reads the token file and, when the token
    /// changed, retries once.
    pub async fn endpoints(&self) -> Result<Vec<SocketAddr>, DiscoveryError> {
        let attempts = async {
            let token = self.token.token().map_err(DiscoveryError::Credentials)?;
            match self.once(&token).await {
                Err(err @ DiscoveryError::Status { code: 401, .. }) => {
                    let fresh = self.token.reload().map_err(DiscoveryError::Credentials)?;
                    if fresh == token {
                        return Err(err);
                    }
                    self.once(&fresh).await
                }
                other => other,
            }
        };
        match tokio::time::timeout(self.timeout, attempts).await {
            Ok(result) => result,
            Err(_) => Err(DiscoveryError::Timeout {
                url: self.url.clone(),
                timeout: self.timeout,
            }),
        }
    }

    async fn once(&self, token: &Secret) -> Result<Vec<SocketAddr>, DiscoveryError> {
        let auth = bearer(token).map_err(|e| DiscoveryError::Config(e.detail))?;
        let response = self
            .client
            .get(&self.url)
            .header(AUTHORIZATION, auth)
            .header(ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| {
                let err = transport_error(&e);
                let detail = token.redact(&err.detail).shorten(MAX_DETAIL_CHARS);
                DiscoveryError::Transport {
                    kind: err.kind,
                    url: self.url.clone(),
                    detail: if err.kind == ScrapeErrorKind::Tls {
                        format!("{detail}; {}", self.tls_hint)
                    } else {
                        detail
                    },
                }
            })?;
        let status = response.status();
        if status != StatusCode::OK {
            return Err(DiscoveryError::Status {
                code: status.as_u16(),
                url: self.url.clone(),
                message: error_message(response, token).await,
            });
        }
        let body = self.read_body(response, token).await?;
        // serde quotes what it did not expect, a whole string of the body
        // (which may echo the token): redacted, then shortened.
        let list: EndpointSliceList =
            serde_json::from_slice(&body).map_err(|e| DiscoveryError::Body {
                url: self.url.clone(),
                detail: token
                    .redact(&format!("not an EndpointSliceList: {e}"))
                    .shorten(MAX_DETAIL_CHARS),
            })?;
        Ok(list.ready_addresses(PORT_NAME))
    }

    async fn read_body(
        &self,
        mut response: reqwest::Response,
        token: &Secret,
    ) -> Result<Vec<u8>, DiscoveryError> {
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                        return Err(DiscoveryError::Body {
                            url: self.url.clone(),
                            detail: format!("larger than {MAX_RESPONSE_BYTES} bytes"),
                        });
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body),
                Err(e) => {
                    return Err(DiscoveryError::Body {
                        url: self.url.clone(),
                        detail: token
                            .redact(&format!("reading the body: {}", error_chain(&e)))
                            .shorten(MAX_DETAIL_CHARS),
                    });
                }
            }
        }
    }
}

pub(crate) type Parsed = (String, Option<(String, SocketAddr)>, u16);

/// Where to connect for a validated `api_server` ([`crate::config::parse_url`]).
pub(crate) fn parse_api_server(
    url: &reqwest::Url,
    server_name: &str,
) -> Result<Parsed, DiscoveryError> {
    let bad = |why: &str| DiscoveryError::Config(format!("api_server {:?}: {why}", url.as_str()));
    let port = url.port().unwrap_or(443);
    let host = url.host_str().ok_or_else(|| bad("no host"))?;
    let Ok(ip) = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    else {
        // A name is verified as itself, as any HTTPS client would.
        return Ok((host.to_string(), None, port));
    };
    let (host, resolve) = endpoint(server_name, SocketAddr::new(ip, port))
        .map_err(|e| DiscoveryError::Config(e.to_string()))?;
    Ok((host, resolve, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_server_urls() {
        let check = |url: &str, want: Result<&str, &str>| {
            let got = crate::config::parse_url(url, &["https"])
                .map_err(DiscoveryError::Config)
                .and_then(|u| parse_api_server(&u, "kubernetes"))
                .map(|(host, resolve, port)| {
                    let to = resolve.map(|(_, a)| a.to_string()).unwrap_or_default();
                    format!("{host}:{port} via {to}")
                })
                .map_err(|e| e.to_string());
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{url}"),
                (Err(g), Err(w)) => assert!(g.contains(w), "{url}: {g}"),
                (g, w) => panic!("{url}: got {g:?}, want {w:?}"),
            }
        };
        check(
            "https://10.96.0.1:443",
            Ok("kubernetes:443 via 10.96.0.1:443"),
        );
        check("https://10.96.0.1", Ok("kubernetes:443 via 10.96.0.1:443"));
        check(
            "https://[fd00::1]:6443",
            Ok("kubernetes:6443 via [fd00::1]:6443"),
        );
        check(
            "https://api.example.com:6443/",
            Ok("api.example.com:6443 via "),
        );
        // The configuration's one parser refuses what discovery cannot use.
        check(
            "http://10.96.0.1:443",
            Err("scheme \"http\" is not allowed here"),
        );
        check("10.96.0.1:443", Err("is not a URL"));
    }
}
