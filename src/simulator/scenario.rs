//! Scenario files: which apiservers exist, which clients use which tokens
//! when, and what happens to the apiservers over time.
//!
//! The format is documented in `docs/scenarios.md`. Parsing is strict:
//! unknown keys are errors, and every semantic error names its key
//! (`clients[1].interval`), what was wrong and what is allowed.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::time::Timestamp;

/// A validated scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// A name for logs.
    pub name: String,
    /// Simulated seconds per real second.
    pub speed: f64,
    /// The simulated time of the scenario start; `None` = the real time at start.
    pub start: Option<Timestamp>,
    /// How long `simulate` runs (simulated time); `None` = until stopped.
    pub duration: Option<Duration>,
    /// Success TTL of the token cache (10 s in kube-apiserver).
    pub cache_ttl: Duration,
    /// How long a replaced scraper token stays accepted.
    pub token_grace: Duration,
    /// The counter that the auditor's own token moves on a cache miss:
    /// `Some(Valid)` like an admission-injected projected token, or `None`.
    pub scraper_counts_as: Option<ClientKind>,
    /// Approximate size of the bulk (non-token) part of each page, in KiB.
    pub page_kib: usize,
    /// The versions of the instances present at start, one per instance.
    pub instances: Vec<KubeVersion>,
    /// The certificate name of each instance present at start, parallel to
    /// `instances`: `None` for the cluster's names and the instance IP,
    /// `Some(name)` for a certificate that carries only `name`.
    pub cert_names: Vec<Option<String>>,
    /// The token clients.
    pub clients: Vec<Client>,
    /// Events, sorted by time (stable: same-time events keep file order).
    pub events: Vec<Event>,
}

/// A Kubernetes version, `1.35.0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubeVersion {
    /// Major (always 1).
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

/// What kind of token a client presents, and so which counters it moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientKind {
    /// A Secret-based token with `--service-account-lookup=false`: only
    /// `legacy_tokens_total` moves.
    Legacy,
    /// An auto-generated Secret token: legacy + (1.29+) `legacy_auto`.
    LegacyAuto,
    /// A manually created Secret token: legacy + (1.29+) `legacy_manual`.
    LegacyManual,
    /// An invalidated auto token: legacy + (1.29+) `invalid_legacy_auto` on
    /// every request (rejected, so never cached). Before 1.29 it behaves like
    /// `legacy_auto` (the invalidation check does not exist there).
    InvalidLegacyAuto,
    /// A bound token used after `warnafter`: `stale_tokens_total`.
    Stale,
    /// A bound token used before `warnafter`: `valid_tokens_total`.
    Valid,
}

/// Which instances a client's requests go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Targets {
    /// Every tick, one request to every present instance.
    All,
    /// Every tick, one request to the next present instance.
    RoundRobin,
    /// Every tick, one request to this instance (if present).
    One(usize),
}

/// A client: a token kind making requests on a schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct Client {
    /// Name for logs and docs.
    pub name: String,
    /// Token kind.
    pub kind: ClientKind,
    /// Time between two ticks (simulated).
    pub interval: Duration,
    /// Target instances.
    pub targets: Targets,
    /// First tick, as an offset from the scenario start.
    pub from: Duration,
    /// No ticks at or after this offset.
    pub until: Option<Duration>,
    /// Periodic activity: active for `active_for` at the start of every `every`.
    pub every: Option<(Duration, Duration)>,
}

/// Something that happens at a time.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Offset from the scenario start.
    pub at: Duration,
    /// What happens.
    pub action: Action,
}

/// What an event does.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// The instance's process restarts: new start time, counters and cache empty.
    Restart {
        /// Instance index.
        instance: usize,
    },
    /// `DELETE /metrics`: counters reset, start time kept.
    DeleteMetrics {
        /// Instance index.
        instance: usize,
    },
    /// A new instance joins (the next index).
    AddInstance {
        /// Its version.
        version: KubeVersion,
        /// Its certificate name, as `Scenario::cert_names`.
        cert_name: Option<String>,
    },
    /// The instance leaves: its listener closes, discovery drops it.
    RemoveInstance {
        /// Instance index.
        instance: usize,
    },
    /// The instance misbehaves for a while.
    Outage {
        /// Instance index.
        instance: usize,
        /// How.
        mode: OutageMode,
        /// How long (simulated).
        duration: Duration,
        /// For `slow`: how long a page takes to deliver (simulated).
        delay: Duration,
    },
    /// A new random scraper token is written to the token file; the old one
    /// stays accepted for the token grace.
    RotateToken,
}

