//! The attribution task: lists the sources on an interval and adds what
//! they say to every status the daemon publishes.
//!
//! It never touches the verdicts: it only fills `Status::attribution`. Any
//! failure (a 403 most of all) becomes `attribution unavailable: <reason>`.

// Shell (I/O allowed, see clippy.toml): HTTPS listing and timers.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{info, warn};

use super::audit_file::AuditFollower;
use super::client::{ApiError, KubeApi};
use super::report::{self, Observed, Source, SourceError};
use super::secrets::{
    self, METADATA_ACCEPT, MetadataList, ObjectRef, TOKEN_SECRET_TYPE, TRACKING_CONFIGMAP,
    TRACKING_NAMESPACE, TokenSecret,
};
use super::workloads::{Owners, PodList, PodUse};
use crate::clock::Clock;
use crate::config::{AttributionConfig, Config};
use crate::cutover::BuiltinCutover;
use crate::metrics::Metrics;
use crate::status::Status;
use crate::time::Timestamp;

/// The limit of one request of a listing round.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The most pages one list may take (a safety net against a server that
/// never stops handing out `continue` tokens).
pub const MAX_PAGES: usize = 10_000;

/// Lists the sources of one configuration.
#[derive(Debug)]
pub struct Lister {
    api: Result<KubeApi, String>,
    config: AttributionConfig,
}

fn error(source: Source, e: &ApiError) -> SourceError {
    SourceError {
        source,
        reason: e.reason().to_owned(),
        detail: e.to_string(),
    }
}

impl Lister {
    /// A lister; a client that cannot be built (CA unreadable) is reported
    /// by every round, never fatal.
    pub fn new(config: AttributionConfig) -> Lister {
        let api = KubeApi::new(&config, REQUEST_TIMEOUT).map_err(|e| e.to_string());
        Lister { api, config }
    }

    /// One listing round: token Secrets (metadata only), the tracking
    /// ConfigMap and, when enabled, the workloads mounting the Secrets.
    pub async fn round(&self, now: Timestamp) -> Observed {
        let mut observed = Observed {
            at: Some(now),
            ..Observed::default()
        };
        if !self.config.token_secrets {
            return observed;
        }
        let api = match &self.api {
            Ok(api) => api,
            Err(e) => {
                observed.errors.push(SourceError {
                    source: Source::TokenSecrets,
                    reason: "config".into(),
                    detail: e.clone(),
                });
                return observed;
            }
        };
        match self.secrets(api).await {
            Ok(list) => observed.secrets = Some(list),
            Err(e) => observed.errors.push(e),
        }
        let cm_path =
            format!("/api/v1/namespaces/{TRACKING_NAMESPACE}/configmaps/{TRACKING_CONFIGMAP}");
        match api.get(&cm_path, &[], "application/json").await {
            Ok(body) => match secrets::tracking_since(&body) {
                Ok(d) => observed.tracking_since = Some(d),
                Err(detail) => observed.errors.push(SourceError {
                    source: Source::TrackingConfigmap,
                    reason: "decode".into(),
                    detail,
                }),
            },
            Err(e) => observed.errors.push(error(Source::TrackingConfigmap, &e)),
        }
        if self.config.workloads
            && let Some(list) = &observed.secrets
        {
            let tokens: BTreeSet<ObjectRef> = list.iter().map(|s| s.secret.clone()).collect();
            match self.workloads(api, &tokens).await {
                Ok(mounts) => observed.mounts = Some(mounts),
                Err(e) => observed.errors.push(e),
            }
        }
        observed
    }

    /// Pages through a list; `each` gets every page's body.
    async fn pages(
        &self,
        api: &KubeApi,
        source: Source,
        path: &str,
        field_selector: Option<&str>,
        accept: &str,
        mut each: impl FnMut(&[u8]) -> Result<Option<String>, String>,
    ) -> Result<(), SourceError> {
        let limit = self.config.page_size.to_string();
        let mut cont = String::new();
        for _ in 0..MAX_PAGES {
            let mut query = vec![("limit", limit.as_str())];
            if let Some(fs) = field_selector {
                query.push(("fieldSelector", fs));
            }
            if !cont.is_empty() {
                query.push(("continue", cont.as_str()));
            }
            let body = api
                .get(path, &query, accept)
                .await
                .map_err(|e| error(source, &e))?;
            match each(&body) {
                Ok(Some(next)) => cont = next,
                Ok(None) => return Ok(()),
                Err(detail) => {
                    return Err(SourceError {
                        source,
                        reason: "decode".into(),
                        detail: format!("GET {path}: {detail}"),
                    });
                }
            }
        }
        Err(SourceError {
            source,
            reason: "too_many_pages".into(),
            detail: format!("GET {path}: more than {MAX_PAGES} pages"),
        })
    }

