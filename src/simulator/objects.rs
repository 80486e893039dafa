//! The simulated apiserver's own objects, for one namespace: ConfigMaps
//! (get, replace) and `coordination.k8s.io/v1` Leases (get, create,
//! replace), with `resourceVersion` preconditions answered by 409 Conflict
//! as the real apiserver does, and the 1 MiB limit of a ConfigMap's data.
//!
//! Pure bookkeeping on JSON values; the HTTP edge is `server.rs`, which
//! routes the paths [`route`] recognises here.

use std::collections::BTreeMap;
use std::sync::Mutex;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

/// The namespace the simulated objects live in.
pub const NAMESPACE: &str = "cutover-auditor";
/// The ConfigMap seeded empty, as the Kustomize component ships it.
pub const STATE_CONFIGMAP: &str = "cutover-auditor-state";
/// The Lease seeded empty, as the Kustomize component ships it.
pub const LEASE: &str = "cutover-auditor";
/// The most bytes a ConfigMap's `data` and `binaryData` may hold together.
pub const MAX_CONFIGMAP_BYTES: usize = 1 << 20;

/// The kinds served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// `v1` ConfigMap.
    ConfigMap,
    /// `coordination.k8s.io/v1` Lease.
    Lease,
}

/// A request for one of the objects: which kind, and the name (`None`:
/// the collection).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The verb.
    pub method: Method,
    /// The kind.
    pub kind: Kind,
    /// The namespace asked.
    pub namespace: String,
    /// The object's name, or `None` for the collection.
    pub name: Option<String>,
}

/// The route of `path`, if it names ConfigMaps or Leases of a namespace.
pub fn route(method: &Method, path: &str) -> Option<Route> {
    let (kind, rest) = if let Some(rest) = path.strip_prefix("/api/v1/namespaces/") {
        (Kind::ConfigMap, rest)
    } else if let Some(rest) = path.strip_prefix("/apis/coordination.k8s.io/v1/namespaces/") {
        (Kind::Lease, rest)
    } else {
        return None;
    };
    let parts: Vec<&str> = rest.split('/').collect();
    let resource = match kind {
        Kind::ConfigMap => "configmaps",
        Kind::Lease => "leases",
    };
    match parts.as_slice() {
        // Other namespaces are not this module's (e.g. the tracking ConfigMap
        // in kube-system is `attribution.rs`'s).
        [ns, ..] if *ns != NAMESPACE => None,
        [ns, r] if *r == resource => Some(Route {
            method: method.clone(),
            kind,
            namespace: (*ns).to_owned(),
            name: None,
        }),
        [ns, r, name] if *r == resource && !name.is_empty() => Some(Route {
            method: method.clone(),
            kind,
            namespace: (*ns).to_owned(),
            name: Some((*name).to_owned()),
        }),
        _ => None,
    }
}

/// The objects of the namespace, with the server's resourceVersion counter.
#[derive(Debug)]
pub struct Objects {
    inner: Mutex<Store>,
}

#[derive(Debug, Default)]
struct Store {
    next_version: u64,
    objects: BTreeMap<(Kind, String), Value>,
    writes: BTreeMap<(Kind, String), u64>,
    conflicts: u64,
}

impl Default for Objects {
    fn default() -> Objects {
        Objects::seeded()
    }
}

