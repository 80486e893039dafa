//! The daemon's status as plain data: what every human and machine surface
//! (`/api/v1/status`, the status page, the Alertmanager push) shows.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cutover::Cutover;
use crate::families::TokenKind;
use crate::time::Timestamp;
use crate::timeline::Timeline;
use crate::verdict::{CutoverSpec, Reason, State, Verdict};
use crate::window::IncreaseWindow;

/// Why a scrape failed: a bounded set, exported as the `reason` label.
/// Serialized as its [`label`](ScrapeErrorKind::label) (`http_403`), so
/// `/api/v1/status`, the metrics and the logs spell it the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScrapeErrorKind {
    /// TCP connection failed.
    Connect,
    /// The scrape exceeded its timeout.
    Timeout,
    /// TLS handshake or certificate verification failed.
    Tls,
    /// The token file is missing, unreadable, empty or not a token: no
    /// request was sent.
    TokenUnreadable,
    /// 401: the token was rejected.
    Http401,
    /// 403: the token lacks `get` on `/metrics`.
    Http403,
    /// Any other non-200 status.
    HttpOther,
    /// The page exceeded the body-size limit.
    BodyTooLarge,
    /// The body could not be decoded (gzip, transfer).
    Decode,
    /// A watched line was malformed.
    Malformed,
    /// The page lacked token series that the same process showed before
    /// (an empty or cut body): not recorded, the time stays unobserved.
    IncompletePage,
    /// The target's host name did not resolve: no request was sent.
    Dns,
    /// The page carried more series of a watched family (or of all of them)
    /// than the caps: rejected, never cut short.
    TooManySeries,
}

impl ScrapeErrorKind {
    /// Every reason, in label order.
    pub const ALL: [ScrapeErrorKind; 13] = [
        ScrapeErrorKind::Connect,
        ScrapeErrorKind::Timeout,
        ScrapeErrorKind::Tls,
        ScrapeErrorKind::TokenUnreadable,
        ScrapeErrorKind::Http401,
        ScrapeErrorKind::Http403,
        ScrapeErrorKind::HttpOther,
        ScrapeErrorKind::BodyTooLarge,
        ScrapeErrorKind::Decode,
        ScrapeErrorKind::Malformed,
        ScrapeErrorKind::IncompletePage,
        ScrapeErrorKind::Dns,
        ScrapeErrorKind::TooManySeries,
    ];

    /// The exported label value.
    pub const fn label(self) -> &'static str {
        match self {
            ScrapeErrorKind::Connect => "connect",
            ScrapeErrorKind::Timeout => "timeout",
            ScrapeErrorKind::Tls => "tls",
            ScrapeErrorKind::TokenUnreadable => "token_unreadable",
            ScrapeErrorKind::Http401 => "http_401",
            ScrapeErrorKind::Http403 => "http_403",
            ScrapeErrorKind::HttpOther => "http_other",
            ScrapeErrorKind::BodyTooLarge => "body_too_large",
            ScrapeErrorKind::Decode => "decode",
            ScrapeErrorKind::Malformed => "malformed",
            ScrapeErrorKind::IncompletePage => "incomplete_page",
            ScrapeErrorKind::Dns => "dns",
            ScrapeErrorKind::TooManySeries => "too_many_series",
        }
    }
}

impl std::str::FromStr for ScrapeErrorKind {
    type Err = String;

    /// The kind whose [`label`](ScrapeErrorKind::label) is `s`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ScrapeErrorKind::ALL
            .into_iter()
            .find(|k| k.label() == s)
            .ok_or_else(|| {
                let known: Vec<_> = ScrapeErrorKind::ALL.iter().map(|k| k.label()).collect();
                format!(
                    "unknown scrape error kind {s:?}; known ones are {}",
                    known.join(", ")
                )
            })
    }
}

impl Serialize for ScrapeErrorKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.label())
    }
}

impl<'de> Deserialize<'de> for ScrapeErrorKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for ScrapeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// Health of one apiserver target.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TargetHealth {
    /// The instance address, `IP:port`.
    pub instance: String,
    /// Whether the last scrape succeeded.
    pub up: bool,
    /// When the last scrape ended.
    pub last_scrape: Option<Timestamp>,
    /// When the last successful scrape ended.
    pub last_success: Option<Timestamp>,
    /// How long the last scrape took, in seconds.
    pub last_duration_seconds: Option<f64>,
    /// Why the last scrape failed, if it did.
    pub last_error: Option<ScrapeErrorKind>,
    /// A human-readable detail of the last error (never a token).
    pub last_error_detail: Option<String>,
    /// Failed scrapes since the last success.
    pub consecutive_failures: u64,
    /// The Kubernetes version the instance reports.
    pub kubernetes_version: Option<String>,
}

