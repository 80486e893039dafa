//! Token Secrets, classified from their metadata alone (pure).
//!
//! kube-apiserver (1.26+ tracking, GA 1.28) writes the label
//! `kubernetes.io/legacy-token-last-used=<YYYY-MM-DD UTC>` on a token Secret
//! when its token is used (at most once a day), and records in the ConfigMap
//! `kube-system/kube-apiserver-legacy-service-account-token-tracking` (key
//! `since`) the date tracking began. The cleaner (1.29+) labels unused
//! auto-generated Secrets `kubernetes.io/legacy-token-invalid-since=<date>`.
//! This module turns the metadata of a `PartialObjectMetadataList` page into
//! [`TokenSecret`]s and classifies each against a window.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// The Secret type of legacy ServiceAccount tokens.
pub const TOKEN_SECRET_TYPE: &str = "kubernetes.io/service-account-token";
/// The label kube-apiserver sets to the date of the last use.
pub const LAST_USED_LABEL: &str = "kubernetes.io/legacy-token-last-used";
/// The label the cleaner sets when it invalidates a Secret.
pub const INVALID_SINCE_LABEL: &str = "kubernetes.io/legacy-token-invalid-since";
/// The annotation naming the Secret's ServiceAccount.
pub const SERVICE_ACCOUNT_ANNOTATION: &str = "kubernetes.io/service-account.name";
/// The namespace of the tracking ConfigMap.
pub const TRACKING_NAMESPACE: &str = "kube-system";
/// The name of the tracking ConfigMap.
pub const TRACKING_CONFIGMAP: &str = "kube-apiserver-legacy-service-account-token-tracking";
/// The `Accept` header of every metadata-only list: no Secret data crosses
/// the wire.
pub const METADATA_ACCEPT: &str =
    "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1";

const DAY_MILLIS: i64 = 86_400_000;

/// A calendar date (UTC), as the labels carry it: days since 1970-01-01.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(pub i64);

impl Date {
    /// Parses `YYYY-MM-DD`; `None` for anything else.
    pub fn parse(text: &str) -> Option<Date> {
        let b = text.as_bytes();
        if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            let s = text.get(r)?;
            s.bytes()
                .all(|c| c.is_ascii_digit())
                .then(|| s.parse().ok())?
        };
        let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
            return None;
        }
        Some(Date(days_from_civil(y, m, d)))
    }

    /// The UTC date of a timestamp.
    pub fn of(t: Timestamp) -> Date {
        Date(t.as_millis().div_euclid(DAY_MILLIS))
    }

    /// Midnight UTC at the start of this date.
    pub fn start(self) -> Timestamp {
        Timestamp::from_millis(self.0.saturating_mul(DAY_MILLIS))
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (y, m, d) = civil_from_days(self.0);
        write!(f, "{y:04}-{m:02}-{d:02}")
    }
}

impl Serialize for Date {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Date {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Date::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("{text:?} is not YYYY-MM-DD")))
    }
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's algorithms (proleptic Gregorian calendar).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `namespace/name` of an object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    /// The namespace.
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Whether a token Secret was created by the token controller or by hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// Listed in its ServiceAccount's `.secrets` (audit annotation
    /// `legacy-token-autogenerated-secret`).
    Auto,
    /// Not listed there (audit annotation `legacy-token-manual-secret`).
    Manual,
    /// The facts at hand cannot tell: Secret metadata alone never can, since
    /// the proof is the ServiceAccount's `.secrets` list.
    Unknown,
}

/// The class of a token Secret against one window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Its last-used date falls inside the window: it blocks the cutover.
    UsedInWindow,
    /// Used, but only before the window.
    UsedBefore,
    /// No last-used label although tracking began (the ConfigMap's `since`):
    /// never used since then, safe to delete.
    NeverUsed,
    /// Labelled `legacy-token-invalid-since` and not used inside the window.
    Invalidated,
    /// No label and no tracking date: the labels cannot tell (tracking off,
    /// a pre-1.26 apiserver, or the ConfigMap unreadable).
    Unknown,
}

impl Class {
    /// Every class, in label order.
    pub const ALL: [Class; 5] = [
        Class::UsedInWindow,
        Class::UsedBefore,
        Class::NeverUsed,
        Class::Invalidated,
        Class::Unknown,
    ];

    /// The exported `class` label.
    pub const fn label(self) -> &'static str {
        match self {
            Class::UsedInWindow => "used_in_window",
            Class::UsedBefore => "used_before_window",
            Class::NeverUsed => "never_used",
            Class::Invalidated => "invalidated",
            Class::Unknown => "unknown",
        }
    }

    /// Whether the Secret can be deleted without breaking a client seen by
    /// the labels.
    pub const fn safe_to_delete(self) -> bool {
        matches!(
            self,
            Class::UsedBefore | Class::NeverUsed | Class::Invalidated
        )
    }
}

