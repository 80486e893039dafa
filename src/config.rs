//! Configuration: loaded and validated once, every error named.
//!
//! A raw serde shape with `deny_unknown_fields` mirrors the TOML file; it is
//! turned into a validated [`Config`] whose fields can be trusted everywhere
//! else. Reading the environment is injected (`env`), so validation is pure;
//! the files a config names (token, CA) are checked apart, by
//! [`Config::check_files`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use crate::credentials::{TokenFile, read_ca_bundle};
use crate::cutover::BuiltinCutover;
use crate::verdict::{CutoverSpec, DEFAULT_TOLERANCE};

/// The validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Address of the auditor's own HTTP server.
    pub listen: SocketAddr,
    /// How apiservers are scraped.
    pub scrape: ScrapeConfig,
    /// Which apiservers are scraped.
    pub targets: Targets,
    /// The enabled cutovers, in a stable order.
    pub cutovers: Vec<CutoverSpec>,
    /// Where the ledger is persisted.
    pub state: StateConfig,
    /// How the daemon logs.
    pub log: LogConfig,
    /// Direct push of alerts to Alertmanager, if configured.
    pub alertmanager: Option<AlertmanagerConfig>,
    /// Where samples come from: the apiservers, or Prometheus-compatible history.
    pub source: Source,
    /// The Prometheus-compatible history source (backfill, or the only source).
    pub history: Option<HistoryConfig>,
    /// Who uses legacy tokens (`[attribution]`); `None` when no source is on.
    pub attribution: Option<AttributionConfig>,
    /// Leader election on a Lease, if enabled (several replicas).
    pub leader_election: Option<LeaderElectionConfig>,
    /// How the daemon reaches the Kubernetes API for its own objects (state
    /// ConfigMap, Lease): the discovery settings, or the in-cluster defaults
    /// when `KUBERNETES_SERVICE_HOST` is set; `None` outside a cluster with
    /// static targets.
    pub kube_api: Option<KubeApiConfig>,
}

/// Access to the Kubernetes API for the daemon's own objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubeApiConfig {
    /// `https://host:port`.
    pub api_server: Url,
    /// Bearer token file.
    pub token_file: PathBuf,
    /// CA bundle of the API server.
    pub ca_file: PathBuf,
    /// TLS server name verified when `api_server` is an IP.
    pub server_name: String,
}

/// Where the state is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateBackend {
    /// A local file (`state.path`; `None` disables persistence).
    File,
    /// A ConfigMap in the auditor's own namespace.
    ConfigMap {
        /// The ConfigMap's name (`state.configmap`).
        name: String,
        /// Its namespace (`state.namespace`); `None`: the service account's
        /// namespace file, read at start.
        namespace: Option<String>,
    },
}

/// Leader election settings (`[leader_election]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderElectionConfig {
    /// The Lease's name.
    pub lease_name: String,
    /// Its namespace; `None`: the service account's namespace file.
    pub namespace: Option<String>,
    /// How long a Lease not renewed stays with its holder.
    pub lease_duration: Duration,
    /// A leader that could not renew for this long stops acting as one.
    pub renew_deadline: Duration,
    /// Time between two attempts to acquire or renew.
    pub retry_period: Duration,
    /// This replica's identity (`identity`, else `POD_NAME`, else `HOSTNAME`).
    pub identity: String,
}

/// Attribution settings: each source is opt-in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttributionConfig {
    /// List token Secrets (metadata only) and read the tracking ConfigMap.
    pub token_secrets: bool,
    /// List Pods, ReplicaSets and Jobs to name the workloads mounting them.
    pub workloads: bool,
    /// Time between two listing rounds.
    pub interval: Duration,
    /// `limit` of one list request.
    pub page_size: u32,
    /// Most token Secrets kept; a cluster with more is reported, not listed.
    pub max_secrets: usize,
    /// The Kubernetes API (`https://host:port`).
    pub api_server: Url,
    /// TLS server name verified.
    pub server_name: String,
    /// CA bundle.
    pub ca_file: PathBuf,
    /// Bearer token file.
    pub token_file: PathBuf,
    /// The apiserver's JSON-lines audit log to follow, if any.
    pub audit_log: Option<PathBuf>,
    /// Where the audit log's read position and aggregates are kept.
    pub audit_position_file: PathBuf,
    /// Most keys kept per audit aggregate (subjects, Secrets, user agents, IPs).
    pub audit_capacity: usize,
}

/// Where the daemon's samples come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Source {
    /// Scrape every apiserver's `/metrics` (backfilled from `[history]` when set).
    #[default]
    Scrape,
    /// Never contact the apiservers: poll `[history]` every scrape interval.
    Prometheus,
}

/// A Prometheus-compatible query API (Prometheus, Thanos, Mimir, VictoriaMetrics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryConfig {
    /// Base URL of the query API (`/api/v1/query` is appended): http or https,
    /// a path allowed (`https://mimir/prometheus`), no credentials or query.
    pub url: Url,
    /// The matchers inside the series selector, without braces
    /// (`job="apiserver"` for the default `{job="apiserver"}`).
    pub selector: String,
    /// The label that identifies an apiserver instance.
    pub instance_label: String,
    /// Time span of one query (a range selector this long).
    pub chunk: Duration,
    /// A gap between two samples of one instance longer than this many times
    /// its own sample spacing is a coverage hole.
    pub max_gap_factor: u32,
    /// Limit of one HTTP request.
    pub timeout: Duration,
    /// Retries of a request that failed to connect or got a 5xx/429.
    pub retries: u32,
    /// Largest response body accepted.
    pub max_response_bytes: u64,
    /// Bearer token file, re-read when it changes.
    pub bearer_token_file: Option<PathBuf>,
    /// Basic auth user name, with the password read from `password_file`.
    pub basic_auth: Option<BasicAuth>,
    /// CA bundle for an https URL (else the system has none: https needs it).
    pub ca_file: Option<PathBuf>,
    /// Extra request headers (`X-Scope-OrgID` for a Mimir tenant).
    pub headers: Vec<(String, String)>,
}

