//! Lint of the Grafana dashboard `dashboards/cutover-auditor.json`: current
//! schema, `datasource` and `cluster` variables, no hard-coded datasource,
//! title/description/unit on every panel, a grid without overlaps, and
//! queries that are valid PromQL (checked by promtool) using only the
//! metrics and labels of the contract (`docs/metrics.md`).
//!
//! That every query returns data is proven against a live Prometheus
//! elsewhere, with the queries of `support/dashboard_queries.rs`.

use crate::support::dashboard_queries;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use dashboard_queries::{
    Query, Source, Substitutions, all_panels, annotation_queries, load_dashboard, panel_queries,
    substitute, variable_queries,
};
use serde_json::{Value, json};

/// The auditor's own metrics: the contract of `docs/metrics.md`.
const CONTRACT_METRICS: &[&str] = &[
    "cutover_ready",
    "cutover_state",
    "cutover_state_since_timestamp_seconds",
    "cutover_reason",
    "cutover_last_use_timestamp_seconds",
    "cutover_ready_in_seconds",
    "cutover_window_seconds",
    "cutover_window_coverage_ratio",
    "cutover_window_increase",
    "cutover_regressions_total",
    "cutover_token_uses_total",
    "cutover_token_uses_increase",
    "cutover_apiserver_token_uses_total",
    "cutover_scrape_success",
    "cutover_scrape_duration_seconds",
    "cutover_scrape_errors_total",
    "cutover_apiserver_resets_total",
    "cutover_coverage_holes_total",
    "cutover_targets",
    "cutover_last_evaluation_timestamp_seconds",
    "cutover_build_info",
    "cutover_alertmanager_errors_total",
];

/// Labels of the contract, plus the cluster label the dashboard is set to.
const CONTRACT_LABELS: &[&str] = &[
    "cutover",
    "state",
    "kind",
    "window",
    "apiserver",
    "reason",
    "version",
    "cluster",
];

/// What the dashboard must show: the metric behind each view.
const REQUIRED_METRICS: &[&str] = &[
    "cutover_state",
    "cutover_reason",
    "cutover_ready_in_seconds",
    "cutover_last_use_timestamp_seconds",
    "cutover_window_coverage_ratio",
    "cutover_token_uses_total",
    "cutover_apiserver_token_uses_total",
    "cutover_token_uses_increase",
    "cutover_apiserver_resets_total",
    "cutover_coverage_holes_total",
    "cutover_scrape_success",
    "cutover_scrape_duration_seconds",
    "cutover_scrape_errors_total",
];

const DATASOURCE_REF: &str = "${datasource}";

/// Fleet panels (title prefix; their source is `panel "Fleet: ..."`) show
/// every cluster, ignoring the cluster variable.
const FLEET_PREFIX: &str = "panel \"Fleet:";

/// The state encoding of the verdict panels' value mappings: a lower value
/// is a worse state, so `min` is the worst.
const STATE_VALUES: &[(&str, &str)] = &[
    ("0", "blind"),
    ("1", "in_use"),
    ("2", "no_signal"),
    ("3", "ready"),
];

