//! Checks of the Kubernetes manifests in `deploy/` and of the `Dockerfile`.
//!
//! Every documented install (the base alone and with each combination of the
//! Components in `deploy/components/`, as `deploy/README.md` lists them) is
//! written as a kustomization under the target directory and rendered with
//! `kubectl kustomize` (offline: no kubeconfig). The built-in objects are
//! validated against the Kubernetes OpenAPI schemas with `kubernetes-validate
//! --strict`; the ServiceMonitor and PrometheusRule against prometheus-operator's
//! schemas (the npm package `@kubernetes-models/prometheus-operator`, run by
//! node: types, enums, patterns such as durations, required fields; unknown
//! keys are checked here). The objects are checked for the Pod Security
//! "restricted" level, the exact RBAC grants, and the wiring between
//! Deployment, Service, ServiceMonitor, NetworkPolicy and the config file.
//! The sources are linted with yamllint.
//!
//! External tools are required, not optional: a missing tool fails the test
//! with the command that installs it. YAML and TOML are read by python3
//! (PyYAML, tomllib) into JSON, the same parser yamllint and
//! kubernetes-validate use, so all checks read the files the same way and no
//! YAML crate has to be built.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};

/// Every documented install: `base` plus the Components after each `+`
/// (directories of `deploy/components/`), in this order.
const KUSTOMIZATIONS: &[&str] = &[
    "base",
    "base+kube-prometheus-stack",
    "base+kube-prometheus",
    "base+network-policy",
    "base+persistent-state",
    "base+runbook-url",
    "base+kube-prometheus-stack+network-policy+persistent-state+runbook-url",
    "base+kube-prometheus+network-policy+persistent-state",
];

/// Every Component, each documented in deploy/README.md.
const COMPONENTS: &[&str] = &[
    "kube-prometheus-stack",
    "kube-prometheus",
    "network-policy",
    "persistent-state",
    "runbook-url",
];

/// Components rendered and checked (objects, exact RBAC) by their own
/// tests: `ha::the_state_configmap_component_grants_get_and_update_on_its_two_objects_only`
/// and `attribution::the_attribution_component_adds_exactly_its_permissions_and_the_default_install_has_none`.
const COMPONENTS_TESTED_ELSEWHERE: &[&str] = &["state-configmap", "attribution"];

/// The runbook base of `deploy/components/runbook-url/runbook-url.example.yaml`.
const EXAMPLE_RUNBOOK_BASE: &str = "https://wiki.example.com/cutover-auditor";
/// The runbook base of the rules file (the default).
const DEFAULT_RUNBOOK_PREFIX: &str =
    "https://github.com/cutover-auditor/cutover-auditor/blob/main/docs/runbooks/";

/// True when the install `combo` includes `component`.
fn has(combo: &str, component: &str) -> bool {
    combo.split('+').skip(1).any(|c| c == component)
}

/// Kubernetes versions whose schemas the manifests must satisfy: the oldest
/// and the newest that kubernetes-validate ships.
const KUBERNETES_VERSIONS: &[&str] = &["1.25.0", "1.37.0"];

/// Custom resources: not in the Kubernetes schemas, checked structurally here.
const CUSTOM_KINDS: &[&str] = &["ServiceMonitor", "PrometheusRule"];

const NAMESPACE: &str = "cutover-auditor";
const NAME: &str = "cutover-auditor";
const METRICS_PORT: u64 = 9877;
const CONFIG_DIR: &str = "/etc/cutover-auditor";
const STATE_DIR: &str = "/var/lib/cutover-auditor";
const TOKEN_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

// ---------------------------------------------------------------------------
// Rendering and schema validation

#[test]
fn every_kustomization_renders_offline_to_the_expected_objects() {
    let base: BTreeSet<(String, String, String)> = [
        ("Namespace", "", NAMESPACE),
        ("ServiceAccount", NAMESPACE, NAME),
        ("ClusterRole", "", NAME),
        ("ClusterRoleBinding", "", NAME),
        ("Role", "default", "cutover-auditor-apiserver-discovery"),
        (
            "RoleBinding",
            "default",
            "cutover-auditor-apiserver-discovery",
        ),
        ("ConfigMap", NAMESPACE, "cutover-auditor-config"),
        ("Deployment", NAMESPACE, NAME),
        ("Service", NAMESPACE, NAME),
        ("ServiceMonitor", NAMESPACE, NAME),
        ("PrometheusRule", NAMESPACE, NAME),
    ]
    .iter()
    .map(|(k, ns, n)| (k.to_string(), ns.to_string(), n.to_string()))
    .collect();
    for dir in KUSTOMIZATIONS {
        let mut expected = base.clone();
        let mut add = |k: &str, n: &str| expected.insert((k.into(), NAMESPACE.into(), n.into()));
        if has(dir, "persistent-state") {
            add("PersistentVolumeClaim", "cutover-auditor-state");
        }
        if has(dir, "network-policy") {
            add("NetworkPolicy", NAME);
        }
        if has(dir, "kube-prometheus") {
            add("Role", "prometheus-k8s");
            add("RoleBinding", "prometheus-k8s");
        }
        let found: BTreeSet<_> = objects(dir)
            .iter()
            .map(|o| {
                let name = str_at(o, "/metadata/name");
                // The generated ConfigMap name carries a content hash.
                let name = match kind(o) {
                    "ConfigMap" => name.rsplit_once('-').map_or(name, |(stem, _)| stem),
                    _ => name,
                };
                (
                    kind(o).to_string(),
                    opt_str(o, "/metadata/namespace").to_string(),
                    name.to_string(),
                )
            })
            .collect();
        assert_eq!(found, expected, "{dir}: rendered objects");
    }
}

#[test]
fn every_kustomization_passes_strict_kubernetes_schema_validation() {
    for dir in KUSTOMIZATIONS {
        let (custom, builtin): (Vec<Value>, Vec<Value>) = objects(dir)
            .into_iter()
            .partition(|o| CUSTOM_KINDS.contains(&kind(o)));
        for version in KUBERNETES_VERSIONS {
            if let Err(report) = kubernetes_validate(&builtin, version) {
                panic!("{dir} against Kubernetes {version}:\n{report}");
            }
        }
        assert_eq!(custom.len(), CUSTOM_KINDS.len(), "{dir}: custom resources");
        if let Err(report) = crd_validate(&custom) {
            panic!("{dir}: prometheus-operator schemas:\n{report}");
        }
    }
}