/// Basic auth for the history source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BasicAuth {
    /// The user name.
    pub username: String,
    /// The file holding the password (re-read like a token file).
    pub password_file: PathBuf,
}

/// Scrape settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScrapeConfig {
    /// Time between two scrapes of one instance.
    pub interval: Duration,
    /// Limit of one scrape; shorter than the interval.
    pub timeout: Duration,
    /// Largest page accepted, after decompression.
    pub max_body_bytes: u64,
    /// Most series one watched family may carry on a page.
    pub max_series_per_family: usize,
    /// Most series all watched families together may carry on a page.
    pub max_series_per_page: usize,
}

/// Where the targets come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Targets {
    /// The EndpointSlices of Service `default/kubernetes`.
    Kubernetes(KubernetesTargets),
    /// A fixed list.
    Static(Vec<StaticTarget>),
}

/// In-cluster discovery settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KubernetesTargets {
    /// The API server used for discovery (the Service address),
    /// `https://host:port` (validated: https, a host, no path, no credentials).
    pub api_server: Url,
    /// Bearer token file, re-read when it changes.
    pub token_file: PathBuf,
    /// CA bundle that signs the apiservers' certificates.
    pub ca_file: PathBuf,
    /// TLS server name verified on every apiserver address.
    pub server_name: String,
    /// How often the endpoint list is refreshed.
    pub refresh_interval: Duration,
}

/// One statically configured apiserver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticTarget {
    /// The `/metrics` URL (`https://host:port/metrics`; validated: https, a
    /// host, no credentials, `/metrics` when no path was given).
    pub url: Url,
    /// TLS server name to verify; defaults to `kubernetes`.
    pub server_name: String,
    /// CA bundle.
    pub ca_file: PathBuf,
    /// Bearer token file.
    pub token_file: PathBuf,
}

/// Persistence settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateConfig {
    /// The state file; `None` disables persistence (with the file backend;
    /// always `None` with the ConfigMap backend).
    pub path: Option<PathBuf>,
    /// Least time between two writes.
    pub write_interval: Duration,
    /// The backend: a file (`path`) or a ConfigMap.
    pub backend: StateBackend,
}

/// Log settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// A `tracing` filter directive (`info`, `cutover_auditor=debug`, ...).
    pub level: String,
}

/// Log output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Alertmanager push settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertmanagerConfig {
    /// Base URLs of every Alertmanager replica (`http://am:9093`; validated:
    /// http, a host, no credentials, no query).
    pub urls: Vec<Url>,
    /// How often firing alerts are re-sent.
    pub resend_interval: Duration,
    /// Limit of one push.
    pub timeout: Duration,
}

/// One thing wrong with a configuration: which key, and what.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// The dotted key (`scrape.timeout`), or empty for the file as a whole.
    pub key: String,
    /// What is wrong and what is allowed.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// Why a configuration was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML did not parse or had unknown keys or wrong types.
    #[error("invalid config: {0}")]
    Syntax(String),
    /// The values did not validate.
    #[error("invalid config: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Problem>),
}

/// The default port of the auditor's server.
pub const DEFAULT_PORT: u16 = 9877;
/// In-cluster token file.
pub const IN_CLUSTER_TOKEN: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// In-cluster CA bundle.
pub const IN_CLUSTER_CA: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";

/// The longest value a duration key accepts: every duration is bounded, so
/// that time arithmetic never overflows and a typo (`300000000000y`) is an
/// error, not a panic or a daemon that never wakes.
pub fn max_duration(key: &str) -> Duration {
    const DAY: u64 = 86_400;
    let days = |d: u64| Duration::from_secs(d * DAY);
    if key.ends_with(".window") || key.ends_with(".coverage_tolerance") {
        // The ledger keeps the longest window in memory and in the state file.
        days(90)
    } else if key == "scrape.interval" || key == "scrape.timeout" {
        Duration::from_secs(3_600)
    } else if key == "alertmanager.timeout" || key == "history.timeout" {
        Duration::from_secs(300)
    } else {
        // Refresh, write and re-send intervals.
        days(1)
    }
}

/// A whole duration in its largest whole unit: `90d`, `1h`, `5m`, `45s`.
fn short_duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        s if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s > 0 && s % 3_600 == 0 => format!("{}h", s / 3_600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

impl Config {
    /// Reads and validates a config file; `env` looks up environment variables.
    // Shell: one of the two file readers of this otherwise pure module.
    #[allow(clippy::disallowed_methods)]
    pub fn load(
        path: &std::path::Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, env)
    }

    /// Parses and validates config text.
    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| ConfigError::Syntax(e.to_string().trim_end().to_owned()))?;
        raw.validate(&env).map_err(ConfigError::Invalid)
    }
}

