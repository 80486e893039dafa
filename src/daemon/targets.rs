//! The target list: apiserver instances discovered from the API server's
//! EndpointSlices, or static targets whose host names are resolved again
//! every minute.

// Shell (I/O allowed, see clippy.toml): discovery and name resolution on the clock.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use super::{DaemonError, Shared};
use crate::config::Targets;
use crate::credentials::TokenFile;
use crate::discovery::Discovery;
use crate::scrape::Target;

/// Resolves `host:port` to an address, or says why there is none.
pub type ResolveFn = dyn Fn(&str) -> Result<SocketAddr, String> + Send + Sync;

/// How the host names of static targets are resolved.
#[derive(Clone, Default)]
pub enum Resolver {
    /// The system resolver.
    #[default]
    System,
    /// A function from `host:port` to an address, or why there is none
    /// (tests: names that resolve, then stop, without a DNS server).
    Function(Arc<ResolveFn>),
}

impl Resolver {
    async fn resolve(&self, host_port: &str) -> Result<SocketAddr, String> {
        match self {
            Resolver::System => tokio::net::lookup_host(host_port)
                .await
                .map_err(|e| format!("cannot resolve {host_port}: {e}"))?
                .next()
                .ok_or_else(|| format!("{host_port} has no address")),
            Resolver::Function(f) => f(host_port),
        }
    }
}

/// One listed target: where to scrape it, or why it cannot be scraped.
#[derive(Clone, Debug)]
pub(super) struct Listed {
    /// The instance label.
    pub(super) instance: String,
    /// The target, or why its name did not resolve.
    pub(super) endpoint: Result<Target, String>,
}

impl Listed {
    /// What a scrape task is started for: the resolved address, if any.
    pub(super) fn addr(&self) -> Option<SocketAddr> {
        self.endpoint.as_ref().ok().map(|t| t.addr)
    }
}

/// Builds the discovery task: it publishes the current target list.
pub(super) fn discover(
    shared: Arc<Shared>,
    tx: watch::Sender<Option<Vec<Listed>>>,
    resolver: Resolver,
) -> Result<impl Future<Output = ()> + Send + 'static, DaemonError> {
    let config = Arc::clone(&shared.config);
    let real_timeout = shared.clock.to_real(config.scrape.timeout);
    let mut tokens: BTreeMap<PathBuf, Arc<TokenFile>> = BTreeMap::new();
    let mut token = |path: &PathBuf| {
        Arc::clone(
            tokens
                .entry(path.clone())
                .or_insert_with(|| Arc::new(TokenFile::new(path.clone()))),
        )
    };
    enum Source {
        Kubernetes {
            discovery: Discovery,
            server_name: String,
            ca_file: PathBuf,
            token: Arc<TokenFile>,
            refresh: Duration,
        },
        Static(Vec<StaticSource>),
    }
    let source = match &config.targets {
        Targets::Kubernetes(k) => Source::Kubernetes {
            discovery: Discovery::new(
                &k.api_server,
                &k.server_name,
                &k.ca_file,
                token(&k.token_file),
                real_timeout,
            )?,
            server_name: k.server_name.clone(),
            ca_file: k.ca_file.clone(),
            token: token(&k.token_file),
            refresh: k.refresh_interval,
        },
        Targets::Static(list) => Source::Static(
            list.iter()
                .map(|t| {
                    let (host_port, path) = split_static_url(&t.url);
                    StaticSource {
                        instance: host_port.clone(),
                        host_port,
                        path,
                        server_name: t.server_name.clone(),
                        ca_file: t.ca_file.clone(),
                        token: token(&t.token_file),
                    }
                })
                .collect(),
        ),
    };
    Ok(async move {
        let mut failed_before = false;
        // Static targets whose name does not resolve now (logged once per failure).
        let mut unresolved: BTreeSet<String> = BTreeSet::new();
        loop {
            let (targets, next) = match &source {
                Source::Kubernetes {
                    discovery,
                    server_name,
                    ca_file,
                    token,
                    refresh,
                } => match discovery.endpoints().await {
                    Ok(addrs) => {
                        shared.metrics.observe_discovery_success(shared.clock.now());
                        if failed_before {
                            info!(instances = addrs.len(), "discovery works again");
                        }
                        failed_before = false;
                        let targets = addrs
                            .into_iter()
                            .map(|addr| Listed {
                                instance: addr.to_string(),
                                endpoint: Ok(Target {
                                    instance: addr.to_string(),
                                    addr,
                                    server_name: server_name.clone(),
                                    path: "/metrics".to_owned(),
                                    ca_file: ca_file.clone(),
                                    token: Arc::clone(token),
                                }),
                            })
                            .collect();
                        (Some(targets), *refresh)
                    }
                    Err(e) => {
                        shared.metrics.observe_discovery_error(e.metric_label());
                        // Keep the last known targets: an unreachable API is no
                        // proof that apiservers left.
                        if !failed_before {
                            warn!(error = %format!("{e:#}"), "discovery failed; keeping the last known apiserver instances");
                        }
                        failed_before = true;
                        (None, config.scrape.interval.min(*refresh))
                    }
                },
                Source::Static(list) => {
                    let targets = resolve_static(list, &resolver, &mut unresolved).await;
                    // The list itself is known: a name that does not resolve
                    // is a target down (`dns`), not a failed discovery.
                    shared.metrics.observe_discovery_success(shared.clock.now());
                    (Some(targets), STATIC_REFRESH)
                }
            };
            if let Some(mut targets) = targets {
                targets.sort_by(|a, b| a.instance.cmp(&b.instance));
                targets.dedup_by(|a, b| a.instance == b.instance);
                tx.send_if_modified(|current| {
                    let same = current.as_ref().is_some_and(|c| {
                        c.len() == targets.len()
                            && c.iter()
                                .zip(&targets)
                                .all(|(a, b)| a.instance == b.instance && a.addr() == b.addr())
                    });
                    if !same {
                        *current = Some(targets);
                    }
                    !same
                });
            }
            shared.clock.sleep(next).await;
        }
    })
}

