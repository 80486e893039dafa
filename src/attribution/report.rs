//! What attribution shows under each cutover (pure): the observed token
//! Secrets and workloads, put next to the verdicts of one evaluation.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::audit::AuditAggregate;
use super::secrets::{Class, Date, ObjectRef, Origin, TokenSecret};
use super::workloads::Workload;
use crate::cutover::BuiltinCutover;
use crate::status::CutoverStatus;
use crate::time::Timestamp;
use crate::verdict::State;

/// The most entries one list of a cutover carries; the rest are counted.
pub const MAX_LISTED: usize = 100;

/// Where a piece of evidence came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Evidence {
    /// The Secret's `kubernetes.io/legacy-token-last-used` label.
    TokenSecretLabel,
}

/// A source of attribution, the `source` label of the error counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The metadata list of token Secrets.
    TokenSecrets,
    /// The tracking ConfigMap.
    TrackingConfigmap,
    /// Pods, ReplicaSets and Jobs.
    Workloads,
    /// The audit log file.
    AuditLog,
}

impl Source {
    /// Every source, in label order.
    pub const ALL: [Source; 3] = [
        Source::TokenSecrets,
        Source::TrackingConfigmap,
        Source::Workloads,
    ];

    /// The exported `source` label.
    pub const fn label(self) -> &'static str {
        match self {
            Source::TokenSecrets => "token_secrets",
            Source::TrackingConfigmap => "tracking_configmap",
            Source::Workloads => "workloads",
            Source::AuditLog => "audit_log",
        }
    }
}

/// One source that could not be read, and why (never a token).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceError {
    /// The source.
    pub source: Source,
    /// A bounded reason (`http_403`, `connect`, ...).
    pub reason: String,
    /// What happened, for people.
    pub detail: String,
}

/// What the last listing round observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// When the round ended.
    pub at: Option<Timestamp>,
    /// The token Secrets; `None` when they could not be listed.
    pub secrets: Option<Vec<TokenSecret>>,
    /// The tracking ConfigMap's `since`, if read.
    pub tracking_since: Option<Date>,
    /// Per token Secret, the workloads that mount it; `None` when workloads
    /// are not configured or could not be listed.
    pub mounts: Option<BTreeMap<ObjectRef, BTreeSet<Workload>>>,
    /// The sources that failed in this round.
    pub errors: Vec<SourceError>,
    /// What the audit log said so far, when it is followed.
    pub audit: Option<AuditAggregate>,
}

/// A subject seen in audit events using a legacy or stale token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditSubject {
    /// `system:serviceaccount:<ns>:<name>`.
    pub subject: String,
    /// Uses counted since the log was first read (may overstate by `error`).
    pub count: u64,
    /// Most `count` may overstate (bounded memory).
    pub error: u64,
    /// First use seen.
    pub first_seen: Option<Timestamp>,
    /// Last use seen.
    pub last_seen: Option<Timestamp>,
}

/// The most audit subjects listed per cutover.
pub const MAX_AUDIT_LISTED: usize = 20;

/// One token Secret used inside a cutover's window, with who uses it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Culprit {
    /// The workloads whose Pods mount the Secret (empty: none found, or
    /// workloads not listed).
    pub workloads: Vec<Workload>,
    /// The ServiceAccount the token belongs to.
    pub service_account: Option<ObjectRef>,
    /// The Secret.
    pub secret: ObjectRef,
    /// The last-used date.
    pub last_used: Option<Date>,
    /// Auto-generated or manual, when the facts tell.
    pub origin: Origin,
    /// Where the evidence of use came from.
    pub evidence: Evidence,
    /// One line for people: `Deployment ci/runner mounts Secret
    /// ci/builder-token-x7k2p, last used 2026-12-03`.
    pub summary: String,
}

/// A token Secret that can go: not used inside the window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deletable {
    /// The Secret.
    pub secret: ObjectRef,
    /// Its ServiceAccount.
    pub service_account: Option<ObjectRef>,
    /// Why it is safe.
    pub class: Class,
    /// The last-used date, if any.
    pub last_used: Option<Date>,
}

/// Attribution under one cutover.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CutoverAttribution {
    /// The cutover's name.
    pub name: String,
    /// Token Secrets used inside the window, most recent first.
    pub who: Vec<Culprit>,
    /// Entries of `who` left out past [`MAX_LISTED`].
    pub who_omitted: u64,
    /// Under a ready cutover, the token Secrets safe to delete.
    pub safe_to_delete: Vec<Deletable>,
    /// Entries of `safe_to_delete` left out past [`MAX_LISTED`].
    pub safe_to_delete_omitted: u64,
    /// What the sources cannot say about this cutover, if anything.
    pub note: Option<String>,
    /// Audit log subjects whose last use falls inside the window, most
    /// counted first (evidence: the audit annotations).
    #[serde(default)]
    pub audit: Vec<AuditSubject>,
    /// Audit uses not attributed to a listed subject ("others").
    #[serde(default)]
    pub audit_others: u64,
}