/// The CRD validator rejects what the operator's schema rejects: a wrong
/// type, a malformed duration, a missing required field.
#[test]
fn crd_validation_rejects_broken_custom_resources() {
    let objects = objects("base");
    let sm = object(&objects, "ServiceMonitor");
    let rule = object(&objects, "PrometheusRule");
    let cases: &[(&Value, &str, Value, &str)] = &[
        (&sm, "/spec/endpoints/0/port", json!(9877), "must be string"),
        (
            &sm,
            "/spec/endpoints/0/interval",
            json!("30 seconds"),
            "must match pattern",
        ),
        (
            &rule,
            "/spec/groups/0/rules/0/for",
            json!("5 minutes"),
            "must match pattern",
        ),
        (
            &rule,
            "/spec/groups/0/name",
            Value::Null,
            "must have required property",
        ),
    ];
    for (o, pointer, value, expected) in cases {
        let mut broken = (*o).clone();
        set(&mut broken, pointer, value.clone());
        match crd_validate(&[broken]) {
            Ok(()) => panic!("{} {pointer} = {value}: accepted", kind(o)),
            Err(report) => assert!(
                report.contains(expected),
                "{pointer} = {value}: expected {expected:?} in\n{report}"
            ),
        }
    }
}

/// The validator must reject what the API server would reject, or the test
/// above proves nothing; an unknown apiVersion must not pass as "no schema".
#[test]
fn schema_validation_rejects_broken_objects() {
    let deployment = object(&objects("base"), "Deployment");
    let cases: &[(&str, Value, &str)] = &[
        ("/spec/replica", json!(1), "'replica' was unexpected"),
        ("/spec/replicas", json!("one"), "is not of type"),
        ("/apiVersion", json!("apps/v2"), "Couldn't find schema"),
    ];
    for (pointer, value, expected) in cases {
        let mut broken = deployment.clone();
        set(&mut broken, pointer, value.clone());
        match kubernetes_validate(&[broken], "1.37.0") {
            Ok(()) => panic!("{pointer} = {value}: accepted"),
            Err(report) => assert!(
                report.contains(expected),
                "{pointer} = {value}: expected {expected:?} in\n{report}"
            ),
        }
    }
}

#[test]
fn yamllint_accepts_every_yaml_file_under_deploy() {
    let out = run(
        Command::new("yamllint")
            .args(["--strict", "--format", "parsable", "-c"])
            .arg(repo().join("deploy/.yamllint.yaml"))
            .arg(repo().join("deploy")),
        None,
        "apt-get install -y yamllint",
    );
    assert!(
        out.status.success(),
        "yamllint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---------------------------------------------------------------------------
// Pod Security "restricted" and hardening

#[test]
fn the_pod_meets_pod_security_restricted_in_every_kustomization() {
    for dir in KUSTOMIZATIONS {
        let deployment = object(&objects(dir), "Deployment");
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(restricted_violations(pod), Vec::<String>::new(), "{dir}");
        assert_eq!(hardening_violations(pod), Vec::<String>::new(), "{dir}");
    }
}

/// Each rule of the checker catches its violation: the base Pod, changed in
/// one place, must yield exactly the expected complaint.
#[test]
fn the_pod_security_checker_catches_each_violation() {
    let c = "/containers/0";
    let cases: &[(&str, Value, &str)] = &[
        ("/hostNetwork", json!(true), "hostNetwork"),
        ("/hostPID", json!(true), "hostPID"),
        ("/hostIPC", json!(true), "hostIPC"),
        (
            "/volumes/1",
            json!({"name": "state", "hostPath": {"path": "/var"}}),
            "volume state: type hostPath",
        ),
        (
            "/securityContext/sysctls",
            json!([{"name": "net.core.somaxconn", "value": "1024"}]),
            "sysctl net.core.somaxconn",
        ),
        ("/securityContext/runAsUser", json!(0), "pod: runAsUser 0"),
        (
            "/securityContext/seccompProfile",
            json!({"type": "Unconfined"}),
            "pod: seccomp",
        ),
        (
            "/securityContext/seLinuxOptions",
            json!({"type": "spc_t"}),
            "pod: seLinuxOptions",
        ),
        (
            "/containers/0/securityContext/privileged",
            json!(true),
            "privileged",
        ),
        (
            "/containers/0/securityContext/allowPrivilegeEscalation",
            json!(true),
            "allowPrivilegeEscalation",
        ),
        (
            "/containers/0/securityContext/capabilities/drop",
            json!(["NET_RAW"]),
            "drop ALL",
        ),
        (
            "/containers/0/securityContext/capabilities/add",
            json!(["SYS_ADMIN"]),
            "capability SYS_ADMIN",
        ),
        (
            "/containers/0/securityContext/runAsNonRoot",
            json!(false),
            "runAsNonRoot",
        ),
        (
            "/containers/0/securityContext/runAsUser",
            json!(0),
            "runAsUser 0",
        ),
        (
            "/containers/0/securityContext/seccompProfile",
            json!({"type": "Unconfined"}),
            "seccomp",
        ),
        (
            "/containers/0/securityContext/procMount",
            json!("Unmasked"),
            "procMount",
        ),
        (
            "/containers/0/securityContext/appArmorProfile",
            json!({"type": "Unconfined"}),
            "appArmor",
        ),
        ("/containers/0/ports/0/hostPort", json!(9877), "hostPort"),
    ];
    let deployment = object(&objects("base"), "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    for (pointer, value, expected) in cases {
        let mut changed = pod.clone();
        set(&mut changed, pointer, value.clone());
        let found = restricted_violations(&changed);
        assert!(
            found.len() == 1 && found[0].contains(expected),
            "{pointer} = {value}: expected one violation containing {expected:?}, got {found:?}"
        );
    }
    // Seccomp and runAsNonRoot may be set per container instead of per Pod.
    let mut per_container = pod.clone();
    set(
        &mut per_container,
        "/securityContext/seccompProfile",
        Value::Null,
    );
    set(
        &mut per_container,
        "/securityContext/runAsNonRoot",
        Value::Null,
    );
    assert_eq!(restricted_violations(&per_container), Vec::<String>::new());
    let mut neither = per_container.clone();
    set(
        &mut neither,
        &format!("{c}/securityContext/seccompProfile"),
        Value::Null,
    );
    set(
        &mut neither,
        &format!("{c}/securityContext/runAsNonRoot"),
        Value::Null,
    );
    assert_eq!(
        restricted_violations(&neither),
        vec![
            "container cutover-auditor: runAsNonRoot must be true (pod or container)",
            "container cutover-auditor: seccompProfile must be RuntimeDefault or Localhost",
        ]
    );
}

// ---------------------------------------------------------------------------
// RBAC

/// kube-prometheus' Prometheus (monitoring/prometheus-k8s) may discover the
/// auditor's Service, Endpoints(Slices) and Pods in its namespace, no more.
fn kube_prometheus_rbac() -> Vec<Value> {
    let read = ["get", "list", "watch"];
    vec![
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "prometheus-k8s", "namespace": NAMESPACE},
            "rules": [
                {"apiGroups": [""], "resources": ["services", "endpoints", "pods"], "verbs": read},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "prometheus-k8s", "namespace": NAMESPACE},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "prometheus-k8s"},
            "subjects": [{"kind": "ServiceAccount", "name": "prometheus-k8s", "namespace": "monitoring"}],
        }),
    ]
}

