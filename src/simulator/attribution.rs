//! What attribution reads from a cluster, simulated: token Secrets whose
//! `kubernetes.io/legacy-token-last-used` label is set on use (by date, as
//! kube-apiserver does), the tracking ConfigMap, Pods and their owners, an
//! RBAC refusal switch, and a record of every request so tests can prove the
//! auditor never asked for Secret data.
//!
//! Served by every simulated instance and the Service address (a routing
//! hook in `server.rs`), behind the same bearer-token check.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use serde_json::{Value, json};

use crate::attribution::secrets::{Date, INVALID_SINCE_LABEL, LAST_USED_LABEL, METADATA_ACCEPT};
use crate::time::Timestamp;

/// One request the attribution routes received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `GET`, `WATCH` is a GET with `watch=true` in the query.
    pub method: String,
    /// The path.
    pub path: String,
    /// The raw query.
    pub query: String,
    /// The `Accept` header, if any.
    pub accept: Option<String>,
}

impl RecordedRequest {
    /// Whether the request could have returned Secret data: a Secret path
    /// asked without the metadata-only `Accept`, or any watch or single get
    /// of a Secret.
    pub fn could_read_secret_data(&self) -> bool {
        let secret_path = self.path == "/api/v1/secrets"
            || (self.path.starts_with("/api/v1/namespaces/") && self.path.contains("/secrets"));
        let metadata = self
            .accept
            .as_deref()
            .is_some_and(|a| a.contains("as=PartialObjectMetadataList"));
        let single = self.path.contains("/secrets/");
        let watch = self
            .query
            .split('&')
            .any(|kv| kv == "watch=true" || kv == "watch=1");
        secret_path && (!metadata || single || watch)
    }
}

#[derive(Clone, Debug)]
struct SimSecret {
    service_account: String,
    labels: BTreeMap<String, String>,
    token: String,
}

#[derive(Default)]
struct Inner {
    secrets: BTreeMap<(String, String), SimSecret>,
    tracking_since: Option<String>,
    pods: Vec<Value>,
    owners: Vec<(String, Value)>,
    forbidden: bool,
    requests: Vec<RecordedRequest>,
}

/// The attribution side of a simulated cluster.
#[derive(Default)]
pub struct AttributionSim {
    inner: Mutex<Inner>,
}

/// An answer of the attribution routes.
pub(crate) enum Reply {
    /// 200 with this JSON.
    Json(Vec<u8>),
    /// An error `Status`: code, reason, message.
    Error(u16, &'static str, String),
}

impl AttributionSim {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a token Secret of ServiceAccount `sa` (no labels yet).
    pub fn add_token_secret(&self, namespace: &str, name: &str, sa: &str) {
        self.lock().secrets.insert(
            (namespace.into(), name.into()),
            SimSecret {
                service_account: sa.into(),
                labels: BTreeMap::new(),
                token: format!("simulated-secret-token-data-{namespace}-{name}"),
            },
        );
    }

    /// The Secret's token is used at `now`: its last-used label becomes the
    /// UTC date, unless it already says that day or the next (kube-apiserver
    /// writes it at most once a day).
    pub fn use_token(&self, namespace: &str, name: &str, now: Timestamp) {
        let today = Date::of(now);
        let mut inner = self.lock();
        if let Some(s) = inner.secrets.get_mut(&(namespace.into(), name.into())) {
            let current = s.labels.get(LAST_USED_LABEL).and_then(|d| Date::parse(d));
            if current != Some(today) && current != Some(Date(today.0 + 1)) {
                s.labels.insert(LAST_USED_LABEL.into(), today.to_string());
            }
        }
    }

    /// Sets a label on a Secret (`legacy-token-invalid-since`, or a
    /// last-used date in the past).
    pub fn set_label(&self, namespace: &str, name: &str, key: &str, value: &str) {
        if let Some(s) = self
            .lock()
            .secrets
            .get_mut(&(namespace.into(), name.into()))
        {
            s.labels.insert(key.into(), value.into());
        }
    }

    /// Invalidates a Secret since `date` (as the cleaner does).
    pub fn invalidate(&self, namespace: &str, name: &str, date: &str) {
        self.set_label(namespace, name, INVALID_SINCE_LABEL, date);
    }

    /// The tracking ConfigMap's `since`; `None` removes the ConfigMap.
    pub fn set_tracking_since(&self, since: Option<&str>) {
        self.lock().tracking_since = since.map(str::to_owned);
    }