/// One token Secret, as its metadata tells.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSecret {
    /// The Secret.
    pub secret: ObjectRef,
    /// Its ServiceAccount (annotation), in the Secret's namespace.
    pub service_account: Option<String>,
    /// `kubernetes.io/legacy-token-last-used`, if set and a date.
    pub last_used: Option<Date>,
    /// `kubernetes.io/legacy-token-invalid-since`, if set and a date.
    pub invalid_since: Option<Date>,
}

impl TokenSecret {
    /// The class against a window ending at `now`. A last-used date counts as
    /// inside when any part of that UTC day is inside (the label has day
    /// precision, so this errs towards "in use").
    pub fn class(&self, window: Duration, now: Timestamp, tracking_since: Option<Date>) -> Class {
        let window_start = now - window;
        match (self.last_used, self.invalid_since) {
            (Some(d), _) if d.start() + Duration::from_secs(86_400) > window_start => {
                Class::UsedInWindow
            }
            (_, Some(_)) => Class::Invalidated,
            (Some(_), None) => Class::UsedBefore,
            (None, None) if tracking_since.is_some() => Class::NeverUsed,
            (None, None) => Class::Unknown,
        }
    }
}

/// Metadata of one listed object (the `PartialObjectMetadata` shape).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Namespace.
    #[serde(default)]
    pub namespace: String,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Owners.
    #[serde(default)]
    pub owner_references: Vec<OwnerReference>,
}

/// One owner reference.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct OwnerReference {
    /// `ReplicaSet`, `Job`, ...
    #[serde(default)]
    pub kind: String,
    /// The owner's name (same namespace).
    #[serde(default)]
    pub name: String,
    /// Whether it is the managing controller.
    #[serde(default)]
    pub controller: Option<bool>,
}

/// An item of a metadata list.
#[derive(Debug, Deserialize)]
pub struct MetadataItem {
    /// Its metadata.
    #[serde(default)]
    pub metadata: Metadata,
}

/// The list's own metadata.
#[derive(Debug, Default, Deserialize)]
pub struct ListMeta {
    /// The continue token of the next page; empty or absent on the last.
    #[serde(rename = "continue", default)]
    pub continue_: Option<String>,
}

/// A `PartialObjectMetadataList` page.
#[derive(Debug, Deserialize)]
pub struct MetadataList {
    /// Must be `PartialObjectMetadataList`.
    #[serde(default)]
    pub kind: String,
    /// Paging.
    #[serde(default)]
    pub metadata: ListMeta,
    /// The objects.
    #[serde(default)]
    pub items: Vec<MetadataItem>,
}

impl MetadataList {
    /// The continue token, if another page follows.
    pub fn next(&self) -> Option<&str> {
        self.metadata.continue_.as_deref().filter(|c| !c.is_empty())
    }
}

/// The token Secret a metadata item describes.
pub fn token_secret(meta: &Metadata) -> TokenSecret {
    TokenSecret {
        secret: ObjectRef {
            namespace: meta.namespace.clone(),
            name: meta.name.clone(),
        },
        service_account: meta
            .annotations
            .get(SERVICE_ACCOUNT_ANNOTATION)
            .filter(|s| !s.is_empty())
            .cloned(),
        last_used: meta
            .labels
            .get(LAST_USED_LABEL)
            .and_then(|d| Date::parse(d)),
        invalid_since: meta
            .labels
            .get(INVALID_SINCE_LABEL)
            .and_then(|d| Date::parse(d)),
    }
}

/// The `since` date of the tracking ConfigMap's JSON (`data.since`).
pub fn tracking_since(configmap: &[u8]) -> Result<Date, String> {
    #[derive(Deserialize)]
    struct ConfigMap {
        #[serde(default)]
        data: BTreeMap<String, String>,
    }
    let cm: ConfigMap = serde_json::from_slice(configmap)
        .map_err(|e| format!("the tracking ConfigMap is not a ConfigMap: {e}"))?;
    let since = cm
        .data
        .get("since")
        .ok_or("the tracking ConfigMap has no data.since")?;
    Date::parse(since)
        .ok_or_else(|| format!("the tracking ConfigMap's since {since:?} is not a date"))
}