impl Config {
    /// Checks the files the configuration names, as `--check-config` and
    /// `serve` both do before anything runs: every `token_file` must hold a
    /// token and every `ca_file` a PEM bundle whose certificates parse, and
    /// `state.path` must be a regular file or absent.
    /// Each problem names its key and the file, never a token.
    // Shell: one of the two file readers of this otherwise pure module.
    #[allow(clippy::disallowed_methods)]
    pub fn check_files(&self) -> Result<(), ConfigError> {
        let mut p = Problems::default();
        if let Some(path) = &self.state.path
            && let Err(e) = crate::state::check_path(path)
        {
            p.add("state.path", e.to_string());
        }

        let mut check = |prefix: &str, token_file: &std::path::Path, ca_file: &std::path::Path| {
            if let Err(e) = TokenFile::new(token_file.to_owned()).token() {
                p.add(&format!("{prefix}.token_file"), e.to_string());
            }
            if let Err(e) = read_ca_bundle(ca_file) {
                p.add(&format!("{prefix}.ca_file"), e.to_string());
            }
        };
        match &self.targets {
            Targets::Kubernetes(k) => check("targets.kubernetes", &k.token_file, &k.ca_file),
            Targets::Static(list) => {
                for (i, t) in list.iter().enumerate() {
                    check(&format!("targets.static[{i}]"), &t.token_file, &t.ca_file);
                }
            }
        }
        if let Some(a) = &self.attribution {
            check("attribution", &a.token_file, &a.ca_file);
        }
        if let Some(h) = &self.history {
            if let Some(path) = &h.bearer_token_file
                && let Err(e) = TokenFile::new(path.clone()).token()
            {
                p.add("history.bearer_token_file", e.to_string());
            }
            if let Some(auth) = &h.basic_auth
                && let Err(e) = TokenFile::new(auth.password_file.clone()).token()
            {
                p.add("history.basic_auth_password_file", e.to_string());
            }
            if let Some(path) = &h.ca_file
                && let Err(e) = read_ca_bundle(path)
            {
                p.add("history.ca_file", e.to_string());
            }
        }
        if p.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(p.0))
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    #[serde(default)]
    scrape: RawScrape,
    #[serde(default)]
    targets: RawTargets,
    #[serde(default)]
    cutovers: BTreeMap<String, RawCutover>,
    #[serde(default)]
    state: RawState,
    #[serde(default)]
    log: RawLog,
    alertmanager: Option<RawAlertmanager>,
    leader_election: Option<RawLeaderElection>,
    attribution: Option<RawAttribution>,
    source: Option<String>,
    history: Option<RawHistory>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLeaderElection {
    enabled: Option<bool>,
    lease_name: Option<String>,
    namespace: Option<String>,
    lease_duration: Option<String>,
    renew_deadline: Option<String>,
    retry_period: Option<String>,
    identity: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAttribution {
    token_secrets: Option<bool>,
    workloads: Option<bool>,
    interval: Option<String>,
    page_size: Option<u64>,
    max_secrets: Option<u64>,
    api_server: Option<String>,
    server_name: Option<String>,
    ca_file: Option<PathBuf>,
    token_file: Option<PathBuf>,
    audit_log: Option<PathBuf>,
    audit_position_file: Option<PathBuf>,
    audit_capacity: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHistory {
    url: Option<String>,
    selector: Option<String>,
    instance_label: Option<String>,
    chunk: Option<String>,
    max_gap_factor: Option<u32>,
    timeout: Option<String>,
    retries: Option<u32>,
    max_response_bytes: Option<u64>,
    bearer_token_file: Option<PathBuf>,
    basic_auth_username: Option<String>,
    basic_auth_password_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScrape {
    interval: Option<String>,
    timeout: Option<String>,
    max_body_bytes: Option<u64>,
    max_series_per_family: Option<u64>,
    max_series_per_page: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTargets {
    discovery: Option<String>,
    kubernetes: Option<RawKubernetes>,
    #[serde(rename = "static")]
    static_targets: Option<Vec<RawStatic>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKubernetes {
    api_server: Option<String>,
    token_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    server_name: Option<String>,
    refresh_interval: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatic {
    url: String,
    server_name: Option<String>,
    ca_file: Option<PathBuf>,
    token_file: Option<PathBuf>,
    allow_service_address: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCutover {
    enabled: Option<bool>,
    window: Option<String>,
    coverage_tolerance: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    path: Option<String>,
    write_interval: Option<String>,
    backend: Option<String>,
    configmap: Option<String>,
    namespace: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<LogFormat>,
    level: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlertmanager {
    urls: Vec<String>,
    resend_interval: Option<String>,
    timeout: Option<String>,
}

/// Collects problems while validating.
#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, key: &str, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.to_owned(),
            message: message.into(),
        });
    }

    fn duration(&mut self, key: &str, value: Option<&str>, default: Duration) -> Duration {
        let max = max_duration(key);
        let Some(text) = value else { return default };
        match humantime::parse_duration(text) {
            Ok(d) if d.is_zero() => {
                self.add(key, format!("must be longer than zero, got {text:?}"));
                default
            }
            Ok(d) if d > max => {
                self.add(
                    key,
                    format!(
                        "{text:?} is longer than the longest allowed, {}",
                        short_duration(max)
                    ),
                );
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.add(
                    key,
                    format!(
                        "{text:?} is not a duration ({e}); write e.g. \"30s\", \"36h\", \"7d\""
                    ),
                );
                default
            }
        }
    }

    /// Parses a URL once, for every key that takes one: the typed value is
    /// what the rest of the daemon uses.
    fn url(&mut self, key: &str, text: &str, schemes: &[&str]) -> Option<Url> {
        match parse_url(text, schemes) {
            Ok(url) => Some(url),
            Err(why) => {
                self.add(key, why);
                None
            }
        }
    }
}

impl RawConfig {
    fn validate(self, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, Vec<Problem>> {
        let mut p = Problems::default();

        let listen = match self.listen.as_deref() {
            None => SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT)),
            Some(text) => text.parse().unwrap_or_else(|_| {
                p.add(
                    "listen",
                    format!("{text:?} is not an address; write e.g. \"0.0.0.0:{DEFAULT_PORT}\""),
                );
                SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT))
            }),
        };

        let interval = p.duration(
            "scrape.interval",
            self.scrape.interval.as_deref(),
            Duration::from_secs(30),
        );
        let timeout = p.duration(
            "scrape.timeout",
            self.scrape.timeout.as_deref(),
            Duration::from_secs(10).min(interval / 2),
        );
        if timeout >= interval {
            p.add(
                "scrape.timeout",
                format!(
                    "must be shorter than scrape.interval ({})",
                    humantime::format_duration(interval)
                ),
            );
        }
        let max_body_bytes = self.scrape.max_body_bytes.unwrap_or(256 << 20);
        if max_body_bytes < 1 << 20 {
            p.add(
                "scrape.max_body_bytes",
                format!(
                    "{max_body_bytes} is too small; real pages are 2-40 MB, allow at least 1048576"
                ),
            );
        }

        let mut cap = |key: &str, value: Option<u64>, default: usize| -> usize {
            match value {
                None => default,
                Some(n) if (1..=100_000).contains(&n) => n as usize,
                Some(n) => {
                    p.add(key, format!("{n} is outside 1..=100000"));
                    default
                }
            }
        };
        let max_series_per_family = cap(
            "scrape.max_series_per_family",
            self.scrape.max_series_per_family,
            crate::exposition::DEFAULT_MAX_SERIES_PER_FAMILY,
        );
        let max_series_per_page = cap(
            "scrape.max_series_per_page",
            self.scrape.max_series_per_page,
            crate::exposition::DEFAULT_MAX_SERIES_PER_PAGE,
        );

        let source = match self.source.as_deref() {
            None | Some("scrape") => Source::Scrape,
            Some("prometheus") => Source::Prometheus,
            Some(other) => {
                p.add(
                    "source",
                    format!("{other:?} is not a source; use \"scrape\" or \"prometheus\""),
                );
                Source::Scrape
            }
        };
        let history = self.history.map(|h| h.validate(&mut p));
        if source == Source::Prometheus && history.is_none() {
            p.add(
                "source",
                "is \"prometheus\" but there is no [history] table with the query API's url",
            );
        }
        let targets_given = self.targets.discovery.is_some()
            || self.targets.kubernetes.is_some()
            || self.targets.static_targets.is_some();
        let targets = if source == Source::Prometheus {
            // Only Prometheus reaches the apiservers: nothing to discover.
            if targets_given {
                p.add(
                    "targets",
                    "is set but source is \"prometheus\", which never contacts the apiservers; remove [targets] or use source = \"scrape\"",
                );
            }
            Targets::Static(Vec::new())
        } else {
            self.targets.validate(env, &mut p)
        };

        let mut cutovers = Vec::new();
        for name in self.cutovers.keys() {
            if BuiltinCutover::from_label(name).is_none() {
                let known: Vec<&str> = BuiltinCutover::ALL.iter().map(|c| c.label()).collect();
                p.add(
                    &format!("cutovers.{name}"),
                    format!("unknown cutover; known ones are {}", known.join(", ")),
                );
            }
        }
        for cutover in BuiltinCutover::ALL {
            let name = cutover.label();
            let raw = self.cutovers.get(name);
            let key = |k: &str| format!("cutovers.{name}.{k}");
            let window = p.duration(
                &key("window"),
                raw.and_then(|r| r.window.as_deref()),
                cutover.default_window(),
            );
            // One scrape round: the time since the last scrape (up to an
            // interval, plus a scrape in flight) is always unobserved, so a
            // smaller tolerance could never allow `ready`.
            let round = interval + timeout;
            let tolerance = match raw.and_then(|r| r.coverage_tolerance.as_deref()) {
                None => DEFAULT_TOLERANCE.max(round),
                Some("0") | Some("0s") => Duration::ZERO,
                other => p.duration(&key("coverage_tolerance"), other, DEFAULT_TOLERANCE),
            };
            if tolerance < round {
                p.add(
                    &key("coverage_tolerance"),
                    format!(
                        "{} is shorter than one scrape round (scrape.interval {} + scrape.timeout {}); the time since the last scrape is always unobserved, so the verdict could never be ready: set at least {}",
                        humantime::format_duration(tolerance),
                        humantime::format_duration(interval),
                        humantime::format_duration(timeout),
                        humantime::format_duration(round),
                    ),
                );
            }
            if tolerance >= window {
                p.add(
                    &key("coverage_tolerance"),
                    format!(
                        "must be shorter than the window ({})",
                        humantime::format_duration(window)
                    ),
                );
            }
            if window < interval * 2 {
                p.add(&key("window"), "must span at least two scrape intervals");
            }
            if raw.and_then(|r| r.enabled).unwrap_or(true) {
                cutovers.push(cutover.spec(window, tolerance));
            }
        }

        let backend = match self.state.backend.as_deref().unwrap_or("file") {
            "file" => {
                for (key, set) in [
                    ("state.configmap", self.state.configmap.is_some()),
                    ("state.namespace", self.state.namespace.is_some()),
                ] {
                    if set {
                        p.add(key, "is set but state.backend is \"file\"; set state.backend = \"configmap\" or remove it");
                    }
                }
                StateBackend::File
            }
            "configmap" => {
                if self.state.path.is_some() {
                    p.add(
                        "state.path",
                        "is set but state.backend is \"configmap\"; remove it (the state is kept in state.configmap)",
                    );
                }
                let name = self.state.configmap.clone().unwrap_or_default();
                if !is_dns_subdomain(&name) {
                    p.add(
                        "state.configmap",
                        format!("{name:?} is not a ConfigMap name (lowercase letters, digits, '-' and '.', at most 253); name the ConfigMap the manifest ships, e.g. \"cutover-auditor-state\""),
                    );
                }
                let namespace = self.state.namespace.clone();
                if let Some(ns) = &namespace
                    && !is_dns_label(ns)
                {
                    p.add("state.namespace", format!("{ns:?} is not a namespace name"));
                }
                StateBackend::ConfigMap { name, namespace }
            }
            other => {
                p.add(
                    "state.backend",
                    format!("{other:?} is not a state backend; use \"file\" or \"configmap\""),
                );
                StateBackend::File
            }
        };
        let state = StateConfig {
            path: match self.state.path.as_deref() {
                // No file with the ConfigMap backend.
                _ if backend != StateBackend::File => None,
                None => Some(PathBuf::from("/var/lib/cutover-auditor/state.json")),
                Some("") => None,
                Some(path) => Some(PathBuf::from(path)),
            },
            write_interval: p.duration(
                "state.write_interval",
                self.state.write_interval.as_deref(),
                Duration::from_secs(60),
            ),
            backend,
        };

        let level = self.log.level.unwrap_or_else(|| "info".into());
        // The parser the daemon starts its logging with: one parser, so the
        // check and the start never disagree.
        if let Err(e) = crate::telemetry::filter(&level) {
            p.add("log.level", e.to_string());
        }
        let log = LogConfig {
            format: self.log.format.unwrap_or(LogFormat::Json),
            level,
        };

        let alertmanager = self.alertmanager.map(|am| {
            if am.urls.is_empty() {
                p.add(
                    "alertmanager.urls",
                    "must list at least one Alertmanager (every replica)",
                );
            }
            // The in-cluster Alertmanager Service speaks plain HTTP; there is
            // no CA to verify an https one against.
            let urls: Vec<Url> = am
                .urls
                .iter()
                .enumerate()
                .filter_map(|(i, url)| p.url(&format!("alertmanager.urls[{i}]"), url, &["http"]))
                .collect();
            let resend_interval = p.duration(
                "alertmanager.resend_interval",
                am.resend_interval.as_deref(),
                Duration::from_secs(60),
            );
            let timeout = p.duration(
                "alertmanager.timeout",
                am.timeout.as_deref(),
                Duration::from_secs(10),
            );
            AlertmanagerConfig {
                urls,
                resend_interval,
                timeout,
            }
        });

        let kube_api = match &targets {
            Targets::Kubernetes(k) => Some(KubeApiConfig {
                api_server: k.api_server.clone(),
                token_file: k.token_file.clone(),
                ca_file: k.ca_file.clone(),
                server_name: k.server_name.clone(),
            }),
            Targets::Static(_) => in_cluster_api(env),
        };
        let leader_election = self
            .leader_election
            .filter(|le| le.enabled.unwrap_or(true))
            .map(|le| {
                let key = |k: &str| format!("leader_election.{k}");
                let lease_duration = p.duration(
                    &key("lease_duration"),
                    le.lease_duration.as_deref(),
                    Duration::from_secs(15),
                );
                let renew_deadline = p.duration(
                    &key("renew_deadline"),
                    le.renew_deadline.as_deref(),
                    Duration::from_secs(10),
                );
                let retry_period = p.duration(
                    &key("retry_period"),
                    le.retry_period.as_deref(),
                    Duration::from_secs(2),
                );
                if renew_deadline >= lease_duration {
                    p.add(
                        &key("renew_deadline"),
                        format!(
                            "must be shorter than leader_election.lease_duration ({}): a leader must stop before another may take over",
                            humantime::format_duration(lease_duration)
                        ),
                    );
                }
                if retry_period >= renew_deadline {
                    p.add(
                        &key("retry_period"),
                        format!(
                            "must be shorter than leader_election.renew_deadline ({})",
                            humantime::format_duration(renew_deadline)
                        ),
                    );
                }
                let lease_name = le.lease_name.unwrap_or_else(|| "cutover-auditor".into());
                if !is_dns_subdomain(&lease_name) {
                    p.add(&key("lease_name"), format!("{lease_name:?} is not a Lease name"));
                }
                if let Some(ns) = &le.namespace
                    && !is_dns_label(ns)
                {
                    p.add(&key("namespace"), format!("{ns:?} is not a namespace name"));
                }
                let identity = le
                    .identity
                    .or_else(|| env("POD_NAME"))
                    .or_else(|| env("HOSTNAME"))
                    .unwrap_or_default();
                if identity.trim().is_empty() || identity.len() > 253 {
                    p.add(
                        &key("identity"),
                        "not set and neither POD_NAME nor HOSTNAME is in the environment; set it (1 to 253 characters) or pass POD_NAME from the downward API",
                    );
                }
                if !matches!(state.backend, StateBackend::ConfigMap { .. }) {
                    p.add(
                        "leader_election",
                        "needs the shared state: set state.backend = \"configmap\" (replicas do not share a state file)",
                    );
                }
                LeaderElectionConfig {
                    lease_name,
                    namespace: le.namespace,
                    lease_duration,
                    renew_deadline,
                    retry_period,
                    identity,
                }
            });
        let needs_api =
            leader_election.is_some() || matches!(state.backend, StateBackend::ConfigMap { .. });
        if needs_api && kube_api.is_none() {
            p.add(
                "state.backend",
                "the configmap backend and leader election need the Kubernetes API: use [targets.kubernetes] discovery, or run in a cluster (KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT)",
            );
        }
        let attribution = self
            .attribution
            .and_then(|raw| raw.validate(&targets, state.path.as_deref(), &mut p));

        if !p.0.is_empty() {
            return Err(p.0);
        }
        Ok(Config {
            leader_election,
            kube_api,
            listen,
            scrape: ScrapeConfig {
                interval,
                timeout,
                max_body_bytes,
                max_series_per_family,
                max_series_per_page,
            },
            targets,
            cutovers,
            state,
            log,
            alertmanager,
            source,
            history,
            attribution,
        })
    }
}

impl RawAttribution {
    fn validate(
        self,
        targets: &Targets,
        state: Option<&std::path::Path>,
        p: &mut Problems,
    ) -> Option<AttributionConfig> {
        let token_secrets = self.token_secrets.unwrap_or(false);
        let workloads = self.workloads.unwrap_or(false);
        if workloads && !token_secrets {
            p.add(
                "attribution.workloads",
                "needs attribution.token_secrets = true (workloads are named by the token Secrets they mount)",
            );
        }
        let interval = p.duration(
            "attribution.interval",
            self.interval.as_deref(),
            Duration::from_secs(600),
        );
        let page_size = match self.page_size {
            None => 500,
            Some(n) if (1..=5_000).contains(&n) => n as u32,
            Some(n) => {
                p.add("attribution.page_size", format!("{n} is outside 1..=5000"));
                500
            }
        };
        let max_secrets = match self.max_secrets {
            None => 100_000,
            Some(n) if (1..=1_000_000).contains(&n) => n as usize,
            Some(n) => {
                p.add(
                    "attribution.max_secrets",
                    format!("{n} is outside 1..=1000000"),
                );
                100_000
            }
        };
        let from_targets = match targets {
            Targets::Kubernetes(k) => Some(k),
            Targets::Static(_) => None,
        };
        let api_server = match (&self.api_server, from_targets) {
            (Some(text), _) => p
                .url("attribution.api_server", text, &["https"])
                .and_then(|url| {
                    if matches!(url.path(), "" | "/") {
                        Some(url)
                    } else {
                        p.add(
                            "attribution.api_server",
                            format!("{text:?}: give only https://HOST:PORT, no path"),
                        );
                        None
                    }
                }),
            (None, Some(k)) => Some(k.api_server.clone()),
            (None, None) => {
                if token_secrets {
                    p.add(
                        "attribution.api_server",
                        "required with static targets (otherwise the [targets.kubernetes] API server is used)",
                    );
                }
                None
            }
        };
        let audit_capacity = match self.audit_capacity {
            None => 1000,
            Some(n) if (1..=100_000).contains(&n) => n as usize,
            Some(n) => {
                p.add(
                    "attribution.audit_capacity",
                    format!("{n} is outside 1..=100000"),
                );
                1000
            }
        };
        let audit_position_file = match (&self.audit_position_file, state) {
            (Some(path), _) => path.clone(),
            (None, Some(state)) => state.with_file_name("audit-position.json"),
            (None, None) => {
                if self.audit_log.is_some() {
                    p.add(
                        "attribution.audit_position_file",
                        "required when state.path is empty (the read position must survive a restart)",
                    );
                }
                PathBuf::new()
            }
        };
        if !token_secrets && self.audit_log.is_none() {
            return None;
        }
        Some(AttributionConfig {
            audit_log: self.audit_log,
            audit_position_file,
            audit_capacity,
            token_secrets,
            workloads,
            interval,
            page_size,
            max_secrets,
            api_server: api_server.unwrap_or_else(placeholder_url),
            server_name: self
                .server_name
                .or_else(|| from_targets.map(|k| k.server_name.clone()))
                .unwrap_or_else(|| "kubernetes".into()),
            ca_file: self
                .ca_file
                .or_else(|| from_targets.map(|k| k.ca_file.clone()))
                .unwrap_or_else(|| IN_CLUSTER_CA.into()),
            token_file: self
                .token_file
                .or_else(|| from_targets.map(|k| k.token_file.clone()))
                .unwrap_or_else(|| IN_CLUSTER_TOKEN.into()),
        })
    }
}

impl RawHistory {
    fn validate(self, p: &mut Problems) -> HistoryConfig {
        let url = match self.url.as_deref() {
            None => {
                p.add(
                    "history.url",
                    "must be set: the query API's base URL, e.g. \"http://prometheus-operated.monitoring:9090\"",
                );
                None
            }
            Some(text) => p.url("history.url", text, &["http", "https"]),
        };
        let selector_text = self
            .selector
            .unwrap_or_else(|| r#"{job="apiserver"}"#.to_owned());
        let trimmed = selector_text.trim();
        let selector = match trimmed.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(inner) if !inner.contains(['{', '}', '[', ']']) && !inner.contains("__name__") => {
                inner.trim().trim_end_matches(',').to_owned()
            }
            _ => {
                p.add(
                    "history.selector",
                    format!(
                        "{selector_text:?} is not a series selector without a metric name; write e.g. {{job=\"apiserver\"}}"
                    ),
                );
                String::new()
            }
        };
        let instance_label = self.instance_label.unwrap_or_else(|| "instance".into());
        if !is_label_name(&instance_label) {
            p.add(
                "history.instance_label",
                format!("{instance_label:?} is not a label name ([a-zA-Z_][a-zA-Z0-9_]*)"),
            );
        }
        let chunk = p.duration(
            "history.chunk",
            self.chunk.as_deref(),
            Duration::from_secs(86_400),
        );
        if chunk < Duration::from_secs(60) {
            p.add("history.chunk", "must be at least 1m");
        }
        let max_gap_factor = self.max_gap_factor.unwrap_or(3);
        if !(2..=1_000).contains(&max_gap_factor) {
            p.add(
                "history.max_gap_factor",
                format!("{max_gap_factor} is outside 2..=1000 (a gap of one missed sample must not be a hole)"),
            );
        }
        let timeout = p.duration(
            "history.timeout",
            self.timeout.as_deref(),
            Duration::from_secs(30),
        );
        let retries = self.retries.unwrap_or(3);
        if retries > 10 {
            p.add("history.retries", format!("{retries} is more than 10"));
        }
        let max_response_bytes = self.max_response_bytes.unwrap_or(256 << 20);
        if max_response_bytes < 1 << 16 {
            p.add(
                "history.max_response_bytes",
                format!("{max_response_bytes} is too small; allow at least 65536"),
            );
        }
        let basic_auth = match (self.basic_auth_username, self.basic_auth_password_file) {
            (Some(username), Some(password_file)) => Some(BasicAuth {
                username,
                password_file,
            }),
            (None, None) => None,
            (Some(_), None) => {
                p.add(
                    "history.basic_auth_password_file",
                    "must be set with basic_auth_username",
                );
                None
            }
            (None, Some(_)) => {
                p.add(
                    "history.basic_auth_username",
                    "must be set with basic_auth_password_file",
                );
                None
            }
        };
        if basic_auth.is_some() && self.bearer_token_file.is_some() {
            p.add(
                "history.bearer_token_file",
                "is set together with basic auth; choose one",
            );
        }
        let mut headers = Vec::new();
        for (name, value) in self.headers {
            let key = format!("history.headers.{name}");
            if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                p.add(&key, "is not a valid HTTP header name");
            } else if name.eq_ignore_ascii_case("authorization") {
                p.add(
                    &key,
                    "use bearer_token_file or basic auth, which keep the secret in a file",
                );
            } else if reqwest::header::HeaderValue::from_str(&value).is_err() {
                p.add(&key, "the value is not a valid HTTP header value");
            } else {
                headers.push((name, value));
            }
        }
        if url.as_ref().is_some_and(|u| u.scheme() == "https") && self.ca_file.is_none() {
            p.add(
                "history.ca_file",
                "must be set for an https history.url: only the CA bundle it names is trusted",
            );
        }
        HistoryConfig {
            url: url.unwrap_or_else(placeholder_url),
            selector,
            instance_label,
            chunk,
            max_gap_factor,
            timeout,
            retries,
            max_response_bytes,
            bearer_token_file: self.bearer_token_file,
            basic_auth,
            ca_file: self.ca_file,
            headers,
        }
    }
}

/// Whether `name` is a Prometheus label name.
fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl RawTargets {
    fn validate(self, env: &dyn Fn(&str) -> Option<String>, p: &mut Problems) -> Targets {
        let discovery = self
            .discovery
            .as_deref()
            .unwrap_or(if self.static_targets.is_some() {
                "static"
            } else {
                "kubernetes"
            });
        match discovery {
            "kubernetes" => {
                if self.static_targets.is_some() {
                    p.add(
                        "targets.static",
                        "is set but targets.discovery is \"kubernetes\"; choose one",
                    );
                }
                let raw = self.kubernetes.unwrap_or_default();
                let api_server = raw.api_server.unwrap_or_else(|| {
                    match (env("KUBERNETES_SERVICE_HOST"), env("KUBERNETES_SERVICE_PORT")) {
                        (Some(host), Some(port)) if host.contains(':') => format!("https://[{host}]:{port}"),
                        (Some(host), Some(port)) => format!("https://{host}:{port}"),
                        _ => {
                            p.add(
                                "targets.kubernetes.api_server",
                                "not set and KUBERNETES_SERVICE_HOST/KUBERNETES_SERVICE_PORT are not in the environment (not in a cluster?); set it or use static targets",
                            );
                            String::new()
                        }
                    }
                });
                let api_server = if api_server.is_empty() {
                    None
                } else {
                    p.url("targets.kubernetes.api_server", &api_server, &["https"])
                        .and_then(|url| {
                            if matches!(url.path(), "" | "/") {
                                Some(url)
                            } else {
                                p.add(
                                    "targets.kubernetes.api_server",
                                    format!("{api_server:?}: give only https://HOST:PORT, no path"),
                                );
                                None
                            }
                        })
                };
                Targets::Kubernetes(KubernetesTargets {
                    api_server: api_server.unwrap_or_else(placeholder_url),
                    token_file: raw.token_file.unwrap_or_else(|| IN_CLUSTER_TOKEN.into()),
                    ca_file: raw.ca_file.unwrap_or_else(|| IN_CLUSTER_CA.into()),
                    server_name: raw.server_name.unwrap_or_else(|| "kubernetes".into()),
                    refresh_interval: p.duration(
                        "targets.kubernetes.refresh_interval",
                        raw.refresh_interval.as_deref(),
                        Duration::from_secs(60),
                    ),
                })
            }
            "static" => {
                if self.kubernetes.is_some() {
                    p.add(
                        "targets.kubernetes",
                        "is set but targets.discovery is \"static\"; choose one",
                    );
                }
                let list = self.static_targets.unwrap_or_default();
                if list.is_empty() {
                    p.add("targets.static", "must list at least one apiserver");
                }
                let mut seen = std::collections::BTreeSet::new();
                let targets = list
                    .into_iter()
                    .enumerate()
                    .map(|(i, raw)| {
                        let key = format!("targets.static[{i}].url");
                        let url = p.url(&key, &raw.url, &["https"]).map(with_metrics_path);
                        if !raw.allow_service_address.unwrap_or(false)
                            && let Some(why) = url.as_ref().and_then(|u| service_address(u, env))
                        {
                            p.add(
                                &key,
                                format!(
                                    "{:?} is the `kubernetes` Service ({why}), which spreads connections over every apiserver: a kept-alive connection sees one instance and the others are never read; use [targets.kubernetes] discovery or list each apiserver's own address (set allow_service_address = true on this target to scrape the Service anyway)",
                                    raw.url
                                ),
                            );
                        }
                        let url = url.unwrap_or_else(placeholder_url);
                        if !seen.insert(url.clone()) {
                            p.add(&key, format!("{:?} is listed twice", url.as_str()));
                        }
                        StaticTarget {
                            url,
                            server_name: raw.server_name.unwrap_or_else(|| "kubernetes".into()),
                            ca_file: raw.ca_file.unwrap_or_else(|| IN_CLUSTER_CA.into()),
                            token_file: raw.token_file.unwrap_or_else(|| IN_CLUSTER_TOKEN.into()),
                        }
                    })
                    .collect();
                Targets::Static(targets)
            }
            other => {
                p.add(
                    "targets.discovery",
                    format!("{other:?} is not a discovery mode; use \"kubernetes\" or \"static\""),
                );
                Targets::Static(Vec::new())
            }
        }
    }
}

/// The in-cluster API access (the kubelet's environment, the mounted
/// service account), if `KUBERNETES_SERVICE_HOST`/`_PORT` are set.
fn in_cluster_api(env: &dyn Fn(&str) -> Option<String>) -> Option<KubeApiConfig> {
    let (host, port) = (
        env("KUBERNETES_SERVICE_HOST")?,
        env("KUBERNETES_SERVICE_PORT")?,
    );
    let text = if host.contains(':') {
        format!("https://[{host}]:{port}")
    } else {
        format!("https://{host}:{port}")
    };
    Some(KubeApiConfig {
        api_server: parse_url(&text, &["https"]).ok()?,
        token_file: IN_CLUSTER_TOKEN.into(),
        ca_file: IN_CLUSTER_CA.into(),
        server_name: "kubernetes".into(),
    })
}

/// A DNS-1123 subdomain (object names): lowercase alphanumerics, '-' and
/// '.', starting and ending alphanumeric, at most 253 characters.
fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty() && name.len() <= 253 && name.split('.').all(is_dns_label)
}