    /// Adds a Pod mounting `secret` as a volume, owned by `owner` (kind, name).
    pub fn add_pod(&self, namespace: &str, name: &str, owner: Option<(&str, &str)>, secret: &str) {
        let spec = json!({
            "serviceAccountName": "default",
            "volumes": [{"name": "token", "secret": {"secretName": secret}}],
            "containers": [{"name": "main", "image": "busybox"}],
        });
        self.add_pod_with_spec(namespace, name, owner, spec);
    }

    /// Adds a Pod with this spec.
    pub fn add_pod_with_spec(
        &self,
        namespace: &str,
        name: &str,
        owner: Option<(&str, &str)>,
        spec: Value,
    ) {
        let meta = metadata(namespace, name, owner, &BTreeMap::new(), &BTreeMap::new());
        self.lock().pods.push(json!({
            "kind": "Pod", "apiVersion": "v1", "metadata": meta, "spec": spec,
        }));
    }

    /// Adds a ReplicaSet or Job owned by `owner` (kind, name).
    pub fn add_owner(&self, kind: &str, namespace: &str, name: &str, owner: Option<(&str, &str)>) {
        let meta = metadata(namespace, name, owner, &BTreeMap::new(), &BTreeMap::new());
        self.lock().owners.push((kind.into(), meta));
    }

    /// Whether every attribution route answers 403 (RBAC without the
    /// attribution component).
    pub fn set_forbidden(&self, forbidden: bool) {
        self.lock().forbidden = forbidden;
    }

    /// Every request the attribution routes received, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// Answers a request if it is one of the attribution routes.
    pub(crate) fn route(
        &self,
        method: &str,
        path: &str,
        query: &str,
        accept: Option<&str>,
    ) -> Option<Reply> {
        let resource = resource_of(path)?;
        let mut inner = self.lock();
        inner.requests.push(RecordedRequest {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            accept: accept.map(str::to_owned),
        });
        if method != "GET" {
            return Some(Reply::Error(
                405,
                "MethodNotAllowed",
                format!("{method} is not supported here"),
            ));
        }
        if inner.forbidden {
            let (verb, res, scope) = match resource {
                Resource::TrackingConfigmap => (
                    "get",
                    "configmaps",
                    "in API group \"\" in the namespace \"kube-system\"",
                ),
                Resource::Secrets | Resource::OneSecret => {
                    ("list", "secrets", "in API group \"\" at the cluster scope")
                }
                Resource::Pods => ("list", "pods", "in API group \"\" at the cluster scope"),
                Resource::ReplicaSets => (
                    "list",
                    "replicasets",
                    "in API group \"apps\" at the cluster scope",
                ),
                Resource::Jobs => (
                    "list",
                    "jobs",
                    "in API group \"batch\" at the cluster scope",
                ),
            };
            return Some(Reply::Error(
                403,
                "Forbidden",
                format!(
                    "{res} is forbidden: User \"system:serviceaccount:monitoring:cutover-auditor\" cannot {verb} resource \"{res}\" {scope}"
                ),
            ));
        }
        let params = query_params(query);
        let as_metadata = accept.is_some_and(|a| a.contains("as=PartialObjectMetadataList"));
        let limit: usize = params
            .get("limit")
            .and_then(|l| l.parse().ok())
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX);
        let start: usize = params
            .get("continue")
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let reply = match resource {
            Resource::TrackingConfigmap => match &inner.tracking_since {
                Some(since) => Reply::Json(
                    json!({
                        "kind": "ConfigMap", "apiVersion": "v1",
                        "metadata": {"name": crate::attribution::secrets::TRACKING_CONFIGMAP, "namespace": "kube-system"},
                        "data": {"since": since},
                    })
                    .to_string()
                    .into_bytes(),
                ),
                None => Reply::Error(
                    404,
                    "NotFound",
                    format!("configmaps \"{}\" not found", crate::attribution::secrets::TRACKING_CONFIGMAP),
                ),
            },
            Resource::OneSecret => Reply::Error(404, "NotFound", "not served: the auditor must never get a Secret".into()),
            Resource::Secrets => {
                let selector = params.get("fieldSelector").cloned().unwrap_or_default();
                if !selector.is_empty() && selector != "type=kubernetes.io/service-account-token" {
                    return Some(Reply::Error(400, "BadRequest", format!("unsupported fieldSelector {selector:?}")));
                }
                let items: Vec<Value> = inner
                    .secrets
                    .iter()
                    .map(|((ns, name), s)| {
                        let annotations: BTreeMap<String, String> =
                            [("kubernetes.io/service-account.name".to_owned(), s.service_account.clone())].into();
                        let meta = metadata(ns, name, None, &s.labels, &annotations);
                        if as_metadata {
                            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta})
                        } else {
                            json!({
                                "metadata": meta,
                                "type": "kubernetes.io/service-account-token",
                                "data": {"token": hex(&s.token)},
                            })
                        }
                    })
                    .collect();
                page(items, start, limit, if as_metadata { None } else { Some(("SecretList", "v1")) })
            }
            Resource::Pods => page(inner.pods.clone(), start, limit, Some(("PodList", "v1"))),
            Resource::ReplicaSets | Resource::Jobs => {
                let kind = if matches!(resource, Resource::Jobs) { "Job" } else { "ReplicaSet" };
                let items: Vec<Value> = inner
                    .owners
                    .iter()
                    .filter(|(k, _)| k == kind)
                    .map(|(_, meta)| {
                        if as_metadata {
                            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta})
                        } else {
                            json!({"metadata": meta, "spec": {}})
                        }
                    })
                    .collect();
                let full = if kind == "Job" { ("JobList", "batch/v1") } else { ("ReplicaSetList", "apps/v1") };
                page(items, start, limit, if as_metadata { None } else { Some(full) })
            }
        };
        Some(reply)
    }
}

