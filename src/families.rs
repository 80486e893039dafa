//! The kube-apiserver metric families the auditor reads, and the token kinds
//! they count. Names only: the facts behind them are in kubernetes/kubernetes
//! `pkg/serviceaccount/metrics.go`, `jwt.go`, `legacy.go` and `claims.go`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// `process_start_time_seconds`: the instance fingerprint and restart detector.
pub const PROCESS_START_TIME: &str = "process_start_time_seconds";

/// `kubernetes_build_info`: its `git_version` label is the instance's version.
pub const BUILD_INFO: &str = "kubernetes_build_info";

/// The label of [`BUILD_INFO`] that carries the Kubernetes version.
pub const BUILD_INFO_VERSION_LABEL: &str = "git_version";

/// `authentication_token_cache_request_total`: a busy counter (every
/// authenticated request, the auditor's own scrape included) that
/// `DELETE /metrics` resets along with the token counters. It is watched only
/// to reveal such resets: a reset is visible when any counter goes down, and
/// this one is large on any live apiserver.
pub const RESET_SENTINEL: &str = "authentication_token_cache_request_total";

/// One kind of ServiceAccount token authentication that kube-apiserver counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// `serviceaccount_legacy_tokens_total` (1.19+): Secret-based tokens.
    Legacy,
    /// `serviceaccount_stale_tokens_total` (1.19+): bound tokens used after `warnafter`.
    Stale,
    /// `serviceaccount_valid_tokens_total` (1.19+): extended bound tokens used in time.
    Valid,
    /// `serviceaccount_legacy_auto_token_uses_total` (1.29+).
    LegacyAuto,
    /// `serviceaccount_legacy_manual_token_uses_total` (1.29+).
    LegacyManual,
    /// `serviceaccount_invalid_legacy_auto_token_uses_total` (1.29+).
    InvalidLegacyAuto,
}

impl TokenKind {
    /// Every kind, in the order of the exported `kind` label.
    pub const ALL: [TokenKind; 6] = [
        TokenKind::Legacy,
        TokenKind::Stale,
        TokenKind::Valid,
        TokenKind::LegacyAuto,
        TokenKind::LegacyManual,
        TokenKind::InvalidLegacyAuto,
    ];

    /// The kube-apiserver counter family that counts this kind.
    pub const fn family(self) -> &'static str {
        match self {
            TokenKind::Legacy => "serviceaccount_legacy_tokens_total",
            TokenKind::Stale => "serviceaccount_stale_tokens_total",
            TokenKind::Valid => "serviceaccount_valid_tokens_total",
            TokenKind::LegacyAuto => "serviceaccount_legacy_auto_token_uses_total",
            TokenKind::LegacyManual => "serviceaccount_legacy_manual_token_uses_total",
            TokenKind::InvalidLegacyAuto => "serviceaccount_invalid_legacy_auto_token_uses_total",
        }
    }

    /// The value of the exported `kind` label.
    pub const fn label(self) -> &'static str {
        match self {
            TokenKind::Legacy => "legacy",
            TokenKind::Stale => "stale",
            TokenKind::Valid => "valid",
            TokenKind::LegacyAuto => "legacy_auto",
            TokenKind::LegacyManual => "legacy_manual",
            TokenKind::InvalidLegacyAuto => "invalid_legacy_auto",
        }
    }

    /// The kind counted by a family, if it is one of the six.
    pub fn from_family(family: &str) -> Option<TokenKind> {
        TokenKind::ALL.into_iter().find(|k| k.family() == family)
    }

    /// The kind named by an exported `kind` label value.
    pub fn from_label(label: &str) -> Option<TokenKind> {
        TokenKind::ALL.into_iter().find(|k| k.label() == label)
    }
}

impl fmt::Display for TokenKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// The families extracted from every page unless configured otherwise: the six
/// token counters, the start time, the build info and the reset sentinel.
pub fn default_watched() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = TokenKind::ALL.iter().map(|k| k.family()).collect();
    names.extend([PROCESS_START_TIME, BUILD_INFO, RESET_SENTINEL]);
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for kind in TokenKind::ALL {
            assert_eq!(TokenKind::from_family(kind.family()), Some(kind));
            assert_eq!(TokenKind::from_label(kind.label()), Some(kind));
        }
        assert_eq!(TokenKind::from_family("serviceaccount_tokens_total"), None);
        assert_eq!(default_watched().len(), 9);
    }
}
