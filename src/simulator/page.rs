//! Renders an instance's `/metrics` page the way kube-apiserver's
//! client_golang does: families sorted by name, HELP with the stability
//! prefix, floats in Go `g` format, and a bulk of histogram-heavy families
//! shaped like a real page (after `benches/gen-apiserver-metrics.py`).

use std::fmt::Write as _;

use crate::families::{BUILD_INFO, PROCESS_START_TIME, RESET_SENTINEL, TokenKind};
use crate::gofmt::go_float;

use super::scenario::{KubeVersion, OutageMode};
use super::world::InstanceView;

/// The families of a page that do not change between scrapes, sorted by name.
#[derive(Clone, Debug, Default)]
pub struct Bulk {
    families: Vec<(String, String)>,
}

impl Bulk {
    /// Generates about `kib` KiB of bulk families, deterministically from `seed`.
    pub fn generate(kib: usize, seed: u64) -> Bulk {
        let target = kib * 1024;
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut fams: Vec<Family> = [
            ("apiserver_request_duration_seconds", "histogram", "[STABLE] Response latency distribution in seconds for each verb, dry run value, group, version, resource, subresource, scope and component."),
            ("apiserver_request_total", "counter", "[STABLE] Counter of apiserver requests broken out for each verb, dry run value, group, version, resource, scope, component, and HTTP response code."),
            ("apiserver_storage_objects", "gauge", "[STABLE] Number of stored objects at the time of last check split by kind. In case of a fetching error, the value will be -1."),
            ("etcd_request_duration_seconds", "histogram", "[ALPHA] Etcd request latency in seconds for each operation and object type."),
            ("watch_cache_capacity", "gauge", "[ALPHA] Total capacity of watch cache broken by resource type."),
            ("workqueue_adds_total", "counter", "[ALPHA] Total number of adds handled by workqueue"),
        ]
        .into_iter()
        .map(|(name, kind, help)| Family::new(name, kind, help))
        .collect();
        let fixed = [
            (
                "go_goroutines",
                "gauge",
                "Number of goroutines that currently exist.",
                2590.0,
            ),
            (
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
                129.43,
            ),
            (
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                4.1238528e+08,
            ),
            (
                "rest_client_requests_total",
                "counter",
                "[ALPHA] Number of HTTP requests, partitioned by status code, method, and host.",
                0.0,
            ),
        ];
        for (name, kind, help, value) in fixed {
            let mut f = Family::new(name, kind, help);
            if name == "rest_client_requests_total" {
                for verb in ["GET", "PATCH", "POST", "PUT"] {
                    let _ = writeln!(
                        f.body,
                        "{name}{{code=\"200\",host=\"[::1]:6443\",method=\"{verb}\"}} {}",
                        go_float(rng.below(10_000_000) as f64)
                    );
                }
            } else {
                let _ = writeln!(f.body, "{name} {}", go_float(value));
            }
            fams.push(f);
        }
        for w in [
            "APIServiceRegistrationController",
            "DiscoveryController",
            "crd_finalizer",
            "priority_and_fairness_config_queue",
        ] {
            let _ = writeln!(
                fams[5].body,
                "workqueue_adds_total{{name=\"{w}\"}} {}",
                go_float(rng.below(10_000_000) as f64)
            );
        }
        let mut n = 0;
        while fams.iter().map(|f| f.len()).sum::<usize>() < target {
            let (group, resource) = resource(n);
            n += 1;
            let typ = if group.is_empty() {
                resource.clone()
            } else {
                format!("{resource}.{group}")
            };
            for verb in ["GET", "LIST", "WATCH", "PATCH"] {
                if rng.below(4) == 0 {
                    continue;
                }
                let labels = format!(
                    "component=\"apiserver\",dry_run=\"\",group=\"{group}\",resource=\"{resource}\",scope=\"resource\",subresource=\"\",verb=\"{verb}\",version=\"v1\""
                );
                histogram(
                    &mut fams[0].body,
                    "apiserver_request_duration_seconds",
                    &labels,
                    &DURATION_BUCKETS,
                    &mut rng,
                );
                let _ = writeln!(
                    fams[1].body,
                    "apiserver_request_total{{code=\"200\",{labels}}} {}",
                    go_float(rng.below(10_000_000) as f64)
                );
            }
            for op in ["get", "list", "update"] {
                histogram(
                    &mut fams[3].body,
                    "etcd_request_duration_seconds",
                    &format!("operation=\"{op}\",type=\"{typ}\""),
                    &DURATION_BUCKETS,
                    &mut rng,
                );
            }
            let _ = writeln!(
                fams[2].body,
                "apiserver_storage_objects{{resource=\"{typ}\"}} {}",
                rng.below(50_000)
            );
            let _ = writeln!(
                fams[4].body,
                "watch_cache_capacity{{resource=\"{typ}\"}} {}",
                [100, 1000, 10000][rng.below(3) as usize]
            );
            if target == 0 {
                break;
            }
        }
        let mut families: Vec<(String, String)> = fams
            .into_iter()
            .filter(|f| !f.body.is_empty())
            .map(|f| (f.name.to_string(), f.text()))
            .collect();
        families.sort();
        Bulk { families }
    }

