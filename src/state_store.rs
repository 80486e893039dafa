//! Where the state is kept: the local file ([`crate::state`]), or a
//! ConfigMap in the auditor's own namespace, shared by its replicas.
//!
//! The ConfigMap holds the snapshot ([`state::encode`]) gzipped under
//! `binaryData["state.json.gz"]`. Every write is a replace (PUT) carrying
//! the `resourceVersion` last read or written: the fence. A 409 means
//! another writer changed the object since: the write is refused, counted,
//! and the store forgets its fence, so nothing is written again before the
//! object has been read again ([`StateStore::load`]). A snapshot whose
//! encoded size passes [`MAX_OBJECT_BYTES`] is never sent.

// Shell (I/O allowed, see clippy.toml): the state file, the namespace file and the API.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::config::{Config, StateBackend};
use crate::credentials::TokenFile;
use crate::kubeapi::{KubeClient, KubeError};
use crate::state::{self, Loaded, Snapshot, StateError};
use crate::time::Timestamp;

/// The key of the ConfigMap's `binaryData` that holds the snapshot.
pub const CONFIGMAP_KEY: &str = "state.json.gz";
/// The largest encoded snapshot (base64 of the gzip) written to the
/// ConfigMap: Kubernetes refuses objects over 1 MiB; the rest is headroom
/// for metadata.
pub const MAX_OBJECT_BYTES: usize = 900 * 1024;
/// The largest snapshot accepted after decompression (a gzip bomb in the
/// ConfigMap is corrupt content, not a reason to run out of memory).
pub const MAX_DECODED_BYTES: u64 = 256 << 20;
/// The service account's namespace, mounted in every pod.
pub const NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";
/// Limit of one request to the API for the state.
const API_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why the state could not be read or written; names the object or file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file backend failed.
    #[error(transparent)]
    File(#[from] StateError),
    /// The API request failed (404: the ConfigMap the manifest ships is
    /// missing; 403: RBAC).
    #[error("state ConfigMap {object}: {source}")]
    Api {
        /// `namespace/name`.
        object: String,
        /// The request's error.
        source: KubeError,
    },
    /// Another writer changed the ConfigMap since it was last read: nothing
    /// was written; it is read again before the next write.
    #[error(
        "state ConfigMap {object}: another writer changed it since it was read (resourceVersion {fence} is not current); not overwritten, it is read again first"
    )]
    Conflict {
        /// `namespace/name`.
        object: String,
        /// The resourceVersion sent.
        fence: String,
    },
    /// No resourceVersion is known (the last read failed, or a conflict
    /// happened): the object must be read before it is written.
    #[error(
        "state ConfigMap {object}: not read since the last conflict or failed read; not written blindly"
    )]
    NotRead {
        /// `namespace/name`.
        object: String,
    },
    /// The encoded snapshot is too large for a ConfigMap.
    #[error(
        "state ConfigMap {object}: the encoded state is {bytes} bytes, over the limit of {limit} bytes (Kubernetes objects are at most 1 MiB); not written: shorten the cutover windows or use the file backend"
    )]
    TooLarge {
        /// `namespace/name`.
        object: String,
        /// The encoded size.
        bytes: usize,
        /// [`MAX_OBJECT_BYTES`].
        limit: usize,
    },
    /// The ConfigMap holds something that is not a state.
    #[error(
        "state ConfigMap {object}: corrupt content under binaryData[{CONFIGMAP_KEY:?}]: {reason}"
    )]
    Corrupt {
        /// `namespace/name`.
        object: String,
        /// What is wrong.
        reason: String,
    },
    /// The namespace could not be known.
    #[error(
        "cannot read the namespace from {path} (set state.namespace / leader_election.namespace outside a pod)"
    )]
    Namespace {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The client could not be built.
    #[error("state ConfigMap: {0}")]
    Client(KubeError),
    /// Encoding or the blocking task failed (a bug).
    #[error("state: {0}")]
    Internal(String),
}

/// The ConfigMap shape the store reads and writes.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMap {
    /// `v1`.
    #[serde(default)]
    pub api_version: String,
    /// `ConfigMap`.
    #[serde(default)]
    pub kind: String,
    /// Name, namespace, resourceVersion.
    pub metadata: ObjectMeta,
    /// Text entries (unused by the store, kept as they are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<std::collections::BTreeMap<String, String>>,
    /// Binary entries, base64 in JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_data: Option<std::collections::BTreeMap<String, String>>,
}