#[test]
fn the_dashboard_uses_the_current_schema_and_a_datasource_and_cluster_variable() {
    let d = load_dashboard();
    let schema = d["schemaVersion"].as_u64().unwrap_or(0);
    assert!(schema >= 39, "schemaVersion {schema}: 39 or later expected");
    for key in ["uid", "title", "description"] {
        assert!(
            d[key].as_str().is_some_and(|s| !s.is_empty()),
            "dashboard {key}"
        );
    }
    assert!(
        d.get("__inputs").is_none(),
        "__inputs: use the datasource variable instead"
    );
    let vars: BTreeMap<&str, &Value> = d["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| (v["name"].as_str().unwrap_or_default(), v))
        .collect();
    let ds = vars
        .get("datasource")
        .unwrap_or_else(|| panic!("no datasource variable"));
    assert_eq!(
        (&ds["type"], &ds["query"]),
        (&json!("datasource"), &json!("prometheus"))
    );

    // The cluster label's name is a hidden constant, like kubernetes-mixin's
    // clusterLabel: every query matches on `${cluster_label}=~"${cluster}"`.
    let label = vars
        .get("cluster_label")
        .unwrap_or_else(|| panic!("no cluster_label variable"));
    assert_eq!(label["type"], "constant");
    assert_eq!(label["query"], label["current"]["value"]);
    let cluster = vars
        .get("cluster")
        .unwrap_or_else(|| panic!("no cluster variable"));
    assert_eq!(cluster["type"], "query");
    assert_eq!(cluster["datasource"]["uid"], DATASOURCE_REF);
    // One cluster at a time: with "All" the verdict would mix clusters. The
    // Fleet row shows every cluster instead.
    assert_eq!(
        (&cluster["includeAll"], &cluster["multi"]),
        (&json!(false), &json!(false)),
        "the cluster variable is single-select without All"
    );
    assert!(cluster.get("allValue").is_none(), "allValue without All");
    let query = variable_queries(&d, &Substitutions::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(query.len(), 1);
    assert_eq!(query[0].expr, "label_values(cutover_build_info, cluster)");

    let matcher = r#"${cluster_label}=~"${cluster}""#;
    for (source, expr) in raw_queries(&d) {
        if source.starts_with(FLEET_PREFIX) {
            assert!(
                !expr.contains("${cluster}"),
                "{source}: the fleet view shows every cluster:\n{expr}"
            );
            continue;
        }
        let selectors = expr.matches("cutover_").count();
        let filtered = expr.matches(matcher).count();
        assert_eq!(
            selectors, filtered,
            "{source}: every selector filters on the cluster:\n{expr}"
        );
    }
}

#[test]
fn no_datasource_is_hard_coded() {
    fn walk(v: &Value, path: &str, found: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    let here = format!("{path}/{k}");
                    if k == "datasource" {
                        let ok = child == &json!({"type": "prometheus", "uid": DATASOURCE_REF})
                            || child == &json!(DATASOURCE_REF);
                        if !ok {
                            found.push(format!("{here}: {child}"));
                        }
                    } else {
                        walk(child, &here, found);
                    }
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    walk(child, &format!("{path}/{i}"), found);
                }
            }
            _ => {}
        }
    }
    let d = load_dashboard();
    let mut found = Vec::new();
    walk(&d, "", &mut found);
    assert_eq!(found, Vec::<String>::new());
    // Every panel and annotation names its datasource (no implicit default).
    for p in all_panels(&d).into_iter().filter(|p| p["type"] != "row") {
        assert_eq!(
            p["datasource"]["uid"], DATASOURCE_REF,
            "panel {}",
            p["title"]
        );
        for t in p["targets"].as_array().into_iter().flatten() {
            assert_eq!(
                t["datasource"]["uid"], DATASOURCE_REF,
                "panel {}",
                p["title"]
            );
        }
    }
    for a in d["annotations"]["list"].as_array().into_iter().flatten() {
        assert_eq!(
            a["datasource"]["uid"], DATASOURCE_REF,
            "annotation {}",
            a["name"]
        );
    }
}

#[test]
fn every_panel_has_a_title_a_description_a_unit_and_a_query() {
    let d = load_dashboard();
    let mut ids = BTreeSet::new();
    for p in all_panels(&d) {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(
            !title.trim().is_empty(),
            "a panel without title: {}",
            p["id"]
        );
        assert!(
            ids.insert(p["id"].as_u64()),
            "duplicate panel id {}",
            p["id"]
        );
        if p["type"] == "row" {
            continue;
        }
        for pointer in ["/description", "/fieldConfig/defaults/unit", "/type"] {
            let value = p
                .pointer(pointer)
                .and_then(Value::as_str)
                .unwrap_or_default();
            assert!(
                !value.trim().is_empty(),
                "panel {title:?}: {pointer} missing"
            );
        }
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        assert!(!targets.is_empty(), "panel {title:?}: no query");
        let refs: BTreeSet<String> = targets.iter().map(|t| t["refId"].to_string()).collect();
        assert_eq!(
            refs.len(),
            targets.len(),
            "panel {title:?}: duplicate refId"
        );
    }
}