    async fn secrets(&self, api: &KubeApi) -> Result<Vec<TokenSecret>, SourceError> {
        let max = self.config.max_secrets;
        let mut out = Vec::new();
        let selector = format!("type={TOKEN_SECRET_TYPE}");
        self.pages(
            api,
            Source::TokenSecrets,
            "/api/v1/secrets",
            Some(&selector),
            METADATA_ACCEPT,
            |body| {
                let list: MetadataList =
                    serde_json::from_slice(body).map_err(|e| format!("not a metadata list: {e}"))?;
                if list.kind != "PartialObjectMetadataList" {
                    // A server that ignored the Accept header: its answer is
                    // dropped unread.
                    return Err(format!(
                        "answered kind {:?}, not PartialObjectMetadataList: the metadata-only form was not honoured",
                        list.kind
                    ));
                }
                for item in &list.items {
                    if out.len() >= max {
                        return Err(format!(
                            "more than {max} token Secrets (attribution.max_secrets)"
                        ));
                    }
                    out.push(secrets::token_secret(&item.metadata));
                }
                Ok(list.next().map(str::to_owned))
            },
        )
        .await
        .map_err(|mut e| {
            if e.detail.contains("attribution.max_secrets") {
                e.reason = "too_many_secrets".into();
            }
            e
        })?;
        Ok(out)
    }

    async fn workloads(
        &self,
        api: &KubeApi,
        tokens: &BTreeSet<ObjectRef>,
    ) -> Result<BTreeMap<ObjectRef, BTreeSet<super::workloads::Workload>>, SourceError> {
        let mut uses: Vec<PodUse> = Vec::new();
        self.pages(
            api,
            Source::Workloads,
            "/api/v1/pods",
            None,
            "application/json",
            |body| {
                let list: PodList =
                    serde_json::from_slice(body).map_err(|e| format!("not a PodList: {e}"))?;
                uses.extend(
                    list.items
                        .iter()
                        .filter_map(|p| p.uses(|r| tokens.contains(r))),
                );
                Ok(list.next().map(str::to_owned))
            },
        )
        .await?;
        // Only the owners the kept Pods name are remembered.
        let wanted: BTreeSet<(String, String, String)> = uses
            .iter()
            .filter_map(|u| {
                u.owner
                    .as_ref()
                    .map(|(k, n)| (k.clone(), u.pod.namespace.clone(), n.clone()))
            })
            .collect();
        let mut owners = Owners::default();
        for (kind, path) in [
            ("ReplicaSet", "/apis/apps/v1/replicasets"),
            ("Job", "/apis/batch/v1/jobs"),
        ] {
            if !wanted.iter().any(|(k, _, _)| k == kind) {
                continue;
            }
            self.pages(
                api,
                Source::Workloads,
                path,
                None,
                METADATA_ACCEPT,
                |body| {
                    let list: MetadataList = serde_json::from_slice(body)
                        .map_err(|e| format!("not a metadata list: {e}"))?;
                    for item in &list.items {
                        let m = &item.metadata;
                        if wanted.contains(&(kind.to_owned(), m.namespace.clone(), m.name.clone()))
                        {
                            owners.record(kind, m);
                        }
                    }
                    Ok(list.next().map(str::to_owned))
                },
            )
            .await?;
        }
        let mut mounts: BTreeMap<ObjectRef, BTreeSet<super::workloads::Workload>> = BTreeMap::new();
        for u in &uses {
            let w = owners.workload(u);
            for name in &u.secrets {
                mounts
                    .entry(ObjectRef {
                        namespace: u.pod.namespace.clone(),
                        name: name.clone(),
                    })
                    .or_default()
                    .insert(w.clone());
            }
        }
        Ok(mounts)
    }
}