/// Counts per class.
pub fn class_counts(
    secrets: &[TokenSecret],
    window: Duration,
    now: Timestamp,
    tracking: Option<Date>,
) -> BTreeMap<Class, u64> {
    let mut counts: BTreeMap<Class, u64> = Class::ALL.iter().map(|c| (*c, 0)).collect();
    for s in secrets {
        *counts.entry(s.class(window, now, tracking)).or_default() += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn dates_round_trip_and_reject_junk() {
        for text in ["1970-01-01", "2000-02-29", "2026-12-03", "2100-12-31"] {
            let d = Date::parse(text).expect(text);
            assert_eq!(d.to_string(), text);
        }
        assert_eq!(Date::parse("1970-01-02"), Some(Date(1)));
        for bad in [
            "2026-02-29",
            "2026-13-01",
            "2026-1-01",
            "",
            "20261203",
            "2026-12-3x",
            "+026-12-03",
        ] {
            assert_eq!(Date::parse(bad), None, "{bad}");
        }
        let t = Date::parse("2026-12-03").unwrap().start() + Duration::from_secs(3600 * 23);
        assert_eq!(Date::of(t).to_string(), "2026-12-03");
    }

    fn secret(last: Option<&str>, invalid: Option<&str>) -> TokenSecret {
        TokenSecret {
            secret: ObjectRef {
                namespace: "ci".into(),
                name: "builder-token-x7k2p".into(),
            },
            service_account: Some("builder".into()),
            last_used: last.and_then(Date::parse),
            invalid_since: invalid.and_then(Date::parse),
        }
    }

    #[test]
    fn classes_follow_the_window_and_the_tracking_date() {
        // now: 2026-12-04 12:00 UTC; a 7-day window starts 2026-11-27 12:00.
        let now = Date::parse("2026-12-04").unwrap().start() + Duration::from_secs(12 * 3600);
        let since = Date::parse("2026-01-10");
        let class = |s: TokenSecret, tracking| s.class(7 * DAY, now, tracking);
        assert_eq!(
            class(secret(Some("2026-12-03"), None), since),
            Class::UsedInWindow
        );
        // The window starts at noon on the 27th: a use that day may be inside.
        assert_eq!(
            class(secret(Some("2026-11-27"), None), since),
            Class::UsedInWindow
        );
        assert_eq!(
            class(secret(Some("2026-11-26"), None), since),
            Class::UsedBefore
        );
        assert_eq!(class(secret(None, None), since), Class::NeverUsed);
        assert_eq!(class(secret(None, None), None), Class::Unknown);
        assert_eq!(
            class(secret(Some("2026-10-01"), Some("2026-11-01")), since),
            Class::Invalidated
        );
        // An invalidated token used inside the window still blocks.
        assert_eq!(
            class(secret(Some("2026-12-04"), Some("2026-11-01")), since),
            Class::UsedInWindow
        );
        assert!(!Class::UsedInWindow.safe_to_delete());
        assert!(!Class::Unknown.safe_to_delete());
        assert!(Class::NeverUsed.safe_to_delete());
    }

    #[test]
    fn metadata_pages_parse_and_page() {
        let page = br#"{"kind":"PartialObjectMetadataList","apiVersion":"meta.k8s.io/v1",
            "metadata":{"continue":"abc"},
            "items":[{"metadata":{"name":"builder-token-x7k2p","namespace":"ci",
              "labels":{"kubernetes.io/legacy-token-last-used":"2026-12-03",
                        "kubernetes.io/legacy-token-invalid-since":"not-a-date"},
              "annotations":{"kubernetes.io/service-account.name":"builder"}}}]}"#;
        let list: MetadataList = serde_json::from_slice(page).unwrap();
        assert_eq!(list.next(), Some("abc"));
        let s = token_secret(&list.items[0].metadata);
        assert_eq!(s.secret.to_string(), "ci/builder-token-x7k2p");
        assert_eq!(s.service_account.as_deref(), Some("builder"));
        assert_eq!(s.last_used, Date::parse("2026-12-03"));
        assert_eq!(s.invalid_since, None);
        let last: MetadataList = serde_json::from_slice(
            br#"{"kind":"PartialObjectMetadataList","metadata":{"continue":""},"items":[]}"#,
        )
        .unwrap();
        assert_eq!(last.next(), None);
    }

    #[test]
    fn tracking_configmap() {
        assert_eq!(
            tracking_since(br#"{"kind":"ConfigMap","data":{"since":"2026-01-10"}}"#),
            Ok(Date::parse("2026-01-10").unwrap())
        );
        assert!(
            tracking_since(br#"{"data":{}}"#)
                .unwrap_err()
                .contains("no data.since")
        );
        assert!(
            tracking_since(br#"{"data":{"since":"x"}}"#)
                .unwrap_err()
                .contains("not a date")
        );
    }
}