#[test]
fn panels_fit_the_grid_without_overlapping() {
    let d = load_dashboard();
    let boxes: Vec<(String, [u64; 4])> = all_panels(&d)
        .into_iter()
        .map(|p| {
            let g = &p["gridPos"];
            let n = |k: &str| {
                g[k].as_u64()
                    .unwrap_or_else(|| panic!("panel {}: gridPos.{k}", p["title"]))
            };
            (p["title"].to_string(), [n("x"), n("y"), n("w"), n("h")])
        })
        .collect();
    for (title, [x, _, w, h]) in &boxes {
        assert!(
            x + w <= 24 && *w > 0 && *h > 0,
            "{title}: outside the 24-column grid"
        );
    }
    for (i, (a, [ax, ay, aw, ah])) in boxes.iter().enumerate() {
        for (b, [bx, by, bw, bh]) in &boxes[i + 1..] {
            let apart = ax + aw <= *bx || bx + bw <= *ax || ay + ah <= *by || by + bh <= *ay;
            assert!(apart, "{a} overlaps {b}");
        }
    }
}

#[test]
fn every_query_uses_only_contract_metrics_and_labels() {
    let d = load_dashboard();
    let mut used = BTreeSet::new();
    for q in promql_queries(&d) {
        let names = promql_names(&q.expr).unwrap_or_else(|e| panic!("{:?}: {e}", q.source));
        for m in &names.metrics {
            assert!(
                CONTRACT_METRICS.contains(&m.as_str()),
                "{:?}: metric {m} is not in the contract",
                q.source
            );
        }
        for l in &names.labels {
            assert!(
                CONTRACT_LABELS.contains(&l.as_str()),
                "{:?}: label {l} is not in the contract",
                q.source
            );
        }
        used.extend(names.metrics);
    }
    let missing: Vec<_> = REQUIRED_METRICS
        .iter()
        .filter(|m| !used.contains(**m))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard shows nothing of {missing:?}"
    );
}

#[test]
fn regressions_and_verdict_changes_are_annotations() {
    let d = load_dashboard();
    let annotations =
        annotation_queries(&d, &Substitutions::default()).unwrap_or_else(|e| panic!("{e}"));
    let uses = |metric: &str| {
        annotations
            .iter()
            .any(|a| promql_names(&a.expr).is_ok_and(|n| n.metrics.contains(metric)))
    };
    assert!(
        uses("cutover_regressions_total"),
        "no regression annotation"
    );
    assert!(
        uses("cutover_state_since_timestamp_seconds"),
        "no verdict-change annotation"
    );
    for a in d["annotations"]["list"].as_array().into_iter().flatten() {
        assert_eq!(a["enable"], true, "annotation {} is off", a["name"]);
        assert!(
            a["titleFormat"]
                .as_str()
                .is_some_and(|t| t.contains("{{cutover}}"))
        );
    }
}