/// A DNS-1123 label (namespaces): lowercase alphanumerics and '-', starting
/// and ending alphanumeric, at most 63 characters.
fn is_dns_label(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Stands in for a URL that did not validate: the config is rejected
/// anyway, with the problem named.
fn placeholder_url() -> Url {
    Url::parse("https://invalid.invalid/").expect("a constant URL parses")
}

/// The one URL parser of the configuration: `text` must be an absolute URL
/// with one of `schemes`, a host, no credentials, no query and no fragment.
/// The error says what is wrong.
pub fn parse_url(text: &str, schemes: &[&str]) -> Result<Url, String> {
    let example = match schemes.first() {
        Some(&"http") => "\"http://alertmanager:9093\"",
        _ => "\"https://10.0.0.1:6443\"",
    };
    let url = Url::parse(text.trim())
        .map_err(|e| format!("{text:?} is not a URL ({e}); write e.g. {example}"))?;
    if !schemes.contains(&url.scheme()) {
        return Err(format!(
            "scheme {:?} is not allowed here; use {}",
            url.scheme(),
            schemes.join(" or ")
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{text:?} has no host; write e.g. {example}"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "{text:?}: credentials in URLs are not allowed (use token_file)"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "{text:?}: a query or fragment is not allowed; write e.g. {example}"
        ));
    }
    Ok(url)
}

/// The host of a URL (`https://[::1]:6443/x` gives `::1`), lowercased,
/// without a trailing dot.
fn url_host(url: &Url) -> Option<String> {
    let host = url.host_str()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    (!host.is_empty()).then_some(host)
}

/// Why `url` names the `kubernetes` Service rather than one apiserver: its
/// DNS names, or the ClusterIP the kubelet injects as
/// `KUBERNETES_SERVICE_HOST`. `None` for anything else.
fn service_address(url: &Url, env: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let host = url_host(url)?;
    if host == "kubernetes"
        || host == "kubernetes.default"
        || host == "kubernetes.default.svc"
        || host.starts_with("kubernetes.default.svc.")
    {
        return Some(format!("host name {host:?}"));
    }
    let service = env("KUBERNETES_SERVICE_HOST")?;
    let service = service.trim().trim_start_matches('[').trim_end_matches(']');
    let same = match (
        host.parse::<std::net::IpAddr>(),
        service.parse::<std::net::IpAddr>(),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => host.eq_ignore_ascii_case(service.trim_end_matches('.')),
    };
    same.then(|| format!("KUBERNETES_SERVICE_HOST is {service}"))
}

/// `https://host:port` becomes `https://host:port/metrics`; a URL with a
/// path keeps it (without a trailing slash).
fn with_metrics_path(mut url: Url) -> Url {
    let path = url.path().trim_end_matches('/').to_owned();
    url.set_path(if path.is_empty() { "/metrics" } else { &path });
    url
}