/// Discovery only lists EndpointSlices (a collection GET with a label
/// selector, src/discovery.rs): `list`, never `watch` or `get`.
#[test]
fn rbac_grants_exactly_metrics_and_endpointslice_discovery() {
    let subject = json!([{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}]);
    let discovery = "cutover-auditor-apiserver-discovery";
    let expected = vec![
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": NAME},
            "rules": [{"nonResourceURLs": ["/metrics"], "verbs": ["get"]}],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": NAME},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
            "subjects": subject,
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": discovery, "namespace": "default"},
            "rules": [{
                "apiGroups": ["discovery.k8s.io"],
                "resources": ["endpointslices"],
                "verbs": ["list"],
            }],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": discovery, "namespace": "default"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": discovery},
            "subjects": subject,
        }),
    ];
    for dir in KUSTOMIZATIONS {
        let objects = objects(dir);
        // Whole objects, bar labels and annotations: an extra rule, an
        // aggregationRule or another subject all show up as a difference.
        let mut rbac: Vec<Value> = objects
            .iter()
            .filter(|o| kind(o).ends_with("Role") || kind(o).ends_with("RoleBinding"))
            .map(|o| {
                let mut o = o.clone();
                if let Some(meta) = o["metadata"].as_object_mut() {
                    meta.retain(|k, _| k == "name" || k == "namespace");
                }
                o
            })
            .collect();
        rbac.sort_by_key(|o| format!("{} {}", kind(o), o["metadata"]["name"]));
        let mut want = expected.clone();
        if has(dir, "kube-prometheus") {
            want.extend(kube_prometheus_rbac());
        }
        want.sort_by_key(|o| format!("{} {}", kind(o), o["metadata"]["name"]));
        assert_eq!(rbac, want, "{dir}: RBAC");

        let sa = object(&objects, "ServiceAccount");
        assert_eq!(sa["metadata"]["name"], NAME);
        let pod = &object(&objects, "Deployment")["spec"]["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], NAME, "{dir}");
    }
}

// ---------------------------------------------------------------------------
// Deployment, Service, ServiceMonitor, NetworkPolicy, config

#[test]
fn the_deployment_runs_one_auditor_with_probes_state_and_config() {
    for dir in KUSTOMIZATIONS {
        let objects = objects(dir);
        let d = object(&objects, "Deployment");
        assert_eq!(d["spec"]["replicas"], 1, "{dir}");
        assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}), "{dir}");
        let pod = &d["spec"]["template"]["spec"];
        let labels = &d["spec"]["template"]["metadata"]["labels"];
        assert!(
            matches(&d["spec"]["selector"]["matchLabels"], labels),
            "{dir}: selector"
        );
        assert_eq!(pod["automountServiceAccountToken"], true, "{dir}");
        let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(0);
        assert!((10..=120).contains(&grace), "{dir}: grace {grace}");

        let containers = pod["containers"].as_array().cloned().unwrap_or_default();
        assert_eq!(containers.len(), 1, "{dir}");
        let c = &containers[0];
        assert_eq!(
            c["args"],
            json!(["serve", "--config", format!("{CONFIG_DIR}/config.toml")])
        );
        assert_eq!(
            c["ports"],
            json!([{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}])
        );
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            assert_eq!(
                c[probe]["httpGet"],
                json!({"path": path, "port": "metrics"}),
                "{dir}: {probe}"
            );
        }
        let r = &c["resources"];
        for pointer in ["/requests/cpu", "/requests/memory", "/limits/memory"] {
            assert!(
                r.pointer(pointer).is_some_and(Value::is_string),
                "{dir}: {pointer}"
            );
        }

        // Mounts: the config read-only, the state dir writable, on volumes
        // that exist; the ConfigMap volume names the generated ConfigMap.
        let mount = |path: &str| {
            c["volumeMounts"]
                .as_array()
                .and_then(|ms| ms.iter().find(|m| m["mountPath"] == path))
                .cloned()
                .unwrap_or_else(|| panic!("{dir}: no mount at {path}"))
        };
        let volume = |name: &Value| {
            pod["volumes"]
                .as_array()
                .and_then(|vs| vs.iter().find(|v| &v["name"] == name))
                .cloned()
                .unwrap_or_else(|| panic!("{dir}: no volume {name}"))
        };
        let config_mount = mount(CONFIG_DIR);
        assert_eq!(config_mount["readOnly"], true, "{dir}");
        let cm = object(&objects, "ConfigMap");
        assert_eq!(
            volume(&config_mount["name"])["configMap"]["name"],
            cm["metadata"]["name"],
            "{dir}: the config volume names the generated ConfigMap"
        );
        let state_mount = mount(STATE_DIR);
        assert_ne!(state_mount["readOnly"], true, "{dir}");
        let state = volume(&state_mount["name"]);
        if has(dir, "persistent-state") {
            assert_eq!(
                state["persistentVolumeClaim"]["claimName"],
                "cutover-auditor-state"
            );
            assert!(state.get("emptyDir").is_none(), "{dir}: {state}");
        } else {
            assert!(state["emptyDir"].is_object(), "{dir}: {state}");
        }
    }
}