/// promtool parses every query (as a recording rule) with Prometheus' own
/// PromQL parser: a syntax error here would be "No data" in Grafana.
#[test]
fn every_query_is_valid_promql() {
    let d = load_dashboard();
    let rules: Vec<Value> = promql_queries(&d)
        .iter()
        .enumerate()
        .map(|(i, q)| json!({"record": format!("dashboard:query_{i}"), "expr": q.expr}))
        .collect();
    let file = format!(
        "{}/dashboard-queries-{}.json",
        env!("CARGO_TARGET_TMPDIR"),
        std::process::id()
    );
    let doc = json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(&file, doc.to_string()).unwrap_or_else(|e| panic!("{file}: {e}"));
    let out = Command::new("promtool")
        .args(["check", "rules", &file])
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool is required ({e}); install: apt-get install -y prometheus")
        });
    let _ = std::fs::remove_file(&file);
    assert!(
        out.status.success(),
        "promtool check rules:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn substitute_replaces_every_variable_form() {
    let subs = Substitutions {
        cluster_label: "k8s_cluster".into(),
        cluster: "prod|dev".into(),
        ..Substitutions::default()
    };
    let check = |input: &str, expected: Result<&str, &str>| {
        let got = substitute(input, &subs);
        match expected {
            Ok(want) => assert_eq!(got.as_deref(), Ok(want), "{input}"),
            Err(want) => assert!(
                got.as_ref().is_err_and(|e| e.contains(want)),
                "{input}: {got:?}"
            ),
        }
    };
    check(
        r#"x{${cluster_label}=~"${cluster}"}"#,
        Ok(r#"x{k8s_cluster=~"prod|dev"}"#),
    );
    check(
        r#"x{$cluster_label=~"$cluster"}"#,
        Ok(r#"x{k8s_cluster=~"prod|dev"}"#),
    );
    check("rate(x[$__rate_interval])", Ok("rate(x[1m])"));
    check(
        "increase(x[$__range]) [[cluster]] ${cluster:regex}",
        Ok("increase(x[1h]) prod|dev prod|dev"),
    );
    check("x[5m] offset 1h", Ok("x[5m] offset 1h"));
    check(r#"x{a=~"b$"}"#, Ok(r#"x{a=~"b$"}"#));
    check("x{$clusters}", Err("unknown variable \"clusters\""));
    check("x{${cluster}", Ok("x{prod|dev"));
    check("x{${cluster", Err("unclosed"));
}

#[test]
fn promql_names_finds_metrics_labels_and_functions() {
    let check = |expr: &str, metrics: &[&str], labels: &[&str]| {
        let n = promql_names(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        let set = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!((n.metrics, n.labels), (set(metrics), set(labels)), "{expr}");
    };
    check("up", &["up"], &[]);
    check(
        r#"sum by (kind) (rate(a_total{cluster=~".*", kind!="x"}[5m]))"#,
        &["a_total"],
        &["kind", "cluster"],
    );
    check(
        r#"(max by (c) (changes(a[2m])) > 0) * on (c) group_left (s) max by (c, s) (b{s="x"} == 1)"#,
        &["a", "b"],
        &["c", "s"],
    );
    check(
        r#"x or label_replace(sum by (i) (0 * y), "r", "none", "", "")"#,
        &["x", "y"],
        &["i"],
    );
    check("time() - max(t) offset 5m", &["t"], &[]);
    check("a and bool b unless c", &["a", "b", "c"], &[]);
    check("x{a=\"}\"} + 1e3", &["x"], &["a"]);
    assert!(promql_names("rat(x[5m])").is_err_and(|e| e.contains("rat")));
    assert!(promql_names("x{a=\"b\"").is_err());
}

#[test]
fn the_live_query_helper_lists_every_panel_target() {
    let d = load_dashboard();
    let queries = panel_queries(&d, &Substitutions::default()).unwrap_or_else(|e| panic!("{e}"));
    let targets: usize = all_panels(&d)
        .iter()
        .map(|p| p["targets"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(queries.len(), targets);
    for q in &queries {
        assert!(matches!(q.source, Source::Panel(_)));
        // `"$1"` is a label_replace group, not a variable.
        assert!(
            !q.expr.replace(r#""$1""#, "").contains('$'),
            "{:?}: unsubstituted {}",
            q.source,
            q.expr
        );
    }
}

// ---------------------------------------------------------------------------

/// Every PromQL query of the dashboard (panels and annotations), with the
/// variables at their defaults.
/// Every verdict query aggregates the state with `min` over the value
/// mapping where lower is worse: a cluster (or an auditor) still in use is
/// never painted over by a ready one.
#[test]
fn verdict_panels_show_the_worst_state() {
    let d = load_dashboard();
    let mut verdicts = 0;
    for p in all_panels(&d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_default();
            if !expr.contains("cutover_state{") {
                continue;
            }
            verdicts += 1;
            assert!(
                expr.contains("min by (") && !expr.contains("max by ("),
                "panel {}: the worst (min) state expected:\n{expr}",
                p["title"]
            );
            let mapping = &p["fieldConfig"]["defaults"]["mappings"][0]["options"];
            for (value, state) in STATE_VALUES {
                assert_eq!(
                    mapping[*value]["text"], *state,
                    "panel {}: value {value}",
                    p["title"]
                );
                assert!(
                    expr.contains(&format!("{value} * (cutover_state{{"))
                        && expr.contains(&format!("state=\"{state}\"}} == 1)")),
                    "panel {}: {state} must be {value}:\n{expr}",
                    p["title"]
                );
            }
        }
    }
    assert!(verdicts >= 3, "{verdicts} verdict queries");
}

/// The fleet view: every cluster, grouped by the cluster label, the
/// worst state, and the cluster named in every legend.
#[test]
fn the_fleet_view_shows_the_worst_state_per_cluster_with_the_cluster_in_legends() {
    let d = load_dashboard();
    let fleet: Vec<&Value> = all_panels(&d)
        .into_iter()
        .filter(|p| p["title"].as_str().is_some_and(|t| t.starts_with("Fleet:")))
        .collect();
    assert!(!fleet.is_empty(), "no Fleet: panel");
    for p in fleet {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(
                expr.contains("min by (${cluster_label}, cutover)"),
                "grouped by cluster and cutover:\n{expr}"
            );
            assert!(
                expr.contains(r#"label_replace("#)
                    && expr.contains(r#""cluster", "$1", "${cluster_label}""#),
                "the cluster label is copied to `cluster` for the legend:\n{expr}"
            );
            let legend = t["legendFormat"].as_str().unwrap_or_default();
            assert!(legend.starts_with("{{cluster}}"), "legend {legend:?}");
        }
    }
}

/// Links to the runbooks and the status page, times in UTC, and token
/// counters (token-cache misses) never shown as requests.
#[test]
fn links_utc_and_token_units() {
    let d = load_dashboard();
    assert_eq!(d["timezone"], "utc");
    let vars: BTreeMap<&str, &Value> = d["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| (v["name"].as_str().unwrap_or_default(), v))
        .collect();
    let links: BTreeMap<&str, &str> = d["links"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            (
                l["title"].as_str().unwrap_or_default(),
                l["url"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(links.get("Runbooks"), Some(&"${runbook_base}"));
    assert_eq!(links.get("Status page"), Some(&"${status_page}"));
    // The runbook base is the alerts' default runbook_url base.
    let rules = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/rules/cutover-auditor.rules.yaml"
    ))
    .unwrap_or_else(|e| panic!("rules: {e}"));
    let base = vars["runbook_base"]["query"].as_str().unwrap_or_default();
    assert!(
        rules.contains(&format!("runbook_url: {base}CutoverAuditorDown.md")),
        "runbook_base {base} is not the rules' base"
    );
    assert_eq!(vars["status_page"]["type"], "constant");

    for p in all_panels(&d) {
        let unit = p["fieldConfig"]["defaults"]["unit"]
            .as_str()
            .unwrap_or_default();
        assert_ne!(unit, "reqps", "panel {}: not requests", p["title"]);
        let token = p["targets"].as_array().into_iter().flatten().any(|t| {
            let e = t["expr"].as_str().unwrap_or_default();
            e.contains("rate(cutover_token_uses_total")
                || e.contains("rate(cutover_apiserver_token_uses_total")
        });
        if token {
            assert_eq!(unit, "suffix: misses/s", "panel {}", p["title"]);
        }
    }
}

fn promql_queries(d: &Value) -> Vec<Query> {
    let subs = Substitutions::default();
    let mut q = panel_queries(d, &subs).unwrap_or_else(|e| panic!("{e}"));
    q.extend(annotation_queries(d, &subs).unwrap_or_else(|e| panic!("{e}")));
    assert!(q.len() >= 15, "only {} queries", q.len());
    q
}

/// Panel and annotation expressions before substitution.
fn raw_queries(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in all_panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push((
                format!("panel {}", p["title"]),
                t["expr"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    for a in d["annotations"]["list"].as_array().into_iter().flatten() {
        out.push((
            format!("annotation {}", a["name"]),
            a["expr"].as_str().unwrap_or_default().to_string(),
        ));
    }
    out
}

/// The metric and label names a PromQL expression refers to.
#[derive(Debug, Default)]
struct Names {
    metrics: BTreeSet<String>,
    labels: BTreeSet<String>,
}

/// A light PromQL reader, enough to list names: strings, numbers and range
/// selectors are skipped; label lists follow grouping keywords; matchers sit
/// in braces; an identifier before `(` is a function and must be known.
fn promql_names(expr: &str) -> Result<Names, String> {
    const FUNCTIONS: &[&str] = &[
        "abs",
        "absent",
        "avg",
        "ceil",
        "changes",
        "clamp_max",
        "clamp_min",
        "count",
        "delta",
        "deriv",
        "floor",
        "histogram_quantile",
        "idelta",
        "increase",
        "irate",
        "label_replace",
        "last_over_time",
        "max",
        "max_over_time",
        "min",
        "min_over_time",
        "rate",
        "resets",
        "round",
        "scalar",
        "sort",
        "sort_desc",
        "sum",
        "time",
        "timestamp",
        "topk",
        "bottomk",
        "vector",
    ];
    const GROUPING: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "inf", "nan"];

    #[derive(Debug, PartialEq)]
    enum Tok {
        Ident(String),
        Str,
        Punct(char),
    }
    let mut toks = Vec::new();
    let mut chars = expr.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' || c == '\'' || c == '`' {
            chars.next();
            let mut closed = false;
            while let Some(d) = chars.next() {
                if d == '\\' && c != '`' {
                    chars.next();
                } else if d == c {
                    closed = true;
                    break;
                }
            }
            if !closed {
                return Err("unterminated string".into());
            }
            toks.push(Tok::Str);
        } else if c == '[' {
            // A range or subquery: durations only.
            for d in chars.by_ref() {
                if d == ']' {
                    break;
                }
            }
        } else if c.is_ascii_digit() || c == '.' {
            while chars
                .peek()
                .is_some_and(|d| d.is_ascii_alphanumeric() || *d == '.')
            {
                chars.next();
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let mut ident = String::new();
            while let Some(&d) = chars.peek() {
                if d.is_ascii_alphanumeric() || d == '_' || d == ':' {
                    ident.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            toks.push(Tok::Ident(ident));
        } else {
            toks.push(Tok::Punct(c));
            chars.next();
        }
    }

    let mut names = Names::default();
    let mut i = 0;
    while i < toks.len() {
        let paren_next = toks.get(i + 1) == Some(&Tok::Punct('('));
        // A call, or an aggregation with its modifier first: `sum by (x) (...)`.
        let call = paren_next
            || matches!(toks.get(i + 1), Some(Tok::Ident(m)) if m == "by" || m == "without");
        match &toks[i] {
            Tok::Ident(id) if paren_next && GROUPING.contains(&id.as_str()) => {
                i += 2;
                while let Some(t) = toks.get(i) {
                    match t {
                        Tok::Punct(')') => break,
                        Tok::Ident(l) => {
                            names.labels.insert(l.clone());
                        }
                        _ => {}
                    }
                    i += 1;
                }
                if i >= toks.len() {
                    return Err(format!("unclosed label list after {id}"));
                }
            }
            Tok::Ident(id) if call && !FUNCTIONS.contains(&id.as_str()) => {
                return Err(format!("unknown function {id}"));
            }
            Tok::Ident(id)
                if call || KEYWORDS.contains(&id.as_str()) || GROUPING.contains(&id.as_str()) => {}
            Tok::Ident(id) => {
                names.metrics.insert(id.clone());
            }
            Tok::Punct('{') => {
                // Matchers: label op "value", separated by commas.
                i += 1;
                loop {
                    match toks.get(i) {
                        Some(Tok::Punct('}')) => break,
                        Some(Tok::Ident(l)) => {
                            names.labels.insert(l.clone());
                        }
                        Some(_) => {}
                        None => return Err("unclosed {".into()),
                    }
                    i += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(names)
}