/// The attribution task of a running daemon.
pub struct Attributor {
    lister: Lister,
    clock: Clock,
    metrics: Arc<Metrics>,
    status: watch::Sender<Status>,
    /// The window the `cutover_token_secrets{class}` gauge classifies with.
    class_window: Duration,
    observed: Observed,
    subjects: BTreeMap<String, BTreeSet<String>>,
    audit: Option<AuditFollower>,
}

impl Attributor {
    /// The task for `config.attribution`, publishing into `status`.
    pub fn new(
        attribution: AttributionConfig,
        config: &Config,
        clock: Clock,
        metrics: Arc<Metrics>,
        status: watch::Sender<Status>,
    ) -> Attributor {
        let class_window = config
            .cutovers
            .iter()
            .find(|c| c.name.builtin() == Some(BuiltinCutover::LegacyTokens))
            .map(|c| c.window)
            .unwrap_or(BuiltinCutover::LegacyTokens.default_window());
        let audit = attribution.audit_log.clone().map(|path| {
            AuditFollower::new(
                path,
                attribution.audit_position_file.clone(),
                attribution.audit_capacity,
            )
        });
        Attributor {
            audit,
            lister: Lister::new(attribution),
            clock,
            metrics,
            status,
            class_window,
            observed: Observed::default(),
            subjects: BTreeMap::new(),
        }
    }

    /// Lists every interval and re-attributes every published status, until
    /// the daemon stops (it is aborted then: it holds nothing to finish).
    pub async fn run(mut self) {
        let mut evaluations = self.status.subscribe();
        loop {
            let now = self.clock.now();
            self.observed = self.lister.round(now).await;
            if let Some(follower) = &mut self.audit {
                // Reads what was appended since the last round (bounded by
                // what the apiserver wrote in one interval).
                if let Err(e) = follower.poll() {
                    self.observed.errors.push(SourceError {
                        source: Source::AuditLog,
                        reason: "read".into(),
                        detail: e.to_string(),
                    });
                }
                self.observed.audit = Some(follower.aggregate.clone());
            }
            for e in &self.observed.errors {
                warn!(
                    source = e.source.label(),
                    reason = %e.reason,
                    detail = %e.detail,
                    "attribution unavailable"
                );
                self.metrics.attribution_error(e.source.label(), &e.reason);
            }
            if let Some(list) = &self.observed.secrets {
                let counts = secrets::class_counts(
                    list,
                    self.class_window,
                    now,
                    self.observed.tracking_since,
                );
                self.metrics.set_token_secrets(
                    &counts
                        .iter()
                        .map(|(c, n)| (c.label(), *n))
                        .collect::<Vec<_>>(),
                );
            }
            self.publish();
            let clock = self.clock.clone();
            let pause = clock.sleep(self.lister.config.interval);
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    () = &mut pause => break,
                    changed = evaluations.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        self.publish();
                    }
                }
            }
        }
    }

    /// Adds the attribution to the current status, if it differs.
    fn publish(&mut self) {
        let Attributor {
            observed,
            subjects,
            metrics,
            clock,
            status: sender,
            ..
        } = self;
        sender.send_if_modified(|status| {
            let now = status.evaluated_at.unwrap_or_else(|| clock.now());
            let a = report::attribute(&status.cutovers, observed, now);
            for c in &a.cutovers {
                let current = report::subjects(&a, &c.name);
                let before = subjects.remove(&c.name).unwrap_or_default();
                for s in current.difference(&before) {
                    info!(cutover = %c.name, subject = %s, "attribution: a subject started using a legacy token inside the window");
                }
                for s in before.difference(&current) {
                    info!(cutover = %c.name, subject = %s, "attribution: a subject stopped using a legacy token inside the window");
                }
                metrics.set_attributed_subjects(&c.name, current.len() as u64);
                subjects.insert(c.name.clone(), current);
            }
            if status.attribution.as_ref() == Some(&a) {
                return false;
            }
            status.attribution = Some(a);
            true
        });
    }
}