impl Objects {
    /// The state ConfigMap and the Lease, both empty, as the manifests ship them.
    pub fn seeded() -> Objects {
        let objects = Objects {
            inner: Mutex::new(Store {
                next_version: 100,
                ..Store::default()
            }),
        };
        let _ = objects.create(
            Kind::ConfigMap,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": STATE_CONFIGMAP}}),
        );
        let _ = objects.create(
            Kind::Lease,
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": LEASE}, "spec": {}}),
        );
        objects
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The object `kind`/`name`, as stored.
    pub fn get(&self, kind: Kind, name: &str) -> Option<Value> {
        self.lock().objects.get(&(kind, name.to_owned())).cloned()
    }

    /// Successful writes (create or replace) of `kind`/`name` so far.
    pub fn writes(&self, kind: Kind, name: &str) -> u64 {
        self.lock()
            .writes
            .get(&(kind, name.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// Writes refused with 409 so far.
    pub fn conflicts(&self) -> u64 {
        self.lock().conflicts
    }

    /// Removes `kind`/`name` (a test of a missing object).
    pub fn delete(&self, kind: Kind, name: &str) {
        self.lock().objects.remove(&(kind, name.to_owned()));
    }

    /// Creates an object (POST): 409 if it exists.
    pub fn create(&self, kind: Kind, mut body: Value) -> (StatusCode, Value) {
        let Some(name) = body
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            return invalid("metadata.name: Required value");
        };
        let mut store = self.lock();
        if store.objects.contains_key(&(kind, name.clone())) {
            return failure(
                StatusCode::CONFLICT,
                "AlreadyExists",
                &format!("{} \"{name}\" already exists", resource(kind)),
            );
        }
        if let Some(err) = too_long(kind, &body) {
            return err;
        }
        store.next_version += 1;
        stamp(&mut body, store.next_version);
        store.objects.insert((kind, name.clone()), body.clone());
        *store.writes.entry((kind, name)).or_default() += 1;
        (StatusCode::CREATED, body)
    }

    /// Replaces an object (PUT): 404 if absent, 409 if the body's
    /// resourceVersion is set and not the current one.
    pub fn replace(&self, kind: Kind, name: &str, mut body: Value) -> (StatusCode, Value) {
        if body.pointer("/metadata/name").and_then(Value::as_str) != Some(name) {
            return failure(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "the name of the object does not match the name on the URL",
            );
        }
        let mut store = self.lock();
        let key = (kind, name.to_owned());
        let Some(current) = store.objects.get(&key) else {
            return not_found(kind, name);
        };
        let current_version = current
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        if let Some(sent) = body
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            && sent != current_version
        {
            store.conflicts += 1;
            return failure(
                StatusCode::CONFLICT,
                "Conflict",
                &format!(
                    "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                    resource(kind)
                ),
            );
        }
        if let Some(err) = too_long(kind, &body) {
            return err;
        }
        store.next_version += 1;
        stamp(&mut body, store.next_version);
        store.objects.insert(key.clone(), body.clone());
        *store.writes.entry(key).or_default() += 1;
        (StatusCode::OK, body)
    }

    /// Answers one routed request with a JSON body.
    pub fn handle(&self, route: &Route, body: Option<Value>) -> (StatusCode, Value) {
        if route.namespace != NAMESPACE {
            return failure(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("namespaces \"{}\" not found", route.namespace),
            );
        }
        let with_namespace = |mut body: Value| {
            if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("namespace".into(), json!(NAMESPACE));
            }
            body
        };
        match (&route.method, &route.name, body) {
            (&Method::GET, Some(name), _) => match self.get(route.kind, name) {
                Some(obj) => (StatusCode::OK, obj),
                None => not_found(route.kind, name),
            },
            (&Method::PUT, Some(name), Some(body)) => {
                self.replace(route.kind, name, with_namespace(body))
            }
            (&Method::POST, None, Some(body)) if route.kind == Kind::Lease => {
                self.create(route.kind, with_namespace(body))
            }
            (&Method::PUT | &Method::POST, _, None) => invalid("the body is not a JSON object"),
            (m, _, _) => failure(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                &format!("{m} is not supported on {} here", resource(route.kind)),
            ),
        }
    }
}

fn resource(kind: Kind) -> &'static str {
    match kind {
        Kind::ConfigMap => "configmaps",
        Kind::Lease => "leases.coordination.k8s.io",
    }
}

fn stamp(body: &mut Value, version: u64) {
    if let Some(meta) = body.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), json!(version.to_string()));
        meta.insert("namespace".into(), json!(NAMESPACE));
    }
}