    /// Size of the bulk text in bytes.
    pub fn len(&self) -> usize {
        self.families.iter().map(|(_, t)| t.len()).sum()
    }

    /// True if there are no bulk families.
    pub fn is_empty(&self) -> bool {
        self.families.is_empty()
    }
}

/// The page the instance serves right now: [`render`], except during the
/// outages that spoil the page (`empty_page`, `no_families`, `truncated`).
pub fn render_served(view: &InstanceView, bulk: &Bulk) -> String {
    match view.outage.map(|(mode, _)| mode) {
        Some(OutageMode::EmptyPage) => String::new(),
        Some(OutageMode::NoFamilies) => render_families(view, bulk, false),
        Some(OutageMode::Truncated) => truncated(render(view, bulk)),
        _ => render(view, bulk),
    }
}

/// The whole page of an instance: bulk plus the live families, sorted by name.
pub fn render(view: &InstanceView, bulk: &Bulk) -> String {
    render_families(view, bulk, true)
}

/// `page` cut in the middle of the line halfway to the first
/// `serviceaccount_*` family (halfway through the page if there is none):
/// just after the line's `{` if it has one, else at its middle. The cut line
/// has no newline and is never a complete sample.
pub fn truncated(mut page: String) -> String {
    let end = page.find("\n# HELP serviceaccount_").unwrap_or(page.len());
    let p = end / 2;
    let line_start = page[..p].rfind('\n').map_or(0, |n| n + 1);
    let line_end = page[p..].find('\n').map_or(page.len(), |n| p + n);
    let line = &page[line_start..line_end];
    let cut = line.find('{').map_or(line.len() / 2, |b| b + 1);
    page.truncate(line_start + cut);
    page
}

fn render_families(view: &InstanceView, bulk: &Bulk, token_families: bool) -> String {
    let v = view.version;
    let mut live: Vec<(String, String)> = Vec::new();
    let mut cache = Family::new(RESET_SENTINEL, "counter", "[ALPHA] ");
    let _ = writeln!(
        cache.body,
        "{RESET_SENTINEL}{{status=\"hit\"}} {}",
        go_float(view.cache_hits as f64)
    );
    let _ = writeln!(
        cache.body,
        "{RESET_SENTINEL}{{status=\"miss\"}} {}",
        go_float(view.cache_misses as f64)
    );
    if token_families {
        live.push((RESET_SENTINEL.to_string(), cache.text()));
    }
    let mut build = Family::new(
        BUILD_INFO,
        "gauge",
        "[ALPHA] A metric with a constant '1' value labeled by major, minor, git version, git commit, git tree state, build date, Go version, and compiler from which Kubernetes was built, and platform on which it is running.",
    );
    let _ = writeln!(
        build.body,
        "{BUILD_INFO}{{build_date=\"2025-12-17T12:32:06Z\",compiler=\"gc\",git_commit=\"{:040x}\",git_tree_state=\"clean\",git_version=\"{}\",go_version=\"go1.25.5\",major=\"{}\",minor=\"{}\",platform=\"linux/amd64\"}} 1",
        (v.minor as u128) << 64 | v.patch as u128,
        v.git_version(),
        v.major,
        v.minor
    );
    live.push((BUILD_INFO.to_string(), build.text()));
    let mut start = Family::new(
        PROCESS_START_TIME,
        "gauge",
        "[STABLE] Start time of the process since unix epoch in seconds.",
    );
    let _ = writeln!(
        start.body,
        "{PROCESS_START_TIME} {}",
        go_float(view.start_time.as_secs_f64())
    );
    live.push((PROCESS_START_TIME.to_string(), start.text()));
    for (kind, value) in view.counters.iter().filter(|_| token_families) {
        let name = kind.family();
        let mut f = Family::new(name, "counter", &help(*kind, v));
        let _ = writeln!(f.body, "{name} {}", go_float(*value as f64));
        live.push((name.to_string(), f.text()));
    }
    let mut all: Vec<&(String, String)> = bulk.families.iter().chain(live.iter()).collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::with_capacity(bulk.len() + 4096);
    for (_, text) in all {
        out.push_str(text);
    }
    out
}