/// A static target as configured: its label, and what scraping it needs
/// once its host name resolves.
struct StaticSource {
    instance: String,
    host_port: String,
    path: String,
    server_name: String,
    ca_file: PathBuf,
    token: Arc<TokenFile>,
}

/// Resolves the host names of the static targets. A static target is listed
/// whether its name resolves or not: one that does not is a target that is
/// down. `unresolved` holds the names that did not resolve last time, so a
/// failure and the recovery are each logged once.
async fn resolve_static(
    list: &[StaticSource],
    resolver: &Resolver,
    unresolved: &mut BTreeSet<String>,
) -> Vec<Listed> {
    let mut targets = Vec::new();
    for t in list {
        let endpoint = match resolver.resolve(&t.host_port).await {
            Ok(addr) => {
                if unresolved.remove(&t.instance) {
                    info!(instance = %t.instance, %addr, "static target resolves again");
                }
                Ok(Target {
                    instance: t.instance.clone(),
                    addr,
                    server_name: t.server_name.clone(),
                    path: t.path.clone(),
                    ca_file: t.ca_file.clone(),
                    token: Arc::clone(&t.token),
                })
            }
            Err(e) => {
                if unresolved.insert(t.instance.clone()) {
                    warn!(instance = %t.instance, error = %e, "static target does not resolve; it stays a target, down, until it does");
                }
                Err(e)
            }
        };
        targets.push(Listed {
            instance: t.instance.clone(),
            endpoint,
        });
    }
    targets
}

/// How often the names of static targets are resolved again.
const STATIC_REFRESH: Duration = Duration::from_secs(60);

/// `https://host:port/path` → (instance label `host:port`, path), without
/// resolving anything: the label of a static target never depends on DNS.
fn split_static_url(url: &reqwest::Url) -> (String, String) {
    // The configuration validated the URL: it has a host, and https has a
    // known default port.
    let host = url.host_str().unwrap_or_default();
    let port = url.port_or_known_default().unwrap_or(443);
    (format!("{host}:{port}"), url.path().to_owned())
}