/// The 422 of a ConfigMap over 1 MiB (data values plus decoded binaryData).
fn too_long(kind: Kind, body: &Value) -> Option<(StatusCode, Value)> {
    if kind != Kind::ConfigMap {
        return None;
    }
    let sum = |key: &str, decoded: bool| -> usize {
        body.get(key).and_then(Value::as_object).map_or(0, |m| {
            m.values()
                .filter_map(Value::as_str)
                .map(|v| if decoded { v.len() / 4 * 3 } else { v.len() })
                .sum()
        })
    };
    let total = sum("data", false) + sum("binaryData", true);
    (total > MAX_CONFIGMAP_BYTES).then(|| {
        failure(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            &format!(
                "ConfigMap is invalid: []: Too long: must have at most {MAX_CONFIGMAP_BYTES} bytes"
            ),
        )
    })
}

fn not_found(kind: Kind, name: &str) -> (StatusCode, Value) {
    failure(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{} \"{name}\" not found", resource(kind)),
    )
}

fn invalid(message: &str) -> (StatusCode, Value) {
    failure(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message)
}

fn failure(code: StatusCode, reason: &str, message: &str) -> (StatusCode, Value) {
    (
        code,
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code.as_u16(),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let r = route(
            &Method::GET,
            "/api/v1/namespaces/cutover-auditor/configmaps/cutover-auditor-state",
        )
        .unwrap();
        assert_eq!(
            (r.kind, r.name.as_deref()),
            (Kind::ConfigMap, Some("cutover-auditor-state"))
        );
        let r = route(
            &Method::POST,
            "/apis/coordination.k8s.io/v1/namespaces/cutover-auditor/leases",
        )
        .unwrap();
        assert_eq!((r.kind, r.name), (Kind::Lease, None));
        assert_eq!(
            route(&Method::GET, "/api/v1/namespaces/cutover-auditor/secrets/x"),
            None
        );
        // Another namespace's ConfigMaps are not these objects.
        assert_eq!(
            route(
                &Method::GET,
                "/api/v1/namespaces/kube-system/configmaps/cutover-auditor-state"
            ),
            None
        );
        assert_eq!(route(&Method::GET, "/metrics"), None);
    }

    #[test]
    fn replace_is_fenced_by_the_resource_version() {
        let o = Objects::seeded();
        let cm = o.get(Kind::ConfigMap, STATE_CONFIGMAP).unwrap();
        let rv = cm["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut next = cm.clone();
        next["data"] = json!({"a": "1"});
        let (code, written) = o.replace(Kind::ConfigMap, STATE_CONFIGMAP, next.clone());
        assert_eq!(code, StatusCode::OK);
        assert_ne!(written["metadata"]["resourceVersion"], json!(rv));
        // The same old version again: refused, content kept.
        next["data"] = json!({"a": "2"});
        let (code, _) = o.replace(Kind::ConfigMap, STATE_CONFIGMAP, next);
        assert_eq!(code, StatusCode::CONFLICT);
        assert_eq!(o.conflicts(), 1);
        assert_eq!(
            o.get(Kind::ConfigMap, STATE_CONFIGMAP).unwrap()["data"]["a"],
            "1"
        );
        assert_eq!(
            o.writes(Kind::ConfigMap, STATE_CONFIGMAP),
            2,
            "seed and one replace"
        );
    }

    #[test]
    fn leases_are_created_once_and_configmaps_are_limited_to_one_mib() {
        let o = Objects::seeded();
        let lease = json!({"metadata": {"name": "other"}, "spec": {}});
        assert_eq!(o.create(Kind::Lease, lease.clone()).0, StatusCode::CREATED);
        assert_eq!(o.create(Kind::Lease, lease).0, StatusCode::CONFLICT);
        let big = json!({"metadata": {"name": STATE_CONFIGMAP}, "data": {"x": "a".repeat(MAX_CONFIGMAP_BYTES + 1)}});
        assert_eq!(
            o.replace(Kind::ConfigMap, STATE_CONFIGMAP, big).0,
            StatusCode::UNPROCESSABLE_ENTITY
        );
    }
}