#[test]
fn the_config_in_the_configmap_agrees_with_the_deployment() {
    let objects = objects("base");
    let cm = object(&objects, "ConfigMap");
    let text = str_at(&cm, "/data/config.toml");
    let shipped = std::fs::read_to_string(repo().join("deploy/base/config.toml"))
        .unwrap_or_else(|e| panic!("deploy/base/config.toml: {e}"));
    assert_eq!(text, shipped);
    let config = python_json(TOML_TO_JSON, text);
    assert_eq!(config["listen"], format!("0.0.0.0:{METRICS_PORT}"));
    assert_eq!(config["targets"]["discovery"], "kubernetes");
    let k = &config["targets"]["kubernetes"];
    assert_eq!(k["token_file"], format!("{TOKEN_DIR}/token"));
    assert_eq!(k["ca_file"], format!("{TOKEN_DIR}/ca.crt"));
    assert_eq!(config["state"]["path"], format!("{STATE_DIR}/state.json"));
    let cutovers: BTreeSet<&str> = config["cutovers"]
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert_eq!(
        cutovers,
        BTreeSet::from([
            "legacy-auto-tokens",
            "legacy-tokens",
            "token-expiry-extension"
        ])
    );
}

#[test]
fn the_service_monitor_scrapes_the_metrics_port_as_job_cutover_auditor() {
    for dir in KUSTOMIZATIONS {
        let objects = objects(dir);
        let svc = object(&objects, "Service");
        let pod_labels = &object(&objects, "Deployment")["spec"]["template"]["metadata"]["labels"];
        assert!(
            matches(&svc["spec"]["selector"], pod_labels),
            "{dir}: Service selector"
        );
        assert_eq!(
            svc["spec"]["ports"],
            json!([{"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics", "protocol": "TCP"}])
        );

        let sm = object(&objects, "ServiceMonitor");
        check_keys(&sm, &["apiVersion", "kind", "metadata", "spec"]);
        assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
        let spec = &sm["spec"];
        check_keys(
            spec,
            &[
                "jobLabel",
                "selector",
                "namespaceSelector",
                "endpoints",
                "targetLabels",
                "podTargetLabels",
            ],
        );
        assert!(
            matches(&spec["selector"]["matchLabels"], &svc["metadata"]["labels"]),
            "{dir}"
        );
        assert_eq!(
            spec["namespaceSelector"],
            json!({"matchNames": [NAMESPACE]})
        );
        // The alerts select up{job="cutover-auditor"}: the job label is the
        // value of the Service label named by jobLabel.
        let job_label = str_at(spec, "/jobLabel");
        assert_eq!(
            svc["metadata"]["labels"][job_label], "cutover-auditor",
            "{dir}"
        );
        let endpoints = spec["endpoints"].as_array().cloned().unwrap_or_default();
        assert_eq!(endpoints.len(), 1, "{dir}");
        let e = &endpoints[0];
        check_keys(
            e,
            &[
                "port",
                "path",
                "interval",
                "scrapeTimeout",
                "honorLabels",
                "relabelings",
                "metricRelabelings",
            ],
        );
        assert_eq!(e["port"], "metrics");
        assert_eq!(e["path"], "/metrics");
        // The apiserver has its own label: `instance` stays the auditor's
        // target, and `overrideHonorLabels` changes nothing.
        assert!(
            e.get("honorLabels").is_none_or(|h| h == false),
            "{dir}: honorLabels is not needed: {e}"
        );
    }
}