/// The metadata the store uses (others are dropped on write: labels and
/// annotations are kept, see [`ObjectMeta::extra`]).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// The name.
    #[serde(default)]
    pub name: String,
    /// The namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The version the server gave; the write precondition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
    /// Labels, annotations and the rest, kept on write.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// A ConfigMap used as the state store.
#[derive(Debug)]
pub struct ConfigMapStore {
    client: KubeClient,
    /// `namespace/name`, for messages.
    object: String,
    path: String,
    namespace: String,
    name: String,
    /// The resourceVersion last read or written; `None` until read, and
    /// after a conflict.
    fence: Mutex<Option<String>>,
    /// Labels and annotations of the object, kept on write.
    meta: Mutex<serde_json::Map<String, serde_json::Value>>,
    /// One write at a time from this replica: two writes with one fence
    /// would conflict with each other.
    writing: tokio::sync::Mutex<()>,
}

/// Where the state is kept.
#[derive(Debug, Clone)]
pub enum StateStore {
    /// Persistence disabled (`state.path = ""`).
    Disabled,
    /// The state file.
    File(PathBuf),
    /// A ConfigMap.
    ConfigMap(Arc<ConfigMapStore>),
}

/// The namespace `configured`, else the service account's namespace file.
pub fn namespace(configured: Option<&str>) -> Result<String, StoreError> {
    if let Some(ns) = configured {
        return Ok(ns.to_owned());
    }
    std::fs::read_to_string(NAMESPACE_FILE)
        .map(|s| s.trim().to_owned())
        .map_err(|source| StoreError::Namespace {
            path: NAMESPACE_FILE.into(),
            source,
        })
}

/// A client of the API for the daemon's own objects, from `[targets.kubernetes]`
/// or the in-cluster defaults.
pub fn kube_client(config: &Config) -> Result<KubeClient, KubeError> {
    let api = config.kube_api.as_ref().ok_or_else(|| {
        KubeError::Config("no Kubernetes API configured (validated away: a bug)".into())
    })?;
    KubeClient::new(
        &api.api_server,
        &api.server_name,
        &api.ca_file,
        Arc::new(TokenFile::new(api.token_file.clone())),
        API_TIMEOUT,
    )
}

impl StateStore {
    /// The store `config` names (reads the namespace file if needed).
    pub fn from_config(config: &Config) -> Result<StateStore, StoreError> {
        match &config.state.backend {
            StateBackend::File => Ok(match &config.state.path {
                Some(path) => StateStore::File(path.clone()),
                None => StateStore::Disabled,
            }),
            StateBackend::ConfigMap {
                name,
                namespace: ns,
            } => {
                let ns = namespace(ns.as_deref())?;
                let client = kube_client(config).map_err(StoreError::Client)?;
                Ok(StateStore::ConfigMap(Arc::new(ConfigMapStore::new(
                    client, &ns, name,
                ))))
            }
        }
    }

    /// `file /path`, `configmap ns/name` or `disabled`, for logs.
    pub fn describe(&self) -> String {
        match self {
            StateStore::Disabled => "disabled".into(),
            StateStore::File(p) => format!("file {}", p.display()),
            StateStore::ConfigMap(c) => format!("configmap {}", c.object),
        }
    }

    /// Reads the state. The file backend moves a corrupt file aside
    /// ([`state::load`]); the ConfigMap backend answers
    /// [`StoreError::Corrupt`] (and remembers the object's version, so the
    /// next write replaces it).
    pub async fn load(&self, now: Timestamp) -> Result<Loaded, StoreError> {
        match self {
            StateStore::Disabled => Ok(Loaded::Missing),
            StateStore::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || state::load(&path, now))
                    .await
                    .map_err(|e| StoreError::Internal(e.to_string()))?
                    .map_err(StoreError::from)
            }
            StateStore::ConfigMap(c) => c.load().await,
        }
    }

    /// Writes `snapshot`; returns its encoded size in bytes.
    pub async fn save(&self, snapshot: Snapshot) -> Result<usize, StoreError> {
        match self {
            StateStore::Disabled => Ok(0),
            StateStore::File(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    state::save(&path, &snapshot)?;
                    // The size written, without encoding twice.
                    Ok::<_, StateError>(std::fs::metadata(&path).map_or(0, |m| m.len() as usize))
                })
                .await
                .map_err(|e| StoreError::Internal(e.to_string()))?
                .map_err(StoreError::from)
            }
            StateStore::ConfigMap(c) => c.save(&snapshot).await,
        }
    }

    /// Whether writes are shared with other replicas (the ConfigMap).
    pub fn is_shared(&self) -> bool {
        matches!(self, StateStore::ConfigMap(_))
    }
}

