//! Which workloads mount which token Secrets (pure).
//!
//! A Pod uses a Secret through a `secret` volume, a `projected` volume's
//! `secret` source, or a container's `env[].valueFrom.secretKeyRef` /
//! `envFrom[].secretRef` (init and ephemeral containers included). Its
//! workload is found up the controller chain: ReplicaSet → Deployment,
//! Job → CronJob; StatefulSet and DaemonSet own their Pods directly.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use super::secrets::{Metadata, ObjectRef};

/// A workload: `Deployment ci/runner`, or a bare `Pod ci/debug`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Workload {
    /// `Deployment`, `StatefulSet`, `DaemonSet`, `CronJob`, `Job`,
    /// `ReplicaSet`, another owner kind, or `Pod`.
    pub kind: String,
    /// Its namespace and name.
    #[serde(flatten)]
    pub object: ObjectRef,
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.object)
    }
}

/// A Pod, reduced to what attribution needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodUse {
    /// The Pod.
    pub pod: ObjectRef,
    /// Its controller, if any: (kind, name).
    pub owner: Option<(String, String)>,
    /// The Secrets (same namespace) it mounts or reads.
    pub secrets: BTreeSet<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSpec {
    #[serde(default)]
    volumes: Vec<Volume>,
    #[serde(default)]
    containers: Vec<Container>,
    #[serde(default)]
    init_containers: Vec<Container>,
    #[serde(default)]
    ephemeral_containers: Vec<Container>,
}