/// One cutover's verdict as shown to people and tools.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CutoverStatus {
    /// The cutover (its name in JSON).
    pub name: Cutover,
    /// Its window, in seconds.
    pub window_seconds: u64,
    /// The state.
    pub state: State,
    /// Why.
    pub reason: Reason,
    /// When the current state began.
    pub since: Timestamp,
    /// Last time a quiet counter was seen increasing.
    pub last_use: Option<Timestamp>,
    /// Increase of the quiet counters inside the window.
    pub increase: u64,
    /// Increase of the evidence counter inside the window.
    pub evidence_increase: Option<u64>,
    /// Uses of the attribution total the split counters did not classify.
    #[serde(default)]
    pub unattributed: Option<u64>,
    /// Observed share of the window (least-observed instance).
    pub coverage_ratio: f64,
    /// Seconds until ready if nothing changes; `None` when it cannot turn
    /// ready without a change.
    pub ready_in_seconds: Option<u64>,
    /// `ready` → `in_use` transitions so far.
    pub regressions: u64,
    /// When the latest regression happened.
    pub last_regression: Option<Timestamp>,
    /// The apiserver instances behind a `blind` verdict (never scraped,
    /// down, mixing instances, a family absent, unobserved too long).
    #[serde(default)]
    pub blocking_instances: Vec<String>,
    /// Where the window's evidence came from, when `[history]` is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence_sources: Option<EvidenceSources>,
    /// The window drawn per instance: observed time, holes with their
    /// cause, uses in buckets (absent in statuses written before it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Timeline>,
}

/// How much of one cutover's window was judged from each source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvidenceSources {
    /// Seconds of the window covered by Prometheus-compatible history.
    pub history_seconds: u64,
    /// Seconds of the window covered by the auditor's own scrapes.
    pub scrape_seconds: u64,
}

/// The Prometheus-compatible history source, when `[history]` is configured.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryStatus {
    /// `true` with `source = "prometheus"` (never scraping the apiservers),
    /// `false` when history only backfills the ledger at start.
    pub only_source: bool,
    /// The first sample read from history, if any.
    pub since: Option<Timestamp>,
    /// The last sample read from history: own scrapes follow it (with
    /// `source = "scrape"`).
    pub until: Option<Timestamp>,
    /// When a query last succeeded.
    pub last_success: Option<Timestamp>,
    /// The bounded reason of the last failure, if the last query failed
    /// (`history_unreachable`, `history_rejected`, `history_incomplete`).
    pub last_error: Option<String>,
    /// What failed (never a secret).
    pub last_error_detail: Option<String>,
}

#[cfg(test)]
impl CutoverStatus {
    /// A status for unit tests: quiet, fully observed, nothing pending;
    /// tests set what they are about.
    pub(crate) fn for_test(
        name: &str,
        window: Duration,
        state: State,
        reason: Reason,
        since: Timestamp,
    ) -> CutoverStatus {
        CutoverStatus {
            name: name.into(),
            window_seconds: window.as_secs(),
            state,
            reason,
            since,
            last_use: None,
            increase: 0,
            evidence_increase: None,
            unattributed: None,
            coverage_ratio: 1.0,
            ready_in_seconds: None,
            regressions: 0,
            last_regression: None,
            blocking_instances: Vec::new(),
            evidence_sources: None,
            timeline: None,
        }
    }
}

impl CutoverStatus {
    /// The status of a verdict for its spec.
    pub fn new(spec: &CutoverSpec, verdict: &Verdict) -> CutoverStatus {
        let a = &verdict.assessment;
        CutoverStatus {
            name: spec.name.clone(),
            window_seconds: spec.window.as_secs(),
            state: a.state,
            reason: a.reason,
            since: verdict.since,
            last_use: a.last_use,
            increase: a.increase,
            evidence_increase: a.evidence_increase,
            unattributed: a.unattributed,
            coverage_ratio: a.coverage,
            ready_in_seconds: a.ready_in.map(|d| d.as_secs()),
            regressions: verdict.regressions,
            last_regression: verdict.last_regression,
            blocking_instances: a.blocking.clone(),
            evidence_sources: None,
            timeline: None,
        }
    }

    /// The same status with its window's timeline.
    pub fn with_timeline(self, timeline: Timeline) -> CutoverStatus {
        CutoverStatus {
            timeline: Some(timeline),
            ..self
        }
    }

    /// The window as a duration.
    pub fn window(&self) -> Duration {
        Duration::from_secs(self.window_seconds)
    }
}

/// Everything the daemon knows, at one evaluation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The auditor's version.
    pub version: String,
    /// When verdicts were last evaluated; `None` before the first evaluation.
    pub evaluated_at: Option<Timestamp>,
    /// Per cutover.
    pub cutovers: Vec<CutoverStatus>,
    /// Per apiserver target.
    pub targets: Vec<TargetHealth>,
    /// Token uses per kind, summed over instances.
    pub kinds: Vec<KindUses>,
    /// Who uses legacy tokens, per cutover (`[attribution]`); absent when
    /// attribution is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribution: Option<crate::attribution::Attribution>,
    /// The history source, when `[history]` is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryStatus>,
}

/// Token uses of one kind, summed over instances.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KindUses {
    /// The token kind.
    pub kind: TokenKind,
    /// Stitched total since observation began.
    pub total: u64,
    /// Increase over the standard windows, as (`5m`, count) pairs.
    pub increases: Vec<(String, u64)>,
}

impl KindUses {
    /// The increase over one of the standard windows.
    pub fn increase(&self, window: IncreaseWindow) -> Option<u64> {
        self.increases
            .iter()
            .find(|(w, _)| w == window.label())
            .map(|(_, n)| *n)
    }
}