#[test]
fn the_prometheus_rule_is_a_well_formed_custom_resource() {
    for dir in KUSTOMIZATIONS {
        let rule = object(&objects(dir), "PrometheusRule");
        check_keys(&rule, &["apiVersion", "kind", "metadata", "spec"]);
        assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
        assert_eq!(rule["metadata"]["namespace"], NAMESPACE);
        check_keys(&rule["spec"], &["groups"]);
        let groups = rule["spec"]["groups"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(!groups.is_empty(), "{dir}: no rule groups");
        let mut names = BTreeSet::new();
        for g in &groups {
            check_keys(
                g,
                &[
                    "name",
                    "interval",
                    "rules",
                    "limit",
                    "labels",
                    "query_offset",
                    "partial_response_strategy",
                ],
            );
            assert!(
                names.insert(str_at(g, "/name").to_string()),
                "{dir}: duplicate group"
            );
            for r in g["rules"].as_array().into_iter().flatten() {
                check_keys(
                    r,
                    &[
                        "alert",
                        "record",
                        "expr",
                        "for",
                        "keep_firing_for",
                        "labels",
                        "annotations",
                    ],
                );
                assert!(
                    r.get("alert").is_some() != r.get("record").is_some(),
                    "{dir}: a rule is either an alert or a record: {r}"
                );
                assert!(!str_at(r, "/expr").trim().is_empty(), "{dir}: {r}");
            }
        }
    }
}

#[test]
fn the_kube_prometheus_stack_overlay_labels_what_prometheus_selects() {
    for dir in KUSTOMIZATIONS {
        let objects = objects(dir);
        let want = has(dir, "kube-prometheus-stack").then_some("kube-prometheus-stack");
        for k in CUSTOM_KINDS {
            let release = object(&objects, k)["metadata"]["labels"]["release"].clone();
            assert_eq!(release.as_str(), want, "{dir}: {k} release label");
        }
    }
}

/// The egress ports of `deploy/components/network-policy/ports.yaml`, the
/// one place they are set, as (destination, port, protocol).
fn egress_ports_file() -> Vec<(String, u64, String)> {
    let text = std::fs::read_to_string(repo().join("deploy/components/network-policy/ports.yaml"))
        .unwrap_or_else(|e| panic!("ports.yaml: {e}"));
    let docs = python_json(YAML_TO_JSON, &text);
    let spec = &docs[0]["spec"];
    let mut out = Vec::new();
    for dest in ["dns", "alertmanager", "apiserver"] {
        for p in spec[dest].as_array().into_iter().flatten() {
            out.push((
                dest.to_string(),
                p["port"].as_u64().unwrap_or(0),
                str_at(p, "/protocol").to_string(),
            ));
        }
    }
    out
}

#[test]
fn the_network_policy_is_opt_in_and_takes_its_ports_from_one_place() {
    // The one place holds what the auditor needs: DNS, Alertmanager's API
    // and the apiserver ports of kubeadm, managed and other control planes.
    let file = egress_ports_file();
    let want: Vec<(String, u64, String)> = [
        ("dns", 53, "UDP"),
        ("dns", 53, "TCP"),
        ("alertmanager", 9093, "TCP"),
        ("apiserver", 443, "TCP"),
        ("apiserver", 6443, "TCP"),
        ("apiserver", 8443, "TCP"),
    ]
    .iter()
    .map(|(d, p, proto)| (d.to_string(), *p, proto.to_string()))
    .collect();
    assert_eq!(file, want, "ports.yaml");

    for dir in KUSTOMIZATIONS {
        let objects = objects(dir);
        let policies: Vec<&Value> = objects
            .iter()
            .filter(|o| kind(o) == "NetworkPolicy")
            .collect();
        if !has(dir, "network-policy") {
            assert!(policies.is_empty(), "{dir}: the NetworkPolicy is opt-in");
            continue;
        }
        assert!(
            objects.iter().all(|o| kind(o) != "EgressPorts"),
            "{dir}: the ports file is local-config, never applied"
        );
        let np = object(&objects, "NetworkPolicy");
        let spec = &np["spec"];
        let pod_labels = &object(&objects, "Deployment")["spec"]["template"]["metadata"]["labels"];
        assert!(
            matches(&spec["podSelector"]["matchLabels"], pod_labels),
            "{dir}"
        );
        assert_eq!(spec["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(
            spec["ingress"],
            json!([{"ports": [{"port": "metrics", "protocol": "TCP"}]}]),
            "{dir}: ingress"
        );
        // Egress: one rule per destination, in the order of ports.yaml, each
        // with `to` and exactly that destination's ports (numbers, not names).
        let rules = spec["egress"].as_array().cloned().unwrap_or_default();
        let mut found = Vec::new();
        for (rule, dest) in rules.iter().zip(["dns", "alertmanager", "apiserver"]) {
            assert!(
                rule["to"].is_array(),
                "{dir}: egress rule without `to`: {rule}"
            );
            let ports = rule["ports"].as_array().cloned().unwrap_or_default();
            assert!(
                !ports.is_empty(),
                "{dir}: {dest}: no ports allows every port"
            );
            for p in ports {
                let port = p["port"]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{dir}: {dest}: port {} is not a number", p["port"]));
                found.push((dest.to_string(), port, str_at(&p, "/protocol").to_string()));
            }
        }
        assert_eq!(rules.len(), 3, "{dir}: egress rules");
        assert_eq!(found, want, "{dir}: egress ports");
        assert_eq!(
            rules[0]["to"][0]["podSelector"]["matchLabels"]["k8s-app"], "kube-dns",
            "{dir}: DNS goes to kube-dns only"
        );
    }
    // The Cilium caveat is where a user reads before applying.
    for doc in [
        "deploy/components/network-policy/networkpolicy.yaml",
        "deploy/README.md",
    ] {
        let text =
            std::fs::read_to_string(repo().join(doc)).unwrap_or_else(|e| panic!("{doc}: {e}"));
        assert!(
            text.contains("policy-cidr-match-mode") && text.contains("Cilium"),
            "{doc}: the Cilium ipBlock caveat"
        );
    }
}

/// runbook_url: the in-repo default, or the base of the runbook-url
/// component's ConfigMap, chosen at render time, for every alert.
#[test]
fn runbook_urls_point_at_the_configured_base() {
    for dir in KUSTOMIZATIONS {
        let rule = object(&objects(dir), "PrometheusRule");
        let prefix = if has(dir, "runbook-url") {
            format!("{EXAMPLE_RUNBOOK_BASE}/runbooks/")
        } else {
            DEFAULT_RUNBOOK_PREFIX.to_string()
        };
        let mut n = 0;
        for r in rule["spec"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        {
            let url = str_at(&r, "/annotations/runbook_url");
            assert_eq!(url, format!("{prefix}{}.md", str_at(&r, "/alert")), "{dir}");
            n += 1;
        }
        assert!(n >= 11, "{dir}: {n} alerts");
    }
}

/// Every Component is documented and rendered in at least one install, and
/// deploy/README.md lists each one.
#[test]
fn every_component_is_documented_and_rendered() {
    let dir = repo().join("deploy/components");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    on_disk.sort();
    let mut listed: Vec<String> = COMPONENTS
        .iter()
        .chain(COMPONENTS_TESTED_ELSEWHERE)
        .map(|c| c.to_string())
        .collect();
    listed.sort();
    assert_eq!(on_disk, listed, "deploy/components");
    let readme_text = std::fs::read_to_string(repo().join("deploy/README.md"))
        .unwrap_or_else(|e| panic!("deploy/README.md: {e}"));
    for c in COMPONENTS_TESTED_ELSEWHERE {
        assert!(
            readme_text.contains(&format!("components/{c}")),
            "deploy/README.md does not document {c}"
        );
    }
    let readme = std::fs::read_to_string(repo().join("deploy/README.md"))
        .unwrap_or_else(|e| panic!("deploy/README.md: {e}"));
    for c in COMPONENTS {
        assert!(
            readme.contains(&format!("components/{c}")),
            "deploy/README.md does not document {c}"
        );
        assert!(
            KUSTOMIZATIONS.iter().any(|k| has(k, c)),
            "{c} is never rendered"
        );
    }
}

// ---------------------------------------------------------------------------
// Dockerfile

/// The Dockerfile needs no base image (FROM scratch around the static
/// binary that deploy/image/build.sh builds locked), runs as a numeric
/// non-root user that the Deployment also sets, in exec form, and carries the
/// OCI labels; build.sh tags it with Cargo.toml's version. (tests/run-all.sh
/// builds it with buildah and deploy/image/check.sh runs its binary.)
#[test]
fn the_dockerfile_is_from_scratch_non_root_labelled_and_built_locked() {
    let text = std::fs::read_to_string(repo().join("Dockerfile"))
        .unwrap_or_else(|e| panic!("Dockerfile: {e}"));
    let stages = dockerfile_stages(&text);
    assert_eq!(stages.len(), 1, "one stage expected, got {stages:?}");
    let runtime = &stages[0];
    assert_eq!(
        runtime[0].1, "scratch",
        "FROM scratch: no base image to fetch"
    );
    let instructions: Vec<&str> = runtime.iter().map(|(i, _)| i.as_str()).collect();
    assert!(!instructions.contains(&"RUN"), "RUN: scratch has no shell");
    let user = runtime
        .iter()
        .rev()
        .find(|(i, _)| i == "USER")
        .map(|(_, a)| a.as_str())
        .unwrap_or_else(|| panic!("no USER"));
    let uid = user.split(':').next().unwrap_or_default();
    assert!(
        uid.parse::<u32>().is_ok_and(|u| u != 0),
        "USER {user}: numeric non-root uid expected"
    );
    let deployment = object(&objects("base"), "Deployment");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"].to_string(),
        uid
    );
    for instruction in ["ENTRYPOINT", "CMD"] {
        let args = runtime
            .iter()
            .find(|(i, _)| i == instruction)
            .map(|(_, a)| a.as_str())
            .unwrap_or_else(|| panic!("no {instruction}"));
        let exec_form: Result<Vec<String>, _> = serde_json::from_str(args);
        assert!(
            exec_form.is_ok(),
            "{instruction} {args}: exec (JSON) form expected"
        );
    }
    let copies: Vec<&str> = runtime
        .iter()
        .filter(|(i, _)| i == "COPY")
        .map(|(_, a)| a.as_str())
        .collect();
    assert_eq!(
        copies,
        [
            "LICENSE /licenses/LICENSE",
            "cutover-auditor /usr/local/bin/cutover-auditor"
        ]
    );
    let labels: String = runtime
        .iter()
        .filter(|(i, _)| i == "LABEL")
        .map(|(_, a)| a.as_str())
        .collect();
    for key in [
        "title",
        "description",
        "version",
        "revision",
        "created",
        "licenses",
        "source",
    ] {
        assert!(
            labels.contains(&format!("org.opencontainers.image.{key}=")),
            "OCI label {key} missing"
        );
    }
    assert!(labels.contains(r#"org.opencontainers.image.version="${VERSION}""#));
    let cargo = std::fs::read_to_string(repo().join("Cargo.toml"))
        .unwrap_or_else(|e| panic!("Cargo.toml: {e}"));
    assert!(
        cargo.contains("license = \"Apache-2.0\"")
            && labels.contains(r#"org.opencontainers.image.licenses="Apache-2.0""#),
        "the licence label is Cargo.toml's"
    );
    let license =
        std::fs::read_to_string(repo().join("LICENSE")).unwrap_or_else(|e| panic!("LICENSE: {e}"));
    assert!(license.contains("Apache License") && license.contains("Version 2.0"));

    let build = std::fs::read_to_string(repo().join("deploy/image/build.sh"))
        .unwrap_or_else(|e| panic!("deploy/image/build.sh: {e}"));
    for needle in [
        "cargo build --release --locked",
        "+crt-static",
        "--build-arg \"VERSION=$version\"",
        "image=\"cutover-auditor:$version\"",
        "version = \"\\(.*\\)\"",
    ] {
        assert!(build.contains(needle), "build.sh lacks {needle:?}");
    }
    let ignore = std::fs::read_to_string(repo().join(".dockerignore"))
        .unwrap_or_else(|e| panic!(".dockerignore: {e}"));
    let ignored: BTreeSet<&str> = ignore.lines().map(str::trim).collect();
    for entry in ["target", ".git"] {
        assert!(ignored.contains(entry), ".dockerignore lacks {entry}");
    }
}

// ---------------------------------------------------------------------------
// Checkers

/// Violations of the Pod Security Standards "restricted" level (which
/// includes "baseline") in a Pod spec, as a person would name them.
fn restricted_violations(pod: &Value) -> Vec<String> {
    const VOLUME_TYPES: &[&str] = &[
        "configMap",
        "csi",
        "downwardAPI",
        "emptyDir",
        "ephemeral",
        "persistentVolumeClaim",
        "projected",
        "secret",
    ];
    const SAFE_SYSCTLS: &[&str] = &[
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
    ];
    let mut v = Vec::new();
    for host in ["hostNetwork", "hostPID", "hostIPC"] {
        if pod[host] == true {
            v.push(format!("pod: {host} must not be true"));
        }
    }
    for vol in pod["volumes"].as_array().into_iter().flatten() {
        for key in vol.as_object().into_iter().flat_map(|m| m.keys()) {
            if key != "name" && !VOLUME_TYPES.contains(&key.as_str()) {
                v.push(format!(
                    "volume {}: type {key} is not allowed",
                    opt_str(vol, "/name")
                ));
            }
        }
    }
    let pod_sc = &pod["securityContext"];
    for s in pod_sc["sysctls"].as_array().into_iter().flatten() {
        let name = opt_str(s, "/name");
        if !SAFE_SYSCTLS.contains(&name) {
            v.push(format!("pod: sysctl {name} is not in the safe set"));
        }
    }
    v.extend(context_violations("pod", pod_sc));

    let containers = ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|k| pod[*k].as_array().cloned().unwrap_or_default());
    for c in containers {
        let who = format!("container {}", opt_str(&c, "/name"));
        let sc = &c["securityContext"];
        v.extend(context_violations(&who, sc));
        if sc["privileged"] == true {
            v.push(format!("{who}: privileged must not be true"));
        }
        if sc["allowPrivilegeEscalation"] != false {
            v.push(format!("{who}: allowPrivilegeEscalation must be false"));
        }
        if !sc["procMount"].is_null() && sc["procMount"] != "Default" {
            v.push(format!("{who}: procMount must be Default"));
        }
        let caps = &sc["capabilities"];
        if !caps["drop"]
            .as_array()
            .is_some_and(|d| d.contains(&json!("ALL")))
        {
            v.push(format!("{who}: capabilities must drop ALL"));
        }
        for cap in caps["add"].as_array().into_iter().flatten() {
            if cap != "NET_BIND_SERVICE" {
                v.push(format!(
                    "{who}: capability {} may not be added",
                    cap.as_str().unwrap_or("?")
                ));
            }
        }
        let non_root = sc["runAsNonRoot"] == true
            || (sc["runAsNonRoot"].is_null() && pod_sc["runAsNonRoot"] == true);
        if !non_root {
            v.push(format!(
                "{who}: runAsNonRoot must be true (pod or container)"
            ));
        }
        let seccomp = if sc["seccompProfile"].is_null() {
            &pod_sc["seccompProfile"]
        } else {
            &sc["seccompProfile"]
        };
        if !matches!(
            seccomp["type"].as_str(),
            Some("RuntimeDefault" | "Localhost")
        ) {
            v.push(format!(
                "{who}: seccompProfile must be RuntimeDefault or Localhost"
            ));
        }
        for p in c["ports"].as_array().into_iter().flatten() {
            if p["hostPort"].as_u64().is_some_and(|h| h != 0) {
                v.push(format!("{who}: hostPort must not be set"));
            }
        }
    }
    v
}

/// Rules shared by Pod- and container-level security contexts, except those
/// resolved per container (seccomp, runAsNonRoot) to avoid double counting.
fn context_violations(who: &str, sc: &Value) -> Vec<String> {
    let mut v = Vec::new();
    if sc["runAsUser"] == 0 {
        v.push(format!("{who}: runAsUser 0 is root"));
    }
    if sc["seccompProfile"]["type"] == "Unconfined" && who == "pod" {
        v.push(format!("{who}: seccomp Unconfined is not allowed"));
    }
    if sc["appArmorProfile"]["type"] == "Unconfined" {
        v.push(format!("{who}: appArmor Unconfined is not allowed"));
    }
    let se = &sc["seLinuxOptions"];
    let se_type = opt_str(se, "/type");
    let allowed = [
        "",
        "container_t",
        "container_init_t",
        "container_kvm_t",
        "container_engine_t",
    ];
    if !allowed.contains(&se_type) || !se["user"].is_null() || !se["role"].is_null() {
        v.push(format!(
            "{who}: seLinuxOptions may only set an allowed type"
        ));
    }
    if sc["windowsOptions"]["hostProcess"] == true {
        v.push(format!("{who}: hostProcess must not be true"));
    }
    v
}

/// Hardening beyond Pod Security: a read-only root filesystem and bounded
/// memory, so the auditor cannot be turned into a writable foothold or
/// starve its node.
fn hardening_violations(pod: &Value) -> Vec<String> {
    let mut v = Vec::new();
    for c in pod["containers"].as_array().into_iter().flatten() {
        let who = format!("container {}", opt_str(c, "/name"));
        if c["securityContext"]["readOnlyRootFilesystem"] != true {
            v.push(format!("{who}: readOnlyRootFilesystem must be true"));
        }
        if c["resources"]["limits"]["memory"].is_null() {
            v.push(format!("{who}: needs a memory limit"));
        }
        if c["resources"]["requests"]["cpu"].is_null()
            || c["resources"]["requests"]["memory"].is_null()
        {
            v.push(format!("{who}: needs cpu and memory requests"));
        }
    }
    v
}

/// The instructions of each stage of a Dockerfile, `FROM` first, with
/// continuation lines joined and comments dropped.
fn dockerfile_stages(text: &str) -> Vec<Vec<(String, String)>> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Vec<(String, String)>> = Vec::new();
    for l in logical.into_iter().filter(|l| !l.is_empty()) {
        let (instruction, args) = l.split_once(char::is_whitespace).unwrap_or((&l, ""));
        let entry = (instruction.to_ascii_uppercase(), args.trim().to_string());
        if entry.0 == "FROM" {
            stages.push(vec![entry]);
        } else if let Some(stage) = stages.last_mut() {
            stage.push(entry);
        }
    }
    stages
}

// ---------------------------------------------------------------------------
// Tools and JSON helpers

const YAML_TO_JSON: &str = "import sys, json, yaml\n\
    json.dump([d for d in yaml.safe_load_all(sys.stdin) if d is not None], sys.stdout)";
const TOML_TO_JSON: &str = "import sys, json, tomllib\n\
    json.dump(tomllib.loads(sys.stdin.read()), sys.stdout)";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The objects `kubectl kustomize` renders for the install `combo`, without
/// any cluster access: a kustomization written under the target directory
/// lists deploy/base and the combo's Components by relative path, as a
/// user's own kustomization would (with the example runbook-url ConfigMap
/// when that Component is in).
fn objects(combo: &str) -> Vec<Value> {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let dir = tmp.join(format!(
        "deploy-{}-{}-{}",
        combo.replace('+', "_"),
        std::process::id(),
        CALLS.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    // From the scratch directory back to the repository root.
    let depth = dir
        .strip_prefix(repo())
        .unwrap_or_else(|_| panic!("{} is outside the repository", dir.display()))
        .components()
        .count();
    let up = "../".repeat(depth);
    let mut resources = vec![format!("{up}deploy/base")];
    if has(combo, "runbook-url") {
        let example = repo().join("deploy/components/runbook-url/runbook-url.example.yaml");
        std::fs::copy(&example, dir.join("runbook-url.yaml"))
            .unwrap_or_else(|e| panic!("{}: {e}", example.display()));
        resources.push("runbook-url.yaml".into());
    }
    let components: Vec<String> = combo
        .split('+')
        .skip(1)
        .map(|c| format!("{up}deploy/components/{c}"))
        .collect();
    let kustomization = json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": resources,
        "components": components,
    });
    std::fs::write(dir.join("kustomization.yaml"), kustomization.to_string())
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let out = run(
        Command::new("kubectl")
            .arg("kustomize")
            .arg(&dir)
            .env("KUBECONFIG", "/nonexistent/kubeconfig"),
        None,
        "kubectl 1.27 or later (Kustomize v5) on PATH",
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "kubectl kustomize {combo}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    match python_json(YAML_TO_JSON, &text) {
        Value::Array(objects) => objects,
        other => panic!("{combo}: rendered YAML is not a document stream: {other}"),
    }
}

/// Where tests/run-all.sh installs the prometheus-operator schemas.
const CRD_SCHEMAS: &str = "target/crd-schemas";
const CRD_INSTALL: &str = "npm install --prefix target/crd-schemas \
    @kubernetes-models/prometheus-operator@6.0.0 (tests/run-all.sh does)";

/// Validates ServiceMonitors and PrometheusRules against prometheus-operator's
/// schemas (node, ESM); Err carries one line per invalid object.
fn crd_validate(objects: &[Value]) -> Result<(), String> {
    let root = repo().join(CRD_SCHEMAS);
    assert!(
        root.join("node_modules/@kubernetes-models/prometheus-operator")
            .is_dir(),
        "prometheus-operator schemas are required: {CRD_INSTALL}"
    );
    // The script lives beside node_modules so the import resolves.
    static SCRIPTS: AtomicUsize = AtomicUsize::new(0);
    let script = root.join(format!(
        "validate-{}-{}.mjs",
        std::process::id(),
        SCRIPTS.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(
        &script,
        "import { ServiceMonitor, PrometheusRule } from \
         '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';\n\
         import { readFileSync } from 'node:fs';\n\
         const kinds = { ServiceMonitor, PrometheusRule };\n\
         let bad = 0;\n\
         for (const o of JSON.parse(readFileSync(0, 'utf8'))) {\n\
           const K = kinds[o.kind];\n\
           if (!K) { console.log(`${o.kind}: no schema`); bad++; continue; }\n\
           try { new K(o).validate(); } catch (e) { console.log(`${o.kind}/${o.metadata.name}: ${e.message}`); bad++; }\n\
         }\n\
         process.exit(bad ? 1 : 0);\n",
    )
    .unwrap_or_else(|e| panic!("{}: {e}", script.display()));
    let input = serde_json::to_vec(objects).unwrap_or_else(|e| panic!("objects to JSON: {e}"));
    let out = run(
        Command::new("node").arg(&script),
        Some(&input),
        "apt-get install -y nodejs npm",
    );
    let _ = std::fs::remove_file(&script);
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Runs kubernetes-validate (strict) on the objects; Err carries its report.
/// A missing module shows as "No module named kubernetes_validate".
/// "No schema found" counts as a failure: it means a wrong apiVersion/kind.
fn kubernetes_validate(objects: &[Value], version: &str) -> Result<(), String> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"));
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let file = dir.join(format!(
        "deploy-validate-{}-{call}.yaml",
        std::process::id()
    ));
    // JSON is YAML: one JSON document per object.
    let stream: String = objects.iter().map(|o| format!("---\n{o}\n")).collect();
    std::fs::write(&file, stream).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let out = run(
        // As a module of the python3 that has PyYAML: no PATH to pip's scripts needed.
        Command::new("python3")
            .args([
                "-m",
                "kubernetes_validate",
                "--strict",
                "--quiet",
                "-k",
                version,
            ])
            .arg(&file),
        None,
        "python3 -m pip install kubernetes-validate==1.37.0",
    );
    let _ = std::fs::remove_file(&file);
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !report.contains("No module named kubernetes_validate"),
        "kubernetes-validate is required: python3 -m pip install kubernetes-validate==1.37.0"
    );
    if out.status.success() && !report.contains("WARN") && !report.contains("ERROR") {
        Ok(())
    } else {
        Err(report)
    }
}

/// Runs a python3 snippet that turns `input` into JSON on stdout.
fn python_json(script: &str, input: &str) -> Value {
    let out = run(
        Command::new("python3").args(["-c", script]),
        Some(input.as_bytes()),
        "apt-get install -y python3 python3-yaml (or pip install pyyaml)",
    );
    assert!(
        out.status.success(),
        "python3 conversion failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("python3 printed no JSON: {e}"))
}

/// Runs a tool, failing (not skipping) with the install hint when it is missing.
fn run(cmd: &mut Command, stdin: Option<&[u8]>, install: &str) -> Output {
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("{program} is required by this test ({e}); install: {install}"));
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        use std::io::Write;
        pipe.write_all(input)
            .unwrap_or_else(|e| panic!("writing to {program}: {e}"));
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {program}: {e}"))
}

fn kind(o: &Value) -> &str {
    opt_str(o, "/kind")
}

/// The single object of a kind; the inventory test pins that there is one.
fn object(objects: &[Value], kind_name: &str) -> Value {
    let mut found = objects.iter().filter(|o| kind(o) == kind_name);
    let first = found.next().unwrap_or_else(|| panic!("no {kind_name}"));
    assert!(found.next().is_none(), "more than one {kind_name}");
    first.clone()
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{pointer}: string expected in {v}"))
}

fn opt_str<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// True when every label of `selector` is in `labels` with the same value.
fn matches(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| &labels[k] == v))
}

/// Fails on keys outside `allowed`: a misspelt field of a custom resource is
/// silently ignored by the operator, so catch it here.
fn check_keys(v: &Value, allowed: &[&str]) {
    for key in v.as_object().into_iter().flat_map(|m| m.keys()) {
        assert!(
            allowed.contains(&key.as_str()),
            "unexpected key {key:?} in {v}"
        );
    }
}

/// Sets (or with `Null`, removes) the value at a JSON pointer whose parent exists.
fn set(v: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').unwrap_or(("", pointer));
    let parent = v
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("{parent}: no such parent"));
    match (parent, value) {
        (Value::Object(m), Value::Null) => {
            m.remove(key);
        }
        (Value::Object(m), value) => {
            m.insert(key.to_string(), value);
        }
        (Value::Array(a), value) => {
            let i: usize = key.parse().unwrap_or_else(|e| panic!("{key}: {e}"));
            a[i] = value;
        }
        (other, _) => panic!("{pointer}: parent {other} is not a container"),
    }
}
