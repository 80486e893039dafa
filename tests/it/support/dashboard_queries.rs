//! The PromQL queries of `dashboards/cutover-auditor.json`, with the Grafana
//! variables substituted, ready to be sent to a Prometheus HTTP API.
//!
//! A live test takes [`panel_queries`] (every panel target must return data
//! on a running auditor) and may run [`annotation_queries`] too (they return
//! data only after a regression or a verdict change). `label_values(...)` in
//! [`variable_queries`] is Grafana syntax, not PromQL.

use std::path::PathBuf;

use serde_json::Value;

/// Values for the dashboard's variables and Grafana's built-in intervals.
#[derive(Clone, Debug)]
pub struct Substitutions {
    /// `${cluster_label}`: the label that tells clusters apart.
    pub cluster_label: String,
    /// `${cluster}`: a regex over cluster names; `.*` is the "All" value and
    /// also matches series without the label (a single-cluster Prometheus).
    pub cluster: String,
    /// `${datasource}`: only appears in datasource fields, never in a query.
    pub datasource: String,
    /// `$__interval`: Grafana's step for the panel's width and time range.
    pub interval: String,
    /// `$__rate_interval`: at least four scrape intervals of Prometheus.
    pub rate_interval: String,
    /// `$__range`: the dashboard's time range.
    pub range: String,
}

impl Default for Substitutions {
    /// Values for a Prometheus scraping the auditor every 15 s, one cluster.
    fn default() -> Self {
        Substitutions {
            cluster_label: "cluster".into(),
            cluster: ".*".into(),
            datasource: "prometheus".into(),
            interval: "15s".into(),
            rate_interval: "1m".into(),
            range: "1h".into(),
        }
    }
}

/// Where a query sits in the dashboard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A target of the panel with this title.
    Panel(String),
    /// The annotation with this name.
    Annotation(String),
    /// The templating variable with this name.
    Variable(String),
}

/// One query, variables substituted.
#[derive(Clone, Debug)]
pub struct Query {
    /// Where it comes from.
    pub source: Source,
    /// The target's `refId` (`A`, `B`...), or the annotation/variable name.
    pub ref_id: String,
    /// The PromQL expression (Grafana syntax for variables).
    pub expr: String,
    /// True when Grafana runs it as an instant query; else a range query.
    pub instant: bool,
}

/// The dashboard JSON shipped in `dashboards/cutover-auditor.json`.
pub fn load_dashboard() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dashboards/cutover-auditor.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every panel target's query, rows' nested panels included, in panel order.
pub fn panel_queries(dashboard: &Value, subs: &Substitutions) -> Result<Vec<Query>, String> {
    let mut queries = Vec::new();
    for panel in all_panels(dashboard) {
        let title = panel["title"].as_str().unwrap_or("(untitled)").to_string();
        for t in panel["targets"].as_array().into_iter().flatten() {
            let ref_id = t["refId"].as_str().unwrap_or("?").to_string();
            let expr = t["expr"]
                .as_str()
                .ok_or_else(|| format!("panel {title:?} target {ref_id}: no expr"))?;
            queries.push(Query {
                source: Source::Panel(title.clone()),
                expr: substitute(expr, subs)
                    .map_err(|e| format!("panel {title:?} target {ref_id}: {e}"))?,
                ref_id,
                instant: t["instant"] == true && t["range"] != true,
            });
        }
    }
    Ok(queries)
}

/// The Prometheus annotation queries (range queries stepped by their `step`).
pub fn annotation_queries(dashboard: &Value, subs: &Substitutions) -> Result<Vec<Query>, String> {
    let mut queries = Vec::new();
    for a in dashboard["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let Some(expr) = a["expr"].as_str() else {
            continue;
        };
        let name = a["name"].as_str().unwrap_or("(unnamed)").to_string();
        queries.push(Query {
            source: Source::Annotation(name.clone()),
            expr: substitute(expr, subs).map_err(|e| format!("annotation {name:?}: {e}"))?,
            ref_id: name,
            instant: false,
        });
    }
    Ok(queries)
}

/// The queries of `query` variables (Grafana's `label_values(...)` syntax).
pub fn variable_queries(dashboard: &Value, subs: &Substitutions) -> Result<Vec<Query>, String> {
    let mut queries = Vec::new();
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if v["type"] != "query" {
            continue;
        }
        let name = v["name"].as_str().unwrap_or("(unnamed)").to_string();
        // Newer Grafana stores the query as an object.
        let text = v["query"]
            .as_str()
            .or_else(|| v["query"]["query"].as_str())
            .ok_or_else(|| format!("variable {name:?}: no query"))?;
        queries.push(Query {
            source: Source::Variable(name.clone()),
            expr: substitute(text, subs).map_err(|e| format!("variable {name:?}: {e}"))?,
            ref_id: name,
            instant: true,
        });
    }
    Ok(queries)
}

/// Every panel of the dashboard, depth first: top-level panels and the
/// panels nested in collapsed rows.
pub fn all_panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
        for p in panels.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Replaces Grafana variable references (`$name`, `${name}`, `${name:format}`,
/// `[[name]]`) with their values. An unknown variable is an error, so a
/// query cannot silently keep a `$` that Prometheus would reject.
pub fn substitute(text: &str, subs: &Substitutions) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(['$', '[']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let (name, len) = if let Some(braced) = tail.strip_prefix("${") {
            let end = braced
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {text:?}"))?;
            let inner = &braced[..end];
            (inner.split(':').next().unwrap_or(inner), end + 3)
        } else if let Some(bracketed) = tail.strip_prefix("[[") {
            let end = bracketed
                .find("]]")
                .ok_or_else(|| format!("unclosed [[ in {text:?}"))?;
            (&bracketed[..end], end + 4)
        } else if let Some(bare) = tail.strip_prefix('$') {
            let end = bare
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(bare.len());
            (&bare[..end], end + 1)
        } else {
            ("", 1)
        };
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            // A plain `[` (range selector), `$` (regex anchor) or `$1` (a
            // label_replace group, which Grafana leaves alone) is no variable.
            out.push_str(&tail[..1]);
            rest = &tail[1..];
            continue;
        }
        let value = match name {
            "cluster_label" => &subs.cluster_label,
            "cluster" => &subs.cluster,
            "datasource" => &subs.datasource,
            "__interval" => &subs.interval,
            "__rate_interval" => &subs.rate_interval,
            "__range" => &subs.range,
            other => return Err(format!("unknown variable {other:?} in {text:?}")),
        };
        out.push_str(value);
        rest = &tail[len..];
    }
    out.push_str(rest);
    Ok(out)
}