#[derive(Clone, Copy)]
enum Resource {
    Secrets,
    OneSecret,
    TrackingConfigmap,
    Pods,
    ReplicaSets,
    Jobs,
}

fn resource_of(path: &str) -> Option<Resource> {
    let tracking = format!(
        "/api/v1/namespaces/kube-system/configmaps/{}",
        crate::attribution::secrets::TRACKING_CONFIGMAP
    );
    match path {
        "/api/v1/secrets" => Some(Resource::Secrets),
        "/api/v1/pods" => Some(Resource::Pods),
        "/apis/apps/v1/replicasets" => Some(Resource::ReplicaSets),
        "/apis/batch/v1/jobs" => Some(Resource::Jobs),
        p if p == tracking => Some(Resource::TrackingConfigmap),
        p if p.starts_with("/api/v1/namespaces/") && p.contains("/secrets/") => {
            Some(Resource::OneSecret)
        }
        p if p.starts_with("/api/v1/namespaces/") && p.ends_with("/secrets") => {
            Some(Resource::Secrets)
        }
        _ => None,
    }
}

fn metadata(
    namespace: &str,
    name: &str,
    owner: Option<(&str, &str)>,
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
) -> Value {
    let mut meta =
        json!({"name": name, "namespace": namespace, "uid": format!("uid-{namespace}-{name}")});
    if !labels.is_empty() {
        meta["labels"] = json!(labels);
    }
    if !annotations.is_empty() {
        meta["annotations"] = json!(annotations);
    }
    if let Some((kind, owner)) = owner {
        meta["ownerReferences"] = json!([{"kind": kind, "name": owner, "controller": true, "apiVersion": "v1", "uid": "x"}]);
    }
    meta
}

fn page(items: Vec<Value>, start: usize, limit: usize, full: Option<(&str, &str)>) -> Reply {
    let end = start.saturating_add(limit).min(items.len());
    let cont = if end < items.len() {
        end.to_string()
    } else {
        String::new()
    };
    let slice: Vec<Value> = items
        .get(start.min(items.len())..end)
        .unwrap_or(&[])
        .to_vec();
    let (kind, api_version) = full.unwrap_or(("PartialObjectMetadataList", "meta.k8s.io/v1"));
    Reply::Json(
        json!({
            "kind": kind, "apiVersion": api_version,
            "metadata": {"resourceVersion": "1", "continue": cont},
            "items": slice,
        })
        .to_string()
        .into_bytes(),
    )
}

fn query_params(query: &str) -> BTreeMap<String, String> {
    reqwest::Url::parse(&format!("http://x/?{query}"))
        .map(|u| {
            u.query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

// The simulated Secret data: not real base64, but unmistakable in a body.
fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Whether the `Accept` of the metadata-only form is the one the auditor
/// sends (for tests).
pub fn is_metadata_accept(accept: &str) -> bool {
    accept == METADATA_ACCEPT
}

impl super::Simulation {
    /// The attribution side of the simulated cluster.
    pub fn attribution(&self) -> &AttributionSim {
        &self.shared.attribution
    }
}