/// How an instance misbehaves during an outage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutageMode {
    /// The port is closed: connections are refused.
    Refuse,
    /// Connections are accepted but requests get no answer until the outage ends.
    Hang,
    /// Every request gets `500 Internal Server Error`.
    Http500,
    /// Pages are delivered slowly, spread over the outage's `delay`.
    Slow,
    /// `GET /metrics` gets `403 Forbidden` (other paths still answer).
    Http403,
    /// `GET /metrics` gets `200` with an empty body.
    EmptyPage,
    /// `GET /metrics` gets `200` with a page that lacks every
    /// `serviceaccount_*` family and the reset sentinel, the rest intact.
    NoFamilies,
    /// `GET /metrics` gets `200` with a page cut in the middle of a line
    /// before the first `serviceaccount_*` family.
    Truncated,
}

impl OutageMode {
    /// Every mode, in documentation order.
    pub const ALL: [OutageMode; 8] = [
        OutageMode::Refuse,
        OutageMode::Hang,
        OutageMode::Http500,
        OutageMode::Slow,
        OutageMode::Http403,
        OutageMode::EmptyPage,
        OutageMode::NoFamilies,
        OutageMode::Truncated,
    ];

    /// The scenario-file name of the mode.
    pub const fn name(self) -> &'static str {
        match self {
            OutageMode::Refuse => "refuse",
            OutageMode::Hang => "hang",
            OutageMode::Http500 => "http_500",
            OutageMode::Slow => "slow",
            OutageMode::Http403 => "http_403",
            OutageMode::EmptyPage => "empty_page",
            OutageMode::NoFamilies => "no_families",
            OutageMode::Truncated => "truncated",
        }
    }

    fn parse(s: &str) -> Option<OutageMode> {
        OutageMode::ALL.into_iter().find(|m| m.name() == s)
    }

    /// True while requests cannot reach the instance at all (clients'
    /// tokens are not authenticated, counters do not move).
    pub const fn unreachable(self) -> bool {
        matches!(self, OutageMode::Refuse | OutageMode::Hang)
    }
}

const MODES: &str = "refuse, hang, http_500, slow, http_403, empty_page, no_families, truncated";

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario {path}")]
    Read {
        /// The path.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown keys (the message names them).
    #[error("scenario is not valid TOML: {0}")]
    Syntax(String),
    /// A key has a wrong value.
    #[error("scenario key `{key}`: {message}")]
    Invalid {
        /// The key, e.g. `clients[1].interval`.
        key: String,
        /// What was wrong and what is allowed.
        message: String,
    },
}

impl Scenario {
    /// Parses and validates scenario text.
    pub fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        let raw: RawScenario =
            toml::from_str(text).map_err(|e| ScenarioError::Syntax(e.to_string()))?;
        raw.validate()
    }

    /// Reads, parses and validates a scenario file.
    // Shell: the one file reader of this otherwise pure module.
    #[allow(clippy::disallowed_methods)]
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Scenario::parse(&text)
    }

    /// The certificate name of instance `i` (counting instances that join
    /// later, in event order): `None` for the cluster's names and the
    /// instance IP, `Some(name)` for a certificate that carries only `name`.
    pub fn cert_name(&self, i: usize) -> Option<&str> {
        let added = self.events.iter().filter_map(|e| match &e.action {
            Action::AddInstance { cert_name, .. } => Some(cert_name),
            _ => None,
        });
        self.cert_names.iter().chain(added).nth(i)?.as_deref()
    }
}

impl KubeVersion {
    /// Builds a version.
    pub const fn new(major: u32, minor: u32, patch: u32) -> KubeVersion {
        KubeVersion {
            major,
            minor,
            patch,
        }
    }