/// The HELP text of a token family on version `v`, stability prefix included.
pub fn help(kind: TokenKind, v: KubeVersion) -> String {
    let (text, promoted) = match kind {
        TokenKind::Legacy => ("Cumulative legacy service account tokens used", true),
        TokenKind::Stale => (
            "Cumulative stale projected service account tokens used",
            true,
        ),
        TokenKind::Valid => (
            "Cumulative valid projected service account tokens used",
            true,
        ),
        TokenKind::LegacyAuto => ("Cumulative auto-generated legacy tokens used", false),
        TokenKind::LegacyManual => ("Cumulative manually created legacy tokens used", false),
        TokenKind::InvalidLegacyAuto => (
            "Cumulative invalid auto-generated legacy tokens used",
            false,
        ),
    };
    let level = if promoted && v.at_least(37) {
        "BETA"
    } else {
        "ALPHA"
    };
    format!("[{level}] {text}")
}

const DURATION_BUCKETS: [f64; 23] = [
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0,
    10.0, 15.0, 20.0, 30.0, 45.0, 60.0,
];

const BUILTIN: [(&str, &str); 12] = [
    ("", "pods"),
    ("", "nodes"),
    ("", "services"),
    ("", "endpoints"),
    ("", "configmaps"),
    ("", "secrets"),
    ("", "serviceaccounts"),
    ("apps", "deployments"),
    ("apps", "replicasets"),
    ("batch", "jobs"),
    ("coordination.k8s.io", "leases"),
    ("discovery.k8s.io", "endpointslices"),
];

fn resource(n: usize) -> (String, String) {
    match BUILTIN.get(n) {
        Some((g, r)) => (g.to_string(), r.to_string()),
        None => {
            let k = n - BUILTIN.len();
            (
                format!("group{}.example.io", k / 4),
                format!("widget{}s", k % 4),
            )
        }
    }
}

struct Family {
    name: &'static str,
    kind: &'static str,
    help: String,
    body: String,
}

impl Family {
    fn new(name: &'static str, kind: &'static str, help: &str) -> Family {
        Family {
            name,
            kind,
            help: help.to_string(),
            body: String::new(),
        }
    }

    fn len(&self) -> usize {
        self.body.len()
    }

    fn text(&self) -> String {
        format!(
            "# HELP {} {}\n# TYPE {} {}\n{}",
            self.name, self.help, self.name, self.kind, self.body
        )
    }
}

fn histogram(out: &mut String, name: &str, labels: &str, buckets: &[f64], rng: &mut Rng) {
    let count = rng.below(100_000);
    let mut cumulative = 0;
    for le in buckets {
        cumulative += rng.below((count - cumulative) / 3 + 1);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels},le=\"{}\"}} {}",
            go_float(*le),
            go_float(cumulative as f64)
        );
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{{labels},le=\"+Inf\"}} {}",
        go_float(count as f64)
    );
    let _ = writeln!(
        out,
        "{name}_sum{{{labels}}} {}",
        go_float(count as f64 * 0.0123456789)
    );
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", go_float(count as f64));
}

/// xorshift64: deterministic pages without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        if n == 0 { 0 } else { self.0 % n }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_prefix_follows_the_version() {
        assert_eq!(
            help(TokenKind::Legacy, KubeVersion::new(1, 36, 1)),
            "[ALPHA] Cumulative legacy service account tokens used"
        );
        assert_eq!(
            help(TokenKind::Stale, KubeVersion::new(1, 37, 0)),
            "[BETA] Cumulative stale projected service account tokens used"
        );
        assert_eq!(
            help(TokenKind::LegacyAuto, KubeVersion::new(1, 37, 0)),
            "[ALPHA] Cumulative auto-generated legacy tokens used"
        );
    }

    #[test]
    fn bulk_is_sized_and_sorted() {
        let bulk = Bulk::generate(256, 7);
        assert!(
            bulk.len() >= 256 * 1024 && bulk.len() < 400 * 1024,
            "{}",
            bulk.len()
        );
        let names: Vec<&str> = bulk.families.iter().map(|f| f.0.as_str()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert!(Bulk::generate(0, 7).len() < 4096);
    }
}