#[derive(Debug, Default, Deserialize)]
struct Volume {
    secret: Option<SecretVolume>,
    projected: Option<Projected>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SecretVolume {
    secret_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Projected {
    #[serde(default)]
    sources: Vec<ProjectedSource>,
}

#[derive(Debug, Default, Deserialize)]
struct ProjectedSource {
    secret: Option<Named>,
}

#[derive(Debug, Default, Deserialize)]
struct Named {
    name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Container {
    #[serde(default)]
    env: Vec<EnvVar>,
    #[serde(default)]
    env_from: Vec<EnvFrom>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvVar {
    value_from: Option<EnvSource>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvSource {
    secret_key_ref: Option<Named>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvFrom {
    secret_ref: Option<Named>,
}

/// A Pod of a `PodList` page.
#[derive(Debug, Deserialize)]
pub struct Pod {
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    spec: PodSpec,
}

/// A `PodList` page.
#[derive(Debug, Deserialize)]
pub struct PodList {
    /// Paging.
    #[serde(default)]
    pub metadata: super::secrets::ListMeta,
    /// The Pods.
    #[serde(default)]
    pub items: Vec<Pod>,
}

impl PodList {
    /// The continue token, if another page follows.
    pub fn next(&self) -> Option<&str> {
        self.metadata.continue_.as_deref().filter(|c| !c.is_empty())
    }
}

/// The controller of an object (the owner reference marked `controller`,
/// else the first one).
pub fn controller(meta: &Metadata) -> Option<(String, String)> {
    let refs = &meta.owner_references;
    refs.iter()
        .find(|r| r.controller == Some(true))
        .or_else(|| refs.first())
        .filter(|r| !r.kind.is_empty() && !r.name.is_empty())
        .map(|r| (r.kind.clone(), r.name.clone()))
}

impl Pod {
    /// What this Pod uses, keeping only the Secrets `wanted` says are token
    /// Secrets (so memory follows token Secrets, not Pods); `None` if it uses none.
    pub fn uses(&self, wanted: impl Fn(&ObjectRef) -> bool) -> Option<PodUse> {
        let ns = &self.metadata.namespace;
        let mut names = BTreeSet::new();
        for v in &self.spec.volumes {
            if let Some(name) = v.secret.as_ref().and_then(|s| s.secret_name.as_ref()) {
                names.insert(name.clone());
            }
            for src in v.projected.iter().flat_map(|p| &p.sources) {
                if let Some(name) = src.secret.as_ref().and_then(|s| s.name.as_ref()) {
                    names.insert(name.clone());
                }
            }
        }
        let containers = self
            .spec
            .containers
            .iter()
            .chain(&self.spec.init_containers)
            .chain(&self.spec.ephemeral_containers);
        for c in containers {
            for e in &c.env {
                if let Some(name) = e
                    .value_from
                    .as_ref()
                    .and_then(|v| v.secret_key_ref.as_ref())
                    .and_then(|r| r.name.as_ref())
                {
                    names.insert(name.clone());
                }
            }
            for e in &c.env_from {
                if let Some(name) = e.secret_ref.as_ref().and_then(|r| r.name.as_ref()) {
                    names.insert(name.clone());
                }
            }
        }
        names.retain(|n| {
            wanted(&ObjectRef {
                namespace: ns.clone(),
                name: n.clone(),
            })
        });
        (!names.is_empty()).then(|| PodUse {
            pod: ObjectRef {
                namespace: ns.clone(),
                name: self.metadata.name.clone(),
            },
            owner: controller(&self.metadata),
            secrets: names,
        })
    }
}

/// The controllers of intermediate owners, by kind and `namespace/name`:
/// ReplicaSets (→ Deployment) and Jobs (→ CronJob).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Owners {
    /// (kind, namespace, name) → (owner kind, owner name).
    pub parents: BTreeMap<(String, String, String), (String, String)>,
}

impl Owners {
    /// Records the controller of a listed ReplicaSet or Job.
    pub fn record(&mut self, kind: &str, meta: &Metadata) {
        if let Some(parent) = controller(meta) {
            self.parents.insert(
                (kind.to_owned(), meta.namespace.clone(), meta.name.clone()),
                parent,
            );
        }
    }

    /// The top workload of a Pod: its controller, followed up at most two
    /// levels (ReplicaSet → Deployment, Job → CronJob); the Pod itself when
    /// it has none.
    pub fn workload(&self, pod: &PodUse) -> Workload {
        let ns = pod.pod.namespace.clone();
        let Some((mut kind, mut name)) = pod.owner.clone() else {
            return Workload {
                kind: "Pod".into(),
                object: pod.pod.clone(),
            };
        };
        for _ in 0..2 {
            match self.parents.get(&(kind.clone(), ns.clone(), name.clone())) {
                Some((k, n)) => (kind, name) = (k.clone(), n.clone()),
                None => break,
            }
        }
        Workload {
            kind,
            object: ObjectRef {
                namespace: ns,
                name,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods(json: &str) -> PodList {
        serde_json::from_str(json).expect("a PodList")
    }

    #[test]
    fn every_way_of_using_a_secret_is_found_and_owners_are_followed() {
        let list = pods(
            r#"{"kind":"PodList","metadata":{"continue":""},"items":[
            {"metadata":{"name":"runner-5d9f-abcde","namespace":"ci",
               "ownerReferences":[{"kind":"ReplicaSet","name":"runner-5d9f","controller":true}]},
             "spec":{"volumes":[{"name":"t","secret":{"secretName":"builder-token-x7k2p"}},
                                {"name":"p","projected":{"sources":[{"secret":{"name":"other-token"}},{"configMap":{"name":"x"}}]}}],
                     "containers":[{"name":"c","env":[{"name":"A","value":"b"}]}]}},
            {"metadata":{"name":"nightly-28-xyz","namespace":"ci",
               "ownerReferences":[{"kind":"Job","name":"nightly-28","controller":true}]},
             "spec":{"containers":[{"name":"c","envFrom":[{"secretRef":{"name":"builder-token-x7k2p"}}]}],
                     "initContainers":[{"name":"i","env":[{"name":"T","valueFrom":{"secretKeyRef":{"name":"init-token","key":"token"}}}]}]}},
            {"metadata":{"name":"debug","namespace":"ci"},
             "spec":{"volumes":[{"name":"t","secret":{"secretName":"not-a-token"}}]}},
            {"metadata":{"name":"db-0","namespace":"data",
               "ownerReferences":[{"kind":"StatefulSet","name":"db","controller":true}]},
             "spec":{"volumes":[{"name":"t","secret":{"secretName":"db-token"}}]}}
        ]}"#,
        );
        assert_eq!(list.next(), None);
        let tokens = [
            "ci/builder-token-x7k2p",
            "ci/other-token",
            "ci/init-token",
            "data/db-token",
        ];
        let wanted = |r: &ObjectRef| tokens.contains(&r.to_string().as_str());
        let uses: Vec<PodUse> = list.items.iter().filter_map(|p| p.uses(wanted)).collect();
        assert_eq!(uses.len(), 3, "the pod mounting no token Secret is dropped");
        assert_eq!(
            uses[0].secrets.iter().cloned().collect::<Vec<_>>(),
            ["builder-token-x7k2p", "other-token"]
        );
        assert_eq!(
            uses[1].secrets.iter().cloned().collect::<Vec<_>>(),
            ["builder-token-x7k2p", "init-token"]
        );

        let mut owners = Owners::default();
        let meta = |json: &str| -> Metadata { serde_json::from_str(json).unwrap() };
        owners.record(
            "ReplicaSet",
            &meta(r#"{"name":"runner-5d9f","namespace":"ci","ownerReferences":[{"kind":"Deployment","name":"runner","controller":true}]}"#),
        );
        owners.record(
            "Job",
            &meta(r#"{"name":"nightly-28","namespace":"ci","ownerReferences":[{"kind":"CronJob","name":"nightly","controller":true}]}"#),
        );
        let names: Vec<String> = uses
            .iter()
            .map(|u| owners.workload(u).to_string())
            .collect();
        assert_eq!(
            names,
            [
                "Deployment ci/runner",
                "CronJob ci/nightly",
                "StatefulSet data/db"
            ]
        );
        // Without the ReplicaSet listed, the chain stops at what is known.
        assert_eq!(
            Owners::default().workload(&uses[0]).to_string(),
            "ReplicaSet ci/runner-5d9f"
        );
    }
}