    /// Parses `1.35.0` (an optional leading `v` is accepted).
    pub fn parse(s: &str) -> Option<KubeVersion> {
        let s = s.strip_prefix('v').unwrap_or(s);
        let mut parts = s.split('.').map(|p| p.parse::<u32>().ok());
        let v = KubeVersion::new(parts.next()??, parts.next()??, parts.next()??);
        parts.next().is_none().then_some(v)
    }

    /// The `git_version` label value, `v1.35.0`.
    pub fn git_version(self) -> String {
        format!("v{self}")
    }

    /// True from `1.major.minor` on.
    pub fn at_least(self, minor: u32) -> bool {
        self.major > 1 || (self.major == 1 && self.minor >= minor)
    }
}

impl fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

impl ClientKind {
    /// The scenario-file name of the kind.
    pub const fn name(self) -> &'static str {
        match self {
            ClientKind::Legacy => "legacy",
            ClientKind::LegacyAuto => "legacy_auto",
            ClientKind::LegacyManual => "legacy_manual",
            ClientKind::InvalidLegacyAuto => "invalid_legacy_auto",
            ClientKind::Stale => "stale",
            ClientKind::Valid => "valid",
        }
    }

    fn parse(s: &str) -> Option<ClientKind> {
        [
            ClientKind::Legacy,
            ClientKind::LegacyAuto,
            ClientKind::LegacyManual,
            ClientKind::InvalidLegacyAuto,
            ClientKind::Stale,
            ClientKind::Valid,
        ]
        .into_iter()
        .find(|k| k.name() == s)
    }
}

impl Client {
    /// True if the client ticks at offset `t` from the scenario start.
    pub fn active_at(&self, t: Duration) -> bool {
        if t < self.from || self.until.is_some_and(|u| t >= u) {
            return false;
        }
        match self.every {
            None => true,
            Some((every, active)) => {
                let into = (t - self.from).as_millis() % every.as_millis().max(1);
                into < active.as_millis()
            }
        }
    }
}