/// Attribution of one evaluation: the additive `attribution` of
/// `/api/v1/status`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attribution {
    /// When the sources were last listed.
    pub observed_at: Option<Timestamp>,
    /// When legacy token tracking began (the ConfigMap's `since`).
    pub tracking_since: Option<Date>,
    /// One sentence per failed source: `attribution unavailable: <reason>`.
    pub unavailable: Vec<String>,
    /// Per cutover (legacy-token cutovers only; others carry a note).
    pub cutovers: Vec<CutoverAttribution>,
}

impl Attribution {
    /// The attribution of cutover `name`, if any.
    pub fn cutover(&self, name: &str) -> Option<&CutoverAttribution> {
        self.cutovers.iter().find(|c| c.name == name)
    }
}

/// The sentence a failed source shows.
pub fn unavailable(e: &SourceError) -> String {
    format!(
        "attribution unavailable: {} ({}): {}",
        e.source.label(),
        e.reason,
        e.detail
    )
}

fn sa_of(s: &TokenSecret) -> Option<ObjectRef> {
    s.service_account.as_ref().map(|name| ObjectRef {
        namespace: s.secret.namespace.clone(),
        name: name.clone(),
    })
}

/// Attribution for the cutovers of one evaluation. Only the legacy-token
/// cutovers are attributed from Secrets; `token-expiry-extension` concerns
/// projected tokens, which no Secret records.
pub fn attribute(cutovers: &[CutoverStatus], observed: &Observed, now: Timestamp) -> Attribution {
    let mut out = Attribution {
        observed_at: observed.at,
        tracking_since: observed.tracking_since,
        unavailable: observed.errors.iter().map(unavailable).collect(),
        cutovers: Vec::new(),
    };
    for c in cutovers {
        let Some(builtin) = c.name.builtin() else {
            continue;
        };
        let mut ca = CutoverAttribution {
            name: c.name.label().to_owned(),
            who: Vec::new(),
            who_omitted: 0,
            safe_to_delete: Vec::new(),
            safe_to_delete_omitted: 0,
            note: None,
            audit: Vec::new(),
            audit_others: 0,
        };
        if let Some(agg) = &observed.audit {
            let top = match builtin {
                BuiltinCutover::LegacyTokens => Some(&agg.legacy_subjects),
                BuiltinCutover::TokenExpiryExtension => Some(&agg.stale_subjects),
                BuiltinCutover::LegacyAutoTokens => None,
            };
            if let Some(top) = top {
                let start = now - c.window();
                let mut listed = 0;
                for (subject, e) in top.top(usize::MAX) {
                    if e.last_seen.is_some_and(|t| t < start) {
                        continue;
                    }
                    if ca.audit.len() < MAX_AUDIT_LISTED {
                        listed += e.count - e.error;
                        ca.audit.push(AuditSubject {
                            subject: subject.to_owned(),
                            count: e.count,
                            error: e.error,
                            first_seen: e.first_seen,
                            last_seen: e.last_seen,
                        });
                    }
                }
                ca.audit_others = top.total.saturating_sub(listed);
            }
        }
        match (builtin, &observed.secrets) {
            (BuiltinCutover::TokenExpiryExtension, _) if observed.audit.is_some() => {}
            (BuiltinCutover::TokenExpiryExtension, _) => {
                ca.note = Some(
                    "stale tokens are projected tokens, which no Secret records; only audit events name their users".into(),
                );
            }
            (_, None) => {
                ca.note = Some("token Secrets were not listed".into());
            }
            (_, Some(secrets)) => {
                if builtin == BuiltinCutover::LegacyAutoTokens {
                    ca.note = Some(
                        "Secret metadata cannot tell auto-generated from manual tokens: every token Secret is listed".into(),
                    );
                }
                let window = c.window();
                let mut who = Vec::new();
                let mut safe = Vec::new();
                for s in secrets {
                    let class = s.class(window, now, observed.tracking_since);
                    if class == Class::UsedInWindow {
                        who.push(culprit(s, observed.mounts.as_ref()));
                    } else if c.state == State::Ready && class.safe_to_delete() {
                        safe.push(Deletable {
                            secret: s.secret.clone(),
                            service_account: sa_of(s),
                            class,
                            last_used: s.last_used,
                        });
                    }
                }
                // Most recent use first, then by name: a stable order.
                who.sort_by(|a, b| {
                    b.last_used
                        .cmp(&a.last_used)
                        .then_with(|| a.secret.cmp(&b.secret))
                });
                safe.sort_by(|a, b| a.secret.cmp(&b.secret));
                ca.who_omitted = who.len().saturating_sub(MAX_LISTED) as u64;
                who.truncate(MAX_LISTED);
                ca.safe_to_delete_omitted = safe.len().saturating_sub(MAX_LISTED) as u64;
                safe.truncate(MAX_LISTED);
                ca.who = who;
                ca.safe_to_delete = safe;
            }
        }
        out.cutovers.push(ca);
    }
    out
}