/// The `binaryData` value of a snapshot: base64 of the gzip of
/// [`state::encode`].
pub fn encode_for_configmap(snapshot: &Snapshot) -> Result<String, String> {
    let json = state::encode(snapshot).map_err(|e| e.to_string())?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&json)
        .and_then(|()| gz.finish())
        .map(|bytes| STANDARD.encode(bytes))
        .map_err(|e| format!("cannot compress the state: {e}"))
}

/// The snapshot of a `binaryData` value; the error says what is wrong.
pub fn decode_from_configmap(value: &str) -> Result<Snapshot, String> {
    let gz = STANDARD
        .decode(value.trim())
        .map_err(|e| format!("not base64: {e}"))?;
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .take(MAX_DECODED_BYTES + 1)
        .read_to_end(&mut json)
        .map_err(|e| format!("not gzip: {e}"))?;
    if json.len() as u64 > MAX_DECODED_BYTES {
        return Err(format!(
            "larger than {MAX_DECODED_BYTES} bytes decompressed"
        ));
    }
    state::decode(&json)
}

impl ConfigMapStore {
    /// A store on ConfigMap `namespace/name`.
    pub fn new(client: KubeClient, namespace: &str, name: &str) -> ConfigMapStore {
        ConfigMapStore {
            client,
            object: format!("{namespace}/{name}"),
            path: format!("/api/v1/namespaces/{namespace}/configmaps/{name}"),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            fence: Mutex::new(None),
            meta: Mutex::new(serde_json::Map::new()),
            writing: tokio::sync::Mutex::new(()),
        }
    }

    fn api(&self, source: KubeError) -> StoreError {
        match source {
            KubeError::Conflict { .. } => StoreError::Conflict {
                object: self.object.clone(),
                fence: self.fence().unwrap_or_default(),
            },
            source => StoreError::Api {
                object: self.object.clone(),
                source,
            },
        }
    }

    /// The resourceVersion writes are fenced with, if known.
    pub fn fence(&self) -> Option<String> {
        self.fence.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_fence(&self, rv: Option<String>) {
        *self.fence.lock().unwrap_or_else(|p| p.into_inner()) = rv;
    }

    /// Reads the object: its state (or none yet), and its version as the
    /// fence of the next write, even when the content is corrupt (it is
    /// then replaced by the next write, on purpose and not blindly).
    pub async fn load(&self) -> Result<Loaded, StoreError> {
        let cm: ConfigMap = self.client.get(&self.path).await.map_err(|e| {
            self.set_fence(None);
            self.api(e)
        })?;
        self.set_fence(cm.metadata.resource_version.clone());
        *self.meta.lock().unwrap_or_else(|p| p.into_inner()) = cm.metadata.extra.clone();
        let value = cm.binary_data.as_ref().and_then(|b| b.get(CONFIGMAP_KEY));
        match value {
            None => Ok(Loaded::Missing),
            Some(v) => decode_from_configmap(v)
                .map(|s| Loaded::Resumed(Box::new(s)))
                .map_err(|reason| StoreError::Corrupt {
                    object: self.object.clone(),
                    reason,
                }),
        }
    }

    /// Replaces the object's content with `snapshot`, fenced by the
    /// version last read or written. Returns the encoded size.
    pub async fn save(&self, snapshot: &Snapshot) -> Result<usize, StoreError> {
        let value = encode_for_configmap(snapshot).map_err(StoreError::Internal)?;
        if value.len() > MAX_OBJECT_BYTES {
            return Err(StoreError::TooLarge {
                object: self.object.clone(),
                bytes: value.len(),
                limit: MAX_OBJECT_BYTES,
            });
        }
        let _one = self.writing.lock().await;
        let Some(fence) = self.fence() else {
            return Err(StoreError::NotRead {
                object: self.object.clone(),
            });
        };
        let size = value.len();
        let body = ConfigMap {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            metadata: ObjectMeta {
                name: self.name.clone(),
                namespace: Some(self.namespace.clone()),
                resource_version: Some(fence.clone()),
                extra: self.meta.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            },
            data: None,
            binary_data: Some([(CONFIGMAP_KEY.to_owned(), value)].into()),
        };
        match self.client.put::<_, ConfigMap>(&self.path, &body).await {
            Ok(written) => {
                self.set_fence(written.metadata.resource_version);
                Ok(size)
            }
            Err(KubeError::Conflict { .. }) => {
                // Never retried with a fresher version: that would overwrite
                // the other writer's state unread.
                self.set_fence(None);
                Err(StoreError::Conflict {
                    object: self.object.clone(),
                    fence,
                })
            }
            Err(e) => Err(self.api(e)),
        }
    }
}