const KINDS: &str = "legacy, legacy_auto, legacy_manual, invalid_legacy_auto, stale, valid";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    speed: Option<f64>,
    start: Option<String>,
    duration: Option<String>,
    cache_ttl: Option<String>,
    token_grace: Option<String>,
    scraper_counts_as: Option<String>,
    page_kib: Option<i64>,
    #[serde(default)]
    instances: Vec<RawInstances>,
    #[serde(default)]
    clients: Vec<RawClient>,
    #[serde(default)]
    events: Vec<RawEvent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInstances {
    version: String,
    count: Option<i64>,
    cert_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    name: Option<String>,
    kind: String,
    interval: Option<String>,
    targets: Option<RawTargets>,
    from: Option<String>,
    until: Option<String>,
    every: Option<String>,
    #[serde(rename = "for")]
    active_for: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawTargets {
    Index(i64),
    Name(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    at: String,
    action: String,
    instance: Option<i64>,
    version: Option<String>,
    mode: Option<String>,
    #[serde(rename = "for")]
    duration: Option<String>,
    delay: Option<String>,
    cert_name: Option<String>,
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

fn duration(key: &str, value: Option<&str>, default: Duration) -> Result<Duration, ScenarioError> {
    match value {
        None => Ok(default),
        Some(v) => humantime::parse_duration(v).map_err(|e| {
            invalid(
                key,
                format!("{v:?} is not a duration ({e}); write e.g. \"90s\", \"5m\", \"7d\""),
            )
        }),
    }
}

fn positive(key: &str, value: Option<&str>, default: Duration) -> Result<Duration, ScenarioError> {
    let d = duration(key, value, default)?;
    if d.is_zero() {
        return Err(invalid(key, "must be longer than zero"));
    }
    Ok(d)
}

/// A certificate name: a DNS name of letters, digits, `-` and `.`.
fn cert_name(key: &str, name: Option<String>) -> Result<Option<String>, ScenarioError> {
    let Some(name) = name else { return Ok(None) };
    let labels_ok = name.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    });
    if name.len() > 253 || !labels_ok || name.parse::<std::net::IpAddr>().is_ok() {
        return Err(invalid(
            key,
            format!("{name:?} is not a DNS name, e.g. \"wrong.example\""),
        ));
    }
    Ok(Some(name))
}

fn version(key: &str, v: &str) -> Result<KubeVersion, ScenarioError> {
    match KubeVersion::parse(v) {
        Some(k) if k.major == 1 && k.minor >= 16 => Ok(k),
        _ => Err(invalid(
            key,
            format!("{v:?} is not a Kubernetes version 1.16.0 or later, e.g. \"1.35.0\""),
        )),
    }
}

impl RawScenario {
    fn validate(self) -> Result<Scenario, ScenarioError> {
        let speed = self.speed.unwrap_or(1.0);
        if !(speed.is_finite() && speed > 0.0) {
            return Err(invalid(
                "speed",
                "must be a positive number of simulated seconds per real second",
            ));
        }
        let start = match &self.start {
            None => None,
            Some(s) => Some(
                humantime::parse_rfc3339_weak(s)
                    .map(Timestamp::from_system_time)
                    .map_err(|e| {
                        invalid(
                            "start",
                            format!(
                                "{s:?} is not an RFC 3339 time ({e}), e.g. \"2026-06-01T00:00:00Z\""
                            ),
                        )
                    })?,
            ),
        };
        let scraper_counts_as = match self.scraper_counts_as.as_deref() {
            None | Some("valid") => Some(ClientKind::Valid),
            Some("none") => None,
            Some(other) => {
                return Err(invalid(
                    "scraper_counts_as",
                    format!("{other:?} is not one of: valid, none"),
                ));
            }
        };
        let page_kib = match self.page_kib {
            None => 64,
            Some(k) if (0..=65_536).contains(&k) => k as usize,
            Some(k) => return Err(invalid("page_kib", format!("{k} is outside 0..=65536"))),
        };
        let mut instances = Vec::new();
        let mut cert_names = Vec::new();
        for (i, raw) in self.instances.into_iter().enumerate() {
            let v = version(&format!("instances[{i}].version"), &raw.version)?;
            let count = raw.count.unwrap_or(1);
            if !(1..=64).contains(&count) {
                return Err(invalid(
                    format!("instances[{i}].count"),
                    format!("{count} is outside 1..=64"),
                ));
            }
            let name = cert_name(&format!("instances[{i}].cert_name"), raw.cert_name)?;
            instances.extend(std::iter::repeat_n(v, count as usize));
            cert_names.extend(std::iter::repeat_n(name, count as usize));
        }
        if instances.is_empty() {
            return Err(invalid(
                "instances",
                "at least one [[instances]] entry is needed",
            ));
        }
        let clients = self
            .clients
            .into_iter()
            .enumerate()
            .map(|(i, c)| c.validate(i))
            .collect::<Result<Vec<_>, _>>()?;
        let mut events = Vec::new();
        for (i, e) in self.events.into_iter().enumerate() {
            events.push(e.validate(i)?);
        }
        events.sort_by_key(|e| e.at);
        // Instance references must name an instance that exists by then.
        let mut known = instances.len();
        for e in &events {
            let referenced = match e.action {
                Action::AddInstance { .. } => {
                    known += 1;
                    None
                }
                Action::Restart { instance }
                | Action::DeleteMetrics { instance }
                | Action::RemoveInstance { instance }
                | Action::Outage { instance, .. } => Some(instance),
                Action::RotateToken => None,
            };
            if let Some(instance) = referenced.filter(|i| *i >= known) {
                return Err(invalid(
                    "events.instance",
                    format!(
                        "instance {instance} at {} does not exist (instances 0..{known} exist then)",
                        humantime::format_duration(e.at)
                    ),
                ));
            }
        }
        for (i, c) in clients.iter().enumerate() {
            if let Targets::One(n) = c.targets
                && n >= known
            {
                return Err(invalid(
                    format!("clients[{i}].targets"),
                    format!("instance {n} never exists (0..{known})"),
                ));
            }
        }
        Ok(Scenario {
            name: self.name.unwrap_or_else(|| "scenario".to_string()),
            speed,
            start,
            duration: self
                .duration
                .as_deref()
                .map(|d| positive("duration", Some(d), Duration::ZERO))
                .transpose()?,
            cache_ttl: duration(
                "cache_ttl",
                self.cache_ttl.as_deref(),
                Duration::from_secs(10),
            )?,
            token_grace: duration(
                "token_grace",
                self.token_grace.as_deref(),
                Duration::from_secs(300),
            )?,
            scraper_counts_as,
            page_kib,
            instances,
            cert_names,
            clients,
            events,
        })
    }
}

impl RawClient {
    fn validate(self, i: usize) -> Result<Client, ScenarioError> {
        let key = |k: &str| format!("clients[{i}].{k}");
        let kind = ClientKind::parse(&self.kind).ok_or_else(|| {
            invalid(
                key("kind"),
                format!("{:?} is not one of: {KINDS}", self.kind),
            )
        })?;
        let targets = match self.targets {
            None => Targets::All,
            Some(RawTargets::Name(n)) if n == "all" => Targets::All,
            Some(RawTargets::Name(n)) if n == "round_robin" => Targets::RoundRobin,
            Some(RawTargets::Index(n)) if n >= 0 => Targets::One(n as usize),
            Some(RawTargets::Name(n)) => {
                return Err(invalid(
                    key("targets"),
                    format!("{n:?} is not one of: \"all\", \"round_robin\", or an instance index"),
                ));
            }
            Some(RawTargets::Index(n)) => {
                return Err(invalid(
                    key("targets"),
                    format!("{n} is not an instance index"),
                ));
            }
        };
        let from = duration(&key("from"), self.from.as_deref(), Duration::ZERO)?;
        let until = self
            .until
            .as_deref()
            .map(|u| duration(&key("until"), Some(u), Duration::ZERO))
            .transpose()?;
        if until.is_some_and(|u| u <= from) {
            return Err(invalid(key("until"), "must be later than `from`"));
        }
        let every = match (self.every.as_deref(), self.active_for.as_deref()) {
            (None, None) => None,
            (Some(e), Some(f)) => {
                let every = positive(&key("every"), Some(e), Duration::ZERO)?;
                let active = positive(&key("for"), Some(f), Duration::ZERO)?;
                if active > every {
                    return Err(invalid(key("for"), "must not be longer than `every`"));
                }
                Some((every, active))
            }
            (Some(_), None) => return Err(invalid(key("for"), "is required with `every`")),
            (None, Some(_)) => return Err(invalid(key("every"), "is required with `for`")),
        };
        Ok(Client {
            name: self.name.unwrap_or_else(|| format!("{}-{i}", kind.name())),
            kind,
            interval: positive(
                &key("interval"),
                self.interval.as_deref(),
                Duration::from_secs(1),
            )?,
            targets,
            from,
            until,
            every,
        })
    }
}

impl RawEvent {
    fn validate(self, i: usize) -> Result<Event, ScenarioError> {
        let key = |k: &str| format!("events[{i}].{k}");
        let at = duration(&key("at"), Some(&self.at), Duration::ZERO)?;
        let instance = || -> Result<usize, ScenarioError> {
            match self.instance {
                Some(n) if n >= 0 => Ok(n as usize),
                Some(n) => Err(invalid(
                    key("instance"),
                    format!("{n} is not an instance index"),
                )),
                None => Err(invalid(
                    key("instance"),
                    format!("is required for action {:?}", self.action),
                )),
            }
        };
        // Keys that only some actions take are rejected elsewhere, so a typo'd
        // scenario does not silently ignore them.
        let allowed: &[&str] = match self.action.as_str() {
            "restart" | "delete_metrics" | "remove_instance" => &["instance"],
            "add_instance" => &["version", "cert_name"],
            "outage" => &["instance", "mode", "for", "delay"],
            "rotate_token" => &[],
            other => {
                return Err(invalid(
                    key("action"),
                    format!(
                        "{other:?} is not one of: restart, delete_metrics, add_instance, remove_instance, outage, rotate_token"
                    ),
                ));
            }
        };
        for (name, present) in [
            ("instance", self.instance.is_some()),
            ("version", self.version.is_some()),
            ("mode", self.mode.is_some()),
            ("for", self.duration.is_some()),
            ("delay", self.delay.is_some()),
            ("cert_name", self.cert_name.is_some()),
        ] {
            if present && !allowed.contains(&name) {
                return Err(invalid(
                    key(name),
                    format!("is not used by action {:?}", self.action),
                ));
            }
        }
        let action = match self.action.as_str() {
            "restart" => Action::Restart {
                instance: instance()?,
            },
            "delete_metrics" => Action::DeleteMetrics {
                instance: instance()?,
            },
            "remove_instance" => Action::RemoveInstance {
                instance: instance()?,
            },
            "add_instance" => Action::AddInstance {
                version: version(
                    &key("version"),
                    self.version
                        .as_deref()
                        .ok_or_else(|| invalid(key("version"), "is required for add_instance"))?,
                )?,
                cert_name: cert_name(&key("cert_name"), self.cert_name.clone())?,
            },
            "outage" => Action::Outage {
                instance: instance()?,
                mode: match self.mode.as_deref() {
                    Some(m) => OutageMode::parse(m).ok_or_else(|| {
                        invalid(key("mode"), format!("{m:?} is not one of: {MODES}"))
                    })?,
                    None => {
                        return Err(invalid(
                            key("mode"),
                            format!("is required for outage ({MODES})"),
                        ));
                    }
                },
                duration: positive(
                    &key("for"),
                    Some(
                        self.duration
                            .as_deref()
                            .ok_or_else(|| invalid(key("for"), "is required for outage"))?,
                    ),
                    Duration::ZERO,
                )?,
                delay: duration(
                    &key("delay"),
                    self.delay.as_deref(),
                    Duration::from_secs(20),
                )?,
            },
            _ => Action::RotateToken,
        };
        Ok(Event { at, action })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<(), &str>) {
        let got = Scenario::parse(text).map(|_| ()).map_err(|e| e.to_string());
        match (&got, expected) {
            (Ok(()), Ok(())) => {}
            (Err(msg), Err(want)) if msg.contains(want) => {}
            _ => panic!("scenario {text:?}: got {got:?}, want {expected:?}"),
        }
    }

    const ONE: &str = "[[instances]]\nversion = \"1.35.0\"\n";

    #[test]
    fn scenario_errors_name_the_key() {
        check(ONE, Ok(()));
        check("", Err("`instances`"));
        check(&format!("{ONE}colour = 1\n"), Err("unknown field `colour`"));
        check(
            "[[instances]]\nversion = \"2.x\"\n",
            Err("`instances[0].version`"),
        );
        check(&format!("{ONE}speed = 0\n"), Err("`speed`"));
        check(
            &format!("{ONE}[[clients]]\nkind = \"legacyy\"\n"),
            Err("`clients[0].kind`: \"legacyy\" is not one of"),
        );
        check(
            &format!("{ONE}[[clients]]\nkind = \"valid\"\ninterval = \"soon\"\n"),
            Err("`clients[0].interval`"),
        );
        check(
            &format!("{ONE}[[clients]]\nkind = \"valid\"\nevery = \"7d\"\n"),
            Err("`clients[0].for`"),
        );
        check(
            &format!("{ONE}[[clients]]\nkind = \"valid\"\ntargets = 3\n"),
            Err("`clients[0].targets`"),
        );
        check(
            &format!("{ONE}[[clients]]\nkind = \"valid\"\ntargets = \"some\"\n"),
            Err("`clients[0].targets`"),
        );
        check(
            &format!("{ONE}[[clients]]\nkind = \"valid\"\nfrom = \"5m\"\nuntil = \"1m\"\n"),
            Err("`clients[0].until`"),
        );
        check(
            &format!("{ONE}[[events]]\nat = \"1m\"\naction = \"explode\"\n"),
            Err("`events[0].action`"),
        );
        check(
            &format!("{ONE}[[events]]\nat = \"1m\"\naction = \"restart\"\n"),
            Err("`events[0].instance`"),
        );
        check(
            &format!("{ONE}[[events]]\nat = \"1m\"\naction = \"rotate_token\"\ninstance = 0\n"),
            Err("`events[0].instance`: is not used"),
        );
        check(
            &format!(
                "{ONE}[[events]]\nat = \"1m\"\naction = \"outage\"\ninstance = 0\nfor = \"1m\"\n"
            ),
            Err("`events[0].mode`"),
        );
        check(
            &format!("{ONE}[[events]]\nat = \"1m\"\naction = \"restart\"\ninstance = 1\n"),
            Err("instance 1 at 1m does not exist"),
        );
        check(
            &format!(
                "{ONE}[[events]]\nat = \"1m\"\naction = \"add_instance\"\nversion = \"1.28.3\"\n[[events]]\nat = \"2m\"\naction = \"restart\"\ninstance = 1\n"
            ),
            Ok(()),
        );
    }

    #[test]
    fn outage_modes_and_certificate_names_parse() {
        let outage = |mode: &str| {
            format!(
                "{ONE}[[events]]\nat = \"0s\"\naction = \"outage\"\ninstance = 0\nmode = \"{mode}\"\nfor = \"400d\"\n"
            )
        };
        for mode in OutageMode::ALL {
            let s = Scenario::parse(&outage(mode.name())).expect("valid mode");
            assert!(matches!(s.events[0].action, Action::Outage { mode: m, .. } if m == mode));
        }
        check(
            &outage("http_404"),
            Err(
                "\"http_404\" is not one of: refuse, hang, http_500, slow, http_403, empty_page, no_families, truncated",
            ),
        );
        let s = Scenario::parse(&format!(
            "{ONE}[[instances]]\nversion = \"1.35.0\"\ncount = 2\ncert_name = \"wrong.example\"\n\
             [[events]]\nat = \"1m\"\naction = \"add_instance\"\nversion = \"1.35.0\"\n\
             [[events]]\nat = \"2m\"\naction = \"add_instance\"\nversion = \"1.35.0\"\ncert_name = \"other.example\"\n"
        ))
        .expect("valid");
        let names: Vec<Option<&str>> = (0..6).map(|i| s.cert_name(i)).collect();
        assert_eq!(
            names,
            [
                None,
                Some("wrong.example"),
                Some("wrong.example"),
                None,
                Some("other.example"),
                None
            ]
        );
        check(
            "[[instances]]\nversion = \"1.35.0\"\ncert_name = \"bad name\"\n",
            Err("`instances[0].cert_name`: \"bad name\" is not a DNS name"),
        );
        check(
            "[[instances]]\nversion = \"1.35.0\"\ncert_name = \"127.0.0.1\"\n",
            Err("`instances[0].cert_name`"),
        );
        check(
            &format!(
                "{ONE}[[events]]\nat = \"1m\"\naction = \"restart\"\ninstance = 0\ncert_name = \"x.example\"\n"
            ),
            Err("`events[0].cert_name`: is not used"),
        );
        // An outage on a joining instance must come after its add_instance.
        let join = "[[events]]\nat = \"1m\"\naction = \"add_instance\"\nversion = \"1.35.0\"\n";
        let fail = "[[events]]\nat = \"1m\"\naction = \"outage\"\ninstance = 1\nmode = \"http_500\"\nfor = \"5m\"\n";
        check(&format!("{ONE}{join}{fail}"), Ok(()));
        check(
            &format!("{ONE}{fail}{join}"),
            Err("instance 1 at 1m does not exist"),
        );
    }

    #[test]
    fn periodic_clients_follow_every_and_for() {
        let s = Scenario::parse(&format!(
            "{ONE}[[clients]]\nkind = \"legacy_manual\"\nfrom = \"1h\"\nevery = \"7d\"\nfor = \"5m\"\n"
        ))
        .expect("valid");
        let c = &s.clients[0];
        let at = |secs: u64| c.active_at(Duration::from_secs(secs));
        assert!(!at(0));
        assert!(at(3600));
        assert!(at(3600 + 299));
        assert!(!at(3600 + 300));
        assert!(at(3600 + 7 * 86_400 + 10));
        assert_eq!(
            KubeVersion::parse("v1.29.5"),
            Some(KubeVersion::new(1, 29, 5))
        );
        assert_eq!(KubeVersion::parse("1.29"), None);
    }
}