fn culprit(s: &TokenSecret, mounts: Option<&BTreeMap<ObjectRef, BTreeSet<Workload>>>) -> Culprit {
    let workloads: Vec<Workload> = mounts
        .and_then(|m| m.get(&s.secret))
        .map(|w| w.iter().cloned().collect())
        .unwrap_or_default();
    let used = match s.last_used {
        Some(d) => format!("last used {d}"),
        None => "last use unknown".to_owned(),
    };
    let summary = if workloads.is_empty() {
        let by = match (mounts.is_some(), &s.service_account) {
            (true, Some(sa)) => format!(
                " (ServiceAccount {}/{sa}; no Pod mounts it)",
                s.secret.namespace
            ),
            (true, None) => " (no Pod mounts it)".to_owned(),
            (false, Some(sa)) => format!(" (ServiceAccount {}/{sa})", s.secret.namespace),
            (false, None) => String::new(),
        };
        format!("Secret {}{by}, {used}", s.secret)
    } else {
        let names: Vec<String> = workloads.iter().map(ToString::to_string).collect();
        format!(
            "{} mount{} Secret {}, {used}",
            names.join(", "),
            if names.len() == 1 { "s" } else { "" },
            s.secret
        )
    };
    Culprit {
        workloads,
        service_account: sa_of(s),
        secret: s.secret.clone(),
        last_used: s.last_used,
        origin: Origin::Unknown,
        evidence: Evidence::TokenSecretLabel,
        summary,
    }
}

/// The subjects (ServiceAccounts, else Secrets) using a legacy token inside
/// the window of `cutover`, as a set, for the start/stop log lines.
pub fn subjects(a: &Attribution, cutover: &str) -> BTreeSet<String> {
    a.cutover(cutover)
        .map(|c| {
            c.who
                .iter()
                .map(|w| match &w.service_account {
                    Some(sa) => format!("ServiceAccount {sa}"),
                    None => format!("Secret {}", w.secret),
                })
                .chain(c.audit.iter().map(|s| s.subject.clone()))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::verdict::Reason;

    fn secret(ns: &str, name: &str, sa: &str, last: Option<&str>) -> TokenSecret {
        TokenSecret {
            secret: ObjectRef {
                namespace: ns.into(),
                name: name.into(),
            },
            service_account: Some(sa.into()),
            last_used: last.and_then(Date::parse),
            invalid_since: None,
        }
    }

    #[test]
    fn who_names_the_workload_and_ready_lists_what_can_go() {
        let now = Date::parse("2026-12-04").unwrap().start() + Duration::from_secs(3600);
        let week = Duration::from_secs(7 * 86_400);
        let runner = Workload {
            kind: "Deployment".into(),
            object: ObjectRef {
                namespace: "ci".into(),
                name: "runner".into(),
            },
        };
        let builder = secret("ci", "builder-token-x7k2p", "builder", Some("2026-12-03"));
        let observed = Observed {
            at: Some(now),
            secrets: Some(vec![
                builder.clone(),
                secret("ci", "old-token", "old", Some("2026-01-03")),
                secret("kube-system", "never-token", "never", None),
            ]),
            tracking_since: Date::parse("2025-06-01"),
            mounts: Some([(builder.secret.clone(), [runner].into())].into()),
            errors: vec![],
            audit: None,
        };
        let blocked = CutoverStatus::for_test(
            "legacy-tokens",
            week,
            State::InUse,
            Reason::QuietCounterIncreased,
            now,
        );
        let ready = CutoverStatus::for_test(
            "legacy-auto-tokens",
            week,
            State::Ready,
            Reason::QuietForWindow,
            now,
        );
        let expiry = CutoverStatus::for_test(
            "token-expiry-extension",
            Duration::from_secs(86_400),
            State::InUse,
            Reason::QuietCounterIncreased,
            now,
        );
        let a = attribute(&[blocked, ready, expiry], &observed, now);
        let legacy = a.cutover("legacy-tokens").unwrap();
        assert_eq!(legacy.who.len(), 1);
        assert_eq!(
            legacy.who[0].summary,
            "Deployment ci/runner mounts Secret ci/builder-token-x7k2p, last used 2026-12-03"
        );
        assert!(
            legacy.safe_to_delete.is_empty(),
            "not ready: nothing offered"
        );
        let auto = a.cutover("legacy-auto-tokens").unwrap();
        let safe: Vec<String> = auto
            .safe_to_delete
            .iter()
            .map(|d| d.secret.to_string())
            .collect();
        assert_eq!(safe, ["ci/old-token", "kube-system/never-token"]);
        assert!(a.cutover("token-expiry-extension").unwrap().note.is_some());
        assert_eq!(
            subjects(&a, "legacy-tokens"),
            ["ServiceAccount ci/builder".to_owned()].into()
        );
    }
}
